"""Idempotency keys: a write retried after its answer was lost is answered, not done again.

A client sends ``Idempotency-Key: <unique string>`` with a POST, PUT, PATCH or DELETE
(the SDK and the CLI send one with every write). The first request whose route commits a
change *claims* the key inside that change's own transaction (:func:`claim_in`, called by
:meth:`bastion.server.db.session.Database.write`), so the change and the claim commit or
roll back together. When the route returns, its answer is stored with the claim, and then
sent. A later request with the same key and the same credential:

- with the same method, path, query and body, gets the stored answer again, marked
  ``Idempotent-Replayed: true``: the change is not made twice;
- with anything else, is refused (422): a key names one request;
- while the first is still running (claimed, no answer yet), gets 409 with
  ``Retry-After: 1``.

A request that committed nothing (refused, invalid) claims nothing: its retry runs again.
Keys are kept :data:`KEEP` and scoped to a hash of the caller's credential, never the
credential; a stored answer is given again only while that credential is still valid. An
answer holding a secret shown once (a new token or join token) is never stored: its retry
gets 409. A request carrying a password is never hashed or claimed. The rows are
bookkeeping of the transport, not part of the audited record: the write itself carries its
audit event.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy.exc
from sqlalchemy import delete, select, update
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.errors import BastionError, Conflict, InvalidInput, NotAuthenticated
from bastion.http_status import PROBLEM_JSON, problem
from bastion.server.db.models import IdempotencyKey

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from bastion.server.db.session import Database

__all__ = [
    "HEADER",
    "KEEP",
    "MAX_STORED_BYTES",
    "Claim",
    "IdempotencyMiddleware",
    "claim_in",
    "confirm",
]

HEADER = "idempotency-key"
#: How long a key is remembered.
KEEP = dt.timedelta(hours=24)
#: Answers larger than this are not kept; a retry of such a request gets 409.
MAX_STORED_BYTES = 1 << 20
_KEY = re.compile(r"[\x21-\x7e]{1,255}")
#: Top-level fields of an answer that hold a secret shown once: such an answer is not kept.
SECRET_FIELDS = frozenset({"token", "join_token"})
#: Top-level fields of a request that hold a secret: such a request is not hashed or claimed.
_SECRET_INPUTS = frozenset({"password"})
_WITHHELD = "withheld: holds a secret"
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class Claim:
    """The key a request carries, and whether a committed change has claimed it."""

    scope: str
    key: str
    request_hash: str
    claimed: bool = False
    row_id: str | None = field(default=None)


_CURRENT: contextvars.ContextVar[Claim | None] = contextvars.ContextVar(
    "bastion_idempotency_claim", default=None
)


def claim_in(session: Session) -> None:
    """Claim the current request's key in ``session``'s transaction (a change is about to
    commit). Does nothing without a key, or when this request already claimed it; the claim
    holds once :func:`confirm` is called after the commit."""
    claim = _CURRENT.get()
    if claim is None or claim.claimed:
        return
    row = IdempotencyKey(scope=claim.scope, key=claim.key, request_hash=claim.request_hash)
    session.add(row)
    try:
        session.flush()
    except sqlalchemy.exc.IntegrityError:
        raise Conflict(
            "a request with this Idempotency-Key was carried out already; "
            "look before you retry with a new key"
        ) from None
    claim.row_id = row.id


def confirm() -> None:
    """The transaction that made the current request's claim has committed."""
    claim = _CURRENT.get()
    if claim is not None and claim.row_id is not None:
        claim.claimed = True


_Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def _problem(
    status: int, kind: type[BastionError], detail: str, extra: list[tuple[bytes, bytes]]
) -> _Answer:
    body = json.dumps(problem(kind, status=status, detail=detail)).encode()
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    return status, headers, body


async def _send_whole(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class IdempotencyMiddleware:
    """Replays the answer of a write already carried out under the same key (see module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _UNSAFE:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        raw_key = headers.get(HEADER.encode())
        credential = headers.get(b"authorization")
        if raw_key is None or credential is None:
            await self.app(scope, receive, send)
            return
        key = raw_key.decode("latin-1")
        if not _KEY.fullmatch(key):
            await _send_whole(
                send,
                *_problem(
                    422,
                    InvalidInput,
                    "Idempotency-Key: expected 1 to 255 visible ASCII characters",
                    [],
                ),
            )
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if _holds(body, _SECRET_INPUTS):
            await self.app(scope, _replaying(body, receive), send)
            return
        digest = hashlib.sha256()
        for part in (scope["method"], scope["path"], scope.get("query_string", b"").decode()):
            digest.update(part.encode() + b"\0")
        digest.update(body)
        claim = Claim(
            scope=hashlib.sha256(credential).hexdigest(), key=key, request_hash=digest.hexdigest()
        )
        database: Database = scope["app"].state.database
        stored = await run_in_threadpool(_lookup, database, claim, credential.decode("latin-1"))
        if stored is not None:
            await _send_whole(send, *stored)
            return
        await self._run(scope, _replaying(body, receive), send, database, claim)

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, database: Database, claim: Claim
    ) -> None:
        start: Message | None = None
        parts: list[bytes] = []
        size = 0
        passing = False  # past the size kept: the rest streams straight through

        async def capture(message: Message) -> None:
            nonlocal start, size, passing
            if passing:
                await send(message)
                return
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunk = message.get("body", b"")
            parts.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
            if not more or size > MAX_STORED_BYTES:
                if claim.claimed:
                    kept = None if more else b"".join(parts)
                    await run_in_threadpool(_store, database, claim, start, kept)
                await send(start)
                await send(
                    {"type": "http.response.body", "body": b"".join(parts), "more_body": more}
                )
                passing = True

        token = _CURRENT.set(claim)
        try:
            await self.app(scope, receive, capture)
        finally:
            _CURRENT.reset(token)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """The request's body, read already, handed to the application once more."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _holds(body: bytes, fields: frozenset[str]) -> bool:
    """Whether ``body`` is a JSON object with one of ``fields`` at its top level."""
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return isinstance(document, dict) and not fields.isdisjoint(document)


def _lookup(database: Database, claim: Claim, authorization: str) -> _Answer | None:
    """The answer to give instead of running the request, or None to run it."""
    now = dt.datetime.now(dt.UTC)
    with database.engine.begin() as connection:
        connection.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < now - KEEP))
        row = connection.execute(
            select(IdempotencyKey).where(
                IdempotencyKey.scope == claim.scope, IdempotencyKey.key == claim.key
            )
        ).one_or_none()
    if row is None:
        return None
    from bastion.server.deps import identify  # noqa: PLC0415 - deps import this module's importer

    try:
        identify(database, authorization)  # only a still-valid credential hears of its key
    except NotAuthenticated as refused:
        return _problem(401, NotAuthenticated, str(refused), [])
    if row.request_hash != claim.request_hash:
        return _problem(
            422,
            InvalidInput,
            "Idempotency-Key: this key was used for a different request; "
            "send a new key with each new request",
            [],
        )
    if row.status_code is None:
        return _problem(
            409,
            Conflict,
            "a request with this Idempotency-Key is still being carried out; retry in a moment",
            [(b"retry-after", b"1")],
        )
    if row.body is None:
        why = (
            "it held a secret shown once, which is never stored: look at what exists and "
            "revoke what you cannot use"
            if row.content_type == _WITHHELD
            else "it was too large to keep; look before you retry with a new key"
        )
        return _problem(
            409,
            Conflict,
            f"a request with this Idempotency-Key was carried out already and its answer "
            f"cannot be given again: {why}",
            [],
        )
    body = row.body.encode()
    headers = [
        (b"content-type", (row.content_type or "application/json").encode()),
        (b"content-length", str(len(body)).encode()),
        (b"idempotent-replayed", b"true"),
    ]
    return row.status_code, headers, body


def _store(database: Database, claim: Claim, start: Message, body: bytes | None) -> None:
    content_type = next(
        (v.decode("latin-1") for n, v in start.get("headers", []) if n.lower() == b"content-type"),
        None,
    )
    try:
        text = body.decode() if body is not None else None
    except UnicodeDecodeError:
        text = None
    if body is not None and _holds(body, SECRET_FIELDS):
        text, content_type = None, _WITHHELD
    with database.engine.begin() as connection:
        connection.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.id == claim.row_id)
            .values(status_code=start["status"], content_type=content_type, body=text)
        )
