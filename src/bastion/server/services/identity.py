"""Users, passwords, logins and API tokens."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.errors import Conflict, InvalidInput, NotAuthorized, NotFound
from bastion.security.credentials import hash_password, new_token, secrets_match, verify_password
from bastion.server.caller import Identity
from bastion.server.db.models import ApiToken, Membership, Project, User, utcnow
from bastion.server.db.session import UnitOfWork
from bastion.server.login_throttle import LoginThrottle
from bastion.server.services.alerts import raise_alert

__all__ = [
    "authenticate_password",
    "create_token",
    "create_user",
    "end_session",
    "get_user",
    "list_tokens",
    "revoke_token",
    "update_user",
    "usernames",
]


#: Failed logins of one account (from any address, within the throttle's window) that raise
#: a ``password_guessing`` alert.
GUESSING_FAILURES = 10


def get_user(session: Session, username: str) -> User:
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        raise NotFound(f"user {username!r} does not exist")
    return user


def create_user(
    unit: UnitOfWork, *, username: str, kind: str, is_admin: bool, password: str | None
) -> User:
    session = unit.session
    if session.scalars(select(User).where(User.username == username)).first() is not None:
        raise Conflict(f"user {username!r} already exists")
    if kind != "human" and (is_admin or password):
        raise InvalidInput("machine identities cannot be administrators or have passwords")
    user = User(
        username=username,
        kind=kind,
        is_admin=is_admin,
        password_hash=hash_password(password) if password else None,
    )
    session.add(user)
    unit.record("user.create", f"user:{username}", {"kind": kind, "is_admin": is_admin})
    return user


def update_user(
    unit: UnitOfWork,
    *,
    username: str,
    disabled: bool | None,
    password: str | None,
    by: str | None = None,
) -> User:
    """Enable, disable or set the password of ``username`` (``by``: who asks).

    An administrator who replaces a person's existing password could log in as them, so
    that reset is recorded (``reset_by``) and raises a ``password_reset`` alert about the
    administrator; setting the first password of a new account does not.
    """
    user = get_user(unit.session, username)
    changed: dict[str, bool | str] = {}
    if disabled is not None and disabled != user.disabled:
        user.disabled = disabled
        changed["disabled"] = disabled
    if password is not None:
        if user.kind != "human":
            raise InvalidInput("machine identities cannot have passwords")
        reset = user.password_hash is not None and by is not None and by != username
        user.password_hash = hash_password(password)
        changed["password_changed"] = True
        if reset and by is not None:
            changed["reset_by"] = by
            raise_alert(
                unit,
                kind="password_reset",
                actor=f"user:{by}",
                project=None,
                details={"user": username},
            )
    if changed:
        unit.record("user.update", f"user:{username}", changed)
    return user


def create_token(
    unit: UnitOfWork,
    *,
    caller: Identity,
    name: str,
    scopes: list[str],
    expires_in: dt.timedelta | None,
    username: str | None = None,
) -> tuple[ApiToken, str]:
    """Mint a token for the caller, or (admins only) for ``username``; return it and its secret."""
    session = unit.session
    if username is not None and username != caller.username:
        if not caller.is_admin:
            raise NotAuthorized("only administrators can create tokens for other users")
        owner = get_user(session, username)
        if owner.kind == "human":
            # A token minted for a person would let one admin act as them (and satisfy a
            # two-person rule alone, credited to someone else).
            raise NotAuthorized(
                f"tokens are minted for machine identities only; {username!r} is a person, "
                "who logs in with a password (bastion login --username) and mints their own"
            )
    else:
        owner = get_user(session, caller.username)
        if "*" not in caller.scopes and not set(scopes) <= caller.scopes:
            raise NotAuthorized("a token cannot grant scopes its creator's token lacks")
    minted = new_token()
    token = ApiToken(
        id=minted.id,
        user_id=owner.id,
        name=name,
        secret_hash=minted.secret_hash,
        scopes=sorted(set(scopes)),
        expires_at=utcnow() + expires_in if expires_in else None,
    )
    token.user = owner
    session.add(token)
    unit.record(
        "token.create",
        f"token:{minted.id}",
        {"owner": owner.username, "name": name, "scopes": sorted(set(scopes))},
    )
    return token, minted.token


def list_tokens(session: Session, *, caller: Identity, username: str | None) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.created_at)
    if username is not None and username != caller.username:
        if not caller.is_admin:
            raise NotAuthorized("only administrators can list other users' tokens")
        query = query.where(ApiToken.user_id == get_user(session, username).id)
    else:
        query = query.where(ApiToken.user_id == caller.user_id)
    return list(session.scalars(query))


def revoke_token(unit: UnitOfWork, *, caller: Identity, token_id: str) -> ApiToken:
    token = unit.session.get(ApiToken, token_id)
    if token is None or (token.user_id != caller.user_id and not caller.is_admin):
        raise NotFound(f"token {token_id} does not exist")
    if token.revoked_at is None:
        _revoke(unit, token)
    return token


def _revoke(unit: UnitOfWork, token: ApiToken, **details: str) -> None:
    """Stop ``token`` working; the ``token.revoke`` event also clears cached credentials."""
    token.revoked_at = utcnow()
    unit.record("token.revoke", f"token:{token.id}", {"owner": token.user.username, **details})


def authenticate_password(
    unit: UnitOfWork,
    *,
    username: str,
    password: str,
    address: str,
    throttle: LoginThrottle,
    session_hours: int,
) -> tuple[ApiToken, str] | None:
    """Check a password (throttled) and mint a session token.

    A failure returns None after recording ``auth.login.failed``, so the caller can
    commit that event before refusing.
    """
    with throttle.attempt(account=username, address=address):
        user = unit.session.scalars(select(User).where(User.username == username)).first()
        ok = verify_password(password, user.password_hash if user else None)
        if user is None or not ok or user.disabled or user.kind != "human":
            failures = throttle.failed(account=username, address=address)
            unit.record("auth.login.failed", f"user:{username}", {"address": address})
            if failures >= GUESSING_FAILURES:
                raise_alert(
                    unit,
                    kind="password_guessing",
                    actor=f"user:{username}",
                    project=None,
                    details={"failures": failures, "last_address": address},
                )
            return None
        throttle.succeeded(account=username, address=address)
    unit.actor = f"user:{username}"
    identity = Identity(
        user_id=user.id,
        username=user.username,
        kind=user.kind,
        is_admin=user.is_admin,
        scopes=frozenset({"*"}),
        token_id="",
    )
    return create_token(
        unit,
        caller=identity,
        name="login session",
        scopes=["*"],
        expires_in=dt.timedelta(hours=session_hours),
    )


def end_session(unit: UnitOfWork, *, token_id: str, secret: str) -> bool:
    """Revoke the session token ``token_id`` when ``secret`` is its secret (a logout)."""
    token = unit.session.get(ApiToken, token_id)
    if (
        token is None
        or token.revoked_at is not None
        or not secrets_match(secret, token.secret_hash)
    ):
        return False
    unit.actor = f"user:{token.user.username}"
    _revoke(unit, token, by="logout")
    return True


def memberships_of(session: Session, user_id: str) -> dict[str, str]:
    rows = session.execute(
        select(Project.name, Membership.role)
        .join(Membership, Membership.project_id == Project.id)
        .where(Membership.user_id == user_id)
    )
    return {name: role for name, role in rows}


def usernames(session: Session, ids: set[str]) -> dict[str, str]:
    """Usernames by user id, for the ids that exist."""
    if not ids:
        return {}
    rows = session.execute(select(User.id, User.username).where(User.id.in_(ids)))
    return {row.id: row.username for row in rows}
