"""Datasets through the agent: register, list, show, verify, scan, pseudonymise; refusals."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from bastion.data.notes import write_notes
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


@pytest.fixture(scope="module")
def redacted_notes(plane: Plane) -> tuple[Path, Path]:
    """Clinical notes registered as notes@1 and redacted into notes@2: the files."""
    source = _incoming(plane) / "notes.csv"
    _, truth = write_notes(source, rows=80, seed=4)
    code, output = _data(
        plane, "register", str(source), "--name", "notes", "-p", "p", "--target", "diagnosis"
    )
    assert code == 0, output
    code, output = _data(plane, "redact", "notes@1", "-p", "p", "--columns", "note")
    assert code == 0, output
    assert "notes@2" in output and "note: replaced" in output, output
    return source, truth


def test_redaction_replaces_identifiers_inside_notes(
    plane: Plane, redacted_notes: tuple[Path, Path]
) -> None:
    """Clinical notes with identifiers in their sentences: a new version whose notes hold
    typed placeholders instead; the control plane learns the counts, never the text."""
    source, truth = redacted_notes
    expected = Counter(
        span[2] for line in truth.read_text().splitlines() for span in json.loads(line)["spans"]
    )
    version = plane.admin.request("GET", "/api/v1/projects/p/datasets/notes/versions/2")
    counts = version["summaries"]["redaction"]["note"]
    for entity, number in expected.items():
        assert abs(counts.get(entity, 0) - number) <= max(1, 0.03 * number), (counts, expected)
    assert version["summaries"]["pseudonymization"]["redacted"] == {"note": "placeholder"}
    flagged = {f["column"] for f in version["summaries"]["pii"]["columns"] if not f.get("suspect")}
    assert "note" not in flagged, version["summaries"]["pii"]
    types = {c["name"]: c["type"] for c in version["schema"]["columns"]}
    assert types["note"] == "text", types
    texts = pd.read_csv(source)["note"].tolist()
    spans = [json.loads(line)["spans"] for line in truth.read_text().splitlines()]
    written = json.dumps(version)
    for text, found in zip(texts, spans, strict=True):  # no identifier reaches the plane
        assert not any(text[start:end] in written for start, end, _ in found)


def test_a_transformer_trains_with_dp_sgd_on_the_redacted_notes(
    plane: Plane, redacted_notes: tuple[Path, Path], tmp_path: Path
) -> None:
    """The text column of notes@2 (redacted) trains the built-in transformer under DP-SGD:
    the job learns its tokenizer from the training rows and reports epsilon; the version
    records the text column as its one feature. notes@1 (not redacted) is refused."""
    spec = {
        "name": "notes-transformer",
        "project": "p",
        "cluster": "c1",
        "dataset": "notes@2",
        "purpose": "diagnosis support",
        "model": {
            "builtin": "transformer",
            "dim": 16,
            "layers": 1,
            "heads": 2,
            "vocab_size": 400,
            "max_length": 48,
            "vocab_min_rows": 3,
        },
        "train": {
            "epochs": 2,
            "batch_size": 16,
            "lr": 0.03,
            "optimizer": "adam",
            "privacy": {"target_epsilon": 8.0},
        },
    }
    version = plane.admin.request("GET", "/api/v1/projects/p/datasets/notes/versions/2")
    if "note" in version["summaries"].get("suspect_columns", []):  # names the redaction missed
        spec["train"]["allow_identifier_features"] = ["note"]  # type: ignore[index]
    path = tmp_path / "notes.yaml"
    path.write_text(json.dumps(spec))
    result = _bastion(plane.client_home, "run", "submit", str(path), "--follow")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "text column note: a tokenizer of" in out and "epsilon" in out, out
    model = plane.admin.request("GET", "/api/v1/projects/p/models/notes-transformer/versions/1")
    assert model["evidence"]["features"] == ["note"], model["evidence"]
    assert model["evidence"]["epsilon"] <= 8.0
    # Fine-tuned from it with LoRA under DP-SGD: its tokenizer, only the adapters trained.
    tuned = {**spec, "name": "notes-lora", "init_from": "notes-transformer@1"}
    tuned["train"] = {**spec["train"], "lora": {"rank": 4}}  # type: ignore[dict-item]
    path.write_text(json.dumps(tuned))
    result = _bastion(plane.client_home, "run", "submit", str(path), "--follow")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "text column note: the tokenizer of notes-transformer@1" in out, out
    assert "LoRA rank 4 on qkv, out:" in out and "epsilon" in out, out
    lora = plane.admin.request("GET", "/api/v1/projects/p/models/notes-lora/versions/1")
    assert lora["evidence"]["initialized_from"]["model"] == "notes-transformer@1"
    raw = {**spec, "name": "notes-raw", "dataset": "notes@1"}
    path.write_text(json.dumps(raw))
    refused = _bastion(plane.client_home, "run", "submit", str(path), "--follow")
    assert refused.returncode != 0
    assert "note in notes@1 identify people" in refused.stdout + refused.stderr


def test_a_language_model_fails_the_canary_gate_without_dp_and_passes_with_it(
    plane: Plane, redacted_notes: tuple[Path, Path], tmp_path: Path
) -> None:
    """A gpt with the canary audit (a canary written into 20 training rows): trained without
    privacy on notes@1 (not redacted; the audited override) it completes the canary and the
    max_canary_exposure gate refuses it; under DP-SGD on notes@2 (redacted) the gate passes."""
    model = {
        "builtin": "gpt",
        "dim": 48,
        "layers": 1,
        "heads": 4,
        "vocab_size": 800,
        "max_length": 64,
        "vocab_min_rows": 2,
    }
    audit = {"memorization": {"canaries": [20], "candidates": 500, "samples": 20}}
    runs = {
        "gpt-raw": (
            "notes@1",
            {
                "epochs": 30,
                "batch_size": 16,
                "lr": 0.003,
                "optimizer": "adam",
                "allow_identifier_features": ["note"],
            },
        ),
        "gpt-private": (
            "notes@2",
            {
                "epochs": 30,
                "batch_size": 32,
                "lr": 0.01,
                "optimizer": "adam",
                "privacy": {"target_epsilon": 3.0},
            },
        ),
    }
    for name, (dataset, train) in runs.items():
        spec = {
            "name": name,
            "project": "p",
            "cluster": "c1",
            "dataset": dataset,
            "purpose": "diagnosis support",
            "model": model,
            "train": train,
            "evaluate": audit,
        }
        if dataset == "notes@2":
            version = plane.admin.request("GET", "/api/v1/projects/p/datasets/notes/versions/2")
            if "note" in version["summaries"].get("suspect_columns", []):
                train["allow_identifier_features"] = ["note"]
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps(spec))
        result = _bastion(plane.client_home, "run", "submit", str(path), "--follow")
        out = result.stdout + result.stderr
        assert result.returncode == 0, out
        assert "canary audit: 1 canaries written into 20 training rows" in out, out
        assert "largest canary exposure" in out, out
    policy = tmp_path / "canaries.yaml"
    policy.write_text("max_canary_exposure: 4.0\n")
    saved = _bastion(
        plane.client_home, "policy", "put", "canaries", "-p", "p", "--file", str(policy)
    )
    assert saved.returncode == 0, saved.stdout + saved.stderr
    refused = _bastion(
        plane.client_home, "model", "promote", "gpt-raw@1", "-p", "p", "--policy", "canaries"
    )
    assert refused.returncode == 1 and "max_canary_exposure" in refused.stderr, refused.stdout
    passed = _bastion(
        plane.client_home, "model", "promote", "gpt-private@1", "-p", "p", "--policy", "canaries"
    )
    assert passed.returncode == 0, passed.stdout + passed.stderr
    card = plane.admin.request("GET", "/api/v1/projects/p/models/gpt-raw/versions/1/card")
    (canary,) = card["memorization"]["canaries"]
    assert canary["repeats"] == 20 and canary["exposure"] > 4.0, card["memorization"]
    assert "secret" not in json.dumps(card["memorization"])  # ranks and counts only
    assert (
        card["memorization"]["samples"] == 20 and card["memorization"]["identifiers_searched"] > 0
    )


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
