"""The ``serve`` job: verify the staged model, fit its guards, serve until the run stops.

The agent has verified and decrypted the model version and the dataset it was trained
on into the job's folder, with the version's signed manifest and the cluster's public
keys; nothing here holds a key that opens data. The job refreshes its key records and
uploads its audit events through its own job token; when the run is stopped or
superseded that token is refused and the server shuts down, draining its audit trail.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import uvicorn

from bastion.agent.data_jobs import staged_input
from bastion.agent.staging import INPUTS
from bastion.errors import BastionError, Conflict, InvalidInput, NotAuthorized, ServiceUnavailable
from bastion.inference.app import Loaded, ServeState, create_serve_app
from bastion.inference.guards.auth import KeyRecord, KeyStore
from bastion.inference.guards.ratelimit import make_limiter
from bastion.inference.model import load_verified
from bastion.inference.request_audit import SPOOL, AuditWriter
from bastion.inference.runtime import fit_guards
from bastion.inference.staged import SWAP_REQUEST
from bastion.spec import ServeJob
from bastion.train.data import Split, split_rows
from bastion.train.device import describe_device, job_device

if TYPE_CHECKING:
    from bastion.agent.job import JobContext

__all__ = ["run_serve"]

log = logging.getLogger("bastion.inference")
#: How often key records are refreshed (a revocation takes effect within this).
KEY_REFRESH_SECONDS = 2.0
#: How often the server looks for a version the agent staged for a hot-swap.
SWAP_POLL_SECONDS = 0.5


def _records(raw: list[dict[str, Any]]) -> list[KeyRecord]:
    return [
        KeyRecord(
            id=r["id"],
            secret_hash=r["secret_hash"],
            scopes=frozenset(r["scopes"]),
            rate=r["rate"],
            burst=r["burst"],
            quota=r["quota"],
            expires_at=dt.datetime.fromisoformat(r["expires_at"]) if r["expires_at"] else None,
            revoked=bool(r["revoked"]),
            owner=r.get("owner"),
        )
        for r in raw
    ]


def _load(
    root: Path,
    job: ServeJob,
    keys_pem: list[bytes],
    log_line: Callable[[str], None],
    *,
    device: torch.device,
) -> Loaded:
    """The model staged under ``root`` with its guards, on ``device`` (the GPU when the
    deployment was given one); its training rows are then removed."""
    # (1) The model must verify against its signed manifest before anything loads it.
    served = load_verified(root / INPUTS / "model", public_keys=keys_pem, device=device)
    log_line(
        f"{served.ref}: manifest {served.manifest_hash[:12]} and every file verified; "
        f"runs on {describe_device(device)}"
    )
    # (2) Guards are fitted on the rows the model was trained on; held-out rows calibrate.
    data, _ = staged_input(root)
    x, y = served.prep.features(data), served.prep.labels(data)
    recorded = Split.model_validate(served.metadata["split"])
    split, train_rows, test_rows = split_rows(y, holdout=recorded.holdout, seed=recorded.seed)
    if split.train_index_sha256 != recorded.train_index_sha256:
        raise InvalidInput(f"the staged data does not split into the rows {served.ref} saw")
    loaded = fit_guards(
        served,
        x_train=x[torch.as_tensor(train_rows)],
        y_train=y[torch.as_tensor(train_rows)],
        x_holdout=x[torch.as_tensor(test_rows)],
        config=job.serve,
    )
    checked = loaded.detector.held_out if loaded.detector is not None else None
    if checked is not None:
        log_line(
            f"input detector: flags {checked.flagged:.1%} of {checked.rows} clean rows its "
            f"thresholds were not set on (budget {job.serve.ood_fpr:.1%})"
        )
    # (3) The plaintext rows are not needed once the guards are fitted.
    shutil.rmtree(root / INPUTS / "input", ignore_errors=True)
    return loaded


def _listening_socket(host: str, port: int, *, shared: bool) -> socket.socket:
    """The server's socket, bound and listening before the run says where it serves: a
    caller that connects as soon as it reads "serving" waits in the backlog instead of
    being refused. The replicas of one deployment share the port (``shared``: the kernel
    spreads connections between them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        listening.bind((host, port))
        listening.listen(2048)
    except OSError:
        listening.close()
        raise
    return listening


def _swap_if_asked(
    context: JobContext, job: ServeJob, state: ServeState, keys_pem: list[bytes], where: str
) -> None:
    """Swap in the version the agent staged (``swap.json``), once it verifies and loads."""
    request_file = context.workdir / SWAP_REQUEST
    if not request_file.is_file():
        return
    request = json.loads(request_file.read_text())
    request_file.unlink()
    root = context.workdir / request["folder"]
    try:
        loaded = _load(root, job, keys_pem, context.log, device=job_device(context.gpus))
    except (BastionError, OSError, ValueError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        context.event("serve", "running", f"swap to {request['model']} refused: {exc}")
        return
    previous = state.current.served.ref
    state.swap(loaded)
    context.log(f"hot-swapped {previous} -> {loaded.served.ref}; no request was dropped")
    context.event("serve", "running", f"serving {loaded.served.ref} at {where}")


def _server(state: ServeState, job: ServeJob) -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn.Config(
            create_serve_app(state),
            host=job.host,
            port=job.port,
            ssl_certfile=job.tls_cert,
            ssl_keyfile=job.tls_key,
            log_level="warning",
            access_log=False,  # the audit trail records requests, without their bodies
            proxy_headers=False,  # the client address is the socket's, not a header's claim
        )
    )


def run_serve(context: JobContext, job: ServeJob) -> str:
    device = job_device(context.gpus)  # first: a deployment given a GPU that finds none fails
    manifest = json.loads((context.workdir / "job.json").read_text())
    keys_pem = [pem.encode() for pem in manifest["signing_public_keys"]]
    loaded = _load(context.workdir, job, keys_pem, context.log, device=device)
    stop = threading.Event()
    findings: list[dict[str, Any]] = []
    findings_lock = threading.Lock()

    def sink(events: list[dict[str, Any]]) -> None:
        with findings_lock:
            pending = list(findings)
            findings.clear()
        try:
            context.client.serving_audit(
                context.project, context.run_id, events=events, findings=pending
            )
        except BaseException:
            with findings_lock:
                findings[:0] = pending
            raise

    keys = KeyStore()
    keys.replace(_records(context.client.serving_keys(context.project, context.run_id)))
    audit = AuditWriter(
        sink=sink,
        spool=context.workdir / SPOOL,
        cluster=manifest["cluster"],
        cluster_keyset=manifest["hybrid_public_keyset"],
    )
    state = ServeState(
        config=job.serve,
        keys=keys,
        limiter=make_limiter(job.redis_url, namespace=job.deployment),
        audit=audit,
        current=loaded,
        report=lambda kind, details: findings.append({"kind": kind, **details}),
    )
    server = _server(state, job)

    def refresh() -> None:
        while not stop.wait(KEY_REFRESH_SECONDS):
            try:
                keys.replace(_records(context.client.serving_keys(context.project, context.run_id)))
            except (Conflict, NotAuthorized):  # stopped, or a newer attempt took over
                server.should_exit = True
                return
            except (ServiceUnavailable, BastionError) as exc:
                log.warning("serving keys not refreshed: %s", exc)

    where = f"{'https' if job.tls_cert else 'http'}://{job.host}:{job.port}"

    def swaps() -> None:
        while not stop.wait(SWAP_POLL_SECONDS):
            _swap_if_asked(context, job, state, keys_pem, where)

    # Bound before anything starts, so a port already taken fails the run cleanly.
    listening = _listening_socket(job.host, job.port, shared=job.replicas > 1)
    audit.start()
    threading.Thread(target=refresh, name="key-refresh", daemon=True).start()
    threading.Thread(target=swaps, name="hot-swap", daemon=True).start()
    context.event("serve", "running", f"serving {loaded.served.ref} at {where}")
    try:
        server.run(sockets=[listening])
    finally:
        listening.close()
        stop.set()
        try:
            audit.close()
        except BastionError as exc:
            log.error("audit trail not drained: %s", exc)
    return f"deployment {job.deployment} stopped; {audit.sent} requests audited"
