"""One idea, one spelling: every verb's options are read from the CLI itself and checked."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.cli import main

#: Verbs that queue a job and follow it unless told --no-follow.
FOLLOW_BY_DEFAULT = {
    "code push",
    "data register",
    "data verify",
    "data scan",
    "data pseudonymize",
    "data redact",
    "eval robustness",
    "eval privacy",
    "eval fairness",
    "eval explain",
    "model verify",
    "model export",
    "model import",
    "privacy erase",
}
#: Verbs that follow only when asked.
FOLLOW_ON_REQUEST = {"run submit", "run logs"}
#: Verbs whose answer a script reads: each takes -o json|yaml.
MACHINE_READABLE = {
    "alerts list",
    "cluster list",
    "code list",
    "code push",
    "code show",
    "data list",
    "data show",
    "data lineage",
    "deploy list",
    "deploy show",
    "keys list",
    "member list",
    "model list",
    "model show",
    "model card",
    "model history",
    "model lineage",
    "policy list",
    "privacy list",
    "privacy show",
    "project list",
    "run list",
    "run show",
    "token list",
    "user list",
}


def _verbs() -> dict[str, Any]:
    found: dict[str, Any] = {}

    def walk(command: Any, path: str) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}".strip())
        else:
            found[path] = command

    for name in sorted({*main.NOUNS, *main.VERBS}):
        command = main._load(name)
        assert command is not None, name
        walk(command, name)
    return found


VERBS = _verbs()


def _options(verb: str) -> list[Any]:
    return [p for p in VERBS[verb].params if type(p).__name__.endswith("Option") and not p.hidden]


def _spellings(verb: str) -> dict[str, tuple[list[str], list[str]]]:
    return {p.name: (sorted(p.opts), sorted(p.secondary_opts)) for p in _options(verb)}


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_shared_ideas_have_one_spelling(verb: str) -> None:
    for option in _options(verb):
        names = set(option.opts) | set(option.secondary_opts)
        if "--follow" in names or "--no-follow" in names:
            assert (option.opts, option.secondary_opts) == (["--follow"], ["--no-follow"]), verb
        if "--cluster" in names:
            assert sorted(names) == ["--cluster", "-c"], verb
        if "--file" in names:
            assert sorted(names) == ["--file", "-f"], verb
        if "--project" in names:
            assert sorted(names) == ["--project", "-p"], verb
        if "-o" in names or "--output" in names:
            assert sorted(names) == ["--output", "-o"], verb  # the output format, nothing else
        if "-m" in names or "--comment" in names:
            assert sorted(names) == ["--comment", "-m"], verb
        assert not names & {"--note", "--wait-for", "--json"}, verb


def test_the_verbs_that_queue_a_job_follow_it_by_default() -> None:
    following = {
        verb: option.default
        for verb in VERBS
        for option in _options(verb)
        if "--follow" in option.opts
    }
    assert {verb for verb, default in following.items() if default} == FOLLOW_BY_DEFAULT
    assert {verb for verb, default in following.items() if not default} == FOLLOW_ON_REQUEST


def test_every_verb_a_script_reads_speaks_json() -> None:
    speaking = {verb for verb in VERBS if "--output" in {o for p in _options(verb) for o in p.opts}}
    assert speaking == MACHINE_READABLE


def test_former_spellings_still_work_but_are_not_shown() -> None:
    hidden = {
        verb: sorted(o for p in VERBS[verb].params if p.hidden for o in p.opts)
        for verb in ("alerts ack", "model rollback", "deploy create", "model card")
    }
    assert hidden == {
        "alerts ack": ["--note"],
        "model rollback": ["--reason"],
        "deploy create": ["--output"],
        "model card": ["--json"],
    }
    assert _spellings("deploy create")["reveal"] == (["--reveal"], [])
