"""ztunnel-bundle: capture and analyze debug bundles of Istio's ambient data plane."""

__version__ = "0.1.0"
