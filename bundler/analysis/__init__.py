"""The analyzer framework of ``bundle analyze``: the public plug-in API.

Analyzers (built-in and third-party alike) import from here::

    from bundler.analysis import Analyzer, Context, Evidence, Finding, Metadata, Resource, SEVERITIES

and register in the ``ztunnel_bundle.analyzers`` entry-point group. docs/writing-analyzers.md is the guide;
:mod:`bundler.analysis.engine` runs them, :mod:`bundler.analysis.suppress` reads suppressions and
:mod:`bundler.analysis.output` renders the report.
"""

from __future__ import annotations

from bundler.analysis.api import (
    SEVERITIES,
    Analyzer,
    Context,
    Evidence,
    Finding,
    Metadata,
    Resource,
    artifact_resource,
    severity_rank,
)
from bundler.analysis.engine import ENTRY_POINT_GROUP, Report, load_analyzers, run_analyzers
from bundler.analysis.suppress import Suppression, load_suppressions

__all__ = [
    "ENTRY_POINT_GROUP",
    "SEVERITIES",
    "Analyzer",
    "Context",
    "Evidence",
    "Finding",
    "Metadata",
    "Report",
    "Resource",
    "Suppression",
    "artifact_resource",
    "load_analyzers",
    "load_suppressions",
    "run_analyzers",
    "severity_rank",
]
