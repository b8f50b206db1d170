"""``bundle inspect BUNDLE``: what a bundle holds, at a glance (text) or as a stable JSON object (``-o json``)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import click

from bundler.archive import Bundle, open_bundle
from bundler.manifest import STATUS_OK, STATUSES

TEXT_LIMIT_NAMES = 12  # names listed on one line before "+N more"
TEXT_LIMIT_ROWS = 40  # ztunnel and error rows shown before "... N more"


def summarize(bundle: Bundle) -> dict[str, Any]:
    """The facts ``inspect`` shows, as a JSON-ready dict with sorted, deterministic content."""
    manifest = bundle.manifest
    members = bundle.members()
    member_bytes = sum(member.size for member in members)
    paths = sorted({art.path for art in manifest.artifacts} | {member.path for member in members})

    ztunnels: dict[str, set[str]] = defaultdict(set)
    cni: dict[str, set[str]] = defaultdict(set)
    istiod: set[str] = set()
    for path in paths:
        parts = path.split("/")
        if parts[0] == "ztunnel" and len(parts) >= 4:
            ztunnels[parts[1]].add(parts[2])
        elif parts[0] == "cni" and len(parts) >= 4:
            cni[parts[1]].add(parts[2])
        elif parts[0] == "istiod" and len(parts) >= 3 and parts[1] != "proxies":
            istiod.add(parts[1])

    by_status = {status: {"count": 0, "bytes": 0} for status in STATUSES}
    by_kind: dict[str, dict[str, int]] = defaultdict(lambda: {"count": 0, "bytes": 0})
    errors = []
    for art in manifest.artifacts:
        bucket = by_status.setdefault(art.status, {"count": 0, "bytes": 0})
        bucket["count"] += 1
        bucket["bytes"] += art.size
        kind = by_kind[art.kind or "(unknown)"]
        kind["count"] += 1
        kind["bytes"] += art.size
        if art.status != STATUS_OK:
            errors.append({"path": art.path, "kind": art.kind, "status": art.status, "reason": art.reason})

    return {
        "bundle": {
            "source": str(bundle.source),
            "root": bundle.root,
            "type": "archive" if bundle.is_archive else "directory",
            "archiveBytes": bundle.archive_size,
            "members": len(members),
            "memberBytes": member_bytes,
        },
        "formatVersion": manifest.format_version,
        "tool": manifest.tool.to_dict(),
        "generator": manifest.generator,
        "createdAt": manifest.created_at,
        "commandLine": list(manifest.command_line),
        "window": manifest.window.to_dict(),
        "scope": manifest.scope.to_dict(),
        "cluster": manifest.cluster.to_dict(),
        "nodes": sorted(ztunnels),
        "ztunnels": {node: sorted(pods) for node, pods in sorted(ztunnels.items())},
        "cni": {node: sorted(pods) for node, pods in sorted(cni.items())},
        "istiod": sorted(istiod),
        "artifacts": {
            "total": len(manifest.artifacts),
            "byStatus": by_status,
            "byKind": {kind: by_kind[kind] for kind in sorted(by_kind)},
        },
        "collectionErrors": errors,
    }


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _names(items: list[str], limit: int = TEXT_LIMIT_NAMES) -> str:
    if not items:
        return "-"
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown}, ... (+{len(items) - limit} more)"


def render_text(summary: dict[str, Any]) -> str:
    lines: list[str] = []
    width = 16

    def row(label: str, value: str) -> None:
        lines.append(f"{label:<{width - 1}} {value}")

    def cont(value: str) -> None:
        lines.append(f"{'':<{width}}{value}")

    info = summary["bundle"]
    where = Path(info["source"]).name if info["type"] == "archive" else info["source"]
    row("bundle", f"{info['root']} ({info['type']} {where})")
    tool = summary["tool"]
    row("format", f"{summary['formatVersion']}, written by {tool.get('name')} {tool.get('version')} ({summary['generator']})")
    row("created", summary["createdAt"] or "-")
    if summary["commandLine"]:
        row("command", " ".join(summary["commandLine"]))
    window = summary["window"]
    text = f"{window.get('start') or '?'} .. {window.get('end') or '?'}"
    if window.get("logsSince"):
        text += f", logs since {window['logsSince']}"
    row("window", text)
    scope = summary["scope"]
    scope_text = scope.get("mode", "?")
    for key in ("namespaces", "pods", "nodes"):
        if scope.get(key):
            scope_text += f"; {key}: {_names(scope[key])}"
    row("scope", scope_text)
    cluster = summary["cluster"]
    cluster_text = cluster.get("serverVersion") or "server version unknown"
    if cluster.get("context"):
        cluster_text += f", context {cluster['context']}"
    if cluster.get("nodeCount") is not None:
        cluster_text += f", {cluster['nodeCount']} nodes"
    row("cluster", cluster_text)
    versions = cluster.get("istioVersions", {})
    row("istio", "; ".join(f"{component} {', '.join(vs) if vs else '?'}" for component, vs in versions.items()))
    size_text = f"{human_bytes(info['memberBytes'])} in {info['members']} members"
    if info["archiveBytes"] is not None:
        size_text += f"; archive {human_bytes(info['archiveBytes'])}"
        if info["archiveBytes"]:
            size_text += f" ({info['memberBytes'] / info['archiveBytes']:.0f}x)"
    row("size", size_text)

    nodes = summary["nodes"]
    row(f"nodes ({len(nodes)})", _names(nodes))
    ztunnels = summary["ztunnels"]
    node_width = max((len(node) for node in ztunnels), default=0) + 2
    zt_rows = [f"{node:<{node_width}}{', '.join(pods)}" for node, pods in ztunnels.items()]
    label = f"ztunnels ({sum(len(pods) for pods in ztunnels.values())})"
    if not zt_rows:
        row(label, "-")
    for i, text in enumerate(zt_rows[:TEXT_LIMIT_ROWS]):
        if i == 0:
            row(label, text)
        else:
            cont(text)
    if len(zt_rows) > TEXT_LIMIT_ROWS:
        cont(f"... {len(zt_rows) - TEXT_LIMIT_ROWS} more nodes")
    row(f"istiod ({len(summary['istiod'])})", _names(summary["istiod"]))

    artifacts = summary["artifacts"]
    lines.append("")
    counts = ", ".join(f"{v['count']} {status}" for status, v in artifacts["byStatus"].items() if v["count"])
    row(f"artifacts ({artifacts['total']})", counts or "none")
    kinds = artifacts["byKind"]
    if kinds:
        kind_width = max(len("kind"), *(len(kind) for kind in kinds)) + 2
        lines.append(f"  {'kind':<{kind_width}}{'count':>7}{'bytes':>12}")
        for kind, v in kinds.items():
            lines.append(f"  {kind:<{kind_width}}{v['count']:>7}{human_bytes(v['bytes']):>12}")

    errors = summary["collectionErrors"]
    lines.append("")
    if not errors:
        lines.append("collection errors: none")
    else:
        lines.append(f"collection errors ({len(errors)})")
        path_width = min(max(len(e["path"]) for e in errors), 72) + 2
        for e in errors[:TEXT_LIMIT_ROWS]:
            lines.append(f"  {e['status']:<10}{e['path']:<{path_width}}{e['reason'] or ''}".rstrip())
        if len(errors) > TEXT_LIMIT_ROWS:
            lines.append(f"  ... {len(errors) - TEXT_LIMIT_ROWS} more (see -o json)")
    return "\n".join(lines)


@click.command("inspect")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", "output", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="Output format.",
)  # fmt: skip
def command(bundle: Path, output: str) -> None:
    """Summarise BUNDLE (a .tar.zst archive or an extracted directory): cluster, nodes, ztunnels,
    istiod replicas, artifacts by status and kind, sizes and collection errors."""
    with open_bundle(bundle) as opened:
        summary = summarize(opened)
    if output == "json":
        click.echo(json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False))
    else:
        click.echo(render_text(summary))
