"""Rendering a :class:`~bundler.analysis.engine.Report`: the findings JSON document and the text summary.
(HTML is :func:`bundler.report.html.render`, fed by :func:`html_report`.)"""

from __future__ import annotations

import json
from typing import Any

from bundler.analysis.api import SEVERITIES, Evidence, Resource
from bundler.analysis.engine import Report

__all__ = ["html_report", "render_json", "render_text"]

_LABEL = 14


def render_json(report: Report) -> str:
    """The findings document (schemas/findings.schema.json), 2-space indent, keys in a fixed order."""
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"


def html_report(report: Report, extra_views: dict[str, Any] | None = None) -> dict[str, Any]:
    """What bundler.report.html.render takes: the JSON document plus ``views`` (analyzers' views win over
    ``extra_views``, e.g. the ``bundle`` summary the command adds)."""
    document = report.to_dict()
    document["views"] = {**(extra_views or {}), **report.views}
    return document


def _row(label: str, value: str) -> str:
    return f"{label:<{_LABEL}}{value}"


def _versions(cluster: dict[str, Any]) -> str:
    versions = cluster.get("istioVersions") or {}
    parts = [f"{component} {', '.join(values) if values else '?'}" for component, values in versions.items()]
    return "; ".join(parts) or "unknown"


def _evidence(evidence: dict[str, Any]) -> str:
    lines = evidence.get("lines")
    return Evidence(evidence["path"], evidence.get("pointer"), tuple(lines) if lines else None).display()


def _resource(resource: dict[str, Any]) -> str:
    return Resource(resource["kind"], resource["name"], resource.get("namespace"), resource.get("node"),
                    resource.get("ztunnel")).display()


def render_text(report: Report, *, limit: int | None = None) -> str:
    """The summary for a terminal: the bundle, counts by severity, one line per finding and its first
    evidence, then the skipped analyzers and the suppressed findings. ``limit`` caps the finding lines."""
    doc = report.to_dict()
    bundle = doc["bundle"]
    cluster = bundle.get("cluster") or {}
    lines: list[str] = []
    name = bundle.get("name")
    lines.append(_row("bundle", f"{name} ({bundle['root']})" if name and name != bundle["root"] else bundle["root"]))
    lines.append(_row("created", bundle.get("createdAt") or "unknown"))
    cluster_text = cluster.get("serverVersion") or "server version unknown"
    if cluster.get("context"):
        cluster_text += f", context {cluster['context']}"
    if cluster.get("nodeCount") is not None:
        cluster_text += f", {cluster['nodeCount']} nodes"
    lines.append(_row("cluster", cluster_text))
    lines.append(_row("istio", _versions(cluster)))
    artifacts = bundle.get("artifacts") or {}
    total, ok = artifacts.get("total", 0), artifacts.get("ok", 0)
    others = ", ".join(f"{n} {status}" for status, n in (artifacts.get("byStatus") or {}).items()
                       if status != "ok" and n)
    completeness = f"{ok}/{total} artifacts ok" + (f" ({others})" if others else "")
    lines.append(_row("completeness", completeness))
    analyzers = doc["analyzers"]
    ran, skipped, failed = len(analyzers["run"]), len(analyzers["skipped"]), len(analyzers["failed"])
    lines.append(_row("analyzers", f"{ran} run, {skipped} skipped" + (f", {failed} failed to load" if failed else "")))
    summary = doc["summary"]
    counts = ", ".join(f"{summary[s]} {s}" for s in reversed(SEVERITIES))
    lines.append(_row("findings", f"{summary['total']} ({counts})"
                      + (f", {len(doc['suppressed'])} suppressed" if doc["suppressed"] else "")))

    findings = doc["findings"]
    if findings:
        lines.append("")
        width = max(len(f["id"]) for f in findings)
        shown = findings if limit is None else findings[:limit]
        for f in shown:
            n = len(f["resources"])
            if n == 1:
                what = f"1 resource: {_resource(f['resources'][0])}"
            else:
                what = f"{n} resources" + (f"; first: {_resource(f['resources'][0])}" if n else "")
            count = f" x{f['count']}" if f["count"] > 1 and f["count"] != n else ""
            lines.append(f"{f['severity'].upper():<9}{f['id']:<{width}}  {f['title']}{count} ({what})")
            if f["evidence"]:
                more = len(f["evidence"]) - 1 + f.get("evidenceOmitted", 0)
                lines.append(f"{'':<9}evidence: {_evidence(f['evidence'][0])}" + (f" (+{more} more)" if more else ""))
        if limit is not None and len(findings) > limit:
            lines.append(f"... {len(findings) - limit} more findings (use --format json or html)")
    else:
        lines.append("")
        lines.append("no findings")
    if analyzers["skipped"]:
        lines.append("")
        for run in analyzers["skipped"]:
            lines.append(f"skipped  {run['id']}: {run.get('reason', '')}")
    for run in analyzers["failed"]:
        lines.append(f"failed   {run['id']}: {run.get('reason', '')}")
    if doc["suppressed"]:
        lines.append("")
        for item in doc["suppressed"]:
            reason = item["suppression"]["reason"]
            lines.append(f"suppressed {item['id']} ({item['severity']}, x{item['count']}): {reason}")
    return "\n".join(lines) + "\n"
