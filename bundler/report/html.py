"""The findings report as one self-contained HTML file: ``render(report) -> str``.

``report`` is the findings JSON document plus the optional ``report["views"]`` described in
:mod:`bundler.report` (the shapes analyzers fill). The page needs nothing but itself: CSS, JavaScript and
SVG charts are inline, and a Content-Security-Policy meta allows only the page's own style and script (by
sha256 hash), so nothing is ever fetched and a ``<script>`` planted in bundle data could not run even if it
escaped. It is escaped, though: the Jinja2 environment autoescapes everything, bundle data is never marked
safe, and data for the script travels in a JSON block (``|tojson``). The output is deterministic (same
report, same bytes).

The findings table is complete in the HTML (readable without JavaScript, with ``<details>`` rows); the
script only adds sorting, filtering and expand/collapse-all.
"""

from __future__ import annotations

import base64
import difflib
import functools
import hashlib
import json
import re
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from bundler.report import svg
from bundler.resources import templates_dir

TEMPLATE = "report.html.j2"
CSS_FILE = "report.css"
JS_FILE = "report.js"

SEVERITIES = ("critical", "error", "warning", "info")  # display order, most severe first
SEVERITY_RANK = {"info": 1, "warning": 2, "error": 3, "critical": 4}
SYNC_STATES = ("ok", "nack", "disconnected", "unknown")
CERT_STATES = ("available", "expiring", "expired", "unavailable", "initializing")

_WEB_URL = re.compile(r"^https?://[^\s\"'<>\\`\x00-\x1f\x7f]+$", re.IGNORECASE)
_ABSENT = object()


# ---------------------------------------------------------------------------------------------- helpers

def _text(value: Any) -> str:
    """Any value as display text (strings as is, other JSON values in JSON)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value:
        return int(value)
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if result == result and abs(result) != float("inf") else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in _list(value) if isinstance(item, dict)]


def is_web_url(value: str) -> bool:
    """True for an absolute http(s) URL with no whitespace, quotes or control characters (linkable)."""
    return bool(_WEB_URL.match(value))


def _value_text(value: Any) -> str:
    """A drift value as text: strings raw (empty as ""), containers as indented JSON, absent as a marker."""
    if value is _ABSENT:
        return "(absent)"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, (dict, list)):
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return json.dumps(value, default=str)


def _side_by_side(left: str, right: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Both values as lines, each marked ``changed`` when the line diff does not pair it with an equal one."""
    a, b = left.split("\n"), right.split("\n")
    if len(a) == 1 and len(b) == 1:
        return [{"text": left, "changed": left != right}], [{"text": right, "changed": left != right}]
    a_lines = [{"text": line, "changed": True} for line in a]
    b_lines = [{"text": line, "changed": True} for line in b]
    for block in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks():
        for offset in range(block.size):
            a_lines[block.a + offset]["changed"] = False
            b_lines[block.b + offset]["changed"] = False
    return a_lines, b_lines


# ------------------------------------------------------------------------------------------- normalise

def _resource(raw: dict[str, Any]) -> dict[str, str]:
    resource = {key: _text(raw.get(key)) for key in ("kind", "name", "namespace", "node", "ztunnel")}
    name = f"{resource['namespace']}/{resource['name']}" if resource["namespace"] else resource["name"]
    resource["display"] = f"{resource['kind']} {name}".strip()
    return resource


def _evidence(raw: dict[str, Any]) -> dict[str, Any]:
    lines = _list(raw.get("lines"))
    where = ""
    if "pointer" in raw and raw.get("pointer") is not None:
        pointer = _text(raw.get("pointer"))
        where = f"JSON pointer {pointer}" if pointer else "the whole document"
    elif len(lines) == 2:
        start, end = _int(lines[0]), _int(lines[1])
        where = f"line {start}" if start == end else f"lines {start}\u2013{end}"
    return {"path": _text(raw.get("path")), "where": where, "excerpt": _text(raw.get("excerpt"))}


def _link(text: str) -> dict[str, Any]:
    return {"text": text, "href": text if is_web_url(text) else None}


def _finding(raw: dict[str, Any], index: int) -> dict[str, Any]:
    severity = _text(raw.get("severity")).lower() or "info"
    resources = [_resource(r) for r in _dicts(raw.get("resources"))]
    message = _text(raw.get("message"))
    messages = [m for m in (_text(m) for m in _list(raw.get("messages"))) if m]
    return {
        "index": index,
        "id": _text(raw.get("id")),
        "code": _text(raw.get("code")),
        "analyzer": _text(raw.get("analyzer")),
        "severity": severity,
        "severity_class": severity if severity in SEVERITY_RANK else "unknown",
        "rank": SEVERITY_RANK.get(severity, 0),
        "title": _text(raw.get("title")) or "(untitled)",
        "message": message,
        # A grouped finding's distinct messages (the first is `message`, shown already).
        "messages": messages if len(messages) > 1 or (messages and messages[0] != message) else [],
        "messages_omitted": _int(raw.get("messagesOmitted")),
        "resources": resources,
        "resource_count": len(resources),
        "count": _int(raw.get("count"), 1) if raw.get("count") is not None else 1,
        "evidence": [_evidence(e) for e in _dicts(raw.get("evidence"))],
        "evidence_omitted": _int(raw.get("evidenceOmitted")),
        "remediation": _text(raw.get("remediation")),
        "references": [_link(ref) for ref in (_text(r) for r in _list(raw.get("references"))) if ref],
        "docs": _link(_text(raw.get("docs"))) if _text(raw.get("docs")) else None,
        "suppression": {key: _text(_dict(raw.get("suppression")).get(key))
                        for key in ("id", "resource", "reason", "expires")},
    }


def _analyzers(raw: dict[str, Any]) -> dict[str, Any]:
    groups = {}
    for group in ("run", "skipped", "failed"):
        groups[group] = [{"id": _text(a.get("id")) or "?", "status": _text(a.get("status")) or group,
                          "title": _text(a.get("title")), "findings": _int(a.get("findings")),
                          "reason": _text(a.get("reason")), "docs": _link(_text(a.get("docs"))) if a.get("docs") else None}
                         for a in _dicts(raw.get(group))]
    rows = groups["failed"] + [a for a in groups["run"] if a["status"] != "ok"] + \
        [a for a in groups["run"] if a["status"] == "ok"] + groups["skipped"]
    return {"rows": rows, "run": len(groups["run"]), "skipped": len(groups["skipped"]), "failed": len(groups["failed"]),
            "crashed": sum(1 for a in groups["run"] if a["status"] == "crashed")}


def _status_count(value: Any) -> int:
    """A byStatus value: an int (the findings document) or {count, bytes} (the inspect summary)."""
    return _int(value.get("count")) if isinstance(value, dict) else _int(value)


def _header(report: dict[str, Any], bundle_view: dict[str, Any] | None, gaps: list[dict[str, Any]] | None,
            now: datetime | None) -> dict[str, Any]:
    doc_bundle = _dict(report.get("bundle"))
    view = bundle_view or {}
    inner = _dict(view.get("bundle"))
    cluster = _dict(view.get("cluster")) or _dict(doc_bundle.get("cluster"))
    root = _text(inner.get("root")) or _text(doc_bundle.get("name")) or _text(doc_bundle.get("root"))
    name = root.rstrip("/").rsplit("/", 1)[-1] if root else ""
    for suffix in (".tar.zst", ".zip"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    versions = []
    for component, found in sorted(_dict(cluster.get("istioVersions")).items()):
        listed = [_text(v) for v in _list(found)] if isinstance(found, list) else [_text(found)]
        versions.append({"component": _text(component), "versions": ", ".join(listed) or "?",
                         "mixed": len(set(listed)) > 1})
    nodes = cluster.get("nodeCount")
    node_count = _int(nodes) if nodes is not None else (len(_list(view.get("nodes"))) if "nodes" in view else None)
    window = _dict(view.get("window"))
    start, end, since = (svg.parse_time(window.get(k)) for k in ("start", "end", "logsSince"))
    artifacts = _dict(view.get("artifacts")) or _dict(doc_bundle.get("artifacts"))
    by_status = _dict(artifacts.get("byStatus"))
    completeness = None
    if artifacts:
        total = _int(artifacts.get("total"), sum(_status_count(v) for v in by_status.values()))
        ok = _status_count(by_status["ok"]) if "ok" in by_status else _int(artifacts.get("ok"))
        others = [{"status": _text(status), "count": _status_count(v)}
                  for status, v in sorted(by_status.items()) if status != "ok" and _status_count(v)]
        completeness = {"ok": ok, "total": total, "others": others,
                        "percent": str(100 * ok // total) if total else "100"}
    tool = _dict(report.get("tool"))
    return {
        "name": name or "(unnamed bundle)",
        "source": _text(inner.get("source")) or _text(doc_bundle.get("root")),
        "generator": _text(view.get("generator")) or _text(doc_bundle.get("generator")),
        "context": _text(cluster.get("context")),
        "server_version": _text(cluster.get("serverVersion")),
        "istio_versions": versions,
        "node_count": node_count,
        "window": {"start": svg.format_time(start, seconds=True), "end": svg.format_time(end, seconds=True),
                   "logs_since": svg.format_time(since, seconds=True),
                   "raw_start": _text(window.get("start")), "raw_end": _text(window.get("end"))} if window else None,
        "collected": svg.format_time(now, seconds=True),
        "completeness": completeness,
        "gap_count": len(gaps) if gaps is not None else None,
        "tool": " ".join(p for p in (_text(tool.get("name")), _text(tool.get("version"))) if p),
        "format_version": _text(report.get("formatVersion")),
        "analyzed_at": svg.format_time(svg.parse_time(report.get("analyzedAt")), seconds=True)
        or _text(report.get("analyzedAt")),
    }


def _collection_time(report: dict[str, Any], bundle_view: dict[str, Any] | None) -> datetime | None:
    view = bundle_view or {}
    for candidate in (view.get("createdAt"), _dict(report.get("bundle")).get("createdAt"),
                      _dict(view.get("window")).get("end"), report.get("analyzedAt")):
        moment = svg.parse_time(candidate)
        if moment is not None:
            return moment
    return None


def _ztunnels(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    versions = Counter(_text(r.get("version")) for r in rows if _text(r.get("version")))
    usual = versions.most_common(1)[0][0] if versions else ""
    result = []
    for raw in rows:
        certs = _dict(raw.get("certificates"))
        sync = _text(raw.get("sync")).lower() or "unknown"
        version = _text(raw.get("version"))
        result.append({
            "node": _text(raw.get("node")),
            "pod": _text(raw.get("pod")),
            "version": version,
            "version_odd": bool(version and usual and version != usual and len(versions) > 1),
            "workloads": _int(raw.get("workloads")),
            "services": _int(raw.get("services")),
            "policies": _int(raw.get("policies")),
            "certificates": [{"state": s, "count": _int(certs.get(s))} for s in CERT_STATES if _int(certs.get(s))],
            "certificates_total": sum(_int(certs.get(s)) for s in CERT_STATES),
            "sync": sync,
            "sync_class": sync if sync in SYNC_STATES else "unknown",
            "errors": _int(raw.get("errors")),
            "findings": _int(raw.get("findings")),
        })
    result.sort(key=lambda r: (r["node"], r["pod"]))
    return result


def _certificates(rows: list[dict[str, Any]], now: datetime | None) -> list[dict[str, Any]]:
    result = []
    for raw in rows:
        cert = {key: _text(raw.get(key)) for key in ("node", "ztunnel", "identity", "state", "validFrom", "expiration")}
        cert["validFromTime"] = svg.parse_time(raw.get("validFrom"))
        cert["expirationTime"] = svg.parse_time(raw.get("expiration"))
        cert["status"] = svg.certificate_state(cert, now)
        cert["valid_from_text"] = svg.format_time(cert["validFromTime"]) or cert["validFrom"] or "?"
        cert["expiration_text"] = svg.format_time(cert["expirationTime"]) or cert["expiration"] or "?"
        cert["relative"] = svg.relative(cert["expirationTime"], now)
        cert["tooltip"] = (f"{cert['identity']}\nztunnel {cert['ztunnel'] or '?'} on node {cert['node'] or '?'}\n"
                           f"state {cert['state'] or '?'}\nvalid from {cert['valid_from_text']}\n"
                           f"expires {cert['expiration_text']}" + (f" ({cert['relative']})" if cert["relative"] else ""))
        result.append(cert)
    # Most urgent first: by expiration (undated last), then by name.
    result.sort(key=lambda c: (c["expirationTime"] is None,
                               c["expirationTime"].timestamp() if c["expirationTime"] else 0.0,
                               c["identity"], c["node"], c["ztunnel"]))
    return result


def _load_balancing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = []
    for raw in rows:
        endpoints = [{"name": _text(e.get("name")) or "?", "node": _text(e.get("node")),
                      "connections": max(_int(e.get("connections")), 0)} for e in _dicts(raw.get("endpoints"))]
        service = {"service": _text(raw.get("service")) or "?", "endpoints": endpoints,
                   "expected": _float(raw.get("expected")), "skewed": bool(raw.get("skewed")),
                   "total": sum(e["connections"] for e in endpoints)}
        service["chart"] = svg.load_balancing_chart(service)
        result.append(service)
    result.sort(key=lambda s: (not s["skewed"], s["service"]))
    return result


def _drift(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = []
    for raw in rows:
        fields = []
        for field in _dicts(raw.get("fields")):
            left = _value_text(field.get("ztunnel", _ABSENT))
            right = _value_text(field.get("reference", _ABSENT))
            left_lines, right_lines = _side_by_side(left, right)
            fields.append({"field": _text(field.get("field")) or "?", "left": left_lines, "right": right_lines,
                           "left_absent": "ztunnel" not in field, "right_absent": "reference" not in field})
        result.append({"ztunnel": _text(raw.get("ztunnel")), "node": _text(raw.get("node")),
                       "kind": _text(raw.get("kind")), "key": _text(raw.get("key")),
                       "reference": _text(raw.get("reference")) or "reference", "fields": fields})
    result.sort(key=lambda d: (d["ztunnel"], d["kind"], d["key"]))
    return result


def _gaps(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{key: _text(raw.get(key)) for key in ("path", "kind", "status", "reason")} for raw in rows]


def build_context(report: dict[str, Any]) -> dict[str, Any]:
    """Everything the template shows, normalised (defaults filled in, values as text); nothing marked safe."""
    report = report if isinstance(report, dict) else {}
    views = _dict(report.get("views"))
    bundle_view = _dict(views.get("bundle")) if "bundle" in views else None
    now = _collection_time(report, bundle_view)

    findings = [_finding(f, i) for i, f in enumerate(_dicts(report.get("findings")))]
    # Most severe first; within a severity, the analyzers' order.
    findings.sort(key=lambda f: (-f["rank"], f["index"]))

    suppressed = [_finding(f, i) for i, f in enumerate(_dicts(report.get("suppressed")))]
    suppressed.sort(key=lambda f: (-f["rank"], f["index"]))

    computed = Counter(f["severity"] for f in findings)
    summary = _dict(report.get("summary"))
    counts = [{"severity": s, "count": _int(summary.get(s), computed[s]) if s in summary else computed[s]}
              for s in SEVERITIES]
    other = sum(n for s, n in computed.items() if s not in SEVERITY_RANK)
    total = _int(summary.get("total"), len(findings)) if "total" in summary else len(findings)

    if "gaps" in views:
        gaps: list[dict[str, str]] | None = _gaps(_dicts(views.get("gaps")))
    elif bundle_view is not None and "collectionErrors" in bundle_view:
        gaps = _gaps(_dicts(bundle_view.get("collectionErrors")))
    else:
        gaps = None

    certificates = None
    timeline = None
    if "certificates" in views:
        certificates = _certificates(_dicts(views.get("certificates")), now)
        if certificates:
            timeline = svg.certificate_timeline(certificates, now)
    cert_counts = Counter(c["status"] for c in certificates or [])

    return {
        "header": _header(report, bundle_view, gaps, now),
        "counts": counts,
        "other_count": other,
        "total": total,
        "findings": findings,
        "ztunnels": _ztunnels(_dicts(views.get("ztunnels"))) if "ztunnels" in views else None,
        "certificates": certificates,
        "cert_counts": cert_counts,
        "timeline": timeline,
        "load_balancing": _load_balancing(_dicts(views.get("loadBalancing"))) if "loadBalancing" in views else None,
        "drift": _drift(_dicts(views.get("drift"))) if "drift" in views else None,
        "gaps": gaps,
        "analyzers": _analyzers(_dict(report.get("analyzers"))) if isinstance(report.get("analyzers"), dict) else None,
        "suppressed": suppressed if "suppressed" in report else None,
        "script_data": {"severities": list(SEVERITIES), "total": len(findings)},
    }


# ----------------------------------------------------------------------------------------------- render

def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


@functools.lru_cache(maxsize=4)
def _environment(folder: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = lambda n: f"{n:,}" if isinstance(n, int) else n
    return env


@functools.lru_cache(maxsize=4)
def _assets(folder: str) -> dict[str, Any]:
    """The page's own CSS and JavaScript (static files of ours, not bundle data) and the CSP allowing them."""
    css = (Path(folder) / CSS_FILE).read_text(encoding="utf-8")
    js = (Path(folder) / JS_FILE).read_text(encoding="utf-8")
    for name, text in ((CSS_FILE, css), (JS_FILE, js)):
        if "</" in text:
            raise ValueError(f"{name} must not contain '</' (it is inlined)")
    csp = "; ".join([
        "default-src 'none'",
        f"script-src {_csp_hash(js)}",
        f"style-src {_csp_hash(css)}",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
    ])
    return {"css": Markup(css), "js": Markup(js), "csp": csp}


def render(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML document (a str; write it as UTF-8)."""
    folder = str(templates_dir())
    context = build_context(report)
    context["assets"] = _assets(folder)
    return _environment(folder).get_template(TEMPLATE).render(context)
