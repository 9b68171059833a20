"""``bastion keys``: show, rotate, re-wrap, export the public signing key."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bastion.cli.context import keyring, out, record
from bastion.cli.output import Output, OutputFormat, printed
from bastion.files import atomic_write_bytes
from bastion.security.envelope import rewrap_file
from bastion.security.keys import KeyPurpose

if TYPE_CHECKING:
    from bastion.client import ServingKeyOut

app = typer.Typer(
    help="The keyring (show, rotate, re-wrap, export public keys) and serving keys of "
    "deployments (create, list, revoke).",
    no_args_is_help=True,
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def describe_key(key: ServingKeyOut) -> str:
    """One line per serving key: id, scopes, limits, state (never the secret)."""
    state = "revoked" if key.revoked_at else "active"
    scopes = ",".join(key.scopes)
    return f"{key.id} {scopes} rate {key.rate} quota {key.quota} {state}"


def _per_second(text: str) -> float:
    """``50/s``, ``600/m`` ... as requests per second."""
    count, _, unit = text.partition("/")
    if unit not in _UNITS or not count.replace(".", "", 1).isdigit():
        raise typer.BadParameter(f"{text!r}: write a rate as N/s, N/m, N/h or N/d")
    return float(count) / _UNITS[unit]


def _per_day(text: str) -> int:
    count, _, unit = text.partition("/")
    if unit != "day" or not count.isdigit():
        raise typer.BadParameter(f"{text!r}: write a quota as N/day")
    return int(count)


def _duration(text: str) -> int:
    if len(text) < 2 or text[-1] not in _UNITS or not text[:-1].isdigit():
        raise typer.BadParameter(f"{text!r}: write a duration as 30d, 12h, 45m or 90s")
    return int(text[:-1]) * _UNITS[text[-1]]


@app.command()
def create(
    deployment: Annotated[
        str, typer.Option("--deployment", "-d", help="Deployment the key calls.")
    ],
    project: Annotated[
        str,
        typer.Option(
            "--project", "-p", envvar="BASTION_PROJECT", help="Project of the deployment."
        ),
    ],
    scopes: Annotated[
        str, typer.Option(help="Comma-separated: predict, explain, metrics.")
    ] = "predict",
    rate: Annotated[str | None, typer.Option(help="Rate limit, e.g. 50/s (token bucket).")] = None,
    burst: Annotated[
        int | None, typer.Option(help="Bucket size (default: one second's rate).")
    ] = None,
    quota: Annotated[str | None, typer.Option(help="Daily quota, e.g. 100000/day.")] = None,
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 30d.")] = None,
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
) -> None:
    """Mint a serving key; the token is printed once and never stored."""
    from bastion.cli.remote import client

    with client() as remote:
        key = remote.create_serving_key(
            project,
            deployment,
            scopes=[s.strip() for s in scopes.split(",") if s.strip()],
            rate=_per_second(rate) if rate else None,
            burst=burst,
            quota=_per_day(quota) if quota else None,
            expires_in_seconds=_duration(expires) if expires else None,
            name=name,
        )
    out.print(f"serving key {key.id} for {deployment} ({', '.join(key.scopes)})")
    out.print("token (shown once; send it as 'Authorization: Bearer <token>'):")
    typer.echo(key.token)


@app.command("list")
def list_keys(
    deployment: Annotated[str, typer.Option("--deployment", "-d", help="Deployment.")],
    project: Annotated[
        str,
        typer.Option(
            "--project", "-p", envvar="BASTION_PROJECT", help="Project of the deployment."
        ),
    ],
    output: Output = OutputFormat.TABLE,
) -> None:
    """Serving keys of a deployment (ids and limits; never secrets)."""
    from bastion.cli.remote import client

    with client() as remote:
        keys = remote.list_serving_keys(project, deployment)
    if printed(keys, output):
        return
    for key in keys:
        out.print(describe_key(key))


@app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(help="Key id, as listed.")],
    deployment: Annotated[str, typer.Option("--deployment", "-d", help="Deployment.")],
    project: Annotated[
        str,
        typer.Option(
            "--project", "-p", envvar="BASTION_PROJECT", help="Project of the deployment."
        ),
    ],
) -> None:
    """Revoke a serving key; servers refuse it within seconds."""
    from bastion.cli.remote import client

    with client() as remote:
        remote.revoke_serving_key(project, deployment, key_id)
    out.print(f"serving key {key_id} revoked")


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
