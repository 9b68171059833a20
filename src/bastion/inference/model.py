"""The served model: checked against its signed manifest, then loaded from safetensors.

The agent verifies and decrypts a model version into the job's folder; the server checks
it again before loading (and before every hot-swap), so a file changed on disk after
staging is refused rather than served.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bastion.data.schema import ImageSchema, TableSchema
from bastion.errors import IntegrityError
from bastion.inference.staged import SEALED
from bastion.security.sealed import MANIFEST, Manifest, load_manifest, sha256_file
from bastion.security.signing import signature_path_for, verify_path
from bastion.train.data import Preprocessing
from bastion.train.device import on_model
from bastion.train.models import load_packaged, penultimate

__all__ = ["ServedModel", "load_verified"]

_STAGING_FILES = {"version.json", SEALED}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ServedModel:
    """A verified model and everything a request needs to be checked against."""

    ref: str
    manifest_hash: str
    model: torch.nn.Module
    prep: Preprocessing
    schema: TableSchema | ImageSchema
    metadata: dict[str, Any]

    # The model runs where it was loaded (``cuda`` for a deployment given a GPU); requests
    # arrive and answers leave on the CPU.

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(self.model(on_model(self.model, x)), dim=1).cpu()

    def infer(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities and penultimate features in one forward pass where the model
        exposes its parts (``features`` then ``head``), else in two."""
        body = getattr(self.model, "features", None)
        head = getattr(self.model, "head", None)
        if body is None or head is None:
            return self.probabilities(x), self.features(x)
        with torch.inference_mode():
            features = body(on_model(self.model, x))
            return torch.softmax(head(features), dim=1).cpu(), features.flatten(1).cpu()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations (what the OOD detector measures)."""
        return penultimate(self.model, x)

    @property
    def generative(self) -> bool:
        """A language model (gpt): it writes text instead of answering with a class."""
        return self.prep.kind == "text" and not self.prep.classes

    def generate(self, prompt: str, max_new_tokens: int) -> list[str]:
        """Greedy decoding of up to ``max_new_tokens`` tokens after ``prompt`` (its last
        tokens, when prompt and answer would not fit the model's length); the new tokens."""
        from bastion.train.text import PAD_ID, encode, token_strings  # noqa: PLC0415

        length = self.prep.max_length
        ids = encode(self.prep.tokenizer, [prompt], max_length=10 * length)[0]
        tokens = ids[ids != PAD_ID].tolist()[-max(length - max_new_tokens, 1) :]
        written: list[int] = []
        with torch.inference_mode():
            while len(written) < max_new_tokens and len(tokens) < length:
                logits = self.model(on_model(self.model, torch.tensor([tokens])))
                token = int(logits[0, :, -1].argmax())
                tokens.append(token)
                written.append(token)
        return token_strings(self.prep.tokenizer, written)

    def watched(self, x: torch.Tensor, features: torch.Tensor | None = None) -> np.ndarray:
        """What the extraction detector and drift see of a batch: the model inputs, or, for
        a text model (whose inputs are token ids), its penultimate encoding of each text
        (``features`` when the request computed them already)."""
        if self.prep.kind == "text":
            x = features if features is not None else self.features(x)
        out: np.ndarray = x.flatten(1).cpu().numpy().astype(np.float64)
        return out


def _check_manifest(folder: Path, public_keys: list[bytes]) -> tuple[Manifest, dict[str, Any]]:
    """Steps (1)-(3) of :func:`load_verified`."""
    info = json.loads((folder / "version.json").read_text())
    manifest_path = folder / SEALED / MANIFEST
    if not manifest_path.is_file():
        raise IntegrityError(f"{folder}: no signed manifest in {SEALED}/; stage it again")
    # (1) The manifest is the one the control plane recorded for this version.
    manifest = load_manifest(folder / SEALED, info["manifest_hash"])
    # (2) It is signed by one of this cluster's keys.
    if not public_keys:
        raise IntegrityError("no trusted signing key given; refusing to load an unverified model")
    errors = []
    for pem in public_keys:
        try:
            verify_path(
                manifest_path, public_key_pem=pem, signature=signature_path_for(manifest_path)
            )
            break
        except Exception as exc:  # try the next trusted key; refuse if none verifies
            errors.append(str(exc))
    else:
        raise IntegrityError(f"{manifest_path}: signature does not verify: {errors[-1]}")
    # (3) It describes this model version.
    if manifest.artifact != "model" or manifest.name != info["name"]:
        raise IntegrityError(f"{manifest_path}: describes {manifest.artifact} {manifest.name}")
    return manifest, info


def load_verified(
    folder: Path, *, public_keys: list[bytes], device: torch.device | None = None
) -> ServedModel:
    """Verify the staged model against its signed manifest, then load it (onto ``device``,
    the CPU by default).

    Raises :class:`IntegrityError` naming the first check that failed; nothing is loaded
    unless every check passes.
    """
    manifest, info = _check_manifest(folder, public_keys)
    # (4) The folder holds exactly the manifest's files, each with the signed content.
    present = {entry.name for entry in folder.iterdir()} - _STAGING_FILES
    if present != set(manifest.files):
        extra, missing = (
            sorted(present - set(manifest.files)),
            sorted(set(manifest.files) - present),
        )
        raise IntegrityError(
            f"{folder}: files differ from the signed manifest (added: {extra or 'none'}; "
            f"missing: {missing or 'none'})"
        )
    for name, entry in manifest.files.items():
        path = folder / name
        if path.stat().st_size != entry.bytes or sha256_file(path) != entry.sha256:
            raise IntegrityError(f"{path}: content differs from the signed manifest (tampered)")
    # (5) Weights load only from safetensors, into the recorded architecture.
    ref = f"{info['name']}@{info['version']}"
    model, prep = load_packaged(folder, ref)
    raw_schema = json.loads((folder / "schema.json").read_text())
    schema: TableSchema | ImageSchema = (
        ImageSchema.model_validate(raw_schema)
        if raw_schema.get("kind") == "images"
        else TableSchema.model_validate(raw_schema)
    )
    return ServedModel(
        ref=ref,
        manifest_hash=str(info["manifest_hash"]),
        model=model.to(device or "cpu").eval(),
        prep=prep,
        schema=schema,
        metadata=json.loads((folder / "metadata.json").read_text()),
    )
