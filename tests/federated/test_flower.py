"""Federated training on Flower's deployment engine: one SuperLink (TLS, SuperNode
authentication), three admitted sites' SuperNodes on loopback, Bastion's ServerApp and
ClientApp (:mod:`bastion.federated.apps`).

Three sites hold a non-IID split of the patients table (80%, 50% and 20% malignant). Under
SecAgg+ with site-level DP the aggregator publishes the mean of the sites' clipped updates
(computed here from each site's own local pass) plus noise of the planned scale, added once:
the protocol summed the masked updates without the aggregator holding any one of them. A
fourth node, not admitted, is refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from safetensors.torch import load_file, save_file

from bastion.data.ingest import Loaded
from bastion.data.reference import PATIENT_PII_COLUMNS, patients
from bastion.errors import ConfigurationError
from bastion.federated import local
from bastion.federated.federation import (
    CONNECTION,
    Federation,
    SiteData,
    federated_environment,
    write_app,
)
from bastion.federated.plan import HISTORY, WEIGHTS, FederatedPlan, SitePrivacy
from bastion.federated.tls import site_key
from bastion.train.config import BuiltinModel
from bastion.train.data import fit_preprocessing, split_rows
from bastion.train.models import build_model

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
        self,
        output: Path,
        *,
        rounds: int,
        secure: bool,
        privacy: SitePrivacy | None = None,
        train: dict[str, Any] | None = None,
    ) -> FederatedPlan:
        output.mkdir(parents=True)
        return FederatedPlan(
            privacy=privacy,
            model=MODEL,
            train=train or LOCAL,
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


Z, C = 0.5, 0.5
#: Sample-level DP-SGD at every site: the whole run's budget on each site's rows.
SAMPLE_EPSILON = 2.0


@pytest.fixture(scope="module")
def runs(
    federation: tuple[Federation, Sites], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[FederatedPlan, str]]:
    """One round of SecAgg+ with site-level DP (plain federated averaging through the
    platform, against centralised training: tests/federated/test_federated_e2e.py)."""
    flower, sites = federation
    root = tmp_path_factory.mktemp("runs")
    privacy = SitePrivacy(noise_multiplier=Z, clipping_norm=C, delta=1e-5)
    # Sample-level DP-SGD at the sites too (their local passes; each message of a run is a
    # process at every site, so one run carries both).
    dp_sgd = {"target_epsilon": SAMPLE_EPSILON, "delta": 1e-5, "accountant": "rdp"}
    train = {**LOCAL, "privacy": dp_sgd}
    plan = sites.plan(root / "private", rounds=1, secure=True, privacy=privacy, train=train)
    app = write_app(root / "app", plan)
    # Bastion's ServerApp, handed a grid that keeps a copy of what each site's reply holds
    # (what the aggregator's process sees of one site), as a recording proxy in the App.
    (root / "seen").mkdir()
    (app / "bastion_app" / "server.py").write_text(_SPY.format(out=str(root / "seen")))
    answer = flower._flwr("run", str(app), CONNECTION)
    return {"private": (plan, str(answer["run-id"]))}


_SPY = """import numpy as np
from flwr.common import bytes_to_ndarray
from flwr.server import ServerApp

from bastion.federated import apps


class _Recording:
    def __init__(self, grid):
        self._grid = grid

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *args, **kwargs):
        replies = list(self._grid.send_and_receive(messages, *args, **kwargs))
        for reply in replies:
            if reply.has_error():
                continue
            configs = reply.content.config_records.get("secaggplus_configs")
            if configs is not None and "masked_params" in configs:
                arrays = [bytes_to_ndarray(b) for b in configs["masked_params"]]
                np.savez("{out}/site-%s.npz" % reply.metadata.src_node_id, *arrays)
        return replies


app = ServerApp()


@app.main()
def main(grid, context):
    apps._aggregate(_Recording(grid), context)
"""


def _trained(federation: Federation, plan: FederatedPlan, run: str) -> dict[str, torch.Tensor]:
    status = federation.wait(run, timeout=600, output=Path(plan.output))
    log = federation.server_log(run)
    assert status["status"] == "finished:completed", log[-3000:]
    assert ("Secure aggregation completed" in log) is plan.secure_aggregation, log[-3000:]
    assert (Path(plan.output) / HISTORY).is_file()
    return load_file(str(Path(plan.output) / WEIGHTS))


def test_site_level_dp_clips_each_update_and_adds_noise_once_under_secagg(
    federation: tuple[Federation, Sites], runs: dict[str, tuple[FederatedPlan, str]]
) -> None:
    """SecAgg+ with site-level DP, one round: what the aggregator publishes is the plain mean
    of the sites' updates clipped to C (computed here from their own DP-SGD passes, the same
    seeds giving the same pass), plus Gaussian
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
    # What the aggregator's process held of each site: a masked vector, spread over the
    # modulus and uncorrelated with any site's update (the mask is fresh per site and round).
    seen = sorted((Path(plan.output).parent / "seen").glob("site-*.npz"))
    assert len(seen) == len(sites.sites), seen
    for path in seen:
        with np.load(path) as masked:  # arr_0 is SecAgg+'s (masked) weight factor
            arrays = [masked[f"arr_{i}"].ravel() for i in range(1, len(masked.files))]
        vector = np.concatenate(arrays).astype(np.float64)
        assert abs(vector.mean() / 2**32 - 0.5) < 0.05  # uniform over [0, 2^32)
        for update in clipped:
            flat = np.concatenate([u.ravel() for u in update])
            assert abs(np.corrcoef(vector, flat)[0, 1]) < 0.15
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


def test_sample_level_dp_sgd_trains_at_each_site_within_the_runs_budget(
    federation: tuple[Federation, Sites], runs: dict[str, tuple[FederatedPlan, str]]
) -> None:
    """``train.privacy`` at the sites (with site-level DP and SecAgg+ in the same run): each
    site's local passes run DP-SGD (Opacus, in the ClientApp's process) at a noise multiplier
    calibrated on its own rows for every round's epochs together; each site reports the
    epsilon of the whole run, at most the target. (That the pass is DP-SGD, clipped and
    noised: tests/federated/test_sample_dp.py.)"""
    flower, sites = federation
    plan, run = runs["private"]
    published = _trained(flower, plan, run)
    history = json.loads((Path(plan.output) / HISTORY).read_text())
    reported = {
        key.split(":")[0]: series[-1][1]
        for key, series in history["metrics_distributed"].items()
        if key.endswith(":sample_epsilon")
    }
    assert set(reported) == {site.name for site in sites.sites}, history
    for site, rows in zip(sites.sites, sites.rows, strict=True):
        # Calibrated here from the site's row count alone (Opacus's RDP accountant).
        noise = get_noise_multiplier(
            target_epsilon=SAMPLE_EPSILON,
            target_delta=1e-5,
            sample_rate=1 / math.ceil(len(rows) / LOCAL["batch_size"]),
            epochs=LOCAL["epochs"] * plan.rounds,
            accountant="rdp",
        )
        assert 0.3 < noise < 10, noise
        assert 0.9 * SAMPLE_EPSILON < reported[site.name] <= SAMPLE_EPSILON, reported
    assert all(bool(torch.isfinite(w).all()) for w in published.values())
