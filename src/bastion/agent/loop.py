"""The agent: joins its cluster, heartbeats, leases work by long-polling, runs jobs.

It only ever connects out to the control plane and listens on no socket. Its own
credential and keys stay in its ``BASTION_HOME``; each job gets a fresh environment
with nothing but a token bound to its run and attempt.

Plaintext (decrypted inputs, unsealed checkpoints and outputs) exists only in the working
folders of the attempts this agent runs: it holds its storage root alone, wipes the
plaintext of every attempt it does not run when it starts (a previous agent killed
mid-run), and of a superseded attempt as soon as a newer one is leased. Jobs die with it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bastion.agent.capacity import host_capacity
from bastion.agent.executors import Executor, JobHandle, make_executor
from bastion.agent.fanout import FANOUT_ENV
from bastion.agent.gpus import GpuPool
from bastion.agent.job import EXIT_FENCED, EXIT_REPORTED_FAILURE, EXIT_SEAL
from bastion.agent.job_setup import Setup, prepare, serve_inputs
from bastion.agent.staging import (
    seal_checkpoints,
    seal_outputs,
    stage_inputs,
    wipe,
)
from bastion.agent.storage import Storage
from bastion.client import Capacity, Client, LeaseOut
from bastion.config import Settings
from bastion.errors import BastionError, ConfigurationError, InvalidInput, ServiceUnavailable
from bastion.files import atomic_write_bytes, ensure_private_dir
from bastion.inference.request_audit import SPOOL, replay_spool
from bastion.inference.staged import SWAP_REQUEST
from bastion.security.keys import load_keyring
from bastion.security.sandbox import Isolation, Sandbox

__all__ = ["Agent", "AgentConfig", "check_transport"]

log = logging.getLogger("bastion.agent")


def check_transport(url: str) -> None:
    """HTTPS everywhere; plain HTTP only to a control plane on this host."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    if parts.scheme != "http":
        raise InvalidInput(f"{url}: the control plane URL must start with https://")
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InvalidInput(
            f"{url}: plain HTTP is only allowed to a loopback control plane; use https"
        )


@dataclass
class AgentConfig:
    cluster: str
    url: str
    storage: Path
    executor: str = "local"
    max_parallel: int = 2
    ca_cert: str | None = None
    ray_address: str | None = None
    heartbeat_seconds: float = 5.0
    #: The control plane checks for work every 0.25 s during a long poll whatever its length, so
    #: a short one costs one request per poll and lets a stopping agent exit within it.
    long_poll_seconds: float = 2.0
    #: Directories whose files may be registered as datasets (none: registration refused).
    import_roots: tuple[Path, ...] = ()
    #: Run every job under bubblewrap; False only when the operator said ``--no-sandbox``.
    sandbox: bool = True
    #: Advertise (and give jobs) at most this many of the host's GPUs; None: all it has.
    gpus: int | None = None


@dataclass
class _Running:
    handle: JobHandle
    lease: LeaseOut
    stopped: bool = False
    #: For a serve job: the manifest hash of the model version staged for it last.
    model_hash: str | None = None
    #: Held while the agent seals this job's checkpoints (sealer thread or reaper).
    sealing: threading.Lock = field(default_factory=threading.Lock)

    @property
    def project(self) -> str:
        return self.lease.project

    @property
    def spec_type(self) -> str:
        return str(self.lease.spec["job"]["type"])


@dataclass
class _State:
    jobs: dict[str, _Running] = field(default_factory=dict)
    #: Runs whose inputs are being verified and decrypted (their job has not started yet).
    staging: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def job_gpus(self) -> list[tuple[int, ...]]:
        """The GPUs each started job holds (hold ``lock``)."""
        return [job.handle.request.gpus for job in self.jobs.values()]

    def active(self) -> dict[str, int]:
        """Every run this agent holds, by attempt: the heartbeat renews their leases, so a
        large dataset taking longer to stage than a lease lasts does not lose its run."""
        with self.lock:
            held = dict(self.staging)
            held.update({run_id: job.handle.request.attempt for run_id, job in self.jobs.items()})
            return held


class Agent:
    def __init__(self, config: AgentConfig, settings: Settings) -> None:
        check_transport(config.url)
        self.config = config
        self.settings = settings
        settings.private_home()
        self.storage = Storage(config.storage)
        self.storage.check()
        self.storage.claim()  # no other agent runs jobs here: what it does not run is stale
        self.executor: Executor = make_executor(
            config.executor, max_parallel=config.max_parallel, ray_address=config.ray_address
        )
        self.keyring = load_keyring(settings)
        # Fail closed: no working sandbox, no agent (unless the operator said --no-sandbox).
        self.sandbox = Sandbox.detect(private=self._private) if config.sandbox else None
        self.isolation = Isolation.BUBBLEWRAP if self.sandbox else Isolation.NONE
        if self.sandbox is None:
            log.warning(
                "jobs run UNSANDBOXED (--no-sandbox): a job can read this agent's keys and "
                "reach the network; every run and model of this cluster is marked so"
            )
        self.state = _State()
        self._stop = threading.Event()
        self._client: Client | None = None
        self.gpus = GpuPool.of_executor(
            self.executor.gpus(),
            limit=config.gpus,
            lock=self.state.lock,
            running=self.state.job_gpus,
        )

    def capacity(self) -> Capacity:
        """What this host can give jobs, as the heartbeat advertises it."""
        return host_capacity(gpus=self.gpus.advertised)

    @property
    def _private(self) -> tuple[Path, ...]:
        """What no job may see or name: the agent's home, its storage root, the user's home."""
        return (self.settings.home_dir, self.storage.root, Path.home())

    @property
    def sandbox_description(self) -> str:
        if self.sandbox is None:
            return "UNSANDBOXED (the agent runs with --no-sandbox)"
        return f"sandbox: {self.sandbox.version}, no network, no keys"

    # -- credentials -----------------------------------------------------------------------

    @property
    def _credential_file(self) -> Path:
        return self.settings.home_dir / f"agent-{self.config.cluster}.json"

    def join(self, join_token: str | None) -> None:
        """Use the saved agent credential, or exchange the one-time join token for one."""
        verify: bool | str = self.config.ca_cert or True
        if self._credential_file.is_file():
            saved = json.loads(self._credential_file.read_text())
            self._client = Client(self.config.url, token=saved["token"], verify=verify)
            return
        if join_token is None:
            raise ConfigurationError(
                f"agent of {self.config.cluster!r} has not joined yet; give its one-time join "
                "token (from 'bastion cluster create') with --join-token-file or "
                "BASTION_JOIN_TOKEN"
            )
        with Client(self.config.url, verify=verify) as anonymous:
            joined = anonymous.join_cluster(
                self.config.cluster,
                join_token=join_token,
                signing_public_key=self.keyring.primary_signing_key().public_pem.decode(),
                hybrid_public_keyset=self.keyring.hybrid_public_keyset(),
            )
        atomic_write_bytes(
            self._credential_file,
            json.dumps({"url": self.config.url, "token": joined.token}).encode(),
            mode=0o600,
        )
        self._client = Client(self.config.url, token=joined.token, verify=verify)

    @property
    def client(self) -> Client:
        if self._client is None:
            raise ConfigurationError("the agent has not joined its cluster")
        return self._client

    # -- the loop --------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        self._wipe_unowned()  # what an agent killed mid-run left: plaintext nobody owns
        beat = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        beat.start()
        sealer = threading.Thread(target=self._sealer, name="sealer", daemon=True)
        sealer.start()
        backoff = 1.0
        while not self._stop.is_set():
            try:
                self._reap()
                if self.executor.free_slots > 0:
                    lease = self.client.lease(
                        self.config.cluster,
                        wait=self.config.long_poll_seconds,
                        isolation=self.isolation.value,
                        free_gpus=len(self.gpus.free_now()),
                    )
                    if lease is not None:
                        self._start_or_fail(lease)
                else:
                    self._stop.wait(0.2)
                backoff = 1.0
            except ServiceUnavailable as exc:
                log.warning("control plane unreachable (%s); retrying in %.0fs", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
        with self.state.lock:
            stopping = list(self.state.jobs.values())
            for job in stopping:
                job.handle.kill()
        for job in stopping:  # their runs resume from sealed checkpoints, not from plaintext
            with job.sealing:
                wipe(job.handle.request.workdir)
        try:  # say goodbye, so the control plane records the disconnection now
            self.client.heartbeat(self.config.cluster, {}, stopping=True)
        except BastionError as exc:
            log.warning("could not tell the control plane this agent stops: %s", exc)

    def _heartbeats(self) -> None:
        while not self._stop.is_set():
            try:
                active = self.state.active()
                reply = self.client.heartbeat(
                    self.config.cluster,
                    active,
                    isolation=self.isolation.value,
                    capacity=self.capacity(),
                )
                stop = set(reply.stop)
                self._kill({run_id: active[run_id] for run_id in stop if run_id in active})
                for run_id, inputs in reply.serve.items():
                    self._offer_model(run_id, inputs)
            except BastionError as exc:
                log.warning("heartbeat failed: %s", exc)
            self._stop.wait(self.config.heartbeat_seconds)

    def _sealer(self) -> None:
        """Seal training checkpoints as jobs hand them over (jobs hold no keys)."""
        while not self._stop.is_set():
            with self.state.lock:
                training = [j for j in self.state.jobs.values() if j.spec_type == "train"]
            for job in training:
                self._seal_checkpoints(job)
            self._stop.wait(0.5)

    def _seal_checkpoints(self, job: _Running) -> None:
        """Encrypt and sign handed-over checkpoints, then tell the control plane (resume point)."""
        with job.sealing:
            try:
                done = seal_checkpoints(
                    job.lease,
                    workdir=job.handle.request.workdir,
                    storage=self.storage.root,
                    keyring=self.keyring,
                )
            except (BastionError, OSError) as exc:
                log.error("run %s: cannot seal a checkpoint: %s", job.lease.run_id, exc)
                return
            for epoch, manifest_hash in done:
                self._report(
                    job, stage="checkpoint", message=f"step {epoch} sealed {manifest_hash}"
                )

    def _report(self, job: _Running, *, stage: str, message: str) -> None:
        """Tell the control plane about a running job; a refusal is logged, not raised."""
        try:
            self.client.report_event(
                job.project, job.lease.run_id, stage=stage, status="running", message=message
            )
        except BastionError as exc:
            log.warning("run %s: %s event not reported: %s", job.lease.run_id, stage, exc)

    def _kill(self, attempts: dict[str, int]) -> None:
        """Kill the named attempts (not a newer attempt of the same run started since)."""
        with self.state.lock:
            for run_id, attempt in attempts.items():
                job = self.state.jobs.get(run_id)
                if job is not None and job.handle.request.attempt == attempt:
                    job.stopped = True
                    job.handle.kill()

    def _wipe_unowned(self, run_id: str | None = None) -> None:
        """Wipe the plaintext of every attempt (of one run, or of all) this agent does not
        run: left there, it would stay outside encryption and out of reach of erasure
        (crypto-shredding destroys keys, not plaintext copies). Sealed artifacts stay."""
        with self.state.lock:
            owned = {self.storage.attempt_dir(r, a) for r, a in self.state.staging.items()}
            owned |= {job.handle.request.workdir for job in self.state.jobs.values()}
        for workdir in self.storage.attempts(run_id):
            if workdir not in owned and wipe(workdir):
                log.warning("wiped the plaintext of %s (an attempt no job runs)", workdir)

    def _supersede(self, run_id: str, attempt: int) -> None:
        """A newer attempt of a run is leased: its older attempts are fenced off. Stop the
        one this agent may still run and wipe their plaintext now."""
        with self.state.lock:
            old = self.state.jobs.get(run_id)
            if old is None or old.handle.request.attempt >= attempt:
                old = None
            else:
                old.stopped = True
                self.state.jobs.pop(run_id)
        if old is not None:
            old.handle.kill()
            with old.sealing:  # not while the sealer reads its hand-over
                wipe(old.handle.request.workdir)
            log.warning(
                "run %s: attempt %d superseded by %d", run_id, old.handle.request.attempt, attempt
            )
        self._wipe_unowned(run_id)

    def _start_or_fail(self, lease: LeaseOut) -> None:
        """Start the job; if its data does not verify or storage cannot take it, fail the run."""
        self._supersede(lease.run_id, lease.attempt)
        with self.state.lock:
            self.state.staging[lease.run_id] = lease.attempt
        try:
            self._start(lease, self.gpus.give(lease))
        except OSError as exc:
            reason = f"storage {self.storage.root} cannot hold the run: {exc.strerror or exc}"
            self._report_end(lease, stage="setup", status="failed", message=reason)
        except BastionError as exc:  # a tampered or missing version, a refused source
            self._report_end(lease, stage="verify", status="failed", message=str(exc))
        finally:
            with self.state.lock:
                self.state.staging.pop(lease.run_id, None)
                self.gpus.release(lease.run_id)

    def _report_end(self, lease: LeaseOut, *, stage: str, status: str, message: str) -> None:
        """End a run on the job's behalf (the agent holds its lease)."""
        if status == "failed":
            log.error("run %s: %s", lease.run_id, message)
        wipe(self.storage.workdir(lease.run_id, lease.attempt))
        try:
            self.client.report_event(
                lease.project, lease.run_id, stage=stage, status=status, message=message
            )
        except BastionError as report_error:
            log.warning("run %s: could not report: %s", lease.run_id, report_error)

    def _setup(self) -> Setup:
        return Setup(
            cluster=self.config.cluster,
            url=self.config.url,
            ca_cert=self.config.ca_cert,
            storage=self.storage.root,
            keyring=self.keyring,
            home=self.settings.home_dir,
            import_roots=self.config.import_roots,
            private=self._private,
            sandbox=self.sandbox,
            isolation=self.sandbox_description,
            fanout=self._fanout_environment(),
        )

    def _start(self, lease: LeaseOut, gpus: tuple[int, ...] = ()) -> None:
        workdir = self.storage.workdir(lease.run_id, lease.attempt)
        request, staged = prepare(lease, workdir, self._setup(), gpus=gpus)
        handle = self.executor.start(request)
        if staged:
            log.info("run %s: verified and staged %s", lease.run_id, ", ".join(staged))
        model_hash = lease.inputs.get("model", {}).get("manifest_hash")
        with self.state.lock:
            self.state.jobs[lease.run_id] = _Running(
                handle=handle, lease=lease, model_hash=model_hash
            )

    def _offer_model(self, run_id: str, inputs: dict[str, Any]) -> None:
        """A deployment now wants another model version: stage it for the server to swap in."""
        with self.state.lock:
            job = self.state.jobs.get(run_id)
            wanted = inputs.get("model", {}).get("manifest_hash")
            if job is None or job.spec_type != "serve" or wanted in (None, job.model_hash):
                return
            job.model_hash = wanted  # one try per version: a refusal is reported, not retried
        threading.Thread(
            target=self._stage_swap, args=(job, inputs), name=f"swap-{run_id}", daemon=True
        ).start()

    def _stage_swap(self, job: _Running, inputs: dict[str, Any]) -> None:
        """Verify and decrypt the version and its training data next to the running server,
        then hand it over with ``swap.json``; the server verifies it again before swapping."""
        lease = job.lease.model_copy(update={"inputs": inputs})
        model = inputs["model"]
        folder = f"swap-{model['manifest_hash'][:16]}"
        workdir = job.handle.request.workdir
        ref = f"{model['name']}@{model['version']}"
        # Under the job's lock and only while it runs: a stop or supersede wipes the
        # attempt's plaintext holding the same lock, so nothing is decrypted after it.
        with job.sealing:
            if job.stopped:
                return
            try:
                stage_inputs(
                    lease,
                    workdir=workdir / folder,
                    storage=self.storage.root,
                    keyring=self.keyring,
                )
                serve_inputs(
                    lease,
                    workdir / folder,
                    storage=self.storage.root,
                    cluster=self.config.cluster,
                    keyring=self.keyring,
                )
            except (BastionError, OSError) as exc:
                log.error("run %s: cannot stage %s for a hot-swap: %s", job.lease.run_id, ref, exc)
                self._report(job, stage="serve", message=f"swap to {ref} refused: {exc}")
                return
        request = {"folder": folder, "model": ref}
        atomic_write_bytes(workdir / SWAP_REQUEST, json.dumps(request).encode(), mode=0o600)
        log.info("run %s: %s staged for a hot-swap", job.lease.run_id, ref)

    def _fanout_environment(self) -> dict[str, str]:
        """How wide a job may fan out (shadow models): this agent's own executor and width.

        A sandboxed job has no network, so it fans out in processes of its own sandbox. An
        unsandboxed Ray job also gets Ray's token so it can submit tasks (a cluster
        credential; it opens no data).
        """
        if self.sandbox is None and self.config.executor == "ray" and self.config.ray_address:
            granted = {FANOUT_ENV: f"ray:{self.config.ray_address}"}
            for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
                if name in os.environ:
                    granted[name] = os.environ[name]
            return granted
        return {FANOUT_ENV: f"local:{self.config.max_parallel}"}

    def _reap(self) -> None:
        """Collect finished jobs; fail runs whose process died or ran out of time."""
        with self.state.lock:
            items = list(self.state.jobs.items())
        for run_id, job in items:
            request = job.handle.request
            code = job.handle.poll()
            if code is not None and job.spec_type == "train":
                self._seal_checkpoints(job)  # what the job handed over before it ended
            if code is not None and job.spec_type == "serve":
                self._replay_audit(job)  # what a server that died could not deliver
            serving = job.spec_type == "serve"  # runs until stopped, not timed out
            if code is None and not serving and job.handle.elapsed() > request.timeout_seconds:
                job.handle.kill()
                reason = f"timed out after {request.timeout_seconds} s"
                self._fail(run_id, job, _with_limit(reason, job.handle.limit_reached()))
                code = -9
            elif code == EXIT_SEAL and not job.stopped:
                self._seal(job)
            elif code is not None and code not in _REPORTED and not job.stopped:
                self._fail(run_id, job, _with_limit(_exit_reason(code), job.handle.limit_reached()))
            if code is not None:
                wipe(request.workdir)
                with self.state.lock:
                    self.state.jobs.pop(run_id, None)

    def _replay_audit(self, job: _Running) -> None:
        """Deliver the audit events a server left in its spool; keep them if that fails."""
        spool = job.handle.request.workdir / SPOOL
        if not spool.is_file():
            return
        run_id = job.lease.run_id
        try:
            sent = replay_spool(
                spool,
                cluster=self.config.cluster,
                keyring=self.keyring,
                send=lambda batch: self.client.serving_audit(job.project, run_id, events=batch),
            )
            log.warning("run %s: delivered %d audit events the server had spooled", run_id, sent)
        except (BastionError, OSError, ValueError) as exc:
            kept = self.storage.root / "audit-spool" / f"{run_id}-{job.handle.request.attempt}"
            ensure_private_dir(kept.parent)
            spool.replace(kept)
            log.error(
                "run %s: spooled audit events not delivered (%s); kept in %s", run_id, exc, kept
            )

    def _seal(self, job: _Running) -> None:
        """Encrypt, sign and record the version the job left; then end the run."""
        lease = job.lease
        try:
            version = seal_outputs(
                lease,
                workdir=job.handle.request.workdir,
                storage=self.storage.root,
                keyring=self.keyring,
                client=self.client,
                cluster=self.config.cluster,
            )
        except (BastionError, OSError) as exc:
            self._report_end(lease, stage="seal", status="failed", message=f"sealing failed: {exc}")
            return
        if version["kind"] == "code":
            self._report_end(
                lease,
                stage="seal",
                status="succeeded",
                message=(
                    f"registered code {version['name']}@{version['version']}: "
                    f"{version['files']} files checked, manifest {version['manifest_hash'][:16]}, "
                    "encrypted and signed"
                ),
            )
            return
        if version["kind"] == "export":
            self._report_end(
                lease,
                stage="seal",
                status="succeeded",
                message=(
                    f"exported model {version['name']}@{version['version']} to "
                    f"{version['path']} (encrypted to its cluster, signed by this one)"
                ),
            )
            return
        size = f"{version['row_count']} rows, " if version["kind"] == "dataset" else ""
        if version.get("shredded_parent"):
            size = f"{size}the version it replaces shredded, "
        self._report_end(
            lease,
            stage="seal",
            status="succeeded",
            message=(
                f"registered {version['kind']} {version['name']}@{version['version']}: {size}"
                f"manifest {version['manifest_hash'][:16]}, encrypted and signed"
            ),
        )

    def _fail(self, run_id: str, job: _Running, reason: str) -> None:
        try:
            self.client.report_event(
                job.project, run_id, stage=job.spec_type, status="failed", message=reason
            )
        except BastionError as exc:  # already ended, cancelled or fenced off
            log.info("run %s: could not report failure: %s", run_id, exc)


#: Exit codes after which the job has already told the control plane how it ended.
_REPORTED = frozenset({0, EXIT_REPORTED_FAILURE, EXIT_FENCED})


def _with_limit(reason: str, limit: str | None) -> str:
    return reason if limit is None else f"{reason}; {limit}"


def _exit_reason(code: int) -> str:
    if code < 0:
        name = (
            signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        )
        return f"job process killed by {name} (a resource limit, or the system's OOM killer)"
    return f"job process died with exit code {code} before reporting (see job.log; memory limit?)"


def run_agent(config: AgentConfig, settings: Settings, *, join_token: str | None) -> Agent:
    agent = Agent(config, settings)
    agent.join(join_token)
    return agent
