"""Where a training job runs: ``cuda`` when it was given GPUs and CUDA sees one, else the CPU.

The agent gives a job GPUs by the run's ``resources.gpus`` (``CUDA_VISIBLE_DEVICES`` and the
device nodes of those GPUs only); a job given none sees none. A job given GPUs that finds
none fails with the reason rather than training slowly on the CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from bastion.errors import ConfigurationError

__all__ = ["autocast", "autocast_dtype", "training_device"]


def training_device(gpus: int) -> torch.device:
    """The device a job given ``gpus`` GPUs trains on; :class:`ConfigurationError` when it
    was given GPUs and CUDA finds fewer."""
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
