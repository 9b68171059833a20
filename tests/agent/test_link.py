"""A federated site's way out (bastion.agent.link): no network in its sandbox, one socket that
the agent joins to the aggregator's address as the control plane gives it."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from bastion.agent.job_setup import job_network
from bastion.agent.link import MAX_CONNECTIONS, LinkServer, LocalLink, aggregator_address, reachable
from bastion.agent.relay import Relay, RelayTarget
from bastion.federated.tls import link_certificates

RUN = "a" * 32


@contextlib.contextmanager
def _echo() -> Iterator[int]:
    """A TCP server on loopback that answers every chunk with ``echo:`` and the chunk."""
    server = socket.create_server(("127.0.0.1", 0))
    seen: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = server.accept()
                seen.append(connection)
                threading.Thread(target=answer, args=(connection,), daemon=True).start()

    def answer(connection: socket.socket) -> None:
        with contextlib.suppress(OSError), connection:
            while chunk := connection.recv(1 << 16):
                connection.sendall(b"echo:" + chunk)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield int(server.getsockname()[1])
    finally:
        server.close()


def _control_plane(view: Mapping[str, object], asked: list[str]) -> httpx.Client:
    """The relay's upstream client, against a control plane that answers the run's view."""

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(f"{request.method} {request.url.path}")
        if request.url.path == f"/api/v1/projects/p/runs/{RUN}/federation":
            return httpx.Response(200, json=view)
        return httpx.Response(404)

    return httpx.Client(base_url="http://plane", transport=httpx.MockTransport(answer))


@contextlib.contextmanager
def _link(tmp_path: Path, view: Mapping[str, object], asked: list[str]) -> Iterator[Path]:
    path = tmp_path / "link.sock"
    target = RelayTarget(url="http://plane", verify=True, token="t", project="p", run_id=RUN)
    server = LinkServer(str(path), target, _control_plane(view, asked))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()


def _exchange(address: str, message: bytes) -> bytes:
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(message)
        connection.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := connection.recv(1 << 16):
            received += chunk
        return received


def test_a_sites_connection_reaches_the_aggregator_the_control_plane_names(
    tmp_path: Path,
) -> None:
    asked: list[str] = []
    with _echo() as port:
        view = {"run": RUN, "status": "running", "aggregator": {"address": f"127.0.0.1:{port}"}}
        with _link(tmp_path, view, asked) as path, LocalLink(path) as way_out:
            assert way_out.address.startswith("127.0.0.1:")
            assert _exchange(way_out.address, b"hello") == b"echo:hello"
            big = bytes(range(256)) * 4096  # 1 MiB, both ways
            assert _exchange(way_out.address, big).replace(b"echo:", b"") == big
    # Asked of the control plane, for this run, as each connection opened.
    assert asked == [f"GET /api/v1/projects/p/runs/{RUN}/federation"] * 2


@pytest.mark.parametrize(
    "view",
    [
        {"run": RUN, "status": "queued", "aggregator": None},  # not published yet
        {"run": RUN, "status": "running", "aggregator": {"address": "no-port"}},
        {"run": RUN, "status": "running", "aggregator": {"address": "127.0.0.1:99999"}},
    ],
)
def test_without_a_valid_published_address_the_connection_is_closed(
    tmp_path: Path, view: dict[str, object]
) -> None:
    with _link(tmp_path, view, []) as path, LocalLink(path) as way_out:
        assert _exchange(way_out.address, b"hello") == b""


def test_the_job_names_no_address_whatever_it_sends() -> None:
    """What the job's side sends is passed through, never read as where to go."""
    with pytest.raises(ValueError, match="no address yet"):
        aggregator_address({"aggregator": None})
    with pytest.raises(ValueError, match="not HOST:PORT"):
        aggregator_address({"aggregator": {"address": "10.0.0.5"}})
    assert aggregator_address({"aggregator": {"address": "[::1]:9092"}}) == ("::1", 9092)
    assert aggregator_address({"aggregator": {"address": "agg.example:443"}}) == (
        "agg.example",
        443,
    )


def test_only_a_site_jobs_relay_serves_a_link() -> None:
    for link in (False, True):
        target = RelayTarget(
            url="http://127.0.0.1:9", verify=True, token="t", project="p", run_id=RUN, link=link
        )
        relay = Relay(target)
        try:
            assert (relay.folder / "link.sock").exists() is link
            assert (relay.folder / "relay.sock").exists()
        finally:
            relay.close()
        assert not relay.folder.exists()


def test_which_jobs_keep_the_hosts_network() -> None:
    """Spelled out: only the two jobs that listen; a federated site has none."""
    expected = {
        "smoke": False,
        "ingest": False,
        "verify": False,
        "scan": False,
        "pseudonymize": False,
        "register-code": False,
        "train": False,
        "erase": False,
        "evaluate": False,
        "verify-model": False,
        "export-model": False,
        "import-model": False,
        "serve": True,
        "federated": True,
        "federated-site": False,
    }
    assert {kind: job_network(kind) for kind in expected} == expected


@pytest.mark.parametrize(
    ("host", "named"),
    [("10.0.0.5", ["10.0.0.5", "127.0.0.1"]), ("agg.example", ["agg.example", "127.0.0.1"])],
)
def test_the_link_certificate_names_the_loopback_a_site_dials(
    tmp_path: Path, host: str, named: list[str]
) -> None:
    made = link_certificates(tmp_path / "tls", host=host)
    certificate = x509.load_pem_x509_certificate(made.certificate.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(getattr(n, "value", n)) for n in names] == named


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("10.0.0.5", True),
        ("::1", True),
        ("169.254.169.254", False),  # a cloud metadata service
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("fe80::1", False),
        ("240.0.0.1", False),
    ],
)
def test_the_agent_dials_no_link_local_multicast_or_unspecified_address(
    host: str, allowed: bool
) -> None:
    if allowed:
        reachable(host, 9092)
    else:
        with pytest.raises(ValueError, match="not one a site may dial"):
            reachable(host, 9092)


def test_a_published_metadata_address_is_not_joined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dialled: list[object] = []
    connect = socket.create_connection

    def recording(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        dialled.append(address)
        return connect(address, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "create_connection", recording)
    view = {"run": RUN, "status": "running", "aggregator": {"address": "169.254.169.254:80"}}
    with _link(tmp_path, view, []) as path, LocalLink(path) as way_out:
        assert _exchange(way_out.address, b"GET / HTTP/1.0\r\n\r\n") == b""
    assert ("169.254.169.254", 80) not in dialled, dialled  # refused before any dial


def test_closing_the_link_cuts_its_connections_and_it_carries_a_bounded_number(
    tmp_path: Path,
) -> None:
    with _echo() as port:
        view = {"run": RUN, "status": "running", "aggregator": {"address": f"127.0.0.1:{port}"}}
        with _link(tmp_path, view, []) as path:
            held = []
            for _ in range(MAX_CONNECTIONS):
                end = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                end.settimeout(10)
                end.connect(str(path))
                end.sendall(b"ping")
                assert end.recv(100) == b"echo:ping"  # joined, and held open
                held.append(end)
            extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            extra.settimeout(10)
            extra.connect(str(path))
            assert extra.recv(100) == b""  # one too many: closed at once
            extra.close()
        # The link closed (the fixture's exit): every connection it carried is cut.
        for end in held:
            assert end.recv(100) == b""
            end.close()
