"""The SDK says what happened when no answer came: unreachable, or reached but slow."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bastion.client import Client, save_credentials
from bastion.config import Settings
from bastion.errors import ServiceUnavailable

URL = "https://bastion.example:8600"


def _failing(exc: Exception) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("exc", "says", "never"),
    [
        (httpx.ConnectError("refused"), "cannot reach the control plane", "slow"),
        (httpx.ConnectTimeout("no route"), "cannot reach the control plane", "slow"),
        (httpx.ReadTimeout("late"), "is slow to answer (nothing within 30 s)", "cannot reach"),
        (httpx.RemoteProtocolError("gone"), "closed the connection before answering", "reach"),
    ],
)
def test_a_read_is_reported_as_what_happened(exc: Exception, says: str, never: str) -> None:
    with Client(URL, transport=_failing(exc)) as client, pytest.raises(ServiceUnavailable) as err:
        client.list_projects()
    assert says in str(err.value)
    assert never not in str(err.value)
    assert "may have been made" not in str(err.value)  # a read changes nothing


def test_a_write_whose_answer_was_lost_is_not_called_failed() -> None:
    with (
        Client(URL, transport=_failing(httpx.ReadTimeout("late"))) as client,
        pytest.raises(ServiceUnavailable) as err,
    ):
        client.create_project("cardiology")
    assert "slow to answer" in str(err.value)
    assert "the change may have been made: look before you retry" in str(err.value)
    assert "BASTION_TIMEOUT" in str(err.value)


def test_bastion_timeout_sets_how_long_the_cli_waits(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_TIMEOUT", "120")
    settings = Settings()
    save_credentials(settings, url=URL, token="bst_x_y", verify=True)
    with Client.from_settings(settings) as client:
        timeout = client._http.timeout
    assert (timeout.connect, timeout.read, timeout.write) == (120, 120, 120)
    monkeypatch.setenv("BASTION_TIMEOUT", "0")
    with pytest.raises(ValueError, match="timeout"):
        Settings()
