"""Python SDK for the control plane (used by the CLI and by users).

    from bastion.client import Client
    with Client("https://bastion.example:8600", token="bst_...") as bastion:
        bastion.create_project("cardiology")

A refusal comes back as the Bastion error the server raised (its problem-details
``type`` names the class: a signature failure is a ``SignatureError`` here too),
carrying the server's message; an answer without a known type is mapped by status
(401 ``NotAuthenticated``, 403 ``NotAuthorized``, 404 ``NotFound``, 409
``Conflict``, 422 ``InvalidInput``, 429 ``RateLimited``, 503 ``ServiceUnavailable``).
"""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from bastion.client_deployments import DeploymentsMixin
from bastion.client_governance import GovernanceMixin
from bastion.config import Settings
from bastion.errors import (
    BastionError,
    ConfigurationError,
    InsecureKeyFileError,
    NotAuthenticated,
    ServiceUnavailable,
)
from bastion.files import atomic_write_bytes
from bastion.http_status import error_from_problem

__all__ = ["Client", "load_credentials", "save_credentials"]


def _error(response: httpx.Response) -> BastionError:
    """The error the server raised, rebuilt from its problem details (RFC 9457)."""
    try:
        body: object = response.json()
    except ValueError:
        body = None
    return error_from_problem(
        response.status_code,
        body,
        retry_after=response.headers.get("retry-after"),
        fallback=response.text[:500] or response.reason_phrase,
    )


class Client(DeploymentsMixin, GovernanceMixin):
    """A thin, typed wrapper over the control plane's REST API."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        verify: bool | str = True,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        # A string names a PEM bundle of a private CA to trust.
        tls = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        self._http = httpx.Client(
            base_url=self.url, headers=headers, verify=tls, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @classmethod
    def from_settings(cls, settings: Settings) -> Client:
        """A client for the control plane saved by ``bastion login``."""
        url, token, verify = load_credentials(settings)
        return cls(url, token=token, verify=verify)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; the decoded JSON body (None when empty), or the error it maps to."""
        response = self.response(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def response(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; the raw response when it succeeded, else the error it maps to."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise ConfigurationError(
                    f"the TLS certificate of {self.url} is not trusted; pass --ca-cert with the "
                    "CA that issued it"
                ) from None
            raise ServiceUnavailable(
                f"cannot reach the control plane at {self.url}: {type(exc).__name__}"
            ) from None
        if response.status_code >= 400:
            raise _error(response)
        return response

    # -- identity --------------------------------------------------------------------------

    def login(self, username: str, password: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", "/api/v1/auth/login", json={"username": username, "password": password}
        )
        self._http.headers["authorization"] = f"Bearer {result['token']}"
        return result

    def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/api/v1/auth/whoami")
        return result

    def list_users(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/api/v1/users")
        return result

    def create_user(
        self,
        username: str,
        *,
        kind: str = "human",
        is_admin: bool = False,
        password: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"username": username, "kind": kind}
        if is_admin:
            body["is_admin"] = True
        if password is not None:
            body["password"] = password
        result: dict[str, Any] = self.request("POST", "/api/v1/users", json=body)
        return result

    def disable_user(self, username: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PATCH", f"/api/v1/users/{username}", json={"disabled": True}
        )
        return result

    def set_password(self, username: str, password: str) -> dict[str, Any]:
        """Set a person's dashboard password (administrators only)."""
        result: dict[str, Any] = self.request(
            "PATCH", f"/api/v1/users/{username}", json={"password": password}
        )
        return result

    def create_token(
        self,
        name: str,
        *,
        scopes: list[str] | None = None,
        expires_in_days: int | None = 90,
        username: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": name,
            "scopes": scopes or ["*"],
            "expires_in_days": expires_in_days,
        }
        if username is not None:
            body["username"] = username
        result: dict[str, Any] = self.request("POST", "/api/v1/tokens", json=body)
        return result

    def list_tokens(self, username: str | None = None) -> list[dict[str, Any]]:
        params = {"username": username} if username else None
        result: list[dict[str, Any]] = self.request("GET", "/api/v1/tokens", params=params)
        return result

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("DELETE", f"/api/v1/tokens/{token_id}")
        return result

    # -- projects --------------------------------------------------------------------------

    def list_projects(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/api/v1/projects")
        return result

    def create_project(self, name: str, *, description: str = "") -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", "/api/v1/projects", json={"name": name, "description": description}
        )
        return result

    def set_member(self, project: str, username: str, role: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PUT", f"/api/v1/projects/{project}/members/{username}", json={"role": role}
        )
        return result

    def list_members(self, project: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"/api/v1/projects/{project}/members")
        return result

    def remove_member(self, project: str, username: str) -> None:
        self.request("DELETE", f"/api/v1/projects/{project}/members/{username}")

    # -- clusters and audit ----------------------------------------------------------------

    def create_cluster(self, name: str, *, description: str = "") -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", "/api/v1/clusters", json={"name": name, "description": description}
        )
        return result

    def list_clusters(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/api/v1/clusters")
        return result

    # -- agent protocol --------------------------------------------------------------------

    def join_cluster(
        self, cluster: str, *, join_token: str, signing_public_key: str, hybrid_public_keyset: str
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST",
            "/api/v1/agents/join",
            json={
                "cluster": cluster,
                "join_token": join_token,
                "signing_public_key": signing_public_key,
                "hybrid_public_keyset": hybrid_public_keyset,
            },
        )
        return result

    def heartbeat(
        self, cluster: str, runs: dict[str, int], *, stopping: bool = False
    ) -> dict[str, Any]:
        """The runs to stop (``stop``) and the model each serve run should serve (``serve``);
        ``stopping`` says the agent is leaving (recorded as its disconnection)."""
        body: dict[str, Any] = {"runs": runs, "stopping": True} if stopping else {"runs": runs}
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/clusters/{cluster}/heartbeat", json=body
        )
        return result

    def lease(self, cluster: str, *, wait: float) -> dict[str, Any] | None:
        """Long-poll for work; None when nothing arrived within ``wait`` seconds."""
        result: dict[str, Any] | None = self.request(
            "POST",
            f"/api/v1/clusters/{cluster}/lease",
            params={"wait": wait},
            timeout=wait + 30,
        )
        return result

    # -- runs ------------------------------------------------------------------------------

    def submit_run(self, spec: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/projects/{spec['project']}/runs", json=spec
        )
        return result

    def list_runs(self, project: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"/api/v1/projects/{project}/runs")
        return result

    def get_run(self, project: str, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/v1/projects/{project}/runs/{run_id}")
        return result

    def run_events(self, project: str, run_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "GET", f"/api/v1/projects/{project}/runs/{run_id}/events"
        )
        return result

    def run_logs(self, project: str, run_id: str, *, after: int = 0) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "GET", f"/api/v1/projects/{project}/runs/{run_id}/logs", params={"after": after}
        )
        return result

    def run_metrics(self, project: str, run_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "GET", f"/api/v1/projects/{project}/runs/{run_id}/metrics"
        )
        return result

    def cancel_run(self, project: str, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/projects/{project}/runs/{run_id}/cancel"
        )
        return result

    def report_event(
        self, project: str, run_id: str, *, stage: str, status: str, message: str = ""
    ) -> None:
        self.request(
            "POST",
            f"/api/v1/projects/{project}/runs/{run_id}/events",
            json={"stage": stage, "status": status, "message": message[:2000]},
        )

    def report_logs(self, project: str, run_id: str, lines: list[str]) -> None:
        self.request(
            "POST", f"/api/v1/projects/{project}/runs/{run_id}/logs", json={"lines": lines}
        )

    def report_metric(
        self, project: str, run_id: str, *, name: str, step: int, value: float
    ) -> None:
        self.request(
            "POST",
            f"/api/v1/projects/{project}/runs/{run_id}/metrics",
            json={"name": name, "step": step, "value": value},
        )

    def report_result(self, project: str, run_id: str, result: dict[str, Any]) -> None:
        self.request(
            "POST", f"/api/v1/projects/{project}/runs/{run_id}/result", json={"result": result}
        )

    # -- datasets --------------------------------------------------------------------------

    def _datasets(self, project: str) -> str:
        return f"/api/v1/projects/{project}/datasets"

    def list_datasets(self, project: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", self._datasets(project))
        return result

    def dataset_versions(self, project: str, name: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "GET", f"{self._datasets(project)}/{name}/versions"
        )
        return result

    def dataset_version(self, project: str, name: str, version: int) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "GET", f"{self._datasets(project)}/{name}/versions/{version}"
        )
        return result

    def register_dataset(
        self,
        project: str,
        name: str,
        *,
        cluster: str,
        source: str,
        target: str | None = None,
        subject_id_column: str | None = None,
        purpose: str = "",
    ) -> dict[str, Any]:
        """Queue the registration; returns the run that performs it on the cluster."""
        body = {
            "cluster": cluster,
            "source": source,
            "target": target,
            "subject_id_column": subject_id_column,
            "purpose": purpose,
        }
        result: dict[str, Any] = self.request(
            "POST", f"{self._datasets(project)}/{name}/register", json=body
        )
        return result

    def dataset_job(
        self, project: str, name: str, version: int, kind: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Queue ``verify``, ``scan`` or ``pseudonymize`` on a version; returns the run."""
        result: dict[str, Any] = self.request(
            "POST", f"{self._datasets(project)}/{name}/versions/{version}/{kind}", json=body or {}
        )
        return result

    def edit_dataset_schema(
        self, project: str, name: str, version: int, schema: dict[str, Any]
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PUT",
            f"{self._datasets(project)}/{name}/versions/{version}/schema",
            json={"schema": schema},
        )
        return result

    def record_dataset_version(
        self, project: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """(Agent) record the version sealed for a run."""
        result: dict[str, Any] = self.request(
            "POST", f"{self._datasets(project)}/{name}/versions", json=body
        )
        return result

    # -- models ----------------------------------------------------------------------------

    def list_models(self, project: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"/api/v1/projects/{project}/models")
        return result

    def model_versions(self, project: str, name: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "GET", f"/api/v1/projects/{project}/models/{name}/versions"
        )
        return result

    def model_version(self, project: str, name: str, version: int) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "GET", f"/api/v1/projects/{project}/models/{name}/versions/{version}"
        )
        return result

    def verify_model(self, project: str, name: str, version: int) -> dict[str, Any]:
        """Queue the check of a sealed model on its cluster; returns the run."""
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/projects/{project}/models/{name}/versions/{version}/verify"
        )
        return result

    def export_model(
        self, project: str, name: str, version: int, *, to_cluster: str
    ) -> dict[str, Any]:
        """Queue the transfer file for ``to_cluster``; returns the run."""
        result: dict[str, Any] = self.request(
            "POST",
            f"/api/v1/projects/{project}/models/{name}/versions/{version}/export",
            json={"to_cluster": to_cluster},
        )
        return result

    def import_model(self, project: str, name: str, *, cluster: str, source: str) -> dict[str, Any]:
        """Queue the import of a transfer file on ``cluster``; returns the run."""
        result: dict[str, Any] = self.request(
            "POST",
            f"/api/v1/projects/{project}/models/{name}/import",
            json={"cluster": cluster, "source": source},
        )
        return result

    def evaluate_model(
        self, project: str, name: str, version: int, evaluate: dict[str, Any]
    ) -> dict[str, Any]:
        """Queue an evaluation (an ``evaluate`` block) of a version; returns the run."""
        result: dict[str, Any] = self.request(
            "POST",
            f"/api/v1/projects/{project}/models/{name}/versions/{version}/evaluate",
            json={"evaluate": evaluate},
        )
        return result

    def model_evaluations(self, project: str, name: str, version: int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "GET", f"/api/v1/projects/{project}/models/{name}/versions/{version}/evaluations"
        )
        return result

    def model_card(self, project: str, name: str, version: int) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "GET", f"/api/v1/projects/{project}/models/{name}/versions/{version}/card"
        )
        return result

    def model_card_html(self, project: str, name: str, version: int) -> str:
        return self.response(
            "GET", f"/api/v1/projects/{project}/models/{name}/versions/{version}/card.html"
        ).text

    def record_model_version(self, project: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """(Agent) record the model version sealed for a training run."""
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/projects/{project}/models/{name}/versions", json=body
        )
        return result


def save_credentials(settings: Settings, *, url: str, token: str, verify: bool | str) -> Path:
    """Store the control plane URL and token in ``BASTION_HOME`` with mode 0600."""
    path = settings.credentials_file
    settings.home_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    payload = {"url": url, "token": token, "verify": verify}
    atomic_write_bytes(path, json.dumps(payload).encode(), mode=0o600)
    return path


def load_credentials(settings: Settings) -> tuple[str, str, bool | str]:
    path = settings.credentials_file
    if not path.is_file():
        raise NotAuthenticated("not logged in; run 'bastion login --url URL --token TOKEN'")
    if os.stat(path).st_mode & 0o077:
        raise InsecureKeyFileError(path, os.stat(path).st_mode & 0o777)
    data = json.loads(path.read_text())
    return str(data["url"]), str(data["token"]), data.get("verify", True)
