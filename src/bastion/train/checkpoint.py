"""Training checkpoints as plain files: safetensors tensors and JSON, nothing pickled.

A checkpoint directory holds ``weights.safetensors`` (the model), ``optimizer.safetensors``
and ``optimizer.json`` (its tensors and the rest of its state), ``rng.safetensors`` (every
random generator the loop draws from) and ``trainer.json`` (epoch, step, accountant
history). Loading restores all of it, so a resumed run continues exactly where the
interrupted one stood. Encryption and signing happen around these files: the agent
seals a checkpoint directory the moment it is written and verifies it before a resume.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bastion.errors import IntegrityError
from bastion.files import atomic_write_bytes, ensure_private_dir, fsync_dir

__all__ = ["FILES", "load_checkpoint", "save_checkpoint"]

FILES = (
    "weights.safetensors",
    "optimizer.safetensors",
    "optimizer.json",
    "rng.safetensors",
    "trainer.json",
)


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for index, values in state["state"].items():
        plain: dict[str, Any] = {}
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                plain[name] = value
        rest["state"][str(index)] = plain
    return tensors, rest


def _join_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in rest["state"].items()}
    for key, tensor in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    return {"state": state, "param_groups": rest["param_groups"]}


def save_checkpoint(
    directory: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generators: dict[str, torch.Generator],
    trainer: dict[str, Any],
    states: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a complete checkpoint into a new ``directory`` (built aside, renamed in).

    ``states`` are the random states to save when they are not only this process's (a
    data-parallel group's, gathered by :func:`bastion.train.distributed.gather_states`).
    """
    staging = directory.with_name(f".{directory.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    ensure_private_dir(staging)
    weights = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(weights, str(staging / "weights.safetensors"))
    tensors, rest = _split_optimizer(optimizer.state_dict())
    save_file(tensors, str(staging / "optimizer.safetensors"))
    atomic_write_bytes(staging / "optimizer.json", json.dumps(rest).encode())
    if states is None:
        rng = {name: g.get_state().cpu() for name, g in generators.items()}
        rng["torch"] = torch.get_rng_state()
    else:
        rng = dict(states)
    save_file(rng, str(staging / "rng.safetensors"))
    atomic_write_bytes(staging / "trainer.json", json.dumps(trainer).encode())
    fsync_dir(staging)
    if directory.exists():
        shutil.rmtree(directory)
    staging.rename(directory)
    fsync_dir(directory.parent)
    return directory


def load_checkpoint(
    directory: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generators: dict[str, torch.Generator],
    rank: int = 0,
) -> dict[str, Any]:
    """Restore model, optimizer and generators from ``directory``; return the trainer state.

    ``rank`` is this process's place in a data-parallel group: its random states are saved
    as ``NAME@RANK`` (rank 0's under the plain names a single process uses).
    """
    missing = [name for name in FILES if not (directory / name).is_file()]
    if missing:
        raise IntegrityError(f"{directory}: incomplete checkpoint (missing {', '.join(missing)})")
    try:
        model.load_state_dict(load_file(str(directory / "weights.safetensors")))
        rest = json.loads((directory / "optimizer.json").read_text())
        tensors = load_file(str(directory / "optimizer.safetensors"))
        optimizer.load_state_dict(_join_optimizer(tensors, rest))
        rng = load_file(str(directory / "rng.safetensors"))
        trainer: dict[str, Any] = json.loads((directory / "trainer.json").read_text())
    except (RuntimeError, ValueError, KeyError) as exc:
        raise IntegrityError(f"{directory}: checkpoint does not fit this run ({exc})") from None
    for name in [*generators, "torch"]:
        if (name if rank == 0 else f"{name}@{rank}") not in rng:
            where = "" if rank == 0 else f" of worker {rank}"
            raise IntegrityError(f"{directory}: checkpoint lacks the {name!r} random state{where}")
    own = {name: rng[name if rank == 0 else f"{name}@{rank}"] for name in [*generators, "torch"]}
    torch.set_rng_state(own.pop("torch"))
    for name, generator in generators.items():
        generator.set_state(own[name])
    return trainer
