"""The checks every request passes before and after the model sees it."""
