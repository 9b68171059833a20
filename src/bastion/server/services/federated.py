"""Federated runs (DESIGN §6c): one run per site plus the aggregator's, and what they tell
each other through the control plane.

A federated run is queued on its aggregator's cluster; with it the control plane queues one
``federated-site`` run on each cluster it names, each reading that cluster's own dataset
version. The participants meet here: the aggregator's job posts the address its SuperLink
listens on and the CA certificate it made; each site's job posts its SuperNode's public key;
the aggregator admits exactly those keys. The control plane holds only this public material,
the runs' statuses and what they report: never a weight, a row or a private key.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.errors import Conflict, InvalidInput, InvalidSpec, NotAuthorized
from bastion.federated import endorse
from bastion.server.caller import Identity
from bastion.server.db.models import (
    Cluster,
    DatasetVersion,
    FederationMember,
    Project,
    Run,
    utcnow,
)
from bastion.server.db.session import UnitOfWork
from bastion.server.services.datasets import check_training, get_version
from bastion.server.services.jobs import create_run
from bastion.server.services.runs import check_reporter, get_run
from bastion.spec import (
    FederatedJob,
    FederatedSiteJob,
    Resources,
    RunSpec,
    parse_dataset_ref,
    site_training,
)

__all__ = [
    "AGGREGATOR",
    "federation_inputs",
    "federation_view",
    "join_federation",
    "submit_federated",
]

#: The aggregator's member name (sites are named by their cluster).
AGGREGATOR = "aggregator"
_ADDRESS = re.compile(r"^[A-Za-z0-9.\-]{1,253}:[0-9]{1,5}$|^\[[0-9a-fA-F:]{2,45}\]:[0-9]{1,5}$")
_CERTIFICATE = re.compile(
    r"^-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]{100,12000}-----END CERTIFICATE-----\n?$"
)
#: A SuperNode's key: ECDSA P-384 in OpenSSH form (what Flower's node authentication takes).
_NODE_KEY = re.compile(r"^ecdsa-sha2-nistp384 [A-Za-z0-9+/]{100,400}={0,2}( [\w@.\-]{0,100})?$")


def submit_federated(unit: UnitOfWork, *, project: Project, spec: RunSpec, user_id: str) -> Run:
    """Queue a federated run and one site run per cluster, after checking each site's
    version as a training run's (it lives on that cluster, the columns exist, its purposes,
    the identifier gate) and that all the versions hold the same columns."""
    job = spec.job
    if not isinstance(job, FederatedJob):  # pragma: no cover - the route sends only these
        raise InvalidInput("not a federated run")
    versions: dict[str, DatasetVersion] = {}
    for cluster in job.clusters:
        as_training = site_training(job, job.datasets[cluster])
        try:
            versions[cluster], _ = check_training(
                unit, project=project, job=as_training, cluster=cluster
            )
        except (InvalidSpec, Conflict, InvalidInput) as exc:
            raise type(exc)(f"site {cluster}: {exc}") from None
    same_columns(job, versions)
    run = create_run(unit, project=project, spec=spec, user_id=user_id, routed=True)
    for cluster in job.clusters:
        site = RunSpec(
            name=f"{spec.name[:60]} (site {cluster})",
            project=spec.project,
            cluster=cluster,
            job=FederatedSiteJob(
                type="federated-site", run=run.id, site=cluster, dataset=job.datasets[cluster]
            ),
            max_retries=spec.max_retries,
            resources=Resources.model_validate(
                {**spec.resources.model_dump(), "workers": 1, "gpus": spec.resources.gpus}
            ),
        )
        queued = create_run(unit, project=project, spec=site, user_id=user_id, routed=True)
        unit.session.add(
            FederationMember(run_id=run.id, member=cluster, payload={"run": queued.id})
        )
    unit.record(
        "federated.create",
        f"run:{run.id}",
        {
            "aggregator": job.aggregator,
            "sites": list(job.clusters),
            "datasets": dict(job.datasets),
            "secure_aggregation": job.secure_aggregation,
            "site_dp": job.privacy is not None,
        },
    )
    return run


def _signers(session: Session, clusters: list[str]) -> dict[str, str]:
    """The signing public keys ``clusters`` published when they joined."""
    rows = session.execute(
        select(Cluster.name, Cluster.signing_public_key).where(Cluster.name.in_(clusters))
    )
    return {name: key for name, key in rows if key}


def federation_inputs(session: Session, *, run: Run, project: Project) -> dict[str, Any]:
    """What a federated run's job is given. The aggregator's: about every site, from the
    control plane's metadata, each version's published schema (no row's value), target and
    row count, and each site cluster's signing key (to check its node key's endorsement). A
    site's: the aggregator's cluster and its signing key (to check the CA's)."""
    job = run.spec.get("job")
    kind = job.get("type") if isinstance(job, dict) else None
    if kind == "federated-site" and isinstance(job, dict):
        federated = get_run(session, project=project, run_id=str(job["run"]))
        spec_job = federated.spec.get("job")
        aggregator = str(spec_job.get("aggregator") if isinstance(spec_job, dict) else "")
        return {
            "federation": {
                "aggregator": aggregator,
                "signers": _signers(session, [aggregator]),
            }
        }
    if kind != "federated" or not isinstance(job, dict):
        return {}
    sites = {}
    for cluster, ref in dict(job["datasets"]).items():
        name, number = parse_dataset_ref(str(ref))
        version = get_version(session, project=project, name=name, version=number)
        sites[str(cluster)] = {
            "dataset": ref,
            "schema": version.schema_,
            "target": version.target,
            "rows": version.row_count,
            "identifier_columns": version.summaries.get("identifier_columns", []),
            "suspect_columns": version.summaries.get("suspect_columns", []),
        }
    return {"federation": {"sites": sites, "signers": _signers(session, list(sites))}}


def _columns(version: DatasetVersion) -> dict[str, str]:
    schema = version.schema_
    if schema.get("kind") == "images":
        return {"<image shape>": str(schema.get("shape"))}
    listed = schema.get("columns")
    if not isinstance(listed, list):
        return {}
    return {str(c.get("name")): str(c.get("type")) for c in listed if isinstance(c, dict)}


def same_columns(job: FederatedJob, versions: dict[str, DatasetVersion]) -> None:
    """Every site's version holds the aggregator's columns with the same types, and no
    other: a mismatch is refused naming the column and the sites."""
    first = job.aggregator
    expected = _columns(versions[first])
    for cluster in job.clusters:
        if cluster == first:
            continue
        found = _columns(versions[cluster])
        for column, kind in expected.items():
            if column not in found:
                raise InvalidSpec(
                    f"datasets: column {column!r} of {job.datasets[first]} (site {first}) is "
                    f"missing from {job.datasets[cluster]} (site {cluster})"
                )
            if found[column] != kind:
                raise InvalidSpec(
                    f"datasets: column {column!r} is {kind} at site {first} but "
                    f"{found[column]} at site {cluster}"
                )
        extra = sorted(set(found) - set(expected))
        if extra:
            raise InvalidSpec(
                f"datasets: column {extra[0]!r} of {job.datasets[cluster]} (site {cluster}) "
                f"is not in {job.datasets[first]} (site {first})"
            )
        targets = {versions[c].target for c in (first, cluster)}
        if job.target is None and len(targets) > 1:
            raise InvalidSpec(
                f"datasets: the versions of sites {first} and {cluster} name different "
                "targets; name one with 'target'"
            )


def _member(
    session: Session, *, project: Project, caller: Identity, run_id: str
) -> tuple[Run, str, Run]:
    """The federated run, the caller's place in it (``aggregator`` or its site) and the
    caller's own run, for the job whose own run is ``run_id``."""
    own = get_run(session, project=project, run_id=run_id)
    check_reporter(caller=caller, run=own)
    if caller.kind != "job":
        raise NotAuthorized("only a federated run's jobs take part in it")
    job = own.spec.get("job")
    kind = job.get("type") if isinstance(job, dict) else None
    if kind == "federated":
        return own, AGGREGATOR, own
    if kind == "federated-site" and isinstance(job, dict):
        federated = get_run(session, project=project, run_id=str(job["run"]))
        return federated, str(job["site"]), own
    raise Conflict(f"run {run_id} is not part of a federated run")


def _check_payload(session: Session, member: str, payload: dict[str, Any], own: Run) -> None:
    if member == AGGREGATOR:
        if set(payload) != {"address", "certificate", "endorsement"}:
            raise InvalidInput(
                "the aggregator posts exactly 'address', 'certificate' and 'endorsement'"
            )
        if not _ADDRESS.match(str(payload["address"])):
            raise InvalidInput("address: HOST:PORT the sites dial")
        if not _CERTIFICATE.match(str(payload["certificate"])):
            raise InvalidInput("certificate: one PEM certificate (the federation's CA)")
        material, what = str(payload["certificate"]), "the aggregator's CA certificate"
    else:
        if set(payload) != {"public_key", "endorsement"}:
            raise InvalidInput("a site posts exactly 'public_key' and 'endorsement'")
        if not _NODE_KEY.match(str(payload["public_key"])):
            raise InvalidInput("public_key: an ECDSA P-384 public key in OpenSSH form")
        material, what = str(payload["public_key"]), f"site {member}'s node key"
    # Made and endorsed by the agent of the cluster the job runs on, with the signing key
    # that cluster published when it joined: nothing else is recorded.
    cluster = session.get(Cluster, own.cluster_id)
    if cluster is None or not cluster.signing_public_key:
        raise NotAuthorized(f"{what}: its cluster published no signing key")
    endorse.check(
        cluster.signing_public_key,
        run_id=own.id,
        material=material,
        endorsement=payload["endorsement"],
        who=f"{what} (cluster {cluster.name})",
    )


def join_federation(
    unit: UnitOfWork,
    *,
    project: Project,
    run_id: str,
    payload: dict[str, Any],
    caller: Identity,
) -> str:
    """Record what a participant tells the others: the aggregator ``address`` and
    ``certificate``; a site its ``public_key``. The aggregator may also report the
    fingerprints of node keys its SuperLink refused (``refused``): each is an audit event,
    nothing is stored. Its member name."""
    federated, member, own = _member(unit.session, project=project, caller=caller, run_id=run_id)
    refused = payload.pop("refused", None) if member == AGGREGATOR else None
    for fingerprint in refused or []:  # a node outside the federation knocked: audited
        unit.record(
            "federated.node_refused",
            f"run:{federated.id}",
            {"key_sha256": str(fingerprint), "by": AGGREGATOR},
        )
    if refused is not None and not payload:
        return member
    _check_payload(unit.session, member, payload, own)
    if federated.status in ("succeeded", "failed", "cancelled"):
        raise Conflict(f"the federated run {federated.id} already ended ({federated.status})")
    row = unit.session.scalars(
        select(FederationMember).where(
            FederationMember.run_id == federated.id, FederationMember.member == member
        )
    ).first()
    if row is None and member == AGGREGATOR:
        unit.session.add(FederationMember(run_id=federated.id, member=member, payload=payload))
    elif row is None or row.payload.get("run") != run_id:
        raise NotAuthorized(f"run {run_id} is not a site of federated run {federated.id}")
    else:  # a new attempt of the same participant: its new key or address replaces the old
        row.payload, row.updated_at = {**row.payload, **payload}, utcnow()
    unit.record(
        "federated.join",
        f"run:{federated.id}",
        {"member": member, "run": run_id, "fields": sorted(payload)},
    )
    return member


def federation_view(
    session: Session, *, project: Project, run_id: str, caller: Identity
) -> dict[str, Any]:
    """What a participant may know: a site, the aggregator's address and CA certificate;
    the aggregator, each site's key and its run's status. Both: the federated run's status."""
    federated, member, _ = _member(session, project=project, caller=caller, run_id=run_id)
    rows = {
        row.member: row.payload
        for row in session.scalars(
            select(FederationMember).where(FederationMember.run_id == federated.id)
        )
    }
    view: dict[str, Any] = {"run": federated.id, "status": federated.status, "member": member}
    if member != AGGREGATOR:
        view["aggregator"] = rows.get(AGGREGATOR)
        return view
    runs = {str(p.get("run")): name for name, p in rows.items() if name != AGGREGATOR}
    statuses = {
        run: status
        for run, status in session.execute(select(Run.id, Run.status).where(Run.id.in_(list(runs))))
    }
    view["sites"] = {
        name: {
            "run": run,
            "status": statuses.get(run),
            "public_key": rows[name].get("public_key"),
            "endorsement": rows[name].get("endorsement"),
        }
        for run, name in runs.items()
    }
    return view
