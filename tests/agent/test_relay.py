"""The relay forwards a job's own reports with its token, and nothing else."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from bastion.agent.relay import MAX_BODY, Relay, RelayTarget

RUNS = "/api/v1/projects/p/runs/r1"


@dataclass
class Upstream:
    """A stand-in control plane on loopback that records what reaches it."""

    url: str
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    record = Upstream("")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def _any(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            record.seen.append((self.command, self.path, dict(self.headers), body))
            data = json.dumps({"ok": True}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _any  # noqa: N815 - http.server's names

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    record.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield record
    server.shutdown()
    server.server_close()


@pytest.fixture
def relay(upstream: Upstream) -> Iterator[httpx.Client]:
    served = Relay(
        RelayTarget(url=upstream.url, verify=True, token="job-secret", project="p", run_id="r1")
    )
    assert oct(served.socket.stat().st_mode & 0o777) == "0o600"
    with httpx.Client(
        base_url="http://relay", transport=httpx.HTTPTransport(uds=str(served.socket))
    ) as job:
        yield job
    served.close()
    assert not served.folder.exists()


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("POST", "events"),
        ("POST", "logs"),
        ("POST", "metrics"),
        ("POST", "result"),
        ("GET", "serving-keys"),
        ("POST", "serving-audit"),
        ("POST", "federation"),
        ("GET", "federation"),
    ],
)
def test_a_jobs_own_reports_go_through_with_its_token(
    relay: httpx.Client, upstream: Upstream, method: str, suffix: str
) -> None:
    body = b'{"lines": ["x"]}' if method == "POST" else b""
    answer = relay.request(
        method,
        f"{RUNS}/{suffix}",
        content=body,
        headers={"content-type": "application/json", "authorization": "Bearer forged"},
    )
    assert answer.status_code == 200 and answer.json() == {"ok": True}
    ((seen_method, path, headers, seen_body),) = upstream.seen
    assert (seen_method, path, seen_body) == (method, f"{RUNS}/{suffix}", body)
    assert headers["authorization"] == "Bearer job-secret"  # its own, not what the job sent


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/projects/p/runs/r2/logs"),  # another run
        ("POST", "/api/v1/projects/q/runs/r1/logs"),  # another project
        ("GET", "/api/v1/projects/p/runs"),  # reading
        ("GET", f"{RUNS}/logs"),  # a report route, with the wrong method
        ("POST", f"{RUNS}/cancel"),
        ("POST", f"{RUNS}/logs?x=1"),
        ("POST", f"{RUNS}/logs/../../r2/logs"),
        ("DELETE", f"{RUNS}/events"),
        ("GET", "/api/v1/whoami"),
        ("POST", "/api/v1/clusters/c1/lease"),
    ],
)
def test_everything_else_is_refused_and_never_leaves(
    relay: httpx.Client, upstream: Upstream, method: str, path: str
) -> None:
    answer = relay.request(method, path, content=b"{}")
    assert answer.status_code == 403, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert "relay forwards only" in answer.json()["detail"]
    assert upstream.seen == []


def test_an_oversized_report_is_refused(relay: httpx.Client, upstream: Upstream) -> None:
    answer = relay.post(f"{RUNS}/logs", content=b"x" * (MAX_BODY + 1))
    assert answer.status_code == 413
    assert upstream.seen == []


def test_an_unreachable_control_plane_is_a_503_the_job_retries() -> None:
    served = Relay(
        RelayTarget(url="http://127.0.0.1:9", verify=True, token="t", project="p", run_id="r1")
    )
    try:
        with httpx.Client(
            base_url="http://relay", transport=httpx.HTTPTransport(uds=str(served.socket))
        ) as job:
            answer = job.post(f"{RUNS}/logs", content=b'{"lines": []}')
        assert answer.status_code == 503
        assert answer.json()["type"] == "urn:bastion:error:service-unavailable"
    finally:
        served.close()


def test_the_token_never_shows_in_its_repr() -> None:
    target = RelayTarget(url="http://x", verify=True, token="job-secret", project="p", run_id="r")
    assert "job-secret" not in repr(target)
