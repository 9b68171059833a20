"""Small reference workloads as tensors, shared by the training tests."""

from __future__ import annotations

import pytest
import torch

from bastion.data.ingest import Loaded
from bastion.data.reference import PATIENT_PII_COLUMNS, digits, patients
from bastion.train.data import fit_preprocessing


@pytest.fixture(scope="session")
def patients_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    frame = patients(seed=0).drop(columns=list(PATIENT_PII_COLUMNS))
    data = Loaded(kind="table", frame=frame)
    prep = fit_preprocessing(data, target="diagnosis")
    return prep.features(data), prep.labels(data)


@pytest.fixture(scope="session")
def digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = digits(seed=0)
    data = Loaded(kind="images", images=images, labels=labels)
    prep = fit_preprocessing(data, target=None)
    return prep.features(data), prep.labels(data)
