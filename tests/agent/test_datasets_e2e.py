"""Datasets through the agent: register, list, show, verify, scan, pseudonymise; refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from bastion.data.reference import patients
from bastion.errors import BastionError
from tests.agent.test_agent_e2e import Plane, running_plane
from tests.server.test_live import _bastion


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    with running_plane(tmp_path_factory.mktemp("data-plane")) as started:
        yield started


def _incoming(plane: Plane) -> Path:
    return plane.storage.parent / "incoming"


def _data(plane: Plane, *args: str) -> tuple[int, str]:
    result = _bastion(plane.client_home, "data", *args)
    return result.returncode, result.stdout + result.stderr


def _version_dir(plane: Plane, name: str, version: int) -> Path:
    manifest_hash = plane.admin.request(
        "GET", f"/api/v1/projects/p/datasets/{name}/versions/{version}"
    )["manifest_hash"]
    return plane.storage / "datasets" / "p" / name / str(manifest_hash)


@pytest.fixture(scope="module")
def registered(plane: Plane) -> dict[str, object]:
    source = _incoming(plane) / "patients.csv"
    patients(seed=0).to_csv(source, index=False)
    code, output = _data(
        plane,
        "register",
        str(source),
        "--name",
        "patients",
        "-p",
        "p",
        "--target",
        "diagnosis",
        "--subject-id-column",
        "subject_id",
        "--purpose",
        "readmission model",
    )
    assert code == 0, output
    assert "patients@1" in output and "569 rows" in output
    version: dict[str, object] = plane.admin.request(
        "GET", "/api/v1/projects/p/datasets/patients/versions/1"
    )
    return version


def test_registration_encrypts_signs_scans_and_records_metadata(
    plane: Plane, registered: dict[str, object]
) -> None:
    version = registered
    assert version["row_count"] == 569 and version["cluster"] == "c1"
    assert version["purpose"] == "readmission model" and version["target"] == "diagnosis"
    assert version["subject_id_column"] == "subject_id"
    summaries = version["summaries"]
    assert isinstance(summaries, dict)
    found = {c["column"]: c["entity"] for c in summaries["pii"]["columns"]}
    assert found["ssn"] == "us_ssn" and found["email"] == "email"
    assert found["card_number"] == "card_number" and found["name"] == "person"
    assert summaries["poisoning"]["label_issues"]["rows_scanned"] == 569
    schema = version["schema"]
    assert isinstance(schema, dict) and schema["kind"] == "table" and schema["published"]
    # The control plane holds the published schema: identifiers redacted, bounds rounded.
    columns = {c["name"]: c for c in schema["columns"]}
    for name in ("card_number", "ssn", "email", "subject_id"):
        assert columns[name]["redacted"] is True, name
        assert columns[name]["minimum"] is columns[name]["maximum"] is None, name
        assert columns[name]["max_length"] is None, name
    radius = columns["mean_radius"]  # 6.981 to 28.11 in the data
    assert (radius["minimum"], radius["maximum"]) == (0.0, 30.0)
    assert columns["sex"]["categories"] == ["F", "M"] and not columns["sex"]["redacted"]
    # In the compute plane: ciphertext (the data and its exact schema), a manifest and its
    # signature; no plaintext.
    directory = _version_dir(plane, "patients", 1)
    assert sorted(p.name for p in directory.iterdir()) == [
        "data.parquet.bst",
        "manifest.json",
        "manifest.json.sig",
        "schema.json.bst",
    ]
    first_ssn = str(patients(seed=0)["ssn"].iloc[0]).encode()
    assert first_ssn not in (directory / "data.parquet.bst").read_bytes()
    assert not list(plane.storage.glob("runs/*/attempt-*/inputs"))
    assert not list(plane.storage.glob("runs/*/attempt-*/outputs"))
    # The CLI's views.
    code, listed = _data(plane, "list", "-p", "p")
    assert code == 0 and "patients@1" in listed and "569" in listed
    code, shown = _data(plane, "show", "patients@1", "-p", "p")
    assert code == 0 and "us_ssn" in shown and "readmission model" in shown
    code, schema_text = _data(plane, "show", "patients@1", "-p", "p", "--schema")
    assert code == 0 and json.loads(schema_text)["kind"] == "table"
    actions = [e.action for e in plane.admin.audit_events(limit=500)]
    assert "dataset.create" in actions and "dataset.version.create" in actions


def test_verify_and_scan_run_on_the_agent(plane: Plane, registered: dict[str, object]) -> None:
    code, output = _data(plane, "verify", "patients@1", "-p", "p")
    assert code == 0, output
    assert "signature and content verified" in output
    code, output = _data(plane, "scan", "patients@1", "-p", "p")
    assert code == 0, output
    assert "us_ssn" in output and "suspected label issue" in output


def test_pseudonymise_makes_a_new_version_without_identifiers(
    plane: Plane, registered: dict[str, object]
) -> None:
    code, output = _data(
        plane,
        "pseudonymize",
        "patients@1",
        "-p",
        "p",
        "--columns",
        "subject_id,ssn,email",
        "--drop",
        "name,phone,card_number",
        "--age-band",
        "date_of_birth",
        "--zip3",
        "address",
    )
    assert code == 0, output
    assert "patients@2" in output and "made from patients@1" in output
    version = plane.admin.request("GET", "/api/v1/projects/p/datasets/patients/versions/2")
    assert version["parent_version"] == 1 and version["purpose"] == "readmission model"
    columns = {c["name"] for c in version["schema"]["columns"]}
    assert "name" not in columns and "card_number" not in columns and "ssn" in columns
    found = {c["column"] for c in version["summaries"]["pii"]["columns"]}
    assert not found & {"ssn", "email", "date_of_birth", "address", "name"}, found
    # The columns changed on purpose are not drift; the rest did not move.
    drift = version["summaries"]["drift"]
    assert drift["transformed"] == ["address", "date_of_birth", "email", "ssn", "subject_id"]
    assert not {c["column"] for c in drift["columns"]} & set(drift["transformed"])
    assert drift["drifted"] == 0, drift
    assert _data(plane, "verify", "patients@2", "-p", "p")[0] == 0


def test_a_tampered_version_is_refused_and_verify_exits_1(
    plane: Plane, registered: dict[str, object], tmp_path: Path
) -> None:
    source = _incoming(plane) / "small.parquet"
    patients(rows=50, seed=1).to_parquet(source, index=False)
    code, output = _data(plane, "register", str(source), "--name", "small", "-p", "p")
    assert code == 0, output
    directory = _version_dir(plane, "small", 1)
    data = directory / "data.parquet.bst"
    original = data.read_bytes()
    data.write_bytes(original[:-40] + bytes(b ^ 0xFF for b in original[-40:]))
    code, output = _data(plane, "verify", "small@1", "-p", "p")
    assert code == 1, output
    assert "data.parquet" in output and "failed" in output
    # Any use (a scan here) verifies first and refuses it too.
    assert _data(plane, "scan", "small@1", "-p", "p")[0] == 1
    data.write_bytes(original)
    assert _data(plane, "verify", "small@1", "-p", "p")[0] == 0
    manifest = directory / "manifest.json"
    body = manifest.read_bytes()
    manifest.write_bytes(body.replace(b'"rows":50', b'"rows":49'))
    code, output = _data(plane, "verify", "small@1", "-p", "p")
    assert code == 1 and "manifest" in output, output
    manifest.write_bytes(body)
    (directory / "extra.txt").write_text("planted")
    code, output = _data(plane, "verify", "small@1", "-p", "p")
    assert code == 1 and "extra.txt" in output, output


def test_refusals_name_the_problem(plane: Plane, tmp_path: Path) -> None:
    outside = tmp_path / "outside.csv"
    patients(rows=20, seed=2).to_csv(outside, index=False)
    code, output = _data(plane, "register", str(outside), "--name", "outside", "-p", "p")
    assert code == 1 and "outside the agent's import roots" in output, output
    code, output = _data(plane, "verify", "nothing@1", "-p", "p")
    assert code == 2 and "does not exist" in output
    code, output = _data(plane, "verify", "nothing", "-p", "p")
    assert code == 2 and "NAME@VERSION" in output
    bad = _incoming(plane) / "notes.txt"
    bad.write_text("hello")
    code, output = _data(plane, "register", str(bad), "--name", "notes", "-p", "p")
    assert code == 1 and "unsupported format" in output, output
    table = _incoming(plane) / "t.csv"
    pd.DataFrame({"a": [1, 2, 3]}).to_csv(table, index=False)
    code, output = _data(plane, "register", str(table), "--name", "t", "-p", "p", "--target", "b")
    assert code == 1 and "target 'b' is not a column" in output, output
    # Dataset jobs cannot be smuggled in as plain run specs.
    spec = {
        "name": "x",
        "project": "p",
        "cluster": "c1",
        "job": {"type": "verify", "dataset": "patients@1"},
    }
    with pytest.raises(BastionError, match="queued by 'bastion data' verbs"):
        plane.admin.submit_run(spec)


def test_image_datasets_register_with_an_image_schema(plane: Plane) -> None:
    code, output = _data(plane, "reference", "digits", "--out", str(_incoming(plane) / "d.npz"))
    assert code == 0, output
    code, output = _data(
        plane, "register", str(_incoming(plane) / "d.npz"), "--name", "digits", "-p", "p"
    )
    assert code == 0, output
    version = plane.admin.request("GET", "/api/v1/projects/p/datasets/digits/versions/1")
    assert version["schema"]["kind"] == "images" and version["schema"]["shape"] == [8, 8]
    assert version["row_count"] == 1797
    assert _data(plane, "verify", "digits@1", "-p", "p")[0] == 0


def test_a_steward_edits_the_schema_and_verify_enforces_it(
    plane: Plane, registered: dict[str, object], tmp_path: Path
) -> None:
    schema = plane.admin.dataset_version("p", "patients", 1).schema_
    radius = next(c for c in schema["columns"] if c["name"] == "mean_radius")
    radius["maximum"] = 20.0  # tighter than the data: some rows now break the rule
    edited = tmp_path / "schema.json"
    edited.write_text(json.dumps(schema))
    code, output = _data(plane, "schema", "patients@1", "-p", "p", "--file", str(edited))
    assert code == 0, output
    version = plane.admin.dataset_version("p", "patients", 1)
    assert version.schema_edited is True
    code, output = _data(plane, "verify", "patients@1", "-p", "p")
    assert code == 0 and "mean_radius" in output and "1 schema violation" in output, output
    # Refusals: a schema of the wrong kind, an unknown field; both leave the schema alone.
    edited.write_text(json.dumps({"kind": "images", "shape": [8, 8]}))
    code, output = _data(plane, "schema", "patients@1", "-p", "p", "--file", str(edited))
    assert code == 2 and "schema" in output, output
    edited.write_text(json.dumps({**schema, "colour": "blue"}))
    code, output = _data(plane, "schema", "patients@1", "-p", "p", "--file", str(edited))
    assert code == 2 and "colour" in output, output
    assert plane.admin.dataset_version("p", "patients", 1).schema_ == schema
    actions = [e.action for e in plane.admin.audit_events(limit=1000)]
    assert "dataset.schema.edit" in actions
