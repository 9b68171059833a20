"""Lineage: dataset versions -> runs -> model versions (-> fine-tuned models), as a graph.

Nodes are ``dataset:NAME@V``, ``run:ID`` and ``model:NAME@V``; edges say how one came
from another: ``derived`` (a dataset version made from another, e.g. pseudonymised),
``registered`` (the run that sealed a dataset version), ``input`` (a dataset version a
run read), ``produced`` (the model version a run registered) and ``initialized`` (the
model version a run fine-tuned from); a deployment (``deployment:NAME``) is ``deployed``
from each model version it has served, and its serve runs are ``served`` from the version
they started with. :func:`lineage` returns the part of the project's graph connected to the
node asked for.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.errors import NotFound
from bastion.server.db.models import (
    CodePackage,
    CodeVersion,
    Dataset,
    DatasetVersion,
    Deployment,
    Model,
    ModelVersion,
    Project,
    Run,
)

__all__ = ["downstream", "lineage"]


def _run_inputs(job: dict[str, Any], key: str) -> list[dict[str, str]]:
    """The edges into a run: the data it read, the code it ran, the model it started from."""
    edges = []
    if job.get("dataset") and job.get("type") != "ingest":
        edges.append({"from": f"dataset:{job['dataset']}", "to": key, "relation": "input"})
    if job.get("type") == "federated":  # every site's version trains the one model
        datasets = job.get("datasets") or {}
        for ref in sorted(set(datasets.values())) if isinstance(datasets, dict) else []:
            edges.append({"from": f"dataset:{ref}", "to": key, "relation": "input"})
    if job.get("code"):
        edges.append({"from": f"code:{job['code']}", "to": key, "relation": "code"})
    if job.get("init_from"):
        edges.append({"from": f"model:{job['init_from']}", "to": key, "relation": "initialized"})
    if job.get("type") == "serve":
        edges.append({"from": f"model:{job['model']}", "to": key, "relation": "served"})
    return edges


def _graph(
    session: Session, project: Project
) -> tuple[dict[str, dict[str, Any]], list[dict[str, str]]]:
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, str]] = []
    for dataset, row in session.execute(
        select(Dataset, DatasetVersion)
        .join(DatasetVersion, DatasetVersion.dataset_id == Dataset.id)
        .where(Dataset.project_id == project.id)
    ).all():
        key = f"dataset:{dataset.name}@{row.version}"
        nodes[key] = {
            "id": key,
            "kind": "dataset",
            "manifest_hash": row.manifest_hash,
            "rows": row.row_count,
            "purpose": row.purpose,
        }
        if row.parent_version is not None:
            edges.append(
                {
                    "from": f"dataset:{dataset.name}@{row.parent_version}",
                    "to": key,
                    "relation": "derived",
                }
            )
        if row.run_id:
            edges.append({"from": f"run:{row.run_id}", "to": key, "relation": "registered"})
    for model, version in session.execute(
        select(Model, ModelVersion)
        .join(ModelVersion, ModelVersion.model_id == Model.id)
        .where(Model.project_id == project.id)
    ).all():
        key = f"model:{model.name}@{version.version}"
        nodes[key] = {
            "id": key,
            "kind": "model",
            "stage": version.stage,
            "manifest_hash": version.manifest_hash,
            "epsilon": version.evidence.get("epsilon"),
        }
        if version.run_id:
            edges.append({"from": f"run:{version.run_id}", "to": key, "relation": "produced"})
    for package, code in session.execute(
        select(CodePackage, CodeVersion)
        .join(CodeVersion, CodeVersion.package_id == CodePackage.id)
        .where(CodePackage.project_id == project.id)
    ).all():
        key = f"code:{package.name}@{code.version}"
        nodes[key] = {
            "id": key,
            "kind": "code",
            "manifest_hash": code.manifest_hash,
            "files": len(code.files),
        }
    for run in session.scalars(select(Run).where(Run.project_id == project.id)):
        found = run.spec.get("job") if isinstance(run.spec, dict) else None
        job: dict[str, Any] = found if isinstance(found, dict) else {}
        key = f"run:{run.id}"
        nodes[key] = {
            "id": key,
            "kind": "run",
            "name": run.name,
            "type": job.get("type"),
            "status": run.status,
            "purpose": job.get("purpose", ""),
        }
        edges += _run_inputs(job, key)
    for deployment in session.scalars(
        select(Deployment).where(Deployment.project_id == project.id)
    ):
        key = f"deployment:{deployment.name}"
        nodes[key] = {
            "id": key,
            "kind": "deployment",
            "model": f"{deployment.model_name}@{deployment.model_version}",
            "stopped": deployment.stopped_at is not None,
        }
        for number in dict.fromkeys([*deployment.history, deployment.model_version]):
            source = f"model:{deployment.model_name}@{number}"
            edges.append({"from": source, "to": key, "relation": "deployed"})
    return nodes, [e for e in edges if e["from"] in nodes and e["to"] in nodes]


def _reachable(links: dict[str, set[str]], start: str) -> set[str]:
    """Every node reachable from ``start`` through ``links`` (``start`` included)."""
    seen, frontier = {start}, [start]
    while frontier:
        for other in links[frontier.pop()] - seen:
            seen.add(other)
            frontier.append(other)
    return seen


def lineage(session: Session, *, project: Project, node: str) -> dict[str, Any]:
    """The connected part of the project's lineage graph around ``node``."""
    nodes, edges = _graph(session, project)
    if node not in nodes:
        raise NotFound(f"{node} is not in project {project.name!r}'s lineage")
    neighbours: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        neighbours[edge["from"]].add(edge["to"])
        neighbours[edge["to"]].add(edge["from"])
    seen = _reachable(neighbours, node)
    return {
        "root": node,
        "nodes": [nodes[key] for key in sorted(seen)],
        "edges": [e for e in edges if e["from"] in seen],
    }


def downstream(session: Session, *, project: Project, roots: list[str]) -> dict[str, list[str]]:
    """For each root, the runs and model versions made from it, directly or not (sorted).

    The project's graph is built once for all the roots.
    """
    nodes, edges = _graph(session, project)
    children: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        children[edge["from"]].add(edge["to"])
    return {
        root: sorted(_reachable(children, root) - {root}) if root in nodes else [] for root in roots
    }
