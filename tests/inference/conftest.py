"""A trained digits CNN and patients MLP, sealed and staged as the agent stages them."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import uvicorn

from bastion.data.checks import infer_image_schema, infer_table_schema
from bastion.data.ingest import Loaded
from bastion.data.reference import PATIENT_PII_COLUMNS, digits, patients
from bastion.inference.app import ServeState, create_serve_app
from bastion.inference.config import ServeConfig
from bastion.inference.guards.auth import SERVING_KEY_PREFIX, KeyRecord, KeyStore
from bastion.inference.guards.ood import calibration_split
from bastion.inference.guards.ratelimit import Limiter, MemoryLimiter
from bastion.inference.model import load_verified
from bastion.inference.request_audit import AuditWriter
from bastion.inference.runtime import fit_guards
from bastion.inference.staged import copy_signed_manifest
from bastion.security.credentials import new_token
from bastion.security.keys import Keyring
from bastion.security.sealed import open_sealed, seal
from bastion.train.config import BuiltinModel
from bastion.train.data import Preprocessing, fit_preprocessing, split_rows
from bastion.train.models import build_model, package_model
from tests.conftest import other_keyring


@dataclass
class Workload:
    folder: Path
    keyring: Keyring
    prep: Preprocessing
    x: torch.Tensor
    y: torch.Tensor
    raw: np.ndarray | None
    frame: object
    train_rows: np.ndarray
    test_rows: np.ndarray


def train(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int
) -> torch.nn.Module:
    torch.manual_seed(seed)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        for batch in torch.split(torch.randperm(len(x)), 64):
            optimiser.zero_grad()
            loss: torch.Tensor = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
    return model.eval()


def stage(
    root: Path,
    *,
    keyring: Keyring,
    name: str,
    model: torch.nn.Module,
    prep: Preprocessing,
    spec: BuiltinModel,
    schema: dict[str, object],
    metadata: dict[str, object],
) -> Path:
    """Package, seal, then verify and decrypt into a job folder with the signed manifest."""
    package = root / f"package-{name}"
    package.mkdir()
    package_model(package, model=model, spec=spec, prep=prep, schema=schema, metadata=metadata)
    files = {p.name: p for p in package.iterdir()}
    sealed = seal(
        files,
        root=root / "storage",
        keyring=keyring,
        artifact="model",
        project="demo",
        name=name,
        kind="model",
    )
    folder = root / f"staged-{name}"
    open_sealed(
        root / "storage",
        keyring=keyring,
        artifact="model",
        project="demo",
        name=name,
        manifest_hash=sealed.manifest_hash,
        into=folder,
    )
    copy_signed_manifest(sealed.directory, folder)
    (folder / "version.json").write_text(
        json.dumps({"name": name, "version": 1, "manifest_hash": sealed.manifest_hash})
    )
    return folder


def unseen_rows(workload: Workload) -> tuple[np.ndarray, np.ndarray]:
    """The held-out rows that set the input detector's thresholds, and those that did not
    (the split ``fit_guards`` makes with its default seed)."""
    calibrate, check = calibration_split(len(workload.test_rows), seed=0)
    return workload.test_rows[calibrate], workload.test_rows[check]


@pytest.fixture(scope="session")
def digits_workload(tmp_path_factory: pytest.TempPathFactory) -> Workload:
    root = tmp_path_factory.mktemp("digits-serve")
    keyring = other_keyring(root / "home")
    images, labels = digits(seed=0)
    data = Loaded(kind="images", images=images, labels=labels)
    prep = fit_preprocessing(data, target=None)
    x, y = prep.features(data), prep.labels(data)
    split, train_rows, test_rows = split_rows(y, holdout=0.3, seed=0)
    spec = BuiltinModel(builtin="cnn")
    model = build_model(spec, input_shape=prep.input_shape, classes=len(prep.classes))
    train(model, x[train_rows], y[train_rows], epochs=15, seed=0)
    folder = stage(
        root,
        keyring=keyring,
        name="digits-cnn",
        model=model,
        prep=prep,
        spec=spec,
        schema=infer_image_schema(images, labels).model_dump(mode="json"),
        metadata={"split": split.model_dump()},
    )
    return Workload(folder, keyring, prep, x, y, images, None, train_rows, test_rows)


@pytest.fixture(scope="session")
def patients_workload(tmp_path_factory: pytest.TempPathFactory) -> Workload:
    root = tmp_path_factory.mktemp("patients-serve")
    keyring = other_keyring(root / "home")
    frame = patients(seed=0).drop(columns=list(PATIENT_PII_COLUMNS))
    data = Loaded(kind="table", frame=frame)
    prep = fit_preprocessing(data, target="diagnosis")
    x, y = prep.features(data), prep.labels(data)
    split, train_rows, test_rows = split_rows(y, holdout=0.3, seed=0)
    spec = BuiltinModel(builtin="mlp", hidden=[32])
    model = build_model(spec, input_shape=prep.input_shape, classes=len(prep.classes))
    train(model, x[train_rows], y[train_rows], epochs=20, seed=0)
    folder = stage(
        root,
        keyring=keyring,
        name="patients-mlp",
        model=model,
        prep=prep,
        spec=spec,
        schema=infer_table_schema(frame).model_dump(mode="json"),
        metadata={"split": split.model_dump()},
    )
    return Workload(folder, keyring, prep, x, y, None, frame, train_rows, test_rows)


# -- a server over loopback ------------------------------------------------------------------


def mint_key(
    scopes: tuple[str, ...] = ("predict",),
    *,
    rate: float | None = None,
    burst: int | None = None,
    quota: int | None = None,
    expires_at: dt.datetime | None = None,
    revoked: bool = False,
) -> tuple[str, KeyRecord]:
    minted = new_token(SERVING_KEY_PREFIX)
    record = KeyRecord(
        id=minted.id,
        secret_hash=minted.secret_hash,
        scopes=frozenset(scopes),
        rate=rate,
        burst=burst,
        quota=quota,
        expires_at=expires_at,
        revoked=revoked,
    )
    return minted.token, record


class Sink:
    """The control plane's end of the audit trail (can be made unreachable)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.down = False
        self.lock = threading.Lock()

    def __call__(self, batch: list[dict[str, Any]]) -> None:
        if self.down:
            raise ConnectionError("control plane unreachable")
        with self.lock:
            self.events.extend(batch)


def make_state(
    workload: Workload,
    *,
    config: ServeConfig | None = None,
    records: list[KeyRecord] = (),  # type: ignore[assignment]
    limiter: Limiter | None = None,
    sink: Sink | None = None,
    capacity: int = 100_000,
    spool: Path | None = None,
) -> tuple[ServeState, Sink, list[tuple[str, dict[str, Any]]]]:
    config = config or ServeConfig()
    served = load_verified(
        workload.folder, public_keys=[workload.keyring.primary_signing_key().public_pem]
    )
    loaded = fit_guards(
        served,
        x_train=workload.x[workload.train_rows],
        y_train=workload.y[workload.train_rows],
        # The detector sets its thresholds on half of these and checks them on the other
        # half (``unseen_rows``), as a deployment does with its model's held-out rows.
        x_holdout=workload.x[workload.test_rows],
        config=config,
    )
    keys = KeyStore()
    keys.replace(list(records))
    sink = sink or Sink()
    audit = AuditWriter(
        sink=sink,
        spool=spool or workload.folder.parent / f"spool-{time.monotonic_ns()}",
        cluster="local",
        cluster_keyset=workload.keyring.hybrid_public_keyset(),
        capacity=capacity,
        interval=0.05,
    )
    audit.start()
    reports: list[tuple[str, dict[str, Any]]] = []
    state = ServeState(
        config=config,
        keys=keys,
        limiter=limiter or MemoryLimiter(),
        audit=audit,
        current=loaded,
        report=lambda kind, details: reports.append((kind, details)),
    )
    return state, sink, reports


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Running:
    def __init__(self, state: ServeState) -> None:
        self.state = state
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_serve_app(state),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            # a loaded 2-core host can leave a pooled connection idle past uvicorn's 5 s
            timeout_keep_alive=60,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("inference server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.state.audit.close()


@pytest.fixture
def serve() -> Iterator[Callable[[ServeState], Running]]:
    started: list[Running] = []

    def start(state: ServeState) -> Running:
        running = Running(state).__enter__()
        started.append(running)
        return running

    yield start
    for running in started:
        running.__exit__()
