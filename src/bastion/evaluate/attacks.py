"""Evasion attacks as pure functions on tensors: FGSM and PGD (L-infinity and L2).

Adversarial training and the robustness evaluation use this one implementation. Every
function takes the model, a batch and labels, works on the whole batch at once, keeps
the examples inside ``[lower, upper]`` (the schema's valid range) and returns new
tensors; the model's parameters, mode and gradients are left as they were.

Given a :class:`Lattice` (integer pixels, as the inference server accepts them), every
example the model sees, at each step and at the end, is a valid input: a lattice point
within the budget, so the result can be sent to the server as it is.
"""

from __future__ import annotations

import contextlib
import enum
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from bastion.errors import InvalidInput

__all__ = [
    "Attack",
    "Bound",
    "Lattice",
    "Norm",
    "fgsm",
    "image_lattice",
    "input_bounds",
    "pgd",
    "run_attack",
]

#: A valid-range bound: one value for every input, or a tensor broadcast against one example
#: (per-feature bounds for tables, from the schema's range).
Bound = float | torch.Tensor


class Norm(enum.StrEnum):
    LINF = "linf"
    L2 = "l2"


class Attack(enum.StrEnum):
    FGSM = "fgsm"
    PGD = "pgd"


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Gradients w.r.t. the input only: parameters neither need nor keep gradients.

    A model wrapped for DP-SGD (Opacus's GradSampleModule) also has its per-sample
    gradient hooks switched off meanwhile: an attack's backward pass is not a training step.
    """
    flags = [p.requires_grad for p in model.parameters()]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    hooked = callable(getattr(model, "disable_hooks", None))
    if hooked:
        model.disable_hooks()  # type: ignore[operator]
    try:
        yield
    finally:
        if hooked:
            model.enable_hooks()  # type: ignore[operator]
        for parameter, flag in zip(model.parameters(), flags, strict=True):
            parameter.requires_grad_(flag)


def _loss_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _gradient_and_logits(model, x, y)[0]


def _gradient_and_logits(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y, reduction="sum")
    gradient: torch.Tensor = torch.autograd.grad(loss, x)[0]
    return gradient.detach(), logits.detach()


def _per_example_norm(t: torch.Tensor) -> torch.Tensor:
    norms: torch.Tensor = t.flatten(1).norm(dim=1).clamp_min(1e-12)
    return norms.view(-1, *([1] * (t.dim() - 1)))


def _project(delta: torch.Tensor, *, eps: float, norm: Norm) -> torch.Tensor:
    if norm is Norm.LINF:
        return delta.clamp(-eps, eps)
    return delta * (eps / _per_example_norm(delta)).clamp(max=1.0)


def input_bounds(x: torch.Tensor, *, images: bool) -> tuple[Bound, Bound]:
    """The valid input range: [0, 1] for scaled images; per feature for tables.

    Table inputs are standardised or one-hot; the training rows' range of each input
    (which lies inside the schema's range) bounds what an attack may produce.
    """
    if images:
        return 0.0, 1.0
    return x.min(dim=0).values, x.max(dim=0).values


@dataclass(frozen=True)
class Lattice:
    """The inputs a server accepts: ``lower + k * step`` for integers ``k``, up to ``upper``
    (in model-input units; the image's integer pixels after scaling)."""

    step: float
    lower: float
    upper: float

    def budget(self, eps: float) -> float:
        """The largest move along one input within ``eps``: a whole number of steps."""
        return math.floor(eps / self.step + 1e-6) * self.step

    def snap(self, x: torch.Tensor) -> torch.Tensor:
        """The nearest lattice point, inside the range."""
        levels = torch.round((x - self.lower) / self.step)
        return (self.lower + levels * self.step).clamp(self.lower, self.upper)

    def project(
        self, adversarial: torch.Tensor, x: torch.Tensor, *, eps: float, norm: Norm
    ) -> torch.Tensor:
        """A lattice point near ``adversarial`` within ``eps`` of the clean ``x`` (itself on
        the lattice). L-infinity rounds each input to the nearest level within the budget;
        L2 rounds each change towards zero, which can only shorten it."""
        delta = adversarial - x
        if norm is Norm.LINF:
            bound = self.budget(eps)
            delta = (torch.round(delta / self.step) * self.step).clamp(-bound, bound)
        else:
            delta = torch.trunc(delta / self.step + 1e-6 * torch.sign(delta)) * self.step
        return self.snap(x + delta)


def image_lattice(
    *, dtype: str, minimum: float, maximum: float, value_range: tuple[float, float]
) -> Lattice | None:
    """The lattice of an image schema with integer pixels (scaled as the model's
    preprocessing scales them), or None when its pixels are not integers."""
    if not dtype.startswith(("int", "uint")):
        return None
    low, high = value_range
    span = max(high - low, 1e-12)
    return Lattice(step=1 / span, lower=(minimum - low) / span, upper=(maximum - low) / span)


def _check(eps: float, lower: Bound, upper: Bound) -> None:
    if eps < 0:
        raise InvalidInput(f"eps must be >= 0, got {eps}")
    if not bool(torch.all(torch.as_tensor(lower) <= torch.as_tensor(upper))):
        raise InvalidInput("the valid input range is empty (a lower bound above its upper one)")


def _clamp(x: torch.Tensor, lower: Bound, upper: Bound) -> torch.Tensor:
    if isinstance(lower, float | int) and isinstance(upper, float | int):
        return x.clamp(lower, upper)
    return torch.clamp(x, torch.as_tensor(lower), torch.as_tensor(upper))


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    lower: Bound = 0.0,
    upper: Bound = 1.0,
    lattice: Lattice | None = None,
) -> torch.Tensor:
    """Fast gradient sign method (L-infinity, one step of size ``eps``; on the lattice, of
    the largest whole number of steps within ``eps``)."""
    _check(eps, lower, upper)
    with _frozen(model):
        gradient = _loss_gradient(model, x, y)
    adversarial = _clamp(x + eps * gradient.sign(), lower, upper)
    if lattice is not None:
        adversarial = lattice.project(adversarial, x, eps=eps, norm=Norm.LINF)
    return adversarial.detach()


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    norm: Norm = Norm.LINF,
    random_start: bool = True,
    restarts: int = 1,
    schedule: str = "constant",
    early_stop: bool = False,
    lower: Bound = 0.0,
    upper: Bound = 1.0,
    lattice: Lattice | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al.), keeping each example's strongest restart.

    ``step_size`` defaults to ``2.5 * eps / steps``; ``schedule="cosine"`` decays it from
    ``step_size`` towards zero over the steps. With several restarts an example keeps the
    first adversarial example that fools the model, else the one of highest loss.

    ``early_stop`` (for measuring robust accuracy) stops attacking an example as soon as
    an iterate fools the model and keeps that iterate: the attack is at least as strong
    (a later step can no longer undo a success) and spends no work on examples already
    won. Adversarial training leaves it off: it wants the full-strength iterates.

    With a ``lattice`` the iterate itself moves freely (small steps add up), but the model
    sees, is attacked at and returns only its projection onto the lattice (the nearest
    valid input within ``eps``): the examples are inputs the server accepts as they are.
    """
    _check(eps, lower, upper)
    if steps < 1 or restarts < 1:
        raise InvalidInput("steps and restarts must be at least 1")
    if schedule not in ("constant", "cosine"):
        raise InvalidInput(f"unknown step-size schedule {schedule!r}: constant or cosine")
    base = step_size if step_size is not None else 2.5 * eps / steps
    alphas = [
        base if schedule == "constant" else base * 0.5 * (1 + math.cos(math.pi * t / steps))
        for t in range(steps)
    ]
    if lattice is not None and lattice.budget(eps) == 0 and norm is Norm.LINF:
        return x.detach().clone()  # no valid input differs from x by eps or less

    def valid(adversarial: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
        if lattice is None:
            return adversarial
        return lattice.project(adversarial, origin, eps=eps, norm=norm)

    best = x.detach().clone()
    best_loss = torch.full((len(x),), -float("inf"), device=x.device)
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    with _frozen(model):
        for _ in range(restarts):
            delta = torch.zeros_like(x)
            if random_start:
                # Drawn where the generator lives (the CPU for the evaluation's, so a GPU
                # run starts from the same points as a CPU run), then moved to x.
                where = generator.device if generator is not None else x.device
                noise = torch.rand(x.shape, generator=generator, device=where).to(x.device)
                noise = noise * 2 - 1
                delta = _project(noise * eps, eps=eps, norm=norm)
            adv = _clamp(x + delta, lower, upper)
            # The rows still attacked (with early_stop: those not yet fooled).
            rows = (
                (~fooled).nonzero().squeeze(1)
                if early_stop
                else torch.arange(len(x), device=x.device)
            )
            for alpha in alphas:
                if len(rows) == 0:
                    break
                gradient, logits = _gradient_and_logits(model, valid(adv[rows], x[rows]), y[rows])
                if early_stop:  # adv[rows] already fools: keep it as it is
                    going = logits.argmax(dim=1) == y[rows]
                    rows, gradient = rows[going], gradient[going]
                if norm is Norm.LINF:
                    step = alpha * gradient.sign()
                else:
                    step = alpha * gradient / _per_example_norm(gradient)
                origin = x[rows]
                delta = _project(adv[rows] + step - origin, eps=eps, norm=norm)
                adv[rows] = _clamp(origin + delta, lower, upper).detach()
            adv = valid(adv, x).detach()
            with torch.no_grad():
                logits = model(adv)
                loss = nn.functional.cross_entropy(logits, y, reduction="none")
                wrong = logits.argmax(dim=1) != y
            better = (~fooled) & (wrong | (loss > best_loss))
            best[better] = adv[better]
            best_loss = torch.where(better, loss, best_loss)
            fooled |= wrong
    return best.detach()


def run_attack(
    attack: Attack,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int = 10,
    norm: Norm = Norm.LINF,
    lower: Bound = 0.0,
    upper: Bound = 1.0,
    lattice: Lattice | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Dispatch by name (adversarial training and evaluation specs name their attack)."""
    if attack is Attack.FGSM:
        return fgsm(model, x, y, eps=eps, lower=lower, upper=upper, lattice=lattice)
    return pgd(
        model,
        x,
        y,
        eps=eps,
        steps=steps,
        norm=norm,
        lower=lower,
        upper=upper,
        lattice=lattice,
        generator=generator,
    )
