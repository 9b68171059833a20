"""The package layering of DESIGN.md §6, checked on every module's imports (lazy ones too).

Each rule names a layer and the packages it must never import; the rules are spelled out
here rather than derived from the code they check.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

#: (modules the rule applies to, imports they must not make, why)
#: A service hands the dashboard its session's type: ``sqlalchemy.orm`` is the one exception.
ALLOWED = ("sqlalchemy.orm",)
RULES: list[tuple[str, tuple[str, ...], str]] = [
    (
        "bastion.api",
        ("fastapi", "starlette", "sqlalchemy", "bastion.server", "bastion.client", "bastion.cli"),
        "the API models are shared by server and SDK and pull in neither",
    ),
    (
        "bastion.server.services",
        (
            "fastapi",
            "starlette",
            "bastion.server.deps",
            "bastion.server.routes",
            "bastion.server.web",
        ),
        "services are HTTP-free business rules",
    ),
    (
        "bastion.server.routes",
        ("sqlalchemy",),
        "routes translate HTTP and call services; every query lives in a service",
    ),
    (
        "bastion.server.web",
        ("sqlalchemy", "bastion.server.db.session"),
        "the dashboard reads through the services the API uses, never a query layer of its own",
    ),
    (
        "bastion.agent",
        ("bastion.server", "bastion.cli"),
        "the compute plane talks to the control plane through the SDK only",
    ),
    (
        "bastion.client",
        ("bastion.server", "bastion.cli", "fastapi", "sqlalchemy"),
        "the SDK speaks HTTP and returns bastion.api models",
    ),
    (
        "bastion.security",
        ("bastion.server", "bastion.agent", "bastion.cli", "bastion.client"),
        "the primitives are the lowest layer",
    ),
    (
        "bastion.code",
        ("bastion.server", "bastion.agent", "bastion.cli", "bastion.client"),
        "the package rules apply alike in the CLI, the SDK, the job and the agent",
    ),
    (
        "bastion.data",
        ("bastion.server", "bastion.agent", "bastion.cli", "bastion.client"),
        "jobs' libraries know nothing of the planes",
    ),
    (
        "bastion.train",
        ("bastion.server", "bastion.agent", "bastion.cli", "bastion.client"),
        "jobs' libraries know nothing of the planes",
    ),
    (
        "bastion.evaluate",
        ("bastion.server", "bastion.agent", "bastion.cli", "bastion.client"),
        "jobs' libraries know nothing of the planes",
    ),
    (
        "bastion.governance",
        ("bastion.server", "bastion.agent", "bastion.cli", "bastion.client"),
        "policy and compliance rules work on facts handed to them",
    ),
    (
        "bastion.inference",
        ("bastion.server", "bastion.cli"),
        "the inference server runs in the compute plane",
    ),
    ("bastion", ("bastion.cli",), "nothing imports the CLI"),
]


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


MODULES = {_module(path): path for path in sorted((SRC / "bastion").rglob("*.py"))}


@pytest.mark.parametrize(("layer", "forbidden", "why"), RULES, ids=[rule[0] for rule in RULES])
def test_layer_imports_stay_one_direction(layer: str, forbidden: tuple[str, ...], why: str) -> None:
    checked = {name: path for name, path in MODULES.items() if _within(name, layer)}
    assert checked, f"no modules in {layer}"
    broken = sorted(
        f"{name} imports {imported}"
        for name, path in checked.items()
        if not _within(name, "bastion.cli")
        for imported in _imports(path)
        if any(_within(imported, bad) for bad in forbidden)
        and not any(_within(imported, ok) for ok in ALLOWED)
    )
    assert not broken, f"{why}:\n" + "\n".join(broken)


def test_services_import_each_other_without_a_cycle() -> None:
    """Lazy imports included: a cycle hidden in a function is still a cycle."""
    prefix = "bastion.server.services."
    graph = {
        name.removeprefix(prefix): {
            imported.removeprefix(prefix).split(".")[0]
            for imported in _imports(path)
            if imported.startswith(prefix)
        }
        for name, path in MODULES.items()
        if name.startswith(prefix)
    }
    for start in graph:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, set()):
                assert nxt != start, "import cycle: " + " -> ".join([*path, nxt])
                if nxt not in path:
                    stack.append((nxt, [*path, nxt]))


def test_the_rules_can_fail(tmp_path: Path) -> None:
    """The import scan sees lazy imports inside functions too."""
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from bastion.server.db import models\n")
    assert "bastion.server.db.models" in _imports(module)
