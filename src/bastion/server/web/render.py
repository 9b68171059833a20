"""Rendering dashboard pages: one Jinja environment, every value escaped, a strict CSP."""

from __future__ import annotations

import base64
import datetime as dt
from functools import cache
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import ChoiceLoader, Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from bastion.server.permissions import Permission, allowed
from bastion.templates import significant

__all__ = ["PAGE_CSP", "WEB_PREFIX", "page", "svg_image"]

WEB_PREFIX = "/ui"

#: Scripts and styles only from this origin (never inline); plots as data: images.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _when(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)


@cache
def _environment() -> Environment:
    environment = Environment(
        # The card and report sections are the same templates their HTML files use.
        loader=ChoiceLoader(
            [
                PackageLoader("bastion.server.web", "templates"),
                PackageLoader("bastion.evaluate", "templates"),
                PackageLoader("bastion.governance", "templates"),
            ]
        ),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = _when
    environment.filters["num"] = significant  # numbers to 4 significant digits
    environment.globals["prefix"] = WEB_PREFIX
    return environment


def page(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` for the request's user (its roles decide which buttons show)."""
    principal = getattr(request.state, "principal", None)
    roles = principal.roles if principal is not None else frozenset()

    def can(permission: str) -> bool:
        return principal is not None and allowed(Permission(permission), roles)

    body = (
        _environment()
        .get_template(template)
        .render(
            user=principal.identity.username if principal is not None else None,
            roles=sorted(roles),
            csrf=getattr(request.state, "csrf", ""),
            can=can,
            **context,
        )
    )
    return HTMLResponse(
        body,
        status_code=status,
        headers={
            "Content-Security-Policy": PAGE_CSP,
            "Cache-Control": "no-store",
            # Not no-referrer: under it browsers send "Origin: null" with forms, and the
            # form check needs the real origin. Nothing leaves for another site still.
            "Referrer-Policy": "same-origin",
        },
    )


def svg_image(svg: str, alt: str) -> Markup:
    """An SVG drawing as an ``<img>``: it cannot run script, and the page CSP allows it."""
    data = base64.b64encode(svg.encode()).decode()
    # base64 text needs no escaping; the alt text is escaped by format().
    return Markup('<img class="plot" alt="{}" src="data:image/svg+xml;base64,{}">').format(
        alt, data
    )
