"""Errors on dashboard pages: a page saying what went wrong, or the login form."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from bastion.server.web.render import WEB_PREFIX, page
from bastion.server.web.session import clear_session

__all__ = ["web_error"]


def web_error(request: Request, *, status: int, message: str) -> Response:
    """401 sends the browser to log in (then back here); anything else is an error page."""
    if status == 401:
        after = request.url.path if request.method == "GET" else f"{WEB_PREFIX}/"
        response: Response = RedirectResponse(
            f"{WEB_PREFIX}/login?after={quote(after, safe='/')}", status_code=303
        )
        clear_session(response)
        return response
    return page(request, "error.html.j2", status=status, code=status, message=message)
