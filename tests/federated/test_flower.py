"""Federated training on Flower's deployment engine: one SuperLink (TLS, SuperNode
authentication), three admitted sites' SuperNodes on loopback, Bastion's ServerApp and
ClientApp (:mod:`bastion.federated.apps`).

Three sites hold a non-IID split of the patients table (80%, 50% and 20% malignant). Plain
federated averaging ends within 3 points of centralised training on the same rows. Under
SecAgg+ with site-level DP the aggregator publishes the mean of the sites' clipped updates
(computed here from each site's own local pass) plus noise of the planned scale, added once:
the protocol summed the masked updates without the aggregator holding any one of them. A
fourth node, not admitted, is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from safetensors.torch import load_file, save_file

from bastion.data.ingest import Loaded
from bastion.data.reference import PATIENT_PII_COLUMNS, patients
from bastion.errors import ConfigurationError
from bastion.federated import local
from bastion.federated.federation import Federation, SiteData, federated_environment
from bastion.federated.plan import HISTORY, WEIGHTS, FederatedPlan, SitePrivacy
from bastion.federated.tls import site_key
from bastion.train.config import BuiltinModel, TrainConfig
from bastion.train.data import fit_preprocessing, split_rows
from bastion.train.models import build_model
from bastion.train.trainer import Trainer

MALIGNANT_SHARE = (0.8, 0.5, 0.2)
MODEL = {"builtin": "mlp", "hidden": [32]}
LOCAL = {"epochs": 2, "batch_size": 32, "lr": 0.1}


class Sites:
    def __init__(self, root: Path) -> None:
        frame = patients(seed=0).drop(columns=list(PATIENT_PII_COLUMNS))
        data = Loaded(kind="table", frame=frame)
        prep = fit_preprocessing(data, target="diagnosis")
        self.x, self.y = prep.features(data), prep.labels(data)
        _, train, test = split_rows(self.y, holdout=0.2, seed=0)
        self.train, self.test = train, test
        rng = np.random.default_rng(0)
        ones = [int(i) for i in rng.permutation(train) if self.y[i] == 1]
        zeros = [int(i) for i in rng.permutation(train) if self.y[i] == 0]
        each = len(train) // len(MALIGNANT_SHARE)
        self.sites: list[SiteData] = []
        self.rows: list[list[int]] = []
        for number, (share, held_out) in enumerate(
            zip(MALIGNANT_SHARE, np.array_split(test, len(MALIGNANT_SHARE)), strict=True)
        ):
            malignant = int(each * share)
            rows = ones[:malignant] + zeros[: each - malignant]
            ones, zeros = ones[malignant:], zeros[each - malignant :]
            path = root / f"site{number}.safetensors"
            save_file(
                {
                    "x_train": self.x[rows].contiguous(),
                    "y_train": self.y[rows].contiguous(),
                    "x_test": self.x[held_out].contiguous(),
                    "y_test": self.y[held_out].contiguous(),
                },
                str(path),
            )
            self.sites.append(SiteData(f"site{number}", path))
            self.rows.append(rows)

    def plan(
        self, output: Path, *, rounds: int, secure: bool, privacy: SitePrivacy | None = None
    ) -> FederatedPlan:
        output.mkdir(parents=True)
        return FederatedPlan(
            privacy=privacy,
            model=MODEL,
            train=LOCAL,
            input_shape=tuple(self.x.shape[1:]),
            classes=2,
            sites=len(self.sites),
            rounds=rounds,
            min_clients=len(self.sites),
            secure_aggregation=secure,
            max_rows=max(len(rows) for rows in self.rows),
            output=str(output),
        )

    def accuracy(self, weights: dict[str, torch.Tensor]) -> float:
        shape = tuple(self.x.shape[1:])
        model = build_model(BuiltinModel.model_validate(MODEL), input_shape=shape, classes=2)
        model.load_state_dict(weights)
        with torch.no_grad():
            predicted = model(self.x[self.test]).argmax(dim=1)
        return float((predicted == self.y[self.test]).float().mean())


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Federation, Sites]]:
    try:
        federated_environment()
    except ConfigurationError as exc:  # make test builds it: missing means a broken install
        pytest.fail(str(exc))
    root = tmp_path_factory.mktemp("federation")
    sites = Sites(root)
    started = Federation(root / "flower")
    with started.running():
        started.start_link()
        for site in sites.sites:
            started.start_site(site, key=started.admit(site.name))
        yield started, sites


ROUNDS = 2
Z, C = 0.5, 0.5


@pytest.fixture(scope="module")
def runs(
    federation: tuple[Federation, Sites], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[FederatedPlan, str]]:
    """Both trainings submitted at once (the SuperLink runs them side by side: most of a
    round is Flower's 3 s polls): plain FedAvg, and one round of SecAgg+ with site-level DP."""
    flower, sites = federation
    root = tmp_path_factory.mktemp("runs")
    privacy = SitePrivacy(noise_multiplier=Z, clipping_norm=C, delta=1e-5)
    plans = {
        "plain": sites.plan(root / "plain", rounds=ROUNDS, secure=False),
        "private": sites.plan(root / "private", rounds=1, secure=True, privacy=privacy),
    }
    return {name: (plan, flower.submit(plan)) for name, plan in plans.items()}


def _trained(federation: Federation, plan: FederatedPlan, run: str) -> dict[str, torch.Tensor]:
    status = federation.wait(run, timeout=600)
    log = federation.server_log(run)
    assert status["status"] == "finished:completed", log[-3000:]
    assert ("Secure aggregation completed" in log) is plan.secure_aggregation, log[-3000:]
    assert (Path(plan.output) / HISTORY).is_file()
    return load_file(str(Path(plan.output) / WEIGHTS))


def test_federated_averaging_is_within_3_points_of_centralised_training(
    federation: tuple[Federation, Sites], runs: dict[str, tuple[FederatedPlan, str]]
) -> None:
    flower, sites = federation
    rounds = ROUNDS
    federated = sites.accuracy(_trained(flower, *runs["plain"]))
    pooled = [row for rows in sites.rows for row in rows]
    torch.manual_seed(0)
    shape = tuple(sites.x.shape[1:])
    model = build_model(BuiltinModel.model_validate(MODEL), input_shape=shape, classes=2)
    config = TrainConfig.model_validate({**LOCAL, "epochs": rounds * LOCAL["epochs"]})
    central = Trainer(config).fit(model, sites.x[pooled], sites.y[pooled]).model
    centralised = sites.accuracy(central.state_dict())
    assert centralised > 0.9
    assert federated >= centralised - 0.03, (federated, centralised)


def test_site_level_dp_clips_each_update_and_adds_noise_once_under_secagg(
    federation: tuple[Federation, Sites], runs: dict[str, tuple[FederatedPlan, str]]
) -> None:
    """SecAgg+ with site-level DP, one round: what the aggregator publishes is the plain mean
    of the sites' updates clipped to C (computed here from their own passes), plus Gaussian
    noise of standard deviation z*C/3 (once, not per site); the epsilon recorded is Opacus's
    RDP accountant for one round at sample rate 1."""
    flower, sites = federation
    z, c = Z, C
    plan, run = runs["private"]
    published = _trained(flower, plan, run)
    start = local.weights(local.initial_model(plan))
    clipped = []
    for site in sites.sites:
        arrays, _, _ = local.local_update(plan, start, site.data, server_round=1)
        update = [a - g for a, g in zip(arrays, start, strict=True)]
        norm = float(np.sqrt(sum(float((u**2).sum()) for u in update)))
        assert norm > c  # the clipping is exercised
        clipped.append([u * (c / norm) for u in update])
    names = list(local.initial_model(plan).state_dict())
    residual = np.concatenate(
        [
            (published[name].numpy() - start[i] - sum(u[i] for u in clipped) / 3).ravel()
            for i, name in enumerate(names)
        ]
    )
    sigma = z * c / 3
    assert abs(residual.std() / sigma - 1) < 0.1, (residual.std(), sigma)
    assert abs(residual.mean()) < 5 * sigma / np.sqrt(len(residual))
    history = json.loads((Path(plan.output) / HISTORY).read_text())
    accountant = RDPAccountant()
    accountant.step(noise_multiplier=z, sample_rate=1.0)
    assert history["epsilon"] == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)


def test_a_node_that_was_not_admitted_is_refused(
    federation: tuple[Federation, Sites], tmp_path: Path
) -> None:
    """Two more SuperNodes, one with a key of its own that the SuperLink never registered and
    one with no key at all (Flower's self-registration), are refused when they activate and
    exit; the three admitted sites are unaffected."""
    flower, sites = federation
    unregistered, _ = site_key(tmp_path, "stranger")
    flower.start_site(SiteData("stranger", sites.sites[0].data), key=unregistered)
    flower.start_site(SiteData("anonymous", sites.sites[0].data))
    for name in ("stranger", "anonymous"):
        code = flower.site_exit(name, timeout=120)
        assert code not in (None, 0), flower.log(f"site-{name}")[-2000:]
        assert "Failed to" in flower.log(f"site-{name}"), flower.log(f"site-{name}")[-2000:]
