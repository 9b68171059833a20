"""YAML read the strict way, for every document a person hands Bastion (run specs, policies).

PyYAML's ``safe_load`` builds no objects, but it still accepts what hides mistakes or costs
without bound: a key given twice (the last silently wins), nesting deep enough to exhaust
the recursion limit, a number thousands of digits long (Python refuses to convert it, as a
traceback), and aliases that expand to exponentially large data. Each is refused here with
one line naming the file and the line.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode

from bastion.errors import UsageError

__all__ = ["MAX_DEPTH", "MAX_NUMBER_DIGITS", "load"]

#: How deep mappings and lists may nest (a run spec needs under ten levels).
MAX_DEPTH = 32
#: The longest integer or float literal accepted, in characters.
MAX_NUMBER_DIGITS = 64


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys, deep nesting, huge numbers and aliases."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise ConstructorError(
                None,
                None,
                "YAML aliases (*name) are not accepted; write the value out",
                event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise ConstructorError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: PyYAML's own check refuses it below
                continue
            if duplicate:
                raise ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def _number(self, node: Node) -> None:
        if isinstance(node, ScalarNode) and len(node.value) > MAX_NUMBER_DIGITS:
            raise ConstructorError(
                None, None, f"a number longer than {MAX_NUMBER_DIGITS} characters", node.start_mark
            )

    def construct_yaml_int(self, node: ScalarNode) -> int:
        self._number(node)
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: ScalarNode) -> float:
        self._number(node)
        return super().construct_yaml_float(node)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _StrictLoader.construct_yaml_float)


def load(text: str, *, source: str, error: type[UsageError]) -> Any:
    """The one YAML document in ``text``, or ``error`` naming ``source`` and the line."""
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise error(f"{where}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML ({exc})") from None
    finally:
        loader.dispose()
