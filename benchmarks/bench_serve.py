"""The inference server's cost: Bastion's full request path versus a bare endpoint, one run.

The patients MLP (the reference table workload) is served twice on loopback, each by its
own process: by Bastion (signed-model check at start, serving key, token bucket, schema
validation, Mahalanobis OOD detection, PRADA extraction tracking, drift monitoring,
rounded output, audit event per request) and by a bare FastAPI + uvicorn endpoint that
calls the same model with the same parsing, preprocessing and response class and no
security at all. The same client
(asyncio + httpx, one row per request) drives each at 1, 16 and 64 concurrent clients
for ``--seconds``; throughput and p50/p99 latency are the median over ``--reps``
repetitions. The audit events go to an in-process counter (the control plane's upload is
batched off the request path).

    python benchmarks/bench_serve.py [--reps 3] [--seconds 5] [--concurrency 1 16 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from fastapi import Request
from fastapi.responses import JSONResponse

from bastion.config import Settings
from bastion.data.checks import infer_table_schema
from bastion.data.ingest import Loaded
from bastion.data.reference import PATIENT_PII_COLUMNS, patients
from bastion.inference.staged import copy_signed_manifest
from bastion.security.keys import load_keyring
from bastion.security.sealed import open_sealed, seal
from bastion.train.config import BuiltinModel
from bastion.train.data import Preprocessing, fit_preprocessing, split_rows
from bastion.train.models import build_model, package_model

SPEC = BuiltinModel(builtin="mlp", hidden=[128, 64])


def _data() -> tuple[Any, Preprocessing, torch.Tensor, torch.Tensor]:
    frame = patients(seed=0).drop(columns=list(PATIENT_PII_COLUMNS))
    data = Loaded(kind="table", frame=frame)
    prep = fit_preprocessing(data, target="diagnosis")
    return frame, prep, prep.features(data), prep.labels(data)


def _stage(root: Path) -> Path:
    """Train, package, seal and stage the model as a deployment would get it."""
    frame, prep, x, y = _data()
    split, train_rows, _ = split_rows(y, holdout=0.2, seed=0)
    torch.manual_seed(0)
    model = build_model(SPEC, input_shape=prep.input_shape, classes=len(prep.classes))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(20):
        for batch in torch.split(torch.as_tensor(train_rows)[torch.randperm(len(train_rows))], 64):
            optimiser.zero_grad()
            loss: Any = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimiser.step()
    package = root / "package"
    package.mkdir()
    package_model(
        package,
        model=model,
        spec=SPEC,
        prep=prep,
        schema=infer_table_schema(frame).model_dump(mode="json"),
        metadata={"split": split.model_dump()},
    )
    keyring = load_keyring(Settings(home=root / "home", master_key=None))
    sealed = seal(
        {p.name: p for p in package.iterdir()},
        root=root / "storage",
        keyring=keyring,
        artifact="model",
        project="bench",
        name="patients-mlp",
        kind="model",
    )
    folder = root / "staged"
    open_sealed(
        root / "storage",
        keyring=keyring,
        artifact="model",
        project="bench",
        name="patients-mlp",
        manifest_hash=sealed.manifest_hash,
        into=folder,
    )
    copy_signed_manifest(sealed.directory, folder)
    (folder / "version.json").write_text(
        json.dumps({"name": "patients-mlp", "version": 1, "manifest_hash": sealed.manifest_hash})
    )
    (root / "public.pem").write_bytes(keyring.primary_signing_key().public_pem)
    return folder


# -- the two servers (run in child processes) ------------------------------------------------


def _serve_bastion(folder: Path, port: int, key_file: Path) -> None:
    import uvicorn

    from bastion.inference.app import ServeState, create_serve_app
    from bastion.inference.config import ServeConfig
    from bastion.inference.guards.auth import KeyRecord, KeyStore
    from bastion.inference.guards.ratelimit import MemoryLimiter
    from bastion.inference.model import load_verified
    from bastion.inference.request_audit import AuditWriter
    from bastion.inference.runtime import fit_guards

    served = load_verified(folder, public_keys=[(folder.parent / "public.pem").read_bytes()])
    _, _, x, y = _data()
    _, train_rows, test_rows = split_rows(y, holdout=0.2, seed=0)
    config = ServeConfig()
    loaded = fit_guards(
        served, x_train=x[train_rows], y_train=y[train_rows], x_holdout=x[test_rows], config=config
    )
    key = json.loads(key_file.read_text())
    keys = KeyStore(max_age=10**9)
    keys.replace(
        [
            KeyRecord(
                id=key["id"],
                secret_hash=key["hash"],
                scopes=frozenset({"predict"}),
                rate=1e6,
                burst=10**6,
            )
        ]
    )
    home = Settings(home=folder.parent / "home", master_key=None)
    audited = [0]

    def sink(events: list[dict[str, Any]]) -> None:
        audited[0] += len(events)

    audit = AuditWriter(
        sink=sink,
        spool=folder.parent / "spool",
        cluster="bench",
        cluster_keyset=load_keyring(home).hybrid_public_keyset(),
    )
    audit.start()
    state = ServeState(
        config=config, keys=keys, limiter=MemoryLimiter(), audit=audit, current=loaded
    )
    uvicorn.run(
        create_serve_app(state), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )


def _serve_bare(folder: Path, port: int) -> None:
    import uvicorn
    from fastapi import FastAPI
    from safetensors.torch import load_file

    config = json.loads((folder / "model.json").read_text())
    prep = Preprocessing.model_validate(config["preprocessing"])
    model = build_model(SPEC, input_shape=prep.input_shape, classes=len(prep.classes))
    model.load_state_dict(load_file(str(folder / "weights.safetensors")))
    model.eval()
    app = FastAPI()

    @app.post("/v1/predict")
    async def predict(request: Request) -> JSONResponse:
        # The same parsing, preprocessing and response class as Bastion's; nothing else.
        body = json.loads(await request.body())
        x = prep.row_features(body["instances"])
        with torch.inference_mode():
            probabilities = torch.softmax(model(x), dim=1).tolist()
        predictions = [dict(zip(prep.classes, row, strict=True)) for row in probabilities]
        return JSONResponse({"predictions": predictions})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- the load --------------------------------------------------------------------------------


async def _drive(
    url: str, token: str, rows: list[dict[str, Any]], clients: int, seconds: float
) -> tuple[float, float, float, int]:
    latencies: list[float] = []
    errors = [0]

    async def client(offset: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            i = offset
            while time.monotonic() < until:
                started = time.perf_counter()
                response = await http.post(
                    "/v1/predict",
                    json={"instances": [rows[i % len(rows)]]},
                    headers={"Authorization": f"Bearer {token}"},
                )
                latencies.append(time.perf_counter() - started)
                errors[0] += response.status_code != 200
                i += clients

    until = time.monotonic() + seconds
    await asyncio.gather(*(client(i) for i in range(clients)))
    ordered = np.sort(np.asarray(latencies))
    return (
        len(latencies) / seconds,
        float(np.quantile(ordered, 0.5)) * 1000,
        float(np.quantile(ordered, 0.99)) * 1000,
        errors[0],
    )


def _wait(url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/healthz" if "bastion" in url else url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not start")


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # kind folder port
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.child:
        kind, folder, port = args.child
        if kind == "bastion":
            _serve_bastion(Path(folder), int(port), Path(folder).parent / "key.json")
        else:
            _serve_bare(Path(folder), int(port))
        return
    from bastion.inference.guards.auth import SERVING_KEY_PREFIX
    from bastion.security.credentials import new_token

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = _stage(root)
        minted = new_token(SERVING_KEY_PREFIX)
        (root / "key.json").write_text(json.dumps({"id": minted.id, "hash": minted.secret_hash}))
        frame, _, _, _ = _data()
        rows = frame.drop(columns=["diagnosis"]).to_dict(orient="records")
        ports = {"bastion": _free_port(), "bare": _free_port()}
        children = {
            kind: subprocess.Popen(
                [sys.executable, __file__, "--child", kind, str(folder), str(port)],
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            for kind, port in ports.items()
        }
        try:
            for kind, port in ports.items():
                _wait(
                    f"http://127.0.0.1:{port}/healthz"
                    if kind == "bastion"
                    else f"http://127.0.0.1:{port}/docs"
                )
            print(
                f"patients MLP, one row per request, {args.seconds:.0f} s per point, "
                f"median of {args.reps}"
            )
            print(
                f"{'clients':>7} {'server':>8} {'req/s':>8} {'p50 ms':>8} "
                f"{'p99 ms':>8} {'errors':>6}"
            )
            for clients in args.concurrency:
                results: dict[str, list[tuple[float, float, float, int]]] = {
                    "bastion": [],
                    "bare": [],
                }
                for _ in range(args.reps):
                    for kind, port in ports.items():  # interleaved, so drift hits both alike
                        results[kind].append(
                            asyncio.run(
                                _drive(
                                    f"http://127.0.0.1:{port}",
                                    minted.token,
                                    rows,
                                    clients,
                                    args.seconds,
                                )
                            )
                        )
                medians = {
                    kind: tuple(statistics.median(r[i] for r in runs) for i in range(4))
                    for kind, runs in results.items()
                }
                for kind in ("bastion", "bare"):
                    rate, p50, p99, errors = medians[kind]
                    print(
                        f"{clients:>7} {kind:>8} {rate:>8.0f} {p50:>8.2f} "
                        f"{p99:>8.2f} {errors:>6.0f}"
                    )
                b, r = medians["bastion"], medians["bare"]
                print(
                    f"{clients:>7} {'ratio':>8} {b[0] / r[0]:>8.2f} {b[1] / r[1]:>8.2f} "
                    f"{b[2] / r[2]:>8.2f}"
                    "   (throughput target >= 0.8; p99 target <= 1.3)"
                )
        finally:
            for child in children.values():
                child.terminate()
                child.wait(timeout=30)


if __name__ == "__main__":
    main()
