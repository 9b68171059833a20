"""Bastion: train, evaluate and deploy machine-learning models on sensitive data, securely."""

from bastion.errors import BastionError

__version__ = "0.1.0"

__all__ = ["BastionError", "__version__"]
