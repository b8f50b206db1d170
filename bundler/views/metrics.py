"""``bundle metrics``: ztunnel metric series of a bundle, filtered by label and summed per ztunnel or workload."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bundler.errors import BundleError
from bundler.views import printable

DEFAULT_PREFIX = "istio_tcp_"


def parse_labels(items: Iterable[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BundleError(f"--label {item!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def _selected(sample_name: str, family: Any, names: tuple[str, ...]) -> bool:
    if not names:
        return sample_name.startswith(DEFAULT_PREFIX) and not sample_name.endswith("_created")
    return any(sample_name == n or family.name == n for n in names)


def summarize(model: Any, names: Iterable[str] = (), labels: dict[str, str] | None = None,
              by: str = "ztunnel") -> dict[str, Any]:
    """``{"by": by, "series": {metric sample name: {group: sum}}}``. ``by`` is ``ztunnel`` (the ztunnel pod) or
    ``workload`` (``source_workload_namespace/source_workload -> destination_workload_namespace/destination_workload``).
    Histogram/summary parts (``_bucket``, ``_sum``, ``_count``) are kept as separate names; ``_created`` samples
    are dropped by default."""
    if by not in ("ztunnel", "workload"):
        raise BundleError(f"--by {by}: choose ztunnel or workload")
    wanted = tuple(names)
    labels = labels or {}
    series: dict[str, dict[str, int | float]] = {}
    paths: set[str] = set()
    for ref in model.ztunnel_refs():
        if ref.metrics_path is None:
            continue
        paths.add(ref.metrics_path)
        for family in model.metrics(ref.node):
            for sample in family.samples:
                if not _selected(sample.name, family, wanted):
                    continue
                if any(sample.labels.get(k) != v for k, v in labels.items()):
                    continue
                if by == "ztunnel":
                    group = ref.pod
                else:
                    s = sample.labels
                    src = f"{s.get('source_workload_namespace', '')}/{s.get('source_workload', '')}"
                    dst = f"{s.get('destination_workload_namespace', '')}/{s.get('destination_workload', '')}"
                    group = f"{src} -> {dst}"
                per = series.setdefault(sample.name, {})
                per[group] = per.get(group, 0) + sample.value
    # metrics files that could not be read or parsed: their ztunnels are missing from the sums, not zero
    unreadable = sorted({(p.path, p.message) for p in getattr(model, "problems", ()) if p.path in paths})
    return {"by": by, "series": {name: dict(sorted(groups.items())) for name, groups in sorted(series.items())},
            "unreadable": [{"path": path, "reason": reason} for path, reason in unreadable]}


def render_text(summary: dict[str, Any]) -> str:
    lines = []
    for name, groups in summary["series"].items():
        lines.append(name)
        width = max((len(g) for g in groups), default=0)
        for group, value in groups.items():
            text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
            lines.append(f"  {group.ljust(width)}  {text}")
    if not lines:
        lines.append("no matching series")
    for item in summary.get("unreadable", ()):
        lines.append(f"not counted: {item['path']}: {item['reason']}")
    return "\n".join(map(printable, lines))  # names and labels from the bundle: no escape reaches the terminal
