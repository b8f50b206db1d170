"""load-balancing: connections per endpoint of each service, against ztunnel's round robin (failure-modes.md R29).

ztunnel balances per connection, round robin over a service's healthy endpoints, and is not configurable (a
VirtualService or DestinationRule only applies through a waypoint). For each service with several endpoints this
counts the connections sent to each endpoint, from the access lines (``dst.service`` and ``dst.workload``: the
source ztunnel's outbound line, or the destination's inbound line when the source has no ztunnel) and from the
metrics (``istio_tcp_connections_opened_total{reporter="destination"}`` by ``destination_workload``), and tests the
counts against a uniform split with a chi-square test. A skew beyond chance (p < 0.001 with at least 30
connections) is a warning: few long-lived connections (gRPC, HTTP/2 pools), clients that reuse connections, or
endpoints that joined late explain most of them.

An endpoint that existed for only part of the logs' window is expected to get a proportional share. A service whose
endpoints' ztunnel logs are not all complete is judged from the metrics only.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from analyzers.logs import (
    access_record,
    annotations,
    is_waypoint_pod,
    labels,
    meta,
    pod_node,
    split_addr,
    workload_name,
)
from bundler import layout
from bundler.analysis.dig import dig
from bundler.analysis import Analyzer, Context, Evidence, Finding, Metadata, Resource
from bundler.formats import openmetrics
from bundler.manifest import timestamp as _ts

MIN_CONNECTIONS = 30
P_THRESHOLD = 0.001


class LoadBalancing(Analyzer):
    metadata = Metadata(
        id="load-balancing",
        title="connections unevenly spread over a service's endpoints",
        severity="warning",
        description=("Counts connections per endpoint of each multi-endpoint service from inbound access lines "
                     "and from istio_tcp_connections_opened_total (reporter=destination), and reports a skew beyond "
                     "chance against ztunnel's fixed L4 round robin (chi-square, p < 0.001, >= 30 connections)."),
        docs="https://istio.io/latest/docs/ambient/usage/troubleshoot-ztunnel/",
        inputs=(layout.KIND_ZTUNNEL_LOG, layout.KIND_ZTUNNEL_METRICS),
    )

    def analyze(self, ctx: Context) -> Iterable[Finding]:
        model = ctx.model
        endpoints = _service_endpoints(model)  # hostname -> {pod name: (namespace, node, weight)}
        if not endpoints:
            return
        from_logs, complete, evidence = _log_counts(model, endpoints)
        metrics: tuple[dict[str, Counter], list[str]] | None = None  # read only when a service needs them
        view = []
        for hostname in sorted(endpoints):
            eps = endpoints[hostname]
            if len(eps) < 2:
                continue
            ns = next(iter(eps.values()))[0]
            nodes = {ep[1] for ep in eps.values()}
            counts = from_logs.get(hostname, Counter())
            source = "access logs"
            names = sorted(eps)
            weights = [eps[name][2] for name in names]
            observed = [counts.get(name, 0) for name in names]
            if not (nodes <= complete and sum(observed) >= MIN_CONNECTIONS):
                # fall back to the metrics, by workload (several pods of one workload are one bucket)
                if metrics is None:
                    metrics = _metric_counts(model)
                by_workload = metrics[0].get(hostname)
                if not by_workload:
                    continue
                workloads: dict[str, list[str]] = defaultdict(list)
                for name in names:
                    workloads[eps[name][3]].append(name)
                if len(workloads) < 2:
                    continue
                names = sorted(workloads)
                weights = [sum(eps[p][2] for p in workloads[w]) for w in names]
                observed = [int(by_workload.get(w, 0)) for w in names]
                source = "metrics (istio_tcp_connections_opened_total, reporter=destination)"
            total = sum(observed)
            if total == 0:
                continue
            weight_sum = sum(weights) or 1.0
            expected = [total * w / weight_sum for w in weights]
            statistic = sum((o - e) ** 2 / e for o, e in zip(observed, expected) if e > 0)
            p_value = chi2_sf(statistic, len(observed) - 1)
            skewed = total >= MIN_CONNECTIONS and p_value < P_THRESHOLD
            view.append({
                "service": f"{ns}/{hostname}",
                "endpoints": [{"name": name, "node": eps[name][1] if name in eps else "", "connections": o,
                               "expected": round(e, 1)} for name, o, e in zip(names, observed, expected)],
                "expected": round(total / len(observed), 1),
                "skewed": skewed,
                "source": source,
                "pValue": p_value,
            })
            if not skewed:
                continue
            top = max(range(len(observed)), key=lambda i: observed[i])
            split = ", ".join(f"{name} {o} (expected {e:.0f})" for name, o, e in zip(names, observed, expected))
            unit = "endpoints" if source == "access logs" else "workloads"
            message = (f"service {hostname}: {total} connections over {len(observed)} {unit} are not spread as "
                       f"round robin would (chi-square {statistic:.1f}, {len(observed) - 1} degrees of freedom, "
                       f"p = {p_value:.2g}, from {source}): {split}. {names[top]} took "
                       f"{observed[top] * 100 // total}% of them.")
            ev = [Evidence(path, lines=(line, line), excerpt=text[:600])
                  for path, line, text in evidence.get((hostname, names[top]), [])[:2]]
            if source != "access logs" and metrics is not None:
                ev += [Evidence(path) for path in metrics[1]]
            yield ctx.finding(
                "endpoint-skew", message, resources=[Resource("Service", hostname.split(".")[0], ns)] + [
                    Resource("Pod", name, eps[name][0], node=eps[name][1] or None) for name in sorted(eps)],
                evidence=ev[:6],
                remediation=("ztunnel balances connections, not requests, with a fixed round robin: long-lived "
                             "connections (gRPC, HTTP/2, connection pools) stay on the endpoint they started on. "
                             "Use a waypoint for per-request load balancing, or have clients recycle connections."),
                references=("https://istio.io/latest/docs/ambient/usage/troubleshoot-ztunnel/",
                            "https://github.com/istio/istio/issues/56864",
                            "https://github.com/istio/istio/issues/52906"),
            )
        ctx.view("loadBalancing", view)


def _service_endpoints(model: Any) -> dict[str, dict[str, tuple[str, str, float, str]]]:
    """hostname -> {pod name: (namespace, node, weight, workload)} of ready endpoints, from the EndpointSlices;
    weight is the fraction of the logs' window the pod existed."""
    window_start = _ts(model.manifest.window.logs_since)
    window_end = _ts(model.manifest.created_at)
    out: dict[str, dict[str, tuple[str, str, float, str]]] = {}
    for eps in model.k8s("endpointslices", "discovery.k8s.io"):
        service = labels(eps).get("kubernetes.io/service-name")
        ns = meta(eps).get("namespace")
        if not service or not ns:
            continue
        hostname = f"{service}.{ns}.svc.cluster.local"
        for ep in eps.get("endpoints") or ():
            ref = ep.get("targetRef") or {}
            if ref.get("kind") != "Pod" or dig(ep, "conditions", "ready") is False:
                continue
            pod = model.pod(ref.get("namespace") or ns, ref.get("name", ""))
            if pod is None:
                continue
            weight = 1.0
            created = _ts(meta(pod).get("creationTimestamp"))
            if window_start is not None and window_end is not None and created is not None and created > window_start:
                weight = max(0.0, (window_end - created) / max(window_end - window_start, 1.0))
            if weight <= 0:
                continue
            out.setdefault(hostname, {})[meta(pod).get("name")] = (ns, ep.get("nodeName") or pod_node(pod), weight,
                                                                   workload_name(pod))
    return out


def _log_counts(model: Any, endpoints: dict[str, Any]) -> tuple[dict[str, Counter], set[str], dict]:
    """Connections per (service, destination pod) from the access logs, and the nodes whose ztunnel logs are
    complete (all of them, or none when any ztunnel's log is missing or truncated). The balancing decision is the
    source ztunnel's, so a connection is counted from its outbound line (failed ones included: a connection the
    endpoint refused was still sent there); an inbound line counts only when its source has no ztunnel of its own
    (a waypoint, a sidecar, a pod outside the mesh), so that no connection is counted twice."""
    counts: dict[str, Counter] = defaultdict(Counter)
    examples: dict[tuple[str, str], list[tuple[str, int, str]]] = defaultdict(list)
    complete: set[str] = set()
    refs = model.ztunnel_refs()
    if all(ref.log_path is not None and model.status(ref.log_path) == "ok" and (
            ref.previous_log_path is None or model.status(ref.previous_log_path) == "ok") for ref in refs):
        complete = {ref.node for ref in refs}  # a missing or cut log anywhere loses some sources' connections
    by_ip = model.pods_by_ip()
    captured: dict[str, bool] = {}
    for log in model.logs("ztunnel"):
        for item in model.log_records(log):
            rec = item.record
            if not access_record(rec):
                continue
            service = rec.field("dst.service")
            workload = rec.field("dst.workload")
            if not isinstance(service, str) or service not in endpoints or not isinstance(workload, str):
                continue
            direction = rec.field("direction")
            if direction == "inbound":
                ip = split_addr(str(rec.field("src.addr", "") or ""))[0]
                if ip not in captured:
                    pod = by_ip.get(ip)
                    captured[ip] = (pod is not None and not is_waypoint_pod(pod)
                                    and annotations(pod).get("ambient.istio.io/redirection") == "enabled")
                if captured[ip]:
                    continue
            elif direction != "outbound":
                continue
            counts[service][workload] += 1
            found = examples[(service, workload)]
            if len(found) < 2:
                found.append((item.path, item.line, item.text))
    return counts, complete, examples


def _metric_counts(model: Any) -> tuple[dict[str, Counter], list[str]]:
    """istio_tcp_connections_opened_total{reporter="destination"} summed by (destination_service,
    destination_workload) over every ztunnel."""
    counts: dict[str, Counter] = defaultdict(Counter)
    paths = []
    for ref in model.ztunnel_refs():
        families = model.metrics(ref.node)
        if not families:
            continue
        found = False
        for labels_, value in openmetrics.samples(families, "istio_tcp_connections_opened"):
            if labels_.get("reporter") != "destination":
                continue
            service = labels_.get("destination_service", "unknown")
            counts[service][labels_.get("destination_workload", "unknown")] += value
            found = True
        if found and ref.metrics_path:
            paths.append(ref.metrics_path)
    return counts, paths[:3]



def chi2_sf(statistic: float, df: int) -> float:
    """P(X >= statistic) for X ~ chi-square with ``df`` degrees of freedom: the regularized upper incomplete gamma
    function Q(df/2, statistic/2), by its series (x < a + 1) or its continued fraction (Numerical Recipes 6.2)."""
    if df <= 0:
        return 1.0
    if statistic <= 0:
        return 1.0
    a, x = df / 2.0, statistic / 2.0
    log_prefix = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        n = a
        for _ in range(10000):
            n += 1.0
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, min(1.0, 1.0 - total * math.exp(log_prefix)))
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return max(0.0, min(1.0, math.exp(log_prefix) * h))
