"""``bastion server``: migrate, initialise and run the control plane."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.context import err, out, settings
from bastion.db import database_errors
from bastion.errors import ConfigurationError, InvalidInput

app = typer.Typer(help="Run the control plane (API server).", no_args_is_help=True)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db", help="Database URL (default: SQLite in BASTION_HOME; postgresql+psycopg://...)."
    ),
]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def migrate(db: DbOption = None) -> None:
    """Bring the control-plane database schema to the current version."""
    from bastion.server.app import build_database
    from bastion.server.db.migrate import upgrade

    settings().private_home()
    config = settings().model_copy(update={"control_plane_database_url": db}) if db else settings()
    with database_errors(config.control_plane_database):
        revision = upgrade(build_database(config).engine)
    out.print(f"control-plane database at revision {revision}")


@app.command()
def init(
    db: DbOption = None,
    admin: Annotated[str, typer.Option(help="Name of the first administrator.")] = "admin",
    password: Annotated[
        bool, typer.Option("--password", help="Also set a dashboard password (prompted).")
    ] = False,
) -> None:
    """Migrate, create the first administrator and print its token (shown once)."""
    from bastion.server.app import build_database
    from bastion.server.services.bootstrap import initialise

    settings().private_home()
    config = settings().model_copy(update={"control_plane_database_url": db}) if db else settings()
    secret = (
        typer.prompt("password", hide_input=True, confirmation_prompt=True) if password else None
    )
    with database_errors(config.control_plane_database):
        result = initialise(build_database(config), username=admin, password=secret)
    out.print(f"control-plane database at revision {result.revision}")
    out.print(f"created administrator {result.username!r}; its token (shown once, store it now):")
    out.print(result.token, markup=False)
    out.print("log in with: bastion login --url http://127.0.0.1:8600 --token <token>")


@app.command()
def start(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to bind.")] = 8600,
    db: DbOption = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate chain for HTTPS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key for HTTPS.")] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow plain HTTP on a non-loopback address.")
    ] = False,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            help="Address or CIDR of a reverse proxy whose X-Forwarded-For to believe "
            "(repeatable). Without it the header is ignored: the client address, which the "
            "login throttle and the audit log use, is the socket's."
        ),
    ] = None,
) -> None:
    """Serve the API with uvicorn; refuses plain HTTP beyond loopback unless --insecure."""
    import uvicorn

    from bastion.server.app import build_database
    from bastion.server.db.migrate import current_revision, head_revision

    settings().private_home()  # before anything is created in it
    if (tls_cert is None) != (tls_key is None):
        raise InvalidInput("--tls-cert and --tls-key go together")
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise InvalidInput(f"{path}: no such file")
    proxies = [_network(value) for value in trusted_proxy or []]
    tls = tls_cert is not None
    if not tls and not _is_loopback(host):
        if not insecure:
            raise InvalidInput(
                f"refusing plain HTTP on {host}: give --tls-cert and --tls-key, "
                "or --insecure if a TLS proxy sits in front"
            )
        err.print(f"warning: serving plain HTTP on {host}; tokens cross the network in clear")
    config = settings().model_copy(update={"control_plane_database_url": db}) if db else settings()
    engine = build_database(config).engine
    with database_errors(config.control_plane_database):
        revision = current_revision(engine)
    if revision != head_revision():
        raise ConfigurationError(
            "the control-plane database is not at the current schema; run 'bastion server migrate'"
        )
    if db:
        import os

        # The workers build their app from settings.
        os.environ["BASTION_CONTROL_PLANE_DATABASE_URL"] = db
    scheme = "https" if tls else "http"
    out.print(f"Bastion control plane on {scheme}://{host}:{port}")
    uvicorn.run(
        "bastion.server.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        log_level="info",
        server_header=False,
        # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise.
        proxy_headers=bool(proxies),
        forwarded_allow_ips=",".join(proxies) if proxies else "",
    )


def _network(value: str) -> str:
    """A trusted proxy's address or network, normalised; one clear line when malformed."""
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise InvalidInput(
            f"--trusted-proxy {value!r} is not an IP address or CIDR network (e.g. 10.0.0.5 "
            "or 10.0.0.0/24)"
        ) from None
