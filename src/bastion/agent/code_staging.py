"""What the agent does with users' code: open a push, seal it, stage it read-only into jobs.

A push arrives sealed to this cluster's HPKE key (``inputs.code_upload``). The agent opens
it into the register job's ``inputs/code-upload/``; the job (sandboxed) unpacks it under the
package rules and leaves ``outputs/``; the agent checks the result again itself, seals the
archive and its tree manifest (encrypted, signed with the cluster key) and records the
version. A run that names the version gets it verified (signature, every file's hash) and
unpacked into ``code/`` in its attempt folder, bound read-only into its sandbox.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from bastion.client import Client, LeaseOut
from bastion.code.archive import read_tree, tree_manifest, unpack, verify_tree
from bastion.errors import IntegrityError
from bastion.files import atomic_write_bytes, ensure_private_dir
from bastion.security.keys import Keyring
from bastion.security.sealed import seal
from bastion.security.signing import signature_path_for
from bastion.security.transfer import open_for_cluster

__all__ = [
    "ARCHIVE",
    "CODE",
    "TREE",
    "UPLOAD",
    "CodeRequest",
    "declared_files",
    "open_upload",
    "seal_code",
    "stage_code",
]

#: The attempt folder's read-only code (a run that names a package).
CODE = "code"
#: Where a register job finds the opened push.
UPLOAD = "inputs/code-upload"
ARCHIVE = "package.tar.gz"
TREE = "tree.json"


class CodeRequest(BaseModel):
    """A register job's request to seal ``outputs/`` as the pushed code version."""

    model_config = ConfigDict(extra="forbid")

    artifact: Literal["code"]
    name: str
    version: int


def open_upload(lease: LeaseOut, *, workdir: Path, keyring: Keyring, cluster: str) -> str:
    """Open the pushed archive sealed to this cluster into ``inputs/code-upload/``."""
    upload = lease.inputs.get("code_upload")
    if not upload:
        raise IntegrityError("the control plane sent no pushed code to register")
    archive = open_for_cluster(upload["sealed"], purpose="code", recipient=cluster, keyring=keyring)
    if hashlib.sha256(archive).hexdigest() != upload["archive_sha256"]:
        raise IntegrityError("the pushed archive differs from the one its pusher hashed")
    folder = ensure_private_dir(workdir / UPLOAD)
    atomic_write_bytes(folder / ARCHIVE, archive)
    declared = {"files": upload["files"], "archive_sha256": upload["archive_sha256"]}
    atomic_write_bytes(folder / "declared.json", json.dumps(declared).encode())
    return f"pushed code ({len(upload['files'])} files) opened"


def declared_files(files: list[dict[str, Any]]) -> set[tuple[str, str, int]]:
    """A pushed file list as comparable (path, sha256, size) entries."""
    return {(str(f["path"]), str(f["sha256"]), int(f["size"])) for f in files}


def seal_code(
    lease: LeaseOut,
    request: CodeRequest,
    *,
    workdir: Path,
    storage: Path,
    keyring: Keyring,
    client: Client,
) -> dict[str, Any]:
    """Check the register job's output again here, seal and sign it, record the version.

    (1) It must be the version the run registers.
    (2) The archive must be the one pushed (its hash), and unpack under the rules into
        exactly the declared files (the job ran on hostile input: its word is not taken).
    (3) Sealed: the archive and its tree manifest, encrypted and signed with this cluster's
        key; the control plane records the manifest hash and the files.
    """
    job = lease.spec["job"]
    # (1) ...
    if (request.name, request.version) != (job["name"], int(job["version"])):
        raise IntegrityError("the job asked to seal another code version than the run's")
    # (2) ...
    archive = workdir / "outputs" / ARCHIVE
    declared = json.loads((workdir / UPLOAD / "declared.json").read_text())
    body = archive.read_bytes()
    if hashlib.sha256(body).hexdigest() != declared["archive_sha256"]:
        raise IntegrityError("the archive left to seal is not the one pushed")
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".check-") as folder:
        records = unpack(body, Path(folder))
    found = {(r.path, r.sha256, r.size) for r in records}
    if found != declared_files(declared["files"]):
        raise IntegrityError("the pushed archive does not hold the files its pusher listed")
    tree = workdir / "outputs" / TREE
    atomic_write_bytes(tree, tree_manifest(records))
    # (3) ...
    sealed = seal(
        {ARCHIVE: archive, TREE: tree},
        root=storage,
        keyring=keyring,
        artifact="code",
        project=lease.project,
        name=request.name,
        kind="python",
        rows=len(records),
        run_id=lease.run_id,
    )
    signature = signature_path_for(sealed.directory / "manifest.json").read_text()
    recorded = client.record_code_version(
        lease.project,
        request.name,
        request.version,
        {
            "run_id": lease.run_id,
            "manifest_hash": sealed.manifest_hash,
            "signature": signature,
            "files": [r.as_json() for r in records],
            "archive_sha256": declared["archive_sha256"],
        },
    )
    return {
        "kind": "code",
        "name": request.name,
        "version": recorded.version,
        "manifest_hash": sealed.manifest_hash,
        "files": len(records),
    }


def stage_code(workdir: Path) -> Path | None:
    """Unpack the verified, decrypted code (``inputs/code``) into ``code/`` and check every
    file against the signed tree manifest; the folder the sandbox binds read-only."""
    staged = workdir / "inputs" / CODE
    if not (staged / ARCHIVE).is_file():
        return None
    records = read_tree((staged / TREE).read_bytes())
    target = workdir / CODE
    shutil.rmtree(target, ignore_errors=True)
    ensure_private_dir(target)
    unpack((staged / ARCHIVE).read_bytes(), target)
    verify_tree(target, records)
    return target
