"""``bundle serve``: a bundle or a scenario as a read-only Kubernetes API server on loopback."""
