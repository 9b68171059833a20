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

from tests.serve.conftest import Running, Workload, make_state, mint_key

CLIENTS = 200
SECONDS = 10 * int(os.environ.get("BASTION_SLOW_SCALE", "1"))


def _rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


async def _client(
    url: str, token: str, body: dict[str, Any], until: float, codes: Counter[int]
) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        while time.monotonic() < until:
            response = await http.post(
                "/v1/predict", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            codes[response.status_code] += 1


@pytest.mark.slow
def test_200_clients_get_answers_or_429_and_every_request_is_audited(
    patients_workload: Workload, serve: Any
) -> None:
    free, free_record = mint_key(("predict",))
    limited, limited_record = mint_key(("predict",), rate=20, burst=20)
    state, sink, _ = make_state(patients_workload, records=[free_record, limited_record])
    running: Running = serve(state)
    frame = patients_workload.frame.drop(columns=["diagnosis"])  # type: ignore[attr-defined]
    body = {"instances": frame.iloc[patients_workload.test_rows[:4]].to_dict(orient="records")}
    codes: Counter[int] = Counter()
    memory: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            memory.append(_rss_mib())

    async def main() -> None:
        until = time.monotonic() + SECONDS
        await asyncio.gather(
            *(
                _client(running.url, limited if i % 10 == 0 else free, body, until, codes)
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
    settled = memory[len(memory) // 3 :]  # after the clients' connections are all open
    assert max(settled) - settled[0] < 64, memory
