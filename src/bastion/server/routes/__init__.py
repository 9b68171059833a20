"""One router per resource; mounted under ``/api/v1`` by :func:`bastion.server.app.create_app`."""
