"""Runs, and what their jobs report: events, logs, metrics, results."""

from __future__ import annotations

from typing import Any

from bastion.api.runs import LogLineOut, MetricOut, RunEventOut, RunOut
from bastion.client._transport import Transport

__all__ = ["RunsMixin"]


class RunsMixin(Transport):
    """Part of :class:`bastion.client.Client`."""

    def _runs(self, project: str) -> str:
        return f"/api/v1/projects/{project}/runs"

    def submit_run(self, spec: dict[str, Any]) -> RunOut:
        """Queue a run (a run spec as JSON); the project is the spec's."""
        return self._one(RunOut, "POST", self._runs(spec["project"]), json=spec)

    def list_runs(self, project: str) -> list[RunOut]:
        return self._many(RunOut, "GET", self._runs(project))

    def get_run(self, project: str, run_id: str) -> RunOut:
        return self._one(RunOut, "GET", f"{self._runs(project)}/{run_id}")

    def run_events(self, project: str, run_id: str) -> list[RunEventOut]:
        return self._many(RunEventOut, "GET", f"{self._runs(project)}/{run_id}/events")

    def run_logs(self, project: str, run_id: str, *, after: int = 0) -> list[LogLineOut]:
        """Log lines with an id above ``after``, oldest first."""
        return self._many(
            LogLineOut, "GET", f"{self._runs(project)}/{run_id}/logs", params={"after": after}
        )

    def run_metrics(self, project: str, run_id: str) -> list[MetricOut]:
        return self._many(MetricOut, "GET", f"{self._runs(project)}/{run_id}/metrics")

    def cancel_run(self, project: str, run_id: str) -> RunOut:
        return self._one(RunOut, "POST", f"{self._runs(project)}/{run_id}/cancel")

    # -- what a job reports (with its job token) -------------------------------------------

    def report_event(
        self, project: str, run_id: str, *, stage: str, status: str, message: str = ""
    ) -> None:
        self.request(
            "POST",
            f"{self._runs(project)}/{run_id}/events",
            json={"stage": stage, "status": status, "message": message[:2000]},
        )

    def report_logs(self, project: str, run_id: str, lines: list[str]) -> None:
        self.request("POST", f"{self._runs(project)}/{run_id}/logs", json={"lines": lines})

    def report_metric(
        self, project: str, run_id: str, *, name: str, step: int, value: float
    ) -> None:
        self.request(
            "POST",
            f"{self._runs(project)}/{run_id}/metrics",
            json={"name": name, "step": step, "value": value},
        )

    def report_result(self, project: str, run_id: str, result: dict[str, Any]) -> None:
        self.request("POST", f"{self._runs(project)}/{run_id}/result", json={"result": result})
