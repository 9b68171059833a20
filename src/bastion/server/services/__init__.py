"""Business rules of the control plane: keyword-only, HTTP-free, raising Bastion errors."""
