"""Sealed artifacts in the compute plane: encrypted files under a signed manifest.

Dataset versions, model versions, training checkpoints and code packages are stored the same way, in
``STORAGE/<artifact>s/<project>/<name>/<manifest hash>/``::

    <file>.bst         each file, envelope-encrypted (its kind: dataset, model, checkpoint)
    manifest.json      what the directory holds: each file's plaintext SHA-256, size and
                       artifact id; the artifact, project, name, kind, rows, run
    manifest.json.sig  the manifest signed with the cluster's key (OpenSSF model-signing)

The manifest hash (SHA-256 of ``manifest.json``) is what the control plane records.
Only the agent, which holds the keyring, seals and opens them; the hashes are over
plaintext so key rotation (which rewrites headers) never invalidates a signature.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bastion.errors import IntegrityError, InvalidInput, NotFound
from bastion.files import atomic_write_bytes, ensure_private_dir, fsync_dir, sha256_file
from bastion.security.audit_chain import canonical_json
from bastion.security.envelope import ArtifactKind, decrypt_file, encrypt_file
from bastion.security.keys import Keyring
from bastion.security.signing import sign_path, signature_path_for, verify_path

__all__ = [
    "MANIFEST",
    "Artifact",
    "Manifest",
    "Sealed",
    "load_manifest",
    "open_sealed",
    "seal",
    "sealed_dir",
    "sha256_file",
]

MANIFEST = "manifest.json"
ENCRYPTED_SUFFIX = ".bst"
Artifact = Literal["dataset", "model", "checkpoint", "code"]
_KINDS: dict[str, ArtifactKind] = {
    "dataset": ArtifactKind.DATASET,
    "model": ArtifactKind.MODEL,
    "checkpoint": ArtifactKind.CHECKPOINT,
    "code": ArtifactKind.CODE,
}


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    artifact_id: str


class Manifest(BaseModel):
    """The signed description of one sealed directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["bastion-sealed/1"] = "bastion-sealed/1"
    artifact: Artifact
    project: str
    name: str
    kind: str = Field(max_length=64)
    rows: int = Field(default=0, ge=0)
    files: dict[str, FileEntry]
    run_id: str = ""


@dataclass(frozen=True)
class Sealed:
    manifest: Manifest
    manifest_hash: str
    directory: Path


def _parent(root: Path, artifact: Artifact, project: str, name: str) -> Path:
    for part, label in ((project, "project"), (name, f"{artifact} name")):
        if not part or "/" in part or part.startswith("."):
            raise InvalidInput(f"{label} {part!r} cannot name a storage directory")
    return root / f"{artifact}s" / project / name


def sealed_dir(
    root: Path, *, artifact: Artifact, project: str, name: str, manifest_hash: str
) -> Path:
    if len(manifest_hash) != 64 or not all(c in "0123456789abcdef" for c in manifest_hash):
        raise InvalidInput(f"{manifest_hash!r} is not a manifest hash")
    return _parent(root, artifact, project, name) / manifest_hash


def seal(
    files: dict[str, Path],
    *,
    root: Path,
    keyring: Keyring,
    artifact: Artifact,
    project: str,
    name: str,
    kind: str,
    rows: int = 0,
    run_id: str = "",
) -> Sealed:
    """Encrypt ``files`` (stored name -> plaintext path) into a new signed directory.

    The directory is built under a temporary name and renamed into place only when the
    files, the manifest and its signature are all written, so a crash leaves nothing
    half-sealed behind a real hash.
    """
    for stored in files:
        if "/" in stored or stored.startswith(".") or stored in (MANIFEST, MANIFEST + ".sig"):
            raise InvalidInput(f"{stored!r} cannot be the name of a sealed file")
    parent = _parent(root, artifact, project, name)
    ensure_private_dir(parent)
    staging = parent / f".sealing-{uuid.uuid4().hex}"
    ensure_private_dir(staging)
    try:
        entries = {}
        for stored, source in sorted(files.items()):
            artifact_id = uuid.uuid4()
            encrypt_file(
                source,
                staging / (stored + ENCRYPTED_SUFFIX),
                keyring=keyring,
                kind=_KINDS[artifact],
                artifact_id=artifact_id,
            )
            entries[stored] = FileEntry(
                sha256=sha256_file(source),
                bytes=source.stat().st_size,
                artifact_id=str(artifact_id),
            )
        manifest = Manifest(
            artifact=artifact,
            project=project,
            name=name,
            kind=kind,
            rows=rows,
            run_id=run_id,
            files=entries,
        )
        body = canonical_json(manifest.model_dump(mode="json"))
        atomic_write_bytes(staging / MANIFEST, body)
        sign_path(staging / MANIFEST, keyring=keyring)
        manifest_hash = hashlib.sha256(body).hexdigest()
        final = parent / manifest_hash
        os.replace(staging, final)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Sealed(manifest=manifest, manifest_hash=manifest_hash, directory=final)


def load_manifest(directory: Path, manifest_hash: str) -> Manifest:
    body = (directory / MANIFEST).read_bytes()
    if hashlib.sha256(body).hexdigest() != manifest_hash:
        raise IntegrityError(
            f"{directory / MANIFEST}: its hash differs from the one the control plane "
            "recorded for this version (manifest replaced or edited)"
        )
    try:
        return Manifest.model_validate(json.loads(body))
    except (ValueError, ValidationError):
        raise IntegrityError(f"{directory / MANIFEST}: not a Bastion manifest") from None


def open_sealed(
    root: Path,
    *,
    keyring: Keyring,
    artifact: Artifact,
    project: str,
    name: str,
    manifest_hash: str,
    into: Path | None = None,
) -> Manifest:
    """Verify a sealed directory completely; with ``into``, decrypt its files there.

    Raises :class:`IntegrityError` or :class:`SignatureError` naming the first check
    that failed; nothing is written to ``into`` unless every check passes.
    """
    directory = sealed_dir(
        root, artifact=artifact, project=project, name=name, manifest_hash=manifest_hash
    )
    # (1) It must be held here.
    if not (directory / MANIFEST).is_file():
        raise NotFound(f"{artifact} {name} ({manifest_hash[:12]}) is not stored on this cluster")
    # (2) The manifest must be the one the control plane recorded.
    manifest = load_manifest(directory, manifest_hash)
    # (3) Its signature must verify under this cluster's keys.
    verify_path(directory / MANIFEST, keyring=keyring)
    # (4) It must describe this artifact, and the directory must hold exactly its files.
    if (manifest.artifact, manifest.project, manifest.name) != (artifact, project, name):
        raise IntegrityError(
            f"{directory}: manifest belongs to {manifest.artifact} "
            f"{manifest.project}/{manifest.name}, not {artifact} {project}/{name}"
        )
    expected = {MANIFEST, signature_path_for(directory / MANIFEST).name} | {
        file + ENCRYPTED_SUFFIX for file in manifest.files
    }
    present = {entry.name for entry in directory.iterdir()}
    if present != expected:
        extra, missing = sorted(present - expected), sorted(expected - present)
        raise IntegrityError(
            f"{directory}: files differ from the manifest (added: {extra or 'none'}; "
            f"missing: {missing or 'none'})"
        )
    # (5) Each file must decrypt (authenticated) to exactly the signed content.
    scratch = into or directory.parent / f".verify-{uuid.uuid4().hex}"
    ensure_private_dir(scratch)
    try:
        for file, entry in manifest.files.items():
            target = scratch / file
            header = decrypt_file(
                directory / (file + ENCRYPTED_SUFFIX),
                target,
                keyring=keyring,
                expected_kind=_KINDS[artifact],
            )
            if str(header.artifact_id) != entry.artifact_id:
                raise IntegrityError(f"{directory / file}: encrypted file was swapped")
            if target.stat().st_size != entry.bytes or sha256_file(target) != entry.sha256:
                raise IntegrityError(f"{directory / file}: content differs from the manifest")
    except BaseException:
        if into is not None:
            for file in manifest.files:
                (into / file).unlink(missing_ok=True)
        raise
    finally:
        if into is None:
            shutil.rmtree(scratch, ignore_errors=True)
    return manifest
