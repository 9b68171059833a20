"""Adjustments to the JSON schemas pydantic publishes (what API clients and fuzzers read)."""

from __future__ import annotations

from typing import Any

__all__ = ["at_least_one_field"]


def at_least_one_field(schema: dict[str, Any]) -> None:
    """For models of optional sections of which at least one must be given: publish
    ``minProperties: 1`` and each section as its own type, not nullable (null and the
    boolean shorthands are accepted, but not advertised)."""
    schema["minProperties"] = 1
    for field in schema.get("properties", {}).values():
        options = [o for o in field.pop("anyOf", []) if o.get("type") != "null"]
        if options:
            field.update(options[0])
        field.pop("default", None)
