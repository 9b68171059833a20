"""Bastion: train, evaluate and deploy machine-learning models on sensitive data, securely."""

import sys
import types

# httpx imports its own command-line tool when click is installed (click, rich's extras and
# pygments: as much CPU as the rest of a job's or a CLI command's start); Bastion never calls
# it. An empty module in its place, set before any Bastion module imports httpx, makes httpx
# fall back to the stub it uses where click is missing.
sys.modules.setdefault("httpx._main", types.ModuleType("httpx._main"))

from bastion.errors import BastionError  # noqa: E402

__version__ = "0.1.0"

__all__ = ["BastionError", "__version__"]
