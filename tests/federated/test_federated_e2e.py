"""A federated run through the platform: one control plane, three clusters each with its own
agent (loopback), each holding its own non-IID share of the patients table.

The run is submitted once; the control plane queues the aggregator's run on c1 and one site
run per cluster. The jobs meet through the control plane (address, CA certificate, node
keys: public material), Flower's SuperLink runs in the aggregator's sandbox and each site's
SuperNode in its own, the shared preprocessing comes from a statistics run, and the model
is sealed, signed and registered on c1 with lineage to the three sites' versions.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from bastion.client import Client
from bastion.data.ingest import Loaded
from bastion.data.reference import PATIENT_PII_COLUMNS, patients
from bastion.errors import Conflict, InvalidSpec
from bastion.federated.federation import Federation as Flower
from bastion.federated.federation import SiteData
from bastion.federated.tls import site_key
from bastion.ports import free_port
from bastion.train.config import BuiltinModel, TrainConfig
from bastion.train.data import fit_preprocessing, split_rows
from bastion.train.models import build_model
from bastion.train.trainer import Trainer
from tests.agent.test_agent_e2e import (
    Plane,
    _wait_status,
    running_plane,
    start_agent,
    wait_for_heartbeat,
)
from tests.server.test_live import _bastion

SITES = ("c1", "c2", "c3")
MALIGNANT_SHARE = (0.8, 0.5, 0.2)
ROWS = 140  # per site: as many as the table's classes allow at these shares
MODEL = {"builtin": "mlp", "hidden": [16]}
LOCAL = {"epochs": 4, "batch_size": 32, "lr": 0.1}
ROUNDS = 4  # a lost site misses one or two and is back for the last


@dataclass
class Federation:
    plane: Plane
    agents: dict[str, subprocess.Popen[str]]
    root: Path

    def restart(self, cluster: str) -> None:
        """Start a site's agent again (same home and storage) after a kill."""
        home = self.root / cluster
        self.agents[cluster] = start_agent(
            home / "agent",
            self.plane.url,
            cluster,
            home / "storage",
            import_root=home / "incoming",
        )
        wait_for_heartbeat(self.plane.admin, self.agents[cluster], cluster)


def _shares(rows: int) -> list[Any]:
    """Three non-IID shares of the patients table (80%, 50%, 20% malignant)."""
    frame = patients(seed=0)
    rng = np.random.default_rng(0)
    ones = list(rng.permutation(np.flatnonzero(frame["diagnosis"] == 1)))
    zeros = list(rng.permutation(np.flatnonzero(frame["diagnosis"] == 0)))
    shares = []
    for share in MALIGNANT_SHARE:
        malignant = int(rows * share)
        picked = ones[:malignant] + zeros[: rows - malignant]
        ones, zeros = ones[malignant:], zeros[rows - malignant :]
        shares.append(frame.iloc[sorted(picked)])
    return shares


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("federation")
    # Short leases: a killed site's run is leased again soon after its agent is back.
    with running_plane(root / "c1", lease_seconds=10) as plane, contextlib.ExitStack() as stack:
        agents: dict[str, subprocess.Popen[str]] = {}
        for cluster in SITES[1:]:
            created = _bastion(plane.client_home, "cluster", "create", cluster)
            assert created.returncode == 0, created.stderr
            join = created.stdout.splitlines()[1].strip()
            home = root / cluster
            (home / "incoming").mkdir(parents=True)
            agent = start_agent(
                home / "agent",
                plane.url,
                cluster,
                home / "storage",
                join,
                import_root=home / "incoming",
            )
            wait_for_heartbeat(plane.admin, agent, cluster)
            agents[cluster] = agent
        for number, (cluster, share) in enumerate(zip(SITES, _shares(ROWS), strict=True)):
            incoming = (plane.storage.parent if cluster == "c1" else root / cluster) / "incoming"
            source = incoming / f"site{number}.csv"
            share.to_csv(source, index=False)
            done = _bastion(
                plane.client_home,
                "data",
                "register",
                str(source),
                "--name",
                f"patients-{cluster}",
                "-p",
                "p",
                "-c",
                cluster,
                "--target",
                "diagnosis",
                "--subject-id-column",
                "subject_id",
            )
            assert done.returncode == 0, done.stdout + done.stderr
        federation = Federation(plane, agents, root)
        stack.callback(_stop_all, federation)
        yield federation


def _stop_all(federation: Federation) -> None:
    for agent in federation.agents.values():
        if agent.poll() is None:
            agent.terminate()
            agent.wait(timeout=30)


def _spec(name: str, **federated: Any) -> dict[str, Any]:
    return {
        "name": name,
        "project": "p",
        "federated": {
            "clusters": list(SITES),
            "aggregator": "c1",
            "rounds": ROUNDS,
            "secure_aggregation": False,
            "port": free_port(),
            **federated,
        },
        "datasets": {c: f"patients-{c}@1" for c in SITES},
        "model": MODEL,
        "train": LOCAL,
        "sensitive_features": ["sex"],
    }


# Its own limit, above the sum of its waits (three agents, a statistics run, four rounds,
# a lost site's lease running out): minutes alone, several times that under a loaded suite.
@pytest.mark.timeout(1800)
def test_a_federated_run_survives_a_lost_site_and_registers_one_model(
    federation: Federation,
) -> None:
    """One run, three sites. Once the first round is done, a stranger's SuperNode knocks (it
    is refused and audited) and site c3's agent is SIGKILLed (its job and SuperNode die with
    it): the rounds go on with the two others (min_clients 2); the agent starts again, the
    site run's next attempt makes a new node key, the aggregator admits it, and c3 takes part
    in a later round. The model ends within 3 points of centralised training, is registered
    with lineage to the three versions, and an erasure at c3 flags it."""
    admin: Client = federation.plane.admin
    spec = _spec("fed", min_clients=2, round_timeout=60)
    spec["max_retries"] = 1  # a site run's next attempt, once its killed lease expires
    run = admin.submit_run(spec)
    runs = {r.name: r for r in admin.list_runs("p")}
    sites = {c: runs[f"fed (site {c})"] for c in SITES}
    # Queued with the aggregator's run (an idle agent may lease its site's run at once).
    assert all(s.status in ("queued", "leased", "running") for s in sites.values()), sites
    deadline = time.monotonic() + 600  # minutes under a loaded suite
    while not any(m.name == "federated_accuracy" for m in admin.run_metrics("p", run.id)):
        current = admin.get_run("p", run.id)
        assert current.status in ("queued", "leased", "running"), current
        assert time.monotonic() < deadline, "no round finished"
        time.sleep(0.5)
    stranger = _stranger(federation, run.id, spec["federated"]["port"])
    federation.agents["c3"].send_signal(signal.SIGKILL)
    federation.agents["c3"].wait(timeout=10)
    federation.restart("c3")
    with stranger.running():
        assert stranger.site_exit("stranger", timeout=120) not in (None, 0)
    done = _wait_status(admin, run.id, {"succeeded", "failed"}, timeout=900)
    logs = [line.line for line in admin.run_logs("p", run.id)]
    assert done.status == "succeeded", (done.status_reason, logs[-30:])
    assert any("statistics run" in line for line in logs), logs
    assert "site c3 came back with a new node key; admitted again" in logs, logs
    for cluster, site in sites.items():
        ended = _wait_status(admin, site.id, {"succeeded", "failed"}, timeout=180)
        site_logs = [line.line for line in admin.run_logs("p", site.id)]
        assert ended.status == "succeeded", (cluster, ended.status_reason, site_logs[-20:])
        assert ended.attempt == (2 if cluster == "c3" else 1), ended
    (version,) = admin.model_versions("p", "fed")
    evidence = dict(version.evidence)
    assert evidence["datasets"] == {c: f"patients-{c}@1" for c in SITES}
    assert set(evidence["federated"]["site_accuracy"]) == set(SITES)
    # c3 dropped out of a round and came back for a later one; the others took part in all.
    rounds = {
        site: [int(step) for step, _ in series]
        for key, series in evidence["federated"]["history"]["metrics_distributed"].items()
        if (site := key.removesuffix(":accuracy")) in SITES
    }
    assert rounds["c1"] == rounds["c2"] == list(range(1, ROUNDS + 1)), rounds
    missed = sorted(set(rounds["c1"]) - set(rounds["c3"]))
    assert missed and max(rounds["c3"]) > missed[0], rounds
    # The card shows each site's held-out accuracy and fairness, measured at the site.
    card = admin.model_card("p", "fed", version.version)
    on_card = {site["site"]: site for site in card["federated"]["sites"]}
    assert set(on_card) == set(SITES)
    for cluster, site in on_card.items():
        assert site["dataset"] == f"patients-{cluster}@1"
        assert site["accuracy"] == evidence["federated"]["site_accuracy"][cluster]
        assert 0 <= site["demographic_parity_difference"] <= 1, site
    centralised = _centralised_accuracy()
    assert centralised > 0.9
    assert evidence["test_accuracy"] >= centralised - 0.03, (evidence, centralised)
    # Each round was reported as it ended.
    steps = [m.step for m in admin.run_metrics("p", run.id) if m.name == "federated_accuracy"]
    assert steps == list(range(1, ROUNDS + 1)), steps
    # The stranger's node was refused, and the aggregator reported it: audited.
    refused = [
        e
        for e in admin.audit_events(limit=1000)
        if e.action == "federated.node_refused" and e.target == f"run:{run.id}"
    ]
    assert len(refused) == 1, refused
    assert any(refused[0].details["key_sha256"] in line for line in logs), logs
    lineage = admin.lineage("p", f"model:fed@{version.version}")
    inputs = {e["from"] for e in lineage["edges"] if e["relation"] == "input"}
    assert {f"dataset:patients-{c}@1" for c in SITES} <= inputs
    # Erasure of one subject at one site flags the federated model.
    subject = str(_shares(ROWS)[2]["subject_id"].iloc[0])  # a patient of site c3
    erased = _bastion(
        federation.plane.client_home,
        "privacy",
        "erase",
        "-p",
        "p",
        "--subject-id",
        subject,
        "--reason",
        "Art. 17 request",
    )
    assert erased.returncode == 0, erased.stdout + erased.stderr
    assert "completed, 1 row(s) removed" in erased.stdout, erased.stdout
    flagged = admin.model_version("p", "fed", version.version).flags["trained_on_erased_data"]
    assert flagged["dataset"] == "patients-c3@1"


def _centralised_accuracy() -> float:
    """The same model trained on the three sites' training rows pooled (for as many epochs
    as the federation trained in all), on the sites' held-out rows pooled: each site's split
    is the one its job draws (its labels, the run's seed and holdout)."""
    shares = _shares(ROWS)
    shares = [share.drop(columns=list(PATIENT_PII_COLUMNS)) for share in shares]
    pooled = pd.concat(shares)
    prep = fit_preprocessing(Loaded(kind="table", frame=pooled), target="diagnosis")
    train_x, train_y, test_x, test_y = [], [], [], []
    for share in shares:
        data = Loaded(kind="table", frame=share)
        x, y = prep.features(data), prep.labels(data)
        _, train, test = split_rows(y, holdout=0.2, seed=0)
        train_x.append(x[train])
        train_y.append(y[train])
        test_x.append(x[test])
        test_y.append(y[test])
    torch.manual_seed(0)
    model = build_model(BuiltinModel.model_validate(MODEL), input_shape=prep.input_shape, classes=2)
    config = TrainConfig.model_validate({**LOCAL, "epochs": ROUNDS * LOCAL["epochs"]})
    trained = Trainer(config).fit(model, torch.cat(train_x), torch.cat(train_y)).model
    with torch.no_grad():
        predicted = trained(torch.cat(test_x)).argmax(dim=1)
    return float((predicted == torch.cat(test_y)).float().mean())


def test_a_site_dataset_elsewhere_is_refused_naming_the_site(federation: Federation) -> None:
    spec = _spec("elsewhere")
    spec["datasets"]["c2"] = "patients-c1@1"  # lives on c1, not c2
    with pytest.raises(Conflict, match="site c2: patients-c1@1 lives on 'c1'"):
        federation.plane.admin.submit_run(spec)
    spec = _spec("unknown-column")
    spec["features"] = ["mean_radius", "not_a_column"]
    with pytest.raises(InvalidSpec, match=r"site c1: .*not_a_column"):
        federation.plane.admin.submit_run(spec)


def _stranger(federation: Federation, run_id: str, port: int) -> Flower:
    """A SuperNode that is no site of the run, dialling the aggregator with a key of its
    own and the run's CA (read from the aggregator's job folder on this host)."""
    home = federation.root / "stranger"
    ca = federation.plane.storage / "runs" / run_id / "attempt-1" / "federation" / "tls"
    key, _ = site_key(home / "keys", "stranger")
    flower = Flower(home, host="127.0.0.1", port=port)
    flower.start_site(SiteData("stranger", home / "rows.parquet"), key=key, ca=ca / "ca.pem")
    return flower
