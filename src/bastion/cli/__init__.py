"""Bastion's command line: one module per noun; the only place that prints and exits.

Calls the control plane through the SDK; nothing imports ``bastion.cli``.
"""
