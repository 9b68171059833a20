"""Device placement: a job given no GPU trains on the CPU, a job given GPUs on ``cuda``, and
a job given GPUs that finds none fails in one line; mixed precision as the spec asks."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
import torch

from bastion.agent.eval_job import run_evaluate
from bastion.agent.job import _reason
from bastion.agent.train_job import run_train
from bastion.errors import ConfigurationError, InvalidSpec
from bastion.inference.runner import run_serve
from bastion.spec import EvaluateJob, ServeJob, TrainJob
from bastion.train.config import TrainConfig
from bastion.train.device import job_device, model_device, on_model
from bastion.train.models import BuiltinModel, build_model
from bastion.train.trainer import Trainer

NO_GPU = (
    "the run asks for 1 GPU (resources.gpus) but the job finds 0 (torch.cuda.is_available() "
    "is false or sees fewer): check the agent host's NVIDIA driver and the CUDA build of "
    "PyTorch, or submit with resources.gpus: 0"
)


def test_a_job_given_no_gpu_trains_on_the_cpu() -> None:
    assert job_device(0) == torch.device("cpu")


def test_a_job_given_a_gpu_trains_on_cuda_when_cuda_sees_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert job_device(1) == torch.device("cuda")
    with pytest.raises(ConfigurationError, match=r"asks for 2 GPUs .* finds 1"):
        job_device(2)


def test_a_gpu_job_on_a_host_without_cuda_fails_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigurationError) as refused:
        job_device(1)
    assert str(refused.value) == NO_GPU
    # The train job checks first, before it reads anything, and reports that line.
    job = TrainJob(type="train", dataset="d@1", model_name="m", model=BuiltinModel(builtin="mlp"))
    context = SimpleNamespace(gpus=1, workdir="/nonexistent")
    with pytest.raises(ConfigurationError) as failed:
        run_train(cast(Any, context), job)
    assert _reason(failed.value) == NO_GPU


@pytest.mark.parametrize("kind", ["evaluate", "serve"])
def test_evaluate_and_serve_jobs_given_a_gpu_on_a_host_without_cuda_fail_first(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Evaluation and serving place their model like training does: a job given a GPU
    that finds none fails with the same line before it reads anything."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    context = cast(Any, SimpleNamespace(gpus=1, workdir="/nonexistent"))
    with pytest.raises(ConfigurationError) as failed:
        if kind == "evaluate":
            job = EvaluateJob.model_validate(
                {"type": "evaluate", "model": "m@1", "evaluate": {"robustness": True}}
            )
            run_evaluate(context, job)
        else:
            run_serve(context, ServeJob(type="serve", deployment="d", model="m@1"))
    assert _reason(failed.value) == NO_GPU


def test_model_device_and_on_model_follow_the_parameters() -> None:
    model = _mlp()
    assert model_device(model) == torch.device("cpu")
    assert model_device(torch.nn.Flatten()) == torch.device("cpu")  # no parameters
    x = torch.zeros(2, 32)
    assert on_model(model, x) is x  # already there: no copy


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
