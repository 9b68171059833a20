"""From a verified dataset version to tensors, and the preprocessing that goes with the model.

Tables: the chosen numeric columns are standardised with the training mean and standard
deviation; categorical columns become one-hot indicators of the schema's categories;
the target's classes are sorted and indexed. Images are scaled to [0, 1] from the
schema's value range and given a channel axis. Text (one column) becomes token ids under
a tokenizer learnt from the training split (:mod:`bastion.train.text`). The
:class:`Preprocessing` record is saved with the model so inference applies exactly the
same transformation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from bastion.data.ingest import Loaded
from bastion.data.schema import MAX_CATEGORIES
from bastion.errors import InvalidInput
from bastion.train.text import MAX_TOKENIZER_BYTES, encode, train_tokenizer

__all__ = ["Preprocessing", "Split", "TensorData", "fit_preprocessing", "split_rows"]


class Preprocessing(BaseModel):
    """How raw rows become model inputs (fitted on the training data)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["table", "images", "text"]
    classes: list[str]
    numeric: list[str] = []
    mean: list[float] = []
    std: list[float] = []
    categorical: dict[str, list[str]] = {}
    target: str | None = None
    image_shape: list[int] = []
    value_range: tuple[float, float] = (0.0, 1.0)
    #: Text: the column, the tokenizer (JSON, learnt from the training split) and how many
    #: tokens of each text the model reads.
    text_column: str | None = None
    tokenizer: str = Field(default="", max_length=MAX_TOKENIZER_BYTES)
    max_length: int = Field(default=0, ge=0, le=1024)

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self.kind == "images":
            return (1, *self.image_shape)
        if self.kind == "text":
            return (self.max_length,)
        return (len(self.numeric) + sum(len(c) for c in self.categorical.values()),)

    def features(self, data: Loaded) -> torch.Tensor:
        """Model inputs for ``data`` (float32), transformed exactly as in training."""
        if self.kind == "images":
            return self.image_features(data.arrays()[0])
        if self.kind == "text":
            return self.text_features(data.table()[self.text_column].fillna("").astype(str))
        return self.table_features(data.table())

    def text_features(self, texts: Sequence[str] | pd.Series) -> torch.Tensor:
        """Token ids (int64, rows x max_length) of ``texts``."""
        if not self.tokenizer:
            raise InvalidInput("this text preprocessing has no tokenizer yet (fit_tokenizer)")
        return encode(self.tokenizer, list(texts), max_length=self.max_length)

    def fit_tokenizer(
        self, texts: Sequence[str], *, vocab_size: int, min_rows: int, max_length: int
    ) -> None:
        """Learn the tokenizer from ``texts`` (the training split's, and only those)."""
        self.tokenizer = train_tokenizer(texts, vocab_size=vocab_size, min_rows=min_rows)
        self.max_length = max_length

    def image_features(self, images: np.ndarray) -> torch.Tensor:
        low, high = self.value_range
        scaled = (images.astype(np.float32) - low) / max(high - low, 1e-12)
        return torch.from_numpy(np.ascontiguousarray(scaled[:, None]))

    def table_features(self, frame: pd.DataFrame) -> torch.Tensor:
        parts = []
        if self.numeric:
            values = frame[self.numeric].to_numpy(dtype=np.float64)
            parts.append((values - np.array(self.mean)) / np.array(self.std))
        for column, categories in self.categorical.items():
            codes = pd.Categorical(frame[column].astype(str), categories=categories).codes
            parts.append(np.eye(len(categories))[codes] * (codes >= 0)[:, None])
        matrix = np.concatenate(parts, axis=1).astype(np.float32)
        if not np.isfinite(matrix).all():
            raise InvalidInput("missing or infinite values in the feature columns")
        return torch.from_numpy(matrix)

    def row_features(self, rows: list[dict[str, object]]) -> torch.Tensor:
        """:meth:`table_features` for a few validated rows (an inference request), without
        building a data frame: the same numbers, an order of magnitude sooner."""
        width = self.input_shape[0]
        matrix = np.zeros((len(rows), width), dtype=np.float64)
        if self.numeric:
            values = np.array([[row[c] for c in self.numeric] for row in rows], dtype=np.float64)
            matrix[:, : len(self.numeric)] = (values - np.array(self.mean)) / np.array(self.std)
        start = len(self.numeric)
        for column, categories in self.categorical.items():
            index = {category: i for i, category in enumerate(categories)}
            for r, row in enumerate(rows):
                code = index.get(str(row[column]))
                if code is not None:
                    matrix[r, start + code] = 1.0
            start += len(categories)
        return torch.from_numpy(matrix.astype(np.float32))

    def labels(self, data: Loaded) -> torch.Tensor:
        raw = data.arrays()[1] if self.kind == "images" else data.table()[self.target].to_numpy()
        index = {label: i for i, label in enumerate(self.classes)}
        try:
            return torch.tensor([index[str(v)] for v in raw], dtype=torch.long)
        except KeyError as exc:
            raise InvalidInput(f"label {exc.args[0]!r} is not one of the classes") from None


class TensorData(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    x: torch.Tensor
    y: torch.Tensor
    preprocessing: Preprocessing


class Split(BaseModel):
    """Which rows trained the model and which were held out (recorded with the model)."""

    model_config = ConfigDict(extra="forbid")

    holdout: float
    seed: int
    train_rows: int
    test_rows: int
    #: sha256 of the training rows' indices (int64): the evaluate job re-draws the split
    #: and checks it is the one the model was trained on.
    train_index_sha256: str


def split_rows(
    labels: torch.Tensor, *, holdout: float, seed: int
) -> tuple[Split, np.ndarray, np.ndarray]:
    """A stratified split (plain when a class is too small to stratify), and its indices."""
    rows = np.arange(len(labels))
    if holdout == 0:
        train, test = rows, rows[:0]
    else:
        classes, counts = np.unique(labels.numpy(), return_counts=True)
        stratify = labels.numpy() if len(classes) > 1 and counts.min() >= 2 else None
        from sklearn.model_selection import train_test_split  # noqa: PLC0415 - 1 s to import

        train, test = train_test_split(
            rows, test_size=holdout, random_state=seed, stratify=stratify
        )
        train, test = np.sort(train), np.sort(test)
    digest = hashlib.sha256(train.astype(np.int64).tobytes()).hexdigest()
    split = Split(
        holdout=holdout,
        seed=seed,
        train_rows=len(train),
        test_rows=len(test),
        train_index_sha256=digest,
    )
    return split, train, test


def fit_preprocessing(
    data: Loaded,
    *,
    target: str | None,
    features: list[str] | None = None,
    text: str | None = None,
) -> Preprocessing:
    """Fit the transformation on training data; ``features`` defaults to every other column.
    With ``text`` (a column), the record reads that column as text; its tokenizer is fitted
    after the split (:meth:`Preprocessing.fit_tokenizer`)."""
    if text is not None:
        frame = data.table()
        for column, role in ((target, "target"), (text, "text")):
            if column is None or column not in frame.columns:
                raise InvalidInput(f"the {role} column {column!r} is not in the dataset")
        return Preprocessing(
            kind="text",
            classes=[str(c) for c in sorted(frame[target].unique().tolist())],
            target=target,
            text_column=text,
        )
    if data.kind == "images":
        images, labels = data.arrays()
        return Preprocessing(
            kind="images",
            classes=[str(c) for c in sorted(np.unique(labels).tolist())],
            image_shape=list(images.shape[1:]),
            value_range=(float(images.min()), float(images.max())),
        )
    frame = data.table()
    if target is None or target not in frame.columns:
        raise InvalidInput(f"the target column {target!r} is not in the dataset")
    chosen = features if features is not None else [c for c in frame.columns if c != target]
    missing = sorted(set(chosen) - set(frame.columns))
    if missing:
        raise InvalidInput(f"feature column(s) not in the dataset: {', '.join(missing)}")
    numeric = [c for c in chosen if pd.api.types.is_numeric_dtype(frame[c])]
    categorical = {
        c: sorted(frame[c].astype(str).unique().tolist()) for c in chosen if c not in numeric
    }
    too_many = [c for c, values in categorical.items() if len(values) > MAX_CATEGORIES]
    if too_many:
        raise InvalidInput(
            f"{', '.join(too_many)}: more than {MAX_CATEGORIES} distinct values; not a "
            "categorical feature (an identifier or free text?); leave it out of the features"
        )
    values = frame[numeric].to_numpy(dtype=np.float64)
    return Preprocessing(
        kind="table",
        classes=[str(c) for c in sorted(frame[target].unique().tolist())],
        numeric=numeric,
        mean=values.mean(axis=0).tolist() if numeric else [],
        std=np.where(values.std(axis=0) > 0, values.std(axis=0), 1.0).tolist() if numeric else [],
        categorical=categorical,
        target=target,
    )
