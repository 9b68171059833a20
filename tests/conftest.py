"""Shared fixtures: an isolated BASTION_HOME and a way to run the CLI in-process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from bastion.cli.main import run
from bastion.client import Client
from bastion.config import Settings
from bastion.security import credentials
from bastion.security.keys import Keyring, load_keyring
from bastion.server.db.session import Database

pytest_plugins = ["tests.watchdog"]

#: The files that take minutes, longest first (seconds each in a full run on two cores). With
#: ``--dist loadfile`` a worker takes the next file in collection order when it is free; one of
#: these begun late would run on alone after the others end. ``make unit`` passes
#: ``--no-loadscope-reorder``, else xdist would hand out the files with the most tests first.
LONGEST_FIRST = (
    "tests/agent/test_ray.py",  # 130 alone, 350 under the suite's load
    "tests/agent/test_training_e2e.py",  # 380
    "tests/federated/test_federated_e2e.py",  # 180 alone: three agents, four rounds
    "tests/federated/test_flower.py",  # 75, mostly Flower's 3 s polls
    "tests/test_benchmarks.py",
    "tests/agent/test_code_e2e.py",  # 184
    "tests/agent/test_datasets_e2e.py",  # 156, with the text models' runs
    "tests/evaluate/test_memorization.py",  # 43 under the suite's load: two small gpts
    "tests/cli/test_quickstart.py",  # 135
    "tests/test_benchmarks_deployed.py",
    "tests/server/test_live.py",  # 120
    "tests/train/test_trainer.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run LONGEST_FIRST's files first, each file's tests in their order (a stable sort)."""
    rank = {path: index for index, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


@pytest.fixture(scope="session", autouse=True)
def _cheap_password_hashing() -> Iterator[None]:
    """Passwords hashed in this process use argon2's smallest parameters: at the library's
    defaults a hash costs 0.2-0.4 s, and the per-role tokens of every control-plane test
    made four logins. Planes started as subprocesses keep the real parameters, which
    tests/security/test_credentials.py checks."""
    from argon2 import PasswordHasher

    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(credentials, "_hasher", cheap)
        patch.setattr(credentials, "_DUMMY_HASH", cheap.hash("unknown user"))
        yield


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh BASTION_HOME for one test."""
    path = tmp_path / "bastion-home"
    monkeypatch.setenv("BASTION_HOME", str(path))
    for name in (
        "BASTION_MASTER_KEY",
        "BASTION_DATABASE_URL",
        "BASTION_LOCAL_AUDIT_DATABASE_URL",
        "BASTION_SERVER_DATABASE_URL",
        "BASTION_CONTROL_PLANE_DATABASE_URL",
        "BASTION_AUDIT_CHECKPOINT_INTERVAL",
    ):
        monkeypatch.delenv(name, raising=False)
    yield path


@pytest.fixture
def settings(home: Path) -> Settings:
    return Settings()


@pytest.fixture
def keyring(settings: Settings) -> Keyring:
    return load_keyring(settings)


def other_keyring(root: Path) -> Keyring:
    """A keyring of an unrelated installation (another cluster)."""
    return load_keyring(Settings(home=root, master_key=None))


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


class Cli(Protocol):
    def __call__(self, *args: str | os.PathLike[str]) -> CliResult: ...


@pytest.fixture
def cli(home: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run ``bastion ARGS`` in-process; returns the exit code and captured output."""

    def invoke(*args: str | os.PathLike[str]) -> CliResult:
        capsys.readouterr()
        code = run([str(arg) for arg in args])
        captured = capsys.readouterr()
        return CliResult(code=code, stdout=captured.out, stderr=captured.err)

    return invoke


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The machine's Redis on 127.0.0.1:6379, started when it is not running."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.ConnectionError:
        subprocess.run(
            [
                "redis-server",
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            check=True,
        )
        for _ in range(50):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
    return "redis://127.0.0.1:6379/0"


@contextlib.contextmanager
def tampered(path: Path) -> Iterator[None]:
    """Flip the last 10 bytes of a stored artifact for the ``with`` block, then restore them."""
    original = path.read_bytes()
    path.write_bytes(original[:-10] + bytes(b ^ 1 for b in original[-10:]))
    try:
        yield
    finally:
        path.write_bytes(original)


@pytest.fixture
def sdk_plane(home: Path, tmp_path: Path) -> Iterator[tuple[Client, Database]]:
    """The control plane app on SQLite, and an SDK client of its first admin (in-process)."""
    from fastapi.testclient import TestClient

    from bastion.server.app import build_database
    from bastion.server.services.bootstrap import initialise
    from tests.planes import migrated, plane_app

    settings = Settings(home=home, control_plane_database_url=f"sqlite:///{tmp_path / 'cp.db'}")
    migrated(settings)
    database = build_database(settings)
    token = initialise(database, username="admin", password=SDK_PASSWORD).token
    with (
        plane_app(settings, database) as app,
        TestClient(app, client=("127.0.0.1", 50000)) as http,
        Client(str(http.base_url), token=token, transport=http._transport) as admin,
    ):
        yield admin, database
    database.engine.dispose()


SDK_PASSWORD = "correct horse battery staple"
