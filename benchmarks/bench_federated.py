"""Federated training's cost of secure aggregation: rounds per minute and bytes per round,
the same training with and without SecAgg+.

Both sides are Bastion's federation on Flower's deployment engine exactly as a federated run
starts it (`bastion.federated.federation`): one SuperLink over TLS with SuperNode
authentication, admitted SuperNodes (three, ``--sites``) on loopback, Bastion's ServerApp
and ClientApp training the same MLP on the same non-IID shares of the patients table for
the same rounds and local epochs. The baseline is plain federated averaging (every update in
the clear to the aggregator); the other side adds SecAgg+ (Flower's SecAggPlusWorkflow: key
exchange, secret shares, masked quantised updates, unmasking), Bastion's default. The sites
dial the SuperLink through a relay on loopback that counts the bytes both ways (TLS records,
what would cross the network). Each repetition runs the two trainings one after the other
on the same federation; medians of every repetition.

    python benchmarks/bench_federated.py [--rounds 3] [--reps 3] [--hidden 64] [--sites 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from safetensors.torch import save_file

from bastion.data.ingest import Loaded
from bastion.data.reference import PATIENT_PII_COLUMNS, patients
from bastion.federated.federation import Federation, SiteData
from bastion.federated.plan import FederatedPlan
from bastion.ports import free_port
from bastion.train.data import fit_preprocessing, split_rows

#: The sites' shares of malignant rows (non-IID), for 3 to 5 sites (SecAgg+ needs 3).
SHARES = {
    3: (0.8, 0.5, 0.2),
    4: (0.8, 0.6, 0.4, 0.2),
    5: (0.8, 0.65, 0.5, 0.35, 0.2),
}


class CountingRelay:
    """A TCP relay on loopback that forwards to ``target`` and counts the bytes both ways."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.bytes = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()

    async def _shutdown(self) -> None:
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            while chunk := await reader.read(1 << 16):
                self.bytes += len(chunk)
                writer.write(chunk)
                await writer.drain()
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        with contextlib.suppress(asyncio.CancelledError):  # the relay closing
            await asyncio.gather(
                self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
            )

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def _sites(root: Path, count: int) -> tuple[list[SiteData], int, int]:
    """Non-IID shares of the patients table as site files; input width, most rows."""
    frame = patients(seed=0).drop(columns=list(PATIENT_PII_COLUMNS))
    data = Loaded(kind="table", frame=frame)
    prep = fit_preprocessing(data, target="diagnosis")
    x, y = prep.features(data), prep.labels(data)
    _, train, test = split_rows(y, holdout=0.2, seed=0)
    rng = np.random.default_rng(0)
    ones = [int(i) for i in rng.permutation(train) if y[i] == 1]
    zeros = [int(i) for i in rng.permutation(train) if y[i] == 0]
    each = len(train) // count
    sites, largest = [], 0
    for number, (share, held_out) in enumerate(
        zip(SHARES[count], np.array_split(test, count), strict=True)
    ):
        malignant = int(each * share)
        rows = ones[:malignant] + zeros[: each - malignant]
        ones, zeros = ones[malignant:], zeros[each - malignant :]
        path = root / f"site{number}.safetensors"
        tensors = {
            "x_train": x[rows].contiguous(),
            "y_train": y[rows].contiguous(),
            "x_test": x[held_out].contiguous(),
            "y_test": y[held_out].contiguous(),
        }
        save_file(tensors, str(path))
        sites.append(SiteData(f"site{number}", path))
        largest = max(largest, len(rows))
    return sites, int(x.shape[1]), largest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=64, help="The MLP's hidden width.")
    parser.add_argument("--epochs", type=int, default=1, help="Local epochs per round.")
    parser.add_argument("--sites", type=int, default=3, choices=sorted(SHARES))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-federated-") as folder:
        root = Path(folder)
        sites, width, largest = _sites(root, args.sites)
        federation = Federation(root / "flower")
        with federation.running():
            federation.start_link()
            relay = CountingRelay((federation.host, federation.port))
            try:
                for site in sites:
                    key = federation.admit(site.name)
                    federation.start_site(site, key=key, via=f"127.0.0.1:{relay.port}")
                time.sleep(2)  # the nodes' first connections, outside the measured runs
                seconds: dict[str, list[float]] = {"plain": [], "SecAgg+": []}
                sent: dict[str, list[float]] = {"plain": [], "SecAgg+": []}
                for rep in range(args.reps):
                    for name, secure in (("plain", False), ("SecAgg+", True)):
                        plan = FederatedPlan(
                            model={"builtin": "mlp", "hidden": [args.hidden]},
                            train={"epochs": args.epochs, "batch_size": 32, "lr": 0.1},
                            input_shape=(width,),
                            classes=2,
                            sites=len(sites),
                            rounds=args.rounds,
                            min_clients=len(sites),
                            secure_aggregation=secure,
                            max_rows=largest,
                            output=str(root / f"out-{rep}-{name}"),
                        )
                        (root / f"out-{rep}-{name}").mkdir()
                        before, started = relay.bytes, time.perf_counter()
                        run = federation.submit(plan)
                        status = federation.wait(run, timeout=1800, output=Path(plan.output))
                        elapsed = time.perf_counter() - started
                        if status.get("status") != "finished:completed":
                            print(federation.server_log(run)[-3000:], file=sys.stderr)
                            return 1
                        seconds[name].append(elapsed / args.rounds)
                        sent[name].append((relay.bytes - before) / args.rounds)
                        print(
                            f"rep {rep + 1} {name:8s} {elapsed / args.rounds:7.1f} s/round "
                            f"{(relay.bytes - before) / args.rounds / 1024:9.1f} KiB/round",
                            flush=True,
                        )
            finally:
                relay.close()
    parameters = (width + 1) * args.hidden + (args.hidden + 1) * 2
    print(
        f"{args.sites} sites, {args.rounds} rounds, MLP {width}-{args.hidden}-2 "
        f"({parameters} weights), {args.epochs} local epoch(s), {args.reps} repetition(s); "
        "medians:"
    )
    for name in ("plain", "SecAgg+"):
        per_round = statistics.median(seconds[name])
        print(
            f"  {name:8s} {60 / per_round:6.2f} rounds/min  "
            f"{statistics.median(sent[name]) / 1024:9.1f} KiB/round (both ways, TLS)"
        )
    slower = statistics.median(seconds["SecAgg+"]) / statistics.median(seconds["plain"])
    heavier = statistics.median(sent["SecAgg+"]) / statistics.median(sent["plain"])
    print(f"bytes ratio SecAgg+/plain: {heavier:.2f}x")
    print(f"ratio SecAgg+/plain seconds per round: {slower:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
