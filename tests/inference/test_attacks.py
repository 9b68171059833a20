"""Attacks through HTTP: adversarial inputs crafted on a surrogate, and model extraction."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from bastion.evaluate.attacks import pgd
from bastion.inference.config import ExtractionAction, OodAction, OutputMode, ServeConfig
from bastion.inference.runtime import served_lattice
from bastion.train.config import BuiltinModel
from bastion.train.models import build_model
from tests.inference.conftest import (
    Running,
    Workload,
    make_state,
    mint_key,
    train,
    unseen_rows,
)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _flags(http: httpx.Client, token: str, images: np.ndarray) -> np.ndarray:
    """Whether the server flagged each image (sent as the integer pixels it accepts)."""
    flagged = []
    for start in range(0, len(images), 64):
        batch = images[start : start + 64].astype(int).tolist()
        response = http.post("/v1/predict", json={"instances": batch}, headers=_bearer(token))
        assert response.status_code == 200, response.text
        flagged += ["flagged" in p for p in response.json()["predictions"]]
    return np.array(flagged)


def test_integer_pgd_inputs_from_a_surrogate_are_flagged_at_a_low_false_positive_rate(
    digits_workload: Workload, serve: Any
) -> None:
    token, record = mint_key(("predict",))
    state, _, _ = make_state(digits_workload, records=[record])
    running: Running = serve(state)
    # The server set its thresholds on half the held-out rows; the other half it never saw.
    attacker, victims = unseen_rows(digits_workload)
    # The attacker trains its own model on data it holds and attacks that one (transfer).
    surrogate = build_model(BuiltinModel(builtin="cnn"), input_shape=(1, 8, 8), classes=10)
    train(surrogate, digits_workload.x[attacker], digits_workload.y[attacker], epochs=30, seed=1)
    x, y = digits_workload.x[victims], digits_workload.y[victims]
    # Every step is projected onto the integer pixels (0..16) the API accepts: sent as is.
    lattice = served_lattice(state.current.served)
    adversarial = pgd(
        surrogate,
        x,
        y,
        eps=0.2,
        steps=20,
        lattice=lattice,
        generator=torch.Generator().manual_seed(0),
    )
    adversarial_pixels = (adversarial * 16).squeeze(1).numpy()
    assert np.array_equal(adversarial_pixels, np.round(adversarial_pixels))
    clean_pixels = digits_workload.raw[victims]  # type: ignore[index]
    with httpx.Client(base_url=running.url, timeout=30) as http:
        flagged = _flags(http, token, adversarial_pixels)
        false_positives = float(_flags(http, token, clean_pixels).mean())
    with torch.no_grad():
        fooled = (state.current.served.model(adversarial).argmax(1) != y).numpy()
    # Only the examples that fool the deployed model count: the others do no harm.
    detected = float(flagged[fooled].mean())
    print(
        f"integer PGD eps 0.2 via surrogate: fools the model on {fooled.mean():.2f}, "
        f"{detected:.2f} of those flagged; clean flagged {false_positives:.3f}"
    )
    assert fooled.mean() > 0.3  # the attack is real
    assert detected >= 0.85
    assert false_positives < 0.05


class _Throttled(Exception):
    pass


def _victim(url: str, token: str, counter: list[int]) -> Any:
    """ART's view of the deployment: a black box answering labels over HTTP."""
    from art.estimators.classification import BlackBoxClassifier

    client = httpx.Client(base_url=url, timeout=30)

    def predict(x: np.ndarray) -> np.ndarray:
        pixels = np.clip(np.round(x.reshape(len(x), 8, 8) * 16), 0, 16).astype(int).tolist()
        response = client.post("/v1/predict", json={"instances": pixels}, headers=_bearer(token))
        if response.status_code == 429:
            raise _Throttled(response.json()["detail"])
        response.raise_for_status()
        counter[0] += len(x)
        labels = [int(p["label"]) for p in response.json()["predictions"]]
        return np.eye(10)[labels]

    return BlackBoxClassifier(predict, input_shape=(1, 8, 8), nb_classes=10, clip_values=(0, 1))


def _knockoff(victim: Any, transfer: np.ndarray, budget: int) -> Any:
    from art.attacks.extraction import KnockoffNets
    from art.estimators.classification import PyTorchClassifier

    torch.manual_seed(0)
    thief = build_model(BuiltinModel(builtin="cnn"), input_shape=(1, 8, 8), classes=10)
    thieved = PyTorchClassifier(
        thief,
        loss=torch.nn.CrossEntropyLoss(),
        optimizer=torch.optim.Adam(thief.parameters(), lr=0.01),
        input_shape=(1, 8, 8),
        nb_classes=10,
        clip_values=(0, 1),
    )
    attack = KnockoffNets(
        victim,
        batch_size_fit=64,
        batch_size_query=64,
        nb_epochs=20,
        nb_stolen=budget,
        sampling_strategy="random",
        verbose=False,
    )
    return attack.extract(transfer.astype(np.float32), thieved_classifier=thieved)


def _transfer_set(workload: Workload, budget: int) -> np.ndarray:
    """The attacker holds 100 natural images and jitters them (Copycat-style augmentation)."""
    rng = np.random.default_rng(0)
    seeds = workload.x[workload.test_rows[:100]].numpy()
    copies = [np.clip(seeds + rng.normal(0, 0.1, seeds.shape), 0, 1) for _ in range(budget // 100)]
    return np.concatenate(copies)[rng.permutation(budget)]


def test_knockoff_extraction_is_detected_and_throttled_before_its_budget(
    digits_workload: Workload, serve: Any
) -> None:
    budget = 2000
    token, record = mint_key(("predict",), rate=200, burst=400)
    state, _, reports = make_state(
        digits_workload,
        records=[record],
        config=ServeConfig(output=OutputMode.LABEL, extraction_action=ExtractionAction.THROTTLE),
    )
    running: Running = serve(state)
    queries = [0]
    with pytest.raises(_Throttled, match="over its rate"):
        _knockoff(
            _victim(running.url, token, queries), _transfer_set(digits_workload, budget), budget
        )
    findings = [details for kind, details in reports if kind == "extraction"]
    # Jittered copies are caught by their share of out-of-distribution queries (PRADA would
    # catch them later): noise on every pixel is far out on the pixel density alone, which
    # the extraction guard counts even where the combined score does not flag the input.
    assert len(findings) == 1 and findings[0]["key_id"] == record.id
    share = re.match(
        r"(\d+)% of the last \d+ queries were out of distribution", findings[0]["reason"]
    )
    assert share is not None, findings[0]["reason"]
    assert int(share.group(1)) >= 50
    print(
        f"extraction flagged after {findings[0]['queries']} queries; "
        f"throttled after {queries[0]} of {budget}"
    )
    assert queries[0] < budget / 2


def test_natural_traffic_is_not_taken_for_extraction(digits_workload: Workload, serve: Any) -> None:
    token, record = mint_key(("predict",))
    state, _, reports = make_state(digits_workload, records=[record])
    running: Running = serve(state)
    natural = digits_workload.raw[digits_workload.test_rows]  # type: ignore[index]
    with httpx.Client(base_url=running.url, timeout=30) as http:
        for start in range(0, len(natural), 10):
            batch = natural[start : start + 10].tolist()
            assert (
                http.post(
                    "/v1/predict", json={"instances": batch}, headers=_bearer(token)
                ).status_code
                == 200
            )
    assert [kind for kind, _ in reports if kind == "extraction"] == []


def test_label_only_output_fidelity_of_a_completed_extraction_is_measured(
    digits_workload: Workload, serve: Any
) -> None:
    budget = 2000
    token, record = mint_key(("predict",))
    state, _, reports = make_state(
        digits_workload,
        records=[record],
        config=ServeConfig(output=OutputMode.LABEL, extraction_action=ExtractionAction.ALERT),
    )
    running: Running = serve(state)
    queries = [0]
    thieved = _knockoff(
        _victim(running.url, token, queries), _transfer_set(digits_workload, budget), budget
    )
    assert queries[0] == budget and any(
        kind == "extraction" for kind, _ in reports
    )  # alerted, not stopped
    test = digits_workload.x[digits_workload.test_rows[100:]]
    with torch.no_grad():
        victim_labels = state.current.served.model(test).argmax(1).numpy()
    fidelity = float((thieved.predict(test.numpy()).argmax(1) == victim_labels).mean())
    print(
        f"label-only output, {budget} queries: the stolen model agrees with the "
        f"deployment on {fidelity:.2f} of held-out images"
    )
    assert 0.1 < fidelity <= 1.0


def test_repeated_queries_are_not_taken_for_extraction(
    digits_workload: Workload, serve: Any
) -> None:
    """A client that scores the same records again and again is not a thief."""
    token, record = mint_key(("predict",))
    state, _, reports = make_state(digits_workload, records=[record])
    running: Running = serve(state)
    same = digits_workload.raw[digits_workload.test_rows[:20]].tolist()  # type: ignore[index]
    with httpx.Client(base_url=running.url, timeout=30) as http:
        for _ in range(30):
            assert (
                http.post(
                    "/v1/predict", json={"instances": same}, headers=_bearer(token)
                ).status_code
                == 200
            )
    assert [kind for kind, _ in reports if kind == "extraction"] == []


def test_reject_refuses_flagged_inputs(digits_workload: Workload, serve: Any) -> None:
    token, record = mint_key(("predict",))
    config = ServeConfig(ood_action=OodAction.REJECT)
    state, _, _ = make_state(digits_workload, records=[record], config=config)
    running: Running = serve(state)
    clean = digits_workload.raw[digits_workload.test_rows[1:3]].tolist()  # type: ignore[index]
    noise = np.random.default_rng(0).integers(0, 17, size=(4, 8, 8)).tolist()
    with httpx.Client(base_url=running.url, timeout=30) as http:
        served = http.post("/v1/predict", json={"instances": clean}, headers=_bearer(token))
        rejected = http.post("/v1/predict", json={"instances": noise}, headers=_bearer(token))
    assert served.status_code == 200
    assert rejected.status_code == 422
    assert all("out of distribution" in e["rule"] for e in rejected.json()["errors"])


def test_block_refuses_a_key_once_it_is_caught_extracting(
    digits_workload: Workload, serve: Any
) -> None:
    token, record = mint_key(("predict",))
    config = ServeConfig(extraction_action=ExtractionAction.BLOCK)
    state, sink, reports = make_state(digits_workload, records=[record], config=config)
    running: Running = serve(state)
    transfer = _transfer_set(digits_workload, 600)
    pixels = np.clip(np.round(transfer.reshape(-1, 8, 8) * 16), 0, 16).astype(int)
    codes = []
    with httpx.Client(base_url=running.url, timeout=30) as http:
        for i in range(0, 600, 20):
            batch = {"instances": pixels[i : i + 20].tolist()}
            codes.append(http.post("/v1/predict", json=batch, headers=_bearer(token)).status_code)
    assert any(kind == "extraction" for kind, _ in reports)
    assert codes[0] == 200 and codes[-1] == 403  # served until caught, then blocked
    state.audit.flush()
    assert any(e["status"] == 403 and e["decision"] == "NotAuthorized" for e in sink.events)


def _random_pixels(count: int, seed: int) -> np.ndarray:
    """In-schema random inputs: integer pixels 0..16, as the API accepts them."""
    return np.random.default_rng(seed).integers(0, 17, size=(count, 8, 8))


def test_a_thief_querying_random_inputs_is_caught_by_its_share_of_ood_queries(
    digits_workload: Workload, serve: Any
) -> None:
    token, record = mint_key(("predict",))
    config = ServeConfig(output=OutputMode.LABEL, extraction_action=ExtractionAction.BLOCK)
    state, _, reports = make_state(digits_workload, records=[record], config=config)
    running: Running = serve(state)
    answered = 0
    with httpx.Client(base_url=running.url, timeout=30) as http:
        for seed in range(50):
            body = {"instances": _random_pixels(20, seed).tolist()}
            response = http.post("/v1/predict", json=body, headers=_bearer(token))
            if response.status_code == 403:
                break
            assert response.status_code == 200, response.text
            answered += 20
    findings = [details for kind, details in reports if kind == "extraction"]
    assert findings and "out of distribution" in findings[0]["reason"], findings
    print(f"random-input thief blocked after {answered} answered queries")
    assert answered <= 100


def test_a_thief_spreading_over_several_keys_is_caught_as_their_owner(
    digits_workload: Workload, serve: Any
) -> None:
    """Four keys of one person, 15 random queries each: no key alone reaches the signal's
    minimum (50 queries), their owner does; then every one of the four is refused."""
    minted = [mint_key(("predict",)) for _ in range(4)]
    tokens = [token for token, _ in minted]
    records = [dataclasses.replace(record, owner="user-1") for _, record in minted]
    config = ServeConfig(extraction_action=ExtractionAction.BLOCK)
    state, _, reports = make_state(digits_workload, records=records, config=config)
    running: Running = serve(state)
    with httpx.Client(base_url=running.url, timeout=30) as http:
        for index, token in enumerate(tokens):
            body = {"instances": _random_pixels(15, index).tolist()}
            assert http.post("/v1/predict", json=body, headers=_bearer(token)).status_code == 200
        codes = [
            http.post(
                "/v1/predict",
                json={"instances": _random_pixels(1, 99).tolist()},
                headers=_bearer(token),
            ).status_code
            for token in tokens
        ]
    findings = [details for kind, details in reports if kind == "extraction"]
    assert [f["key_id"] for f in findings] == ["owner:user-1"], findings
    assert codes == [403, 403, 403, 403]


def test_the_extraction_guard_counts_inputs_far_out_on_any_one_score(
    digits_workload: Workload, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The extraction guard's out-of-distribution share counts what the detector's
    ``out_of_distribution`` says (the combined flag, or any one score past its own limit),
    not only the requests it flags."""
    token, record = mint_key(("predict",))
    state, _, _ = make_state(digits_workload, records=[record])
    seen: list[np.ndarray] = []
    observe = state.current.extraction.observe

    def recording(*args: Any, ood: np.ndarray | None = None, **kwargs: Any) -> Any:
        assert ood is not None
        seen.append(ood)
        return observe(*args, ood=ood, **kwargs)

    monkeypatch.setattr(state.current.extraction, "observe", recording)
    running: Running = serve(state)
    jittered = _transfer_set(digits_workload, 100)[:40]
    pixels = np.clip(np.round(jittered * 16), 0, 16).astype(int)
    with httpx.Client(base_url=running.url, timeout=30) as http:
        body = {"instances": pixels.squeeze(1).tolist()}
        assert http.post("/v1/predict", json=body, headers=_bearer(token)).status_code == 200
    detector, served = state.current.detector, state.current.served
    assert detector is not None
    expected = detector(served.features, served.probabilities, torch.tensor(pixels / 16).float())
    assert seen[0].tolist() == expected.out_of_distribution.tolist()
    # Noise on every pixel: more of these are out of distribution than are flagged.
    assert expected.out_of_distribution.sum() > expected.flagged.sum()
