"""The model zoo (logistic regression, MLP, small CNN, text transformer) and user entrypoints.

A model spec is ``{builtin: logreg|mlp|cnn|transformer, ...}`` or
``{entrypoint: "pkg.module:build"}``; an entrypoint is called as
``build(input_shape=..., classes=...)`` and must return an ``nn.Module``. Every model
exposes its penultimate layer as ``model.features`` (the backdoor scan and the OOD
detector read it); for entrypoint models it is optional. The transformer's inputs are the
token ids of one text column (:mod:`bastion.train.text`).
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bastion.errors import InvalidInput, InvalidSpec
from bastion.files import atomic_write_bytes
from bastion.security.sealed import sha256_file
from bastion.train.config import BuiltinModel, EntrypointModel, ModelSpec
from bastion.train.data import Preprocessing
from bastion.train.device import on_model

__all__ = [
    "BuiltinModel",
    "EntrypointModel",
    "ModelSpec",
    "build_model",
    "load_packaged",
    "package_model",
    "penultimate",
]


class _Classifier(nn.Module):
    """A feature extractor and a linear head; ``features(x)`` is the penultimate layer."""

    def __init__(self, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.body(x))
        return out


_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


def _mlp(inputs: int, spec: BuiltinModel, classes: int) -> _Classifier:
    act = _ACTIVATIONS[spec.activation]
    layers: list[nn.Module] = [nn.Flatten()]
    width = inputs
    for size in spec.hidden:
        layers += [nn.Linear(width, size), act()]
        width = size
    return _Classifier(nn.Sequential(*layers), nn.Linear(width, classes))


def _cnn(shape: tuple[int, ...], spec: BuiltinModel, classes: int) -> _Classifier:
    if len(shape) != 3:
        raise InvalidSpec(f"model.builtin cnn needs images (channels, height, width), got {shape}")
    act = _ACTIVATIONS[spec.activation]
    layers: list[nn.Module] = []
    width = shape[0]
    for size in spec.channels:
        layers += [nn.Conv2d(width, size, 3, padding=1), act()]
        width = size
    layers += [nn.MaxPool2d(2), nn.Flatten()]
    flat = width * (shape[1] // 2) * (shape[2] // 2)
    body = nn.Sequential(*layers, nn.Linear(flat, 64), act())
    return _Classifier(body, nn.Linear(64, classes))


def build_model(spec: ModelSpec, *, input_shape: tuple[int, ...], classes: int) -> nn.Module:
    """Build the spec's model for inputs of ``input_shape`` (no batch axis) and ``classes``."""
    if isinstance(spec, EntrypointModel):
        module_name, function = spec.entrypoint.split(":")
        try:
            build = getattr(importlib.import_module(module_name), function)
        except (ImportError, AttributeError) as exc:
            raise InvalidSpec(f"model.entrypoint {spec.entrypoint!r}: {exc}") from None
        arguments: dict[str, object] = {"input_shape": input_shape, "classes": classes}
        if spec.text is not None:  # token ids in: the model sizes its embeddings by this
            arguments["vocab_size"] = spec.text.vocab_size
        try:
            built = build(**arguments)
        except TypeError as exc:
            raise InvalidSpec(
                f"model.entrypoint {spec.entrypoint!r} must accept "
                f"build({'=..., '.join(arguments)}=...): {exc}"
            ) from None
        if not isinstance(built, nn.Module):
            raise InvalidSpec(
                f"model.entrypoint {spec.entrypoint!r} returned {type(built).__name__}, "
                "not a torch.nn.Module"
            )
        return built
    if spec.builtin in ("transformer", "gpt"):
        if len(input_shape) != 1:
            raise InvalidSpec(f"model.builtin {spec.builtin} reads one text column's tokens")
        from bastion.train.text import TextClassifier, TextGenerator  # noqa: PLC0415

        kind = TextGenerator if spec.builtin == "gpt" else TextClassifier
        return kind(
            vocab_size=spec.vocab_size,
            max_length=input_shape[0],
            dim=spec.dim,
            layers=spec.layers,
            heads=spec.heads,
            # a language model predicts the next token: its classes are the vocabulary
            outputs=spec.vocab_size if spec.builtin == "gpt" else classes,
        )
    inputs = math.prod(input_shape)
    if spec.builtin == "logreg":
        return _Classifier(nn.Flatten(), nn.Linear(inputs, classes))
    if spec.builtin == "mlp":
        return _mlp(inputs, spec, classes)
    return _cnn(input_shape, spec, classes)


def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's penultimate-layer activations (for models that expose ``features``),
    computed where the model is and returned on the CPU."""
    inner = getattr(model, "_module", model)  # under Opacus the model is wrapped
    extract = getattr(inner, "features", None)
    if extract is None:
        raise InvalidSpec("this model exposes no penultimate layer (define model.features(x))")
    with torch.no_grad():
        out: torch.Tensor = extract(on_model(model, x))
    return out.flatten(1).cpu()


def package_model(
    folder: Path,
    *,
    model: nn.Module,
    spec: ModelSpec,
    prep: Preprocessing,
    schema: dict[str, object],
    metadata: dict[str, object],
) -> str:
    """Write the package ``load_packaged`` reads into ``folder`` (which must exist):
    safetensors weights, ``model.json``, ``schema.json``, and ``metadata.json`` with the
    weights' SHA-256 added. Returns that digest."""
    weights = folder / "weights.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(weights))
    digest = sha256_file(weights)
    config = {"model": spec.model_dump(mode="json"), "preprocessing": prep.model_dump()}
    for name, value in (
        ("model.json", config),
        ("schema.json", schema),
        ("metadata.json", {**metadata, "weights_sha256": digest}),
    ):
        atomic_write_bytes(folder / name, json.dumps(value, indent=2).encode())
    return digest


def load_packaged(folder: Path, ref: str) -> tuple[nn.Module, Preprocessing]:
    """Build the model a package's ``model.json`` describes and load its safetensors weights
    (they must fit the architecture)."""
    config = json.loads((folder / "model.json").read_text())
    prep = Preprocessing.model_validate(config["preprocessing"])
    spec = (
        EntrypointModel.model_validate(config["model"])
        if "entrypoint" in config["model"]
        else BuiltinModel.model_validate(config["model"])
    )
    model = build_model(spec, input_shape=prep.input_shape, classes=len(prep.classes))
    try:
        model.load_state_dict(load_file(str(folder / "weights.safetensors")))
    except RuntimeError as exc:
        raise InvalidInput(f"{ref}: weights do not fit the model config ({exc})") from None
    return model, prep
