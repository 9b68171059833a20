"""The model card says how the training job was isolated."""

from __future__ import annotations

import pytest

from bastion.evaluate.card import build_card, render_html


def _card(isolation: str | None) -> dict[str, object]:
    return build_card(
        name="m",
        version={"version": 1, "stage": "none", "evidence": {}, "isolation": isolation},
        evaluations={},
        dataset_summaries=None,
    )


@pytest.mark.parametrize(
    ("isolation", "shown"),
    [
        ("bubblewrap", "sandboxed (bubblewrap: no network, no keys"),
        ("none", "UNSANDBOXED (the agent ran with --no-sandbox)"),
        (None, "isolation not recorded"),
    ],
)
def test_the_card_shows_the_training_jobs_isolation(isolation: str | None, shown: str) -> None:
    card = _card(isolation)
    assert card["training"]["isolation"] == isolation  # type: ignore[index]
    assert shown in render_html(card)
    unsandboxed = [line for line in card["limitations"] if "UNSANDBOXED" in line]  # type: ignore[attr-defined]
    assert len(unsandboxed) == (1 if isolation == "none" else 0)
