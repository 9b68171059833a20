"""Federated training on Flower: one model trained on several sites' data without moving it.

Flower (``flwr``) pins older web and CLI libraries than the control plane uses, so it lives in
a separate environment (``make federated``: ``.venv-federated``, layered over the main one for
PyTorch, Opacus and Bastion). Only :mod:`bastion.federated.apps` imports Flower, and it runs
in that environment's processes; :mod:`bastion.federated.federation` starts and watches them.
"""
