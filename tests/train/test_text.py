"""Text models: the tokenizer learnt in the job, the transformer, DP-SGD on it, the text
column's schema type, and a text run's inputs (identifier gate, split before tokenizer)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from bastion.agent.text_inputs import text_inputs
from bastion.data.checks import infer_table_schema, validate_table
from bastion.data.ingest import Loaded
from bastion.data.notes import notes
from bastion.data.profile import TableFile
from bastion.data.schema import ColumnType
from bastion.errors import InvalidInput, PolicyViolation
from bastion.spec import TrainJob
from bastion.train.config import BuiltinModel, PrivacyConfig, TrainConfig
from bastion.train.data import Preprocessing, fit_preprocessing, split_rows
from bastion.train.dp_sgd import clipping_mode
from bastion.train.models import build_model
from bastion.train.recipe import recipe
from bastion.train.text import PAD_ID, SPECIAL_TOKENS, encode, next_token_pairs, train_tokenizer
from bastion.train.trainer import Trainer

SMALL = {"builtin": "transformer", "dim": 32, "layers": 1, "heads": 4, "vocab_size": 800}


def _notes(rows: int, seed: int = 1) -> pd.DataFrame:
    made = notes(rows=rows, seed=seed)
    return pd.DataFrame({"note": [n.text for n in made], "diagnosis": [n.diagnosis for n in made]})


def _vocabulary(serialized: str) -> dict[str, int]:
    vocabulary: dict[str, int] = json.loads(serialized)["model"]["vocab"]
    return vocabulary


def test_the_tokenizer_is_the_same_for_the_same_texts() -> None:
    texts = _notes(200)["note"].tolist()
    first = train_tokenizer(texts, vocab_size=500, min_rows=3)
    assert first == train_tokenizer(texts, vocab_size=500, min_rows=3)
    vocabulary = _vocabulary(first)
    assert [vocabulary[token] for token in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert len(vocabulary) <= 500


def test_a_word_few_rows_hold_never_enters_the_vocabulary() -> None:
    """A surname in two notes is not in a vocabulary that needs three rows: it reads as
    [UNK], so the tokenizer that ships with the model does not carry it."""
    texts = [f"patient reports a dry cough number {i % 7}" for i in range(40)]
    texts[3] += " seen by dr zyborska"
    texts[9] += " zyborska called back"
    vocabulary = _vocabulary(train_tokenizer(texts, vocab_size=500, min_rows=3))
    assert "zyborska" not in vocabulary
    assert {"patient", "cough", "by", "dr"} - {"by", "dr"} <= set(vocabulary)
    assert "zyborska" in _vocabulary(train_tokenizer(texts, vocab_size=500, min_rows=2))


def test_encodings_start_with_bos_and_are_padded_and_cut_to_length() -> None:
    texts = ["Wheezing at night, 555 0101"] * 5
    tokenizer = train_tokenizer(texts, vocab_size=200, min_rows=1)
    ids = encode(
        tokenizer, ["wheezing at night", "", "wheezing " * 50, "Ünknown wórd"], max_length=8
    )
    vocabulary = _vocabulary(tokenizer)
    assert ids.shape == (4, 8) and ids.dtype == torch.long
    assert ids[:, 0].tolist() == [vocabulary["[BOS]"]] * 4
    assert ids[0, 1:4].tolist() == [vocabulary[w] for w in ("wheezing", "at", "night")]
    assert ids[0, 4:].tolist() == [PAD_ID] * 4 and ids[1, 1:].tolist() == [PAD_ID] * 7
    assert (ids[2] != PAD_ID).all()  # cut at 8 tokens
    assert ids[3, 1:3].tolist() == [vocabulary["[UNK]"]] * 2
    digits = encode(tokenizer, ["555"], max_length=6)[0, 1:4].tolist()
    assert digits == [vocabulary["5"]] * 3  # digits one by one


def test_prose_is_typed_text_and_addresses_stay_strings(tmp_path: Path) -> None:
    frame = _notes(120)
    frame["address"] = [f"{i} Elm Street Apt. 5, Springfield, IL 62704" for i in range(120)]
    schema = infer_table_schema(frame)
    types = {c.name: c.type for c in schema.columns}
    assert types == {
        "note": ColumnType.TEXT,
        "diagnosis": ColumnType.CATEGORY,
        "address": ColumnType.STRING,
    }
    path = tmp_path / "notes.parquet"
    frame.to_parquet(path)
    assert TableFile(path).profile().schema == schema  # the streaming inference agrees
    longer = frame.assign(note=frame["note"] + " and more" * 100)
    assert [v.rule for v in validate_table(longer, schema)] == [
        f"longer than {schema.column('note').max_length} characters"  # type: ignore[union-attr]
    ]


def _split_notes(rows: int, *, holdout: float, vocab: int, length: int) -> tuple[Any, ...]:
    """Notes split (seed 0), their tokenizer learnt from the training rows (words in 2 or
    more), and their token ids: data, preprocessing, x, y, training and held-out rows."""
    frame = _notes(rows)
    data = Loaded(kind="table", frame=frame)
    prep = fit_preprocessing(data, target="diagnosis", text="note")
    y = prep.labels(data)
    _, train, test = split_rows(y, holdout=holdout, seed=0)
    texts = frame["note"].iloc[train].tolist()
    prep.fit_tokenizer(texts, vocab_size=vocab, min_rows=2, max_length=length)
    return data, prep, prep.features(data), y, train, test


def test_a_transformer_learns_the_notes_diagnoses() -> None:
    data, prep, x, y, train, test = _split_notes(400, holdout=0.25, vocab=800, length=64)
    torch.manual_seed(0)
    spec = BuiltinModel.model_validate(SMALL)
    model = build_model(spec, input_shape=prep.input_shape, classes=len(prep.classes))
    config = TrainConfig(epochs=4, batch_size=32, lr=0.003, optimizer="adam")
    trained = Trainer(config).fit(model, x[train], y[train]).model
    with torch.no_grad():
        accuracy = float((trained(x[test]).argmax(1) == y[test]).float().mean())
    assert accuracy > 0.8, accuracy
    # The preprocessing record, as model.json keeps it, encodes the same ids.
    kept = Preprocessing.model_validate_json(prep.model_dump_json())
    assert torch.equal(kept.features(data), x)


def _moved(privacy: PrivacyConfig | None, builtin: str = "transformer") -> float:
    frame = _notes(128)
    data = Loaded(kind="table", frame=frame)
    prep = fit_preprocessing(data, target="diagnosis", text="note")
    prep.fit_tokenizer(frame["note"].tolist(), vocab_size=800, min_rows=2, max_length=48)
    x, y = prep.features(data), prep.labels(data)
    if builtin == "gpt":  # each token predicts the next
        x, y = next_token_pairs(x)
    torch.manual_seed(0)
    spec = BuiltinModel.model_validate({**SMALL, "builtin": builtin})
    model = build_model(spec, input_shape=prep.input_shape, classes=len(prep.classes))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(epochs=1, batch_size=32, lr=0.5, momentum=0.0, privacy=privacy)
    model, hooks, replaced = recipe(model, config, lower=0.0, upper=1.0)
    assert replaced == []  # nothing to swap: embeddings, linear layers and layer norms only
    end = Trainer(config, hooks).fit(model, x, y).model.state_dict()
    return math.sqrt(sum(float(((end[k] - start[k]) ** 2).sum()) for k in start))


@pytest.mark.parametrize("builtin", ["transformer", "gpt"])
@pytest.mark.parametrize("mode", ["ghost", "hooks", None])
def test_dp_sgd_clips_every_rows_gradient_in_the_text_models(
    mode: str | None, builtin: str
) -> None:
    """With a clipping norm of 1e-4 and almost no noise, an epoch of 4 steps moves the
    weights (embeddings and attention included) by at most steps * lr * 1e-4 (twice, for
    Poisson batches above the expected size); plain SGD moves them by far more. The
    language model's loss is one per row (its tokens' mean) under both clipping modes, and
    the default (None) picks hooks for text models."""
    privacy = PrivacyConfig(
        noise_multiplier=1e-3, max_grad_norm=1e-4, accountant="rdp", mode=cast(Any, mode)
    )
    bound = 4 * 0.5 * 1e-4 * 2
    assert _moved(None, builtin) > 0.05
    assert _moved(privacy, builtin) < bound


def test_text_models_clip_with_hooks_and_others_with_ghost_clipping_by_default() -> None:
    spec = BuiltinModel.model_validate(SMALL)
    text = build_model(spec, input_shape=(32,), classes=2)
    table = build_model(BuiltinModel(builtin="mlp"), input_shape=(5,), classes=2)
    assert (clipping_mode(text), clipping_mode(table)) == ("hooks", "ghost")


def test_text_models_refuse_numeric_attacks_and_uneven_heads() -> None:
    base: dict[str, Any] = {"type": "train", "dataset": "notes@1", "model_name": "m"}
    with pytest.raises(ValidationError, match=r"train\.adversarial perturbs numeric inputs"):
        TrainJob.model_validate({**base, "model": SMALL, "train": {"adversarial": {"eps": 0.1}}})
    with pytest.raises(ValidationError, match=r"evaluate\.robustness perturbs"):
        TrainJob.model_validate(
            {**base, "model": SMALL, "evaluate": {"robustness": {"eps": [0.1]}}}
        )
    gpt = {**SMALL, "builtin": "gpt"}
    with pytest.raises(ValidationError, match=r"evaluate\.fairness needs a classifier"):
        TrainJob.model_validate({**base, "model": gpt, "evaluate": {"fairness": True}})
    with pytest.raises(ValidationError, match=r"evaluate\.memorization audits a language"):
        TrainJob.model_validate({**base, "model": SMALL, "evaluate": {"memorization": True}})
    TrainJob.model_validate({**base, "model": gpt, "evaluate": {"memorization": True}})
    with pytest.raises(ValidationError, match=r"dim \(30\) must be a multiple of heads \(4\)"):
        BuiltinModel.model_validate({**SMALL, "dim": 30})


class _Context(SimpleNamespace):
    def log(self, line: str) -> None:
        self.lines.append(line)


def _inputs(frame: pd.DataFrame, tmp_path: Path, **spec: Any) -> Any:
    job = TrainJob.model_validate(
        {"type": "train", "dataset": "notes@1", "model_name": "m", "model": SMALL, **spec}
    )
    context = _Context(workdir=tmp_path, lines=[])
    info = {"name": "notes", "version": 1, "identifier_columns": ["note"]}
    inputs = text_inputs(
        cast(Any, context),
        job,
        data=Loaded(kind="table", frame=frame),
        info=info,
        schema=infer_table_schema(frame),
        target="diagnosis",
    )
    return inputs, context


def test_a_text_column_with_identifiers_trains_only_under_the_override(tmp_path: Path) -> None:
    frame = _notes(60)
    with pytest.raises(PolicyViolation, match="note in notes@1 identify people"):
        _inputs(frame, tmp_path)
    inputs, context = _inputs(frame, tmp_path, train={"allow_identifier_features": ["note"]})
    assert inputs.features == ["note"] and inputs.x.shape == (60, 128)
    assert any("tokenizer of" in line for line in context.lines)


def test_the_tokenizer_learns_from_the_training_rows_only(tmp_path: Path) -> None:
    """A word only held-out rows hold is unknown to the tokenizer: its vocabulary does not
    tell which rows were held out."""
    frame = _notes(80)
    override = {"allow_identifier_features": ["note"], "holdout": 0.25}
    inputs, _ = _inputs(frame, tmp_path, train=override)
    marked = frame.copy()
    for row in inputs.test_rows:
        marked.loc[row, "note"] += " quokkaword"
    for row in inputs.train_rows[:3]:
        marked.loc[row, "note"] += " wallabyword"
    spec = {**SMALL, "vocab_min_rows": 1}
    again, _ = _inputs(marked, tmp_path, train=override, model=spec)
    vocabulary = _vocabulary(again.prep.tokenizer)
    assert "wallabyword" in vocabulary and "quokkaword" not in vocabulary


def test_a_transformer_needs_one_text_column(tmp_path: Path) -> None:
    frame = _notes(30).assign(summary=lambda f: f["note"].str.upper())
    with pytest.raises(InvalidInput, match=r"has 2 text columns \(note, summary\)"):
        _inputs(frame, tmp_path)
    with pytest.raises(InvalidInput, match="diagnosis is a category column of notes@1, not text"):
        _inputs(frame, tmp_path, features=["diagnosis"])


def test_lira_audits_the_transformer_with_shadows_trained_like_it() -> None:
    """The membership audit applies to the text classifier: LiRA's shadow transformers are
    built from the run's model spec and trained under its recipe on token ids."""
    from bastion.evaluate.config import MembershipConfig
    from bastion.evaluate.membership import evaluate_membership

    _, prep, x, y, train, test = _split_notes(160, holdout=0.5, vocab=400, length=48)
    spec = BuiltinModel.model_validate({**SMALL, "vocab_size": 400})
    config = TrainConfig(epochs=3, batch_size=16, lr=0.003, optimizer="adam")
    torch.manual_seed(0)
    model = build_model(spec, input_shape=prep.input_shape, classes=len(prep.classes))
    trained = Trainer(config).fit(model, x[train], y[train]).model
    summary = evaluate_membership(
        trained,
        train=(x[train], y[train]),
        test=(x[test], y[test]),
        config=MembershipConfig(attack="lira", shadow_models=2),
        model_spec=spec.model_dump(mode="json"),
        train_config=config.model_dump(mode="json"),
        classes=len(prep.classes),
    )
    assert summary["attack"] == "lira" and summary["rows"] == 160
    assert 0.0 <= summary["auc"] <= 1.0


def test_a_users_own_text_model_gets_token_ids_and_trains_with_dp_sgd(tmp_path: Path) -> None:
    """``model: {entrypoint: ..., text: {...}}``: the job learns the tokenizer, the user's
    build() gets the vocabulary size, and DP-SGD swaps its multi-head attention for Opacus's."""
    frame = _notes(200)
    model = {
        "entrypoint": "tests.train.text_entrypoint:build",
        "text": {"vocab_size": 500, "vocab_min_rows": 2, "max_length": 48},
    }
    train = {"allow_identifier_features": ["note"]}
    inputs, context = _inputs(frame, tmp_path, model=model, train=train)
    assert inputs.x.shape == (200, 48) and any("tokenizer of" in line for line in context.lines)
    job = TrainJob.model_validate(
        {"type": "train", "dataset": "notes@1", "model_name": "m", "model": model}
    )
    built = build_model(job.model, input_shape=inputs.prep.input_shape, classes=4)
    privacy = PrivacyConfig(target_epsilon=8.0)
    config = TrainConfig(epochs=2, batch_size=32, lr=0.01, optimizer="adam", privacy=privacy)
    private, hooks, replaced = recipe(built, config, lower=0.0, upper=1.0)
    assert any("MultiheadAttention" in what for what in replaced), replaced
    rows = inputs.train_rows
    result = Trainer(config, hooks).fit(private, inputs.x[rows], inputs.y[rows])
    assert result.epsilon is not None and result.epsilon <= 8.0
    with pytest.raises(ValidationError, match=r"train\.adversarial perturbs numeric inputs"):
        TrainJob.model_validate(
            {**job.model_dump(), "train": {"adversarial": {"eps": 0.1}}, "type": "train"}
        )
