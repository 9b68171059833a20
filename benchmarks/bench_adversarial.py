"""Adversarial inputs against the serving guards, in the space the server accepts.

The victim is the digits CNN (scikit-learn's 8x8 digits, 70/30 split with the run's seed,
SGD 15 epochs as tests/inference trains it) behind the guards a deployment fits
(``bastion.inference.runtime.fit_guards`` with ``ood_fpr`` set to each ``--fpr``): the
input detector sets its thresholds on half the held-out rows and never sees the other half,
the "unseen" rows. Every attack starts from the unseen rows; the clean false-positive rate is
measured on them too.

Attacks are L-infinity PGD-20 (``bastion.evaluate.attacks.pgd``, step 2.5 * eps / 20, one
random start) at each eps on the model's 0..1 scale (0.1, 0.2, 0.3 = 1.6, 3.2, 4.8 pixel
levels of 0..16; on integers 1, 3 and 4 levels). In float space the examples are any values
in range; in integer space every step and the result are projected onto the integer pixels
the server's validator accepts (``lattice``), so they are sent as they are.

* white-box: PGD on the served model itself (full strength: no early stop);
* transfer: PGD on a surrogate CNN the attacker trained on the same training rows (another
  initialisation), then sent to the victim;
* adaptive: white-box, 40 steps, on a loss that also minimises the detector's combined score
  over its threshold (computed exactly as the detector does from the input Mahalanobis
  distance, the 3-bit squeeze through a straight-through rounding, the noise-stability
  score with the detector's own fixed noise patterns, the trust score's distances to
  the training rows it keeps, and the pixel density between lattice levels read off the
  straight line between them) for weights 0.3 and 1; per image the
  attacker keeps an example that fools the model unflagged if either weight found one.

For each eps and attacker: the attack success rate (the share of unseen rows whose
prediction the example changes from the label) in float and in integer space, and the share
of successful integer examples the detector flags; then the clean false-positive rate on the
unseen rows. Medians over ``--seeds``. The ratio printed last is the flagged share of
successful white-box integer examples at eps 0.2 (or the middle eps given) over the clean
false-positive rate, at the last ``--fpr``.

    python benchmarks/bench_adversarial.py [--seeds 3] [--eps 0.1 0.2 0.3] [--fpr 0.02 0.05]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias

from bastion.data.checks import infer_image_schema
from bastion.data.ingest import Loaded as Dataset
from bastion.data.reference import digits
from bastion.evaluate.attacks import Lattice, Norm, pgd
from bastion.inference.app import Loaded
from bastion.inference.config import ServeConfig
from bastion.inference.guards.ood import (
    InputDetector,
    InputMahalanobis,
    NoiseScore,
    PixelDensity,
    SqueezeScore,
    TrustScore,
    calibration_split,
)
from bastion.inference.model import ServedModel
from bastion.inference.runtime import fit_guards, served_lattice
from bastion.train.config import BuiltinModel
from bastion.train.data import fit_preprocessing, split_rows
from bastion.train.models import build_model

STEPS = 20
ADAPTIVE_STEPS = 40
ADAPTIVE_WEIGHTS = (0.3, 1.0)
ATTACKERS = ("white-box", "transfer", "adaptive")


def _train(x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(BuiltinModel(builtin="cnn"), input_shape=(1, 8, 8), classes=10)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        for batch in torch.split(torch.randperm(len(x)), 64):
            optimiser.zero_grad()
            loss = F.cross_entropy(model(x[batch]), y[batch])
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
    return model.eval()


def _wrong(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return np.asarray((model(x).argmax(1) != y).numpy())


def _flagged(loaded: Loaded, x: torch.Tensor) -> np.ndarray:
    served, detector = loaded.served, loaded.detector
    assert detector is not None
    return detector(served.features, served.probabilities, x).flagged


Term = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class _Differentiable:
    """The detector's combined score over its threshold, as a differentiable loss: each
    score's log-z-score exactly as ``Combined`` computes it, positive parts to its power."""

    def __init__(self, detector: InputDetector, model: torch.nn.Module) -> None:
        self.model = model
        self.combined = detector.combined
        self.threshold = max(detector.threshold, 1e-6)
        self.terms: dict[str, Term] = {}
        for score in detector.components:
            if isinstance(score, InputMahalanobis):
                means = torch.from_numpy(score.distance.means).float()
                precision = torch.from_numpy(score.distance.precision).float()
                self.terms[score.name] = self._mahalanobis(means, precision)
            elif isinstance(score, SqueezeScore):
                self.terms[score.name] = self._squeeze(2**score.bits - 1)
            elif isinstance(score, NoiseScore):
                self.terms[score.name] = self._noise(score)
            elif isinstance(score, TrustScore):
                self.terms[score.name] = self._trust(score)
            elif isinstance(score, PixelDensity):
                self.terms[score.name] = self._pixel_density(score)
            else:
                raise TypeError(f"no differentiable form of {score.name}")

    def _mahalanobis(self, means: torch.Tensor, precision: torch.Tensor) -> Term:
        def term(x: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
            diff = x.flatten(1)[:, None, :] - means[None]
            distances = torch.einsum("ncd,de,nce->nc", diff, precision, diff)
            return distances.min(dim=1).values

        return term

    def _squeeze(self, levels: int) -> Term:
        def term(x: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
            rounded = torch.round(x.clamp(0, 1) * levels) / levels
            straight = x + (rounded - x).detach()  # rounding's gradient taken as 1
            squeezed = torch.softmax(self.model(straight), dim=1)
            return (squeezed - clean).abs().sum(dim=1)

        return term

    def _noise(self, score: NoiseScore) -> Term:
        def term(x: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
            total = torch.zeros(len(x))
            for pattern in score.patterns:
                noisy = (x + pattern * score.step).clamp(score.lower, score.upper)
                total = total + (torch.softmax(self.model(noisy), dim=1) - clean).abs().sum(1)
            return total / len(score.patterns)

        return term

    def _trust(self, score: TrustScore) -> Term:
        def term(x: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
            found = score.per_class(x)  # differentiable in x; the predicted class is not
            predicted = clean.argmax(dim=1, keepdim=True)
            own = found.gather(1, predicted)[:, 0]
            others = found.scatter(1, predicted, float("inf")).amin(dim=1)
            return own / others.clamp(min=1e-12)

        return term

    @staticmethod
    def _pixel_density(score: PixelDensity) -> Term:
        """Exact on the lattice; between two levels, the straight line between their values
        (so the attacker sees which way a pixel should move)."""
        levels = len(score.log_frequency)

        def term(x: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
            position = ((x.flatten(1) - score.lower) / score.step).clamp(0, levels - 1)
            below = position.detach().floor().long().clamp(max=levels - 2)
            part = position - below
            low = score.log_frequency.gather(0, below)
            high = score.log_frequency.gather(0, below + 1)
            return -((1 - part) * low + part * high).mean(dim=1)

        return term

    def __call__(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        clean = torch.softmax(logits, dim=1)
        total = torch.zeros(len(x))
        for name, term in self.terms.items():
            logs = torch.log(term(x, clean).clamp(min=1e-12))
            z = (logs - self.combined.centres[name]) / self.combined.scales[name]
            total = total + F.relu(z) ** self.combined.power
        return total / self.threshold


def _adaptive(
    loaded: Loaded,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    lattice: Lattice | None,
    seed: int,
) -> torch.Tensor:
    """White-box PGD on the margin loss plus the detector's scores; per image an example
    that fools the model unflagged where one was found, else the last that fooled it."""
    model = loaded.served.model
    assert loaded.detector is not None
    detector_loss = _Differentiable(loaded.detector, model)
    generator = torch.Generator().manual_seed(seed)
    best = x.clone()
    evading = torch.zeros(len(x), dtype=torch.bool)
    for weight in ADAPTIVE_WEIGHTS:
        delta = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
        adv = (x + delta).clamp(0, 1)
        for _ in range(ADAPTIVE_STEPS):
            seen = adv if lattice is None else lattice.project(adv, x, eps=eps, norm=Norm.LINF)
            seen = seen.detach().requires_grad_(True)
            logits = model(seen)
            true = logits.gather(1, y[:, None])[:, 0]
            other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -1e9).amax(1)
            # Once the model is fooled by a margin of 2 the loss is the detector's alone.
            margin = (true - other).clamp(min=-2)
            loss = -(margin + weight * detector_loss(seen, logits)).sum()
            gradient = torch.autograd.grad(loss, seen)[0]
            step = 2.5 * eps / ADAPTIVE_STEPS * gradient.sign()
            adv = (x + (adv + step - x).clamp(-eps, eps)).clamp(0, 1).detach()
            now = adv if lattice is None else lattice.project(adv, x, eps=eps, norm=Norm.LINF)
            fooled = torch.from_numpy(_wrong(model, now, y))
            unflagged = fooled & ~torch.from_numpy(_flagged(loaded, now))
            take = (~evading) & (unflagged | fooled)
            best[take] = now[take]
            evading |= unflagged
    return best


@dataclass
class Scene:
    """A deployment and what its attackers hold."""

    loaded: Loaded
    x: torch.Tensor  # the unseen held-out rows: attacked, and the clean false positives
    y: torch.Tensor
    surrogate: torch.nn.Module
    lattice: Lattice


def _scenes(seed: int, *, epochs: int, fprs: list[float], rows: int | None) -> list[Scene]:
    """One victim and surrogate per seed; the guards fitted at each false-positive budget."""
    images, labels = digits(seed=0)
    data = Dataset(kind="images", images=images, labels=labels)
    prep = fit_preprocessing(data, target=None)
    x, y = prep.features(data), prep.labels(data)
    _, train_rows, test_rows = split_rows(y, holdout=0.3, seed=seed)
    victim = _train(x[train_rows], y[train_rows], epochs=epochs, seed=seed)
    surrogate = _train(x[train_rows], y[train_rows], epochs=epochs, seed=seed + 1000)
    schema = infer_image_schema(images, labels)
    served = ServedModel(
        ref="digits@1", manifest_hash="0" * 64, model=victim, prep=prep, schema=schema, metadata={}
    )
    lattice = served_lattice(served)
    assert lattice is not None, "digits pixels are integers"
    unseen = test_rows[calibration_split(len(test_rows), seed=seed)[1]][:rows]
    return [
        Scene(
            loaded=fit_guards(
                served,
                x_train=x[train_rows],
                y_train=y[train_rows],
                x_holdout=x[test_rows],
                config=ServeConfig(ood_fpr=fpr),
                seed=seed,
            ),
            x=x[unseen],
            y=y[unseen],
            surrogate=surrogate,
            lattice=lattice,
        )
        for fpr in fprs
    ]


def _attack(
    attacker: str, scene: Scene, *, eps: float, lattice: Lattice | None, seed: int
) -> torch.Tensor:
    if attacker == "adaptive":
        return _adaptive(scene.loaded, scene.x, scene.y, eps=eps, lattice=lattice, seed=seed)
    model = scene.loaded.served.model if attacker == "white-box" else scene.surrogate
    generator = torch.Generator().manual_seed(seed)
    return pgd(model, scene.x, scene.y, eps=eps, steps=STEPS, lattice=lattice, generator=generator)


def run(scene: Scene, *, eps_list: list[float], seed: int) -> dict[str, float]:
    """Figures of one scene: ``"<attacker> <eps> <figure>"`` -> value, and ``"fpr"``."""
    loaded, y, model = scene.loaded, scene.y, scene.loaded.served.model
    found = {"fpr": float(_flagged(loaded, scene.x).mean())}
    for eps in eps_list:
        for attacker in ATTACKERS:
            floats = _attack(attacker, scene, eps=eps, lattice=None, seed=seed)
            integers = _attack(attacker, scene, eps=eps, lattice=scene.lattice, seed=seed)
            pixels = integers * 16
            assert torch.equal(pixels, torch.round(pixels)), "integer examples must be integers"
            fooled = _wrong(model, integers, y)
            flagged = _flagged(loaded, integers[torch.from_numpy(fooled)])
            found[f"{attacker} {eps} float"] = float(_wrong(model, floats, y).mean())
            found[f"{attacker} {eps} integer"] = float(fooled.mean())
            found[f"{attacker} {eps} flagged"] = float(flagged.mean()) if len(flagged) else 0.0
            found[f"{attacker} {eps} successes"] = float(fooled.sum())
    return found


def _table(fpr: float, runs: list[dict[str, float]], eps_list: list[float]) -> dict[str, float]:
    """Print the medians at one budget; return them."""
    medians = {key: statistics.median(found[key] for found in runs) for key in runs[0]}
    print(f"\nood_fpr {fpr}: medians over {len(runs)} seed(s)")
    print(
        f"{'attacker':<10} {'eps':>4} {'success float':>13} {'success int':>11} "
        f"{'successes':>9} {'flagged':>8}"
    )
    for eps in eps_list:
        for attacker in ATTACKERS:
            key = f"{attacker} {eps}"
            print(
                f"{attacker:<10} {eps:>4} {medians[key + ' float']:>13.3f} "
                f"{medians[key + ' integer']:>11.3f} {medians[key + ' successes']:>9.0f} "
                f"{medians[key + ' flagged']:>8.3f}"
            )
    print(f"clean false-positive rate on unseen held-out rows: {medians['fpr']:.3f}")
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--fpr", type=float, nargs="+", default=[0.02, 0.05])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--rows", type=int, default=None, help="Unseen rows attacked.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs: list[list[dict[str, float]]] = [[] for _ in args.fpr]
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        scenes = _scenes(seed, epochs=args.epochs, fprs=args.fpr, rows=args.rows)
        for found, scene in zip(runs, scenes, strict=True):
            found.append(run(scene, eps_list=args.eps, seed=seed))
    medians = {}
    for fpr, found in zip(args.fpr, runs, strict=True):
        medians = _table(fpr, found, args.eps)
    headline = args.eps[len(args.eps) // 2]
    flagged = medians[f"white-box {headline} flagged"]
    print(
        f"ratio flagged/false-positive rate (white-box, eps {headline}, ood_fpr "
        f"{args.fpr[-1]}): {flagged:.3f} / {medians['fpr']:.3f} = "
        f"{flagged / max(medians['fpr'], 1e-3):.1f}x"
    )


if __name__ == "__main__":
    main()
