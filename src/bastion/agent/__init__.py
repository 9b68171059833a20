"""The compute plane: the egress-only agent, its executors and the job runner.

Talks to the control plane through the SDK (``bastion.client``) only; imports nothing
from ``bastion.server``.
"""
