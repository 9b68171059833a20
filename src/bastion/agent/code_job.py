"""The ``register-code`` job as it runs in its sandbox: unpack a pushed package under the rules.

The agent opened the push into ``inputs/code-upload/``. The job unpacks the archive (hostile
input: every rule of :mod:`bastion.code.rules` applies, in a sandbox with no keys and no
network), checks that it holds exactly the files the pusher listed, and leaves the archive
in ``outputs/`` for the agent, which checks it again before sealing it.
"""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING

from bastion.agent.code_staging import ARCHIVE, UPLOAD, declared_files
from bastion.agent.staging import OUTPUTS, REQUEST
from bastion.code.archive import unpack
from bastion.errors import IntegrityError
from bastion.files import atomic_write_bytes, ensure_private_dir
from bastion.spec import RegisterCodeJob

if TYPE_CHECKING:
    from bastion.agent.job import JobContext

__all__ = ["run_register_code"]


def run_register_code(context: JobContext, job: RegisterCodeJob) -> None:
    upload = context.workdir / UPLOAD
    declared = json.loads((upload / "declared.json").read_text())
    body = (upload / ARCHIVE).read_bytes()
    tree = ensure_private_dir(context.workdir / "unpacked")
    try:
        records = unpack(body, tree)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    found = {(r.path, r.sha256, r.size) for r in records}
    listed = declared_files(declared["files"])
    if found != listed:
        differ = sorted({path for path, _, _ in found ^ listed})[:5]
        raise IntegrityError(
            f"the archive does not hold the files its pusher listed ({', '.join(differ)}); "
            "push it again"
        )
    context.log(
        f"code {job.name}@{job.version}: {len(records)} files, "
        f"{sum(r.size for r in records)} bytes, every rule met"
    )
    outputs = ensure_private_dir(context.workdir / OUTPUTS)
    atomic_write_bytes(outputs / ARCHIVE, body)
    request = {"artifact": "code", "name": job.name, "version": job.version}
    atomic_write_bytes(outputs / REQUEST, json.dumps(request).encode())
