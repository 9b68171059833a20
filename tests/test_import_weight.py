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


#: What each command line may not import: the verbs it does not name, and the libraries only
#: other verbs need (Tink and cryptography for keys, the server's stack, the ML stack).
CLI_CASES = [
    (["--version"], ("bastion.cli.", "bastion.client", "httpx", "tink", "cryptography")),
    (
        ["run", "list", "-p", "cardiology"],
        # The run spec's models, YAML, a settings library and httpx's own command-line tool
        # (click, pygments) each cost a visible share of a command's start.
        (
            "tink",
            "cryptography",
            "sqlalchemy",
            "fastapi",
            "bastion.spec",
            "yaml",
            "pydantic_settings",
            "click",
            "pygments",
        ),
    ),
]


@pytest.mark.parametrize(("argv", "forbidden"), CLI_CASES, ids=["version", "run-list"])
def test_a_command_imports_only_its_own_verb(argv: list[str], forbidden: tuple[str, ...]) -> None:
    """Verbs are imported when the command line names them (``cli.main.NOUNS``/``VERBS``)."""
    allowed_cli = {"bastion.cli", "bastion.cli.main", "bastion.cli.context"}
    if argv[0] == "run":
        allowed_cli |= {"bastion.cli.runs_cmd", "bastion.cli.remote"}
    probe = (
        "import json, sys\n"
        "from bastion.cli.main import run\n"
        f"run({argv!r})\n"
        # bastion/__init__ puts an empty module (no __file__) in the place of httpx's CLI
        "print(json.dumps(sorted(m for m, v in sys.modules.items()"
        " if m != 'httpx._main' or hasattr(v, '__file__'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"BASTION_HOME": "/nonexistent-bastion-home", "PATH": "/usr/bin:/bin"},
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY]
    wrong = [
        m
        for m in loaded
        if any(m == f or m.startswith(f if f.endswith(".") else f + ".") for f in forbidden)
        and m not in allowed_cli
    ]
    assert heavy == [] and wrong == [], (heavy, wrong)


def test_a_job_allocates_no_arrow_memory_before_it_runs() -> None:
    """Arrow's allocator reserves a large address range on its first allocation; done at
    import time, that comes before the job's other libraries load, and a job under a tight
    ``resources.memory_mb`` then fails to load them (instead of a clear out-of-memory)."""
    probe = (
        "import json, pyarrow\n"
        "import bastion.agent.job, bastion.agent.train_job, bastion.agent.data_jobs\n"
        "import bastion.agent.eval_job\n"
        "print(json.dumps(pyarrow.total_allocated_bytes()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == 0


def test_a_job_reports_without_every_resource_model() -> None:
    """Every run starts a job process, and the job's imports are most of its start: it
    reports through the SDK's run calls, not the whole client with every resource's models
    (importing those once doubled the time from submit to running)."""
    probe = (
        "import json, sys\n"
        "import bastion.agent.job\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('bastion.'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    others = {
        "bastion.client._client",
        "bastion.api.models",
        "bastion.api.datasets",
        "bastion.api.deployments",
        "bastion.api.governance",
        "bastion.api.identity",
        "bastion.api.clusters",
        "bastion.api.code",
        "bastion.api.audit",
    }
    assert sorted(loaded & others) == []
    assert "bastion.client.runs" in loaded
