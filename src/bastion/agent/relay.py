"""The relay: a sandboxed job's only channel, a Unix socket served outside its sandbox.

The job holds no credential and reaches no network. It speaks HTTP to the socket bound at
:data:`bastion.security.sandbox.RELAY_SOCKET`; the relay checks each request and forwards
it to the control plane with the job's own token (bound to this run and attempt):

1. only the reports a job makes: events, logs, metrics and its result, for an inference
   server its serving keys and audit events, for a federated run's job what it tells the
   other participants and reads of them (:data:`ROUTES`);
2. only for its own project and run: the path must be exactly that run's;
3. at most :data:`MAX_BODY` bytes, no query string, no header but the content type.

Anything else gets 403 and never leaves the host. The relay runs in the process that starts
the sandbox (the agent, or on a Ray node the task supervising the job).

A federated site's job (``RelayTarget.link``) also gets ``link.sock`` beside it: its
SuperNode's one way out. Each connection is joined to the aggregator's address as the control
plane gives it for this run (asked with the job's token when the connection opens), and the
bytes pass through untouched (TLS runs end to end between SuperNode and SuperLink). The job
chooses nothing: its sandbox has no network, and the address is not its to name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socketserver
import ssl
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx

from bastion.errors import InvalidInput, NotAuthorized, ServiceUnavailable
from bastion.http_status import PROBLEM_JSON, problem

__all__ = ["MAX_BODY", "ROUTES", "Relay", "RelayTarget", "dial"]

log = logging.getLogger("bastion.agent.relay")

#: (method, last path segment) of every request a job may make about its own run.
ROUTES = frozenset(
    {
        ("POST", "events"),
        ("POST", "logs"),
        ("POST", "metrics"),
        ("POST", "result"),
        ("GET", "serving-keys"),
        ("POST", "serving-audit"),
        ("POST", "federation"),
        ("GET", "federation"),
    }
)
#: The largest report the relay forwards (the control plane's default request limit).
MAX_BODY = 1 << 20


@dataclass(frozen=True)
class RelayTarget:
    """Where the relay forwards to, and as whom: picklable, so a Ray task can serve it."""

    url: str
    verify: bool | str
    token: str
    project: str
    run_id: str
    timeout: float = 30.0
    #: A federated site's job: serve ``link.sock``, joined to the aggregator's address.
    link: bool = False

    def __repr__(self) -> str:  # never the token
        return f"RelayTarget(url={self.url!r}, project={self.project!r}, run={self.run_id!r})"


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    target: RelayTarget
    upstream: httpx.Client


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return  # requests are the job's reports; the control plane records them

    def do_GET(self) -> None:
        self._relay("GET")

    def do_POST(self) -> None:
        self._relay("POST")

    def do_PUT(self) -> None:
        self._relay("PUT")

    def do_DELETE(self) -> None:
        self._relay("DELETE")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self, kind: type[NotAuthorized | InvalidInput], status: int, why: str) -> None:
        body = json.dumps(problem(kind, status=status, detail=why)).encode()
        self._answer(status, body, PROBLEM_JSON)

    def _relay(self, method: str) -> None:
        target = self.server.target
        runs = f"/api/v1/projects/{target.project}/runs/{target.run_id}/"
        # (1) and (2): one of a job's reports, about its own run
        suffix = self.path.removeprefix(runs) if self.path.startswith(runs) else None
        if suffix is None or (method, suffix) not in ROUTES:
            log.warning("run %s: relay refused %s %s", target.run_id, method, self.path[:200])
            self._refuse(
                NotAuthorized,
                403,
                f"the relay forwards only this job's reports about run {target.run_id}; "
                f"{method} {self.path[:200]} is not one",
            )
            self.close_connection = True
            return
        # (3) bounded
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._refuse(InvalidInput, 413, f"a report is at most {MAX_BODY} bytes")
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        try:
            response = self.server.upstream.request(
                method,
                self.path,
                content=body,
                headers={"content-type": self.headers.get("content-type", "application/json")},
            )
        except httpx.HTTPError as exc:
            detail = f"the control plane cannot be reached from the agent ({type(exc).__name__})"
            data = json.dumps(problem(ServiceUnavailable, status=503, detail=detail)).encode()
            self._answer(503, data, PROBLEM_JSON)
            return
        self._answer(
            response.status_code,
            response.content,
            response.headers.get("content-type", "application/json"),
        )


class Relay:
    """A relay for one job, serving a socket in a private folder of its own.

    ``folder`` is what the sandbox binds at ``/run/bastion``; ``socket`` is the path the job
    dials when it runs without a sandbox."""

    def __init__(self, target: RelayTarget) -> None:
        # A short path of its own: a Unix socket's path is at most 107 bytes.
        self.folder = Path(tempfile.mkdtemp(prefix="bastion-relay-"))
        self.socket = self.folder / "relay.sock"
        tls = (
            ssl.create_default_context(cafile=target.verify)
            if isinstance(target.verify, str)
            else target.verify
        )
        self._server = _Server(str(self.socket), _Handler)
        self._server.target = target
        self._server.upstream = httpx.Client(
            base_url=target.url.rstrip("/"),
            headers={"authorization": f"Bearer {target.token}"},
            verify=tls,
            timeout=target.timeout,
        )
        os.chmod(self.socket, 0o600)
        self._servers: list[socketserver.BaseServer] = [self._server]
        if target.link:
            from bastion.agent.link import LinkServer  # noqa: PLC0415 - federated sites only

            try:
                link = LinkServer(str(self.folder / "link.sock"), target, self._server.upstream)
            except OSError:
                self._server.server_close()
                self._server.upstream.close()
                shutil.rmtree(self.folder, ignore_errors=True)
                raise
            os.chmod(self.folder / "link.sock", 0o600)
            self._servers.append(link)
        for server in self._servers:
            threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},  # how long close() may wait for the loop
                name=f"relay-{target.run_id[:8]}",
                daemon=True,
            ).start()

    def close(self) -> None:
        """Stop serving, and remove the sockets and their folder."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._server.upstream.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def dial(path: str) -> httpx.HTTPTransport:
    """The job's side: an HTTP transport over the relay's socket."""
    if not os.path.exists(path):
        raise ServiceUnavailable(f"the agent's relay socket {path} is missing")
    return httpx.HTTPTransport(uds=path)
