"""One router per resource; mounted under ``/api/v1`` by :func:`bastion.server.app.create_app`.

Routes translate HTTP: they import ``bastion.api`` and the services, and run no queries.
"""
