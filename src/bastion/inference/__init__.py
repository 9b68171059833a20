"""The inference server (``bastion serve``): a verified model behind scoped keys, rate limits,
strict validation, adversarial and extraction detection, audit and drift monitoring.

It runs in the compute plane as a long-lived job the agent starts for a deployment.

Imports the security primitives and the model code; nothing from ``server`` or ``cli``.
"""
