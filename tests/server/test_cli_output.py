"""``-o json`` / ``-o yaml`` on the list and show verbs print what the API sent, field for field."""

from __future__ import annotations

import json

import pytest
import yaml

from bastion.cli.main import run
from bastion.client import Client
from tests.server.conftest import ControlPlane


@pytest.fixture
def as_admin(control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> ControlPlane:
    """CLI verbs talk to the in-process control plane as its administrator."""
    cp = control_plane

    def connect(_settings: object) -> Client:
        return Client(str(cp.client.base_url), token=cp.admin_token, transport=cp.client._transport)

    monkeypatch.setattr(Client, "from_settings", staticmethod(connect))
    admin = cp.as_(cp.admin_token)
    assert cp.client.post("/api/v1/projects", json={"name": "p1"}, headers=admin).is_success
    assert cp.client.post("/api/v1/clusters", json={"name": "c1"}, headers=admin).is_success
    return cp


def _bastion(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert run(list(argv)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "route"),
    [
        (["project", "list"], "/api/v1/projects"),
        (["cluster", "list"], "/api/v1/clusters"),
        (["member", "list", "p1"], "/api/v1/projects/p1/members"),
        (["run", "list", "-p", "p1"], "/api/v1/projects/p1/runs"),
        (["user", "list"], "/api/v1/users"),
        (["token", "list"], "/api/v1/tokens"),
        (["policy", "list", "-p", "p1"], "/api/v1/projects/p1/policies"),
        (["deploy", "list", "-p", "p1"], "/api/v1/projects/p1/deployments"),
    ],
)
def test_json_and_yaml_are_the_api_answer(
    as_admin: ControlPlane, capsys: pytest.CaptureFixture[str], argv: list[str], route: str
) -> None:
    cp = as_admin
    answer = cp.client.get(route, headers=cp.as_(cp.admin_token)).json()
    assert json.loads(_bastion(capsys, *argv, "-o", "json")) == answer
    assert yaml.safe_load(_bastion(capsys, *argv, "--output", "yaml")) == answer
    table = _bastion(capsys, *argv)
    with pytest.raises(json.JSONDecodeError):
        json.loads(table)


def test_nested_lists_carry_their_versions(
    as_admin: ControlPlane, capsys: pytest.CaptureFixture[str]
) -> None:
    assert json.loads(_bastion(capsys, "data", "list", "-p", "p1", "-o", "json")) == []
    assert json.loads(_bastion(capsys, "model", "list", "-p", "p1", "-o", "json")) == []


def test_secrets_stay_out_of_machine_output(
    as_admin: ControlPlane, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = json.loads(_bastion(capsys, "token", "list", "-o", "json"))
    assert listed and all("token" not in row and "secret_hash" not in row for row in listed)


def test_an_unknown_format_is_a_usage_error(
    as_admin: ControlPlane, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["project", "list", "-o", "xml"]) == 2
    assert "xml" in capsys.readouterr().err


def test_bastion_project_names_the_project_once(
    as_admin: ControlPlane, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(["run", "list", "-o", "json"]) == 2  # no project: a usage error
    assert "--project" in capsys.readouterr().err
    monkeypatch.setenv("BASTION_PROJECT", "p1")
    assert json.loads(_bastion(capsys, "run", "list", "-o", "json")) == []
    assert json.loads(_bastion(capsys, "policy", "list", "-o", "json")) == []
    assert run(["run", "list", "-p", "nope"]) == 2  # -p still wins


def test_project_use_saves_a_default_that_p_and_the_variable_override(
    as_admin: ControlPlane, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.delenv("BASTION_PROJECT", raising=False)
    assert run(["project", "use", "nope"]) == 2
    assert "does not exist or you are not a member" in capsys.readouterr().err
    assert "use project p1" in _bastion(capsys, "project", "use", "p1")
    assert json.loads(_bastion(capsys, "run", "list", "-o", "json")) == []
    assert "BASTION_PROJECT" not in os.environ  # set for one command only
    assert run(["run", "list", "-p", "nope"]) == 2  # -p wins over the default
    monkeypatch.setenv("BASTION_PROJECT", "nope")
    assert run(["run", "list"]) == 2  # and the variable too
    monkeypatch.delenv("BASTION_PROJECT")
    _bastion(capsys, "project", "use", "--clear")
    assert run(["run", "list"]) == 2 and "--project" in capsys.readouterr().err
