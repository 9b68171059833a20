"""Identities: who may mint tokens for whom, the login throttle, and token secrets."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from bastion.errors import RateLimited
from bastion.server.login_throttle import LoginThrottle
from tests.server.conftest import PASSWORD, ControlPlane


def test_an_admin_cannot_mint_a_token_that_acts_as_a_person(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    admin = cp.as_(cp.admin_token)
    refused = cp.client.post(
        "/api/v1/tokens", json={"name": "as-reviewer", "username": "reviewer"}, headers=admin
    )
    assert refused.status_code == 403
    assert "machine identities only" in refused.json()["detail"]
    denied = [row for row in cp.database.audit.rows() if row.action == "access.denied"]
    assert denied and denied[-1].actor == "user:admin" and denied[-1].target == "/api/v1/tokens"
    # Machine identities are what admins mint tokens for, one kind at a time.
    expected = {"serving-1": 201, "job-1": 201, "agent-1": 201, "engineer": 403, "admin": 201}
    minted = {
        username: cp.client.post(
            "/api/v1/tokens", json={"name": "t", "username": username}, headers=admin
        ).status_code
        for username in expected
    }
    assert minted == expected


def test_a_known_token_id_with_a_wrong_secret_is_refused(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    prefix, token_id, secret = role_tokens["auditor"].split("_", 2)
    assert cp.client.get("/api/v1/auth/whoami", headers=cp.as_(role_tokens["auditor"])).is_success
    forged = f"{prefix}_{token_id}_{'A' * len(secret)}"
    assert cp.client.get("/api/v1/auth/whoami", headers=cp.as_(forged)).status_code == 401
    assert cp.client.get("/api/v1/audit/verify", headers=cp.as_(forged)).status_code == 401
    # The refusal poisons nothing: the real token still works afterwards.
    real = cp.client.get("/api/v1/audit/verify", headers=cp.as_(role_tokens["auditor"]))
    assert real.status_code == 200


def test_the_throttle_delays_grow_per_account_and_address() -> None:
    now = [1000.0]
    throttle = LoginThrottle(max_failures=3, window_seconds=900, clock=lambda: now[0])
    waits: list[int] = []
    for _ in range(7):
        throttle.check(account="ana", address="a")  # allowed now
        throttle.failed(account="ana", address="a")
        try:
            throttle.check(account="ana", address="a")
            waits.append(0)
        except RateLimited as limited:
            waits.append(limited.retry_after or 0)
            now[0] += limited.retry_after or 0
    assert waits == [0, 0, 3, 5, 9, 17, 33]  # 2, 4, 8, 16, 32 s, rounded up past the wait
    throttle.check(account="ana", address="b")  # the same account from elsewhere: not held back
    throttle.check(account="bob", address="a")  # another account from there: not either
    throttle.succeeded(account="ana", address="a")
    throttle.check(account="ana", address="a")  # a success clears that pair


def test_the_throttle_caps_one_address_spraying_accounts_and_counts_per_account() -> None:
    now = [0.0]
    throttle = LoginThrottle(max_failures=2, window_seconds=60, clock=lambda: now[0])
    for i in range(8):
        throttle.failed(account=f"user{i}", address="spray")
    with pytest.raises(RateLimited) as info:
        throttle.check(account="fresh", address="spray")
    assert info.value.retry_after == 61
    counts = [throttle.failed(account="ana", address=f"10.0.0.{i}") for i in range(3)]
    assert counts == [1, 2, 3]
    now[0] += 61
    throttle.check(account="fresh", address="spray")  # the window passed


def test_guessing_one_account_from_many_addresses_raises_an_alert(
    control_plane: ControlPlane,
) -> None:
    cp = control_plane
    for i in range(10):
        with TestClient(cp.app, client=(f"127.0.1.{i}", 50000)) as guesser:
            bad = guesser.post("/api/v1/auth/login", json={"username": "admin", "password": "x"})
            assert bad.status_code == 401
    alerts = cp.client.get("/api/v1/alerts", headers=cp.as_(cp.admin_token)).json()
    assert [(a["kind"], a["actor"]) for a in alerts] == [("password_guessing", "user:admin")]
    events = [row for row in cp.database.audit.rows() if row.action == "auth.login.failed"]
    assert len(events) == 10
    assert json.loads(events[-1].details) == {"address": "127.0.1.9"}
    # The admin logs in all the same.
    login = cp.client.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
    assert login.status_code == 201


def test_an_admin_replacing_a_persons_password_raises_an_alert(
    control_plane: ControlPlane,
) -> None:
    cp = control_plane
    admin = cp.as_(cp.admin_token)
    created = cp.client.post(
        "/api/v1/users", json={"username": "ana", "password": PASSWORD}, headers=admin
    )
    assert created.status_code == 201, created.text
    alerts = cp.client.get("/api/v1/alerts", headers=admin).json()
    assert alerts == []  # a new account's first password is no reset
    reset = cp.client.patch(
        "/api/v1/users/ana", json={"password": "a password the admin now knows"}, headers=admin
    )
    assert reset.status_code == 200
    alerts = cp.client.get("/api/v1/alerts", headers=admin).json()
    assert [(a["kind"], a["actor"], a["details"]) for a in alerts] == [
        ("password_reset", "user:admin", {"user": "ana"})
    ]
    update = [row for row in cp.database.audit.rows() if row.action == "user.update"][-1]
    assert json.loads(update.details) == {"password_changed": True, "reset_by": "admin"}


def test_parallel_tries_cannot_spend_one_delay_many_times() -> None:
    now = [0.0]
    throttle = LoginThrottle(max_failures=2, window_seconds=900, clock=lambda: now[0])
    for _ in range(2):
        with throttle.attempt(account="ana", address="a"):
            throttle.failed(account="ana", address="a")
    now[0] += 10  # past the 2 s delay: one more try may start...
    with throttle.attempt(account="ana", address="a"):
        # ...but not a second one beside it while the first is being checked.
        with (
            pytest.raises(RateLimited, match="while another is being checked"),
            throttle.attempt(account="ana", address="a"),
        ):
            pass
        throttle.failed(account="ana", address="a")
    # Below the limit, tries may run side by side.
    with throttle.attempt(account="bob", address="a"), throttle.attempt(account="bob", address="a"):
        pass


def test_ipv6_clients_count_by_their_64() -> None:
    throttle = LoginThrottle(max_failures=2, window_seconds=900, clock=lambda: 0.0)
    for host in ("2001:db8:1:2::a", "2001:db8:1:2::b"):
        throttle.failed(account="ana", address=host)
    with pytest.raises(RateLimited):
        throttle.check(account="ana", address="2001:db8:1:2:ffff::1")  # same /64
    throttle.check(account="ana", address="2001:db8:1:3::1")  # another /64
    throttle.check(account="ana", address="127.0.0.1")
