"""Where a job computes: ``cuda`` when it was given GPUs and CUDA sees one, else the CPU.

The agent gives a job GPUs by the run's ``resources.gpus`` (``CUDA_VISIBLE_DEVICES`` and the
device nodes of those GPUs only); a job given none sees none. A job given GPUs that finds
none fails with the reason rather than running slowly on the CPU. Training, the evaluation
attacks (PGD, LiRA's shadow models), Captum's attributions and the inference server all
place their model with :func:`job_device`; code that is handed a model follows it there
(:func:`model_device`, :func:`on_model`) and brings results back to the CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from bastion.errors import ConfigurationError

__all__ = [
    "autocast",
    "autocast_dtype",
    "describe_device",
    "job_device",
    "model_device",
    "on_model",
]


def job_device(gpus: int) -> torch.device:
    """The device a job given ``gpus`` GPUs computes on; :class:`ConfigurationError` when
    it was given GPUs and CUDA finds fewer."""
    if gpus == 0:
        return torch.device("cpu")
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found < gpus:
        given = f"{gpus} GPU" if gpus == 1 else f"{gpus} GPUs"
        raise ConfigurationError(
            f"the run asks for {given} (resources.gpus) but the job finds {found} "
            "(torch.cuda.is_available() is false or sees fewer): check the agent host's "
            "NVIDIA driver and the CUDA build of PyTorch, or submit with resources.gpus: 0"
        )
    # The same spec gives the same model on the same device type: no autotuned kernels.
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return torch.device("cuda")


def describe_device(device: torch.device) -> str:
    """``the CPU`` or ``cuda (the GPU's name)``, for a job's log."""
    if device.type == "cpu":
        return "the CPU"
    return f"cuda ({torch.cuda.get_device_name(device)})"


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model's parameters are (the CPU for a model without any)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def on_model(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` on the device of ``model``'s parameters (no copy when it is there already)."""
    return x.to(model_device(model))


def autocast_dtype(mixed_precision: str | None) -> torch.dtype | None:
    """``train.mixed_precision`` as a dtype (None: full precision)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision or "")


@contextlib.contextmanager
def autocast(device: torch.device, mixed_precision: str | None) -> Iterator[None]:
    """Forward passes under ``torch.autocast`` when the spec asks for mixed precision."""
    dtype = autocast_dtype(mixed_precision)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
