"""Settings: the two databases have names that say whose they are; the older names still work."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import Settings


def test_databases_default_to_sqlite_in_the_home(home: Path) -> None:
    settings = Settings()
    assert settings.control_plane_database == f"sqlite:///{home / 'control-plane.db'}"
    assert settings.local_audit_database == f"sqlite:///{home / 'bastion.db'}"


@pytest.mark.parametrize(
    ("variable", "control_plane", "local_audit"),
    [
        ("BASTION_CONTROL_PLANE_DATABASE_URL", "postgresql://db/cp", None),
        ("BASTION_SERVER_DATABASE_URL", "postgresql://db/cp", None),
        ("BASTION_LOCAL_AUDIT_DATABASE_URL", None, "postgresql://db/local"),
        ("BASTION_DATABASE_URL", None, "postgresql://db/local"),
    ],
)
def test_database_variables_new_and_older_names(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    control_plane: str | None,
    local_audit: str | None,
) -> None:
    monkeypatch.setenv(variable, control_plane or local_audit or "")
    settings = Settings()
    assert settings.control_plane_database_url == control_plane
    assert settings.local_audit_database_url == local_audit


def test_the_new_name_wins_over_the_older_one(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_SERVER_DATABASE_URL", "postgresql://db/old")
    monkeypatch.setenv("BASTION_CONTROL_PLANE_DATABASE_URL", "postgresql://db/new")
    assert Settings().control_plane_database == "postgresql://db/new"
