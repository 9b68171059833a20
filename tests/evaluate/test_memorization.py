"""The canary audit of a language model: exposure's arithmetic on models whose answer is
known, then a small gpt that memorises a canary repeated in 20 rows, and DP-SGD that stops it."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from bastion.data.notes import notes
from bastion.evaluate.memorization import (
    SECRET_DIGITS,
    Canary,
    canary_audit,
    extraction_check,
    insert_canaries,
    make_canaries,
)
from bastion.governance.policy import evaluate_gates, parse_policy
from bastion.train.config import BuiltinModel, PrivacyConfig, TrainConfig
from bastion.train.models import build_model
from bastion.train.recipe import recipe
from bastion.train.text import encode, next_token_pairs, train_tokenizer
from bastion.train.trainer import IGNORED, Trainer

LENGTH = 64


def _texts(canaries: list[Canary], rows: int = 300) -> list[str]:
    return insert_canaries([n.text for n in notes(rows=rows, seed=3)], canaries, seed=2)


def test_each_canary_goes_into_as_many_rows_as_it_asks() -> None:
    canaries = make_canaries([1, 5, 20], seed=1)
    assert len({c.secret for c in canaries}) == 3
    assert all(len(c.secret.split()) == SECRET_DIGITS for c in canaries)
    texts = _texts(canaries)
    assert [sum(c.text in t for t in texts) for c in canaries] == [1, 5, 20]


class _Oracle(nn.Module):
    """Predicts, at each position, the next token of one fixed sequence (a model that has
    memorised it), or nothing at all (uniform)."""

    def __init__(self, sequence: torch.Tensor, vocabulary: int, *, knows: bool) -> None:
        super().__init__()
        self.sequence, self.vocabulary, self.knows = sequence, vocabulary, knows

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows, length = ids.shape
        logits = torch.zeros(rows, self.vocabulary, length)
        if self.knows:
            for position in range(min(length, len(self.sequence) - 1)):
                logits[:, int(self.sequence[position + 1]), position] = 20.0
        return logits


def test_exposure_is_the_bound_for_a_memorised_canary_and_zero_for_a_uniform_model() -> None:
    (canary,) = make_canaries([20], seed=4)
    tokenizer = train_tokenizer(_texts([canary]), vocab_size=800, min_rows=3)
    sequence = encode(tokenizer, [canary.text], max_length=LENGTH)[0]
    memorised = _Oracle(sequence, 800, knows=True)
    (found,) = canary_audit(memorised, tokenizer, [canary], max_length=LENGTH, candidates=255)
    assert found.rank == 1 and found.completed
    assert found.exposure == pytest.approx(8.0) == pytest.approx(found.exposure_bound)
    uniform = _Oracle(sequence, 800, knows=False)
    (found,) = canary_audit(uniform, tokenizer, [canary], max_length=LENGTH, candidates=255)
    assert found.rank == 256 and found.exposure == 0.0 and not found.completed


def test_the_extraction_check_counts_training_identifiers_the_samples_write_out() -> None:
    """A model that writes one training text out verbatim gives its e-mail address back; one
    that writes nothing in particular gives none."""
    texts = ["please write to jane.doe@example.org about the results"] * 4
    texts += ["the patient reports a dry cough at night"] * 4
    tokenizer = train_tokenizer(texts, vocab_size=200, min_rows=1)
    sequence = encode(tokenizer, texts[:1], max_length=LENGTH)[0]
    verbatim = _Oracle(sequence, 200, knows=True)
    found = extraction_check(verbatim, tokenizer, texts, samples=5, max_length=16, seed=0)
    assert (found.samples, found.identifiers, found.extracted) == (5, 1, 1)
    uniform = _Oracle(sequence, 200, knows=False)
    found = extraction_check(uniform, tokenizer, texts, samples=5, max_length=16, seed=0)
    assert (found.identifiers, found.extracted) == (1, 0)


def _gpt_exposure(privacy: PrivacyConfig | None) -> tuple[float, Any]:
    canaries = make_canaries([20], seed=1)
    texts = _texts(canaries)
    tokenizer = train_tokenizer(texts, vocab_size=2000, min_rows=3)
    x, y = next_token_pairs(encode(tokenizer, texts, max_length=LENGTH))
    assert (y == IGNORED).any() and (y[:, 0] != IGNORED).all()
    torch.manual_seed(0)
    spec = BuiltinModel(builtin="gpt", dim=48, layers=1, heads=4, vocab_size=2000)
    model = build_model(spec, input_shape=(LENGTH,), classes=0)
    config = TrainConfig(
        epochs=8,
        batch_size=64 if privacy is None else 128,
        lr=0.003 if privacy is None else 0.01,
        optimizer="adam",
        privacy=privacy,
    )
    model, hooks, _ = recipe(model, config, lower=0.0, upper=1.0)
    result = Trainer(config, hooks).fit(model, x, y)
    (found,) = canary_audit(result.model, tokenizer, canaries, max_length=LENGTH, candidates=500)
    return found.exposure, result


def test_a_gpt_memorises_a_repeated_canary_and_dp_sgd_keeps_it_hidden() -> None:
    """Without privacy, the canary 20 rows hold ranks near the top of 500 random secrets
    (exposure above 5 bits); under DP-SGD at epsilon 3 it ranks like any other secret."""
    plain, trained = _gpt_exposure(None)
    private, _ = _gpt_exposure(PrivacyConfig(target_epsilon=3.0))
    assert trained.history[-1]["accuracy"] > 0.3  # next-token accuracy over real tokens
    assert plain > 5.0, plain
    assert private < 3.5 and plain - private > 2.5, (plain, private)
    assert math.isfinite(private)


def _card(memorization: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "membership": None,
        "robustness": None,
        "fairness": None,
        "data": {},
        "performance": {},
        "training": {},
        "signatures": {},
        "memorization": memorization,
    }


def test_the_canary_gate_reads_the_largest_exposure_and_fails_without_an_audit() -> None:
    policy = parse_policy("max_canary_exposure: 4.0\nmax_extracted_identifiers: 0\n")
    results = {
        "exposed": evaluate_gates(
            policy, _card({"max_exposure": 7.97, "extracted_identifiers": 2})
        ),
        "hidden": evaluate_gates(policy, _card({"max_exposure": 1.99, "extracted_identifiers": 0})),
        "unaudited": evaluate_gates(policy, _card(None)),
    }
    assert {
        name: [(r.gate, r.passed, r.actual) for r in found] for name, found in results.items()
    } == {
        "exposed": [
            ("max_canary_exposure", False, "7.97"),
            ("max_extracted_identifiers", False, "2"),
        ],
        "hidden": [
            ("max_canary_exposure", True, "1.99"),
            ("max_extracted_identifiers", True, "0"),
        ],
        "unaudited": [
            ("max_canary_exposure", False, "no canary audit"),
            ("max_extracted_identifiers", False, "no extraction check"),
        ],
    }
