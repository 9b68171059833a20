"""Load: 200 concurrent clients over loopback. Only 429s from the limits, every request in
the audit trail, memory flat. CI runs 10 s; BASTION_SLOW_SCALE=6 runs the full 60 s."""

from __future__ import annotations

import asyncio
import os
import resource
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.inference.conftest import Running, Workload, make_state, mint_key

CLIENTS = 200
SECONDS = 10 * int(os.environ.get("BASTION_SLOW_SCALE", "1"))
#: A loaded host may take long to give all 200 clients their first answer: the SECONDS of load
#: count from then, within this bound.
AT_MOST = SECONDS + 120


class _Window:
    """Load runs until SECONDS after every client got its first answer (or AT_MOST)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.all_answered: float | None = None

    def open(self) -> bool:
        now = time.monotonic()
        if now > self.started + AT_MOST:
            return False
        return self.all_answered is None or now < self.all_answered + SECONDS


def _rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


async def _client(
    http: httpx.AsyncClient,
    *,
    token: str,
    body: dict[str, Any],
    window: _Window,
    codes: Counter[int],
    started: set[int],
    me: int,
) -> None:
    """One client: its own connection from the pool, requests back to back."""
    while window.open():
        response = await http.post(
            "/v1/predict", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        codes[response.status_code] += 1
        started.add(me)
        if len(started) == CLIENTS and window.all_answered is None:
            window.all_answered = time.monotonic()


@pytest.mark.slow
def test_200_clients_get_answers_or_429_and_every_request_is_audited(
    patients_workload: Workload, serve: Any
) -> None:
    free, free_record = mint_key(("predict",))
    # a rate a slow host still exceeds: 20 clients share it
    limited, limited_record = mint_key(("predict",), rate=2, burst=2)
    state, sink, _ = make_state(patients_workload, records=[free_record, limited_record])
    running: Running = serve(state)
    frame = patients_workload.frame.drop(columns=["diagnosis"])  # type: ignore[attr-defined]
    body = {"instances": frame.iloc[patients_workload.test_rows[:4]].to_dict(orient="records")}
    codes: Counter[int] = Counter()
    memory: list[float] = []
    started: set[int] = set()
    done = threading.Event()

    def sample() -> None:  # once every client has its connection and an answer
        while not done.wait(0.5):
            if len(started) == CLIENTS:
                memory.append(_rss_mib())

    async def main() -> None:
        window = _Window()
        pool = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
        async with httpx.AsyncClient(base_url=running.url, timeout=60, limits=pool) as http:
            await asyncio.gather(
                *(
                    _client(
                        http,
                        token=limited if i % 10 == 0 else free,
                        body=body,
                        window=window,
                        codes=codes,
                        started=started,
                        me=i,
                    )
                    for i in range(CLIENTS)
                )
            )

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        asyncio.run(main())
    finally:
        done.set()
        sampler.join()
    state.audit.close()
    total = sum(codes.values())
    print(
        f"{CLIENTS} clients, {SECONDS} s: {total} requests, {dict(codes)}; "
        f"RSS {memory[0]:.0f} -> {memory[-1]:.0f} MiB"
    )
    assert set(codes) <= {200, 429} and codes[200] > 0 and codes[429] > 0
    assert len(sink.events) == total  # no audit event lost
    assert Counter(e["status"] for e in sink.events) == codes
    assert len(memory) >= 4, "the clients never all got an answer"
    assert max(memory) - memory[0] < 64, memory  # no growth once every connection is open
