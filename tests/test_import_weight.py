"""The long-lived processes start without the ML stack.

The control plane, the agent's loop and the CLI's entry point must not import torch,
pandas, numpy, scikit-learn or Opacus: the control plane never touches data, the agent
starts jobs in their own processes, and every CLI verb starts with the entry point. Each
of these once pulled in a heavy library through a shared module (the schema models, the
staged-model constants), adding seconds to every start.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "pandas", "numpy", "sklearn", "opacus", "scipy")


@pytest.mark.parametrize("module", ["bastion.server.app", "bastion.agent.loop", "bastion.cli.main"])
def test_starting_imports_no_ml_library(module: str) -> None:
    probe = (
        f"import importlib, json, sys; importlib.import_module({module!r}); "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
