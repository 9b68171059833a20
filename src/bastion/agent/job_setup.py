"""What a leased run needs before its job starts: its inputs verified and staged, its
manifest, its environment and what its sandbox shows it.

The agent's loop (:mod:`bastion.agent.loop`) leases runs and supervises jobs; this module
turns one lease into the :class:`~bastion.agent.executors.JobRequest` an executor starts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.agent.code_staging import open_upload, stage_code
from bastion.agent.executors import JobRequest
from bastion.agent.relay import RelayTarget
from bastion.agent.staging import INPUTS, check_source, open_transfer, stage_inputs
from bastion.client import LeaseOut
from bastion.errors import InvalidInput
from bastion.federated import endorse
from bastion.federated.federation import federated_environment
from bastion.federated.tls import link_certificates, site_key
from bastion.files import atomic_write_bytes
from bastion.inference.staged import copy_signed_manifest
from bastion.security.keys import Keyring
from bastion.security.sandbox import Limits, Sandbox
from bastion.security.sealed import sealed_dir
from bastion.security.transfer import open_for_cluster

__all__ = [
    "FEDERATED_JOBS",
    "Setup",
    "gpu_environment",
    "job_environment",
    "job_network",
    "prepare",
    "serve_inputs",
    "tls_files",
]

#: Job types that run in the federated (Flower) environment.
FEDERATED_JOBS = ("federated", "federated-site")


@dataclass(frozen=True)
class Setup:
    """What the agent knows that a job's setup needs."""

    cluster: str
    url: str
    ca_cert: str | None
    storage: Path
    keyring: Keyring
    home: Path
    import_roots: tuple[Path, ...]
    #: What no job may see or name: the agent's home, its storage root, the user's home.
    private: tuple[Path, ...]
    sandbox: Sandbox | None
    isolation: str
    #: How wide a job may fan out (``FANOUT_ENV`` and, for Ray, its credentials).
    fanout: dict[str, str]


def prepare(
    lease: LeaseOut, workdir: Path, setup: Setup, *, gpus: tuple[int, ...] = ()
) -> tuple[JobRequest, list[str]]:
    """Verify and stage the run's inputs in ``workdir``, write its manifest, and say how to
    start it; also what was staged (for the log). ``gpus`` are the host indices of the GPUs
    the agent gives the job. Refuses with a ``BastionError`` (a tampered or missing input,
    a refused source) or an ``OSError`` (storage)."""
    spec = lease.spec
    manifest: dict[str, Any] = {
        "run_id": lease.run_id,
        "project": lease.project,
        "attempt": lease.attempt,
        "spec": spec,
        "isolation": setup.isolation,
        "resume_from": lease.resume_from,
        "inputs_root": str(setup.storage / "inputs"),
    }
    job = spec["job"]
    # Data jobs: the source must be importable and every input must verify first.
    staged = []
    readonly = [setup.storage / "inputs"] if (setup.storage / "inputs").is_dir() else []
    if job["type"] in ("ingest", "import-model"):
        source = check_source(
            job["source"], import_roots=setup.import_roots, private=(setup.home, setup.storage)
        )
        readonly.append(source)
        if job["type"] == "import-model":
            staged.append(
                open_transfer(
                    lease,
                    workdir=workdir,
                    keyring=setup.keyring,
                    cluster=setup.cluster,
                    source=source,
                )
            )
    if job["type"] == "register-code":
        staged.append(
            open_upload(lease, workdir=workdir, keyring=setup.keyring, cluster=setup.cluster)
        )
    staged += stage_inputs(lease, workdir=workdir, storage=setup.storage, keyring=setup.keyring)
    code = stage_code(workdir)  # verified against its signed tree, then read-only
    if code is not None:
        readonly.append(code)
        manifest["code"] = str(code)
    if job["type"] == "serve":
        manifest.update(
            serve_inputs(
                lease, workdir, storage=setup.storage, cluster=setup.cluster, keyring=setup.keyring
            )
        )
        readonly += tls_files(job, setup.private)
    command: tuple[str, ...] = ()
    if job["type"] in FEDERATED_JOBS:  # Flower's own environment, and the link's port
        manifest["federation"] = {
            **dict(lease.inputs.get("federation") or {}),
            "endorsement": federation_material(job, workdir, lease.run_id, setup.keyring),
        }
        environment_root = federated_environment()
        readonly.append(environment_root.resolve())
        python = str(environment_root / "bin" / "python")
        command = (python, "-m", "bastion.agent.job", str(workdir))
    atomic_write_bytes(workdir / "job.json", json.dumps(manifest).encode(), mode=0o600)
    environment = job_environment(workdir)
    if job["type"] in ("pseudonymize", "erase"):  # this key alone; opens and signs nothing
        environment["BASTION_PSEUDONYM_KEY"] = setup.keyring.pseudonym_capability()
    if job["type"] == "erase":  # the subject, sealed to this cluster by the control plane
        subject = open_for_cluster(
            job["subject"], purpose="erasure", recipient=setup.cluster, keyring=setup.keyring
        )
        environment["BASTION_ERASE_SUBJECT"] = subject.decode()
    if command:
        environment["BASTION_FEDERATED_ENV"] = command[0].rsplit("/bin/", 1)[0]
    environment.update(setup.fanout)
    environment.update(gpu_environment(gpus))
    resources = spec.get("resources", {})
    request = JobRequest(
        run_id=lease.run_id,
        attempt=lease.attempt,
        workdir=workdir,
        environment=environment,
        timeout_seconds=int(resources.get("timeout_seconds", 3600)),
        limits=Limits(
            memory_mb=int(resources.get("memory_mb", 4096)),
            cpu_seconds=resources.get("cpu_seconds"),
            processes=int(resources.get("processes", 512)),
            file_mb=int(resources.get("file_mb", 64 << 10)),
            address_space=not gpus,
        ),
        relay=RelayTarget(
            url=setup.url,
            verify=setup.ca_cert or True,
            token=lease.job_token,
            project=lease.project,
            run_id=lease.run_id,
            # A site's SuperNode reaches the aggregator through the relay's link socket.
            link=job["type"] == "federated-site",
        ),
        sandbox=setup.sandbox,
        readonly=tuple(readonly),
        network=job_network(str(job["type"])),
        command=command,
        gpus=gpus,
        cpus=int(resources.get("workers", 1)) * int(resources.get("cpus_per_worker") or 1),
        workers=int(resources.get("workers", 1)),
        restarts=int(resources.get("restarts", 2)),
    )
    return request, staged


#: Job types whose sandbox keeps the host's network: an inference server's and a federated
#: aggregator's listening port (still no keys, no files). Every other job has none; a
#: federated site reaches its aggregator through the relay's link socket.
NETWORKED_JOBS = frozenset({"serve", "federated"})


def job_network(job_type: str) -> bool:
    """Whether a job of this type keeps the host's network (:data:`NETWORKED_JOBS`)."""
    return job_type in NETWORKED_JOBS


def federation_material(job: dict[str, Any], workdir: Path, run_id: str, keyring: Keyring) -> str:
    """What a federated job tells the others, made here where the cluster's signing key is:
    the aggregator's CA and link certificate (``federation/tls``), a site's SuperNode key
    pair (``keys``); the private halves stay in the job's folder. The cluster's endorsement
    of the public half (the CA certificate, the node's public key) for this run."""
    if job["type"] == "federated":
        made = link_certificates(workdir / "federation" / "tls", host=str(job["host"]))
        material = made.ca.read_text()
    else:
        _, public = site_key(workdir / "keys", str(job["site"]))
        material = public.read_text()
    return endorse.endorse(keyring.signer().sign, run_id=run_id, material=material)


def gpu_environment(gpus: tuple[int, ...]) -> dict[str, str]:
    """What CUDA in the job may use: the GPUs it was given, by host index, and none (an
    empty ``CUDA_VISIBLE_DEVICES``) for a job given none. Indices in PCI bus order, the
    order ``nvidia-smi`` and the device nodes use."""
    return {
        "CUDA_VISIBLE_DEVICES": ",".join(str(index) for index in gpus),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }


def tls_files(job: dict[str, Any], private: tuple[Path, ...]) -> list[Path]:
    """An inference server's certificate and key, shown read-only to its sandbox; never a
    file of the agent's own."""
    files = []
    for field_name in ("tls_cert", "tls_key"):
        given = job.get(field_name)
        if not given:
            continue
        path = Path(given)
        if not path.is_absolute() or not path.is_file():
            raise InvalidInput(f"{field_name} {given}: no such file on the agent's host")
        resolved = path.resolve()
        if any(resolved.is_relative_to(p.resolve()) for p in private):
            raise InvalidInput(
                f"{field_name} {given}: lies in the agent's own files or the home "
                "directory; give the server a certificate folder of its own"
            )
        files.append(resolved)
    return files


def serve_inputs(
    lease: LeaseOut, workdir: Path, *, storage: Path, cluster: str, keyring: Keyring
) -> dict[str, Any]:
    """An inference server checks its model again itself: give it the signed manifest and
    this cluster's public keys (public halves only)."""
    info = lease.inputs["model"]
    sealed = sealed_dir(
        storage,
        artifact="model",
        project=lease.project,
        name=info["name"],
        manifest_hash=info["manifest_hash"],
    )
    copy_signed_manifest(sealed, workdir / INPUTS / "model")
    return {
        "cluster": cluster,
        "signing_public_keys": [k.public_pem.decode() for k in keyring.signing_keys()],
        "hybrid_public_keyset": keyring.hybrid_public_keyset(),
    }


#: Thread-count settings an agent's operator may give its jobs (a number each, nothing else).
THREAD_SETTINGS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def job_environment(workdir: Path) -> dict[str, str]:
    """A minimal environment: no credential at all (the relay holds the job's token), no
    master key, no inherited secrets. Of the agent's own environment only ``PATH`` and the
    thread counts of :data:`THREAD_SETTINGS` (when each is a plain number): on a host whose
    agent runs several jobs at once, ``OMP_NUM_THREADS=1`` keeps each job's PyTorch from
    spreading over every core (oversubscribed, its small operations wait on each other)."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(workdir),
        "TMPDIR": "/tmp",  # noqa: S108 - the sandbox's own private /tmp
        "BASTION_HOME": str(workdir / ".bastion"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for name in THREAD_SETTINGS:
        value = os.environ.get(name, "")
        if value.isdigit() and 0 < int(value) <= 1024:
            environment[name] = value
    return environment
