"""The event-driven training loop; privacy, adversarial training, checkpoints and metrics hook in.

The loop, as :class:`Event` fires them::

    FIT_START                         privacy: wrap model/optimizer/loader with Opacus
    for epoch in range(start, epochs):
        EPOCH_START
        for x, y in loader:
            BATCH_START               adversarial: replace part of (x, y) with attacked copies
            loss = criterion(model(x), y); loss.backward(); optimizer.step()
            BATCH_END                 running loss and accuracy
        EPOCH_END                     epsilon spent, metrics reported, checkpoint written
    FIT_END

Everything random draws from generators seeded by ``train.seed`` and saved in each
checkpoint, so a resumed run ends with the same weights as an uninterrupted one.

The loop runs on the trainer's ``device`` (``cuda`` for a job given GPUs, see
:mod:`bastion.train.device`): the model and each batch move there, the noise and attack
generators live there (the loader's stays on the CPU, where rows are drawn), forward
passes run under ``torch.autocast`` when ``train.mixed_precision`` asks, and the trained
model comes back on the CPU, where packaging and evaluation read it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bastion.errors import InvalidSpec
from bastion.train.checkpoint import load_checkpoint, save_checkpoint
from bastion.train.config import TrainConfig
from bastion.train.device import autocast
from bastion.train.distributed import (
    Group,
    bare,
    gather_states,
    global_sums,
    join,
    leave,
    rank_share,
    wrap,
)

__all__ = [
    "IGNORED",
    "Event",
    "Hook",
    "Rows",
    "TrainResult",
    "TrainState",
    "Trainer",
    "batch_as_is",
]


class Event(enum.StrEnum):
    FIT_START = "fit_start"
    EPOCH_START = "epoch_start"
    BATCH_START = "batch_start"
    BATCH_END = "batch_end"
    EPOCH_END = "epoch_end"
    FIT_END = "fit_end"


@dataclass
class TrainState:
    """What hooks see and may change."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader[tuple[torch.Tensor, ...]]
    criterion: Callable[[torch.Tensor, torch.Tensor], Any]
    config: TrainConfig
    generators: dict[str, torch.Generator]
    epoch: int = 0
    step: int = 0
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    epsilon: float | None = None
    #: Per-epoch metrics, e.g. {"loss": 0.3, "accuracy": 0.9, "epsilon": 1.2}.
    history: list[dict[str, float]] = field(default_factory=list)
    #: State a hook wants saved in checkpoints (JSON-able), by hook name.
    extra: dict[str, Any] = field(default_factory=dict)


class Hook(Protocol):
    def __call__(self, event: Event, state: TrainState) -> None: ...


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, float]]
    epsilon: float | None


class Rows(Dataset[tuple[torch.Tensor, ...]]):
    """Rows of equally long tensors that a loader fetches a batch at a time.

    ``DataLoader`` calls ``__getitems__`` with a batch's indices: one indexing operation per
    tensor instead of one ``__getitem__`` per row and a stack (on small models that per-row
    work cost as much as the training step). Opacus's Poisson-sampling loader keeps its own
    sampler and calls the same method, an empty draw included.
    """

    def __init__(self, *tensors: torch.Tensor) -> None:
        if len({len(t) for t in tensors}) != 1:
            raise ValueError("the tensors differ in length")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        rows = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[rows] for t in self.tensors)


def batch_as_is(batch: Any) -> Any:
    """The collate function for :class:`Rows`: its batches are already tensors."""
    return batch


#: A sequence target's positions that count for nothing (padding): PyTorch's ignore_index.
IGNORED = -100


def _loss(criterion: Callable[..., Any], logits: torch.Tensor, y: torch.Tensor) -> Any:
    """The batch's loss. A sequence model's logits are (rows, classes, positions) and its
    targets (rows, positions); Opacus's ghost-clipping loss takes them flat with their shape,
    to make one loss per row of the tokens' mean, padding left out."""
    if y.dim() == 1 or isinstance(criterion, nn.CrossEntropyLoss):
        return criterion(logits, y)
    rows, classes, positions = logits.shape
    flat = logits.transpose(1, 2).reshape(rows * positions, classes)
    return criterion(flat, y.reshape(-1), shape=(rows, positions, classes))


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)


class Trainer:
    """Runs the loop for one model; hooks do everything but forward, backward and step."""

    def __init__(
        self,
        config: TrainConfig,
        hooks: Sequence[Hook] = (),
        *,
        device: torch.device | str = "cpu",
        group: Group | None = None,
    ) -> None:
        self.config = config
        self.hooks = list(hooks)
        self.device = torch.device(device)
        #: This process's rank among ``resources.workers`` (None: it trains alone).
        self.group = group
        if config.mixed_precision == "fp16" and self.device.type != "cuda":
            raise InvalidSpec("train.mixed_precision fp16 runs on a GPU only; use bf16 on the CPU")

    def _fire(self, event: Event, state: TrainState) -> None:
        for hook in self.hooks:
            hook(event, state)

    def fit(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        resume: Path | None = None,
        checkpoints: Path | None = None,
        on_checkpoint: Callable[[Path, int], None] | None = None,
    ) -> TrainResult:
        """Train ``model`` on ``(x, y)``; resume from a checkpoint directory when given.

        With ``checkpoints``, a checkpoint is written there every ``checkpoint_every``
        epochs (and after the last) and handed to ``on_checkpoint`` (the job passes it
        to the agent, which seals it). In a group, rank 0 writes them.
        """
        if self.group is not None:
            join(self.group, self.device)
        try:
            state = self._start(model, x, y)
            self._fire(Event.FIT_START, state)
            if resume is not None:
                saved = load_checkpoint(
                    resume,
                    model=bare(state.model),
                    optimizer=state.optimizer,
                    generators=state.generators,
                    rank=self.rank,
                )
                state.epoch, state.step = saved["epoch"], saved["step"]
                state.history, state.extra = saved["history"], saved["extra"]
                state.epsilon = saved.get("epsilon")
            # fp16 gradients underflow without scaling (bf16 has float32's range).
            scaler = torch.amp.GradScaler("cuda") if self.config.mixed_precision == "fp16" else None
            for epoch in range(state.epoch, self.config.epochs):
                self._epoch(state, epoch, scaler)
                self._checkpoint(state, checkpoints, on_checkpoint)
            self._fire(Event.FIT_END, state)
        finally:
            if self.group is not None:
                leave()
        return TrainResult(
            model=bare(state.model).to("cpu"), history=state.history, epsilon=state.epsilon
        )

    @property
    def rank(self) -> int:
        return self.group.rank if self.group is not None else 0

    @property
    def private(self) -> bool:
        return self.config.privacy is not None

    def _start(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> TrainState:
        config, device = self.config, self.device
        # Rank 0 draws what a single process draws. Without DP every rank shuffles alike
        # (each takes its share of the same global batch); with DP each rank samples its
        # shard with a stream of its own.
        own_seed = config.seed + 10_007 * self.rank
        torch.manual_seed(own_seed)
        generators = {
            "loader": torch.Generator().manual_seed(own_seed if self.private else config.seed),
            "noise": torch.Generator(device=device).manual_seed(own_seed + 1),
            "attack": torch.Generator(device=device).manual_seed(own_seed + 2),
        }
        model = model.to(device)
        if self.group is not None:
            model = wrap(model, device, private=self.private)
        loader: DataLoader[tuple[torch.Tensor, ...]] = DataLoader(
            Rows(x, y),
            batch_size=config.batch_size,
            shuffle=True,
            generator=generators["loader"],
            collate_fn=batch_as_is,
        )
        return TrainState(
            model=model,
            optimizer=_optimizer(model, config),
            loader=loader,
            criterion=nn.CrossEntropyLoss(),
            config=config,
            generators=generators,
        )

    def _epoch(self, state: TrainState, epoch: int, scaler: Any) -> None:
        group, device = self.group, self.device
        state.epoch = epoch
        state.loss_sum, state.correct, state.seen = 0.0, 0, 0
        self._fire(Event.EPOCH_START, state)
        state.model.train()
        for batch_x, batch_y in state.loader:
            scale = None
            x, y = batch_x, batch_y
            if group is not None and not self.private:
                x, y, scale = rank_share(group, batch_x, batch_y)
            elif group is None and len(batch_y) == 0:
                # Poisson sampling may draw an empty batch (in a group every rank steps,
                # empty or not: the step's collectives need them all)
                continue
            state.x, state.y = x.to(device), y.to(device)
            self._fire(Event.BATCH_START, state)
            self._step(state, scale, scaler)
            self._fire(Event.BATCH_END, state)
        loss_sum, correct, seen = state.loss_sum, float(state.correct), float(state.seen)
        if group is not None:  # the run's figures, not this rank's share
            loss_sum, correct, seen = global_sums([loss_sum, correct, seen], device)
        state.history.append(
            {
                "epoch": float(epoch + 1),
                "loss": loss_sum / max(seen, 1),
                "accuracy": correct / max(seen, 1),
            }
        )
        state.epoch = epoch + 1
        self._fire(Event.EPOCH_END, state)
        if state.epsilon is not None:
            state.history[-1]["epsilon"] = state.epsilon

    def _step(self, state: TrainState, scale: torch.Tensor | None, scaler: Any) -> None:
        if state.x is None or state.y is None:
            raise RuntimeError("a step without a batch")
        state.optimizer.zero_grad()
        with autocast(self.device, self.config.mixed_precision):
            logits = state.model(state.x)
            if scale is None:
                loss = _loss(state.criterion, logits, state.y)
            else:  # this rank's share of the global batch's mean loss
                summed = nn.functional.cross_entropy(logits, state.y, reduction="sum")
                loss = summed * scale.to(self.device)
        if scaler is None:
            loss.backward()
            state.optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(state.optimizer)
            scaler.update()
        state.step += 1
        with torch.no_grad():  # per row, or per predicted token of a sequence
            state.loss_sum += float(nn.functional.cross_entropy(logits, state.y, reduction="sum"))
            state.correct += int((logits.argmax(1) == state.y).sum())
            state.seen += len(state.y) if state.y.dim() == 1 else int((state.y != IGNORED).sum())

    def _checkpoint(
        self,
        state: TrainState,
        checkpoints: Path | None,
        on_checkpoint: Callable[[Path, int], None] | None,
    ) -> None:
        epoch = state.epoch
        if epoch % self.config.checkpoint_every != 0 and epoch != self.config.epochs:
            return
        # In a group every rank hands its random states to rank 0, which writes them.
        states = gather_states(state.generators, self.group) if self.group else None
        if checkpoints is None or self.rank != 0:
            return
        written = save_checkpoint(
            checkpoints / f"epoch-{epoch}",
            model=bare(state.model),
            optimizer=state.optimizer,
            generators=state.generators,
            states=states,
            trainer={
                "epoch": state.epoch,
                "step": state.step,
                "history": state.history,
                "extra": state.extra,
                "epsilon": state.epsilon,
            },
        )
        if on_checkpoint is not None:
            on_checkpoint(written, epoch)
