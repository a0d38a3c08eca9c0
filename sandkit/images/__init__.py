"""Images: the local content-addressed store, archives, layers and registries."""
