"""The control plane: ``app`` assembles ``routes`` (HTTP only) over ``services`` (business
rules, no FastAPI) over ``db``; ``web`` is the dashboard and reads through the services.

Routes import services and ``bastion.api``; nothing outside the server imports it, except
the CLI's ``server`` and ``up`` verbs that start it.
"""
