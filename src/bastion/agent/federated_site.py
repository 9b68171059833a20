"""A federated run's site (one per cluster, DESIGN §6c), in the federated (Flower) environment.

The agent made the site's SuperNode key pair and endorsed its public half before the job
started (the private half never leaves the sandbox). The job posts the public half, waits
for the aggregator's address and CA (endorsed by the aggregator's cluster), and runs its
SuperNode. The sandbox has no network: the SuperNode dials a listener on 127.0.0.1 that
passes each connection to the relay's link socket, which the agent joins to the aggregator's
address (:mod:`bastion.agent.link`). The rows stay in the sandbox: Flower's ClientApp
processes read them there and answer with updates (masked under SecAgg+) and metrics.
"""

from __future__ import annotations

import time
from pathlib import Path

from bastion.agent.data_jobs import staged_input, staged_schema
from bastion.agent.federated_job import _ENDED, POLL_SECONDS, _federation, endorsed_link
from bastion.agent.job import JobContext, JobFailed
from bastion.agent.link import LocalLink
from bastion.agent.train_job import _validate
from bastion.config import Settings
from bastion.errors import InvalidInput
from bastion.federated.federation import Federation, FederationFailed, SiteData
from bastion.spec import FederatedSiteJob

__all__ = ["run_site"]


def run_site(context: JobContext, job: FederatedSiteJob) -> str:
    workdir = context.workdir
    data, info = staged_input(workdir)
    if data.kind != "table":
        raise InvalidInput("federated runs train on tables; image datasets are not supported yet")
    schema = staged_schema(workdir, info)
    _validate(data, info, schema)
    table = workdir / "site.parquet"  # read by this sandbox's ClientApp processes only
    data.table().to_parquet(table)
    context.log(f"site {job.site}: {data.rows} rows of {job.dataset} stay here")
    # The agent made the key pair and endorsed its public half (federation_material).
    private, public = workdir / "keys" / f"{job.site}.key", workdir / "keys" / f"{job.site}.pub"
    if not private.is_file() or not public.is_file():
        raise JobFailed("the agent made no SuperNode key for this site")
    federation_info = _federation(workdir)
    view = context.client.join_federation(
        context.project,
        context.run_id,
        public_key=public.read_text().strip(),
        endorsement=federation_info["endorsement"],
    )
    while not view.aggregator:
        if view.status in _ENDED:
            raise JobFailed(f"the federated run {job.run} ended ({view.status}) before it began")
        time.sleep(POLL_SECONDS)
        view = context.client.federation(context.project, context.run_id)
    link = view.aggregator
    endorsed_link(federation_info, view.run, link)
    host, _, port = str(link["address"]).rpartition(":")
    ca = workdir / "federation-ca.pem"
    ca.write_text(str(link["certificate"]))
    federation = Federation(home=workdir / "federation", host=host.strip("[]"), port=int(port))
    # No network in this sandbox: the SuperNode dials the relay's link, which the agent joins
    # to the aggregator's address (bastion.agent.link).
    relay = Settings().relay
    if relay is None:
        raise JobFailed("no relay socket (BASTION_RELAY) in the environment")
    with LocalLink(Path(relay).with_name("link.sock")) as way_out, federation.running():
        node = SiteData(job.site, table)
        federation.start_site(node, key=private, ca=ca, via=way_out.address)
        context.log(
            f"site {job.site}: SuperNode dialling {link['address']} (TLS) through the agent"
        )
        restarts = 0
        while True:
            view = context.client.federation(context.project, context.run_id)
            if view.status == "succeeded":
                return f"site {job.site} took part in federated run {job.run}, which succeeded"
            if view.status in _ENDED:
                raise JobFailed(f"the federated run {job.run} {view.status}")
            try:
                federation.site_alive(job.site)
            except FederationFailed as exc:
                # Refused until the aggregator admits this attempt's key, or cut off: dial
                # again while the federated run goes on.
                if restarts >= NODE_RESTARTS:
                    return _after_node(context, job, exc)
                restarts += 1
                time.sleep(2 * POLL_SECONDS)
                federation.start_site(node, key=private, ca=ca, via=way_out.address)
            time.sleep(2 * POLL_SECONDS)


#: How often a site starts its SuperNode again after it stopped (refused before its key
#: was admitted, or cut off) before it gives up.
NODE_RESTARTS = 30
#: How long a site whose node stopped waits for the federated run to say how it ended
#: (the aggregator stops its link once training is done, then seals the model).
GRACE_SECONDS = 120.0


def _after_node(context: JobContext, job: FederatedSiteJob, stopped: Exception) -> str:
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline:
        status = context.client.federation(context.project, context.run_id).status
        if status == "succeeded":
            return f"site {job.site} took part in federated run {job.run}, which succeeded"
        if status in _ENDED:
            raise JobFailed(f"the federated run {job.run} {status}")
        time.sleep(2 * POLL_SECONDS)
    raise JobFailed(f"site {job.site}'s node stopped: {stopped}")
