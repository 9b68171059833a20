"""Business rules of the control plane: keyword-only, HTTP-free, raising Bastion errors.

One module per resource; they import ``server.db`` and each other without cycles, and never
FastAPI, ``deps``, routes or the dashboard.
"""
