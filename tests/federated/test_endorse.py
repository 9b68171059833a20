"""The clusters' endorsements of a federation's CA and node keys, as the agents make them
and as the other participants' jobs check them (the control plane's check is in
tests/server/test_federation_api.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bastion.agent.federated_job import endorsed_keys, endorsed_link
from bastion.agent.job import JobFailed
from bastion.agent.job_setup import federation_material
from bastion.errors import SignatureError
from bastion.federated import endorse
from bastion.federated.tls import made_link
from bastion.security.keys import Keyring
from tests.conftest import other_keyring

RUN, SITE_RUN = "a" * 32, "b" * 32


@pytest.fixture
def clusters(tmp_path: Path) -> dict[str, Keyring]:
    return {name: other_keyring(tmp_path / "clusters" / name) for name in ("c1", "c2")}


def _pem(keys: Keyring) -> str:
    return keys.primary_signing_key().public_pem.decode()


def _manifest(workdir: Path, federation: dict[str, Any]) -> None:
    workdir.mkdir(exist_ok=True)
    (workdir / "job.json").write_text(json.dumps({"federation": federation}))


def test_the_agent_makes_the_material_and_endorses_it_for_the_run(
    tmp_path: Path, clusters: dict[str, Keyring]
) -> None:
    aggregator = tmp_path / "aggregator"
    endorsement = federation_material(
        {"type": "federated", "host": "127.0.0.1"}, aggregator, RUN, clusters["c1"]
    )
    link = made_link(aggregator / "federation" / "tls")  # what the job's SuperLink serves
    assert link is not None and (link.key.stat().st_mode & 0o777) == 0o600
    certificate = link.ca.read_text()
    endorse.check(
        _pem(clusters["c1"]), run_id=RUN, material=certificate, endorsement=endorsement, who="x"
    )
    for pem, run in ((_pem(clusters["c2"]), RUN), (_pem(clusters["c1"]), SITE_RUN)):
        with pytest.raises(SignatureError, match="not endorsed"):
            endorse.check(pem, run_id=run, material=certificate, endorsement=endorsement, who="x")
    site = tmp_path / "site"
    endorsement = federation_material(
        {"type": "federated-site", "site": "c2"}, site, SITE_RUN, clusters["c2"]
    )
    private, public = site / "keys" / "c2.key", site / "keys" / "c2.pub"
    assert (private.stat().st_mode & 0o777) == 0o600
    endorse.check(
        _pem(clusters["c2"]),
        run_id=SITE_RUN,
        material=public.read_text(),
        endorsement=endorsement,
        who="x",
    )


def test_the_aggregator_admits_only_keys_their_sites_clusters_endorsed(
    tmp_path: Path, clusters: dict[str, Keyring]
) -> None:
    workdir = tmp_path / "aggregator"
    _manifest(
        workdir,
        {"endorsement": "x", "signers": {c: _pem(k) for c, k in clusters.items()}},
    )
    key = "ecdsa-sha2-nistp384 AAAA"
    good = endorse.endorse(clusters["c2"].signer().sign, run_id=SITE_RUN, material=key)
    sites: dict[str, dict[str, Any]] = {
        "c1": {"run": "c" * 32, "public_key": None},  # not posted yet: not admitted yet
        "c2": {"run": SITE_RUN, "public_key": key, "endorsement": good},
    }
    assert endorsed_keys(workdir, sites) == {"c2": key}
    forged = endorse.endorse(clusters["c1"].signer().sign, run_id=SITE_RUN, material=key)
    for endorsement in (forged, None):
        sites["c2"]["endorsement"] = endorsement
        with pytest.raises(JobFailed, match="site c2's node key"):
            endorsed_keys(workdir, sites)


def test_a_site_trusts_only_the_ca_the_aggregators_cluster_endorsed(
    clusters: dict[str, Keyring],
) -> None:
    federation = {
        "endorsement": "x",
        "aggregator": "c1",
        "signers": {"c1": _pem(clusters["c1"])},
    }
    certificate = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    link = {
        "address": "127.0.0.1:9092",
        "certificate": certificate,
        "endorsement": endorse.endorse(
            clusters["c1"].signer().sign, run_id=RUN, material=certificate
        ),
    }
    endorsed_link(federation, RUN, link)
    with pytest.raises(JobFailed, match="aggregator's CA certificate"):
        endorsed_link(federation, SITE_RUN, link)  # endorsed for another run
    forged = {
        **link,
        "endorsement": endorse.endorse(
            clusters["c2"].signer().sign, run_id=RUN, material=certificate
        ),
    }
    with pytest.raises(JobFailed, match="aggregator's CA certificate"):
        endorsed_link(federation, RUN, forged)
