"""The API's request and response models, shared by the control plane's routes and the SDK.

One module per resource (``clusters``, ``runs``, ``models``, ``datasets``, ``deployments``,
``governance``, ``identity``, ``projects``, ``audit``); ``common`` holds names, the
request/response bases and the problem-details model. Every request model forbids unknown
fields. Imports pydantic and Bastion's spec models only: never FastAPI, never ``server``.
"""
