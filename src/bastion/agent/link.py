"""A federated site's one way out: its SuperNode's connection to the aggregator, through the
relay, from a sandbox with no network.

- **Job side** (:class:`LocalLink`): inside the site's sandbox (its own network namespace,
  loopback only) a listener on ``127.0.0.1`` that the SuperNode dials; each connection is
  passed to the relay's ``link.sock``.
- **Agent side** (:class:`LinkServer`): serves ``link.sock`` outside the sandbox; each
  connection is joined to the aggregator's address as the control plane gives it for this
  run (asked with the job's token, as the relay forwards the job's reports). The job names
  no address; a connection before the aggregator published one is closed, and so is one to
  an unspecified, multicast, link-local or reserved address.

Bytes pass through untouched: TLS runs end to end between SuperNode and SuperLink (the link
certificate also names 127.0.0.1, the address the SuperNode dials).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from bastion.agent.relay import RelayTarget

__all__ = ["LinkServer", "LocalLink", "aggregator_address", "reachable"]

log = logging.getLogger("bastion.agent.link")

#: Connections one site's link carries at once (a SuperNode holds one or two).
MAX_CONNECTIONS = 8
_CHUNK = 1 << 16


def aggregator_address(view: object) -> tuple[str, int]:
    """``(host, port)`` of the aggregator in a federation view (the control plane's JSON),
    or ValueError naming what is wrong."""
    aggregator = view.get("aggregator") if isinstance(view, dict) else None
    address = aggregator.get("address") if isinstance(aggregator, dict) else None
    if not isinstance(address, str) or len(address) > 300:
        raise ValueError("the aggregator has published no address yet")
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"the aggregator's address {address!r} is not HOST:PORT")
    return host, int(port)


def _pipe(one: socket.socket, other: socket.socket) -> None:
    """Copy both ways until both sides closed; then close both."""

    def copy(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(_CHUNK):
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    back = threading.Thread(target=copy, args=(other, one), daemon=True)
    back.start()
    copy(one, other)
    back.join()
    for end in (one, other):
        with contextlib.suppress(OSError):
            end.close()


class _LinkHandler(socketserver.BaseRequestHandler):
    server: LinkServer

    def handle(self) -> None:  # a slot was taken for it in verify_request
        try:
            host, port = self.server.aggregator()
            upstream = socket.create_connection((host, port), timeout=10)
        except (ValueError, OSError, httpx.HTTPError) as exc:
            self.server.note(f"link not joined: {exc}")
            return
        upstream.settimeout(None)
        with self.server.tracking(self.request, upstream):
            _pipe(self.request, upstream)


class LinkServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """``link.sock`` of one federated site's job (the agent's side). At most
    :data:`MAX_CONNECTIONS` at once (a slot is taken before a connection gets a thread);
    closing it cuts every connection it carries."""

    daemon_threads = True

    def __init__(self, path: str, target: RelayTarget, upstream: httpx.Client) -> None:
        super().__init__(path, _LinkHandler)
        self.run_id = target.run_id
        self._view = f"/api/v1/projects/{target.project}/runs/{target.run_id}/federation"
        self._upstream = upstream
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._live: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._noted = 0

    def aggregator(self) -> tuple[str, int]:
        """Where this run's aggregator listens, as the control plane says now (refused when
        it is no address a federation may use, :func:`reachable`)."""
        answer = self._upstream.get(self._view)
        answer.raise_for_status()
        host, port = aggregator_address(answer.json())
        reachable(host, port)
        return host, port

    def note(self, why: str) -> None:
        """Log a refused or failed connection: the first few, then every hundredth."""
        with self._lock:
            self._noted += 1
            noted = self._noted
        if noted <= 5 or noted % 100 == 0:
            log.warning("run %s: %s (%d so far)", self.run_id, why, noted)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        if self._slots.acquire(blocking=False):
            return True
        self.note("link refused a connection (too many at once)")
        return False

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()  # taken in verify_request for this connection

    @contextlib.contextmanager
    def tracking(self, *ends: socket.socket) -> Iterator[None]:
        with self._lock:
            self._live.update(ends)
        try:
            yield
        finally:
            with self._lock:
                self._live.difference_update(ends)

    def server_close(self) -> None:
        super().server_close()
        with self._lock:
            live = list(self._live)
        for end in live:  # wakes the pipes' threads; they close both ends
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


def reachable(host: str, port: int) -> None:
    """ValueError unless every address ``host`` resolves to is one a federation's aggregator
    may listen on: not unspecified, multicast, link-local (cloud metadata services live
    there) or reserved."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ValueError(f"the aggregator's host {host!r} does not resolve ({exc})") from None
    for *_, address in found:
        ip = ipaddress.ip_address(str(address[0]).split("%")[0])
        if ip.is_loopback:  # an aggregator on this host (::1 counts as reserved otherwise)
            continue
        if ip.is_unspecified or ip.is_multicast or ip.is_link_local or ip.is_reserved:
            raise ValueError(f"the aggregator's address {ip} is not one a site may dial")


class LocalLink:
    """The job's side: a listener on 127.0.0.1 (inside the sandbox) whose connections go to
    the relay's link socket. Use as a context manager; :attr:`address` is what to dial."""

    def __init__(self, socket_path: Path) -> None:
        self._path = str(socket_path)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, name="link", daemon=True)

    def __enter__(self) -> LocalLink:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        with contextlib.suppress(OSError):
            self._listener.close()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._join, args=(connection,), daemon=True).start()

    def _join(self, connection: socket.socket) -> None:
        outward = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            outward.connect(self._path)
        except OSError as exc:
            log.warning("the relay's link socket cannot be reached: %s", exc)
            outward.close()
            connection.close()
            return
        _pipe(connection, outward)
