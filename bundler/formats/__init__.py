"""Text formats of the ambient data plane: render lines exactly as the components write them, and parse them back.

* :mod:`bundler.formats.ztunnel_log`: ztunnel logs (plain tab format, JSON, legacy <= 1.21 layout), formats.md §5.
* :mod:`bundler.formats.istio_log`: istiod / istio-cni logs (zap console and JSON encoders), formats.md §7.3.
* :mod:`bundler.formats.openmetrics`: ztunnel's ``/stats/prometheus`` exposition, formats.md §1.2 and §6.

The synthetic-mesh generator uses the ``render*`` functions; analyzers use the parsers.
"""

from __future__ import annotations

from bundler.formats import istio_log, openmetrics, ztunnel_log

__all__ = ["istio_log", "openmetrics", "ztunnel_log"]
