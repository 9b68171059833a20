"""A text classifier served: ``{"text": ...}`` or a batch of texts, each bounded; the
tokenizer comes from the signed package; the guards watch the model's encoding of each text."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import torch

from bastion.data.checks import infer_table_schema
from bastion.data.ingest import Loaded
from bastion.data.notes import notes
from bastion.inference.app import ServeState
from bastion.inference.config import ServeConfig
from bastion.train.config import BuiltinModel
from bastion.train.data import Preprocessing, fit_preprocessing, split_rows
from bastion.train.models import build_model
from bastion.train.text import next_token_pairs
from tests.conftest import other_keyring
from tests.inference.conftest import Running, Workload, make_state, mint_key, stage


def _adam(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, batch: int
) -> None:
    torch.manual_seed(1)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        for rows in torch.split(torch.randperm(len(x)), batch):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()  # type: ignore[no-untyped-call]
            optimiser.step()


def _refused(client: httpx.Client, bodies: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """Each body's 422 as (field, rule) pairs, by name."""
    errors = {}
    for name, body in bodies.items():
        answer = client.post("/v1/predict", json=body)
        assert answer.status_code == 422, (name, answer.text)
        errors[name] = [(e["field"], e["rule"]) for e in answer.json()["errors"]]
    return errors


@pytest.fixture(scope="module")
def notes_workload(tmp_path_factory: pytest.TempPathFactory) -> Workload:
    root = tmp_path_factory.mktemp("notes-serve")
    keyring = other_keyring(root / "home")
    made = notes(rows=300, seed=2)
    frame = pd.DataFrame({"note": [n.text for n in made], "diagnosis": [n.diagnosis for n in made]})
    data = Loaded(kind="table", frame=frame)
    prep = fit_preprocessing(data, target="diagnosis", text="note")
    y = prep.labels(data)
    split, train_rows, test_rows = split_rows(y, holdout=0.3, seed=0)
    prep.fit_tokenizer(
        frame["note"].iloc[train_rows].tolist(), vocab_size=600, min_rows=3, max_length=64
    )
    x = prep.features(data)
    spec = BuiltinModel(builtin="transformer", dim=32, layers=1, heads=4, vocab_size=600)
    torch.manual_seed(0)
    model = build_model(spec, input_shape=prep.input_shape, classes=len(prep.classes))
    rows = torch.as_tensor(train_rows)
    _adam(model, x[rows], y[rows], epochs=6, lr=0.003, batch=32)
    folder = stage(
        root,
        keyring=keyring,
        name="notes-transformer",
        model=model.eval(),
        prep=prep,
        spec=spec,
        schema=infer_table_schema(frame).model_dump(mode="json"),
        metadata={"split": split.model_dump()},
    )
    return Workload(folder, keyring, prep, x, y, None, frame, train_rows, test_rows)


def test_a_text_model_answers_texts_and_refuses_what_is_not_one(
    notes_workload: Workload, serve: Callable[[ServeState], Running]
) -> None:
    token, record = mint_key(("predict", "explain"))
    state, sink, _ = make_state(
        notes_workload, config=ServeConfig(max_text_chars=400), records=[record]
    )
    running = serve(state)
    headers = {"Authorization": f"Bearer {token}"}
    frame = notes_workload.frame
    assert isinstance(frame, pd.DataFrame)
    held_out = frame.iloc[notes_workload.test_rows]
    with httpx.Client(base_url=running.url, headers=headers, timeout=30) as client:
        one = client.post("/v1/predict", json={"text": held_out["note"].iloc[0]})
        assert one.status_code == 200, one.text
        (prediction,) = one.json()["predictions"]
        assert prediction["label"] in notes_workload.prep.classes
        batch = client.post("/v1/predict", json={"instances": held_out["note"].tolist()[:40]})
        assert batch.status_code == 200, batch.text
        labels = [p["label"] for p in batch.json()["predictions"]]
        right = np.mean(np.array(labels) == held_out["diagnosis"].to_numpy()[:40])
        assert right > 0.7, right  # the served tokenizer is the one the model learnt with
        refusals = {
            "long": {"text": "cough " * 100},
            "number": {"instances": ["a dry cough", 7]},
            "both": {"text": "a dry cough", "instances": ["a dry cough"]},
            "field": {"note": "a dry cough"},
        }
        assert _refused(client, refusals) == {
            "long": [("instances[0]", "longer than 400 characters")],
            "number": [("instances[1]", "must be a string (a text)")],
            "both": [("body", "either text or instances, not both")],
            "field": [("note", "unknown field")],
        }
        explained = client.post("/v1/explain", json={"text": "a dry cough"})
        assert explained.status_code == 422
        assert "a text model's are tokens" in explained.json()["detail"]
    state.audit.flush()
    served = [e for e in sink.events if e.get("decision") == "served"]
    assert len(served) == 2 and all(e["instances"] in (1, 40) for e in served)
    assert all(held_out["note"].iloc[0][:30] not in str(e) for e in sink.events)  # no text


@pytest.fixture(scope="module")
def writer_workload(tmp_path_factory: pytest.TempPathFactory) -> Workload:
    """A small language model that has learnt one sentence with an e-mail address by heart."""
    root = tmp_path_factory.mktemp("gpt-serve")
    keyring = other_keyring(root / "home")
    made = notes(rows=40, seed=5)
    texts = ["please write to jane.doe@example.org today."] * 40 + [n.text for n in made]
    frame = pd.DataFrame({"note": texts})
    prep = Preprocessing(kind="text", classes=[], text_column="note")
    prep.fit_tokenizer(texts, vocab_size=600, min_rows=2, max_length=32)
    x, y = next_token_pairs(prep.text_features(texts))
    spec = BuiltinModel(builtin="gpt", dim=32, layers=1, heads=4, vocab_size=600)
    torch.manual_seed(0)
    model = build_model(spec, input_shape=prep.input_shape, classes=0)
    _adam(model, x, y, epochs=40, lr=0.01, batch=16)
    rows = np.arange(len(texts))
    split, train_rows, test_rows = split_rows(torch.zeros(len(texts)), holdout=0.2, seed=0)
    folder = stage(
        root,
        keyring=keyring,
        name="notes-gpt",
        model=model.eval(),
        prep=prep,
        spec=spec,
        schema=infer_table_schema(frame).model_dump(mode="json"),
        metadata={"split": split.model_dump()},
    )
    ids = prep.text_features(texts)
    return Workload(
        folder, keyring, prep, ids, torch.zeros(len(rows)), None, frame, train_rows, test_rows
    )


def test_a_language_model_writes_and_its_identifiers_are_redacted_on_the_way_out(
    writer_workload: Workload, serve: Callable[[ServeState], Running]
) -> None:
    token, record = mint_key(("predict", "explain"))
    state, sink, _ = make_state(
        writer_workload, config=ServeConfig(max_new_tokens=12), records=[record]
    )
    running = serve(state)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=running.url, headers=headers, timeout=30) as client:
        written = client.post("/v1/predict", json={"text": "please write to", "max_new_tokens": 8})
        assert written.status_code == 200, written.text
        text = written.json()["text"]
        assert "[EMAIL]" in text and "jane" not in text and "example" not in text, text
        refusals = {
            "long": {"text": "to", "max_new_tokens": 13},
            "zero": {"text": "to", "max_new_tokens": 0},
            "field": {"text": "to", "temperature": 2},
            "none": {"max_new_tokens": 2},
        }
        assert _refused(client, refusals) == {
            "long": [("max_new_tokens", "at most 12")],
            "zero": [("max_new_tokens", "must be a positive integer")],
            "field": [("temperature", "unknown field")],
            "none": [("text", "required, a string")],
        }
        explained = client.post("/v1/explain", json={"text": "to"})
        assert explained.status_code == 422
    state.audit.flush()
    served = [e for e in sink.events if e.get("decision") == "served"]
    assert [e["flags"] for e in served] == [["redacted:email:1"]]
    assert "jane" not in json.dumps(sink.events)
