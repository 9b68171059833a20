"""The Flower ServerApp (the aggregator) and ClientApp (each site), on Bastion's trainer.

Runs only in the federated environment's processes (``flwr-serverapp``, ``flwr-clientapp``),
which Flower's SuperLink and SuperNodes start for each step of a run.

- **Site** (:data:`client_app`): trains the plan's model for the plan's local epochs on its
  own rows with :class:`bastion.train.trainer.Trainer` (the rows never leave: the node's
  ``data`` file is read in its own process) and answers with the new weights and the number
  of rows; evaluates the global model on its own held-out rows and answers with the metrics
  and its site name. With ``secure_aggregation`` the reply goes through Flower's SecAgg+
  (``secaggplus_mod``): quantised, masked with pairwise and private masks, so the
  aggregator can unmask only the sum of the sites' weighted updates.
- **Aggregator** (:data:`server_app`): federated averaging over ``rounds`` rounds (Flower's
  ``FedAvg``; with ``secure_aggregation`` its fit step is Flower's ``SecAggPlusWorkflow``),
  from the plan's seeded initial weights; it writes the final weights (safetensors) and the
  per-round history (JSON) to the plan's ``output`` folder.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import fixedclipping_mod, secaggplus_mod
from flwr.common import Context, Message, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

from bastion.federated import local
from bastion.federated.plan import (
    HISTORY,
    PROGRESS,
    STATS,
    WEIGHTS,
    FederatedPlan,
    read_plan,
    site_epsilon,
)
from bastion.files import atomic_write_bytes

__all__ = ["client_app", "server_app"]


class _Site(NumPyClient):  # type: ignore[misc]  # Flower is untyped here
    def __init__(self, plan: FederatedPlan, data: Path, site: str) -> None:
        self.plan, self.site, self.data = plan, site, data

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        if self.plan.stage == "stats":
            answer, count = local.moments(self.plan, self.data)
            return answer, count, {"site": self.site}
        server_round = int(config.get("server_round", 0))
        arrays, count, loss = local.local_update(
            self.plan, parameters, self.data, server_round=server_round
        )
        # Under site-level DP every site weighs the same: the noise is calibrated to a
        # plain mean of clipped updates.
        weight = 1 if self.plan.privacy is not None else count
        return arrays, weight, {"loss": loss, "site": self.site}

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[float, int, dict[str, Any]]:
        loss, count, figures = local.evaluate(self.plan, parameters, self.data)
        return loss, count, {**figures, "loss": loss, "site": self.site}


def _client(context: Context) -> Any:
    plan = read_plan(context.run_config)
    config = context.node_config
    return _Site(plan, Path(str(config["data"])), str(config["site"])).to_client()


def _secure_if_planned(msg: Message, context: Context, call_next: Any) -> Message:
    """SecAgg+ on the training replies when the plan asks for it (it always does unless
    the run turned it off)."""
    if read_plan(context.run_config).secure_aggregation:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def _clip_if_planned(msg: Message, context: Context, call_next: Any) -> Message:
    """Site-level DP: the update is clipped here, at the site, before SecAgg+ masks it."""
    if read_plan(context.run_config).privacy is not None:
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)


# The first mod is the outermost: SecAgg+ masks what the clipping mod returns.
client_app = ClientApp(client_fn=_client, mods=[_secure_if_planned, _clip_if_planned])
server_app = ServerApp()


def _round_config(server_round: int) -> dict[str, Any]:
    """What each site is told with a round's weights: the round (it seeds the local pass)."""
    return {"server_round": server_round}


def _weighted(metrics: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """The sites' metrics averaged by rows, and each site's own (``NAME:accuracy``)."""
    rows = sum(n for n, _ in metrics) or 1
    out: dict[str, Any] = {}
    for key in ("accuracy", "loss"):
        values = [(n, m[key]) for n, m in metrics if key in m]
        if values:
            out[key] = sum(n * float(v) for n, v in values) / rows
    for _, m in metrics:
        for key, value in m.items():
            if key != "site" and "site" in m:
                out[f"{m['site']}:{key}"] = value
    return out


def _progress(output: Path) -> Callable[[list[tuple[int, dict[str, Any]]]], dict[str, Any]]:
    """The evaluation metrics' aggregation, which also appends each round's figures to the
    output folder's progress file as the round ends (the aggregator's job reports them)."""
    rounds = itertools.count(1)

    def aggregate(metrics: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        figures = _weighted(metrics)
        line = json.dumps({"round": next(rounds), "sites": len(metrics), **figures})
        output.mkdir(parents=True, exist_ok=True)
        with (output / PROGRESS).open("a", encoding="utf-8") as progress:
            progress.write(line + "\n")
        return figures

    return aggregate


@server_app.main()  # type: ignore[untyped-decorator]
def _aggregate(grid: Grid, context: Context) -> None:
    plan = read_plan(context.run_config)
    stats = plan.stage == "stats"
    if stats:  # the answers are averaged moments: start from zeros, evaluate nothing
        width = len(plan.bounds)
        initial = [np.zeros(width), np.zeros(width)]
    else:
        initial = local.weights(local.initial_model(plan))
    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0 if stats else 1.0,
        min_fit_clients=plan.min_clients,
        min_evaluate_clients=plan.min_clients,
        # A round goes ahead with min_clients sites (the others lost, or not back yet).
        min_available_clients=plan.min_clients,
        initial_parameters=ndarrays_to_parameters(initial),
        on_fit_config_fn=_round_config,
        fit_metrics_aggregation_fn=_weighted,
        evaluate_metrics_aggregation_fn=_progress(Path(plan.output)),
    )
    if plan.privacy is not None:
        strategy = DifferentialPrivacyClientSideFixedClipping(
            strategy,
            noise_multiplier=plan.privacy.noise_multiplier,
            clipping_norm=plan.privacy.clipping_norm,
            num_sampled_clients=plan.sites,
        )
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=plan.rounds, round_timeout=plan.round_timeout),
        strategy=strategy,
    )
    fit = None
    if plan.secure_aggregation:
        shares = plan.sites
        fit = SecAggPlusWorkflow(
            num_shares=shares,
            reconstruction_threshold=max(2, min(shares - 1, math.ceil(2 * shares / 3))),
            max_weight=float(plan.max_rows),
            timeout=plan.round_timeout,
        )
    DefaultWorkflow(fit_workflow=fit)(grid, legacy)
    import flwr.compat.common.recorddict_compat as compat  # noqa: PLC0415 - Flower's own

    parameters = compat.arrayrecord_to_parameters(
        legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
    )
    output = Path(plan.output)
    arrays = parameters_to_ndarrays(parameters)
    if stats:
        mean, square = (np.asarray(a, dtype=np.float64).tolist() for a in arrays)
        moments = {"columns": list(plan.bounds), "mean": mean, "mean_square": square}
        atomic_write_bytes(output / STATS, json.dumps(moments).encode())
        return
    final = local.with_weights(plan, arrays)
    from safetensors.torch import save  # noqa: PLC0415

    tensors = {k: v.contiguous() for k, v in final.state_dict().items()}
    atomic_write_bytes(output / WEIGHTS, save(tensors))
    history = legacy.history
    record = {
        "rounds": plan.rounds,
        "losses_distributed": history.losses_distributed,
        "metrics_distributed": history.metrics_distributed,
        "metrics_distributed_fit": history.metrics_distributed_fit,
    }
    if plan.privacy is not None:  # every round counted, aggregated or not: an upper bound
        record["epsilon"] = site_epsilon(plan.privacy, plan.rounds)
        record["delta"] = plan.privacy.delta
    atomic_write_bytes(output / HISTORY, json.dumps(record).encode())
