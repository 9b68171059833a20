"""Dashboard sessions: the session cookie, CSRF tokens and the page permission check.

A session is an ordinary login token (``bst_…``, stored hashed, expiring, revocable)
carried in a ``__Host-`` cookie that is ``Secure``, ``HttpOnly`` and ``SameSite=Strict``.
Every form carries a CSRF token derived from the session secret with HMAC, so it
is bound to the session and never stored. The login form, which has no session
yet, is protected by a nonce held both in a short-lived cookie and in the form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response

from bastion.errors import NotAuthenticated, NotAuthorized
from bastion.security.credentials import parse_token
from bastion.server.deps import DatabaseDep, Principal, authorize
from bastion.server.permissions import Permission

__all__ = [
    "CSRF_FIELD",
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "check_login_nonce",
    "clear_session",
    "csrf_token",
    "new_login_nonce",
    "remember_login_nonce",
    "require_page",
    "session_credentials",
    "set_session",
]

SESSION_COOKIE = "__Host-bastion-session"
LOGIN_COOKIE = "__Host-bastion-login"
CSRF_FIELD = "csrf"
_CSRF_CONTEXT = b"bastion dashboard csrf v1"
_LOGIN_NONCE_SECONDS = 600


def session_credentials(request: Request) -> tuple[str, str]:
    """The (token id, secret) of the request's session cookie; refuse when there is none."""
    parsed = parse_token(request.cookies.get(SESSION_COOKIE, ""))
    if parsed is None:
        raise NotAuthenticated("not logged in; log in to continue")
    return parsed


def csrf_token(secret: str) -> str:
    """The CSRF token of the session whose secret this is (HMAC-SHA256, hex)."""
    return hmac.new(secret.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def _same_origin(request: Request) -> bool:
    """A browser's Origin (when it sends one) names this host."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def _check_form(request: Request, secret: str) -> None:
    """(1) same origin, (2) the form's CSRF token equals the session's."""
    if not _same_origin(request):
        raise NotAuthorized("the form was sent from another site; it was refused")
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    if not isinstance(sent, str) or not hmac.compare_digest(sent, csrf_token(secret)):
        raise NotAuthorized("the form's CSRF token is missing or wrong; reload the page and retry")


def require_page(permission: Permission) -> Any:
    """A page dependency: a live session whose roles hold ``permission``.

    Forms (POST) must also carry the session's CSRF token and come from this origin.
    """

    async def check(request: Request, database: DatabaseDep) -> Principal:
        credentials = session_credentials(request)
        principal = authorize(request, database, permission, credentials)
        if request.method == "POST":
            await _check_form(request, credentials[1])
        request.state.csrf = csrf_token(credentials[1])
        request.state.principal = principal
        return principal

    check.permission = permission  # type: ignore[attr-defined]  # read by the route-table test
    return Depends(check)


def _cookie(response: Response, name: str, value: str, *, max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="strict"
    )


def _forget(response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", secure=True, httponly=True, samesite="strict")


def set_session(response: Response, token: str, *, hours: int) -> None:
    _cookie(response, SESSION_COOKIE, token, max_age=hours * 3600)
    _forget(response, LOGIN_COOKIE)


def clear_session(response: Response) -> None:
    _forget(response, SESSION_COOKIE)


def new_login_nonce() -> str:
    return secrets.token_urlsafe(32)


def remember_login_nonce(response: Response, nonce: str) -> None:
    """Set the login form's nonce as a cookie; the form must send the same value back."""
    _cookie(response, LOGIN_COOKIE, nonce, max_age=_LOGIN_NONCE_SECONDS)


def check_login_nonce(request: Request, sent: str) -> bool:
    held = request.cookies.get(LOGIN_COOKIE, "")
    return bool(held) and _same_origin(request) and hmac.compare_digest(held, sent)
