"""The inference server's HTTP surface: /v1/predict, /v1/explain, /healthz, /metrics.

Each request passes, in order: body size, serving key and scope, the audit backlog
(fail closed), extraction status of the key, rate limit and quota, schema validation,
the model, out-of-distribution detection, output hardening; its event (key id, input
hash, decision, flags) is queued for the audit trail whatever the outcome.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bastion.errors import (
    BastionError,
    InvalidInput,
    NotAuthenticated,
    NotAuthorized,
    RateLimited,
)
from bastion.http_status import PROBLEM_JSON, problem_details, status_for
from bastion.inference.config import ExtractionAction, ServeConfig
from bastion.inference.guards.auth import KeyRecord, KeyStore, Scope
from bastion.inference.guards.extraction import ExtractionDetector, Finding
from bastion.inference.guards.ood import InputDetector, OodAction
from bastion.inference.guards.ratelimit import Limiter
from bastion.inference.guards.validate import FieldError, RequestInvalid, RequestValidator
from bastion.inference.model import ServedModel
from bastion.inference.monitor import DriftFinding, DriftMonitor, ServeMetrics
from bastion.inference.output import harden, redacted_text
from bastion.inference.request_audit import AuditWriter, input_digest

__all__ = ["Loaded", "ServeState", "check_drift", "create_serve_app"]

log = logging.getLogger("bastion.inference")


@dataclass
class Loaded:
    """One model version with the guards fitted to it (swapped as a whole)."""

    served: ServedModel
    validator: RequestValidator
    detector: InputDetector | None
    drift: DriftMonitor | None
    extraction: ExtractionDetector


@dataclass
class ServeState:
    config: ServeConfig
    keys: KeyStore
    limiter: Limiter
    audit: AuditWriter
    current: Loaded
    metrics: ServeMetrics = field(default_factory=ServeMetrics)
    #: Findings (extraction, drift) go here, for the control plane's alerts.
    report: Callable[[str, dict[str, Any]], None] = lambda kind, details: None

    def swap(self, loaded: Loaded) -> None:
        """Replace the model; requests in flight finish on the one they started with (each
        reads ``current`` once)."""
        self.current = loaded


def _error(exc: BastionError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else {}
    if isinstance(exc, NotAuthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    body = problem_details(exc)
    if isinstance(exc, RequestInvalid):
        body["errors"] = [{"field": e.field, "rule": e.rule} for e in exc.errors]
    return JSONResponse(body, status_code=status_for(exc), headers=headers, media_type=PROBLEM_JSON)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise RequestInvalid([FieldError("body", f"larger than {limit} bytes")])
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestInvalid([FieldError("body", f"larger than {limit} bytes")])
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise RequestInvalid([FieldError("body", "not valid JSON")]) from None


#: How often drift statistics are recomputed, off the request path.
DRIFT_SECONDS = 1.0


@contextlib.asynccontextmanager
async def _monitoring(app: FastAPI) -> AsyncIterator[None]:
    """While the server runs, a thread recomputes drift and reports what it finds."""
    state: ServeState = app.state.serve
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(DRIFT_SECONDS):
            try:
                check_drift(state)
            except Exception:  # a statistics failure must not take the server down
                log.exception("drift check failed")

    thread = threading.Thread(target=loop, name="drift", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def create_serve_app(state: ServeState) -> FastAPI:
    app = FastAPI(
        title="Bastion inference server",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=_monitoring,
    )
    app.state.serve = state
    config = state.config

    def _guarded(endpoint: str, scope: Scope) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            started = time.perf_counter()
            event: dict[str, Any] = {"endpoint": endpoint, "key_id": None}
            try:
                raw = await _read_body(request, config.max_body_bytes)
                event["input_sha256"] = input_digest(raw)
                header = request.headers.get("authorization")
                event["key_id"] = state.keys.identify(header)
                key = state.keys.check(header, scope)
                state.audit.admit()
                response = _serve(state, endpoint, key, _parse(raw), event)
                event["decision"], event["status"] = "served", 200
            except BastionError as exc:
                response = _error(exc)
                event["decision"], event["status"] = type(exc).__name__, response.status_code
            outcome = str(event["status"])
            state.metrics.count(endpoint, outcome)
            try:
                state.audit.record(event)
            except BastionError as exc:  # the trail is full: this response must not go out
                response = _error(exc)
            state.metrics.observe(endpoint, time.perf_counter() - started)
            return response

        return handle

    app.add_api_route("/v1/predict", _guarded("predict", Scope.PREDICT), methods=["POST"])
    app.add_api_route("/v1/explain", _guarded("explain", Scope.EXPLAIN), methods=["POST"])

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        current = state.current.served
        return {
            "status": "ok" if state.keys.fresh else "degraded: serving keys are stale",
            "model": current.ref,
            "manifest_hash": current.manifest_hash,
        }

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        try:
            state.keys.check(request.headers.get("authorization"), Scope.METRICS)
        except BastionError as exc:
            return _error(exc)
        state.metrics.spooled.set(state.audit.spooled)
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _serve(
    state: ServeState, endpoint: str, key: KeyRecord, body: Any, event: dict[str, Any]
) -> JSONResponse:
    config, current = state.config, state.current  # one model for the whole request
    event["model"] = current.served.ref
    if current.served.generative:
        return _generate(state, current, endpoint, key=key, body=body, event=event)
    instances = current.validator.instances(body)
    flagged_reason = current.extraction.flagged(key.id, key.owner)
    if flagged_reason is not None and config.extraction_action is ExtractionAction.BLOCK:
        raise NotAuthorized(f"serving key {key.id[:8]} is blocked: {flagged_reason}")
    throttled = flagged_reason is not None and config.extraction_action is ExtractionAction.THROTTLE
    state.limiter.take(key, len(instances) * (config.throttle_factor if throttled else 1))
    x = current.validator.features(instances)
    served = current.served
    probabilities, features = served.infer(x)
    flags: list[str] = []
    flagged = outlying = np.zeros(len(x), dtype=bool)
    if current.detector is not None:
        detection = current.detector(lambda _: features, served.probabilities, x)
        flagged, outlying = detection.flagged, detection.out_of_distribution
        if flagged.any():
            flags.append(f"out_of_distribution:{int(flagged.sum())}")
            state.metrics.flagged.inc(int(flagged.sum()))
    event["flags"], event["instances"] = flags, len(x)
    if flagged.any() and config.ood_action is OodAction.REJECT:
        raise RequestInvalid(
            [
                FieldError(f"instances[{i}]", "out of distribution (possible adversarial input)")
                for i in np.flatnonzero(flagged)
            ]
        )
    _watch(state, current, key, served.watched(x, features), probabilities, ood=outlying)
    state.metrics.instances.inc(len(x))
    if endpoint == "explain":
        if served.prep.kind == "text":
            raise InvalidInput("explanations attribute numeric inputs; a text model's are tokens")
        from bastion.evaluate.explain import explain_instances  # noqa: PLC0415 - Captum is heavy

        return JSONResponse(
            {"model": served.ref, "explanations": explain_instances(served.model, x, served.prep)}
        )
    predictions = harden(
        probabilities,
        classes=served.prep.classes,
        mode=config.output,
        top_k=config.top_k,
        digits=config.digits,
    )
    for prediction, is_flagged in zip(predictions, flagged.tolist(), strict=True):
        if is_flagged:
            prediction["flagged"] = "out_of_distribution"
    return JSONResponse({"model": served.ref, "predictions": predictions})


def _generate(
    state: ServeState,
    current: Loaded,
    endpoint: str,
    *,
    key: KeyRecord,
    body: Any,
    event: dict[str, Any],
) -> JSONResponse:
    """A language model writes after the prompt; every identifier span in what it wrote is
    replaced by a typed placeholder before the text leaves (the audit counts them per
    entity, never the text)."""
    if endpoint == "explain":
        raise InvalidInput("explanations attribute numeric inputs; a language model writes text")
    prompt, wanted = current.validator.generation(body)
    flagged_reason = current.extraction.flagged(key.id, key.owner)
    if flagged_reason is not None and state.config.extraction_action is ExtractionAction.BLOCK:
        raise NotAuthorized(f"serving key {key.id[:8]} is blocked: {flagged_reason}")
    state.limiter.take(key, 1)
    redacted, counts = redacted_text(current.served.generate(prompt, wanted))
    event["instances"] = 1
    event["flags"] = [f"redacted:{entity}:{n}" for entity, n in sorted(counts.items())]
    if counts:
        state.metrics.flagged.inc(sum(counts.values()))
    state.metrics.instances.inc(1)
    return JSONResponse({"model": current.served.ref, "text": redacted})


def _watch(
    state: ServeState,
    current: Loaded,
    key: KeyRecord,
    flat: np.ndarray,
    probabilities: torch.Tensor,
    *,
    ood: np.ndarray,
) -> None:
    """Extraction and drift: record the batch (as :meth:`ServedModel.watched` gives it);
    report what newly trips."""
    finding: Finding | None = current.extraction.observe(
        key.id, flat, probabilities.argmax(dim=1).numpy(), owner=key.owner, ood=ood
    )
    if finding is not None:
        state.metrics.extraction.inc()
        state.report(
            "extraction",
            {
                "key_id": finding.key_id,
                "reason": finding.reason,
                "queries": finding.queries,
                "action": state.config.extraction_action.value,
            },
        )
    if current.drift is not None:
        current.drift.observe(flat)


def check_drift(state: ServeState) -> None:
    """Recompute drift statistics (a background thread calls this); report new findings."""
    drift = state.current.drift
    if drift is None:
        return
    found: list[DriftFinding] = drift.evaluate()
    for finding in found:
        state.report(
            "drift",
            {"feature": finding.feature, "psi": round(finding.psi, 4), "ks": round(finding.ks, 4)},
        )
    state.metrics.drift(drift.latest)
