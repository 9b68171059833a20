# Bastion developer commands. Every install step lives here so a fresh clone works.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0
DEMO_HOME ?= .bastion-demo
QUICKSTART ?= .quickstart
QUICKSTART_PORT ?= 8600

FED_VENV  := .venv-federated
FED_STAMP := $(FED_VENV)/.installed
FLWR      := flwr==1.42.0

.PHONY: install sandbox federated test lint typecheck unit bench quickstart demo clean

install: sandbox $(STAMP) $(FED_STAMP)

# Jobs run under bubblewrap (Debian/Ubuntu package 'bubblewrap'); an agent without it refuses
# to start. Installed here when missing and this is root on a Debian-like system.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing bubblewrap (the job sandbox)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y --no-install-recommends bubblewrap >/dev/null 2>&1 \
	      || { apt-get update >/dev/null && apt-get install -y --no-install-recommends bubblewrap >/dev/null; }; \
	  else \
	    echo "WARNING: bubblewrap (bwrap) is not installed; agents refuse to start without it."; \
	    echo "         Install it: sudo apt-get install bubblewrap (or dnf install bubblewrap)."; \
	  fi; }

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch first, so the project's range (torch>=2.6) installs nothing bigger.
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev,ray,redis]'
	touch $(STAMP)

# Federated jobs run Flower, whose release pins older fastapi, starlette, uvicorn, typer, rich
# and protobuf than the control plane uses: it gets an environment of its own, layered over
# the main one (a .pth file adds the main environment's packages after its own), so it reuses
# PyTorch, Opacus and Bastion and holds only Flower and the versions Flower insists on. pip
# leaves the main environment alone ("outside environment") when it installs those.
federated: $(FED_STAMP)

$(FED_STAMP): $(STAMP)
	test -x $(FED_VENV)/bin/python || $(PYTHON) -m venv $(FED_VENV)
	main=$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	own=$$($(FED_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	echo "import site; site.addsitedir('$$main')" > "$$own/zz-bastion-main.pth"
	$(FED_VENV)/bin/python -m pip install --quiet '$(FLWR)'
	$(FED_VENV)/bin/python -c 'import flwr.server, torch, bastion.federated.plan'
	touch $@

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: install
	$(BIN)/mypy

# The suite runs every benchmark at a tiny size (tests/test_benchmarks.py): their extras too.
# Three workers on two cores: the end-to-end tests spend much of their time waiting on the
# planes and jobs they start, and a third worker fills it (a third less wall time measured).
# Files go out in collection order, the longest first (tests/conftest.py, LONGEST_FIRST).
# Bytecode is written even where the shell sets PYTHONDONTWRITEBYTECODE: without it each
# process of the run compiles again what it imports (each worker re-rewrites the asserts of
# its pytest plugins, 3 s; each plane, agent and job the end-to-end tests start, Bastion).
# One OpenMP thread per process (agents pass it to their jobs): three workers, their planes,
# agents and jobs each spreading PyTorch over both cores oversubscribe them, and small
# operations then wait on descheduled threads (a training run measured 3x slower).
# A run past UNIT_LIMIT seconds is interrupted (SIGINT), so that pytest still prints its
# failures, its slowest tests, the tests that were running and the stacks of any that ran
# past 15 minutes (tests/watchdog.py) instead of being killed from outside with nothing said.
UNIT_LIMIT ?= 3600
unit: install $(VENV)/.bench-installed
	PYTHONDONTWRITEBYTECODE= OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 timeout -s INT -k 120 $(UNIT_LIMIT) \
		$(BIN)/pytest -n 3 --dist loadfile --no-loadscope-reorder --durations=25

test: lint typecheck unit

$(VENV)/.bench-installed: pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,ray,redis,bench]'
	touch $@

bench: install $(VENV)/.bench-installed
	$(BIN)/python benchmarks/bench_envelope.py
	$(BIN)/python benchmarks/bench_audit.py
	$(BIN)/python benchmarks/bench_server.py
	$(BIN)/python benchmarks/bench_dispatch.py
	$(BIN)/python benchmarks/bench_pii.py
	$(BIN)/python benchmarks/bench_dp.py
	$(BIN)/python benchmarks/bench_eval.py
	$(BIN)/python benchmarks/bench_adversarial.py
	$(BIN)/python benchmarks/bench_serve.py
	$(BIN)/python benchmarks/bench_sandbox.py
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_cli.py
	$(BIN)/python benchmarks/bench_extraction.py
	$(BIN)/python benchmarks/bench_poisoning.py
	$(BIN)/python benchmarks/bench_scale.py
	$(BIN)/python benchmarks/bench_federated.py
	$(BIN)/python benchmarks/bench_text.py

# The whole lifecycle on embedded defaults; a rerun clears the previous quickstart first.
quickstart: install
	BASTION_HOME=$(QUICKSTART)/home $(BIN)/bastion quickstart \
		--workdir $(QUICKSTART)/files --port $(QUICKSTART_PORT)

# The security core alone (encrypt, sign, scan, rotate, audit), without a control plane.
demo: install
	BASTION_HOME=$(DEMO_HOME) $(BIN)/bastion demo

clean:
	rm -rf $(VENV) $(FED_VENV) .mypy_cache .ruff_cache .pytest_cache $(DEMO_HOME) $(QUICKSTART)
