"""A production model deployed from the CLI: the agent starts the inference server, which
verifies the model, serves authenticated predictions and audits every request."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bastion.data.reference import PATIENT_PII_COLUMNS, patients
from bastion.inference.runner import KEY_REFRESH_SECONDS as KEY_REFRESH
from tests.agent.test_agent_e2e import Plane, register_patients, running_plane
from tests.conftest import tampered
from tests.inference.conftest import free_port
from tests.server.test_live import _bastion, _certificates

SPEC: dict[str, Any] = {
    "name": "readmission",
    "project": "p",
    "cluster": "c1",
    "dataset": "patients@1",
    "model": {"builtin": "mlp", "hidden": [16]},
    "train": {"epochs": 3, "batch_size": 64, "lr": 0.1},
}


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    root = tmp_path_factory.mktemp("serve-plane")
    with running_plane(root) as started:
        register_patients(started)
        home = started.client_home
        spec = root / "spec.yaml"
        spec.write_text(yaml.safe_dump(SPEC))
        trained = _bastion(home, "run", "submit", str(spec), "--follow")
        assert trained.returncode == 0, trained.stdout + trained.stderr
        yield started


def _rows(count: int) -> list[dict[str, object]]:
    frame = patients(seed=0).drop(columns=[*PATIENT_PII_COLUMNS, "diagnosis"], errors="ignore")
    frame = frame.drop(columns=[c for c in ("subject_id",) if c in frame.columns])
    return [
        {str(k): v for k, v in row.items()} for row in frame.head(count).to_dict(orient="records")
    ]


def test_a_production_model_deploys_serves_and_audits(plane: Plane, tmp_path: Path) -> None:
    home = plane.client_home
    port = free_port()
    deploy = (
        "deploy",
        "create",
        "readmission@1",
        "-p",
        "p",
        "--cluster",
        "c1",
        "--port",
        str(port),
    )
    # (1) Only a production version deploys; a production project refuses the override.
    refused = _bastion(home, *deploy)
    assert refused.returncode == 1 and "only a production version" in refused.stderr
    policy = tmp_path / "production.yaml"
    policy.write_text(
        yaml.safe_dump({"min_accuracy": 0.5, "require_signature": True, "approvals": 0})
    )
    assert (
        _bastion(home, "policy", "put", "production", "-p", "p", "--file", str(policy)).returncode
        == 0
    )
    override = _bastion(home, *deploy, "--allow-unapproved")
    assert override.returncode == 1 and "production policy" in override.stderr
    promoted = _bastion(home, "model", "promote", "readmission@1", "-p", "p", "--to", "production")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    # (2) The agent starts the server; the CLI waits until it reports where it listens.
    started = _bastion(home, *deploy)
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"serving readmission@1 at http://127.0.0.1:{port}" in started.stdout
    minted = _bastion(home, "keys", "create", "-d", "readmission", "-p", "p", "--rate", "100/s")
    assert minted.returncode == 0, minted.stdout + minted.stderr
    token = minted.stdout.strip().splitlines()[-1]
    assert token.startswith("bsk_")
    url = f"http://127.0.0.1:{port}"
    bearer = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, timeout=30) as http:
        deadline = time.monotonic() + 10
        while True:  # the key reaches the server with its next refresh
            answered = http.post("/v1/predict", json={"instances": _rows(3)}, headers=bearer)
            if answered.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert answered.status_code == 200, answered.text
        body = answered.json()
        assert body["model"] == "readmission@1" and len(body["predictions"]) == 3
        assert http.get("/healthz").json()["model"] == "readmission@1"
        assert http.post("/v1/predict", json={"instances": _rows(1)}).status_code == 401
        invalid = http.post(
            "/v1/predict", json={"instances": [{"mean_radius": "x"}]}, headers=bearer
        )
        assert invalid.status_code == 422
        # The server holds the exact schema: 29 is inside the published range (0 to 30) but
        # above every training row (28.11), and the bound itself is not echoed.
        beyond = http.post(
            "/v1/predict",
            json={"instances": [{**_rows(1)[0], "mean_radius": 29.0}]},
            headers=bearer,
        )
        assert beyond.status_code == 422, beyond.text
        assert beyond.json()["errors"][0]["rule"] == "above the maximum of the training data"
        assert "28.11" not in beyond.text
        assert http.get("/metrics", headers=bearer).status_code == 403
        # (3) Revocation takes effect within five seconds.
        key_id = token.split("_")[1]
        revoked_at = time.monotonic()
        assert (
            _bastion(home, "keys", "revoke", key_id, "-d", "readmission", "-p", "p").returncode == 0
        )
        while (
            http.post("/v1/predict", json={"instances": _rows(1)}, headers=bearer).status_code
            == 200
        ):
            assert time.monotonic() - revoked_at < 5, "revocation did not reach the server"
            time.sleep(0.2)
    shown = _bastion(home, "deploy", "show", "readmission", "-p", "p")
    assert shown.returncode == 0 and "running" in shown.stdout and "revoked" in shown.stdout
    # (4) Every request is in the audit log: key id and input hash, never the input.
    deadline = time.monotonic() + 10
    while True:
        events = [e for e in plane.admin.audit_events(limit=500) if e.action == "serve.request"]
        if len(events) >= 5 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    statuses = sorted(e.details["status"] for e in events)
    assert "200" in statuses and "401" in statuses and "422" in statuses
    served = next(e for e in events if e.details["status"] == "200")
    assert served.details["key_id"] == key_id and len(served.details["input_sha256"]) == 64
    assert "mean_radius" not in str(events)
    _hot_swap_and_rollback(plane, tmp_path, url)
    # (5) Stop: the server exits and the port closes.
    assert _bastion(home, "deploy", "stop", "readmission", "-p", "p").returncode == 0
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(f"{url}/healthz", timeout=1)
        except httpx.TransportError:
            break
        assert time.monotonic() < deadline, "the server kept listening after stop"
        time.sleep(0.3)


def _hot_swap_and_rollback(plane: Plane, tmp_path: Path, url: str) -> None:
    """A new version swaps in under load without a failed request; rollback returns."""
    home = plane.client_home
    spec = tmp_path / "v2.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "train": {**SPEC["train"], "epochs": 4}}))
    trained = _bastion(home, "run", "submit", str(spec), "--follow")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    promoted = _bastion(home, "model", "promote", "readmission@2", "-p", "p", "--to", "production")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    minted = _bastion(home, "keys", "create", "-d", "readmission", "-p", "p")
    bearer = {"Authorization": f"Bearer {minted.stdout.strip().splitlines()[-1]}"}
    answers: list[tuple[int, str]] = []
    done = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not done.is_set():
                r = http.post("/v1/predict", json={"instances": _rows(2)}, headers=bearer)
                answers.append((r.status_code, r.json().get("model", r.text)))

    time.sleep(KEY_REFRESH)  # the new key reaches the server
    worker = threading.Thread(target=load)
    worker.start()
    try:
        swapped = _bastion(
            home, "deploy", "update", "readmission", "-p", "p", "--model", "readmission@2"
        )
        assert swapped.returncode == 0, swapped.stdout + swapped.stderr
        assert "serving readmission@2" in swapped.stdout
        time.sleep(1)
    finally:
        done.set()
        worker.join(30)
    assert answers and {code for code, _ in answers} == {200}  # no request dropped or failed
    served = [model for _, model in answers]
    assert served[0] == "readmission@1" and served[-1] == "readmission@2"
    assert served == sorted(served)  # once swapped, never back
    back = _bastion(home, "deploy", "rollback", "readmission", "-p", "p")
    assert back.returncode == 0 and "serving readmission@1" in back.stdout, (
        back.stdout + back.stderr
    )
    # A version whose stored files were changed is refused; the server keeps serving.
    stored = plane.storage / "models" / "p" / "readmission"
    version_2 = str(plane.admin.model_versions("p", "readmission")[-1].manifest_hash)
    with tampered(stored / version_2 / "weights.safetensors.bst"):
        refused = _bastion(
            home, "deploy", "update", "readmission", "-p", "p", "--model", "readmission@2"
        )
    assert refused.returncode == 1 and "refused" in refused.stdout, refused.stdout + refused.stderr
    with httpx.Client(base_url=url, timeout=30) as http:
        still = http.post("/v1/predict", json={"instances": _rows(1)}, headers=bearer)
    assert still.status_code == 200 and still.json()["model"] == "readmission@1"


def test_a_tampered_model_is_refused_before_the_server_starts(plane: Plane) -> None:
    home = plane.client_home
    production = plane.admin.model_versions("p", "readmission")[-1]  # version 2, after the swap
    stored = plane.storage / "models" / "p" / "readmission" / str(production.manifest_hash)
    with tampered(stored / "weights.safetensors.bst"):
        refused = _bastion(
            home,
            "deploy",
            "create",
            f"readmission@{production.version}",
            "-p",
            "p",
            "--cluster",
            "c1",
            "--name",
            "tampered",
            "--port",
            str(free_port()),
        )
    assert refused.returncode == 1
    assert "weights.safetensors" in refused.stdout + refused.stderr


def test_two_replicas_share_one_address_and_one_limit_over_tls(
    plane: Plane, redis_url: str, tmp_path: Path
) -> None:
    """Runs last: the replicas hold both of the agent's job slots until they stop."""
    home = plane.client_home
    ca, cert, key = _certificates(tmp_path / "tls")
    production = plane.admin.model_versions("p", "readmission")[-1]
    port = free_port()
    started = _bastion(
        home,
        "deploy",
        "create",
        f"readmission@{production.version}",
        "-p",
        "p",
        "--cluster",
        "c1",
        "--name",
        "shared",
        "--port",
        str(port),
        "--replicas",
        "2",
        "--redis-url",
        redis_url,
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    )
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"at https://127.0.0.1:{port}" in started.stdout
    shown = plane.admin.get_deployment("p", "shared")
    assert [r.status for r in shown.replicas] == ["running", "running"]
    minted = _bastion(
        home, "keys", "create", "-d", "shared", "-p", "p", "--rate", "1/d", "--burst", "6"
    )
    bearer = {"Authorization": f"Bearer {minted.stdout.strip().splitlines()[-1]}"}
    time.sleep(KEY_REFRESH + 1)
    url = f"https://127.0.0.1:{port}"
    with pytest.raises(httpx.ConnectError):  # TLS only, and only with the deployment's CA
        httpx.get(f"{url}/healthz", timeout=5)
    trusted = ssl.create_default_context(cafile=str(ca))
    codes = []
    for _ in range(10):  # a new connection each time: the kernel picks a replica
        with httpx.Client(base_url=url, timeout=30, verify=trusted) as http:
            answer = http.post("/v1/predict", json={"instances": _rows(1)}, headers=bearer)
            codes.append(answer.status_code)
    assert codes.count(200) == 6 and codes[6:] == [429] * 4
    assert _bastion(home, "deploy", "stop", "shared", "-p", "p").returncode == 0
