"""Who is calling: the identity a valid token stands for, as services see it.

Kept apart from ``deps`` (which resolves it from the request with FastAPI) so that the
services, which take it as an argument, import nothing of FastAPI.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Identity"]


@dataclass(frozen=True)
class Identity:
    """Who is calling, from a valid token."""

    user_id: str
    username: str
    kind: str
    is_admin: bool
    scopes: frozenset[str]
    token_id: str

    @property
    def actor(self) -> str:
        return f"{'user' if self.kind == 'human' else self.kind}:{self.username}"
