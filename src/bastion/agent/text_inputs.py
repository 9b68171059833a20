"""A text run's inputs in the train job: the text column, the split, the tokenizer, the ids.

A ``transformer`` (a classifier) or a ``gpt`` (a language model, no target) reads one
column of the dataset as text: the one its spec names under
``features``, or else the one column the schema types ``text``. That column goes through the
same identifier gate as any feature: a column whose scan found identifiers in its text (a
version that was not redacted) trains only under the spec's audited override. The rows are
split before anything is learnt from them, and the tokenizer learns its vocabulary from the
training rows only; a fine-tuning run (``init_from``) keeps its base model's tokenizer,
whose ids its embeddings were trained on. A language model's canary audit
(``evaluate.memorization``) writes its canaries into the training rows here, before the
tokenizer sees them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from bastion.data.feature_gate import check_features
from bastion.data.ingest import Loaded
from bastion.data.schema import ColumnType, ImageSchema, TableSchema
from bastion.errors import InvalidInput, InvalidSpec
from bastion.evaluate.memorization import Canary, insert_canaries, make_canaries
from bastion.spec import TrainJob
from bastion.train.config import BuiltinModel, text_settings
from bastion.train.data import Preprocessing, Split, fit_preprocessing, split_rows
from bastion.train.text import next_token_pairs

if TYPE_CHECKING:
    from bastion.agent.job import JobContext

__all__ = ["TrainInputs", "canaries_of", "generates", "reads_text", "text_inputs"]


def reads_text(job: TrainJob) -> bool:
    """Whether the run's model reads text (the built-in transformer or gpt, or a user's model
    with ``model.text``)."""
    return text_settings(job.model) is not None


def generates(job: TrainJob) -> bool:
    """Whether the run trains a language model (gpt: no target, each token predicts the next)."""
    return isinstance(job.model, BuiltinModel) and job.model.builtin == "gpt"


def canaries_of(evidence: dict[str, Any]) -> list[Canary]:
    """The canaries a run wrote into its training rows, from its evidence (none: [])."""
    recorded = evidence.get("canaries")
    if not recorded:
        return []
    return make_canaries(list(recorded["repeats"]), seed=int(recorded["seed"]))


@dataclass
class TrainInputs:
    """What a run trains on: the fitted preprocessing, the feature columns, inputs, labels
    and the held-out split."""

    prep: Preprocessing
    features: list[str]
    x: torch.Tensor
    y: torch.Tensor
    split: Split
    train_rows: np.ndarray
    test_rows: np.ndarray
    #: A language model's canaries, written into its training rows (evidence: how to
    #: draw them again).
    canaries: dict[str, Any] | None = None


def text_column(job: TrainJob, schema: TableSchema | ImageSchema, dataset: str) -> str:
    """The column the transformer reads (one line naming what is wrong otherwise)."""
    if not isinstance(schema, TableSchema):
        raise InvalidInput(f"a text model reads a text column; {dataset} holds images")
    if job.features is not None:
        if len(job.features) != 1:
            raise InvalidSpec(
                f"a text model reads one text column; features names {len(job.features)}"
            )
        column = schema.column(job.features[0])
        if column is None:
            raise InvalidInput(f"features: {job.features[0]!r} is not a column of {dataset}")
        if column.type not in (ColumnType.TEXT, ColumnType.STRING):
            raise InvalidInput(
                f"features: {column.name} is a {column.type.value} column of {dataset}, not text"
            )
        return column.name
    texts = [c.name for c in schema.columns if c.type is ColumnType.TEXT]
    if len(texts) != 1:
        found = f" ({', '.join(texts)})" if texts else ""
        raise InvalidInput(
            f"{dataset} has {len(texts)} text columns{found}: name the one the model reads "
            "under features"
        )
    return texts[0]


def text_inputs(
    context: JobContext,
    job: TrainJob,
    *,
    data: Loaded,
    info: dict[str, Any],
    schema: TableSchema | ImageSchema,
    target: str,
) -> TrainInputs:
    """The text column checked by the identifier gate, the split, the tokenizer, the ids."""
    settings = text_settings(job.model)
    assert settings is not None  # reads_text(job) holds
    dataset = f"{info['name']}@{info['version']}"
    column = text_column(job, schema, dataset)
    check_features(
        [column],
        identifier_columns=list(info.get("identifier_columns", [])),
        suspect_columns=list(info.get("suspect_columns", [])),
        allowed=job.train.allow_identifier_features,
        dataset=dataset,
    )
    texts = data.table()[column].fillna("").astype(str)
    config = job.train
    canaries = None
    if generates(job):  # no labels: a plain split of the rows
        prep = Preprocessing(kind="text", classes=[], text_column=column)
        y = torch.zeros(len(texts), dtype=torch.long)
    else:
        prep = fit_preprocessing(data, target=target, text=column)
        y = prep.labels(data)
    split, train_rows, test_rows = split_rows(y, holdout=config.holdout, seed=config.seed)
    audit = job.evaluate.memorization if job.evaluate is not None else None
    if audit is not None:  # before anything is learnt from the training rows
        canaries = {"repeats": list(audit.canaries), "seed": config.seed}
        written = insert_canaries(
            texts.iloc[train_rows].tolist(), canaries_of({"canaries": canaries}), seed=config.seed
        )
        texts = texts.copy()
        texts.iloc[train_rows] = pd.Series(written, index=texts.index[train_rows])
        context.log(
            f"canary audit: {len(audit.canaries)} canaries written into "
            f"{sum(min(n, len(train_rows)) for n in audit.canaries)} training rows"
        )
    initial = context.workdir / "inputs" / "init"
    if job.init_from is not None:
        base = _base_preprocessing(initial, job.init_from)
        if base.classes != prep.classes:
            raise InvalidInput(
                f"{job.init_from} predicts {base.classes}, this run's target holds {prep.classes}"
            )
        prep.tokenizer, prep.max_length = base.tokenizer, base.max_length
        context.log(f"text column {column}: the tokenizer of {job.init_from}")
    else:
        prep.fit_tokenizer(
            texts.iloc[train_rows].tolist(),
            vocab_size=settings.vocab_size,
            min_rows=settings.vocab_min_rows,
            max_length=settings.max_length,
        )
        words = len(json.loads(prep.tokenizer)["model"]["vocab"])
        context.log(
            f"text column {column}: a tokenizer of {words} tokens learnt from the "
            f"{len(train_rows)} training rows (words in at least {settings.vocab_min_rows} "
            f"rows), {settings.max_length} tokens per text"
        )
    x = prep.text_features(texts.tolist())
    if generates(job):
        x, y = next_token_pairs(x)
    return TrainInputs(prep, [column], x, y, split, train_rows, test_rows, canaries)


def _base_preprocessing(initial: Path, ref: str) -> Preprocessing:
    config = json.loads((initial / "model.json").read_text())
    base = Preprocessing.model_validate(config["preprocessing"])
    if base.kind != "text":
        raise InvalidInput(f"{ref} is not a text model; a text model fine-tunes a text model")
    return base
