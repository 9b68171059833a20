"""Identifier spans in free text: Bastion's span finder versus Presidio's pattern recognizers
on the same texts.

Texts: the notes reference (``bastion data reference notes``, seed 5) and the held-out
tickets and letters of ``tests/data/heldout_text.py`` (seed 303: other locales, invented
names, decoys). Both sides read every text whole.

- **Bastion**: :func:`bastion.data.pii.spans.find_spans` (patterns confirmed by stdnum,
  Luhn, mod-97, phonenumbers, the date families; people by name lists and titles).
- **Baseline**: Presidio 2.2 (``presidio-analyzer``, no NLP model: its pattern recognizers
  for e-mail, US SSN, phone, credit card, IBAN and dates), each recognizer's ``analyze`` on
  every text, overlapping results resolved as Bastion resolves its own (the first entity in
  Bastion's order keeps its span). DATE_TIME stands for a date of birth.

Span-level precision and recall (exact start and end) and cell-level ones (whether a text
holds the entity at all) per entity for both, on each text set, and texts per second
(medians of ``--reps``); the ratio printed last is Bastion's texts per second over
Presidio's on the held-out texts.

Before it, the cost of DP-SGD on the built-in transformer (``--dp-rows`` notes, seed 6, split
80/20, a tokenizer learnt from the training rows; dim 32, one block, 4 heads, 128 tokens;
Adam, lr 0.05, batch 256, ``--dp-epochs`` epochs), three trainings of the same model from the
same initial weights on the same rows:

- Bastion without privacy (its trainer): the reference for DP's overhead;
- Bastion with DP-SGD at epsilon 3 (its default clipping for text models, per-sample hooks;
  Poisson sampling, PRV accountant, epsilon reported after every epoch), as a run spec's
  ``train.privacy`` gets it;
- **Baseline**: a bare Opacus loop as its tutorials write it: ``make_private_with_epsilon``
  at the same epsilon, delta, clipping norm, batch and epochs, Opacus's default per-sample
  hooks, Poisson sampling.

Seconds per epoch (the whole fit, calibration and accounting included, over its epochs;
medians of ``--reps``), held-out accuracy and epsilon for each, and two ratios: Bastion's DP
epoch over its non-private epoch (the price of privacy), and the bare Opacus epoch over
Bastion's DP epoch.

    python benchmarks/bench_text.py [--rows 1000] [--reps 3] [--dp-rows 2000] [--dp-epochs 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the held-out generator

import pandas as pd
import torch
from opacus import PrivacyEngine
from tests.data.heldout_text import heldout_text
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bastion.data.ingest import Loaded
from bastion.data.notes import notes
from bastion.data.pii.spans import ORDER, find_spans
from bastion.train.config import BuiltinModel, PrivacyConfig, TrainConfig
from bastion.train.data import fit_preprocessing, split_rows
from bastion.train.models import build_model
from bastion.train.recipe import recipe
from bastion.train.trainer import Trainer
from bench_pii import PRESIDIO as BOTH
from bench_pii import _recognizers

#: Presidio entity -> Bastion entity, for the entities both find inside text.
PRESIDIO = {
    kind: entity
    for kind, entity in BOTH.items()
    if kind in ("EMAIL_ADDRESS", "US_SSN", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "DATE_TIME")
}
_RANK = {entity.value: rank for rank, (entity, _) in enumerate(ORDER)}
Span = tuple[int, int, str]
TRANSFORMER = BuiltinModel(builtin="transformer", dim=32, layers=1, heads=4, vocab_size=4000)
DP_EPSILON = 3.0
Texts = list[tuple[str, set[Span]]]


def _texts(rows: int) -> dict[str, Texts]:
    made = notes(rows=rows, seed=5)
    held = heldout_text(rows=rows, seed=303)
    return {
        "notes reference": [(n.text, {(s.start, s.end, s.entity) for s in n.spans}) for n in made],
        "held-out tickets": [(h.text, set(h.spans)) for h in held],
    }


def _bastion(text: str) -> set[Span]:
    return {(s.start, s.end, s.entity.value) for s in find_spans(text)}


def _presidio(recognizers: list[Any]) -> Callable[[str], set[Span]]:
    wanted = list(PRESIDIO)

    def find(text: str) -> set[Span]:
        found = [
            (r.start, r.end, PRESIDIO[r.entity_type])
            for recognizer in recognizers
            for r in recognizer.analyze(text, entities=wanted, nlp_artifacts=None)
            if r.entity_type in PRESIDIO
        ]
        kept: list[Span] = []
        for span in sorted(found, key=lambda s: (_RANK.get(s[2], 99), s[0])):
            if all(span[1] <= other[0] or other[1] <= span[0] for other in kept):
                kept.append(span)
        return set(kept)

    return find


def _compare(tally: Counter[str], prefix: str, got: set[Span], truth: set[Span]) -> None:
    """Count hits, extras and misses per entity (a span's third part)."""
    for label, spans in (("hit", got & truth), ("extra", got - truth), ("missed", truth - got)):
        for span in spans:
            tally[f"{prefix}{label} {span[2]}"] += 1


def _run(find: Callable[[str], set[Span]], texts: Texts, reps: int) -> tuple[float, Counter[str]]:
    """Median seconds over the texts, and hit / extra / missed counts per entity."""
    times, found = [], []
    for _ in range(reps):
        started = time.perf_counter()
        found = [find(text) for text, _ in texts]
        times.append(time.perf_counter() - started)
    tally: Counter[str] = Counter()
    for (_, truth), got in zip(texts, found, strict=True):
        _compare(tally, "", got, truth)
        # Cell level: does the text hold the entity at all (found anywhere in it)?
        _compare(tally, "cell ", {(0, 0, s[2]) for s in got}, {(0, 0, s[2]) for s in truth})
    return statistics.median(times), tally


def _figure(tally: Counter[str], entity: str, *, supported: bool, level: str = "") -> str:
    if not supported:
        return "      -       -"
    hit = tally[f"{level}hit {entity}"]
    precision = hit / max(1, hit + tally[f"{level}extra {entity}"])
    recall = hit / max(1, hit + tally[f"{level}missed {entity}"])
    return f"  {precision:5.3f}   {recall:5.3f}"


def _report(label: str, texts: Texts, sides: Sequence[tuple[str, float, Counter[str]]]) -> None:
    print(f"\n{label}: {len(texts)} texts")
    entities = sorted({span[2] for _, truth in texts for span in truth})
    header = "".join(f"  {name:>10s} span P/R  {name:>10s} cell P/R" for name, _, _ in sides)
    print(f"  {'entity':15s}{header}")
    for entity in entities:
        both = entity in PRESIDIO.values()
        cells = "".join(
            f"  {_figure(tally, entity, supported=name == 'Bastion' or both)}"
            f"  {_figure(tally, entity, supported=name == 'Bastion' or both, level='cell ')}"
            for name, _, tally in sides
        )
        print(f"  {entity:15s}{cells}")
    for name, seconds, _ in sides:
        print(f"  {name}: {len(texts) / seconds:,.0f} texts/s (median {seconds:.2f} s)")


def _notes_tensors(rows: int) -> tuple[torch.Tensor, ...]:
    """Token ids and labels of ``rows`` notes: training and held-out, and the input shape."""
    made = notes(rows=rows, seed=6)
    frame = pd.DataFrame({"note": [n.text for n in made], "diagnosis": [n.diagnosis for n in made]})
    data = Loaded(kind="table", frame=frame)
    prep = fit_preprocessing(data, target="diagnosis", text="note")
    y = prep.labels(data)
    _, train, test = split_rows(y, holdout=0.2, seed=0)
    texts = frame["note"].iloc[train].tolist()
    prep.fit_tokenizer(texts, vocab_size=4000, min_rows=5, max_length=128)
    x = prep.features(data)
    return x[train], y[train], x[test], y[test]


def _transformer(classes: int) -> nn.Module:
    torch.manual_seed(0)  # every side starts from the same weights
    return build_model(TRANSFORMER, input_shape=(128,), classes=classes)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _bastion_fit(
    tensors: tuple[torch.Tensor, ...], epochs: int, privacy: PrivacyConfig | None
) -> tuple[float, float, float | None]:
    x, y, test_x, test_y = tensors
    config = TrainConfig(epochs=epochs, batch_size=256, lr=0.05, optimizer="adam", privacy=privacy)
    model, hooks, _ = recipe(_transformer(int(y.max()) + 1), config, lower=0.0, upper=1.0)
    started = time.perf_counter()
    result = Trainer(config, hooks).fit(model, x, y)
    seconds = (time.perf_counter() - started) / epochs
    return seconds, _accuracy(result.model, test_x, test_y), result.epsilon


def _bare_opacus(tensors: tuple[torch.Tensor, ...], epochs: int) -> tuple[float, float, float]:
    """Opacus as its tutorials use it: make_private_with_epsilon, default hooks, a plain loop."""
    x, y, test_x, test_y = tensors
    model = _transformer(int(y.max()) + 1)
    started = time.perf_counter()
    engine = PrivacyEngine(accountant="prv")
    model, optimizer, loader = engine.make_private_with_epsilon(
        module=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.05),
        data_loader=DataLoader(TensorDataset(x, y), batch_size=256, shuffle=True),
        target_epsilon=DP_EPSILON,
        target_delta=1e-5,
        epochs=epochs,
        max_grad_norm=1.0,
    )
    for _ in range(epochs):
        model.train()
        for batch_x, batch_y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(batch_x), batch_y).backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    seconds = (time.perf_counter() - started) / epochs
    return seconds, _accuracy(model, test_x, test_y), float(engine.get_epsilon(1e-5))


def _dp_cost(rows: int, epochs: int, reps: int) -> None:
    tensors = _notes_tensors(rows)
    privacy = PrivacyConfig(target_epsilon=DP_EPSILON, delta=1e-5, max_grad_norm=1.0)
    sides: dict[str, list[tuple[float, float, float | None]]] = {}
    for _ in range(reps):
        sides.setdefault("Bastion, no privacy", []).append(_bastion_fit(tensors, epochs, None))
        sides.setdefault("Bastion, DP-SGD", []).append(_bastion_fit(tensors, epochs, privacy))
        sides.setdefault("bare Opacus loop", []).append(_bare_opacus(tensors, epochs))
    print(
        f"transformer on {len(tensors[1])} training notes ({len(tensors[3])} held out), "
        f"{epochs} epochs, batch 256; medians of {reps}:"
    )
    seconds = {}
    for name, runs in sides.items():
        seconds[name] = statistics.median(run[0] for run in runs)
        accuracy = statistics.median(run[1] for run in runs)
        epsilon = runs[0][2]
        spent = f", epsilon {epsilon:.2f}" if epsilon is not None else ""
        print(f"  {name:22s}{seconds[name]:7.2f} s/epoch  held-out accuracy {accuracy:.3f}{spent}")
    overhead = seconds["Bastion, DP-SGD"] / seconds["Bastion, no privacy"]
    print(f"ratio DP-SGD/no-privacy epoch (Bastion): {overhead:.2f}x")
    bare = seconds["bare Opacus loop"] / seconds["Bastion, DP-SGD"]
    print(f"ratio bare Opacus/Bastion DP-SGD epoch: {bare:.2f}x\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dp-rows", type=int, default=2000, help="Notes the DP part trains on.")
    parser.add_argument("--dp-epochs", type=int, default=5)
    args = parser.parse_args()
    _dp_cost(args.dp_rows, args.dp_epochs, args.reps)
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    presidio = _presidio(_recognizers())
    sets = _texts(args.rows)
    find_spans(sets["notes reference"][0][0])  # warm both up (name lists, patterns)
    presidio(sets["notes reference"][0][0])
    speeds: dict[str, tuple[float, float]] = {}
    for label, texts in sets.items():
        ours = _run(_bastion, texts, args.reps)
        theirs = _run(presidio, texts, args.reps)
        _report(label, texts, [("Bastion", *ours), ("Presidio", *theirs)])
        speeds[label] = (ours[0], theirs[0])
    ours_s, theirs_s = speeds["held-out tickets"]
    print(f"\nratio Bastion/Presidio texts per second (held-out): {theirs_s / ours_s:.1f}x")


if __name__ == "__main__":
    main()
