"""LoRA fine-tuning of a text model: only the adapters train (under DP-SGD, only they are
clipped and noised), and merging gives back the plain architecture with the learnt change."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from bastion.data.ingest import Loaded
from bastion.data.notes import notes
from bastion.spec import TrainJob
from bastion.train.config import BuiltinModel, LoraSpec, PrivacyConfig, TrainConfig
from bastion.train.data import fit_preprocessing, split_rows
from bastion.train.lora import merged, with_adapters
from bastion.train.models import build_model
from bastion.train.recipe import recipe
from bastion.train.trainer import Trainer

SPEC = BuiltinModel(builtin="transformer", dim=32, layers=1, heads=4, vocab_size=800)


def _frame(seed: int) -> pd.DataFrame:
    made = notes(rows=300, seed=seed)
    return pd.DataFrame({"note": [n.text for n in made], "diagnosis": [n.diagnosis for n in made]})


def _data(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Notes under ``seed``, tokenized as the base model's notes (seed 0) were: a fine-tuning
    run keeps its base model's tokenizer."""
    data = Loaded(kind="table", frame=_frame(seed))
    prep = fit_preprocessing(data, target="diagnosis", text="note")
    prep.fit_tokenizer(_frame(0)["note"].tolist(), vocab_size=800, min_rows=2, max_length=64)
    x, y = prep.features(data), prep.labels(data)
    _, train, test = split_rows(y, holdout=0.25, seed=0)
    return x[train], y[train], x[test], y[test]


def _base() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(SPEC, input_shape=(64,), classes=4)
    x, y, _, _ = _data(0)
    config = TrainConfig(epochs=2, batch_size=32, lr=0.003, optimizer="adam")
    return Trainer(config).fit(model, x, y).model


def test_only_the_adapters_train_and_merging_restores_the_architecture() -> None:
    base = _base()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    adapted, trainable = with_adapters(base, LoraSpec(rank=4))
    assert 0 < trainable < sum(p.numel() for p in adapted.parameters()) // 5
    x, y, test_x, test_y = _data(1)
    config = TrainConfig(epochs=3, batch_size=32, lr=0.01, optimizer="adam")
    trained = Trainer(config).fit(adapted, x, y).model
    frozen = {k: v for k, v in trained.state_dict().items() if "lora_" not in k}
    for name, value in frozen.items():  # the base weights are as they were
        assert torch.equal(value, before[name.replace(".base_layer", "")]), name
    plain = merged(trained)
    state = plain.state_dict()
    assert set(state) == set(before)  # the plain architecture: build_model loads it
    moved = {k for k in state if not torch.equal(state[k], before[k])}
    assert moved and all(k.endswith(("qkv.weight", "out.weight")) for k in moved), moved
    with torch.no_grad():
        accuracy = float((plain(test_x).argmax(1) == test_y).float().mean())
    assert accuracy > 0.5, accuracy


def test_dp_sgd_with_lora_clips_and_noises_the_adapters_only() -> None:
    """Clipping norm 1e-4, almost no noise: an epoch moves the merged weights by at most
    steps * lr * 1e-4 * (LoRA's scale folds the two factors' steps together: a loose 10x)."""
    base = _base()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    adapted, _ = with_adapters(base, LoraSpec(rank=4))
    x, y, _, _ = _data(1)
    privacy = PrivacyConfig(noise_multiplier=1e-3, max_grad_norm=1e-4, accountant="rdp")
    config = TrainConfig(epochs=1, batch_size=32, lr=0.5, momentum=0.0, privacy=privacy)
    model, hooks, replaced = recipe(adapted, config, lower=0.0, upper=1.0)
    assert replaced == []
    plain = merged(Trainer(config, hooks).fit(model, x, y).model)
    moved = math.sqrt(
        sum(float(((plain.state_dict()[k] - v) ** 2).sum()) for k, v in before.items())
    )
    steps = math.ceil(len(y) / 32)
    assert moved < steps * 0.5 * 1e-4 * 10, moved


def test_lora_needs_a_text_model_to_start_from() -> None:
    base = {"type": "train", "dataset": "notes@1", "model_name": "m"}
    lora = {"lora": {"rank": 4}}
    with pytest.raises(ValueError, match=r"train\.lora fine-tunes a text model"):
        TrainJob.model_validate({**base, "model": SPEC.model_dump(), "train": lora})
    with pytest.raises(ValueError, match=r"train\.lora fine-tunes a text model"):
        TrainJob.model_validate(
            {**base, "model": {"builtin": "mlp"}, "train": lora, "init_from": "base@1"}
        )
    TrainJob.model_validate(
        {**base, "model": SPEC.model_dump(), "train": lora, "init_from": "base@1"}
    )
