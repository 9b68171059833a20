"""A serve job says where it serves only once its socket listens: a caller that connects
the moment it reads "serving ... at URL" waits in the backlog instead of being refused (a
loaded host once took longer to start uvicorn than the quickstart took to call it)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bastion.inference import runner
from bastion.ports import free_port
from bastion.spec import ServeJob


class _Audit:
    sent = 0

    def __init__(self, **_: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Server:
    """Stands in for uvicorn: records the sockets it was given and returns at once."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] | None = None
        self.ports: list[int] = []
        self.should_exit = False

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        self.sockets = sockets
        self.ports = [given.getsockname()[1] for given in sockets or []]


def _context(workdir: Path, connected: list[bool], port: int) -> Any:
    def event(stage: str, status: str, message: str) -> None:
        if not message.startswith("serving "):
            return
        with socket.socket() as caller:
            caller.settimeout(5)
            try:
                caller.connect(("127.0.0.1", port))
            except ConnectionRefusedError:
                connected.append(False)
            else:
                connected.append(True)

    client = SimpleNamespace(serving_keys=lambda project, run_id: [])
    return SimpleNamespace(
        gpus=0, workdir=workdir, project="p", run_id="r", client=client, event=event, log=print
    )


@pytest.mark.parametrize("replicas", [1, 2])
def test_the_socket_listens_before_the_job_says_it_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, replicas: int
) -> None:
    (tmp_path / "job.json").write_text(
        json.dumps({"signing_public_keys": [], "cluster": "c", "hybrid_public_keyset": "{}"})
    )
    loaded = SimpleNamespace(served=SimpleNamespace(ref="m@1"))
    server = _Server()
    monkeypatch.setattr(runner, "_load", lambda *args, **kwargs: loaded)
    monkeypatch.setattr(runner, "AuditWriter", _Audit)
    monkeypatch.setattr(runner, "ServeState", SimpleNamespace)
    monkeypatch.setattr(runner, "_server", lambda state, job: server)
    port = free_port()
    connected: list[bool] = []
    job = ServeJob(type="serve", deployment="d", model="m@1", port=port, replicas=replicas)
    said = runner.run_serve(cast(Any, _context(tmp_path, connected, port)), job)
    assert connected == [True]
    assert server.ports == [port]
    assert server.sockets is not None
    assert server.sockets[0].fileno() == -1  # closed once the server returned
    assert said == "deployment d stopped; 0 requests audited"


def test_a_port_already_taken_fails_before_the_job_says_it_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "job.json").write_text(
        json.dumps({"signing_public_keys": [], "cluster": "c", "hybrid_public_keyset": "{}"})
    )
    monkeypatch.setattr(runner, "_load", lambda *args, **kwargs: SimpleNamespace())
    monkeypatch.setattr(runner, "AuditWriter", _Audit)
    monkeypatch.setattr(runner, "ServeState", SimpleNamespace)
    monkeypatch.setattr(runner, "_server", lambda state, job: _Server())
    said: list[str] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        context = SimpleNamespace(
            gpus=0,
            workdir=tmp_path,
            project="p",
            run_id="r",
            client=SimpleNamespace(serving_keys=lambda project, run_id: []),
            event=lambda stage, status, message: said.append(message),
            log=print,
        )
        job = ServeJob(type="serve", deployment="d", model="m@1", port=port)
        with pytest.raises(OSError, match="in use"):
            runner.run_serve(cast(Any, context), job)
    assert said == []
