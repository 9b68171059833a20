"""First start: migrate the database and create the first administrator."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from bastion.errors import Conflict
from bastion.server.caller import Identity
from bastion.server.db.migrate import upgrade
from bastion.server.db.models import User
from bastion.server.db.session import Database
from bastion.server.services.identity import create_token, create_user

__all__ = ["InitResult", "initialise"]


@dataclass(frozen=True)
class InitResult:
    revision: str
    username: str
    token: str


def initialise(database: Database, *, username: str, password: str | None) -> InitResult:
    """Migrate, then create the first admin and a token for it; refuse if users exist."""
    revision = upgrade(database.engine)
    with database.write(actor="bastion:init") as unit:
        if unit.session.scalar(select(func.count()).select_from(User)):
            raise Conflict(
                "the control plane already has users; create more with 'bastion user create'"
            )
        admin = create_user(unit, username=username, kind="human", is_admin=True, password=password)
        unit.session.flush()
        caller = Identity(
            user_id=admin.id,
            username=admin.username,
            kind="human",
            is_admin=True,
            scopes=frozenset({"*"}),
            token_id="",
        )
        _, secret = create_token(
            unit, caller=caller, name="initial admin token", scopes=["*"], expires_in=None
        )
    return InitResult(revision=revision, username=username, token=secret)
