"""Policies: a project's YAML gates that a model version must pass to be promoted.

A policy names gates (DESIGN §5); an unknown gate is refused when the policy is saved and
an empty policy is refused (it would admit everything). :func:`evaluate_gates` checks a
version's model card, the evidence Bastion holds, against every gate and says why each
passed or failed; missing evidence fails its gate (fail closed).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bastion.errors import InvalidSpec
from bastion.evaluate.scorecard import served_robust_accuracy
from bastion.jsonschema import at_least_one_field

__all__ = ["GATES", "GateResult", "Policy", "evaluate_gates", "parse_policy"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RobustGate(_Strict):
    """Robust accuracy under ``attack`` at ``eps``, in the space the inference server
    accepts: on integer inputs when the dataset's values are integers, else in float space
    (:func:`bastion.evaluate.scorecard.served_robust_accuracy`)."""

    eps: float = Field(gt=0, le=10)
    value: float = Field(ge=0, le=1)
    attack: Literal["pgd", "fgsm"] = "pgd"


class TprGate(_Strict):
    fpr: float = Field(
        default=0.01,
        description="0.001 or 0.01 (the audit's operating points).",
        json_schema_extra={"enum": [0.001, 0.01]},
    )
    value: float = Field(ge=0, le=1)

    @field_validator("fpr")
    @classmethod
    def _known_rate(cls, fpr: float) -> float:
        if fpr not in (0.001, 0.01):
            raise ValueError("fpr must be 0.001 or 0.01, the rates the audit reports")
        return fpr


class Policy(_Strict):
    """Every gate is optional; a policy must name at least one."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=at_least_one_field)

    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    max_epsilon: float | None = Field(default=None, gt=0)
    max_mia_auc: float | None = Field(default=None, ge=0, le=1)
    max_mia_tpr_at_fpr: TprGate | None = None
    min_robust_accuracy: RobustGate | None = None
    max_demographic_parity_difference: float | None = Field(default=None, ge=0, le=1)
    max_equalized_odds_difference: float | None = Field(default=None, ge=0, le=1)
    #: A language model's canary audit: the largest exposure (bits) of any canary.
    max_canary_exposure: float | None = Field(default=None, ge=0, le=64)
    #: ... and the most training identifiers its samples may write out.
    max_extracted_identifiers: int | None = Field(default=None, ge=0)
    require_signature: bool | None = None
    require_pii_scan: bool | None = None
    require_poisoning_scan: bool | None = None
    #: A model built from a code package needs that version approved by a reviewer (never
    #: its pusher) and rejected by none; built-in models pass.
    code_reviewed: bool | None = None
    #: The training run ran in the sandbox (not under an agent started with --no-sandbox).
    require_sandbox: bool | None = None
    approvals: int | None = Field(default=None, ge=0, le=10)

    @model_validator(mode="after")
    def _not_empty(self) -> Policy:
        if not self.model_fields_set:
            raise ValueError("an empty policy admits everything; name at least one gate")
        return self

    @property
    def required_approvals(self) -> int:
        return self.approvals if self.approvals is not None else 1


#: The gate names a policy may use (the documentation lists their meaning).
GATES = tuple(Policy.model_fields)


def parse_policy(document: Any, *, source: str = "policy") -> Policy:
    """A policy from its mapping (or YAML text); InvalidSpec names every bad gate."""
    if isinstance(document, str):
        from bastion import safe_yaml  # noqa: PLC0415 - the SDK's types import this module

        document = safe_yaml.load(document, source=source, error=InvalidSpec)
    if isinstance(document, dict):  # a gate set to null is a gate not set
        document = {gate: value for gate, value in document.items() if value is not None}
    if not isinstance(document, dict) or not document:
        raise InvalidSpec(f"{source}: an empty policy admits everything; name at least one gate")
    unknown = sorted(set(document) - set(GATES))
    if unknown:
        raise InvalidSpec(
            f"{source}: unknown gate(s) {', '.join(unknown)}; known gates: {', '.join(GATES)}"
        )
    try:
        return Policy.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidSpec(f"{source}: {problems}") from None


class GateResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gate: str
    passed: bool
    required: str
    actual: str


def _number(value: Any) -> str:
    return "none" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _at_most(gate: str, limit: float, actual: float | None, missing: str) -> GateResult:
    if actual is None:
        return GateResult(gate=gate, passed=False, required=f"<= {limit}", actual=missing)
    return GateResult(
        gate=gate, passed=actual <= limit, required=f"<= {limit}", actual=_number(actual)
    )


def _code_reviewed(training: dict[str, Any]) -> GateResult:
    code = training.get("code")
    if not code:
        return GateResult(
            gate="code_reviewed", passed=True, required="approved", actual="built-in model"
        )
    reviews = training.get("code_reviews") or []
    approved = [r["reviewer"] for r in reviews if r["verdict"] == "approved"]
    rejected = [r["reviewer"] for r in reviews if r["verdict"] == "rejected"]
    if rejected:
        actual = f"{code} rejected by {', '.join(rejected)}"
    elif approved:
        actual = f"{code} approved by {', '.join(approved)}"
    else:
        actual = f"{code} not reviewed"
    return GateResult(
        gate="code_reviewed",
        passed=bool(approved) and not rejected,
        required="code approved by a reviewer",
        actual=actual,
    )


def _memorization_gates(policy: Policy, card: dict[str, Any]) -> list[GateResult]:
    """A language model's audit: ``max_canary_exposure`` (no canary exposed beyond it) and
    ``max_extracted_identifiers`` (no more training identifiers in its samples)."""
    memorization = card.get("memorization") or {}
    results = []
    if policy.max_canary_exposure is not None:
        results.append(
            _at_most(
                "max_canary_exposure",
                policy.max_canary_exposure,
                memorization.get("max_exposure"),
                "no canary audit",
            )
        )
    if policy.max_extracted_identifiers is not None:
        results.append(
            _at_most(
                "max_extracted_identifiers",
                policy.max_extracted_identifiers,
                memorization.get("extracted_identifiers"),
                "no extraction check",
            )
        )
    return results


def evaluate_gates(policy: Policy, card: dict[str, Any]) -> list[GateResult]:
    """Each gate the policy names, checked against the card; no evidence means fail."""
    results: list[GateResult] = []
    membership, robustness, fairness = card["membership"], card["robustness"], card["fairness"]
    scans = card["data"].get("scans") or {}
    if policy.min_accuracy is not None:
        accuracy = card["performance"].get("test_accuracy")
        results.append(
            GateResult(
                gate="min_accuracy",
                passed=accuracy is not None and accuracy >= policy.min_accuracy,
                required=f">= {policy.min_accuracy} (held-out)",
                actual=_number(accuracy) if accuracy is not None else "no held-out accuracy",
            )
        )
    if policy.max_epsilon is not None:
        results.append(
            _at_most(
                "max_epsilon",
                policy.max_epsilon,
                card["training"].get("epsilon"),
                "not trained with DP",
            )
        )
    if policy.max_mia_auc is not None:
        results.append(
            _at_most(
                "max_mia_auc",
                policy.max_mia_auc,
                membership["auc"] if membership else None,
                "no membership-inference audit",
            )
        )
    if policy.max_mia_tpr_at_fpr is not None:
        gate = policy.max_mia_tpr_at_fpr
        key = "tpr_at_0.1%_fpr" if gate.fpr == 0.001 else "tpr_at_1%_fpr"
        result = _at_most(
            "max_mia_tpr_at_fpr",
            gate.value,
            membership[key] if membership else None,
            "no membership-inference audit",
        )
        results.append(
            result.model_copy(update={"required": f"{result.required} at FPR {gate.fpr}"})
        )
    if policy.min_robust_accuracy is not None:
        gate_r = policy.min_robust_accuracy
        integer = (robustness or {}).get("gated_space") == "integer"
        points = [
            served_robust_accuracy(p)
            for p in (robustness or {}).get("curve", [])
            if p["attack"] == gate_r.attack and abs(p["eps"] - gate_r.eps) < 1e-9
        ]
        results.append(
            GateResult(
                gate="min_robust_accuracy",
                passed=bool(points) and points[0] >= gate_r.value,
                required=f">= {gate_r.value} under {gate_r.attack} at eps {gate_r.eps}"
                + (" on integer inputs" if integer else ""),
                actual=_number(points[0]) if points else f"not evaluated at eps {gate_r.eps}",
            )
        )
    for name in ("max_demographic_parity_difference", "max_equalized_odds_difference"):
        limit = getattr(policy, name)
        if limit is not None:
            key = name.replace("max_", "max_", 1)
            results.append(
                _at_most(
                    name, limit, fairness.get(key) if fairness else None, "no fairness evaluation"
                )
            )
    results += _memorization_gates(policy, card)
    if policy.require_signature:
        signed = card["signatures"].get("signed")
        results.append(
            GateResult(
                gate="require_signature",
                passed=bool(signed),
                required="signed",
                actual=f"signed, manifest {str(card['signatures'].get('manifest_hash'))[:12]}"
                if signed
                else "unsigned",
            )
        )
    if policy.code_reviewed:
        results.append(_code_reviewed(card["training"]))
    if policy.require_sandbox:
        isolation = card["training"].get("isolation")
        results.append(
            GateResult(
                gate="require_sandbox",
                passed=isolation == "bubblewrap",
                required="trained in the sandbox",
                actual={"bubblewrap": "sandboxed", "none": "UNSANDBOXED"}.get(
                    str(isolation), "isolation not recorded"
                ),
            )
        )
    if policy.require_pii_scan:
        pii = scans.get("pii")
        results.append(
            GateResult(
                gate="require_pii_scan",
                passed=pii is not None,
                required="training data scanned for PII",
                actual=f"{len(pii.get('columns', []))} identifier column(s) found"
                if pii is not None
                else "no PII scan of the training data",
            )
        )
    if policy.require_poisoning_scan:
        poisoning = scans.get("poisoning") or {}
        labels = poisoning.get("label_issues") or {}
        scanned = "count" in labels or card["data"].get("backdoor_scan") is not None
        results.append(
            GateResult(
                gate="require_poisoning_scan",
                passed=scanned,
                required="training data scanned for poisoning",
                actual=f"{labels.get('count', 0)} suspected label issue(s)"
                if scanned
                else "no poisoning scan of the training data",
            )
        )
    return results
