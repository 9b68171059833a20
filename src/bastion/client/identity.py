"""Logins, the caller, users and API tokens."""

from __future__ import annotations

from typing import Any

from bastion.api.identity import NewTokenOut, TokenOut, UserOut, WhoAmI
from bastion.client._transport import Transport

__all__ = ["IdentityMixin"]


class IdentityMixin(Transport):
    """Part of :class:`bastion.client.Client`."""

    def login(self, username: str, password: str) -> NewTokenOut:
        """Exchange a password for a session token; this client uses it from now on."""
        result = self._one(
            NewTokenOut,
            "POST",
            "/api/v1/auth/login",
            json={"username": username, "password": password},
        )
        self._http.headers["authorization"] = f"Bearer {result.token}"
        return result

    def whoami(self) -> WhoAmI:
        return self._one(WhoAmI, "GET", "/api/v1/auth/whoami")

    def list_users(self) -> list[UserOut]:
        return self._many(UserOut, "GET", "/api/v1/users")

    def create_user(
        self,
        username: str,
        *,
        kind: str = "human",
        is_admin: bool = False,
        password: str | None = None,
    ) -> UserOut:
        body: dict[str, Any] = {"username": username, "kind": kind}
        if is_admin:
            body["is_admin"] = True
        if password is not None:
            body["password"] = password
        return self._one(UserOut, "POST", "/api/v1/users", json=body)

    def disable_user(self, username: str) -> UserOut:
        return self._one(UserOut, "PATCH", f"/api/v1/users/{username}", json={"disabled": True})

    def set_password(self, username: str, password: str) -> UserOut:
        """Set a person's dashboard password (administrators only)."""
        return self._one(UserOut, "PATCH", f"/api/v1/users/{username}", json={"password": password})

    def create_token(
        self,
        name: str,
        *,
        scopes: list[str] | None = None,
        expires_in_days: int | None = 90,
        username: str | None = None,
    ) -> NewTokenOut:
        """Mint a token; its secret (``token``) is in this answer only."""
        body: dict[str, Any] = {
            "name": name,
            "scopes": scopes or ["*"],
            "expires_in_days": expires_in_days,
        }
        if username is not None:
            body["username"] = username
        return self._one(NewTokenOut, "POST", "/api/v1/tokens", json=body)

    def list_tokens(self, username: str | None = None) -> list[TokenOut]:
        params = {"username": username} if username else None
        return self._many(TokenOut, "GET", "/api/v1/tokens", params=params)

    def revoke_token(self, token_id: str) -> TokenOut:
        return self._one(TokenOut, "DELETE", f"/api/v1/tokens/{token_id}")
