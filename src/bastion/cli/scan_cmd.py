"""``bastion scan-file``: refuse foreign model files that are not provably safe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.context import err, out
from bastion.errors import UnsafeFileError


def scan_file_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Model files to scan.")],
) -> None:
    """Scan pickle, joblib, PyTorch and NumPy files; exit 1 if any is not provably safe."""
    from bastion.security.filescan import scan_file

    refused: list[UnsafeFileError] = []
    for path in paths:
        try:
            report = scan_file(path)
        except UnsafeFileError as exc:
            refused.append(exc)
            for reason in exc.reasons:
                err.print(f"  {reason}", markup=False)
            continue
        imports = ", ".join(sorted(set(report.imports))) or "none"
        out.print(f"safe {path} ({report.file_format}; imports: {imports})", markup=False)
    if len(refused) == 1:
        raise refused[0]
    if refused:
        raise UnsafeFileError(f"{len(refused)} of {len(paths)} files refused; see above")


def register(app: typer.Typer) -> None:
    app.command("scan-file")(scan_file_cmd)
