"""Device placement: a job given no GPU trains on the CPU, a job given GPUs on ``cuda``, and
a job given GPUs that finds none fails in one line; mixed precision as the spec asks."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
import torch

from bastion.agent.job import _reason
from bastion.agent.train_job import run_train
from bastion.errors import ConfigurationError, InvalidSpec
from bastion.spec import TrainJob
from bastion.train.config import TrainConfig
from bastion.train.device import training_device
from bastion.train.models import BuiltinModel, build_model
from bastion.train.trainer import Trainer

NO_GPU = (
    "the run asks for 1 GPU (resources.gpus) but the job finds 0 (torch.cuda.is_available() "
    "is false or sees fewer): check the agent host's NVIDIA driver and the CUDA build of "
    "PyTorch, or submit with resources.gpus: 0"
)


def test_a_job_given_no_gpu_trains_on_the_cpu() -> None:
    assert training_device(0) == torch.device("cpu")


def test_a_job_given_a_gpu_trains_on_cuda_when_cuda_sees_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert training_device(1) == torch.device("cuda")
    with pytest.raises(ConfigurationError, match=r"asks for 2 GPUs .* finds 1"):
        training_device(2)


def test_a_gpu_job_on_a_host_without_cuda_fails_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigurationError) as refused:
        training_device(1)
    assert str(refused.value) == NO_GPU
    # The train job checks first, before it reads anything, and reports that line.
    job = TrainJob(type="train", dataset="d@1", model_name="m", model=BuiltinModel(builtin="mlp"))
    context = SimpleNamespace(gpus=1, workdir="/nonexistent")
    with pytest.raises(ConfigurationError) as failed:
        run_train(cast(Any, context), job)
    assert _reason(failed.value) == NO_GPU


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(BuiltinModel(builtin="mlp"), input_shape=(32,), classes=2)


def test_bf16_on_the_cpu_trains_the_same_model_twice(
    patients_tensors: tuple[torch.Tensor, torch.Tensor],
) -> None:
    x, y = patients_tensors
    config = TrainConfig(epochs=3, lr=0.05, mixed_precision="bf16")
    first = Trainer(config, device="cpu").fit(_mlp(), x, y)
    second = Trainer(config, device="cpu").fit(_mlp(), x, y)
    assert first.history[-1]["accuracy"] > 0.9
    for name, weight in first.model.state_dict().items():
        assert weight.dtype == torch.float32  # autocast runs the passes, the weights stay
        assert torch.equal(weight, second.model.state_dict()[name])


def test_fp16_is_refused_on_the_cpu() -> None:
    with pytest.raises(InvalidSpec, match="fp16 runs on a GPU only; use bf16 on the CPU"):
        Trainer(TrainConfig(mixed_precision="fp16"), device="cpu")


def test_the_trained_model_comes_back_on_the_cpu(
    patients_tensors: tuple[torch.Tensor, torch.Tensor],
) -> None:
    x, y = patients_tensors
    result = Trainer(TrainConfig(epochs=1)).fit(_mlp(), x, y)
    assert {p.device.type for p in result.model.parameters()} == {"cpu"}
