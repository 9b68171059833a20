"""The security scorecard: each OWASP Machine Learning Security Top 10 item (2023) against
the evidence Bastion holds for one model version, as pass, fail or not assessed.

The thresholds here are the scorecard's defaults; a project's policy gates (which decide
promotion) may be stricter. Items answered at deployment (theft, output integrity,
skewing in production) stay "not assessed" until a deployment supplies evidence.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["OWASP_ML_TOP_10", "build_scorecard", "served_robust_accuracy"]

Status = Literal["pass", "fail", "not assessed"]

OWASP_ML_TOP_10 = {
    "ML01": "Input Manipulation Attack",
    "ML02": "Data Poisoning Attack",
    "ML03": "Model Inversion Attack",
    "ML04": "Membership Inference Attack",
    "ML05": "Model Theft",
    "ML06": "AI Supply Chain Attacks",
    "ML07": "Transfer Learning Attack",
    "ML08": "Model Skewing",
    "ML09": "Output Integrity Attack",
    "ML10": "Model Poisoning",
}

#: Scorecard defaults: robust accuracy at the smallest evaluated eps, as a share of clean.
MIN_ROBUST_SHARE = 0.5
MAX_EPSILON = 10.0
MAX_MIA_AUC = 0.6
MAX_MIA_TPR_AT_1PCT = 0.05


def served_robust_accuracy(point: dict[str, Any]) -> float:
    """A robustness point's accuracy in the space the inference server accepts: on integer
    inputs when the dataset's values are integers (float-space examples cannot reach the
    deployed model), else in float space. The ``min_robust_accuracy`` gate reads this."""
    value = point.get("robust_accuracy_integer", point["robust_accuracy"])
    return float(value)


def _item(code: str, status: Status, evidence: str, fix: str = "") -> dict[str, str]:
    item = {"id": code, "name": OWASP_ML_TOP_10[code], "status": status, "evidence": evidence}
    if fix:
        item["fix"] = fix
    return item


def _ml01(card: dict[str, Any]) -> dict[str, str]:
    robustness = card.get("robustness")
    if not robustness:
        return _item(
            "ML01", "not assessed", "no robustness evaluation", "run bastion eval robustness"
        )
    smallest = min(point["eps"] for point in robustness["curve"])
    worst = min(served_robust_accuracy(p) for p in robustness["curve"] if p["eps"] == smallest)
    clean = robustness["clean_accuracy"]
    space = "integer inputs, " if robustness.get("gated_space") == "integer" else ""
    evidence = (
        f"robust accuracy {worst:.3f} at eps {smallest} ({space}{robustness['norm']}) against "
        f"clean {clean:.3f}"
    )
    adversarial = (card.get("training", {}).get("train") or {}).get("adversarial")
    if adversarial:
        evidence += f"; adversarially trained ({adversarial['attack']}, eps {adversarial['eps']})"
    if worst >= MIN_ROBUST_SHARE * clean:
        return _item("ML01", "pass", evidence)
    return _item(
        "ML01",
        "fail",
        evidence,
        "train with train.adversarial (PGD) or validate and flag inputs at deployment",
    )


def _ml02(card: dict[str, Any]) -> dict[str, str]:
    scans = card.get("data", {}).get("scans") or {}
    poisoning = scans.get("poisoning") or {}
    backdoor = card.get("data", {}).get("backdoor_scan")
    if backdoor and backdoor.get("poisoned_classes"):
        return _item(
            "ML02",
            "fail",
            f"backdoor scan flagged classes {backdoor['poisoned_classes']}",
            "inspect the flagged training images in the compute plane and retrain without them",
        )
    labels = poisoning.get("label_issues") or {}
    if "count" in labels or backdoor:
        parts = []
        if "count" in labels:
            parts.append(
                f"{labels['count']} suspected label issue(s) in {labels['rows_scanned']} rows, "
                f"{poisoning.get('outliers', 0)} outlier(s)"
            )
        if backdoor:
            parts.append("backdoor (spectral signature) scan clean")
        return _item("ML02", "pass", "dataset scanned: " + "; ".join(parts))
    return _item(
        "ML02",
        "not assessed",
        "no poisoning scan of the training data",
        "run bastion data scan on the dataset version",
    )


def _ml03(card: dict[str, Any]) -> dict[str, str]:
    epsilon = card.get("training", {}).get("epsilon")
    if epsilon is None:
        return _item(
            "ML03",
            "fail",
            "trained without differential privacy",
            "train with train.privacy (DP-SGD) or serve labels only",
        )
    status: Status = "pass" if epsilon <= MAX_EPSILON else "fail"
    return _item(
        "ML03",
        status,
        f"DP-SGD, epsilon {epsilon:.2f} (delta {card['training'].get('delta')})",
        "" if status == "pass" else f"lower epsilon to at most {MAX_EPSILON}",
    )


def _ml04(card: dict[str, Any]) -> dict[str, str]:
    membership = card.get("membership")
    if not membership:
        return _item(
            "ML04", "not assessed", "no membership-inference audit", "run bastion eval privacy"
        )
    evidence = (
        f"{membership['attack']}: AUC {membership['auc']:.3f}, TPR at 1% FPR "
        f"{membership['tpr_at_1%_fpr']:.3f} on {membership['rows']} rows"
    )
    if membership["auc"] <= MAX_MIA_AUC and membership["tpr_at_1%_fpr"] <= MAX_MIA_TPR_AT_1PCT:
        return _item("ML04", "pass", evidence)
    return _item("ML04", "fail", evidence, "train with DP-SGD or regularise against overfitting")


def _ml06(card: dict[str, Any]) -> dict[str, str]:
    signatures = card.get("signatures", {})
    if signatures.get("signed"):
        return _item(
            "ML06",
            "pass",
            f"safetensors weights; directory signed (OpenSSF model signing), manifest "
            f"{str(signatures.get('manifest_hash'))[:12]}",
        )
    return _item("ML06", "fail", "the version carries no signature", "re-register the model")


def _ml07(card: dict[str, Any]) -> dict[str, str]:
    base = card.get("training", {}).get("initialized_from")
    if not base:
        return _item("ML07", "pass", "trained from scratch (no pretrained model)")
    return _item(
        "ML07",
        "pass",
        f"fine-tuned from {base.get('model')}, verified (signature and manifest "
        f"{str(base.get('manifest_hash'))[:12]}) before use",
    )


def _ml08(card: dict[str, Any]) -> dict[str, str]:
    drift = (card.get("data", {}).get("scans") or {}).get("drift")
    if drift:
        return _item(
            "ML08",
            "pass" if not drift.get("drifted") else "fail",
            f"{drift.get('drifted')} column(s) drifted against the previous dataset version",
            "" if not drift.get("drifted") else "review the drifted columns before promotion",
        )
    return _item("ML08", "not assessed", "no drift evidence yet (measured at deployment)")


def _ml10(card: dict[str, Any]) -> dict[str, str]:
    signed = card.get("signatures", {}).get("signed")
    if not signed:
        return _item("ML10", "fail", "unsigned weights", "re-register the model")
    return _item(
        "ML10",
        "pass",
        "checkpoints and model encrypted and signed; signatures verified before every resume "
        f"and load; weights sha256 {str(card['signatures'].get('weights_sha256'))[:12]}",
    )


def build_scorecard(card: dict[str, Any]) -> list[dict[str, str]]:
    """One entry per OWASP ML Top 10 item, in order."""
    return [
        _ml01(card),
        _ml02(card),
        _ml03(card),
        _ml04(card),
        _item("ML05", "not assessed", "answered at deployment: scoped keys, quotas, detection"),
        _ml06(card),
        _ml07(card),
        _ml08(card),
        _item("ML09", "not assessed", "answered at deployment: TLS, signed hot-swap, audit"),
        _ml10(card),
    ]
