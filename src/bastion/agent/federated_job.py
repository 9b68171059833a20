"""The jobs of a federated run (DESIGN §6c), in the federated (Flower) environment.

**Aggregator** (:func:`run_aggregator`, the run submitted on the aggregator's cluster): makes
the federation's CA and starts Flower's SuperLink in its sandbox, the run's one listener;
waits for every site's SuperNode public key and admits exactly those; posts the address and
the CA certificate to the control plane (so no site dials before it is admitted); then runs
two Flower runs: a statistics run (each site's scaled feature moments, averaged under
SecAgg+ like any update: the shared preprocessing) and the training run (FedAvg or FedProx
over ``rounds``, SecAgg+, site-level DP when asked, each site evaluating every round's
average on its own held-out rows). The
final weights become a model package in ``outputs/`` that the agent seals, signs and
registers like any trained model, its evidence naming every site's dataset version.

**Site**: :mod:`bastion.agent.federated_site`.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from bastion.agent.data_jobs import staged_input, staged_schema
from bastion.agent.job import JobContext, JobFailed
from bastion.agent.train_job import _features, _validate, package_for_sealing
from bastion.data.schema import ImageSchema, TableSchema
from bastion.errors import InvalidInput, SignatureError
from bastion.federated import endorse, local
from bastion.federated.federation import Federation, FederationFailed
from bastion.federated.plan import HISTORY, PROGRESS, STATS, WEIGHTS, FederatedPlan
from bastion.federated.tls import key_fingerprint
from bastion.spec import FederatedJob, site_training
from bastion.train.data import Preprocessing

__all__ = [
    "endorsed_keys",
    "endorsed_link",
    "run_aggregator",
    "shared_preprocessing",
    "with_moments",
]

_ENDED = ("succeeded", "failed", "cancelled")
#: Seconds between two looks at the control plane while waiting on the others.
POLL_SECONDS = 1.0
#: Added to a Flower run's longest wait for its rounds (process starts, aggregation).
RUN_SLACK_SECONDS = 300.0


def _federation(workdir: Path) -> dict[str, Any]:
    """What the agent put in the job's manifest about the federation: the control plane's
    metadata and signing keys, and the agent's endorsement of this job's material."""
    manifest = json.loads((workdir / "job.json").read_text())
    found = manifest.get("federation")
    if not isinstance(found, dict) or not found.get("endorsement"):
        raise JobFailed("the agent sent no federation material with the federated run")
    return found


def _sites(workdir: Path) -> dict[str, dict[str, Any]]:
    sites = _federation(workdir).get("sites")
    if not isinstance(sites, dict) or not sites:
        raise JobFailed("the control plane sent no site metadata with the federated run")
    return sites


def _columns(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    listed = schema.get("columns") if isinstance(schema, dict) else None
    return {str(c["name"]): c for c in listed or [] if isinstance(c, dict)}


def shared_preprocessing(
    frame: Any, *, target: str, features: list[str], sites: dict[str, dict[str, Any]]
) -> tuple[Preprocessing, dict[str, tuple[float, float]], list[str]]:
    """The preprocessing every site applies, before the statistics run fills in the means
    and deviations; the numeric features' ranges (each the widest of the sites' published
    ranges) and notes for the log. Categories are the union of the sites' published ones
    (a category too rare to publish maps to no column); the classes are the aggregator's
    own labels and any published category of the target."""
    import pandas as pd  # noqa: PLC0415

    numeric = [c for c in features if pd.api.types.is_numeric_dtype(frame[c])]
    published = {site: _columns(info.get("schema") or {}) for site, info in sites.items()}
    bounds: dict[str, tuple[float, float]] = {}
    notes: list[str] = []
    for column in numeric:
        lows, highs = [], []
        for site, columns in sorted(published.items()):
            entry = columns.get(column) or {}
            if entry.get("minimum") is None or entry.get("maximum") is None:
                raise InvalidInput(
                    f"column {column!r}: site {site}'s published schema gives no range; "
                    "a federated run scales numeric features by the sites' published ranges"
                )
            lows.append(float(entry["minimum"]))
            highs.append(float(entry["maximum"]))
        bounds[column] = (min(lows), max(highs))
    categorical: dict[str, list[str]] = {}
    for column in features:
        if column in numeric:
            continue
        values = set(frame[column].astype(str).unique().tolist())
        withheld = 0
        for columns in published.values():
            entry = columns.get(column) or {}
            values |= {str(v) for v in entry.get("categories") or []}
            withheld += int(entry.get("categories_withheld") or 0)
        categorical[column] = sorted(values)
        if withheld:
            notes.append(
                f"{column}: {withheld} rare categories of other sites are not published; "
                "their rows get no category column"
            )
    classes = {str(v) for v in frame[target].unique().tolist()}
    for columns in published.values():
        classes |= {str(v) for v in (columns.get(target) or {}).get("categories") or []}
    prep = Preprocessing(
        kind="table",
        classes=sorted(classes),
        numeric=numeric,
        mean=[0.0] * len(numeric),
        std=[1.0] * len(numeric),
        categorical=categorical,
        target=target,
    )
    return prep, bounds, notes


def with_moments(
    prep: Preprocessing, bounds: dict[str, tuple[float, float]], moments: dict[str, Any]
) -> Preprocessing:
    """Means and deviations from the averaged scaled moments of the statistics run."""
    mean, std = [], []
    for column, m, square in zip(
        moments["columns"], moments["mean"], moments["mean_square"], strict=True
    ):
        low, high = bounds[column]
        span = high - low if high > low else 1.0
        variance = max(float(square) - float(m) ** 2, 0.0) * span**2
        mean.append(low + span * float(m))
        std.append(math.sqrt(variance) if variance > 1e-24 else 1.0)
    return prep.model_copy(update={"mean": mean, "std": std})


def _await_sites(context: JobContext, job: FederatedJob) -> dict[str, str]:
    """Every site's SuperNode public key, once all have posted one; fails if a site's run
    ends first."""
    announced: set[str] = set()
    while True:
        view = context.client.federation(context.project, context.run_id)
        sites = view.sites or {}
        ended = sorted(s for s, v in sites.items() if v.get("status") in _ENDED)
        if ended:
            raise JobFailed(
                f"site {ended[0]}'s run ended ({sites[ended[0]]['status']}) before the "
                "federation started"
            )
        keys = endorsed_keys(context.workdir, sites)
        for site in sorted(set(keys) - announced):
            context.log(f"site {site} is ready (node key sha256 {key_fingerprint(keys[site])})")
        announced |= set(keys)
        if set(keys) == set(job.clusters):
            return keys
        time.sleep(POLL_SECONDS)


def endorsed_keys(workdir: Path, sites: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The node keys the sites posted, each checked against the endorsement of its site's
    cluster (the signing key that cluster published, in the manifest) for its site run: a
    key not endorsed fails the run, naming the site."""
    signers = _federation(workdir).get("signers") or {}
    keys = {}
    for site, view in sorted(sites.items()):
        if not view.get("public_key"):
            continue
        key = str(view["public_key"])
        try:
            endorse.check(
                str(signers.get(site) or ""),
                run_id=str(view.get("run")),
                material=key,
                endorsement=view.get("endorsement"),
                who=f"site {site}'s node key",
            )
        except SignatureError as exc:
            raise JobFailed(str(exc)) from None
        keys[site] = key
    return keys


def endorsed_link(federation: dict[str, Any], run: str, link: dict[str, Any]) -> None:
    """Fail unless the aggregator's CA certificate in ``link`` carries the endorsement of
    the aggregator's cluster (its signing key, in the manifest) for federated run ``run``:
    a site trusts no other CA."""
    aggregator = str(federation.get("aggregator"))
    try:
        endorse.check(
            str((federation.get("signers") or {}).get(aggregator) or ""),
            run_id=run,
            material=str(link.get("certificate")),
            endorsement=link.get("endorsement"),
            who=f"the aggregator's CA certificate (cluster {aggregator})",
        )
    except SignatureError as exc:
        raise JobFailed(str(exc)) from None


class _Sites:
    """The sites' nodes as the aggregator admitted them: each site's key and node id. A site
    whose run starts a new attempt (its agent restarted) posts a new key; :meth:`readmit`
    replaces the old node with it, so the site rejoins the rounds still to come."""

    def __init__(self, context: JobContext, federation: Federation) -> None:
        self.context, self.federation = context, federation
        self.keys: dict[str, str] = {}
        self.nodes: dict[str, str] = {}
        self.offline: set[str] = set()
        self.reported: set[str] = set()
        self.rounds_reported = 0

    def admit(self, keys: dict[str, str]) -> None:
        for site, key in sorted(keys.items()):
            if self.keys.get(site) == key:
                continue
            if site in self.nodes:  # its earlier attempt's node
                with contextlib.suppress(FederationFailed):
                    self.federation.unregister(self.nodes[site])
                self.context.log(f"site {site} came back with a new node key; admitted again")
            self.nodes[site] = self.federation.admit_key(site, key)
            self.keys[site] = key

    def readmit(self, *, nodes: bool) -> None:
        """Admit the new key of a site that started again; with ``nodes``, also note the
        nodes gone offline (a ``flwr`` command: a second of CPU, so not at every look)."""
        view = self.context.client.federation(self.context.project, self.context.run_id)
        sites = view.sites or {}
        self.admit(endorsed_keys(self.context.workdir, sites))
        self.report_refused(sites)
        if not nodes:
            return
        statuses = self.federation.nodes()
        for site, node in sorted(self.nodes.items()):
            offline = statuses.get(node) == "offline"
            if offline and site not in self.offline:
                self.context.log(f"site {site}'s node went offline; rounds go on without it")
            if not offline and site in self.offline and statuses.get(node) == "online":
                self.context.log(f"site {site}'s node is back online")
            if offline:
                self.offline.add(site)
            elif statuses.get(node) == "online":
                self.offline.discard(site)

    def report_refused(self, sites: dict[str, Any]) -> None:
        """Nodes the SuperLink refused whose key no site of this run posted: logged and
        reported to the control plane, which audits each (a named site dialling before its
        new key was admitted is no stranger)."""
        ours = {
            key_fingerprint(str(v["public_key"])) for v in sites.values() if v.get("public_key")
        }
        strangers = []
        for key in self.federation.refused_keys():
            with contextlib.suppress(ValueError):
                fingerprint = key_fingerprint(key)
                if fingerprint not in ours and fingerprint not in self.reported:
                    strangers.append(fingerprint)
        if strangers:
            self.context.log(
                *(f"refused a node that is no site of this run (key sha256 {f})" for f in strangers)
            )
            self.context.client.join_federation(
                self.context.project, self.context.run_id, refused=strangers
            )
            self.reported |= set(strangers)

    def report_rounds(self, output: Path, *, rounds: int) -> None:
        """Each round the ServerApp finished since the last look: its average accuracy and
        loss as the run's metrics, and a log line with each site's accuracy."""
        path = output / PROGRESS
        if not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").splitlines()
        for line in lines[self.rounds_reported :]:
            figures = json.loads(line)
            step = int(figures["round"])
            if "accuracy" in figures:
                self.context.metric("federated_accuracy", step, float(figures["accuracy"]))
            if "loss" in figures:
                self.context.metric("federated_loss", step, float(figures["loss"]))
            per_site = ", ".join(
                f"{key.removesuffix(':accuracy')} {value:.3f}"
                for key, value in sorted(figures.items())
                if key.endswith(":accuracy")
            )
            self.context.log(
                f"round {step}/{rounds}: accuracy {figures.get('accuracy', float('nan')):.4f} "
                f"over {figures['sites']} sites ({per_site})"
            )
        self.rounds_reported = len(lines)

    def await_online(self, *, needed: int, timeout: float) -> None:
        """Wait until every admitted node is online (or, after ``timeout``, at least
        ``needed`` of them; fewer fails naming the missing sites)."""
        deadline = time.monotonic() + timeout
        while True:
            statuses = self.federation.nodes()
            missing = sorted(s for s, n in self.nodes.items() if statuses.get(n) != "online")
            if not missing:
                return
            if time.monotonic() > deadline:
                if len(self.nodes) - len(missing) >= needed:
                    self.context.log(f"starting without site(s) {', '.join(missing)} (offline)")
                    return
                raise JobFailed(
                    f"site(s) {', '.join(missing)} did not connect within {timeout:.0f} s"
                )
            time.sleep(2 * POLL_SECONDS)

    def run(self, plan: FederatedPlan, what: str, timeout: float) -> None:
        """Submit ``plan`` and wait for it, admitting sites that come back meanwhile."""
        federation, context = self.federation, self.context
        run_id = federation.submit(plan)
        context.log(f"Flower run {run_id}: the {what} run over {plan.sites} sites started")
        deadline = time.monotonic() + timeout
        try:
            output = Path(plan.output)
            for look in itertools.count():
                found = federation.finished(run_id, output=output, look=look)
                if found is not None:
                    status = found
                    break
                if time.monotonic() > deadline:
                    raise JobFailed(f"the {what} run did not finish within {timeout:.0f} s")
                if look % 3 == 2:  # the control plane: new keys of sites that came back
                    self.readmit(nodes=look % 30 == 29)
                self.report_rounds(output, rounds=plan.rounds)
                time.sleep(POLL_SECONDS)
            self.report_rounds(Path(plan.output), rounds=plan.rounds)
        except FederationFailed as exc:
            raise JobFailed(f"the {what} run failed: {exc}") from None
        if status.get("status") != "finished:completed":
            tail = federation.server_log(run_id).strip().splitlines()[-8:]
            raise JobFailed(
                f"the {what} run ended {status.get('status')}: " + " | ".join(tail)[-1500:]
            )


def run_aggregator(context: JobContext, job: FederatedJob) -> None:
    workdir = context.workdir
    sites = _sites(workdir)
    data, info = staged_input(workdir)
    if data.kind != "table":
        raise InvalidInput("federated runs train on tables; image datasets are not supported yet")
    schema = staged_schema(workdir, info)
    _validate(data, info, schema)
    frame = data.table()
    target = job.target or info.get("target")
    if target is None:
        raise InvalidInput(f"{info['name']}@{info['version']} has no target column; name one")
    own = site_training(job, job.datasets[job.aggregator])
    features = _features(context, own, info, frame, target)
    prep, bounds, notes = shared_preprocessing(frame, target=target, features=features, sites=sites)
    if notes:
        context.log(*notes)
    del frame, data  # the aggregator trains on nothing of its own
    common: dict[str, Any] = {
        "model": job.model.model_dump(mode="json"),
        "train": job.train.model_dump(mode="json"),
        "input_shape": prep.input_shape,
        "classes": len(prep.classes),
        "sites": len(job.clusters),
        "min_clients": job.min_clients or len(job.clusters),
        "secure_aggregation": job.secure_aggregation,
        "max_rows": max(int(info.get("rows") or 1) for info in sites.values()),
        "seed": job.train.seed,
        "holdout": job.train.holdout,
        "round_timeout": job.round_timeout,
        "sensitive_features": list(job.sensitive_features),
    }
    address = f"{job.host}:{job.port}"
    federation = Federation(home=workdir / "federation", host=job.host, port=job.port)
    with federation.running():
        federation.start_link()
        if federation.tls is None:  # pragma: no cover - start_link makes it or raises
            raise JobFailed("the SuperLink started without its certificates")
        context.log(f"the aggregator's link is up; waiting for sites {', '.join(job.clusters)}")
        keys = _await_sites(context, job)
        nodes = _Sites(context, federation)
        nodes.admit(keys)
        # Only now the address: a node that dialled before its key was registered would be
        # refused.
        certificate = federation.tls.ca.read_text()
        context.client.join_federation(
            context.project,
            context.run_id,
            address=address,
            certificate=certificate,
            endorsement=_federation(workdir)["endorsement"],
        )
        fingerprint = hashlib.sha256(certificate.encode()).hexdigest()[:16]
        context.log(
            f"sites admitted; the aggregator listens on {address} (TLS, the federation's "
            f"CA sha256 {fingerprint}...)"
        )
        context.event("federated", "running", f"{len(keys)} sites admitted")
        nodes.await_online(needed=common["min_clients"], timeout=job.round_timeout)
        # The longest a Flower run can take while it progresses: every step of every round
        # (training and evaluation; SecAgg+ adds three) waiting its full round_timeout,
        # plus the stats run's round and slack for the processes Flower starts.
        steps = 5 if job.secure_aggregation else 2
        budget = job.round_timeout * steps * (job.rounds + 1) + RUN_SLACK_SECONDS
        if bounds:
            stats = FederatedPlan(
                stage="stats", bounds=bounds, rounds=1, output=str(workdir / "stats"), **common
            )
            nodes.run(stats, "statistics", budget)
            moments = json.loads((workdir / "stats" / STATS).read_text())
            prep = with_moments(prep, bounds, moments)
            context.log(f"shared preprocessing: {len(bounds)} numeric features scaled")
        plan = FederatedPlan(
            stage="train",
            preprocessing=prep.model_dump(mode="json"),
            rounds=job.rounds,
            strategy=job.strategy,
            proximal_mu=job.proximal_mu if job.strategy == "fedprox" else 0.0,
            privacy=job.privacy,
            output=str(workdir / "result"),
            **common,
        )
        nodes.run(plan, "training", budget)
    _seal(context, job, plan, prep, schema, info=info, target=target, features=features)


def _seal(
    context: JobContext,
    job: FederatedJob,
    plan: FederatedPlan,
    prep: Preprocessing,
    schema: TableSchema | ImageSchema,
    *,
    info: dict[str, Any],
    target: str,
    features: list[str],
) -> None:
    """The aggregate, with its evidence, packaged for the agent to seal and register."""
    workdir = context.workdir
    history = json.loads((workdir / "result" / HISTORY).read_text())
    overall, per_site = _report(context, history)
    sample = {s: f.pop("sample_epsilon") for s, f in per_site.items() if "sample_epsilon" in f}
    if sample:
        shown = ", ".join(f"{site} {value:.3f}" for site, value in sorted(sample.items()))
        context.log(f"sample-level DP-SGD at the sites: epsilon per site {shown}")
    model = local.initial_model(plan)
    model.load_state_dict(load_file(str(workdir / "result" / WEIGHTS)))
    evidence: dict[str, Any] = {
        "dataset": job.datasets[job.aggregator],
        "datasets": dict(job.datasets),
        "purpose": job.purpose,
        "dataset_manifest_hash": info["manifest_hash"],
        "target": target,
        "features": features,
        "sensitive_features": list(job.sensitive_features),
        "classes": prep.classes,
        "model": job.model.model_dump(mode="json"),
        "train": job.train.model_dump(mode="json"),
        # Site-level DP bounds what one site's whole contribution reveals; sample-level
        # DP-SGD (train.privacy) what one row reveals: the run's epsilon is the former when
        # it was asked for, else the largest of the sites' (each accounted on its own rows).
        "epsilon": history.get("epsilon", max(sample.values(), default=None)),
        "delta": history.get("delta", job.train.privacy.delta if job.train.privacy else None),
        "test_accuracy": overall,
        "federated": {
            "aggregator": job.aggregator,
            "sites": list(job.clusters),
            "rounds": job.rounds,
            "strategy": job.strategy,
            "secure_aggregation": job.secure_aggregation,
            "site_privacy": job.privacy.model_dump() if job.privacy else None,
            "sample_epsilon": sample or None,
            "site_accuracy": {s: f["accuracy"] for s, f in per_site.items() if "accuracy" in f},
            "site_fairness": {
                s: {k: v for k, v in f.items() if k != "accuracy"}
                for s, f in per_site.items()
                if len(f) > 1
            },
            "history": history,
        },
    }
    package_for_sealing(workdir, job=job, model=model, prep=prep, schema=schema, evidence=evidence)


def _report(
    context: JobContext, history: dict[str, Any]
) -> tuple[float | None, dict[str, dict[str, float]]]:
    """The last round's average accuracy, and each site's last figures (accuracy and, with
    sensitive features, the fairness gaps), logged; each round's figures were reported as
    the round ended (:meth:`_Sites.report_rounds`)."""
    overall: float | None = None
    sites: dict[str, dict[str, float]] = {}
    for key, series in (history.get("metrics_distributed") or {}).items():
        if not series:
            continue
        value = float(series[-1][1])
        if key == "accuracy":
            overall = value
        elif ":" in key and not key.endswith(":loss"):
            site, figure = key.split(":", 1)
            sites.setdefault(site, {})[figure] = value
    shown = ", ".join(
        f"{site} {figures['accuracy']:.4f}"
        for site, figures in sorted(sites.items())
        if "accuracy" in figures
    )
    if overall is not None:
        context.log(f"held-out accuracy {overall:.4f} (per site: {shown})")
    return overall, sites
