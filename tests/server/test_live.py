"""The control plane as people run it: `bastion server init/start`, the CLI and SDK, TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bastion.client import Client
from bastion.server.db.migrate import head_revision
from tests.pg import postgres_schema

BASTION = str(Path(sys.executable).with_name("bastion"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    return {**env, "BASTION_HOME": str(home)}


def _bastion(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BASTION, *args],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _bastion_input(home: Path, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``bastion ARGS`` answering its prompts from ``stdin`` (passwords)."""
    return subprocess.run(
        [BASTION, *args],
        env=_env(home),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _init(home: Path, *extra: str) -> str:
    result = _bastion(home, "server", "init", *extra)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    token = lines[lines.index(next(line for line in lines if "shown once" in line)) + 1].strip()
    assert token.startswith("bst_")
    return token


def _serve(home: Path, port: int, *extra: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [BASTION, "server", "start", "--port", str(port), *extra],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_healthy(url: str, verify: bool | ssl.SSLContext = True) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", verify=verify, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"server at {url} did not become healthy")


@pytest.fixture
def server_home(tmp_path: Path) -> Path:
    return tmp_path / "server-home"


@pytest.fixture
def client_home(tmp_path: Path) -> Path:
    return tmp_path / "client-home"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_option(request: pytest.FixtureRequest) -> Iterator[tuple[str, ...]]:
    """No option (SQLite in BASTION_HOME) or ``--db`` with a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield ()
    else:
        for url in postgres_schema():
            yield ("--db", url)


def test_init_start_and_manage_from_the_cli(
    server_home: Path, client_home: Path, db_option: tuple[str, ...]
) -> None:
    token = _init(server_home, *db_option)
    again = _bastion(server_home, "server", "init", *db_option)
    assert again.returncode == 2 and "already has users" in again.stderr
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    for _ in _serve(server_home, port, *db_option):
        _wait_healthy(url)
        login = _bastion(client_home, "login", "--url", url, "--token", token)
        assert login.returncode == 0, login.stderr
        credentials = client_home / "credentials.json"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        steps = [
            ("user", "create", "alice"),
            ("user", "create", "runner", "--kind", "agent"),
            ("project", "create", "cardiology", "--description", "heart data"),
            ("member", "add", "cardiology", "alice", "--role", "ml-engineer"),
        ]
        for step in steps:
            result = _bastion(client_home, *step)
            assert result.returncode == 0, f"{step}: {result.stderr}"
        secret = "a dashboard passphrase"
        set_password = _bastion_input(
            client_home, f"{secret}\n{secret}\n", "user", "password", "alice"
        )
        assert set_password.returncode == 0, set_password.stderr
        assert secret not in set_password.stdout + set_password.stderr
        logged_in = httpx.post(
            f"{url}/api/v1/auth/login", json={"username": "alice", "password": secret}
        )
        assert logged_in.status_code == 201
        members = _bastion(client_home, "member", "list", "cardiology")
        assert "alice" in members.stdout and "ml-engineer" in members.stdout
        # An admin cannot mint a token that acts as alice; alice logs in and mints her own.
        impersonate = _bastion(client_home, "token", "create", "alice-ci", "--user", "alice")
        assert impersonate.returncode == 1 and "machine identities only" in impersonate.stderr
        alice_token = logged_in.json()["token"]
        with Client(url, token=alice_token) as alice:
            assert alice.whoami().memberships == {"cardiology": "ml-engineer"}
            assert [p.name for p in alice.list_projects()] == ["cardiology"]
        minted = _bastion(client_home, "token", "create", "runner-ci", "--user", "runner")
        assert minted.returncode == 0, minted.stderr
        runner_token = minted.stdout.splitlines()[1].strip()
        listed = _bastion(client_home, "token", "list", "--user", "runner")
        token_id = minted.stdout.split()[1]
        assert token_id in listed.stdout and runner_token not in listed.stdout
        assert _bastion(client_home, "token", "revoke", token_id).returncode == 0
        with Client(url, token=runner_token) as runner, pytest.raises(Exception, match="401"):
            runner.whoami()
        refused = _bastion(client_home, "project", "create", "Bad Name")
        assert refused.returncode == 2 and "body.name" in refused.stderr
        users = _bastion(client_home, "user", "list")
        assert "runner" in users.stdout and "agent" in users.stdout
        audit = httpx.get(
            f"{url}/api/v1/audit/verify", headers={"authorization": f"Bearer {token}"}
        ).json()
        assert audit["events"] >= 8


def _failed_login_address(url: str, token: str, forwarded: str) -> str:
    """Fail a login claiming ``X-Forwarded-For: forwarded``; the address the audit recorded."""
    refused = httpx.post(
        f"{url}/api/v1/auth/login",
        json={"username": "admin", "password": "wrong"},
        headers={"X-Forwarded-For": forwarded},
    )
    assert refused.status_code == 401
    events = httpx.get(
        f"{url}/api/v1/audit/events", headers={"authorization": f"Bearer {token}"}
    ).json()
    failed = [e for e in events if e["action"] == "auth.login.failed"]
    return str(failed[-1]["details"]["address"])


def test_forwarded_addresses_are_believed_only_from_a_trusted_proxy(server_home: Path) -> None:
    token = _init(server_home)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    for _ in _serve(server_home, port):
        _wait_healthy(url)
        assert _failed_login_address(url, token, "203.0.113.7") == "127.0.0.1"
    for _ in _serve(server_home, port, "--trusted-proxy", "127.0.0.0/8"):
        _wait_healthy(url)
        assert _failed_login_address(url, token, "203.0.113.8") == "203.0.113.8"
    bad = _bastion(server_home, "server", "start", "--trusted-proxy", "proxy.example")
    assert bad.returncode == 2 and "--trusted-proxy 'proxy.example'" in bad.stderr


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1, made by the test."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bastion test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = (
        directory / "ca.pem",
        directory / "cert.pem",
        directory / "key.pem",
    )
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


def test_tls_with_a_private_ca(server_home: Path, client_home: Path, tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path / "pki")
    token = _init(server_home)
    port = _free_port()
    url = f"https://127.0.0.1:{port}"
    for _ in _serve(server_home, port, "--tls-cert", str(cert), "--tls-key", str(key)):
        trust = ssl.create_default_context(cafile=str(ca))
        _wait_healthy(url, verify=trust)
        untrusted = _bastion(client_home, "login", "--url", url, "--token", token)
        assert untrusted.returncode == 2 and "--ca-cert" in untrusted.stderr
        trusted = _bastion(
            client_home, "login", "--url", url, "--token", token, "--ca-cert", str(ca)
        )
        assert trusted.returncode == 0, trusted.stderr
        assert _bastion(client_home, "project", "create", "secure").returncode == 0
        response = httpx.get(f"{url}/healthz", verify=trust)
        assert response.headers["strict-transport-security"].startswith("max-age=")


def test_start_refuses_unsafe_or_unready_setups(server_home: Path, tmp_path: Path) -> None:
    plain = _bastion(server_home, "server", "start", "--host", "192.0.2.10")
    assert plain.returncode == 2 and "--insecure" in plain.stderr
    half = _bastion(server_home, "server", "start", "--tls-cert", str(tmp_path / "c.pem"))
    assert half.returncode == 2 and "go together" in half.stderr
    unmigrated = _bastion(server_home, "server", "start", "--port", str(_free_port()))
    assert unmigrated.returncode == 2 and "bastion server migrate" in unmigrated.stderr
    migrated = _bastion(server_home, "server", "migrate")
    assert migrated.returncode == 0 and f"revision {head_revision()}" in migrated.stdout
