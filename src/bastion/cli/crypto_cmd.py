"""``bastion encrypt``, ``decrypt`` and ``shred``: envelope-encrypted artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.context import keyring, out, progress_bar, record
from bastion.errors import CheckFailed, InvalidInput
from bastion.security.envelope import ArtifactKind, decrypt_file, encrypt_file, shred_file


def _size(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None


def encrypt(
    source: Annotated[Path, typer.Argument(help="File to encrypt.")],
    destination: Annotated[Path, typer.Argument(help="Encrypted artifact to write.")],
    kind: Annotated[
        ArtifactKind, typer.Option(help="What the artifact holds; bound into the ciphertext.")
    ] = ArtifactKind.FILE,
) -> None:
    """Encrypt a file with its own data key, wrapped by the keyring's key-encryption key."""
    if source.resolve() == destination.resolve():
        raise InvalidInput(f"{destination}: output must differ from the input")
    with progress_bar(f"encrypting {source.name}", total=_size(source)) as advance:
        header = encrypt_file(
            source, destination, keyring=keyring(), kind=kind, on_progress=advance
        )
    record(
        "artifact.encrypt",
        str(destination),
        {
            "artifact_id": str(header.artifact_id),
            "kind": kind.value,
            "kek_key_id": header.kek_key_id,
        },
    )
    out.print(
        f"encrypted {source} -> {destination} (artifact {header.artifact_id}, kind {kind.value}, "
        f"key {header.kek_key_id})"
    )


def decrypt(
    source: Annotated[Path, typer.Argument(help="Encrypted artifact.")],
    destination: Annotated[Path, typer.Argument(help="Plaintext file to write.")],
) -> None:
    """Decrypt an artifact; nothing is written unless every byte authenticates."""
    if source.resolve() == destination.resolve():
        raise InvalidInput(f"{destination}: output must differ from the input")
    try:
        with progress_bar(f"decrypting {source.name}", total=_size(source)) as advance:
            header = decrypt_file(source, destination, keyring=keyring(), on_progress=advance)
    except CheckFailed as exc:
        record("artifact.decrypt.refused", str(source), {"reason": str(exc)})
        raise
    record(
        "artifact.decrypt",
        str(source),
        {
            "artifact_id": str(header.artifact_id),
            "kind": header.kind.value,
            "output": str(destination),
        },
    )
    out.print(f"decrypted {source} -> {destination} (artifact {header.artifact_id})")


def shred(
    paths: Annotated[list[Path], typer.Argument(help="Encrypted artifacts to shred.")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: shredding cannot be undone.")
    ] = False,
) -> None:
    """Destroy artifacts' data keys so they can never be decrypted (crypto-shredding)."""
    if not yes:
        raise InvalidInput("shredding cannot be undone; repeat with --yes to confirm")
    for path in paths:
        header = shred_file(path)
        record("artifact.shred", str(path), {"artifact_id": str(header.artifact_id)})
        out.print(f"shredded {path} (artifact {header.artifact_id}); it can never be decrypted")


def register(app: typer.Typer) -> None:
    app.command()(encrypt)
    app.command()(decrypt)
    app.command()(shred)
