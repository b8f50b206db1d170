"""metrics: ztunnel's L4 metrics: present where traffic was logged, and the connections that failed.

* Every ztunnel whose current log shows traffic (access lines) must expose the four stable L4 series
  (``istio_tcp_sent_bytes_total``, ``istio_tcp_received_bytes_total``, ``istio_tcp_connections_opened_total``,
  ``istio_tcp_connections_closed_total``; formats.md section 6); when one is absent, dashboards and alerts built on
  them are blind for that node (warning).
* Failed connections by ``response_flags``: ``istio_tcp_connections_failed_total`` (Istio >= 1.29: ``DENY``,
  ``CONNECT``, ``NETWORK_POLICY``, ``TLS_FAILURE``, ``H2_HANDSHAKE_FAILURE``, ``IDENTITY_ERROR``, ``CERT_REVOKED``),
  or, where that family is absent, ``istio_tcp_connections_opened_total`` with ``response_flags`` other than ``-``
  (warning, with counts per destination workload and reporter).
* Workloads without a waypoint only ever get these L4 metrics (no request metrics): one info finding lists them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from analyzers.logs import access_record, is_waypoint_pod, meta, pod_node, workload_name
from bundler import layout
from bundler.analysis import Analyzer, Context, Evidence, Finding, Metadata, Resource
from bundler.formats import openmetrics

L4_SERIES = ("istio_tcp_sent_bytes", "istio_tcp_received_bytes", "istio_tcp_connections_opened",
             "istio_tcp_connections_closed")
NO_FLAG = ("-", "", "unknown")

_FLAG_MEANING = {
    "DENY": "rejected by an AuthorizationPolicy",
    "CONNECT": "the HBONE CONNECT to the peer failed or was refused",
    "NETWORK_POLICY": "timed out on port 15008 (a NetworkPolicy or firewall)",
    "TLS_FAILURE": "mTLS handshake failed (trust roots, expired certificates)",
    "H2_HANDSHAKE_FAILURE": "HTTP/2 handshake with the peer failed",
    "IDENTITY_ERROR": "no certificate for the local workload",
    "CERT_REVOKED": "peer certificate revoked",
}
_FLAG_REMEDIATION = {
    "DENY": "See the logs analyzer's policy findings: check the ALLOW/DENY AuthorizationPolicies of the destination.",
    "NETWORK_POLICY": "Allow TCP 15008 to the destination pods in NetworkPolicies and firewalls.",
    "TLS_FAILURE": "Check that every ztunnel trusts the same root (certificates analyzer).",
    "IDENTITY_ERROR": "Check the source workload's certificate on its ztunnel and istiod's CA.",
}


class Metrics(Analyzer):
    metadata = Metadata(
        id="metrics",
        title="ztunnel L4 metrics",
        severity="warning",
        description=("Checks that every ztunnel that logged traffic exposes the four istio_tcp_* L4 series, "
                     "reports failed connections by response_flags (istio_tcp_connections_failed_total >= 1.29, "
                     "response_flags on opened before), and lists workloads that only have L4 metrics because "
                     "no waypoint serves them."),
        docs="https://istio.io/latest/docs/ambient/usage/troubleshoot-ztunnel/",
        inputs=(layout.KIND_ZTUNNEL_METRICS,),
    )

    def analyze(self, ctx: Context) -> Iterable[Finding]:
        model = ctx.model
        failed: dict[tuple[str, str, str], dict[str, Any]] = {}
        destinations: set[tuple[str, str]] = set()
        for ref in model.ztunnel_refs():
            if ref.metrics_path is None or model.status(ref.metrics_path) not in ("ok", "truncated"):
                continue
            families = model.metrics(ref.node)
            if not families:
                continue
            names = {fam.name for fam in families}
            missing = [name for name in L4_SERIES if name not in names]
            if missing and _logged_traffic(model, ref):
                yield ctx.finding(
                    "l4-series-missing",
                    f"ztunnel {ref.pod} on node {ref.node} logged connections but its metrics have no "
                    f"{', '.join(n + '_total' for n in missing)}",
                    title="ztunnel logged traffic but lacks L4 metric series",
                    resources=[Resource("Pod", ref.pod, ref.namespace or None, node=ref.node, ztunnel=ref.pod)],
                    evidence=[Evidence(ref.metrics_path), Evidence(ref.log_path)] if ref.log_path
                    else [Evidence(ref.metrics_path)],
                    remediation="Check the ztunnel version and that the metrics endpoint (:15020/stats/prometheus) "
                                "was scraped completely; a ztunnel restarted after the traffic loses its counters.",
                    references=("https://istio.io/latest/docs/ambient/usage/troubleshoot-ztunnel/",),
                )
            has_failed = "istio_tcp_connections_failed" in names
            series = "istio_tcp_connections_failed" if has_failed else "istio_tcp_connections_opened"
            for labels, value in openmetrics.samples(families, series):
                if labels.get("reporter") == "destination":
                    destinations.add((labels.get("destination_workload_namespace", "unknown"),
                                      labels.get("destination_workload", "unknown")))
                flag = labels.get("response_flags", "-")
                if flag in NO_FLAG or not value:
                    continue
                key = (flag, labels.get("destination_workload_namespace", "unknown"),
                       labels.get("destination_workload", "unknown"))
                entry = failed.setdefault(key, {"count": 0, "by": Counter(), "sources": Counter(), "evidence": {}})
                entry["count"] += value
                entry["by"][(labels.get("reporter", "?"), ref.pod, ref.node)] += value
                entry["sources"][f"{labels.get('source_workload_namespace', '?')}/"
                                 f"{labels.get('source_workload', '?')}"] += value
                entry["evidence"].setdefault(ref.metrics_path, _excerpt(series, has_failed, labels, value))
            if not has_failed:
                for labels, _ in openmetrics.samples(families, "istio_tcp_connections_opened"):
                    if labels.get("reporter") == "destination":
                        destinations.add((labels.get("destination_workload_namespace", "unknown"),
                                          labels.get("destination_workload", "unknown")))
        for (flag, ns, workload), entry in sorted(failed.items()):
            yield self._failed(ctx, flag, ns, workload, entry)
        yield from self._l4_only(ctx, destinations)

    def _failed(self, ctx: Context, flag: str, ns: str, workload: str, entry: dict[str, Any]) -> Finding:
        by = "; ".join(f"{int(n)} reported by the {reporter} ztunnel {pod} (node {node})"
                       for (reporter, pod, node), n in sorted(entry["by"].items()))
        sources = ", ".join(f"{s} ({int(n)})" for s, n in entry["sources"].most_common(5))
        meaning = _FLAG_MEANING.get(flag, "see response_flags in formats.md section 6")
        message = (f"{int(entry['count'])} failed connection(s) to {ns}/{workload} with response_flags={flag} "
                   f"({meaning}): {by}. Sources: {sources}")
        pods = _pods_of(ctx.model, ns, workload)
        resources = [Resource("Pod", str(meta(p).get("name")), ns, node=pod_node(p) or None) for p in pods] or [
            Resource("Workload", workload, ns if ns != "unknown" else None)]
        evidence = [Evidence(path, excerpt=excerpt) for path, excerpt in sorted(entry["evidence"].items())]
        return ctx.finding(
            f"connections-failed-{flag.lower().replace('_', '-')}", message,
            title=f"connections failed (response_flags {flag})", severity="warning", resources=resources,
            evidence=evidence,
            remediation=_FLAG_REMEDIATION.get(flag, "Read the matching access-log errors (logs analyzer) on the "
                                                    "reporting ztunnels."),
            references=("https://istio.io/latest/docs/ambient/usage/troubleshoot-ztunnel/",
                        "https://github.com/istio/ztunnel/issues/956"),
        )

    def _l4_only(self, ctx: Context, destinations: set[tuple[str, str]]) -> Iterable[Finding]:
        model = ctx.model
        with_waypoint_services, with_waypoint_workloads, services_of = _waypoints(model)
        waypoint_workloads = {(str(meta(p).get("namespace")), workload_name(p)) for p in model.pods()
                              if is_waypoint_pod(p)}
        l4_only = []
        for ns, workload in sorted(destinations):
            if "unknown" in (ns, workload) or (ns, workload) in waypoint_workloads:
                continue
            if (ns, workload) in with_waypoint_workloads:
                continue
            if services_of.get((ns, workload), set()) & with_waypoint_services:
                continue
            l4_only.append((ns, workload))
        if not l4_only:
            return
        shown = ", ".join(f"{ns}/{w}" for ns, w in l4_only[:20])
        more = f" and {len(l4_only) - 20} more" if len(l4_only) > 20 else ""
        yield ctx.finding(
            "l4-metrics-only",
            f"{len(l4_only)} workload(s) receive traffic without a waypoint, so only ztunnel's L4 metrics "
            f"(istio_tcp_*) exist for them, no request metrics (istio_requests_total): {shown}{more}",
            title="workloads without a waypoint have only L4 metrics", severity="info",
            resources=[Resource("Workload", w, ns) for ns, w in l4_only],
            remediation="Add a waypoint (istio.io/use-waypoint) where HTTP metrics, L7 policy or routing are needed.",
            references=("https://istio.io/latest/docs/ambient/usage/waypoint/",),
        )


def _logged_traffic(model: Any, ref: Any) -> bool:
    """Whether the ztunnel's current log holds an access line (stops at the first one)."""
    if ref.log_path is None:
        return False
    for item in model.log_records(ref.log_path):
        if access_record(item.record):
            return True
    return False


def _waypoints(model: Any) -> tuple[set[str], set[tuple[str, str]], dict[tuple[str, str], set[str]]]:
    """From the first readable ztunnel dump: services with a waypoint ("ns/hostname"), workloads with one
    ((ns, workload name)), and each workload's services."""
    services: set[str] = set()
    workloads: set[tuple[str, str]] = set()
    services_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    views = model.ztunnels()
    try:
        view = next(views, None)
    finally:
        views.close()
    if view is None:
        return services, workloads, services_of
    for key, svc in view.services.items():
        if svc.waypoint:
            services.add(key)
    for wl in view.workloads.values():
        name = wl.workload_name or wl.name
        if wl.waypoint:
            workloads.add((wl.namespace, name))
        services_of[(wl.namespace, name)].update(wl.services)
    return services, workloads, services_of


def _pods_of(model: Any, ns: str, workload: str) -> list[dict[str, Any]]:
    return [p for p in model.pods() if meta(p).get("namespace") == ns and workload_name(p) == workload]


def _excerpt(series: str, has_failed: bool, labels: dict[str, str], value: float) -> str:
    keep = ("reporter", "source_workload", "source_workload_namespace", "destination_workload",
            "destination_workload_namespace", "destination_service", "response_flags")
    text = ",".join(f'{k}="{labels[k]}"' for k in keep if k in labels)
    number = int(value) if float(value).is_integer() else value
    return f"{series}_total{{{text},...}} {number}"
