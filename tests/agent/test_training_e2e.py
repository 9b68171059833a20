"""Training through the agent: DP-SGD and adversarial training, sealed checkpoints and models,
the privacy gate, and a run killed mid-training that resumes to the same model."""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_core import to_jsonable_python

from bastion.client import ModelVersionOut
from bastion.data.reference import patients
from bastion.security.envelope import read_header
from tests.agent.test_agent_e2e import (
    Plane,
    _wait_status,
    running_plane,
    start_agent,
    wait_for_heartbeat,
)
from tests.conftest import tampered
from tests.server.test_live import _bastion, _bastion_input


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    with running_plane(tmp_path_factory.mktemp("train-plane"), lease_seconds=3) as started:
        incoming = started.storage.parent / "incoming"
        patients(seed=0).to_csv(incoming / "patients.csv", index=False)
        home = started.client_home
        out = str(incoming / "d.npz")
        made = _bastion(home, "data", "reference", "digits", "--rows", "900", "--out", out)
        assert made.returncode == 0, made.stderr
        for source, name, extra in (
            (
                "patients.csv",
                "patients",
                ["--target", "diagnosis", "--subject-id-column", "subject_id"],
            ),
            ("d.npz", "digits", []),
        ):
            done = _bastion(
                home, "data", "register", str(incoming / source), "--name", name, "-p", "p", *extra
            )
            assert done.returncode == 0, done.stdout + done.stderr
        try:
            yield started
        finally:  # tests restart the agent; stop whichever one is running now
            if started.agent.poll() is None:
                started.agent.terminate()
                started.agent.wait(timeout=30)


def _submit(plane: Plane, tmp_path: Path, spec: dict[str, Any], *extra: str) -> tuple[int, str]:
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    # A followed training run can take minutes on a loaded two-core host.
    result = _bastion(plane.client_home, "run", "submit", str(path), *extra, timeout=420)
    return result.returncode, result.stdout + result.stderr


def _model_version(plane: Plane, name: str) -> ModelVersionOut:
    versions = plane.admin.model_versions("p", name)
    assert len(versions) == 1, versions
    return versions[0]


PATIENTS_SPEC: dict[str, Any] = {
    "name": "readmission",
    "project": "p",
    "cluster": "c1",
    "dataset": "patients@1",
    "sensitive_features": ["sex"],
    "model": {"builtin": "mlp", "hidden": [32]},
    "train": {
        "epochs": 3,
        "batch_size": 64,
        "lr": 0.5,
        "privacy": {"target_epsilon": 3.0, "delta": 1e-5, "max_grad_norm": 1.0},
        "adversarial": {"attack": "pgd", "eps": 0.05, "steps": 2},
    },
}
#: The evaluate stage, small: the first test's run carries it.
EVALUATE: dict[str, Any] = {
    "robustness": {"eps": [0.05, 0.2], "steps": 5, "max_rows": 200},
    "membership_inference": {"attack": "lira", "shadow_models": 4, "max_rows": 200},
    "fairness": True,
    "explain": {"rows": 16, "repeats": 2, "steps": 8},
}


def test_a_private_robust_model_is_trained_sealed_and_registered(
    plane: Plane, tmp_path: Path
) -> None:
    code, output = _submit(plane, tmp_path, {**PATIENTS_SPEC, "evaluate": EVALUATE}, "--follow")
    assert code == 0, output
    assert "epoch 3/3" in output and "registered model readmission@1" in output
    version = _model_version(plane, "readmission")
    evidence = version.evidence
    assert 0 < evidence["epsilon"] <= 3.0 + 1e-6 and evidence["delta"] == 1e-5
    assert evidence["dataset"] == "patients@1" and evidence["target"] == "diagnosis"
    # Identifier columns were left out of the features by default.
    assert not set(evidence["features"]) & {"ssn", "email", "name", "subject_id", "card_number"}
    assert "mean_radius" in evidence["features"] and "sex" in evidence["features"]
    assert len(evidence["weights_sha256"]) == 64 and evidence["train_accuracy"] > 0.5
    run_id, manifest_hash = version.run_id, version.manifest_hash
    assert run_id is not None and manifest_hash is not None
    metrics = {m.name for m in plane.admin.run_metrics("p", run_id)}
    assert metrics == {"loss", "accuracy", "epsilon"}
    # In the compute plane: an encrypted, signed model and sealed checkpoints; no plaintext.
    stored = plane.storage / "models" / "p" / "readmission" / manifest_hash
    assert sorted(p.name for p in stored.iterdir()) == [
        "manifest.json",
        "manifest.json.sig",
        "metadata.json.bst",
        "model.json.bst",
        "schema.json.bst",
        "weights.safetensors.bst",
    ]
    checkpoints = list((plane.storage / "checkpoints" / "p" / run_id).iterdir())
    assert len(checkpoints) == 3
    workdir = plane.storage / "runs" / run_id / "attempt-1"
    assert not any((workdir / name).exists() for name in ("inputs", "outputs", "sealing"))
    assert not list(workdir.rglob("*.safetensors"))
    events = [e.message for e in plane.admin.run_events("p", run_id)]
    assert any(m.startswith("step 3 sealed ") for m in events)
    # The model verbs.
    listed = _bastion(plane.client_home, "model", "list", "-p", "p")
    assert (
        listed.returncode == 0
        and "readmission@1" in listed.stdout
        and "patients@1" in listed.stdout
    )
    shown = _bastion(plane.client_home, "model", "show", "readmission@1", "-p", "p")
    assert shown.returncode == 0 and evidence["weights_sha256"] in shown.stdout
    verified = _bastion(plane.client_home, "model", "verify", "readmission@1", "-p", "p")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "weights load" in verified.stdout
    with tampered(stored / "weights.safetensors.bst"):
        refused = _bastion(plane.client_home, "model", "verify", "readmission@1", "-p", "p")
    assert refused.returncode == 1 and "weights.safetensors" in refused.stdout + refused.stderr
    _the_evaluate_stage_left_its_evidence(plane, tmp_path, version)


def _the_evaluate_stage_left_its_evidence(
    plane: Plane, tmp_path: Path, version: ModelVersionOut
) -> None:
    evidence = version.evidence
    assert "evaluation" not in evidence  # stored as evaluations, not inside the evidence
    split = evidence["split"]
    assert split["train_rows"] + split["test_rows"] == 569 and split["holdout"] == 0.2
    assert 0.5 < evidence["test_accuracy"] <= 1.0
    stored = plane.admin.model_evaluations("p", "readmission", 1)
    assert sorted(e.kind for e in stored) == ["explain", "fairness", "membership", "robustness"]
    found = {e.kind: e.summary for e in stored}
    robustness = found["robustness"]
    assert robustness["rows"] == 114 and len(robustness["curve"]) == 4  # all held out
    membership = found["membership"]
    # The agent granted 2 workers; 4 shadows this small train faster in the job's process
    # than a worker starts, so the fan-out may keep them there.
    assert membership["shadow_models"] == 4 and membership["fanout_width"] in (1, 2)
    logs = [line.line for line in plane.admin.run_logs("p", str(version.run_id))]
    assert any("training 4 shadow models, up to 2 at a time" in line for line in logs)
    assert membership["epsilon"] == evidence["epsilon"] and membership["rows"] == 200
    assert 0.3 < membership["auc"] < 0.7  # DP at epsilon 3 on a tiny audit: near chance
    assert {g["group"] for g in found["fairness"]["features"]["sex"]["groups"]} == {"F", "M"}
    assert set(found["explain"]["top_features"]) <= set(evidence["features"])
    # The card and its scorecard, from the stored evidence.
    card = plane.admin.model_card("p", "readmission", 1)
    status = {item["id"]: item["status"] for item in card["scorecard"]}
    assert len(status) == 10 and status["ML03"] == "pass" and status["ML06"] == "pass"
    assert status["ML05"] == "not assessed" and status["ML04"] in ("pass", "fail")
    assert card["data"]["scans"]["pii"]["columns"]  # the training data's PII scan is cited
    page = tmp_path / "card.html"
    shown = _bastion(
        plane.client_home, "model", "card", "readmission@1", "-p", "p", "--html", str(page)
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "security scorecard" in shown.stdout and "ML04" in shown.stdout
    html = page.read_text()
    assert html.count("<svg") == 3 and "<script" not in html and "Robustness curve" in html
    # An evaluation of the registered version, from the CLI, joins the stored evidence.
    again = _bastion(
        plane.client_home,
        "eval",
        "robustness",
        "readmission@1",
        "-p",
        "p",
        "--eps",
        "0.5",
        "--attack",
        "pgd",
        "--steps",
        "3",
        "--max-rows",
        "50",
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "robustness of readmission@1" in again.stdout
    newest = plane.admin.model_card("p", "readmission", 1)["robustness"]
    assert newest["rows"] == 50 and newest["evaluations_merged"] == 2
    curve = {(p["attack"], p["eps"]) for p in newest["curve"]}  # the new eps joins the curve
    assert curve == {("fgsm", 0.05), ("fgsm", 0.2), ("pgd", 0.05), ("pgd", 0.2), ("pgd", 0.5)}
    assert len(plane.admin.model_evaluations("p", "readmission", 1)) == 5
    _promotion_through_the_cli(plane, tmp_path)


def _promotion_through_the_cli(plane: Plane, tmp_path: Path) -> None:
    """Gates, separation of duties, a reviewer's approval, history, alerts, the report."""
    home = plane.client_home
    strict = tmp_path / "strict.yaml"
    strict.write_text(yaml.safe_dump({"max_epsilon": 1.0, "require_signature": True}))
    lenient = tmp_path / "production.yaml"
    lenient.write_text(
        yaml.safe_dump(
            {
                "min_accuracy": 0.8,
                "max_epsilon": 5,
                "max_mia_auc": 0.7,
                "min_robust_accuracy": {"eps": 0.05, "value": 0.5},
                "require_signature": True,
                "require_pii_scan": True,
                "require_poisoning_scan": True,
                "approvals": 1,
            }
        )
    )
    for name, path in (("strict", strict), ("production", lenient)):
        saved = _bastion(home, "policy", "put", name, "-p", "p", "--file", str(path))
        assert saved.returncode == 0, saved.stdout + saved.stderr
    unknown = tmp_path / "typo.yaml"
    unknown.write_text("min_acuracy: 0.9\n")
    typo = _bastion(home, "policy", "put", "typo", "-p", "p", "--file", str(unknown))
    assert typo.returncode == 2 and "min_acuracy" in typo.stderr
    refused = _bastion(home, "model", "promote", "readmission@1", "-p", "p", "--policy", "strict")
    assert refused.returncode == 1 and "max_epsilon" in refused.stderr
    opened = _bastion(home, "model", "promote", "readmission@1", "-p", "p", "--to", "production")
    assert opened.returncode == 0, opened.stdout + opened.stderr
    assert "approval requested" in opened.stdout
    # The admin submitted the training run: it created the version and cannot approve it.
    own = _bastion(home, "model", "approve", "readmission@1", "-p", "p", "-m", "mine")
    assert own.returncode == 1 and "separation of duties" in own.stderr
    for args in (
        ("user", "create", "rita"),
        ("member", "add", "p", "rita", "--role", "reviewer"),
    ):
        assert _bastion(home, *args).returncode == 0
    # The admin cannot mint rita a token (it would approve in her name); she logs in herself.
    minted = _bastion(home, "token", "create", "rita-cli", "--user", "rita")
    assert minted.returncode == 1 and "machine identities only" in minted.stderr
    secret = "rita's own passphrase"
    assert _bastion_input(home, f"{secret}\n{secret}\n", "user", "password", "rita").returncode == 0
    rita = tmp_path / "rita"
    login = _bastion_input(rita, f"{secret}\n", "login", "--url", plane.url, "--username", "rita")
    assert login.returncode == 0, login.stdout + login.stderr
    approved = _bastion(rita, "model", "approve", "readmission@1", "-p", "p", "-m", "card read")
    assert approved.returncode == 0 and "now in production" in approved.stdout
    history = _bastion(home, "model", "history", "readmission", "-p", "p")
    assert history.returncode == 0 and "production" in history.stdout
    assert _bastion(home, "alerts", "list").returncode == 0
    raised = {(a.kind, a.actor) for a in plane.admin.list_alerts()}
    assert ("self_approval", "user:admin") in raised
    report = tmp_path / "hipaa.md"
    written = _bastion(home, "compliance", "report", "--framework", "hipaa", "--out", str(report))
    assert written.returncode == 0, written.stdout + written.stderr
    assert "## 164.312(b) Audit controls: **pass**" in report.read_text()


def test_identifier_features_are_refused_unless_overridden_and_audited(
    plane: Plane, tmp_path: Path
) -> None:
    spec = {**PATIENTS_SPEC, "name": "leaky", "features": ["mean_radius", "ssn"]}
    code, output = _submit(plane, tmp_path, spec)
    assert code == 1 and "ssn in patients@1 identify people" in output, output
    assert all(run.name != "leaky" for run in plane.admin.list_runs("p"))
    allowed = {**spec, "train": {**spec["train"], "allow_identifier_features": ["ssn"]}}
    code, output = _submit(plane, tmp_path, allowed)
    assert code == 0, output
    run_id = output.split()[2]
    plane.admin.cancel_run("p", run_id)
    overrides = [
        e for e in plane.admin.audit_events(limit=500) if e.action == "run.privacy_override"
    ]
    assert overrides and overrides[-1].details["identifier_features"] == ["ssn"]
    unknown = {**PATIENTS_SPEC, "name": "typo", "features": ["mean_radiuss"]}
    code, output = _submit(plane, tmp_path, unknown)
    assert code == 2 and "mean_radiuss" in output


def _restart_agent(plane: Plane) -> None:
    """Start the cluster's agent again (same home, storage and import root) after a kill."""
    plane.agent = start_agent(
        plane.agent_home,
        plane.url,
        "c1",
        plane.storage,
        import_root=plane.storage.parent / "incoming",
    )
    wait_for_heartbeat(plane.admin, plane.agent, "c1")


def _digits_spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "project": "p",
        "cluster": "c1",
        "max_retries": 1,
        "dataset": "digits@1",
        "model": {"builtin": "cnn"},
        "train": {
            "epochs": 4,
            "lr": 0.05,
            "seed": 3,
            "adversarial": {"attack": "pgd", "eps": 0.1, "steps": 3},
        },
    }


@pytest.mark.slow
def test_a_run_killed_mid_training_resumes_to_the_same_model(plane: Plane, tmp_path: Path) -> None:
    code, output = _submit(plane, tmp_path, _digits_spec("digits-whole"), "--follow")
    assert code == 0, output
    whole = _model_version(plane, "digits-whole").evidence
    assert whole["backdoor_scan"]["poisoned_classes"] == []
    run = plane.admin.submit_run(_digits_spec("digits-killed"))
    deadline = time.monotonic() + 120
    while not any(
        e.message.startswith(("step 2 sealed", "step 3 sealed"))
        for e in plane.admin.run_events("p", run.id)
    ):
        assert time.monotonic() < deadline, plane.admin.get_run("p", run.id)
        time.sleep(0.05)
    plane.agent.send_signal(signal.SIGKILL)
    plane.agent.wait(timeout=10)
    assert plane.admin.get_run("p", run.id).status == "running"
    attempt1 = plane.storage / "runs" / run.id / "attempt-1"
    assert _plaintext(attempt1), "the killed attempt should have left decrypted inputs"
    _restart_agent(plane)
    # The restarted agent wipes the plaintext the killed one left, before it leases anything.
    deadline = time.monotonic() + 60
    while left := _plaintext(attempt1):
        assert time.monotonic() < deadline, left
        time.sleep(0.1)
    current = _wait_status(plane.admin, run.id, {"succeeded", "failed"}, timeout=180)
    assert current.status == "succeeded" and current.attempt == 2, current
    logs = [line.line for line in plane.admin.run_logs("p", run.id)]
    assert any(line.startswith("resuming from the sealed checkpoint") for line in logs), logs
    resumed = _model_version(plane, "digits-killed").evidence
    assert resumed["weights_sha256"] == whole["weights_sha256"]
    assert resumed["history"] == whole["history"]
    # No plaintext of the run is left anywhere under storage; what is sealed stays.
    assert _plaintext(plane.storage / "runs" / run.id) == []
    assert list((plane.storage / "checkpoints" / "p" / run.id).glob("*/weights.safetensors.bst"))


def _plaintext(folder: Path) -> list[str]:
    """Files under ``folder`` other than a job's description and log (rows, weights, ...).

    The agent may be wiping the folder while it is walked: a directory that vanishes under
    the walk is walked again rather than taken for an error."""
    while folder.exists():
        try:
            return sorted(
                str(path.relative_to(folder))
                for path in folder.rglob("*")
                if path.is_file() and path.name not in ("job.json", "job.log")
            )
        except FileNotFoundError:
            continue
    return []


def test_a_tampered_checkpoint_is_refused_on_resume(plane: Plane) -> None:
    """Resuming verifies the sealed checkpoint first (flip one byte: the attempt fails)."""
    run = plane.admin.submit_run({**_digits_spec("digits-tampered"), "max_retries": 1})
    deadline = time.monotonic() + 120
    while not any(
        e.message.startswith("step 1 sealed") for e in plane.admin.run_events("p", run.id)
    ):
        current = plane.admin.get_run("p", run.id)
        assert current.status in ("queued", "leased", "running"), current
        assert time.monotonic() < deadline, current
        time.sleep(0.05)
    plane.agent.send_signal(signal.SIGKILL)
    plane.agent.wait(timeout=10)
    for sealed in (plane.storage / "checkpoints" / "p" / run.id).glob("*/weights.safetensors.bst"):
        blob = bytearray(sealed.read_bytes())
        blob[-50] ^= 1
        sealed.write_bytes(bytes(blob))
    _restart_agent(plane)
    current = _wait_status(plane.admin, run.id, {"succeeded", "failed"}, timeout=120)
    assert current.status == "failed" and current.attempt == 2, current
    assert "weights.safetensors" in current.status_reason, current


def test_the_pseudonymised_example_trains_without_identifiers(plane: Plane, tmp_path: Path) -> None:
    """The README's flow: pseudonymise, then train with the default features."""
    done = _bastion(
        plane.client_home,
        "data",
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
    assert done.returncode == 0, done.stdout + done.stderr
    version = plane.admin.dataset_version("p", "patients", 2)
    assert {"subject_id", "ssn", "email"} <= set(version.summaries["identifier_columns"])
    spec = {
        **PATIENTS_SPEC,
        "name": "pseudonymised",
        "dataset": "patients@2",
        "train": {"epochs": 2},
    }
    code, output = _submit(plane, tmp_path, spec, "--follow")
    assert code == 0, output
    assert "left out of the features: address" in output
    features = set(_model_version(plane, "pseudonymised").evidence["features"])
    assert not features & {"subject_id", "ssn", "email", "address"}
    assert {"date_of_birth", "sex", "mean_radius"} <= features
    # Lineage: the raw version, the pseudonymised one made from it, the run, the model.
    graph = plane.admin.lineage("p", "dataset:patients@1")
    relations = {(e["from"], e["relation"], e["to"]) for e in graph["edges"]}
    assert ("dataset:patients@1", "derived", "dataset:patients@2") in relations
    trained = [e for e in graph["edges"] if e["to"] == "model:pseudonymised@1"]
    assert len(trained) == 1 and trained[0]["relation"] == "produced"
    assert ("dataset:patients@2", "input", trained[0]["from"]) in relations
    shown = _bastion(plane.client_home, "data", "lineage", "patients@1", "-p", "p")
    assert shown.returncode == 0 and "dataset:patients@1 --derived--> dataset:patients@2" in (
        shown.stdout
    )
    missing = _bastion(plane.client_home, "model", "lineage", "nothing@1", "-p", "p")
    assert missing.returncode == 2 and "not in project" in missing.stderr


def test_erasure_removes_a_subject_from_every_version_and_flags_the_models(
    plane: Plane, tmp_path: Path
) -> None:
    """GDPR Art. 17 on the patients workload: raw and pseudonymised versions, a hold."""
    home = plane.client_home
    subject = "S000-0000007"  # a patient of the reference data, in both versions
    versions = {v.version for v in plane.admin.dataset_versions("p", "patients")}
    assert {1, 2} <= versions  # the raw version and the pseudonymised one made from it
    # Subject-level lineage first: where the subject is, and what was made from it.
    where = _bastion(home, "privacy", "find", "-p", "p", "--subject-id", subject)
    assert where.returncode == 0, where.stdout + where.stderr
    assert "found, 2 row(s) found" in where.stdout and "pseudonymised@1" in where.stdout
    assert len(plane.admin.dataset_versions("p", "patients")) == len(versions)  # nothing changed
    held = _bastion(home, "data", "hold", "patients@1", "-p", "p", "--reason", "litigation")
    assert held.returncode == 0, held.stdout + held.stderr
    erased = _bastion(
        home, "privacy", "erase", "-p", "p", "--subject-id", subject, "--reason", "Art. 17 request"
    )
    assert erased.returncode == 0, erased.stdout + erased.stderr
    assert "completed, 2 row(s) removed" in erased.stdout
    assert "retrain recommended" in erased.stdout
    after = {v.version: v for v in plane.admin.dataset_versions("p", "patients")}
    made = {v.parent_version: v for n, v in after.items() if n not in versions}
    assert set(made) == {1, 2} and all(v.row_count == 568 for v in made.values())
    assert after[1].shredded_at is None and after[1].retention_hold == "litigation"
    assert after[2].shredded_at is not None  # its data keys are gone
    stored = plane.storage / "datasets" / "p" / "patients" / after[2].manifest_hash
    assert all(read_header(path).shredded for path in stored.glob("*.bst"))
    refused = _bastion(home, "data", "verify", "patients@2", "-p", "p")
    assert refused.returncode == 2 and "crypto-shredded" in refused.stderr
    erasure_id = erased.stdout.split("erasure ", 1)[1].split(":", 1)[0]
    found = plane.admin.erasure("p", erasure_id)
    trained_on = {
        f"{m.name}@{v.version}"
        for m in plane.admin.list_models("p")
        for v in plane.admin.model_versions("p", m.name)
        if v.evidence.get("dataset") in ("patients@1", "patients@2")
    }
    assert "pseudonymised@1" in trained_on and set(found.models_flagged) == trained_on
    shown = _bastion(home, "model", "show", "pseudonymised@1", "-p", "p")
    assert "trained on erased data" in shown.stdout and "retrain on" in shown.stdout
    flags = _model_version(plane, "pseudonymised").flags["trained_on_erased_data"]
    assert flags["dataset"] == "patients@2"
    assert flags["recommendation"] == f"retrain on patients@{made[2].version}"
    # The control plane never holds the subject id itself: only a keyed pseudonym.
    events = json.dumps(to_jsonable_python(plane.admin.audit_events(limit=1000)))
    assert subject not in events and "subj_" in events
    unknown = _bastion(
        home, "privacy", "erase", "-p", "p", "--subject-id", "S999-nobody", "--reason", "request"
    )
    assert unknown.returncode == 1 and "holds that subject" in unknown.stderr
    # The register lists the three requests, newest first, without the subject id.
    register = _bastion(home, "privacy", "list", "-p", "p")
    assert register.returncode == 0, register.stdout + register.stderr
    assert "3 request(s)" in register.stdout and subject not in register.stdout
    statuses = [r.status for r in plane.admin.erasures("p")]
    assert statuses == ["no data found", "completed", "found"]


# Last: it adds cluster c2 (with a dataset of its own) and stops c2's agent afterwards.
def test_pretrain_on_one_cluster_and_fine_tune_on_another(plane: Plane, tmp_path: Path) -> None:
    home = plane.client_home
    created = _bastion(home, "cluster", "create", "c2")
    assert created.returncode == 0, created.stderr
    incoming2 = tmp_path / "incoming2"
    incoming2.mkdir()
    second = start_agent(
        tmp_path / "agent2",
        plane.url,
        "c2",
        tmp_path / "storage2",
        created.stdout.splitlines()[1].strip(),
        import_root=incoming2,
    )
    try:
        wait_for_heartbeat(plane.admin, second, "c2")
        public = {
            "name": "public-mlp",
            "project": "p",
            "cluster": "c1",
            "dataset": "patients@1",
            "model": {"builtin": "mlp", "hidden": [32]},
            "train": {"epochs": 2},
        }
        code, output = _submit(plane, tmp_path, public, "--follow")
        assert code == 0, output
        done = _bastion(home, "model", "export", "public-mlp@1", "--to-cluster", "c2", "-p", "p")
        assert done.returncode == 0, done.stdout + done.stderr
        exported = Path(next(w for w in done.stdout.split() if w.endswith(".bxfer")))
        assert exported.is_file() and b"weights" in exported.read_bytes()[:4096]  # names only
        # The file opens only on the cluster it is addressed to.
        shutil.copy(exported, plane.storage.parent / "incoming" / "wrong.bxfer")
        wrong = _bastion(
            home,
            "model",
            "import",
            str(plane.storage.parent / "incoming" / "wrong.bxfer"),
            "--name",
            "stolen",
            "-p",
            "p",
            "--cluster",
            "c1",
        )
        assert wrong.returncode == 1 and "addressed to cluster 'c2'" in wrong.stdout + wrong.stderr
        shutil.copy(exported, incoming2 / "public.bxfer")
        # (A tampered or truncated file is refused: tests/security/test_transfer.py.)
        imported = _bastion(
            home,
            "model",
            "import",
            str(incoming2 / "public.bxfer"),
            "--name",
            "public-mlp-c2",
            "-p",
            "p",
            "--cluster",
            "c2",
        )
        assert imported.returncode == 0, imported.stdout + imported.stderr
        assert "imported public-mlp-c2@1 from cluster c1" in imported.stdout
        # Private data on c2; fine-tune from the imported model there.
        patients(rows=300, seed=7).to_csv(incoming2 / "private.csv", index=False)
        registered = _bastion(
            home,
            "data",
            "register",
            str(incoming2 / "private.csv"),
            "--name",
            "private",
            "-p",
            "p",
            "--cluster",
            "c2",
            "--target",
            "diagnosis",
            "--subject-id-column",
            "subject_id",
        )
        assert registered.returncode == 0, registered.stdout + registered.stderr
        private = {
            **public,
            "name": "private-mlp",
            "cluster": "c2",
            "dataset": "private@1",
            "init_from": "public-mlp-c2@1",
        }
        code, output = _submit(plane, tmp_path, private, "--follow")
        assert code == 0, output
        assert "fine-tuning from public-mlp-c2@1" in output
        evidence = _model_version(plane, "private-mlp").evidence
        assert evidence["initialized_from"]["model"] == "public-mlp-c2@1"
        # A model on another cluster cannot seed a run here without the transfer.
        code, output = _submit(
            plane, tmp_path, {**private, "name": "shortcut", "init_from": "public-mlp@1"}
        )
        assert code == 2 and "export it there first" in output, output
    finally:
        second.terminate()
        second.wait(timeout=30)
