"""Progress lines: how a job says in its log how far it got, and how a follower reads it back."""

from __future__ import annotations

import re

__all__ = ["parse_progress", "progress_line"]

_LINE = re.compile(r"^(?P<what>[a-z][a-z ]*?) (?P<done>\d+)/(?P<total>\d+)(?::|$| )")


def progress_line(what: str, done: int, total: int, detail: str = "") -> str:
    """``epoch 3/20: loss 0.41`` — ``what`` is lower-case words, ``detail`` the rest."""
    line = f"{what} {done}/{total}"
    return f"{line}: {detail}" if detail else line


def parse_progress(line: str) -> tuple[str, int, int] | None:
    """What a :func:`progress_line` counted, or ``None`` for any other log line."""
    found = _LINE.match(line)
    if found is None or int(found["total"]) <= 0:
        return None
    return found["what"], int(found["done"]), int(found["total"])
