"""Each module says what it offers: an explicit ``__all__`` (its other names are internals).

The CLI's verb modules (Typer apps found by ``cli.main``) and Alembic's migration scripts
are entry points, not APIs, and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "bastion"
ENTRY_POINTS = ("cli", "server/db/migrations")


def _declared_all(path: Path) -> list[str] | None:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                value = node.value
                assert isinstance(value, ast.List | ast.Tuple), f"{path}: __all__ is not a literal"
                return [str(elt.value) for elt in value.elts if isinstance(elt, ast.Constant)]
    return None


def test_every_module_declares_its_public_names() -> None:
    missing, private = [], []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if path.name == "__init__.py" or relative.startswith(ENTRY_POINTS):
            continue
        names = _declared_all(path)
        if names is None:
            missing.append(relative)
        else:
            private += [f"{relative}: {name}" for name in names if name.startswith("_")]
    assert not missing, "modules without __all__:\n" + "\n".join(missing)
    assert not private, "private names exported:\n" + "\n".join(private)
