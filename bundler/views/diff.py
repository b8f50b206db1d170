"""``bundle diff OLD NEW``: what changed between two bundles of the same cluster.

ztunnels are matched by node; both bundles stream their dumps in node order (``BundleModel.ztunnels``), so only one
dump per bundle is in memory at a time. Findings are compared by ``(analyzer, code, resources)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _objects(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    changed = {}
    for key in sorted(set(old) & set(new)):
        a, b = old[key].comparable(), new[key].comparable()
        if a != b:
            changed[key] = {f: {"old": _jsonable(a.get(f)), "new": _jsonable(b.get(f))}
                            for f in sorted(set(a) | set(b)) if a.get(f) != b.get(f)}
    return {"added": added, "removed": removed, "changed": changed}


def _leaf(cert: Any) -> Any:
    return cert.chain[0] if cert.chain else None


def _certificates(old: list[Any], new: list[Any]) -> dict[str, Any]:
    a = {c.identity: c for c in old}
    b = {c.identity: c for c in new}
    rotated, changed = [], {}
    for identity in sorted(set(a) & set(b)):
        la, lb = _leaf(a[identity]), _leaf(b[identity])
        sa, sb = (la.serial if la else None), (lb.serial if lb else None)
        if sa != sb:
            rotated.append({"identity": identity, "old_serial": str(sa), "new_serial": str(sb),
                            "old_expiration": la.expiration if la else None,
                            "new_expiration": lb.expiration if lb else None})
        elif a[identity].state != b[identity].state:
            changed[identity] = {"state": {"old": a[identity].state, "new": b[identity].state}}
        if a[identity].state != b[identity].state and sa != sb:
            rotated[-1]["old_state"], rotated[-1]["new_state"] = a[identity].state, b[identity].state
    return {"appeared": sorted(set(b) - set(a)), "disappeared": sorted(set(a) - set(b)), "rotated": rotated,
            "changed": changed}


def _empty(section: dict[str, Any]) -> bool:
    return not any(section.values())


def _pairs(old_model: Any, new_model: Any) -> Iterator[tuple[str, Any, Any]]:
    """(node, old view or None, new view or None), merging the two node-ordered streams."""
    a, b = old_model.ztunnels(), new_model.ztunnels()
    va, vb = next(a, None), next(b, None)
    while va is not None or vb is not None:
        if vb is None or (va is not None and va.node < vb.node):
            yield va.node, va, None
            va = next(a, None)
        elif va is None or vb.node < va.node:
            yield vb.node, None, vb
            vb = next(b, None)
        else:
            yield va.node, va, vb
            va, vb = next(a, None), next(b, None)


def diff_ztunnels(old_model: Any, new_model: Any) -> list[dict[str, Any]]:
    out = []
    for node, va, vb in _pairs(old_model, new_model):
        entry: dict[str, Any] = {"node": node, "old_pod": va.pod if va else None, "new_pod": vb.pod if vb else None}
        if va is None or vb is None:
            entry["status"] = "added" if va is None else "removed"
            out.append(entry)
            continue
        sections = {
            "workloads": _objects(va.workloads, vb.workloads),
            "services": _objects(va.services, vb.services),
            "policies": _objects(va.policies, vb.policies),
            "certificates": _certificates(va.certificates, vb.certificates),
        }
        sections = {k: v for k, v in sections.items() if not _empty(v)}
        if sections:
            entry["status"] = "changed"
            entry.update(sections)
            out.append(entry)
    return out


def _finding_key(f: Any) -> tuple[Any, ...]:
    return (f.analyzer, f.code, tuple(sorted(r.sort_key() for r in f.resources)))


def _finding_json(f: Any) -> dict[str, Any]:
    return {"analyzer": f.analyzer, "code": f.code, "severity": f.severity, "title": f.title,
            "message": f.message, "resources": [r.to_dict() for r in f.resources]}


def diff_findings(old_model: Any, new_model: Any, analyzers: Any = None) -> dict[str, list[dict[str, Any]]]:
    from bundler.analysis import run_analyzers

    old = {_finding_key(f): f for f in run_analyzers(old_model, analyzers).findings}
    new = {_finding_key(f): f for f in run_analyzers(new_model, analyzers).findings}
    return {"appeared": [_finding_json(new[k]) for k in sorted(set(new) - set(old))],
            "resolved": [_finding_json(old[k]) for k in sorted(set(old) - set(new))]}


def diff(old_model: Any, new_model: Any, *, findings: bool = True, analyzers: Any = None) -> dict[str, Any]:
    result: dict[str, Any] = {"ztunnels": diff_ztunnels(old_model, new_model)}
    result["findings"] = diff_findings(old_model, new_model, analyzers) if findings else {"appeared": [],
                                                                                         "resolved": []}
    return result


def is_empty(result: dict[str, Any]) -> bool:
    return not result["ztunnels"] and not result["findings"]["appeared"] and not result["findings"]["resolved"]


def render_text(result: dict[str, Any]) -> str:
    if is_empty(result):
        return "no differences"
    lines: list[str] = []
    for zt in result["ztunnels"]:
        pods = zt["old_pod"] if zt["old_pod"] == zt["new_pod"] else f"{zt['old_pod']} -> {zt['new_pod']}"
        lines.append(f"ztunnel {zt['node']} ({pods}): {zt['status']}")
        for kind, noun in (("workloads", "workload"), ("services", "service"), ("policies", "policy")):
            sec = zt.get(kind)
            if not sec:
                continue
            for key in sec["added"]:
                lines.append(f"  + {noun} {key}")
            for key in sec["removed"]:
                lines.append(f"  - {noun} {key}")
            for key, fields in sec["changed"].items():
                lines.append(f"  ~ {noun} {key}")
                for name, change in fields.items():
                    lines.append(f"      {name}: {change['old']!r} -> {change['new']!r}")
        certs = zt.get("certificates")
        if certs:
            for identity in certs["appeared"]:
                lines.append(f"  + certificate {identity}")
            for identity in certs["disappeared"]:
                lines.append(f"  - certificate {identity}")
            for r in certs["rotated"]:
                lines.append(f"  ~ certificate {r['identity']} rotated: serial {r['old_serial']} -> {r['new_serial']}"
                             f" (expires {r['old_expiration']} -> {r['new_expiration']})")
            for identity, change in certs["changed"].items():
                lines.append(f"  ~ certificate {identity}: state {change['state']['old']!r} -> "
                             f"{change['state']['new']!r}")
    for title, items, mark in (("findings appeared", result["findings"]["appeared"], "+"),
                               ("findings resolved", result["findings"]["resolved"], "-")):
        if items:
            lines.append(f"{title}:")
            for f in items:
                res = ", ".join(f"{r['kind']} {r.get('namespace', '') + '/' if r.get('namespace') else ''}{r['name']}"
                                for r in f["resources"][:5])
                lines.append(f"  {mark} [{f['severity']}] {f['analyzer']}/{f['code']}: {f['title']} ({res})")
    return "\n".join(lines)
