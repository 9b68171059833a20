"""Assembling a servable model: the verified weights plus guards fitted to its training data."""

from __future__ import annotations

import torch

from bastion.data.schema import ImageSchema
from bastion.evaluate.attacks import Lattice, image_lattice
from bastion.inference.app import Loaded
from bastion.inference.config import ServeConfig
from bastion.inference.guards.extraction import ExtractionDetector, InputGrid
from bastion.inference.guards.ood import InputDetector
from bastion.inference.guards.validate import RequestValidator
from bastion.inference.model import ServedModel
from bastion.inference.monitor import DriftMonitor, input_names

__all__ = ["fit_guards", "served_lattice"]

#: Rows used to fit the detectors and drift reference (a bound on start-up time).
_MAX_FIT_ROWS = 5000
#: Fewer held-out rows than this cannot be split into thresholds and their check; the
#: detector is then calibrated on training rows (which flags more clean requests, not fewer).
_MIN_HOLDOUT_ROWS = 40


def served_lattice(served: ServedModel) -> Lattice | None:
    """The model inputs the validator lets through, when they are integer pixels."""
    schema = served.schema
    if not isinstance(schema, ImageSchema):
        return None
    return image_lattice(
        dtype=schema.dtype,
        minimum=schema.minimum,
        maximum=schema.maximum,
        value_range=served.prep.value_range,
    )


def fit_guards(
    served: ServedModel,
    *,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_holdout: torch.Tensor,
    config: ServeConfig,
    seed: int = 0,
) -> Loaded:
    """Fit the input detector (thresholds on half the held-out rows, checked on the other
    half), the extraction grid and the drift reference on training rows."""
    generator = torch.Generator().manual_seed(seed)
    if len(x_train) > _MAX_FIT_ROWS:
        chosen = torch.randperm(len(x_train), generator=generator)[:_MAX_FIT_ROWS]
        x_train, y_train = x_train[chosen], y_train[chosen]
    images, text = served.prep.kind == "images", served.prep.kind == "text"
    validator = RequestValidator(
        schema=served.schema,
        prep=served.prep,
        max_batch=config.max_batch,
        max_text_chars=config.max_text_chars,
        max_new_tokens=config.max_new_tokens,
    )
    detector, drift = None, None
    # A language model has no classes: no class-conditional detector, drift or encoding.
    flat = x_train.flatten(1).numpy().astype(float)
    if not served.generative:
        detector = InputDetector.fit(
            features=served.features,
            probabilities=served.probabilities,
            x_fit=x_train,
            y_fit=y_train,
            x_holdout=x_holdout if len(x_holdout) >= _MIN_HOLDOUT_ROWS else x_train,
            lattice=served_lattice(served),
            images=images,
            text=text,
            fpr=config.ood_fpr,
            seed=seed,
        )
        # Extraction and drift watch the inputs; a text model's, its encoding of each text.
        flat = served.watched(x_train)
        if not images and not text:  # per-pixel or per-token drift says little
            names = input_names(served.prep.numeric, served.prep.categorical, flat.shape[1])
            drift = DriftMonitor(flat, names=names)
    return Loaded(
        served=served,
        validator=validator,
        detector=detector,
        drift=drift,
        extraction=ExtractionDetector(grid=InputGrid.fit(flat)),
    )
