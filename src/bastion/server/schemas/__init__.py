"""Request and response models of the API; every request model forbids unknown fields."""
