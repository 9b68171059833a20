"""A job process: ``python -m bastion.agent.job WORKDIR``.

The agent writes ``WORKDIR/job.json`` (what to run) and starts the job in its sandbox
(:mod:`bastion.security.sandbox`). The job holds no credential and no keys: it reports
stages, log lines, metrics and checkpoints through the agent's relay socket (named in
``BASTION_RELAY``; :mod:`bastion.agent.relay` adds the job's token), and ends the run
with ``succeeded`` or ``failed``. It dies with the agent that started it
(:mod:`bastion.agent.lifeline`).
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.agent.lifeline import die_with_agent
from bastion.agent.ranks import GROUP_LOST, RANK_ENV, RENDEZVOUS_ENV, GroupLost, RankFinished
from bastion.agent.relay import dial
from bastion.client.federation import FederationJobMixin
from bastion.client.runs import RunsMixin
from bastion.client.serving import ServingJobMixin
from bastion.config import Settings
from bastion.errors import (
    BastionError,
    ConfigurationError,
    Conflict,
    IntegrityError,
    InvalidInput,
    InvalidSpec,
    PolicyViolation,
    ServiceUnavailable,
)
from bastion.files import atomic_write_bytes
from bastion.parent_death import exit_now
from bastion.spec import RunSpec, SmokeJob

__all__ = [
    "EXIT_FENCED",
    "EXIT_REFUSED",
    "EXIT_REPORTED_FAILURE",
    "EXIT_SEAL",
    "JobContext",
    "main",
    "run_smoke",
]

#: Exit codes the agent reads: the job reported its own failure / was stopped by a newer
#: attempt or a cancel / was refused by the control plane. Any other non-zero code means
#: the job died without reporting (crash, limit, signal) and the agent reports for it.
EXIT_REPORTED_FAILURE = 10
EXIT_FENCED = 11
EXIT_REFUSED = 12
#: The job left ``outputs/`` for the agent to seal as a dataset version; the agent ends the run.
EXIT_SEAL = 13


class JobClient(RunsMixin, ServingJobMixin, FederationJobMixin):
    """The SDK calls a job makes (its run's reports; a serve job's keys and audit; a
    federated job's meeting point): a job imports no other resource's models."""


@dataclass
class JobContext:
    """What a job knows about itself, and its one channel to the control plane."""

    client: JobClient
    project: str
    run_id: str
    attempt: int
    workdir: Path
    resume_from: int | None
    inputs_root: Path
    #: GPUs the run was given (``resources.gpus``); the agent shows the job only these.
    gpus: int = 0
    #: Training processes (``resources.workers``), CPUs for each, and how often a
    #: data-parallel group may start again after losing a worker.
    workers: int = 1
    cpus_per_worker: int | None = None
    restarts: int = 2
    #: On Ray Train: this process's rank and where its group meets (rank 0 is the job).
    rank: int = 0
    rendezvous: str | None = None

    retry_seconds: float = 300.0

    def _send(self, call: Callable[[], None]) -> None:
        """Report, riding out a control-plane restart with backoff (refusals are final)."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.5
        while True:
            try:
                call()
                return
            except ServiceUnavailable:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def event(self, stage: str, status: str, message: str = "") -> None:
        self._send(
            lambda: self.client.report_event(
                self.project, self.run_id, stage=stage, status=status, message=message
            )
        )

    def log(self, *lines: str) -> None:
        self._send(lambda: self.client.report_logs(self.project, self.run_id, list(lines)))

    def metric(self, name: str, step: int, value: float) -> None:
        self._send(
            lambda: self.client.report_metric(
                self.project, self.run_id, name=name, step=step, value=value
            )
        )

    def result(self, result: dict[str, Any]) -> None:
        self._send(lambda: self.client.report_result(self.project, self.run_id, result))

    def checkpoint(self, step: int, state: dict[str, Any]) -> None:
        """Write the state atomically, then tell the control plane where to resume."""
        atomic_write_bytes(self.workdir / "checkpoint.json", json.dumps(state).encode())
        self.event("checkpoint", "running", f"step {step}")


class RankContext(JobContext):
    """A data-parallel rank other than 0 on Ray Train: it trains its share and says
    nothing to the control plane (rank 0 reports); its lines go to its log."""

    def _send(self, call: Callable[[], None]) -> None:
        pass

    def log(self, *lines: str) -> None:
        print(*lines, sep="\n", file=sys.stderr)


class JobFailed(Exception):
    """The job's own work failed; the message becomes the run's failure reason."""


def _read_input(root: Path, relative: str) -> bytes:
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise JobFailed(f"input {relative!r} points outside the storage root's inputs/")
    if not path.is_file():
        raise JobFailed(f"input {relative!r} does not exist under the storage root's inputs/")
    return path.read_bytes()


def run_smoke(context: JobContext, job: SmokeJob) -> str:
    """The built-in smoke job: steps with metrics, checkpoints and an optional failure."""
    ballast = bytearray(job.allocate_mb << 20)  # held until the job ends
    first = (context.resume_from or 0) + 1
    if context.resume_from:
        context.log(f"resuming after step {context.resume_from} (attempt {context.attempt})")
    # Inputs stay in the compute plane: only their sizes and hashes are reported.
    sizes = {}
    for name, relative in sorted(job.inputs.items()):
        data = _read_input(context.inputs_root, relative)
        sizes[name] = len(data)
        context.log(f"input {name}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    for step in range(first, job.steps + 1):
        if job.sleep_seconds:
            time.sleep(job.sleep_seconds)
        if job.fail_at_step == step:
            raise JobFailed(f"smoke job failed at step {step} as its spec asked")
        context.metric("loss", step, 1.0 / step)
        context.log(f"step {step}/{job.steps}")
        if step % job.checkpoint_every == 0:
            context.checkpoint(step, {"step": step})
    result = json.dumps({"steps": job.steps, "input_sizes": sizes}, sort_keys=True).encode()
    atomic_write_bytes(context.workdir / "result.json", result)
    del ballast
    return f"smoke job done; result.json sha256 {hashlib.sha256(result).hexdigest()}"


#: Where each job type's runner lives, imported only when a job of that type runs (the
#: data jobs pull in pandas and the scanners, training pulls in torch). A runner returns
#: its summary, or None when it left a version in ``outputs/`` for the agent to seal.
_RUNNERS = {
    "smoke": "bastion.agent.job:run_smoke",
    "ingest": "bastion.agent.data_jobs:run_ingest",
    "pseudonymize": "bastion.agent.data_jobs:run_pseudonymize",
    "verify": "bastion.agent.data_jobs:run_verify",
    "scan": "bastion.agent.data_jobs:run_scan",
    "train": "bastion.agent.train_job:run_train",
    "verify-model": "bastion.agent.train_job:run_verify_model",
    "export-model": "bastion.agent.train_job:run_export_model",
    "import-model": "bastion.agent.train_job:run_import_model",
    "evaluate": "bastion.agent.eval_job:run_evaluate",
    "erase": "bastion.agent.data_jobs:run_erase",
    "serve": "bastion.inference.runner:run_serve",
    "register-code": "bastion.agent.code_job:run_register_code",
    "federated": "bastion.agent.federated_job:run_aggregator",
    "federated-site": "bastion.agent.federated_site:run_site",
}


def _run(context: JobContext, spec: RunSpec) -> str | None:
    module, function = _RUNNERS[spec.job.type].split(":")
    if module == "bastion.agent.job":  # this module (run as __main__: no second import)
        runner = globals()[function]
    else:
        runner = getattr(importlib.import_module(module), function)
    summary: str | None = runner(context, spec.job)
    return summary


#: The job's own failures, reported as the run's reason (other Bastion errors are the
#: control plane refusing a report: nothing more can be reported).
_REPORTED = (
    JobFailed,
    InvalidInput,
    InvalidSpec,
    IntegrityError,
    PolicyViolation,
    ConfigurationError,
)


def _reason(exc: Exception) -> str:
    """Why the run failed, in one line."""
    if isinstance(exc, MemoryError):
        traceback.print_exc()  # where it ran out: job.log keeps it
        return (
            "the job ran out of memory: each of its processes may use resources.memory_mb "
            "of address space"
        )
    if isinstance(exc, OSError):
        return _os_reason(exc)
    if isinstance(exc, _REPORTED):
        return str(exc)
    traceback.print_exc()  # the run's own code (a code package) raised: job.log keeps it
    return f"the job's code raised {type(exc).__name__}: {str(exc)[:500]}"


def _os_reason(exc: OSError) -> str:
    """An operating-system refusal, named: in a sandbox it is often the sandbox's doing."""
    kind = type(exc).__name__
    if isinstance(exc, ConnectionError | TimeoutError) or exc.errno in _NETWORK_ERRNOS:
        return f"network refused ({kind}: {exc.strerror or exc}); jobs have no network"
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return (
            f"no space left on the agent's disk{where}: free space in its storage root and run "
            "it again (nothing half-written is kept)"
        )
    if exc.errno == errno.EFBIG:
        return f"a file grew past the job's limit{where}: raise resources.file_mb"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (
            f"{kind}: {exc.strerror or exc}{where}; in the sandbox a job may write only in "
            "its own folder and /tmp"
        )
    return f"{kind}: {exc.strerror or exc}{where}"


_NETWORK_ERRNOS = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED})


def _attempt(context: JobContext, spec: RunSpec, *, isolation: str) -> int:
    """Run the job and report how it ended; the exit code the agent reads."""
    try:
        context.event(spec.job.type, "running", f"attempt {context.attempt} started; {isolation}")
        summary = _run(context, spec)
    except Conflict as exc:  # cancelled, or fenced off by a newer attempt: stop quietly
        print(f"stopping: {exc}", file=sys.stderr)
        return EXIT_FENCED
    except GroupLost as exc:  # Ray Train starts the group again; the run goes on
        context.log(f"the training group lost a worker ({exc}); Ray Train starts it again")
        return GROUP_LOST
    except Exception as exc:
        if isinstance(exc, BastionError) and not isinstance(exc, _REPORTED):
            print(f"control plane refused: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        reason = _reason(exc)
        context.log(f"failed: {reason}")
        context.event(spec.job.type, "failed", reason)
        return EXIT_REPORTED_FAILURE
    if summary is None:
        context.log("data ready; the agent seals it (encrypt, sign, record the version)")
        return EXIT_SEAL
    context.event(spec.job.type, "succeeded", summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    die_with_agent(os.environ)  # no work goes on once the agent that started it is gone
    workdir = Path((argv or sys.argv[1:])[0])
    manifest = json.loads((workdir / "job.json").read_text())
    settings = Settings()
    if settings.relay is None:
        print("no relay socket (BASTION_RELAY) in the environment", file=sys.stderr)
        return 2
    spec = RunSpec.model_validate(manifest["spec"])
    if manifest.get("code"):  # the run's code package, verified and read-only
        code = Path(manifest["code"])
        sys.path[:0] = [str(code / "src")] if (code / "src").is_dir() else []
        sys.path.insert(0, str(code))
    rank = int(os.environ.get(RANK_ENV, "0"))
    # The host part is never resolved: every request goes down the relay's socket.
    with JobClient("http://relay", transport=dial(settings.relay)) as client:
        context = (RankContext if rank else JobContext)(
            client=client,
            project=manifest["project"],
            run_id=manifest["run_id"],
            attempt=int(manifest["attempt"]),
            workdir=workdir,
            resume_from=manifest.get("resume_from"),
            inputs_root=Path(manifest["inputs_root"]),
            gpus=spec.resources.gpus,
            workers=spec.resources.workers,
            cpus_per_worker=spec.resources.cpus_per_worker,
            restarts=spec.resources.restarts,
            rank=rank,
            rendezvous=os.environ.get(RENDEZVOUS_ENV),
        )
        if spec.resources.gpus:  # which of the host's GPUs (the agent's or Ray's choice)
            given = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            context.log(f"GPUs given to this job: CUDA_VISIBLE_DEVICES={given}")
        if rank:
            return _rank(context, spec)
        return _attempt(context, spec, isolation=manifest.get("isolation", ""))


def _rank(context: JobContext, spec: RunSpec) -> int:
    """Rank 1..W-1 of a group on Ray Train: train this share; 0 once done."""
    try:
        _run(context, spec)
    except RankFinished:
        return 0
    except GroupLost as exc:
        context.log(f"the training group lost a worker ({exc})")
        return GROUP_LOST
    return 1  # pragma: no cover - a train job on rank > 0 always ends in RankFinished


if __name__ == "__main__":
    exit_now(main())  # everything is written and reported by now
