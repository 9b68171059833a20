"""The compute plane's dataset store: encrypted data files under a signed manifest.

A dataset version lives in ``STORAGE/datasets/<project>/<name>/<manifest hash>/``::

    data.parquet.bst   (or data.npz.bst)  the data, envelope-encrypted (kind "dataset")
    manifest.json      what the version holds: each file's plaintext SHA-256 and size,
                       the row count, project and name
    manifest.json.sig  the manifest signed with the cluster's key (OpenSSF model-signing)

The manifest hash (SHA-256 of ``manifest.json``) is what the control plane records
as the version's root hash. Only the agent, which holds the keyring, seals and opens
versions; the hashes are over plaintext so key rotation (which rewrites headers) never
invalidates a signature.
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
from bastion.files import atomic_write_bytes, ensure_private_dir, fsync_dir
from bastion.security.audit_chain import canonical_json
from bastion.security.envelope import ArtifactKind, decrypt_file, encrypt_file
from bastion.security.keys import Keyring
from bastion.security.signing import sign_path, signature_path_for, verify_path

__all__ = [
    "DATA_FILES",
    "MANIFEST",
    "DatasetManifest",
    "SealedVersion",
    "open_version",
    "seal_version",
    "version_dir",
]

MANIFEST = "manifest.json"
ENCRYPTED_SUFFIX = ".bst"
#: The data file names a version may hold (one of them), by kind.
DATA_FILES = {"table": "data.parquet", "images": "data.npz"}
_HASH_CHUNK = 1 << 20


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    artifact_id: str


class DatasetManifest(BaseModel):
    """The signed description of one stored version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["bastion-dataset/1"] = "bastion-dataset/1"
    project: str
    name: str
    kind: Literal["table", "images"]
    rows: int = Field(ge=0)
    files: dict[str, FileEntry]
    run_id: str = ""


@dataclass(frozen=True)
class SealedVersion:
    manifest: DatasetManifest
    manifest_hash: str
    directory: Path


def version_dir(root: Path, *, project: str, name: str, manifest_hash: str) -> Path:
    for part, label in ((project, "project"), (name, "dataset name")):
        if not part or "/" in part or part.startswith("."):
            raise InvalidInput(f"{label} {part!r} cannot name a storage directory")
    if len(manifest_hash) != 64 or not all(c in "0123456789abcdef" for c in manifest_hash):
        raise InvalidInput(f"{manifest_hash!r} is not a manifest hash")
    return root / "datasets" / project / name / manifest_hash


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def seal_version(
    source: Path,
    *,
    root: Path,
    keyring: Keyring,
    project: str,
    name: str,
    kind: Literal["table", "images"],
    rows: int,
    run_id: str = "",
) -> SealedVersion:
    """Encrypt ``source`` (a plaintext data file) into a new signed version directory.

    The directory is built under a temporary name and renamed into place only when the
    data, the manifest and its signature are all written, so a crash leaves nothing
    half-sealed behind a real hash.
    """
    data_name = DATA_FILES[kind]
    datasets = root / "datasets" / project / name
    ensure_private_dir(datasets)
    staging = datasets / f".sealing-{uuid.uuid4().hex}"
    ensure_private_dir(staging)
    try:
        artifact_id = uuid.uuid4()
        encrypt_file(
            source,
            staging / (data_name + ENCRYPTED_SUFFIX),
            keyring=keyring,
            kind=ArtifactKind.DATASET,
            artifact_id=artifact_id,
        )
        manifest = DatasetManifest(
            project=project,
            name=name,
            kind=kind,
            rows=rows,
            run_id=run_id,
            files={
                data_name: FileEntry(
                    sha256=_sha256_file(source),
                    bytes=source.stat().st_size,
                    artifact_id=str(artifact_id),
                )
            },
        )
        body = canonical_json(manifest.model_dump(mode="json"))
        atomic_write_bytes(staging / MANIFEST, body)
        sign_path(staging / MANIFEST, keyring=keyring)
        manifest_hash = hashlib.sha256(body).hexdigest()
        final = version_dir(root, project=project, name=name, manifest_hash=manifest_hash)
        os.replace(staging, final)
        fsync_dir(datasets)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return SealedVersion(manifest=manifest, manifest_hash=manifest_hash, directory=final)


def _load_manifest(directory: Path, manifest_hash: str) -> DatasetManifest:
    body = (directory / MANIFEST).read_bytes()
    if hashlib.sha256(body).hexdigest() != manifest_hash:
        raise IntegrityError(
            f"{directory / MANIFEST}: its hash differs from the one the control plane "
            "recorded for this version (manifest replaced or edited)"
        )
    try:
        return DatasetManifest.model_validate(json.loads(body))
    except (ValueError, ValidationError):
        raise IntegrityError(f"{directory / MANIFEST}: not a dataset manifest") from None


def open_version(
    root: Path,
    *,
    keyring: Keyring,
    project: str,
    name: str,
    manifest_hash: str,
    into: Path | None = None,
) -> DatasetManifest:
    """Verify a stored version completely; with ``into``, decrypt its data file there.

    Raises :class:`IntegrityError` or :class:`SignatureError` naming the first check
    that failed; nothing is written to ``into`` unless every check passes.
    """
    directory = version_dir(root, project=project, name=name, manifest_hash=manifest_hash)
    # (1) The version must be held here.
    if not (directory / MANIFEST).is_file():
        raise NotFound(f"dataset {name} ({manifest_hash[:12]}) is not stored on this cluster")
    # (2) The manifest must be the one the control plane recorded.
    manifest = _load_manifest(directory, manifest_hash)
    # (3) Its signature must verify under this cluster's keys.
    verify_path(directory / MANIFEST, keyring=keyring)
    # (4) It must describe this version, and the directory must hold exactly its files.
    if (manifest.project, manifest.name) != (project, name):
        raise IntegrityError(
            f"{directory}: manifest belongs to {manifest.project}/{manifest.name}, "
            f"not {project}/{name}"
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
                expected_kind=ArtifactKind.DATASET,
            )
            if str(header.artifact_id) != entry.artifact_id:
                raise IntegrityError(f"{directory / file}: encrypted file was swapped")
            if target.stat().st_size != entry.bytes or _sha256_file(target) != entry.sha256:
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
