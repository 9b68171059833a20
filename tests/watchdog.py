"""What a stuck suite was doing: a pytest plugin (loaded by conftest.py).

pytest-timeout's signal method fails a test that overruns, but not one whose main thread
is blocked where no signal handler runs (a C call that retries on EINTR); then the worker
never finishes and the whole run is killed from outside with nothing said. So:

- every process of the run arms ``faulthandler`` per test: a test still running after
  ``STACKS_AFTER`` seconds has every thread's stack written to a file of the run's
  (faulthandler's own thread writes it, whatever the main thread is doing);
  pytest's own ``faulthandler_timeout`` writes to the worker's stderr, which xdist
  does not show;
- the controller tracks which tests have started and not finished; its terminal summary,
  which pytest prints on an interrupt too (``make unit`` sends SIGINT when the run overruns
  its limit), names them with their running times and prints the stacks written.
"""

from __future__ import annotations

import faulthandler
import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Generator
from pathlib import Path

import pytest

STACKS_AFTER = float(os.environ.get("BASTION_TEST_STACKS_AFTER", "900"))
_DIRECTORY = "BASTION_TEST_WATCH_DIR"
_started: dict[str, float] = {}
_numbers = itertools.count(1)
_created: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    if _DIRECTORY not in os.environ:  # the controller, or a run without workers
        os.environ[_DIRECTORY] = tempfile.mkdtemp(prefix="bastion-watch-")
        _created.append(os.environ[_DIRECTORY])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    path = Path(os.environ[_DIRECTORY]) / f"{worker}-{next(_numbers)}.txt"
    header = f"{item.nodeid} still running after {STACKS_AFTER:.0f} s:\n"
    with path.open("w", encoding="utf-8") as file:
        file.write(header)
        file.flush()
        faulthandler.dump_traceback_later(STACKS_AFTER, repeat=False, file=file)
        try:
            yield
        finally:
            faulthandler.cancel_dump_traceback_later()
    if path.stat().st_size == len(header.encode("utf-8")):  # it ended in time
        path.unlink()


def pytest_runtest_logstart(nodeid: str) -> None:
    _started[nodeid] = time.monotonic()


def pytest_runtest_logfinish(nodeid: str) -> None:
    _started.pop(nodeid, None)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _started:
        terminalreporter.section("tests still running when the run ended")
        now = time.monotonic()
        for nodeid, since in sorted(_started.items(), key=lambda item: item[1]):
            terminalreporter.line(f"{now - since:7.0f} s  {nodeid}")
    directory = Path(os.environ.get(_DIRECTORY, ""))
    dumps = sorted(directory.glob("*.txt")) if directory.name else []
    written = [path.read_text(encoding="utf-8").strip() for path in dumps]
    written = [text for text in written if "Thread 0x" in text]
    if written:
        terminalreporter.section(f"stacks of tests that ran past {STACKS_AFTER:.0f} s")
        for text in written:
            terminalreporter.line(text[:12_000])


def pytest_unconfigure(config: pytest.Config) -> None:
    for directory in _created:  # the process that made the run's folder removes it
        shutil.rmtree(directory, ignore_errors=True)
