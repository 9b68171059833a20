"""What the SDK's mixins need from :class:`bastion.client.Client`: its two ways to call."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["Calls"]


class Calls:
    """The client's transport, as the per-noun mixins see it."""

    def request(self, method: str, path: str, **kwargs: Any) -> Any:  # pragma: no cover
        """The decoded JSON body of a successful call (implemented by ``Client``)."""
        raise NotImplementedError

    def response(self, method: str, path: str, **kwargs: Any) -> httpx.Response:  # pragma: no cover
        """The raw response of a successful call (implemented by ``Client``)."""
        raise NotImplementedError
