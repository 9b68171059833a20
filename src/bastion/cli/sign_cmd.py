"""``bastion sign`` and ``bastion verify``: OpenSSF model-signing signatures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.context import keyring, out, record
from bastion.errors import InvalidInput


def sign(
    path: Annotated[Path, typer.Argument(help="File or directory to sign.")],
) -> None:
    """Sign a file or directory; the signature is written beside it as PATH.sig."""
    from bastion.security.signing import sign_path

    ring = keyring()
    signature = sign_path(path, keyring=ring)
    record(
        "artifact.sign",
        str(path.resolve()),
        {"signature": str(signature), "key_fingerprint": ring.primary_signing_key().fingerprint},
    )
    out.print(f"signed {path} -> {signature}")


def verify(
    path: Annotated[Path, typer.Argument(help="File or directory to verify.")],
    public_key: Annotated[
        Path | None,
        typer.Option(help="Trust this PEM public key instead of the local keyring."),
    ] = None,
) -> None:
    """Verify PATH against PATH.sig; exit 1 on any changed, added, removed or renamed file."""
    from bastion.security.signing import verify_path

    if public_key is not None:
        if not public_key.is_file():
            raise InvalidInput(f"{public_key}: no such public key file")
        result = verify_path(path, public_key_pem=public_key.read_bytes())
    else:
        result = verify_path(path, keyring=keyring())
    out.print(
        f"verified {path}: {result.files} file(s) match {result.signature.name} "
        f"(key {result.key_fingerprint[:16]}...)"
    )


def register(app: typer.Typer) -> None:
    app.command()(sign)
    app.command()(verify)
