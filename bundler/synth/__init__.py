"""Synthetic ambient meshes: a scenario YAML becomes one consistent cluster state, rendered in the real
formats (Kubernetes objects, ztunnel config dumps, istiod views, logs, metrics), with injectable faults."""
