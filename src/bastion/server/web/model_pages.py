"""Models: versions, the model card with its scorecard, and promotion decisions.

Promote, approve and reject call the same governance service as the API and the
CLI, so the policy gates and the separation-of-duties rules are the same ones.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bastion.api.governance import CommentIn, PromoteIn
from bastion.evaluate.card import card_plots
from bastion.server.deps import DatabaseDep, Principal
from bastion.server.permissions import Permission
from bastion.server.services import evaluations
from bastion.server.services import governance as governance_service
from bastion.server.services import models as model_service
from bastion.server.web import views
from bastion.server.web.forms import FormText, parse_form
from bastion.server.web.render import WEB_PREFIX, page, svg_image
from bastion.server.web.session import require_page

__all__ = ["router"]

router = APIRouter(prefix=f"{WEB_PREFIX}/p/{{project}}/models", include_in_schema=False)
Version = Annotated[int, Path(ge=1, le=10**9)]

_PLOT_NAMES = {
    "robustness": "Robustness curve",
    "membership": "Membership inference ROC",
    "importance": "Feature importance",
}


@router.get("", response_class=HTMLResponse)
def models(
    project: str,
    request: Request,
    principal: Annotated[Principal, require_page(Permission.MODELS_READ)],
    database: DatabaseDep,
) -> Response:
    with database.read() as session:
        listed = views.models_page(session, project=principal.require_project())
    return page(request, "models.html.j2", project=project, models=listed)


@router.get("/{name}/{version}", response_class=HTMLResponse)
def model_version(
    project: str,
    name: str,
    version: Version,
    request: Request,
    principal: Annotated[Principal, require_page(Permission.MODELS_READ)],
    database: DatabaseDep,
) -> Response:
    """The version's card (robustness, ROC, fairness, importance, epsilon, signatures),
    its scorecard, its approvals and the buttons the viewer's roles allow."""
    with database.read() as session:
        project_row = principal.require_project()
        row = model_service.get_model_version(
            session, project=project_row, name=name, version=version
        )
        card = evaluations.model_card(session, project=project_row, name=name, row=row)
        found = views.model_page(session, row=row)
    plots = {key: svg_image(svg, _PLOT_NAMES[key]) for key, svg in card_plots(card).items()}
    return page(
        request,
        "model.html.j2",
        project=project,
        name=name,
        card=card,
        plots=plots,
        **found,
    )


def _back(project: str, name: str, version: int) -> RedirectResponse:
    return RedirectResponse(f"{WEB_PREFIX}/p/{project}/models/{name}/{version}", status_code=303)


@router.post("/{name}/{version}/promote")
def promote(
    project: str,
    name: str,
    version: Version,
    principal: Annotated[Principal, require_page(Permission.APPROVALS_REQUEST)],
    database: DatabaseDep,
    to: FormText = "production",
    policy: FormText = "",
) -> Response:
    body = parse_form(PromoteIn, {"to": to, "policy": policy or None})
    with database.write(actor=principal.actor) as unit:
        governance_service.promote(
            unit,
            project=principal.require_project(),
            name=name,
            number=version,
            target=body.to,
            policy_name=body.policy,
            user_id=principal.identity.user_id,
        )
    return _back(project, name, version)


@router.post("/{name}/{version}/{decision}")
def decide(
    project: str,
    name: str,
    version: Version,
    decision: Literal["approve", "reject"],
    principal: Annotated[Principal, require_page(Permission.APPROVALS_DECIDE)],
    database: DatabaseDep,
    comment: FormText = "",
) -> Response:
    """Approve or reject the pending promotion (never its requester or the version's creator)."""
    body = parse_form(CommentIn, {"comment": comment})
    with database.write(actor=principal.actor) as unit:
        governance_service.decide(
            unit,
            project=principal.require_project(),
            name=name,
            number=version,
            decision="approved" if decision == "approve" else "rejected",
            comment=body.comment,
            user_id=principal.identity.user_id,
        )
    return _back(project, name, version)
