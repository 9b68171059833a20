"""Projects and who holds which role in them."""

from __future__ import annotations

from bastion.api.projects import MembershipOut, ProjectOut
from bastion.client._transport import Transport

__all__ = ["ProjectsMixin"]


class ProjectsMixin(Transport):
    """Part of :class:`bastion.client.Client`."""

    def list_projects(self) -> list[ProjectOut]:
        return self._many(ProjectOut, "GET", "/api/v1/projects")

    def create_project(self, name: str, *, description: str = "") -> ProjectOut:
        return self._one(
            ProjectOut, "POST", "/api/v1/projects", json={"name": name, "description": description}
        )

    def set_member(self, project: str, username: str, role: str) -> MembershipOut:
        return self._one(
            MembershipOut,
            "PUT",
            f"/api/v1/projects/{project}/members/{username}",
            json={"role": role},
        )

    def list_members(self, project: str) -> list[MembershipOut]:
        return self._many(MembershipOut, "GET", f"/api/v1/projects/{project}/members")

    def remove_member(self, project: str, username: str) -> None:
        self.request("DELETE", f"/api/v1/projects/{project}/members/{username}")
