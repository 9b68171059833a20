"""Everything under BASTION_HOME (and a storage root) is its user's alone: 0600 files, 0700
folders, whatever the umask; a home that group or others can reach is refused."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.agent.storage import Storage
from bastion.errors import ConfigurationError
from tests.agent.test_agent_e2e import _wait_status, running_plane
from tests.conftest import Cli
from tests.server.test_live import _bastion

#: Each command that keeps running, or makes the databases, in a home.
STARTS = [
    ("server", "start", "--port", "8699"),
    ("agent", "start", "--cluster", "c1", "--control-plane", "http://127.0.0.1:8699"),
    ("server", "migrate"),
    ("server", "init"),
    ("up", "--port", "8699"),
]


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701])
def test_a_home_group_or_others_can_reach_is_refused_before_anything_is_written(
    cli: Cli, home: Path, mode: int
) -> None:
    home.mkdir()
    home.chmod(mode)
    for command in STARTS:
        result = cli(*command)
        assert result.code == 2, (command, result)
        assert f"{home}: BASTION_HOME has mode {mode:04o}" in result.stderr, command
        assert f"chmod -R go-rwx {home}" in result.stderr, command
    assert list(home.iterdir()) == []


def test_a_storage_root_others_can_reach_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    root.mkdir()
    root.chmod(0o755)
    with pytest.raises(ConfigurationError, match=r"the storage root has mode 0755.*go-rwx"):
        Storage(root).check()
    root.chmod(0o700)
    Storage(root).check()


def _tree(root: Path) -> Iterator[tuple[str, int]]:
    yield str(root), stat.S_IMODE(root.stat().st_mode)
    for path in root.rglob("*"):
        yield str(path), stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.slow
def test_what_the_planes_create_is_private_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # a shell's usual umask, inherited by the processes below
    try:
        with running_plane(tmp_path) as plane:
            run = plane.admin.submit_run(
                {"name": "m", "project": "p", "cluster": "c1", "job": {"type": "smoke"}}
            )
            assert _wait_status(plane.admin, run.id, {"succeeded", "failed"}).status == "succeeded"
            # A local verb too: the local audit log (bastion.db) and the keyring.
            source = plane.client_home / "notes.txt"
            source.write_text("private")
            encrypted = _bastion(
                plane.client_home, "encrypt", str(source), str(plane.client_home / "notes.bst")
            )
            assert encrypted.returncode == 0, encrypted.stderr
            source.unlink()  # written by this test, under its umask
            # While both planes run: databases with their -wal and -shm files, keys, logs.
            roots = [plane.client_home, plane.agent_home, plane.storage, tmp_path / "server"]
            found = dict(item for root in roots for item in _tree(root))
    finally:
        os.umask(previous)
    names = {Path(path).name for path in found}
    for expected in (
        "control-plane.db",
        "control-plane.db-wal",
        "control-plane.db-shm",
        "bastion.db",
        "master.key",
        "credentials.json",
        "agent-c1.json",
        "job.log",
        "notes.bst",
    ):
        assert expected in names, expected
    opened = {
        path: f"{mode:04o}"
        for path, mode in found.items()
        if mode != (0o700 if Path(path).is_dir() else 0o600)
    }
    assert opened == {}


def test_a_sqlite_database_made_in_process_is_private_whatever_the_umask(tmp_path: Path) -> None:
    from sqlalchemy import text

    from bastion.db import create_db_engine

    previous = os.umask(0o022)
    try:
        engine = create_db_engine(f"sqlite:///{tmp_path / 'db' / 'made-here.db'}")
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "db").iterdir()}
        engine.dispose()
    finally:
        os.umask(previous)
    assert files and all(mode == 0o600 for mode in files.values()), files
    assert stat.S_IMODE((tmp_path / "db").stat().st_mode) == 0o700


def test_a_home_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    from bastion.files import ensure_private_root

    if os.geteuid() != 0:  # pragma: no cover - CI runs as root, which can give a folder away
        pytest.skip("giving a folder to another user needs root")
    home = tmp_path / "theirs"
    home.mkdir(mode=0o700)
    os.chown(home, 65534, 65534)
    with pytest.raises(ConfigurationError, match="belongs to user id 65534"):
        ensure_private_root(home, what="BASTION_HOME")
