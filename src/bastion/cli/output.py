"""Machine-readable output for the list, show and card verbs: ``-o json`` or ``-o yaml``.

JSON and YAML print every field the SDK returns, under the SDK's field names: those of the
``bastion.api`` models, which are the API's own answer. The table, the default, is for people
and may leave fields out.
"""

from __future__ import annotations

import enum
import json
from typing import Annotated, Any

import typer
from pydantic_core import to_jsonable_python

__all__ = ["Output", "OutputFormat", "printed"]


class OutputFormat(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


Output = Annotated[
    OutputFormat,
    typer.Option(
        "--output",
        "-o",
        help="table (for people), or json / yaml: every field, with the SDK's names.",
        case_sensitive=False,
    ),
]


def printed(data: Any, output: OutputFormat) -> bool:
    """Print ``data`` (models, lists and mappings of them) as JSON or YAML and say so; False
    when the caller should draw its table."""
    if output is OutputFormat.TABLE:
        return False
    plain = to_jsonable_python(data, by_alias=True)
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(plain, indent=2, ensure_ascii=False))
    else:
        import yaml  # only for -o yaml

        typer.echo(yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, width=1 << 16))
    return True
