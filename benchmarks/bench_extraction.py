"""Model extraction against the serving guards: four thieves and honest traffic, one run.

The victim is the digits CNN (scikit-learn's 8x8 digits, 70/30 split, seed 0) with the
guards a deployment fits (``bastion.inference.runtime.fit_guards``: the input detector
calibrated on half the held-out rows at 2% false positives, the extraction detector with
its defaults). Every query goes through the order the server applies: a key (or its owner)
already flagged is refused (the ``block`` action), else the input detector flags the rows,
the model answers labels only, and the extraction detector records the batch. Queries are
integer pixels 0..16, as the API accepts them, in batches of 20.

Thieves, each with a budget of ``--budget`` queries:

* random: uniform random in-schema images;
* knockoff: 100 natural images the thief holds, jittered (Copycat-style augmentation);
* mixed: natural images the thief holds interleaved with random ones;
* 4 keys: random images spread round-robin over four keys of one owner.

For each: the queries answered before it was stopped and the agreement with the victim (on
the other half of the held-out rows) of a surrogate CNN trained on what it got, next to the
agreement its whole budget would have bought. Honest traffic: the held-out rows replayed in
random order, by one key and by four keys of one owner; any finding is a false alarm.

    python benchmarks/bench_extraction.py [--budget 1000] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bastion.data.checks import infer_image_schema
from bastion.data.ingest import Loaded as Dataset
from bastion.data.reference import digits
from bastion.inference.app import Loaded
from bastion.inference.config import ServeConfig
from bastion.inference.model import ServedModel
from bastion.inference.runtime import fit_guards
from bastion.train.config import BuiltinModel
from bastion.train.data import fit_preprocessing, split_rows
from bastion.train.models import build_model

BATCH = 20
TARGET = 0.80


@dataclass
class Outcome:
    answered: int
    reason: str | None
    agreement: float
    undetected: float


def _train(
    x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int, builtin: str = "mlp"
) -> torch.nn.Module:
    """A CNN for the victim; the thieves' surrogates are MLPs (cheaper, as accurate here)."""
    torch.manual_seed(seed)
    model = build_model(
        BuiltinModel.model_validate({"builtin": builtin}), input_shape=(1, 8, 8), classes=10
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        for batch in torch.split(torch.randperm(len(x)), 64):
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
    return model.eval()


def _agreement(surrogate: torch.nn.Module, victim: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((surrogate(x).argmax(1) == victim(x).argmax(1)).float().mean())


def _guards(
    seed: int, victim_epochs: int
) -> tuple[Loaded, torch.Tensor, torch.Tensor, torch.Tensor]:
    images, labels = digits(seed=0)
    data = Dataset(kind="images", images=images, labels=labels)
    prep = fit_preprocessing(data, target=None)
    x, y = prep.features(data), prep.labels(data)
    _, train_rows, test_rows = split_rows(y, holdout=0.3, seed=0)
    victim = _train(x[train_rows], y[train_rows], epochs=victim_epochs, seed=seed, builtin="cnn")
    served = ServedModel(
        ref="digits@1",
        manifest_hash="0" * 64,
        model=victim,
        prep=prep,
        schema=infer_image_schema(images, labels),
        metadata={},
    )
    calibrate, unseen = test_rows[::2], test_rows[1::2]
    loaded = fit_guards(
        served,
        x_train=x[train_rows],
        y_train=y[train_rows],
        x_holdout=x[calibrate],
        config=ServeConfig(),
    )
    return loaded, x[calibrate], x[unseen], x[train_rows]


def _pixels(x: np.ndarray) -> torch.Tensor:
    """What the API accepts: integer pixels 0..16, scaled as the server scales them."""
    rounded = np.clip(np.round(x * 16), 0, 16) / 16
    return torch.from_numpy(rounded.reshape(-1, 1, 8, 8)).float()


def _constant(features: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The penultimate features already computed with the answer (as the server does)."""
    return lambda _: features


def _query(
    loaded: Loaded, queries: torch.Tensor, keys: list[str], owner: str
) -> tuple[int, str | None, torch.Tensor]:
    """Send ``queries`` batch by batch, round-robin over ``keys``; stop at the first
    refusal. The rows answered, why it was stopped, the labels it got."""
    served, labels, reason = loaded.served, [], None
    for index, start in enumerate(range(0, len(queries), BATCH)):
        key = keys[index % len(keys)]
        reason = loaded.extraction.flagged(key, owner)
        if reason is not None:
            break
        batch = queries[start : start + BATCH]
        probabilities, features = served.infer(batch)
        assert loaded.detector is not None
        ood = loaded.detector(_constant(features), served.probabilities, batch).out_of_distribution
        predicted = probabilities.argmax(1)
        loaded.extraction.observe(
            key, batch.flatten(1).numpy(), predicted.numpy(), owner=owner, ood=ood
        )
        labels.append(predicted)
    got = torch.cat(labels) if labels else torch.empty(0, dtype=torch.long)
    return len(got), reason, got


def _thieves(held: torch.Tensor, budget: int, seed: int) -> dict[str, tuple[torch.Tensor, int]]:
    rng = np.random.default_rng(seed)
    random = rng.integers(0, 17, size=(budget, 64)) / 16
    natural = held[:100].flatten(1).numpy()
    jittered = np.concatenate(
        [np.clip(natural + rng.normal(0, 0.1, natural.shape), 0, 1) for _ in range(budget // 100)]
    )
    mixed = np.empty((budget, 64))
    mixed[0::2] = held.flatten(1).numpy()[rng.integers(0, len(held), size=budget // 2)]
    mixed[1::2] = random[: budget // 2]
    return {
        "random": (_pixels(random), 1),
        "knockoff": (_pixels(jittered[rng.permutation(len(jittered))]), 1),
        "mixed": (_pixels(mixed), 1),
        "4 keys": (_pixels(random), 4),
    }


def _run(
    budget: int, seed: int, victim_epochs: int, surrogate_epochs: int
) -> tuple[dict[str, Outcome], dict[str, int]]:
    loaded, held, unseen, _ = _guards(seed, victim_epochs)
    victim = loaded.served.model
    outcomes = {}
    for name, (queries, key_count) in _thieves(held, budget, seed).items():
        keys = [f"{name}-key-{i}" for i in range(key_count)]
        answered, reason, labels = _query(loaded, queries, keys, owner=f"{name}-owner")
        agreement = 0.0
        if answered:
            agreement = _agreement(
                _train(queries[:answered], labels, epochs=surrogate_epochs, seed=seed),
                victim,
                unseen,
            )
        with torch.no_grad():
            everything = victim(queries).argmax(1)
        undetected = _agreement(
            _train(queries, everything, epochs=surrogate_epochs, seed=seed), victim, unseen
        )
        outcomes[name] = Outcome(answered, reason, agreement, undetected)
    alarms = {}
    order = torch.from_numpy(np.random.default_rng(seed + 1).permutation(len(unseen)))
    for label, key_count in (("honest, 1 key", 1), ("honest, 4 keys", 4)):
        keys = [f"{label}-{i}" for i in range(key_count)]
        traffic = torch.cat([unseen[order], held])  # every held-out row, twice mixed
        _query(loaded, traffic, keys, owner=label)
        alarms[label] = sum(loaded.extraction.flagged(key, label) is not None for key in keys)
    return outcomes, alarms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--victim-epochs", type=int, default=15)
    parser.add_argument("--surrogate-epochs", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = [
        _run(args.budget, seed, args.victim_epochs, args.surrogate_epochs)
        for seed in range(args.reps)
    ]
    print(f"digits CNN, label-only answers, block on detection; medians of {args.reps} seeds")
    print(f"{'thief':<10} {'answered':>9} {'agreement':>10} {'whole budget':>13}  caught by")
    worst = 0.0
    for name in runs[0][0]:
        outcomes = [outcome[name] for outcome, _ in runs]
        answered = statistics.median(o.answered for o in outcomes)
        agreement = statistics.median(o.agreement for o in outcomes)
        undetected = statistics.median(o.undetected for o in outcomes)
        reason = outcomes[0].reason or "not caught"
        worst = max(worst, agreement)
        print(f"{name:<10} {answered:>9.0f} {agreement:>10.3f} {undetected:>13.3f}  {reason[:70]}")
    for label in runs[0][1]:
        alarms = [found[label] for _, found in runs]
        print(f"{label:<15} false alarms (keys flagged): {alarms}")
    print(f"ratio best thief's agreement when stopped / target {TARGET:.2f}: {worst / TARGET:.2f}x")


if __name__ == "__main__":
    main()
