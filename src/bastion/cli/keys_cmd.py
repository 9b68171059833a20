"""``bastion keys``: show, rotate, re-wrap, export the public signing key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.context import keyring, out, record
from bastion.files import atomic_write_bytes
from bastion.security.envelope import rewrap_file
from bastion.security.keys import KeyPurpose

app = typer.Typer(
    help="Manage the keyring: show, rotate, re-wrap, export public keys.", no_args_is_help=True
)


@app.command()
def show() -> None:
    """List key ids (never key material) and signing key fingerprints."""
    ring = keyring()
    fingerprints = {key.key_id: key.fingerprint for key in ring.signing_keys()}
    for purpose in KeyPurpose:
        primary = ring.primary_id(purpose)
        for key_id in ring.key_ids(purpose):
            line = (
                f"{purpose.value:<8} {key_id:>10}  {'primary' if key_id == primary else 'old':<7}"
            )
            if purpose is KeyPurpose.SIGNING:
                line += f"  sha256:{fingerprints[key_id]}"
            out.print(line)


@app.command()
def rotate(
    purpose: Annotated[
        list[KeyPurpose] | None,
        typer.Option(help="Keyset to rotate (repeatable); default: all three."),
    ] = None,
) -> None:
    """Add a new primary key; old keys stay to decrypt and verify what they protected."""
    new_ids = keyring().rotate(purpose or None)
    record("keys.rotate", "keyring", {p.value: key_id for p, key_id in new_ids.items()})
    for p, key_id in new_ids.items():
        out.print(f"rotated {p.value}: new primary key {key_id}")
    if KeyPurpose.KEK in new_ids:
        out.print("re-wrap existing artifacts with: bastion keys rewrap PATH...")


@app.command()
def rewrap(
    paths: Annotated[list[Path], typer.Argument(help="Encrypted artifacts to re-wrap.")],
) -> None:
    """Re-wrap artifacts' data keys under the current primary key; payloads are untouched."""
    ring = keyring()
    for path in paths:
        header, changed = rewrap_file(path, keyring=ring)
        if changed:
            record(
                "artifact.rewrap",
                str(path),
                {"artifact_id": str(header.artifact_id), "kek_key_id": header.kek_key_id},
            )
            out.print(f"re-wrapped {path} under key {header.kek_key_id}")
        else:
            out.print(f"{path} already uses the primary key {header.kek_key_id}")


@app.command("export-public")
def export_public(
    destination: Annotated[Path, typer.Argument(help="PEM file to write.")],
) -> None:
    """Write the primary signing public key (PEM) for offline verification."""
    key = keyring().primary_signing_key()
    atomic_write_bytes(destination, key.public_pem, mode=0o644)
    out.print(f"wrote signing public key {key.fingerprint} to {destination}")
