"""The server's audit trail: every request, batched to the control plane, nothing lost.

A request is admitted only once its event is queued. A background thread sends queued
events in batches; when the control plane cannot take them they go to a local spool,
each batch encrypted to the cluster's HPKE public key (only the agent could open it) and
fsynced, and are sent again, oldest first, once it is back. When the spool is full the
server refuses new requests (fail closed) instead of serving unaudited.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bastion.errors import ServiceUnavailable
from bastion.security.keys import Keyring
from bastion.security.transfer import open_for_cluster, seal_for_cluster

__all__ = ["SPOOL", "AuditWriter", "input_digest", "replay_spool"]

#: The spool's file name in the serve job's folder, and the purpose its batches are sealed for.
SPOOL = "audit.spool"
SPOOL_PURPOSE = "serve-audit-spool"

log = logging.getLogger("bastion.inference.request_audit")
Sink = Callable[[list[dict[str, Any]]], None]


def input_digest(body: bytes) -> str:
    """What the audit keeps of an input: its SHA-256, never the input."""
    return hashlib.sha256(body).hexdigest()


def replay_spool(spool: Path, *, cluster: str, keyring: Keyring, send: Sink) -> int:
    """Send the batches a server left in its spool (the agent, after the server ended).

    Every batch must open with the cluster's key before any is sent; the spool is removed
    once all are sent. Returns the number of events sent.
    """
    batches = [
        json.loads(
            open_for_cluster(line, purpose=SPOOL_PURPOSE, recipient=cluster, keyring=keyring)
        )
        for line in spool.read_text().splitlines()
        if line.strip()
    ]
    for batch in batches:
        send(batch)
    spool.unlink()
    return sum(len(batch) for batch in batches)


class AuditWriter:
    def __init__(
        self,
        *,
        sink: Sink,
        spool: Path,
        cluster: str,
        cluster_keyset: str,
        capacity: int = 100_000,
        batch: int = 500,
        interval: float = 0.25,
    ) -> None:
        self._sink = sink
        self._spool = spool
        self._cluster = cluster
        self._keyset = cluster_keyset
        self.capacity = capacity
        self._batch = batch
        self._interval = interval
        self._queue: deque[dict[str, Any]] = deque()
        #: Batches that failed to send, oldest first (their encrypted copy is in the spool).
        self._spooled: deque[list[dict[str, Any]]] = deque()
        self._spooled_events = 0
        #: Events taken from the queue and not yet sent or spooled (one batch at a time). They
        #: count against the capacity, else a request could slip in while a batch is spooled.
        self._in_flight = 0
        self._lock = threading.Lock()
        #: One flush at a time: the spool file is written, drained and removed under it.
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self.sent = 0

    def start(self) -> None:
        self._thread.start()

    @property
    def pending(self) -> int:
        with self._lock:
            return self._backlog()

    def _backlog(self) -> int:
        """Events not yet with the control plane (the caller holds the lock)."""
        return len(self._queue) + self._in_flight + self._spooled_events

    @property
    def spooled(self) -> int:
        return self._spooled_events

    def record(self, event: dict[str, Any]) -> None:
        """Queue one event; refuse (fail closed) when the backlog is at capacity."""
        with self._lock:
            if self._backlog() >= self.capacity:
                raise ServiceUnavailable(
                    "the audit trail cannot keep up (control plane unreachable and the spool "
                    "is full); requests are refused until it drains"
                )
            self._queue.append({**event, "at": time.time()})  # formatted when sent
            if len(self._queue) >= self._batch:
                self._wake.set()

    def admit(self) -> None:
        """Raise before doing any work when a request could not be audited."""
        with self._lock:
            if self._backlog() >= self.capacity:
                raise ServiceUnavailable(
                    "the audit spool is full; requests are refused until the control plane "
                    "takes the backlog"
                )

    def _take(self) -> list[dict[str, Any]]:
        with self._lock:
            taken = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
            self._in_flight = len(taken)
        for event in taken:
            event["at"] = dt.datetime.fromtimestamp(event["at"], dt.UTC).isoformat()
        return taken

    def _spool_batch(self, batch: list[dict[str, Any]]) -> None:
        sealed = seal_for_cluster(
            json.dumps(batch).encode(),
            purpose=SPOOL_PURPOSE,
            recipient=self._cluster,
            recipient_keyset=self._keyset,
        )
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        descriptor = os.open(self._spool, flags, 0o600)
        try:
            os.write(descriptor, sealed.encode() + b"\n")
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        with self._lock:
            self._spooled.append(batch)
            self._spooled_events += len(batch)
            self._in_flight = 0

    def _drain_spool(self) -> bool:
        """Send spooled batches in order; True when the spool is empty."""
        while True:
            with self._lock:
                if not self._spooled:
                    break
                batch = self._spooled[0]
            try:
                self._sink(batch)
            except Exception as exc:  # still unreachable: keep the spool
                log.warning("audit sink unreachable (%s); %d events spooled", exc, self.spooled)
                return False
            with self._lock:
                self._spooled.popleft()
                self._spooled_events -= len(batch)
                self.sent += len(batch)
        self._spool.unlink(missing_ok=True)
        return True

    def flush(self) -> None:
        """Send everything queued now (spool first, to keep the order)."""
        with self._flushing:
            self._flush()

    def _flush(self) -> None:
        drained = self._drain_spool()
        while batch := self._take():
            try:
                if not drained:
                    self._spool_batch(batch)
                    continue
                try:
                    self._sink(batch)
                    self.sent += len(batch)
                except Exception as exc:
                    log.warning("audit sink unreachable (%s); spooling %d events", exc, len(batch))
                    self._spool_batch(batch)
                    drained = False
            finally:
                with self._lock:
                    self._in_flight = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # never let the writer die; the backlog bound fails closed
                log.exception("audit writer error")

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self.flush()
