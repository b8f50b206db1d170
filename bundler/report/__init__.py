"""Reports written by ``bundle analyze``: the findings document rendered as one self-contained HTML file.

The entry point is :func:`bundler.report.html.render` (``render(report: dict) -> str``). ``report`` is the
findings JSON document (``schemas/findings.schema.json``: formatVersion, tool, bundle, analyzedAt, summary,
findings) plus an optional ``report["views"]`` dict that analyzers fill for the report's tables and charts.
Every key of ``views`` is optional, and so is every field inside an entry: a view that is absent leaves its
section out of the report, a view that is present but empty shows "nothing to show". Unknown keys are
ignored. All values are shown as text (escaped); nothing in a view is ever interpreted as HTML.

View shapes (times are RFC 3339 strings, e.g. ``"2026-11-25T12:00:00Z"``)::

    views = {
      # The `bundle inspect -o json` summary (bundler.commands.inspect.summarize), as is. The report uses:
      #   bundle.root / bundle.source, createdAt, cluster.{context, serverVersion, nodeCount,
      #   istioVersions: {component: [version, ...]}}, nodes, window.{start, end, logsSince},
      #   artifacts.{total, byStatus: {status: {count, bytes}}}, collectionErrors: [{path, kind, status, reason}]
      "bundle": {...},

      # One row per ztunnel pod (the per-node table).
      "ztunnels": [{
          "node": str, "pod": str, "version": str,
          "workloads": int, "services": int, "policies": int,
          "certificates": {"available": int, "expiring": int, "expired": int,
                           "unavailable": int, "initializing": int},
          "sync": "ok" | "nack" | "disconnected" | "unknown",
          "errors": int,          # error lines in its log
          "findings": int,        # findings that name this ztunnel
      }],

      # One entry per certificate a ztunnel holds (the expiry timeline). `state` is ztunnel's wording
      # ("Available", "Initializing", "Unavailable: ..."); validFrom/expiration may be null when unknown.
      "certificates": [{"node": str, "ztunnel": str, "identity": str, "state": str,
                        "validFrom": str | None, "expiration": str | None}],

      # Connections per endpoint of a service against the round-robin expectation (the bar charts).
      "loadBalancing": [{"service": str,                 # "namespace/hostname"
                         "endpoints": [{"name": str, "node": str, "connections": int}],
                         "expected": float,              # connections per endpoint if evenly spread
                         "skewed": bool}],

      # Where a ztunnel's view differs from a reference (the side-by-side diff). `fields` lists only the
      # fields that differ; a value is any JSON value, and a missing "ztunnel"/"reference" key means the
      # field is absent on that side.
      "drift": [{"ztunnel": str, "node": str,
                 "kind": "workload" | "service" | "policy",
                 "key": str,                               # uid, "ns/hostname" or "ns/name"
                 "reference": "istiod per-proxy" | "ambientz" | "majority",
                 "fields": [{"field": str, "ztunnel": Any, "reference": Any}]}],

      # Artifacts that are missing or incomplete (the collection gaps table). When absent, the bundle
      # summary's collectionErrors are shown instead.
      "gaps": [{"path": str, "kind": str, "status": str, "reason": str}],
    }

From the document itself the report shows the header (bundle.name/root, createdAt, generator, cluster,
artifacts {total, ok, byStatus}, when there is no ``views.bundle``), the severity counts (``summary``, else
counted), every finding (grouped ones with their ``count``, ``messages``, ``messagesOmitted`` and
``evidenceOmitted``; ``references`` and ``docs`` are links only when they are http(s) URLs), the
``analyzers`` that ran, were skipped or failed, and the ``suppressed`` findings with their suppression.

The collection time (the "now" of the certificate timeline) is ``views.bundle.createdAt``, else
``report.bundle.createdAt``, else ``views.bundle.window.end``, else ``report.analyzedAt``.
"""

from __future__ import annotations

from typing import Any

VIEW_KEYS = ("bundle", "ztunnels", "certificates", "loadBalancing", "drift", "gaps")


def render_html(report: dict[str, Any]) -> str:
    """Same as :func:`bundler.report.html.render` (imported lazily: jinja2 is loaded only when needed)."""
    from bundler.report.html import render

    return render(report)
