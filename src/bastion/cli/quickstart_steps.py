"""The steps of ``bastion quickstart``: the whole secure lifecycle, each step checked.

Every step prints what it did and why it matters, then checks that it did it: a step
that did not raises :class:`CheckFailed`, and the quickstart exits 1.
"""

from __future__ import annotations

import copy
import json
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.table import Table

from bastion.cli.compliance_cmd import print_controls
from bastion.cli.context import out
from bastion.cli.data_cmd import print_lineage, print_summaries, version_made_by
from bastion.cli.deploy_cmd import watch
from bastion.cli.models_cmd import gate_table, print_card
from bastion.cli.quickstart_plane import PEOPLE, Plane, create_people, free_port
from bastion.cli.runs_cmd import follow_run
from bastion.cli.up_cmd import CLUSTER, PROJECT
from bastion.client import Client, DeploymentOut, ModelVersionOut, RunOut
from bastion.errors import BastionError, CheckFailed
from bastion.files import atomic_write_bytes
from bastion.security.sealed import sealed_dir

__all__ = ["POLICY", "SPEC", "lifecycle"]

DATASET = "patients"
MODEL = "patients-mlp"
PURPOSE = "diagnosis support"
#: The run: an MLP on the pseudonymised patients, DP-SGD at epsilon 3 with PGD adversarial
#: training, then the evaluation suite on the held-out rows.
SPEC: dict[str, Any] = {
    "name": MODEL,
    "project": PROJECT,
    "cluster": CLUSTER,
    "dataset": f"{DATASET}@2",
    "purpose": PURPOSE,
    "target": "diagnosis",
    "sensitive_features": ["sex"],
    "model": {"builtin": "mlp", "hidden": [128, 64]},
    "train": {
        "epochs": 20,
        "batch_size": 64,
        "lr": 0.5,
        "momentum": 0.0,
        "checkpoint_every": 5,
        "privacy": {"target_epsilon": 3.0, "delta": 1.0e-5, "max_grad_norm": 1.0},
        "adversarial": {"attack": "pgd", "eps": 0.05, "steps": 5, "ratio": 0.5},
    },
    "evaluate": {
        "robustness": {"attacks": ["fgsm", "pgd"], "eps": [0.05, 0.1, 0.2]},
        "membership_inference": {"attack": "lira", "shadow_models": 16},
        "fairness": True,
        "explain": True,
    },
}
#: The production gates (as in examples/policies/production.yaml).
POLICY: dict[str, Any] = {
    "min_accuracy": 0.85,
    "max_epsilon": 10,
    "max_mia_auc": 0.6,
    "max_mia_tpr_at_fpr": {"fpr": 0.01, "value": 0.15},
    "min_robust_accuracy": {"eps": 0.05, "value": 0.5},
    "max_demographic_parity_difference": 0.25,
    "max_equalized_odds_difference": 0.35,
    "require_signature": True,
    "require_pii_scan": True,
    "require_poisoning_scan": True,
    "approvals": 1,
}


def _step(title: str, why: str) -> None:
    out.print(f"\n[bold cyan]{title}[/bold cyan]")
    for line in why.splitlines():
        out.print(f"  [dim]{line}[/dim]")


def _done(text: str) -> None:
    out.print(f"  [green]✓[/green] {text}", soft_wrap=True)


def _refused(text: str) -> None:
    out.print(f"  [green]✓ refused[/green] {text}", soft_wrap=True)


def _require(condition: bool, failure: str) -> None:
    if not condition:
        raise CheckFailed(f"quickstart: {failure}")


def _job(remote: Client, run: RunOut, what: str) -> RunOut:
    """Follow a queued job under progress bars; return it finished, or fail naming why."""
    status = follow_run(remote, PROJECT, run.id, echo=False)
    finished = remote.get_run(PROJECT, run.id)
    if status != "succeeded":
        lines = [line.line for line in remote.run_logs(PROJECT, run.id)][-10:]
        raise CheckFailed(
            f"quickstart: {what} (run {run.id}) {status}: {finished.status_reason}\n"
            + "\n".join(lines)
        )
    return finished


# -- 1. ------------------------------------------------------------------------------------


def people(plane: Plane) -> None:
    _step(
        "1. Start Bastion and create its people",
        "A control plane (API, audit log, dashboard) and an agent that runs jobs where the data\n"
        "lives, on SQLite and local storage. Every action is done by a named person whose role\n"
        "decides what they may do, and every action lands in the tamper-evident audit log.",
    )
    login_page = httpx.get(f"{plane.url}/ui/login", timeout=10)
    _require(login_page.status_code == 200, f"the dashboard answered {login_page.status_code}")
    _done(f"control plane and dashboard at {plane.url}, the agent of cluster {CLUSTER!r} beats")
    roles = create_people(plane)
    table = Table("person", "role", "may")
    table.add_row("admin", roles["admin"], "manages people, policies, datasets, audit")
    for name, (role, may) in PEOPLE.items():
        table.add_row(name, role, may)
    out.print(table)
    for name in PEOPLE:
        _require(plane.clients[name].whoami().username == name, f"{name} could not log in")
    _done(f"each logged in with a password; passwords are in {plane.passwords} (mode 0600)")


# -- 2. ------------------------------------------------------------------------------------


def dataset(plane: Plane) -> None:
    from bastion.data.reference import Reference, write_reference

    _step(
        "2. Register, scan and pseudonymise a sensitive dataset",
        "The agent reads the file where it lies: it scans it for personal data and poisoning,\n"
        "then encrypts and signs it; the control plane sees only metadata. Pseudonymisation\n"
        "replaces identifiers with keyed pseudonyms and coarsens quasi-identifiers.",
    )
    source = write_reference(
        Reference.PATIENTS, out=plane.workdir / "data" / "patients.csv", rows=None, seed=0
    )
    _done(f"generated 569 synthetic patient records (with names, SSNs, emails) in {source}")
    first = _job(
        plane.admin,
        plane.admin.register_dataset(
            PROJECT,
            DATASET,
            cluster=CLUSTER,
            source=str(source),
            target="diagnosis",
            subject_id_column="subject_id",
            purpose=PURPOSE,
        ),
        "registering the dataset",
    )
    raw = version_made_by(plane.admin, PROJECT, DATASET, first.id)
    found = raw.summaries.get("pii", {}).get("columns", [])
    _require(bool(found), "the PII scan found no identifiers in data full of them")
    _done(f"{DATASET}@1 registered: {raw.row_count} rows, encrypted and signed")
    print_summaries(raw.summaries)
    second = _job(
        plane.admin,
        plane.admin.dataset_job(
            PROJECT,
            DATASET,
            1,
            "pseudonymize",
            {
                "pseudonymize": ["subject_id", "ssn", "email"],
                "drop": ["name", "phone", "card_number"],
                "generalize": {"date_of_birth": "age-band", "address": "zip3"},
            },
        ),
        "pseudonymising the dataset",
    )
    clean = version_made_by(plane.admin, PROJECT, DATASET, second.id)
    left = clean.summaries.get("pii", {}).get("columns", [])
    _require(not left, f"identifiers left after pseudonymisation: {left}")
    _done(
        f"{DATASET}@2 made from {DATASET}@1: SSNs, emails and subject ids pseudonymised, "
        "names, phones and card numbers dropped, birth dates cut to age bands, addresses to "
        "three ZIP digits; the PII scan now finds nothing"
    )


# -- 3. ------------------------------------------------------------------------------------


def train(plane: Plane, *, shadow_models: int = 16) -> ModelVersionOut:
    from bastion.spec import load_spec

    run_spec = copy.deepcopy(SPEC)
    run_spec["evaluate"]["membership_inference"]["shadow_models"] = shadow_models

    _step(
        "3. Train privately and robustly, then attack the model",
        "DP-SGD (Opacus) bounds what the model can reveal about any one patient (epsilon 3);\n"
        "PGD adversarial training hardens it against crafted inputs. Checkpoints and the model\n"
        "are encrypted and signed. Then the model is attacked: evasion, membership inference\n"
        f"(LiRA with {shadow_models} shadow models), fairness between groups, explanations.",
    )
    spec_file = plane.workdir / "patients-dp-pgd.yaml"
    header = "# The quickstart's run: bastion run submit this-file --follow\n"
    atomic_write_bytes(spec_file, (header + yaml.safe_dump(run_spec, sort_keys=False)).encode())
    spec = load_spec(spec_file)
    run = plane.engineer.submit_run(spec.model_dump(mode="json"))
    _done(f"ml-engineer submitted {spec_file.name} as run {run.id}")
    finished = _job(plane.engineer, run, "the training run")
    events = plane.engineer.run_events(PROJECT, run.id)
    sealed = [e for e in events if e.stage == "checkpoint"]
    versions = plane.engineer.model_versions(PROJECT, MODEL)
    _require(bool(versions), "the run succeeded but registered no model")
    version = versions[-1]
    evidence = version.evidence
    _require(evidence.get("epsilon") is not None, "the model records no epsilon")
    _done(
        f"trained {SPEC['train']['epochs']} epochs; {len(sealed)} checkpoints sealed "
        f"(encrypted, signed); epsilon spent {evidence['epsilon']:.2f} of 3.0 (delta 1e-5)"
    )
    _done(
        f"{MODEL}@{version.version} sealed: manifest {(version.manifest_hash or '')[:16]}, "
        f"signed by cluster {CLUSTER!r} (run {finished.id[:12]})"
    )
    identifiers = plane.engineer.dataset_version(PROJECT, DATASET, 2).summaries
    kept_out = sorted(set(identifiers["identifier_columns"]) - set(evidence["features"]))
    leaked = set(identifiers["identifier_columns"]) & set(evidence["features"])
    _require(not leaked, f"identifier columns used as features: {sorted(leaked)}")
    _done(
        f"{len(evidence['features'])} feature columns; pseudonymised identifiers kept out of "
        f"them: {', '.join(kept_out)}"
    )
    graph = plane.engineer.lineage(PROJECT, f"dataset:{DATASET}@1")
    produced = [e for e in graph["edges"] if e["to"] == f"model:{MODEL}@{version.version}"]
    _require(len(produced) == 1, "the lineage does not lead from the raw data to the model")
    _done("lineage, from the raw upload to the model:")
    print_lineage(graph, indent="    ")
    return version


# -- 4. ------------------------------------------------------------------------------------


def card(plane: Plane, version: ModelVersionOut) -> Path:
    _step(
        "4. Read the model card",
        "The evidence a reviewer needs in one place: data and its hashes, accuracy, epsilon,\n"
        "robust accuracy, membership-inference AUC, fairness gaps, and an OWASP ML Top 10\n"
        "scorecard.",
    )
    number = version.version
    found = plane.engineer.model_card(PROJECT, MODEL, number)
    for part in ("robustness", "membership", "fairness", "explanations"):
        _require(bool(found.get(part)), f"the model card has no {part} evidence")
    print_card(found)
    html = plane.workdir / "model-card.html"
    atomic_write_bytes(html, plane.engineer.model_card_html(PROJECT, MODEL, number).encode())
    _done(f"HTML card with plots: {html}")
    return html


# -- 5. ------------------------------------------------------------------------------------


def promote(plane: Plane, version: ModelVersionOut) -> None:
    number = version.version
    ref = f"{MODEL}@{number}"
    _step(
        "5a. Promote through the policy gates and a second person",
        "A version reaches production only if every gate of the project's policy passes on\n"
        "its evidence, and then only with a reviewer's approval: never its creator's.",
    )
    plane.admin.put_policy(PROJECT, "production", POLICY)
    _done("admin saved the production policy")
    approval = plane.engineer.promote_model(PROJECT, MODEL, number, to="production")
    out.print(gate_table(approval))
    failed = [g["gate"] for g in approval.gate_results if not g["passed"]]
    _require(not failed, f"gate(s) failed: {', '.join(failed)}")
    _require(approval.status == "pending", f"promotion is {approval.status}, not pending")
    _done(f"every gate passed; {ref} waits for a reviewer")
    try:
        plane.engineer.approve_model(PROJECT, MODEL, number, "my own model looks fine")
    except BastionError as exc:
        _refused(f"ml-engineer approving the promotion: {exc}")
    else:
        raise CheckFailed("quickstart: the ml-engineer approved a promotion (needs a reviewer)")
    decided = plane.reviewer.approve_model(PROJECT, MODEL, number, "evidence reviewed")
    _require(decided.status == "approved", f"the approval left it {decided.status}")
    stage = plane.engineer.model_version(PROJECT, MODEL, number).stage
    _require(stage == "production", f"{ref} is in {stage}, not production")
    _done(f"reviewer approved: {ref} is in production")


def _new_patients(features: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Two unseen patients of each diagnosis (another seed), coarsened as the training data
    was; and their true diagnoses."""
    from bastion.data.pseudonymize import Generalization, coarsen
    from bastion.data.reference import patients

    frame = patients(rows=40, seed=1)
    frame = frame.groupby("diagnosis").head(2).sort_values("diagnosis")
    frame["date_of_birth"] = coarsen(frame["date_of_birth"], Generalization.AGE_BAND)
    records = frame[features].to_dict(orient="records")
    rows = [{str(key): value for key, value in record.items()} for record in records]
    return rows, [str(label) for label in frame["diagnosis"]]


def _wait_running(plane: Plane, name: str) -> DeploymentOut:
    found: list[DeploymentOut] = []

    def settled(state: DeploymentOut) -> bool:
        if state.status in ("failed", "cancelled", "stopped"):
            raise CheckFailed(
                f"quickstart: deployment {name} {state.status}: {state.status_reason}"
            )
        found.append(state)
        return state.status == "running"

    watch(
        plane.engineer,
        PROJECT,
        name,
        120,
        settled=settled,
        pending=lambda state: f"is still {state.status}",
    )
    return found[-1]


def deploy(plane: Plane, version: ModelVersionOut) -> tuple[str, str]:
    """Deploy, predict, and show the refusals; return the deployment's URL and name."""
    number = version.version
    _step(
        "5b. Deploy and call the model",
        "The agent verifies the model's signature and every file's hash before the server\n"
        "loads it (safetensors only, never pickle). Callers need a scoped serving key; bodies\n"
        "are validated against the training schema; every request is audited (key id and\n"
        "input hash, never the input).",
    )
    port = free_port()
    made = plane.engineer.create_deployment(
        PROJECT, name=MODEL, model=f"{MODEL}@{number}", cluster=CLUSTER, port=port
    )
    state = _wait_running(plane, made.name)
    _done(state.status_reason)
    key = plane.engineer.create_serving_key(PROJECT, MODEL, scopes=["predict"], rate=20.0)
    _done(f"serving key {key.id} minted (predict only, 20 requests/s); shown once")
    url = f"http://127.0.0.1:{port}"
    rows, truth = _new_patients(list(version.evidence["features"]))
    bearer = {"Authorization": f"Bearer {key.token}"}
    with httpx.Client(base_url=url, timeout=30) as http:
        deadline = time.monotonic() + 20
        while True:  # the key reaches the server with its next refresh
            try:
                answered = http.post("/v1/predict", json={"instances": rows}, headers=bearer)
            except httpx.TransportError as exc:  # a loaded host: the server may be slow to accept
                _require(time.monotonic() < deadline, f"the server at {url} did not answer: {exc}")
                time.sleep(0.5)
                continue
            if answered.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        _require(answered.status_code == 200, f"the prediction failed: {answered.text}")
        predictions = answered.json()["predictions"]
        _require(len(predictions) == len(rows), "the server answered for fewer rows")
        _done(f"{len(rows)} unseen patients scored by {answered.json()['model']}:")
        for number, (prediction, actual) in enumerate(zip(predictions, truth, strict=True), 1):
            label = prediction["label"]
            flag = f" [yellow]flagged {prediction['flagged']}[/]" if "flagged" in prediction else ""
            out.print(
                f"    patient {number}: diagnosis {label} (probability "
                f"{prediction['probabilities'][label]:.2f}; recorded {actual}){flag}"
            )
        anonymous = http.post("/v1/predict", json={"instances": rows})
        _require(anonymous.status_code == 401, f"no key gave {anonymous.status_code}, not 401")
        _refused("a request without a key (401)")
        broken = http.post(
            "/v1/predict", json={"instances": [{"mean_radius": "x"}]}, headers=bearer
        )
        _require(broken.status_code == 422, f"an invalid body gave {broken.status_code}")
        _refused(f"an invalid body (422): {_detail(broken)}")
    _tampered_model(plane, version)
    return url, made.name


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    return str(detail)[:160]


@contextmanager
def _flipped(path: Path) -> Any:
    """Flip the last bytes of a stored file, as an attacker with disk access might; restore."""
    original = path.read_bytes()
    atomic_write_bytes(path, original[:-10] + bytes(b ^ 1 for b in original[-10:]))
    try:
        yield
    finally:
        atomic_write_bytes(path, original)


def _tampered_model(plane: Plane, version: ModelVersionOut) -> None:
    from bastion.cli.context import settings

    _require(version.manifest_hash is not None, f"{MODEL}@{version.version} has no manifest")
    stored = sealed_dir(
        settings().storage_dir,
        artifact="model",
        project=PROJECT,
        name=MODEL,
        manifest_hash=str(version.manifest_hash),
    )
    weights = stored / "weights.safetensors.bst"
    name = f"{MODEL}-tampered"
    with _flipped(weights):
        plane.engineer.create_deployment(
            PROJECT,
            name=name,
            model=f"{MODEL}@{version.version}",
            cluster=CLUSTER,
            port=free_port(),
        )
        try:
            _wait_running(plane, name)
        except CheckFailed as exc:
            _require("weights.safetensors" in str(exc), f"refused for another reason: {exc}")
            # The agent names the file by its full path; the folder is printed at the end.
            reason = re.sub(r"\S*/(?=weights\.safetensors)", "", str(exc).split(": ", 1)[-1])
            _refused(f"a model whose stored weights were changed on disk: {reason[:300]}")
            return
    raise CheckFailed("quickstart: a tampered model was deployed")


# -- 6. ------------------------------------------------------------------------------------


def evidence(plane: Plane) -> Path:
    _step(
        "6. Verify the audit chain and write the HIPAA report",
        "Every event above is hash-chained to the one before and the head is signed, so a\n"
        "changed, removed or reordered event is found. The HIPAA report maps the evidence\n"
        "Bastion holds to the Security Rule's controls.",
    )
    actions = {event.action for event in plane.admin.audit_events(limit=1000)}
    for action in (
        "dataset.version.create",
        "model.version.create",
        "model.promote",
        "approval.approved",
        "serve.request",
    ):
        _require(action in actions, f"no {action} event in the audit log")
    report = plane.admin.verify_audit()
    _done(f"{report.events} audit events verified, head {report.head_hash[:16]}")
    # The control plane signs its head every few minutes; until then the newest events are
    # protected by their links alone, and the report says so rather than showing them signed.
    out.print(f"  {report.unsigned or 'every event is covered by a signed checkpoint'}")
    summary = json.loads(plane.admin.compliance_report("hipaa", "json"))
    print_controls(summary)
    statuses = {control["id"]: control["status"] for control in summary["controls"]}
    _require(statuses.get("164.312(b)") == "pass", "the HIPAA audit-controls check failed")
    for control in summary["controls"]:
        if control["status"] == "fail":
            out.print(f"  [yellow]{control['id']}[/] fails here: {control.get('fix', '')}")
    out.print(
        "  [dim]These failures are true of a quickstart (plain HTTP on loopback, the\n"
        "  never-expiring token 'bastion up' saved for this host); docs/operations.md says\n"
        "  how production turns them into passes.[/dim]"
    )
    path = plane.workdir / "hipaa-report.html"
    atomic_write_bytes(path, plane.admin.compliance_report("hipaa", "html").encode())
    _done(f"HIPAA report: {path}")
    return path


def lifecycle(plane: Plane, *, shadow_models: int = 16) -> tuple[dict[str, Path], str]:
    """Run every step; return the files a person will want to open, and the deployment."""
    people(plane)
    dataset(plane)
    version = train(plane, shadow_models=shadow_models)
    html = card(plane, version)
    promote(plane, version)
    _, deployment = deploy(plane, version)
    report = evidence(plane)
    return {"model card": html, "HIPAA report": report}, deployment
