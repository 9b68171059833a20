"""Options several verbs share, so one idea has one spelling everywhere.

- ``--follow/--no-follow``: wait for the job a verb queued (verbs that queue a job follow it
  by default; ``run submit`` and ``run logs`` do not);
- ``--comment/-m``: a free note kept in the audit log (``--reason`` is kept for the
  justifications a verb requires: retention holds and erasures);
- ``--cluster/-c``, ``--file/-f``, ``--project/-p`` and ``--output/-o`` (the output format,
  :mod:`bastion.cli.output`).
"""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["Comment", "Follow", "comment_or"]

Follow = Annotated[
    bool,
    typer.Option(
        "--follow/--no-follow",
        help="Wait for the job and print how it ended (--no-follow: queue it and return).",
    ),
]

Comment = Annotated[str, typer.Option("--comment", "-m", help="Why (kept in the audit log).")]


def comment_or(comment: str, old: str) -> str:
    """The comment, or what was passed under the verb's former, hidden spelling."""
    return comment or old
