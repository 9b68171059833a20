"""Users' code packages: push (packed and sealed here), list, show, review."""

from __future__ import annotations

import hashlib
from pathlib import Path

from bastion.api.clusters import ClusterOut
from bastion.api.code import CodePackageOut, CodeVersionOut
from bastion.client._transport import Transport
from bastion.errors import Conflict

__all__ = ["CodeMixin"]


class CodeMixin(Transport):
    """Part of :class:`bastion.client.Client`."""

    def _code(self, project: str) -> str:
        return f"/api/v1/projects/{project}/code"

    def push_code(self, project: str, folder: Path, *, name: str, cluster: str) -> CodeVersionOut:
        """Pack ``folder`` (the package's rules are checked here first), seal it to
        ``cluster``'s HPKE public key and push it: the control plane relays bytes it cannot
        read; the cluster's agent checks, seals and registers it (follow its ``run_id``)."""
        from bastion.code.archive import pack  # noqa: PLC0415 - only pushing needs it
        from bastion.security.transfer import seal_for_cluster  # noqa: PLC0415 - Tink

        archive, records = pack(folder)
        target = self._one(ClusterOut, "GET", f"/api/v1/clusters/{cluster}")  # its public key
        if not target.hybrid_public_keyset:
            raise Conflict(f"cluster {cluster!r} has no agent yet: nothing could open the package")
        sealed = seal_for_cluster(
            archive, purpose="code", recipient=cluster, recipient_keyset=target.hybrid_public_keyset
        )
        body = {
            "name": name,
            "cluster": cluster,
            "files": [record.as_json() for record in records],
            "archive_sha256": hashlib.sha256(archive).hexdigest(),
            "sealed": sealed,
        }
        return self._one(CodeVersionOut, "POST", self._code(project), json=body)

    def list_code(self, project: str) -> list[CodePackageOut]:
        return self._many(CodePackageOut, "GET", self._code(project))

    def code_versions(self, project: str, name: str) -> list[CodeVersionOut]:
        return self._many(CodeVersionOut, "GET", f"{self._code(project)}/{name}/versions")

    def code_version(self, project: str, name: str, version: int) -> CodeVersionOut:
        return self._one(CodeVersionOut, "GET", f"{self._code(project)}/{name}/versions/{version}")

    def review_code(
        self, project: str, name: str, version: int, *, verdict: str, comment: str = ""
    ) -> CodeVersionOut:
        """(Reviewer) approve or reject a registered version; never the person who pushed it."""
        return self._one(
            CodeVersionOut,
            "POST",
            f"{self._code(project)}/{name}/versions/{version}/reviews",
            json={"verdict": verdict, "comment": comment},
        )

    def record_code_version(
        self, project: str, name: str, version: int, fields: dict[str, object]
    ) -> CodeVersionOut:
        """(Agent) record the version it unpacked, checked, sealed and signed."""
        return self._one(
            CodeVersionOut,
            "POST",
            f"{self._code(project)}/{name}/versions/{version}/record",
            json=fields,
        )
