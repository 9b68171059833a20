"""Agent pieces that need no processes: transport rules, storage checks, spec parsing."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from bastion.agent.job import _reason
from bastion.agent.job_setup import job_environment, tls_files
from bastion.agent.loop import check_transport
from bastion.agent.storage import Storage
from bastion.errors import ConfigurationError, InvalidInput, InvalidSpec
from bastion.spec import load_spec, parse_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "smoke.yaml"


@pytest.mark.parametrize(
    "url",
    [
        "https://cp.example:8600",
        "http://127.0.0.1:8600",
        "http://localhost:8600",
        "http://[::1]:8600",
    ],
)
def test_allowed_control_plane_urls(url: str) -> None:
    check_transport(url)


@pytest.mark.parametrize("url", ["http://10.0.0.5:8600", "http://cp.example", "ftp://cp.example"])
def test_plain_http_beyond_loopback_is_refused(url: str) -> None:
    with pytest.raises(InvalidInput):
        check_transport(url)


def test_storage_root_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigurationError, match="cannot create the storage root"):
        Storage(blocker / "storage").check()


def test_storage_workdirs_are_private(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "s")
    storage.check()
    workdir = storage.workdir("a" * 32, 2)
    assert workdir == tmp_path / "s" / "runs" / ("a" * 32) / "attempt-2"
    assert workdir.stat().st_mode & 0o077 == 0


def test_example_spec_is_valid() -> None:
    spec = load_spec(EXAMPLE)
    assert (spec.project, spec.cluster, spec.job.type) == ("demo", "local", "smoke")


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"name": "x", "project": "p", "cluster": "c", "job": {"type": "deploy"}}, "job.type"),
        ({"name": "x", "project": "P!", "cluster": "c", "job": {"type": "smoke"}}, "project"),
        (
            {"name": "x", "project": "p", "cluster": "c", "job": {"type": "smoke"}, "extra": 1},
            "extra",
        ),
        (
            {
                "name": "x",
                "project": "p",
                "cluster": "c",
                "job": {"type": "smoke"},
                "max_retries": 99,
            },
            "max_retries",
        ),
        (
            {
                "name": "x",
                "project": "p",
                "cluster": "c",
                "job": {"type": "smoke", "inputs": {"a b": "f"}},
            },
            "job.inputs",
        ),
    ],
)
def test_bad_specs_name_the_field(document: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidSpec, match=field.replace(".", r"\.")):
        parse_spec(document)


def test_non_mapping_and_invalid_yaml_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="mapping"):
        parse_spec(["not", "a", "mapping"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed")
    with pytest.raises(InvalidSpec, match="not valid YAML"):
        load_spec(broken)


def test_jobs_fan_out_as_wide_as_their_agent_and_on_its_ray_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from bastion.agent.fanout import FANOUT_ENV
    from bastion.agent.loop import Agent

    sandbox = object()
    local = SimpleNamespace(
        config=SimpleNamespace(executor="local", max_parallel=3), sandbox=sandbox
    )
    assert Agent._fanout_environment(local) == {FANOUT_ENV: "local:3"}  # type: ignore[arg-type]
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t" * 64)
    monkeypatch.setenv("BASTION_MASTER_KEY", "never-passed-on")
    ray_config = SimpleNamespace(executor="ray", max_parallel=2, ray_address="10.0.0.5:6379")
    # A sandboxed job has no network: it fans out in its own sandbox, and gets no Ray token.
    sandboxed = SimpleNamespace(config=ray_config, sandbox=sandbox)
    assert Agent._fanout_environment(sandboxed) == {FANOUT_ENV: "local:2"}  # type: ignore[arg-type]
    unsandboxed = SimpleNamespace(config=ray_config, sandbox=None)
    granted = Agent._fanout_environment(unsandboxed)  # type: ignore[arg-type]
    assert granted == {
        FANOUT_ENV: "ray:10.0.0.5:6379",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": "t" * 64,
    }


def test_runs_still_staging_their_inputs_keep_their_lease() -> None:
    """The heartbeat renews what active() lists: runs being staged are in it, by attempt."""
    from types import SimpleNamespace
    from typing import Any, cast

    from bastion.agent.loop import _Running, _State
    from bastion.client import LeaseOut

    state = _State()
    state.staging["r-staging"] = 2
    handle = SimpleNamespace(request=SimpleNamespace(attempt=1))
    lease = LeaseOut(
        run_id="r-running",
        project="p",
        attempt=1,
        spec={},
        job_token="t",
        lease_seconds=30,
        resume_from=None,
    )
    state.jobs["r-running"] = _Running(handle=cast(Any, handle), lease=lease)
    assert state.active() == {"r-staging": 2, "r-running": 1}
    state.staging.pop("r-staging")
    assert state.active() == {"r-running": 1}


def test_a_servers_tls_files_may_not_come_from_the_agents_own(tmp_path: Path) -> None:
    """A spec naming the agent's master key as its TLS key must not get it bound in."""
    home, certs = tmp_path / "home", tmp_path / "certs"
    home.mkdir()
    certs.mkdir()
    (home / "master.key").write_text("secret")
    (certs / "server.pem").write_text("cert")
    private = (home, tmp_path / "storage")
    job = {"tls_cert": str(certs / "server.pem"), "tls_key": str(home / "master.key")}
    with pytest.raises(InvalidInput, match="agent's own files"):
        tls_files(job, private)
    allowed = {"tls_cert": str(certs / "server.pem")}
    assert tls_files(allowed, private) == [(certs / "server.pem").resolve()]


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "out.bin"), "no space left"),
        (OSError(errno.EFBIG, "File too large", "out.bin"), "resources.file_mb"),
        (OSError(errno.EROFS, "Read-only file system", "/etc/x"), "only in its own folder"),
        (OSError(errno.ECONNREFUSED, "Connection refused"), "jobs have no network"),
    ],
)
def test_an_operating_system_refusal_is_named_in_one_line(error: OSError, says: str) -> None:
    reason = _reason(error)
    assert says in reason
    assert "\n" not in reason


def _resources(**given: object) -> dict[str, object]:
    return {"name": "x", "project": "p", "cluster": "c", "job": {"type": "smoke"}, **given}


def test_resources_default_to_one_cpu_worker_without_gpus() -> None:
    resources = parse_spec(_resources()).resources
    assert (resources.gpus, resources.workers, resources.cpus_per_worker) == (0, 1, None)
    assert resources.restarts == 2
    given = parse_spec(
        _resources(job=TRAIN, resources={"gpus": 4, "workers": 4, "cpus_per_worker": 8})
    )
    assert (given.resources.gpus, given.resources.workers) == (4, 4)
    assert given.resources.cpus_per_worker == 8


#: A train job, the only kind that takes more than one worker.
TRAIN = {"type": "train", "dataset": "d@1", "model": {"builtin": "mlp"}, "model_name": "m"}


@pytest.mark.parametrize(
    ("job", "resources", "says"),
    [
        (
            {"type": "smoke"},
            {"workers": 2},
            "resources.workers: 2 trains data-parallel; only train jobs take more than one "
            "worker (this is a smoke job)",
        ),
        (
            TRAIN,
            {"workers": 4, "gpus": 2},
            "resources.gpus: 2 for 4 workers; data-parallel training gives each worker one "
            "GPU (gpus: 0 or gpus = workers)",
        ),
    ],
)
def test_workers_are_for_training_with_one_gpu_each(
    job: dict[str, object], resources: dict[str, int], says: str
) -> None:
    with pytest.raises(InvalidSpec) as refused:
        parse_spec(_resources(job=job, resources=resources))
    assert str(refused.value).endswith(says)
    assert parse_spec(_resources(job=TRAIN, resources={"workers": 4})).resources.workers == 4
    assert parse_spec(_resources(job=TRAIN, resources={"workers": 2, "gpus": 2}))


@pytest.mark.parametrize(
    ("resources", "says"),
    [
        ({"gpus": -1}, "resources.gpus: Input should be greater than or equal to 0"),
        ({"gpus": 17}, "resources.gpus: Input should be less than or equal to 16"),
        ({"workers": 0}, "resources.workers: Input should be greater than or equal to 1"),
        ({"workers": 65}, "resources.workers: Input should be less than or equal to 64"),
        (
            {"cpus_per_worker": 0},
            "resources.cpus_per_worker: Input should be greater than or equal to 1",
        ),
        (
            {"cpus_per_worker": 257},
            "resources.cpus_per_worker: Input should be less than or equal to 256",
        ),
        ({"gpu": 1}, "resources.gpu: Extra inputs are not permitted (did you mean 'gpus'?)"),
    ],
)
def test_bad_resources_are_refused_naming_the_field(
    resources: dict[str, object], says: str
) -> None:
    with pytest.raises(InvalidSpec) as refused:
        parse_spec(_resources(resources=resources))
    assert str(refused.value) == f"spec: {says}"


def _train(train: dict[str, object], **resources: object) -> dict[str, object]:
    return {
        "name": "x",
        "project": "p",
        "cluster": "c",
        "dataset": "patients@1",
        "model": {"builtin": "mlp"},
        "train": train,
        "resources": resources,
    }


def test_mixed_precision_is_checked_against_the_device_and_privacy() -> None:
    assert parse_spec(_train({})).job.train.mixed_precision is None  # type: ignore[union-attr]
    bf16 = parse_spec(_train({"mixed_precision": "bf16"}))  # the CPU runs bf16 too
    assert bf16.job.train.mixed_precision == "bf16"  # type: ignore[union-attr]
    assert parse_spec(_train({"mixed_precision": "fp16"}, gpus=1)).resources.gpus == 1
    with pytest.raises(InvalidSpec, match=r"fp16 runs on a GPU only; give resources\.gpus"):
        parse_spec(_train({"mixed_precision": "fp16"}))
    private: dict[str, object] = {"mixed_precision": "fp16", "privacy": {"noise_multiplier": 1.0}}
    with pytest.raises(InvalidSpec, match="fp16 needs a gradient scaler"):
        parse_spec(_train(private, gpus=1))
    with pytest.raises(InvalidSpec, match=r"train\.mixed_precision: Input should be 'bf16' or"):
        parse_spec(_train({"mixed_precision": "fp8"}))


def test_a_job_gets_the_agents_thread_counts_and_nothing_else_of_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "4; rm -rf /")  # not a number: not passed
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "0")  # not a thread count
    monkeypatch.setenv("BASTION_MASTER_KEY", "secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    environment = job_environment(tmp_path)
    assert environment["OMP_NUM_THREADS"] == "1"
    assert sorted(environment) == [
        "BASTION_HOME",
        "HOME",
        "LANG",
        "OMP_NUM_THREADS",
        "PATH",
        "PYTHONDONTWRITEBYTECODE",
        "TMPDIR",
    ]
