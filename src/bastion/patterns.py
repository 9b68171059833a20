"""Name and reference patterns shared by the run spec and the API's models.

Kept apart from :mod:`bastion.spec` so the SDK's types (``bastion.api``) import without the
run spec's models: every CLI command that talks to the control plane starts with them.
"""

from __future__ import annotations

__all__ = ["DATASET_REF_PATTERN", "NAME_PATTERN"]

#: A project, cluster, dataset, model, code package or deployment name.
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
#: ``NAME@VERSION`` of a dataset, model or code version.
DATASET_REF_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}@[1-9][0-9]{0,8}$"
