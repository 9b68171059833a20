"""Credentials: API tokens (random, shown once, stored hashed) and passwords, for the control
plane and the inference server alike.

A token reads ``bst_<id>_<secret>``: the id finds the row, the secret's SHA-256 is
compared in constant time. Tokens carry 256 bits of randomness, so a fast hash is
right for them; passwords are people's and get argon2.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = [
    "NewSecret",
    "hash_password",
    "hash_secret",
    "new_token",
    "parse_token",
    "secrets_match",
    "verify_password",
]

TOKEN_PREFIX = "bst"  # noqa: S105 - a label, not a secret
_hasher = PasswordHasher()
# Verifying against this keeps unknown-user logins as slow as known-user ones.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class NewSecret:
    """A freshly minted credential: ``token`` is shown once, ``secret_hash`` is stored."""

    id: str
    token: str
    secret_hash: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(kind: str = TOKEN_PREFIX) -> NewSecret:
    token_id = secrets.token_hex(16)
    secret = secrets.token_urlsafe(32)
    return NewSecret(
        id=token_id, token=f"{kind}_{token_id}_{secret}", secret_hash=hash_secret(secret)
    )


def parse_token(token: str, kind: str = TOKEN_PREFIX) -> tuple[str, str] | None:
    """Split a token into (id, secret); None if it is not shaped like one."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != kind or len(parts[1]) != 32 or not parts[2]:
        return None
    if any(c not in "0123456789abcdef" for c in parts[1]) or len(parts[2]) > 128:
        return None
    return parts[1], parts[2]


def secrets_match(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, stored: str | None) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
