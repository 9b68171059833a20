"""What the agent does around a job that touches data: stage in, seal out, wipe.

The agent holds the keyring; jobs do not. Before a job that reads a dataset version
starts, the agent verifies the version (manifest hash, signature, every file's
content) and decrypts it into the job's private ``inputs/``. A job that makes a
version writes plaintext to ``outputs/`` with a ``version.json`` request and exits
with :data:`EXIT_SEAL`; the agent then encrypts and signs it (the data and its exact
schema), records the version in the control plane with the published schema, and ends
the run. Plaintext is removed when the job ends.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bastion.agent.code_staging import CODE, CodeRequest, seal_code
from bastion.client import Client, LeaseOut
from bastion.data.layout import DATA_FILES, SCHEMA_FILE
from bastion.data.publish import unpublished_columns
from bastion.data.schema import parse_schema
from bastion.errors import IntegrityError, InvalidInput
from bastion.files import atomic_write_bytes, ensure_private_dir
from bastion.security.envelope import shred_file
from bastion.security.keys import Keyring
from bastion.security.sealed import Artifact, open_sealed, seal
from bastion.security.signing import signature_path_for
from bastion.security.transfer import read_transfer, write_transfer

__all__ = [
    "INPUTS",
    "OUTPUTS",
    "SEALING",
    "SealRequest",
    "check_source",
    "open_transfer",
    "seal_checkpoints",
    "seal_outputs",
    "stage_inputs",
    "wipe",
]

#: What each staged input role is (anything else is a dataset version).
_ARTIFACTS: dict[str, Artifact] = {
    "checkpoint": "checkpoint",
    "model": "model",
    "init": "model",
    "code": "code",
}
#: Inputs that are not stored artifacts: keys for a transfer, a push sealed to this cluster.
_NOT_STORED = frozenset({"transfer", "code_upload", "federation"})
INPUTS = "inputs"
OUTPUTS = "outputs"
#: Where a training job moves each finished checkpoint for the agent to seal.
SEALING = "sealing"
REQUEST = "version.json"


class SealRequest(BaseModel):
    """A job's request to seal ``outputs/`` as a new dataset version (metadata only)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    kind: Literal["table", "images"]
    rows: int = Field(ge=0)
    schema_: dict[str, Any] = Field(alias="schema")
    summaries: dict[str, Any]


class ModelRequest(BaseModel):
    """A training job's request to seal ``outputs/model/`` as a new model version."""

    model_config = ConfigDict(extra="forbid")

    artifact: Literal["model"]
    name: str
    evidence: dict[str, Any]


def check_source(given: str, *, import_roots: tuple[Path, ...], private: tuple[Path, ...]) -> Path:
    """A file a job reads from the host: inside an import root, outside the agent's own files."""
    source = Path(given)
    if not source.is_absolute():
        raise InvalidInput(f"{given}: give an absolute path on the agent's host")
    resolved = source.resolve()
    for inner in private:
        if resolved.is_relative_to(inner.resolve()):
            raise InvalidInput(f"{given}: lies in the agent's own files; it cannot be imported")
    if not import_roots:
        raise InvalidInput("this agent accepts no imported files; start it with --import-root DIR")
    if not any(resolved.is_relative_to(root.resolve()) for root in import_roots):
        allowed = ", ".join(str(root) for root in import_roots)
        raise InvalidInput(
            f"{given}: outside the agent's import roots ({allowed}); move the file under one, "
            "or start the agent with --import-root DIR ('bastion up --import-root DIR')"
        )
    if not resolved.is_file():
        raise InvalidInput(f"{given}: no such file on the agent's host")
    return resolved


def stage_inputs(lease: LeaseOut, *, workdir: Path, storage: Path, keyring: Keyring) -> list[str]:
    """Verify and decrypt every dataset version the run reads; return what was staged.

    Raises :class:`IntegrityError` / :class:`SignatureError` for a tampered version:
    the job never starts on data that does not verify.
    """
    staged = []
    for role, info in sorted(lease.inputs.items()):
        if role in _NOT_STORED:
            continue
        open_sealed(
            storage,
            keyring=keyring,
            artifact=_ARTIFACTS.get(role, "dataset"),
            project=lease.project,
            name=info["name"],
            manifest_hash=info["manifest_hash"],
            into=workdir / INPUTS / role,
        )
        (workdir / INPUTS / role / "version.json").write_text(json.dumps(info))
        staged.append(f"{role} {info['name']}@{info['version']}")
    return staged


class ExportRequest(BaseModel):
    """A job's request to write the staged model as a transfer file for another cluster."""

    model_config = ConfigDict(extra="forbid")

    artifact: Literal["export"]


def open_transfer(
    lease: LeaseOut, *, workdir: Path, keyring: Keyring, cluster: str, source: Path
) -> str:
    """Verify and open an import's transfer file into ``inputs/model`` (see security.transfer)."""
    header = read_transfer(
        source,
        keyring=keyring,
        recipient=cluster,
        trusted_senders=lease.inputs["transfer"]["trusted_senders"],
        into=workdir / INPUTS / "model",
    )
    info = {key: header[key] for key in ("sender", "model", "files")}
    atomic_write_bytes(workdir / INPUTS / "transfer.json", json.dumps(info).encode())
    return f"transfer from {header['sender']} ({len(header['files'])} files) verified"


def _request(workdir: Path) -> SealRequest | ModelRequest | ExportRequest | CodeRequest:
    try:
        body = (workdir / OUTPUTS / REQUEST).read_bytes()
        artifact = json.loads(body).get("artifact")
        if artifact == "code":
            return CodeRequest.model_validate_json(body)
        if artifact == "model":
            return ModelRequest.model_validate_json(body)
        if artifact == "export":
            return ExportRequest.model_validate_json(body)
        return SealRequest.model_validate_json(body)
    except (OSError, ValueError, AttributeError) as exc:
        raise IntegrityError(f"the job left no valid {OUTPUTS}/{REQUEST} ({exc})") from None


def seal_checkpoints(
    lease: LeaseOut, *, workdir: Path, storage: Path, keyring: Keyring
) -> list[tuple[int, str]]:
    """Seal every checkpoint the job handed over; return (epoch, manifest hash) in order.

    The plaintext is removed once sealed. The caller reports each one to the control
    plane, which is what a later attempt resumes from.
    """
    pending = workdir / SEALING
    if not pending.is_dir():
        return []
    done = []
    ready = sorted(
        (int(d.name.split("-")[1]), d) for d in pending.iterdir() if d.name.startswith("epoch-")
    )
    for epoch, directory in ready:
        sealed = seal(
            {f.name: f for f in sorted(directory.iterdir()) if f.is_file()},
            root=storage,
            keyring=keyring,
            artifact="checkpoint",
            project=lease.project,
            name=lease.run_id,
            kind="checkpoint",
            rows=epoch,
            run_id=lease.run_id,
        )
        shutil.rmtree(directory)
        done.append((epoch, sealed.manifest_hash))
    return done


def _seal_model(
    lease: LeaseOut,
    request: ModelRequest,
    *,
    workdir: Path,
    storage: Path,
    keyring: Keyring,
    client: Client,
) -> dict[str, Any]:
    if request.name != lease.spec["job"]["model_name"]:
        raise IntegrityError(f"the job asked to seal model {request.name!r}, not the run's model")
    folder = workdir / OUTPUTS / "model"
    files = {f.name: f for f in sorted(folder.iterdir()) if f.is_file()} if folder.is_dir() else {}
    if "weights.safetensors" not in files:
        raise IntegrityError(f"the job left no {OUTPUTS}/model/weights.safetensors to seal")
    sealed = seal(
        files,
        root=storage,
        keyring=keyring,
        artifact="model",
        project=lease.project,
        name=request.name,
        kind="pytorch",
        run_id=lease.run_id,
    )
    signature = signature_path_for(sealed.directory / "manifest.json").read_text()
    recorded = client.record_model_version(
        lease.project,
        request.name,
        {
            "run_id": lease.run_id,
            "manifest_hash": sealed.manifest_hash,
            "signature": signature,
            "evidence": request.evidence,
        },
    )
    return {**recorded.model_dump(), "kind": "model", "name": request.name}


def _export(
    lease: LeaseOut, *, workdir: Path, storage: Path, keyring: Keyring, cluster: str
) -> dict[str, Any]:
    job, transfer = lease.spec["job"], lease.inputs["transfer"]
    name, version = job["model"].split("@")
    folder = workdir / INPUTS / "model"
    files = {
        f.name: f for f in sorted(folder.iterdir()) if f.is_file() and f.name != "version.json"
    }
    out = (
        storage / "exports" / lease.project / f"{name}-v{version}-to-{transfer['recipient']}.bxfer"
    )
    ensure_private_dir(out.parent)
    write_transfer(
        files,
        out=out,
        keyring=keyring,
        sender=cluster,
        recipient=transfer["recipient"],
        recipient_keyset=transfer["recipient_keyset"],
        meta={"model": {"project": lease.project, "name": name, "version": int(version)}},
    )
    return {"kind": "export", "name": name, "version": int(version), "path": str(out)}


def seal_outputs(
    lease: LeaseOut,
    *,
    workdir: Path,
    storage: Path,
    keyring: Keyring,
    client: Client,
    cluster: str,
) -> dict[str, Any]:
    """Seal the job's outputs as a new version and record it; return the recorded version."""
    request = _request(workdir)
    if isinstance(request, CodeRequest):
        return seal_code(
            lease, request, workdir=workdir, storage=storage, keyring=keyring, client=client
        )
    if isinstance(request, ExportRequest):
        return _export(lease, workdir=workdir, storage=storage, keyring=keyring, cluster=cluster)
    if isinstance(request, ModelRequest):
        return _seal_model(
            lease, request, workdir=workdir, storage=storage, keyring=keyring, client=client
        )
    spec_job = lease.spec["job"]
    expected = spec_job["dataset"].split("@")[0]
    if request.dataset != expected:
        raise IntegrityError(
            f"the job asked to seal {request.dataset!r}, but the run makes {expected!r}"
        )
    data = workdir / OUTPUTS / DATA_FILES[request.kind]
    kept_schema = workdir / OUTPUTS / SCHEMA_FILE
    for required in (data, kept_schema):
        if not required.is_file():
            raise IntegrityError(f"the job left no {OUTPUTS}/{required.name} to seal")
    _check_published(request)
    sealed = seal(
        {data.name: data, kept_schema.name: kept_schema},
        root=storage,
        keyring=keyring,
        artifact="dataset",
        project=lease.project,
        name=request.dataset,
        kind=request.kind,
        rows=request.rows,
        run_id=lease.run_id,
    )
    signature = signature_path_for(sealed.directory / "manifest.json").read_text()
    shredded = False
    if spec_job["type"] == "erase":  # the replacement is sealed: destroy the old version's keys
        shredded = _shred_replaced(lease, storage=storage)
    recorded = client.record_dataset_version(
        lease.project,
        request.dataset,
        {
            "run_id": lease.run_id,
            "schema": request.schema_,
            "row_count": request.rows,
            "manifest_hash": sealed.manifest_hash,
            "signature": signature,
            "summaries": request.summaries,
            "shredded_parent": shredded,
        },
    )
    return {
        **recorded.model_dump(),
        "kind": "dataset",
        "name": request.dataset,
        "shredded_parent": shredded,
    }


def _check_published(request: SealRequest) -> None:
    """The schema the job asks to report must be the published one: no value of an
    identifier column leaves the compute plane (the control plane checks it again)."""
    try:
        schema = parse_schema(request.schema_)
    except InvalidInput as exc:
        raise IntegrityError(f"the job reported an unreadable schema ({exc})") from None
    listed = request.summaries.get("identifier_columns", [])
    exposed = unpublished_columns(schema, identifiers=listed if isinstance(listed, list) else [])
    if exposed:
        raise IntegrityError(
            f"the job reported a schema with values that may not leave the compute plane "
            f"({', '.join(exposed)}); nothing was sealed or recorded"
        )


def _shred_replaced(lease: LeaseOut, *, storage: Path) -> bool:
    """Crypto-shred every file of the erased version unless a retention hold applies."""
    info = lease.inputs["input"]
    if info.get("retention_hold"):
        return False
    directory = storage / "datasets" / lease.project / info["name"] / info["manifest_hash"]
    files = sorted(directory.glob("*.bst"))
    if not files:
        raise IntegrityError(f"{info['name']}@{info['version']}: no sealed files to shred")
    for path in files:
        shred_file(path)
    return True


#: Where an attempt's plaintext lives: what it read, what it made, its checkpoints before
#: and after the hand-over. A serve job's hot-swaps stage into ``swap-*`` folders beside them.
PLAINTEXT = (INPUTS, OUTPUTS, SEALING, "checkpoints", CODE)
SWAP_FOLDERS = "swap-*"


def wipe(workdir: Path) -> bool:
    """Remove the plaintext a job saw or made; say whether there was any.

    What stays (``job.json``, ``job.log``, small results) holds no rows or weights.
    """
    found = [workdir / name for name in PLAINTEXT if (workdir / name).exists()]
    found += [path for path in workdir.glob(SWAP_FOLDERS) if path.is_dir()]
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return bool(found)
