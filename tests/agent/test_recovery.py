"""Faults: an agent killed mid-run, a stale attempt fenced off, a second cluster, canaries."""

from __future__ import annotations

import json
import math
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydantic_core import to_jsonable_python

from bastion.client import Client, RunEventOut
from bastion.data.reference import patients
from bastion.server.web.session import SESSION_COOKIE
from tests.agent.test_agent_e2e import running_plane, start_agent, wait_for_heartbeat
from tests.server.test_live import _bastion


def _events(admin: Client, run_id: str) -> list[RunEventOut]:
    return admin.run_events("p", run_id)


#: A number as it may be written in text: JSON, a log line, a dashboard cell.
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")


def _numbers(value: object) -> Iterator[float]:
    """Every number in a decoded JSON value, including those written inside its strings."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield float(value)
    elif isinstance(value, dict):
        for item in [*value.keys(), *value.values()]:
            yield from _numbers(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, str | bytes):
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        for token in _NUMBER.findall(text):
            yield float(token)


def _database_values(database: Path) -> Iterator[object]:
    """Every cell of every table of a SQLite file; JSON text decoded."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):
                for cell in row:
                    if isinstance(cell, str) and cell[:1] in "[{":
                        try:
                            yield json.loads(cell)
                            continue
                        except ValueError:
                            pass
                    yield cell


def _leaked_numbers(found: Iterator[float], canaries: list[float]) -> set[float]:
    """The canaries among ``found``, compared as numbers (a float's rounding included)."""
    return {
        canary
        for number in found
        for canary in canaries
        if math.isclose(number, canary, rel_tol=1e-9)
    }


@pytest.mark.slow
def test_killed_agent_run_is_retried_from_its_checkpoint_and_the_stale_attempt_is_fenced(
    tmp_path: Path,
) -> None:
    with running_plane(tmp_path, lease_seconds=3) as plane:
        spec = {
            "name": "long",
            "project": "p",
            "cluster": "c1",
            "max_retries": 1,
            "job": {"type": "smoke", "steps": 24, "sleep_seconds": 0.25},
        }
        run = plane.admin.submit_run(spec)
        deadline = time.monotonic() + 60
        while not any(
            e.stage == "checkpoint" and e.message == "step 4" for e in _events(plane.admin, run.id)
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        plane.agent.send_signal(signal.SIGKILL)
        plane.agent.wait(timeout=10)
        # The job of attempt 1 dies with its agent (tests/agent/test_lifeline.py).
        restarted = start_agent(plane.agent_home, plane.url, "c1", plane.storage)
        try:
            wait_for_heartbeat(plane.admin, restarted, "c1")
            deadline = time.monotonic() + 120
            while (current := plane.admin.get_run("p", run.id)).status not in (
                "succeeded",
                "failed",
            ):
                assert time.monotonic() < deadline, current
                time.sleep(0.3)
            if current.status != "succeeded":
                restarted.terminate()
                out = restarted.communicate(timeout=30)[0]
                events = _events(plane.admin, run.id)
                job_logs = [p.read_text()[-2000:] for p in plane.storage.rglob("job.log")]
                raise AssertionError(f"{current}\n{events[-3:]}\n{out[-3000:]}\n{job_logs}")
            assert current.attempt == 2
            logs = [line.line for line in plane.admin.run_logs("p", run.id)]
            resumed = [line for line in logs if line.startswith("resuming after step")]
            assert len(resumed) == 1
            resumed_at = int(resumed[0].split()[3])
            assert resumed_at >= 4
            # Attempt 2 started after the checkpoint: it never re-ran steps 1..resumed_at.
            attempt2 = [row for row in plane.admin.run_logs("p", run.id) if row.attempt == 2]
            steps = [
                int(row.line.split()[1].split("/")[0])
                for row in attempt2
                if row.line.startswith("step ")
            ]
            assert steps and min(steps) == resumed_at + 1 and max(steps) == 24
            # Attempt 1's token is fenced off as well: tests/server/test_fencing.py.
            actions = [e.action for e in plane.admin.audit_events(limit=1000)]
            assert "run.lease_expired" in actions
        finally:
            restarted.terminate()
            restarted.wait(timeout=30)


def test_runs_go_only_to_their_cluster_and_canaries_stay_in_the_compute_plane(
    tmp_path: Path,
) -> None:
    canary = "CANARY-7f3a9c-PATIENT-SSN-123-45-6789"
    canary_name, canary_email = "Zebulon Canaryfield", "zebulon.canary7f3a9c@example.org"
    canary_ssn = "778-62-4417"
    # Above every generated card number (an integer column the PII scan flags), above every
    # mean radius, above every visit count, and a ward of one patient.
    canary_card, canary_radius, canary_visits = 8_912_345_678_901_234_567, 33.71828459, 918_273
    canary_ward = "ZQ-CANARY-WARD-7f3a9c"
    numbers = [float(canary_card), canary_radius, float(canary_visits)]
    with running_plane(tmp_path) as plane:
        created = _bastion(plane.client_home, "cluster", "create", "c2")
        assert created.returncode == 0
        incoming = tmp_path / "incoming2"
        incoming.mkdir()
        second = start_agent(
            tmp_path / "agent2",
            plane.url,
            "c2",
            tmp_path / "storage2",
            created.stdout.splitlines()[1].strip(),
            import_root=incoming,
        )
        try:
            wait_for_heartbeat(plane.admin, second, "c2")
            inputs = tmp_path / "storage2" / "inputs"
            inputs.mkdir(parents=True)
            (inputs / "patients.csv").write_text(f"ssn\\n{canary}\\n")
            spec = {
                "name": "c2-run",
                "project": "p",
                "cluster": "c2",
                "job": {"type": "smoke", "steps": 2, "inputs": {"patients": "patients.csv"}},
            }
            run = plane.admin.submit_run(spec)
            deadline = time.monotonic() + 60
            while (current := plane.admin.get_run("p", run.id)).status not in (
                "succeeded",
                "failed",
            ):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert current.status == "succeeded", current
            assert (tmp_path / "storage2" / "runs" / run.id).is_dir()
            assert not (plane.storage / "runs" / run.id).exists()
            # The canary never reaches the control plane: database, API responses, audit log.
            answers = json.dumps(
                to_jsonable_python(
                    [
                        plane.admin.get_run("p", run.id),
                        plane.admin.run_events("p", run.id),
                        plane.admin.run_logs("p", run.id),
                        plane.admin.run_metrics("p", run.id),
                        plane.admin.audit_events(limit=1000),
                    ]
                )
            )
            assert "patients.csv" in answers or "patients" in answers
            assert canary not in answers
            # Registration, scans and pseudonymisation on c2 report only metadata.
            planted = patients(rows=120, seed=5)
            planted.loc[7, ["name", "email", "ssn"]] = [canary_name, canary_email, canary_ssn]
            # Numbers and a category: each canary is its column's extreme (or a category of
            # one row), which is what an exact schema would publish.
            rng = np.random.default_rng(5)
            planted["visits"] = rng.integers(0, 20, size=len(planted))
            planted["ward"] = rng.choice(["cardiology", "oncology", "surgery"], size=len(planted))
            planted.loc[7, "card_number"] = str(canary_card)
            planted.loc[7, "mean_radius"] = canary_radius
            planted.loc[7, "visits"] = canary_visits
            planted.loc[7, "ward"] = canary_ward
            planted.to_csv(incoming / "planted.csv", index=False)
            for args in (
                [
                    "register",
                    str(incoming / "planted.csv"),
                    "--name",
                    "planted",
                    "-p",
                    "p",
                    "--cluster",
                    "c2",
                ],
                ["scan", "planted@1", "-p", "p"],
                ["pseudonymize", "planted@1", "-p", "p", "--columns", "ssn,email,name"],
            ):
                done = _bastion(plane.client_home, "data", *args)
                assert done.returncode == 0, done.stdout + done.stderr
                for value in (canary_name, canary_email, canary_ssn):
                    assert value not in done.stdout + done.stderr
            versions = plane.admin.dataset_versions("p", "planted")
            assert [v.cluster for v in versions] == ["c2", "c2"]
            found = {c["column"] for c in versions[0].summaries["pii"]["columns"]}
            assert {"name", "email", "ssn", "card_number"} <= found
            runs = plane.admin.list_runs("p")
            # As the API sent them (JSON), so the number scan below reads every field.
            seen: list[object] = to_jsonable_python(
                [
                    versions,
                    [plane.admin.get_run("p", r.id) for r in runs],
                    [plane.admin.run_logs("p", r.id) for r in runs],
                    [plane.admin.run_events("p", r.id) for r in runs],
                    plane.admin.audit_events(limit=1000),
                ]
            )
            # The dashboard's page of the dataset (a session is a login token in the cookie).
            token = str(plane.admin._http.headers["authorization"]).removeprefix("Bearer ")
            page = httpx.get(
                f"{plane.url}/ui/p/p/datasets/planted",
                headers={"cookie": f"{SESSION_COOKIE}={token}"},
            )
            assert page.status_code == 200 and "ward" in page.text, page.status_code
            seen.append(page.text)
            answers += json.dumps(seen)
            secrets = [canary, canary_name, canary_email, canary_ssn, canary_ward]
            databases = [d for d in (tmp_path / "server").glob("*.db*") if d.is_file()]
            server_log = (tmp_path / "server.log").read_bytes()
            assert databases
            assert b"POST /api/v1/projects/p/runs" in server_log  # the log is really written
            cells = [v for d in databases if d.suffix == ".db" for v in _database_values(d)]
            texts = {
                "API answers and dashboard": answers.encode(),
                "server log": server_log,
                **{d.name: d.read_bytes() for d in databases},
            }
            leaks = [
                f"{v!r} in the {where}"
                for where, text in texts.items()
                for v in secrets
                if v.encode() in text
            ]
            for where, decoded in (
                ("API answers and dashboard", seen),
                ("database", cells),
                ("server log", server_log),
            ):
                leaks += [
                    f"{n!r} in the {where}" for n in _leaked_numbers(_numbers(decoded), numbers)
                ]
            assert not leaks, leaks
            # The schema still says what a reader needs: which columns, and why some say less.
            schema = {c["name"]: c for c in versions[0].schema_["columns"]}
            assert schema["card_number"]["redacted"] is True
            assert schema["card_number"]["maximum"] is None
            assert schema["ward"]["categories"] == ["cardiology", "oncology", "surgery"]
            assert schema["ward"]["categories_withheld"] == 1
            assert schema["mean_radius"]["maximum"] >= canary_radius
            # At rest in the compute plane the planted rows exist only encrypted.
            for stored in (tmp_path / "storage2" / "datasets").rglob("*"):
                if stored.is_file():
                    assert canary_ssn.encode() not in stored.read_bytes()
                    assert canary_email.encode() not in stored.read_bytes()
        finally:
            second.terminate()
            second.wait(timeout=30)


def test_control_plane_restart_mid_run_finishes_the_run_once(tmp_path: Path) -> None:
    with running_plane(tmp_path) as plane:
        spec = {
            "name": "through-restart",
            "project": "p",
            "cluster": "c1",
            "job": {"type": "smoke", "steps": 30, "sleep_seconds": 0.2},
        }
        run = plane.admin.submit_run(spec)
        deadline = time.monotonic() + 60
        while plane.admin.get_run("p", run.id).status != "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        plane.restart_server(down_seconds=3)
        deadline = time.monotonic() + 120
        while (current := plane.admin.get_run("p", run.id)).status not in (
            "succeeded",
            "failed",
        ):
            assert time.monotonic() < deadline, current
            time.sleep(0.3)
        job_logs = [p.read_text()[-1500:] for p in plane.storage.rglob("job.log")]
        assert current.status == "succeeded", (current, job_logs)
        assert current.attempt == 1  # reconnected, not re-run
        steps = [
            int(row.line.split()[1].split("/")[0])
            for row in plane.admin.run_logs("p", run.id)
            if row.line.startswith("step ")
        ]
        assert steps == list(range(1, 31))
        assert plane.agent.poll() is None  # the agent rode it out


def test_full_storage_fails_the_run_with_the_reason_and_no_partial_files(tmp_path: Path) -> None:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=80m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.strip()}")
    try:
        with running_plane(tmp_path / "plane") as plane:
            agent2 = tmp_path / "agent2"
            created = _bastion(plane.client_home, "cluster", "create", "small")
            second = start_agent(
                agent2, plane.url, "small", mount, created.stdout.splitlines()[1].strip()
            )
            try:
                wait_for_heartbeat(plane.admin, second, "small")
                filler = mount / "filler.bin"
                subprocess.run(
                    ["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=200"],
                    capture_output=True,
                    check=False,
                )
                run = plane.admin.submit_run(
                    {
                        "name": "no-space",
                        "project": "p",
                        "cluster": "small",
                        "job": {"type": "smoke", "steps": 2},
                    }
                )
                deadline = time.monotonic() + 60
                while (current := plane.admin.get_run("p", run.id)).status not in (
                    "succeeded",
                    "failed",
                ):
                    assert time.monotonic() < deadline, current
                    time.sleep(0.2)
                assert current.status == "failed"
                assert "No space left" in current.status_reason, current
                leftovers = [p for p in mount.rglob("*") if p.is_file() and p != filler]
                assert all(not p.name.startswith(".") for p in leftovers), (
                    leftovers
                )  # no temp files
                assert not any(p.name == "job.json" for p in leftovers)
            finally:
                second.terminate()
                second.wait(timeout=30)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
