"""What every CLI verb needs: settings, consoles, the keyring and the local audit log."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from bastion.config import Settings

if TYPE_CHECKING:  # imported where used: every CLI call pays for what it imports
    from bastion.security.audit_log import AuditLog
    from bastion.security.keys import Keyring

__all__ = [
    "State",
    "audit",
    "default_project",
    "default_project_file",
    "err",
    "keyring",
    "out",
    "progress_bar",
    "record",
    "settings",
    "state",
    "when",
]


def _width(stream: Any) -> int | None:
    """None (the terminal's width) on a terminal; piped or redirected, wide enough that no
    table is wrapped or cut, so scripts read whole cells (``COLUMNS`` still wins)."""
    if os.environ.get("COLUMNS") or getattr(stream, "isatty", lambda: False)():
        return None
    return 100_000


out = Console(highlight=False, soft_wrap=True, width=_width(sys.stdout))
err = Console(stderr=True, highlight=False, soft_wrap=True, width=_width(sys.stderr))


@dataclass
class State:
    debug: bool = False


state = State()


@cache
def settings() -> Settings:
    return Settings()


@cache
def keyring() -> Keyring:
    from bastion.security.keys import load_keyring

    return load_keyring(settings())


@cache
def audit() -> AuditLog:
    from bastion.security.audit_log import open_local_audit_log

    return open_local_audit_log(settings(), keyring())


def default_project_file(config: Settings) -> Path:
    """Where ``bastion project use NAME`` keeps the default project, in the home."""
    return config.home_dir / "project"


@contextlib.contextmanager
def default_project() -> Iterator[None]:
    """For one command: ``BASTION_PROJECT`` from ``bastion project use`` when it is not set
    (so ``-p`` wins, then the variable, then the saved default)."""
    if "BASTION_PROJECT" in os.environ:
        yield
        return
    try:
        saved = default_project_file(settings())
    except ValueError:  # unusable settings: the command itself will say what is wrong
        yield
        return
    if not saved.is_file():
        yield
        return
    os.environ["BASTION_PROJECT"] = saved.read_text().strip()
    try:
        yield
    finally:
        del os.environ["BASTION_PROJECT"]


def when(moment: dt.datetime | None, default: str = "") -> str:
    """A time as tables show it: ISO 8601 to the second (``default`` when there is none)."""
    return moment.isoformat()[:19] if moment is not None else default


def record(action: str, target: str, details: dict[str, Any] | None = None) -> None:
    """Append an audit event for a verb that changed keys or artifacts."""
    from bastion.security.audit_log import local_actor

    audit().append(actor=local_actor(), action=action, target=target, details=details or {})


#: Files smaller than this finish before a progress bar would be worth drawing.
PROGRESS_MIN_BYTES = 64 << 20


@contextlib.contextmanager
def progress_bar(label: str, *, total: int | None) -> Iterator[Callable[[int], None]]:
    """A Rich progress bar on an interactive terminal for large inputs; silent otherwise."""
    if total is None or total < PROGRESS_MIN_BYTES or not err.is_terminal:
        yield lambda _done: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda done: progress.advance(task, done)


def reset() -> None:
    """Forget cached settings, keys and log (tests run many commands in one process)."""
    settings.cache_clear()
    keyring.cache_clear()
    audit.cache_clear()
    state.debug = False
