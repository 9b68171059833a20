"""The request path's guards, one refusal at a time, over loopback HTTP."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path

import httpx
import pytest
import torch

from bastion.errors import IntegrityError
from bastion.inference.config import OutputMode, ServeConfig
from bastion.inference.guards.ratelimit import RedisLimiter
from bastion.inference.model import load_verified
from bastion.inference.request_audit import SPOOL, AuditWriter, replay_spool
from tests.conftest import other_keyring
from tests.inference.conftest import Sink, Workload, make_state, mint_key


def _rows(workload: Workload, count: int = 2) -> list[dict[str, object]]:
    frame = workload.frame.drop(columns=["diagnosis"])  # type: ignore[attr-defined]
    return frame.iloc[workload.test_rows[:count]].to_dict(orient="records")  # type: ignore[no-any-return]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- loading -----------------------------------------------------------------------------


def test_a_verified_model_loads_and_a_tampered_one_is_refused(
    digits_workload: Workload, tmp_path: Path
) -> None:
    public = [digits_workload.keyring.primary_signing_key().public_pem]
    served = load_verified(digits_workload.folder, public_keys=public)
    assert served.ref == "digits-cnn@1"

    tampered = tmp_path / "tampered"
    shutil.copytree(digits_workload.folder, tampered)
    weights = tampered / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"weights.safetensors: content differs"):
        load_verified(tampered, public_keys=public)

    extra = tmp_path / "extra"
    shutil.copytree(digits_workload.folder, extra)
    (extra / "payload.pkl").write_bytes(b"x")
    with pytest.raises(IntegrityError, match=r"added: \['payload.pkl'\]"):
        load_verified(extra, public_keys=public)

    foreign = other_keyring(tmp_path / "other").primary_signing_key().public_pem
    with pytest.raises(IntegrityError, match="signature does not verify"):
        load_verified(digits_workload.folder, public_keys=[foreign])


# -- keys --------------------------------------------------------------------------------


def test_missing_unknown_revoked_expired_and_out_of_scope_keys_are_refused(
    patients_workload: Workload, serve: object, caplog: pytest.LogCaptureFixture
) -> None:
    good, good_record = mint_key(("predict",))
    revoked, revoked_record = mint_key(("predict",), revoked=True)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    expired, expired_record = mint_key(("predict",), expires_at=past)
    explain_only, explain_record = mint_key(("explain",))
    unknown, _ = mint_key(("predict",))
    # A known key id with a secret of its own: only the secret comparison refuses it.
    wrong_secret = f"bsk_{good_record.id}_{mint_key(('predict',))[0].split('_', 2)[2]}"
    state, sink, _ = make_state(
        patients_workload, records=[good_record, revoked_record, expired_record, explain_record]
    )
    caplog.set_level(logging.DEBUG)
    running = serve(state)  # type: ignore[operator]
    body = {"instances": _rows(patients_workload)}
    with httpx.Client(base_url=running.url) as http:
        assert http.post("/v1/predict", json=body, headers=_bearer(good)).status_code == 200
        cases = {
            "missing": (http.post("/v1/predict", json=body), 401),
            "malformed": (
                http.post("/v1/predict", json=body, headers={"Authorization": "Bearer nope"}),
                401,
            ),
            "unknown": (http.post("/v1/predict", json=body, headers=_bearer(unknown)), 401),
            "wrong secret": (
                http.post("/v1/predict", json=body, headers=_bearer(wrong_secret)),
                401,
            ),
            "revoked": (http.post("/v1/predict", json=body, headers=_bearer(revoked)), 401),
            "expired": (http.post("/v1/predict", json=body, headers=_bearer(expired)), 401),
            "scope": (http.post("/v1/predict", json=body, headers=_bearer(explain_only)), 403),
            "metrics": (http.get("/metrics", headers=_bearer(good)), 403),
        }
    for name, (response, expected) in cases.items():
        assert response.status_code == expected, name
    assert "revoked" in cases["revoked"][0].json()["detail"]
    assert "expired" in cases["expired"][0].json()["detail"]
    state.audit.flush()
    denied = [e for e in sink.events if e["status"] in (401, 403)]
    assert len(denied) == 7  # every refusal is in the trail, with the key id when known
    assert {e["key_id"] for e in denied} >= {
        revoked_record.id,
        expired_record.id,
        explain_record.id,
    }
    for token in (good, revoked, expired, explain_only, unknown, wrong_secret):
        secret = token.split("_", 2)[2]
        assert secret not in caplog.text
        assert all(secret not in str(e) for e in sink.events)


def test_revocation_takes_effect_when_the_records_refresh(
    patients_workload: Workload, serve: object
) -> None:
    token, record = mint_key(("predict",))
    state, _, _ = make_state(patients_workload, records=[record])
    running = serve(state)  # type: ignore[operator]
    body = {"instances": _rows(patients_workload)}
    with httpx.Client(base_url=running.url) as http:
        assert http.post("/v1/predict", json=body, headers=_bearer(token)).status_code == 200
        state.keys.replace([record.__class__(**{**record.__dict__, "revoked": True})])
        assert http.post("/v1/predict", json=body, headers=_bearer(token)).status_code == 401


def test_stale_key_records_fail_closed(patients_workload: Workload, serve: object) -> None:
    token, record = mint_key(("predict",))
    state, _, _ = make_state(patients_workload, records=[record])
    state.keys._max_age = 0.0  # the control plane has not answered since
    running = serve(state)  # type: ignore[operator]
    with httpx.Client(base_url=running.url) as http:
        response = http.post(
            "/v1/predict", json={"instances": _rows(patients_workload)}, headers=_bearer(token)
        )
    assert response.status_code == 503
    assert "refusing all keys" in response.json()["detail"]


# -- validation --------------------------------------------------------------------------


def test_each_invalid_body_is_a_422_naming_field_and_rule(
    patients_workload: Workload, serve: object
) -> None:
    token, record = mint_key(("predict",))
    state, _, _ = make_state(
        patients_workload, records=[record], config=ServeConfig(max_batch=8, max_body_bytes=8192)
    )
    running = serve(state)  # type: ignore[operator]
    row = _rows(patients_workload, 1)[0]
    column = next(c for c in state.current.served.schema.columns if c.name == "mean_radius")  # type: ignore[union-attr]
    cases: dict[str, tuple[object, str, str]] = {
        "missing": (
            {"instances": [{k: v for k, v in row.items() if k != "mean_radius"}]},
            "instances[0].mean_radius",
            "required",
        ),
        "unknown": (
            {"instances": [{**row, "ssn": "123"}]},
            "instances[0].ssn",
            "not a feature of this model",
        ),
        "range": (
            {"instances": [{**row, "mean_radius": (column.maximum or 0) + 100}]},
            "instances[0].mean_radius",
            "above the maximum of the training data",
        ),
        "type": (
            {"instances": [{**row, "mean_radius": "big"}]},
            "instances[0].mean_radius",
            "must be a number",
        ),
        "bool": (
            {"instances": [{**row, "mean_radius": True}]},
            "instances[0].mean_radius",
            "must be a number",
        ),
        "category": ({"instances": [{**row, "sex": "X"}]}, "instances[0].sex", "categories"),
        "null": ({"instances": [{**row, "sex": None}]}, "instances[0].sex", "must not be null"),
        "batch": ({"instances": [row] * 9}, "instances", "at most 8"),
        "empty": ({"instances": []}, "instances", "must not be empty"),
        "shape": ({"instances": row}, "instances", "a list"),
        "extra": ({"instances": [row], "debug": True}, "debug", "unknown field"),
    }
    with httpx.Client(base_url=running.url) as http:
        for name, (body, field, rule) in cases.items():
            response = http.post("/v1/predict", json=body, headers=_bearer(token))
            assert response.status_code == 422, name
            first = response.json()["errors"][0]
            assert first["field"] == field and rule in first["rule"], (name, first)
            # A bound of the exact schema is one training row's value: never echoed.
            assert str(column.maximum) not in response.text, name
        nan = http.post(
            "/v1/predict",
            content=b'{"instances": [{"mean_radius": NaN}]}',
            headers={**_bearer(token), "Content-Type": "application/json"},
        )
        assert any(e["rule"] == "must be finite" for e in nan.json()["errors"])
        big = http.post("/v1/predict", content=b"{" + b" " * 9000 + b"}", headers=_bearer(token))
        assert (
            big.status_code == 422 and "larger than 8192 bytes" in big.json()["errors"][0]["rule"]
        )
        broken = http.post("/v1/predict", content=b"{not json", headers=_bearer(token))
        assert broken.status_code == 422 and broken.json()["errors"][0]["rule"] == "not valid JSON"


def test_image_requests_are_checked_for_shape_range_and_integer_pixels(
    digits_workload: Workload, serve: object
) -> None:
    token, record = mint_key(("predict",))
    state, _, _ = make_state(digits_workload, records=[record])
    running = serve(state)  # type: ignore[operator]
    image = digits_workload.raw[0].tolist()  # type: ignore[index]
    with httpx.Client(base_url=running.url) as http:
        ok = http.post("/v1/predict", json={"instances": [image]}, headers=_bearer(token))
        assert ok.status_code == 200
        for body, rule in (
            ({"instances": [[row[:7] for row in image]]}, "shape [8, 7] is not [8, 8]"),
            (
                {"instances": [[[v + 20 for v in row] for row in image]]},
                "pixels outside the range of the training data",
            ),
            (
                {"instances": [[[min(v + 0.5, 15.5) for v in row] for row in image]]},
                "pixels must be integers",
            ),
            ({"instances": [[["a"] * 8] * 8]}, "array of numbers"),
        ):
            response = http.post("/v1/predict", json=body, headers=_bearer(token))
            assert response.status_code == 422 and rule in response.json()["errors"][0]["rule"], (
                rule
            )


# -- output hardening --------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(OutputMode))
def test_output_modes_show_only_what_they_allow(
    patients_workload: Workload, serve: object, mode: OutputMode
) -> None:
    token, record = mint_key(("predict",))
    state, _, _ = make_state(
        patients_workload, records=[record], config=ServeConfig(output=mode, top_k=1, digits=1)
    )
    running = serve(state)  # type: ignore[operator]
    with httpx.Client(base_url=running.url) as http:
        prediction = http.post(
            "/v1/predict", json={"instances": _rows(patients_workload, 1)}, headers=_bearer(token)
        ).json()["predictions"][0]
    assert prediction["label"] in patients_workload.prep.classes
    if mode is OutputMode.LABEL:
        assert set(prediction) <= {"label", "flagged"}
    elif mode is OutputMode.TOP_K:
        assert len(prediction["top_k"]) == 1 and "probabilities" not in prediction
    elif mode is OutputMode.ROUNDED:
        assert all(round(p, 1) == p for p in prediction["probabilities"].values())
    else:
        assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-5


def test_explain_returns_attributions_per_feature(
    patients_workload: Workload, serve: object
) -> None:
    token, record = mint_key(("predict", "explain"))
    state, _, _ = make_state(patients_workload, records=[record])
    running = serve(state)  # type: ignore[operator]
    with httpx.Client(base_url=running.url) as http:
        response = http.post(
            "/v1/explain", json={"instances": _rows(patients_workload, 2)}, headers=_bearer(token)
        )
    explained = response.json()["explanations"]
    assert len(explained) == 2
    assert set(explained[0]["attributions"]) == set(patients_workload.prep.numeric) | set(
        patients_workload.prep.categorical
    )


# -- limits ------------------------------------------------------------------------------


def test_rate_limit_and_quota_answer_429_with_retry_after(
    patients_workload: Workload, serve: object
) -> None:
    fast, fast_record = mint_key(("predict",), rate=2, burst=3)
    capped, capped_record = mint_key(("predict",), quota=4)
    state, _, _ = make_state(patients_workload, records=[fast_record, capped_record])
    running = serve(state)  # type: ignore[operator]
    body = {"instances": _rows(patients_workload, 1)}
    with httpx.Client(base_url=running.url) as http:
        codes = [
            http.post("/v1/predict", json=body, headers=_bearer(fast)).status_code for _ in range(5)
        ]
        assert codes[:3] == [200, 200, 200] and 429 in codes[3:]
        limited = http.post("/v1/predict", json=body, headers=_bearer(fast))
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        quota = [
            http.post(
                "/v1/predict",
                json={"instances": _rows(patients_workload, 2)},
                headers=_bearer(capped),
            ).status_code
            for _ in range(3)
        ]
    assert quota == [200, 200, 429]  # two instances a request: the third would make six


def test_two_replicas_share_one_limit_in_redis(
    patients_workload: Workload, serve: object, redis_url: str
) -> None:
    import redis

    token, record = mint_key(("predict",), rate=0.01, burst=6)
    client = redis.Redis.from_url(redis_url)
    namespace = f"test-{record.id}"
    replicas = [
        serve(
            make_state(
                patients_workload,
                records=[record],
                limiter=RedisLimiter(client, namespace=namespace),
            )[0]
        )  # type: ignore[operator]
        for _ in range(2)
    ]
    body = {"instances": _rows(patients_workload, 1)}
    codes = []
    with httpx.Client() as http:
        for i in range(10):  # alternate between the replicas
            codes.append(
                http.post(
                    f"{replicas[i % 2].url}/v1/predict", json=body, headers=_bearer(token)
                ).status_code
            )
    assert codes.count(200) == 6  # the burst, shared: each replica alone would have allowed 6
    assert codes[6:] == [429] * 4


# -- audit -------------------------------------------------------------------------------


def test_audit_spools_encrypted_while_the_sink_is_down_and_fails_closed_when_full(
    patients_workload: Workload, serve: object, tmp_path: Path
) -> None:
    token, record = mint_key(("predict",))
    sink = Sink()
    sink.down = True
    spool = tmp_path / "audit.spool"
    state, _, _ = make_state(
        patients_workload, records=[record], sink=sink, capacity=6, spool=spool
    )
    running = serve(state)  # type: ignore[operator]
    body = {"instances": _rows(patients_workload, 1)}
    with httpx.Client(base_url=running.url) as http:
        served = [
            http.post("/v1/predict", json=body, headers=_bearer(token)).status_code
            for _ in range(5)
        ]
        state.audit.flush()
        assert served == [200] * 5
        assert spool.is_file() and state.audit.spooled == 5
        spooled = spool.read_text()
        assert "input_sha256" not in spooled and record.id not in spooled  # sealed, not plain
        codes = [
            http.post("/v1/predict", json=body, headers=_bearer(token)).status_code
            for _ in range(3)
        ]
        assert codes[-1] == 503  # the spool is full: refused rather than served unaudited
        sink.down = False
        state.audit.flush()
        assert not spool.exists()
        assert http.post("/v1/predict", json=body, headers=_bearer(token)).status_code == 200
    state.audit.flush()
    served_events = [e for e in sink.events if e["status"] == 200]
    assert len(served_events) == served.count(200) + codes.count(200) + 1  # nothing lost
    times = [e["at"] for e in sink.events]
    assert times == sorted(times)  # spooled events first, in order


def test_request_rows_become_the_same_inputs_as_training_rows(patients_workload: Workload) -> None:
    """The request path's row transform equals the training transform, value for value."""
    frame = patients_workload.frame.drop(columns=["diagnosis"])  # type: ignore[attr-defined]
    rows = frame.head(50).to_dict(orient="records")
    prep = patients_workload.prep
    assert torch.equal(prep.row_features(rows), prep.table_features(frame.head(50)))


def test_a_spool_left_behind_is_replayed_by_the_agent_in_order(
    patients_workload: Workload, tmp_path: Path
) -> None:
    """A server that died with its control plane unreachable leaves sealed batches; only the
    cluster's key opens them, and the agent delivers them in order."""
    sink = Sink()
    sink.down = True
    spool = tmp_path / SPOOL
    writer = AuditWriter(
        sink=sink,
        spool=spool,
        cluster="local",
        cluster_keyset=patients_workload.keyring.hybrid_public_keyset(),
        batch=3,
    )
    for i in range(7):
        writer.record({"endpoint": "predict", "status": 200, "n": i})
    writer.flush()  # the sink is down: three sealed batches, and the server "dies" here
    assert spool.is_file() and "predict" not in spool.read_text()
    foreign = other_keyring(tmp_path / "other")
    with pytest.raises(IntegrityError):
        replay_spool(spool, cluster="local", keyring=foreign, send=sink)
    assert spool.is_file()  # nothing sent, nothing lost
    delivered: list[dict[str, object]] = []
    sent = replay_spool(
        spool, cluster="local", keyring=patients_workload.keyring, send=delivered.extend
    )
    assert sent == 7 and [e["n"] for e in delivered] == list(range(7))
    assert not spool.exists()


def test_concurrent_flushes_never_lose_the_spool_file(
    patients_workload: Workload, tmp_path: Path
) -> None:
    """The writer's own thread and a caller flush at once: every spooled batch stays on disk."""
    sink = Sink()
    sink.down = True
    spool = tmp_path / SPOOL
    writer = AuditWriter(
        sink=sink,
        spool=spool,
        cluster="local",
        cluster_keyset=patients_workload.keyring.hybrid_public_keyset(),
        batch=1,
        interval=0.0005,
    )
    writer.start()
    try:
        for i in range(150):
            writer.record({"endpoint": "predict", "status": 200, "n": i})
            writer.flush()
            assert spool.is_file()
            assert len(spool.read_text().splitlines()) == writer.spooled
    finally:
        sink.down = False
        writer.close()
    assert [e["n"] for e in sink.events] == list(range(150)) and not spool.exists()


def test_a_batch_being_spooled_still_counts_against_the_audit_capacity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bastion.inference.request_audit as serve_audit
    from bastion.errors import ServiceUnavailable

    def down(batch: list[dict[str, object]]) -> None:
        raise ConnectionError("control plane unreachable")

    writer = AuditWriter(
        sink=down, spool=tmp_path / "spool", cluster="c1", cluster_keyset="k", capacity=1
    )
    writer.record({"status": 200})
    admitted: list[bool] = []

    def sealing(data: bytes, **_: object) -> str:
        # A request arrives while the one queued event is being written to the spool.
        try:
            writer.admit()
            admitted.append(True)
        except ServiceUnavailable:
            admitted.append(False)
        return "sealed"

    monkeypatch.setattr(serve_audit, "seal_for_cluster", sealing)
    writer.flush()
    assert admitted == [False] and writer.spooled == 1 and writer.pending == 1
