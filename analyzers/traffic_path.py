"""traffic-path: HBONE connections that left the source node's ztunnel but never reached the destination's.

Each HBONE connection leaves an ``outbound`` access line on the source node's ztunnel and an ``inbound`` one on the
destination node's (formats.md 0.5). An outbound line (``dst.addr`` on port 15008) without its inbound twin means
the connection never arrived: a NetworkPolicy or firewall on 15008, a destination that is not captured, or a
redirection problem (failure-modes.md R01, R10). Lines are paired by ``src.addr`` + ``dst.hbone_addr``, and when the
source port differs (pooled HBONE connections) by source IP + ``dst.hbone_addr`` within a few seconds.

"No inbound" is only claimed where the destination's side was seen: the destination pod is known, its node's
ztunnel log is in the bundle and not truncated, and the connection ended inside that log's time span (minus a
margin for logs collected at different moments). Otherwise the connection is "unknown" and reported as such.
Destinations that terminate HBONE themselves (waypoints, east-west gateways, sidecars) are skipped.

It also lists enrolled (ambient) pods whose traffic shows in no ztunnel log (info).
"""

from __future__ import annotations

import bisect
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from analyzers.logs import (
    access_record,
    annotations,
    is_waypoint_pod,
    iso,
    labels,
    meta,
    pod_node,
    split_addr,
    workload_name,
)
from bundler import layout
from bundler.analysis import Analyzer, Context, Evidence, Finding, Metadata, Resource
from bundler.analysis.dig import dig_dict, dig_list
from bundler.manifest import timestamp as _ts

MATCH_WINDOW = 3.0  # seconds between an outbound line and its inbound twin when only the source IP matches
EDGE_MARGIN = 10.0  # seconds at the edges of a log's span where a missing twin may be a collection-time artefact
MIN_MISSING = 3  # fewer missing connections in a group are reported only when none of the group arrived
MIN_FRACTION = 0.05
EXAMPLES = 3


@dataclass
class _Group:
    source: str  # namespace/workload
    service: str
    destination: str  # namespace/workload
    dst_node: str
    total: int = 0
    missing: int = 0
    unknown: int = 0
    unknown_reasons: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    first: float | None = None
    last: float | None = None
    sources: set[tuple[str, str, str]] = field(default_factory=set)  # (namespace, name, node)
    destinations: set[tuple[str, str, str]] = field(default_factory=set)
    examples: list[tuple[str, int, str | None]] = field(default_factory=list)


class TrafficPath(Analyzer):
    metadata = Metadata(
        id="traffic-path",
        title="HBONE connections without a matching inbound at the destination",
        severity="warning",
        description=("Pairs the outbound access lines of each source ztunnel with the inbound lines of the "
                     "destination node's ztunnel (src.addr + dst.hbone_addr) and reports connections that never "
                     "arrived, aggregated by source workload, destination service/workload and destination node; "
                     "says 'unknown' where the destination's log is missing, truncated or does not cover the time; "
                     "lists enrolled pods whose traffic appears in no ztunnel log."),
        docs="https://istio.io/latest/docs/ambient/architecture/traffic-redirection/",
        inputs=(layout.KIND_ZTUNNEL_LOG,),
    )

    def analyze(self, ctx: Context) -> Iterable[Finding]:
        model = ctx.model
        by_ip = model.pods_by_ip()
        exact: set[tuple[str, str]] = set()  # inbound (src.addr, dst.hbone_addr)
        fuzzy: dict[tuple[str, str], list[float]] = defaultdict(list)  # inbound (src ip, dst.hbone_addr) -> times
        # (time, src.addr, dst.hbone_addr, HBONE peer IP, path, line, dst.service, error, line text if it has an error)
        outbound: list[tuple[float, str, str, str, str, int, str, str, str | None]] = []
        seen_ips: set[str] = set()
        spans: dict[str, list[tuple[float, float]]] = defaultdict(list)  # node -> time spans its ztunnel logs cover
        for log in model.logs("ztunnel"):
            first = last = None
            for ref in model.log_records(log):
                rec = ref.record
                if rec is None or not hasattr(rec, "fields"):
                    continue
                t = rec.time.timestamp()
                first = t if first is None else min(first, t)
                last = t if last is None else max(last, t)
                if not access_record(rec):
                    continue
                src = str(rec.field("src.addr", "") or "")
                dst = str(rec.field("dst.addr", "") or "")
                hbone = str(rec.field("dst.hbone_addr", "") or "")
                seen_ips.add(split_addr(src)[0])
                seen_ips.add(split_addr(dst)[0])
                if hbone:
                    seen_ips.add(split_addr(hbone)[0])
                direction = rec.field("direction")
                if direction == "inbound" and hbone:
                    exact.add((src, hbone))
                    fuzzy[(split_addr(src)[0], hbone)].append(t)
                elif direction == "outbound" and hbone and split_addr(dst)[1] == 15008:
                    error = rec.field("error")
                    error = sys.intern(str(error)) if error else ""
                    service = sys.intern(str(rec.field("dst.service", "") or ""))
                    outbound.append((t, src, hbone, sys.intern(split_addr(dst)[0]), log.path, ref.line, service,
                                     error, ref.text if error else None))
            span = _coverage(model, log, first, last)
            if span is not None:
                spans[log.node].append(span)
        for times in fuzzy.values():
            times.sort()

        ztunnel_of = {ref.node: ref for ref in model.ztunnel_refs()}
        groups: dict[tuple[str, str, str, str], _Group] = {}
        for t, src, hbone, dst_ip, path, line, service, error, text in outbound:
            dst_pod = by_ip.get(dst_ip)  # the HBONE peer (dst.addr): the destination pod, or a waypoint
            if dst_pod is not None and is_waypoint_pod(dst_pod):
                continue
            src_pod = by_ip.get(split_addr(src)[0])
            service = service or "unknown"
            dst_node = pod_node(dst_pod) if dst_pod is not None else ""
            key = (_workload(src_pod, src), service, _workload(dst_pod, dst_ip), dst_node)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(key[0], service, key[2], dst_node)
            group.total += 1
            if (src, hbone) in exact or _near(fuzzy.get((split_addr(src)[0], hbone)), t):
                continue
            reason = _unknown_reason(model, dst_pod, dst_node, ztunnel_of, spans, t)
            if reason:
                group.unknown += 1
                group.unknown_reasons[reason] += 1
                continue
            group.missing += 1
            group.first = t if group.first is None else min(group.first, t)
            group.last = t if group.last is None else max(group.last, t)
            group.errors[error or "no error on the outbound side"] += 1
            for pod, where in ((src_pod, group.sources), (dst_pod, group.destinations)):
                if pod is not None:
                    where.add((str(meta(pod).get("namespace", "")), str(meta(pod).get("name", "")), pod_node(pod)))
            if len(group.examples) < EXAMPLES:
                group.examples.append((path, line, text))
        outbound.clear()
        exact.clear()
        fuzzy.clear()

        unknown_by_node: dict[str, tuple[int, Counter]] = {}
        for key in sorted(groups):
            group = groups[key]
            if group.missing and (group.missing >= MIN_MISSING or group.missing == group.total) \
                    and group.missing / group.total >= MIN_FRACTION:
                yield self._missing(ctx, group, ztunnel_of)
            if group.unknown:
                count, reasons = unknown_by_node.get(group.dst_node, (0, Counter()))
                reasons.update(group.unknown_reasons)
                unknown_by_node[group.dst_node] = (count + group.unknown, reasons)
        for node in sorted(unknown_by_node):
            count, reasons = unknown_by_node[node]
            why = "; ".join(f"{r} ({n})" for r, n in reasons.most_common())
            yield ctx.finding(
                "inbound-unknown",
                f"{count} outbound HBONE connection(s) to node {node or 'unknown'} could not be checked for a "
                f"matching inbound line: {why}",
                title="destination side of HBONE connections not in the bundle", severity="info",
                resources=[Resource("Node", node)] if node else [Resource("Node", "unknown")],
                remediation="Collect the destination node's ztunnel logs (a larger size budget or a shorter "
                            "--since) to check these connections.",
            )
        yield from self._silent_pods(ctx, seen_ips, ztunnel_of)

    def _missing(self, ctx: Context, group: _Group, ztunnel_of: dict[str, Any]) -> Finding:
        zt = ztunnel_of.get(group.dst_node)
        dst_zt = zt.pod if zt is not None else "unknown"
        errors = "; ".join(f"{e} ({n})" for e, n in group.errors.most_common(3))
        span = ""
        if group.first is not None and group.last is not None:
            span = f" between {_iso(group.first)} and {_iso(group.last)}"
        message = (f"{group.missing} of {group.total} HBONE connection(s) from {group.source} to {group.destination} "
                   f"(service {group.service}) on node {group.dst_node} were logged outbound by the source ztunnel "
                   f"but never inbound by ztunnel {dst_zt}{span}: {_explain(group.errors)}. Outbound errors: {errors}")
        resources = [Resource("Pod", name, ns, node=node or None, ztunnel=dst_zt if zt is not None else None)
                     for ns, name, node in sorted(group.destinations)]
        resources += [Resource("Pod", name, ns, node=node or None) for ns, name, node in sorted(group.sources)]
        evidence = [Evidence(path, lines=(line, line), excerpt=text[:600] if text else None)
                    for path, line, text in group.examples]
        severity = "error" if group.missing * 2 >= group.total else "warning"
        return ctx.finding(
            "no-inbound", message, title="HBONE connections never reached the destination's ztunnel",
            severity=severity, resources=resources, evidence=evidence,
            remediation=("Check NetworkPolicies, cloud security groups and CNI policies between the two nodes for "
                         "TCP 15008, and that the destination pod is captured (ambient.istio.io/redirection: "
                         "enabled, present in its ztunnel's workloadState)."),
            references=("https://github.com/istio/ztunnel/issues/1229",
                        "https://istio.io/latest/docs/ambient/usage/networkpolicy/",
                        "https://istio.io/latest/docs/ambient/architecture/traffic-redirection/"),
        )

    def _silent_pods(self, ctx: Context, seen_ips: set[str], ztunnel_of: dict[str, Any]) -> Iterable[Finding]:
        model = ctx.model
        nodes_with_logs = {node for node, ref in ztunnel_of.items()
                           if ref.log_path and model.status(ref.log_path) == "ok"}
        silent = []
        for pod in model.pods():
            status = pod.get("status") or {}
            if annotations(pod).get("ambient.istio.io/redirection") != "enabled" or status.get("phase") != "Running":
                continue
            if is_waypoint_pod(pod) or labels(pod).get("istio.io/dataplane-mode") == "none":
                continue
            ips = {status.get("podIP")} | {e.get("ip") for e in status.get("podIPs") or () if isinstance(e, dict)}
            ips.discard(None)
            if ips & seen_ips or pod_node(pod) not in nodes_with_logs:
                continue
            silent.append(pod)
        if not silent:
            return
        names = [f"{meta(p).get('namespace')}/{meta(p).get('name')}" for p in silent]
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        yield ctx.finding(
            "no-traffic-seen",
            f"{len(silent)} enrolled pod(s) appear in no ztunnel access line during the logs' window (idle, or their "
            f"traffic bypasses ztunnel): {shown}",
            title="enrolled pods with no traffic in any ztunnel log", severity="info",
            resources=[Resource("Pod", str(meta(p).get("name")), str(meta(p).get("namespace")),
                                node=pod_node(p) or None) for p in silent],
            remediation="If these pods did send or receive traffic in the window, check their redirection "
                        "(istio-cni logs, the ztunnel's workloadState).",
        )


def _explain(errors: Counter) -> str:
    top = errors.most_common(1)[0][0] if errors else ""
    if "NetworkPolicy" in top or "deadline has elapsed" in top or "timed out" in top:
        return "they timed out on the way (a NetworkPolicy, security group or firewall blocking port 15008)"
    if "certificate" in top or "tls" in top.lower() or "identity" in top:
        return "the mTLS handshake with the destination failed (see the certificates and logs findings)"
    if "Connection refused" in top:
        return ("the destination refused port 15008: it has no in-pod listener (redirection lost after a reboot or "
                "re-label) or is not captured")
    if top == "no error on the outbound side":
        return ("the source saw them succeed, yet the destination's ztunnel never did: they went elsewhere (a reused "
                "IP, a stale endpoint) or bypassed the destination's redirection")
    return f"they failed on the way ({top})"


def _near(times: list[float] | None, t: float) -> bool:
    if not times:
        return False
    i = bisect.bisect_left(times, t - MATCH_WINDOW)
    return i < len(times) and times[i] <= t + MATCH_WINDOW


def _unknown_reason(model: Any, dst_pod: Any, dst_node: str, ztunnel_of: dict[str, Any],
                    spans: dict[str, list[tuple[float, float, str]]], t: float) -> str:
    """Why the destination side cannot be checked, or "" when a missing inbound line means it never arrived."""
    if dst_pod is None:
        return "the HBONE peer is not a pod in the bundle"
    if annotations(dst_pod).get("ambient.istio.io/redirection") != "enabled":
        return "destination pod is not enrolled"
    ref = ztunnel_of.get(dst_node)
    if ref is None or ref.log_path is None:
        return "no ztunnel log of the destination node"
    status = model.status(ref.log_path)
    if status != "ok":
        return f"the destination node's ztunnel log is {status}"
    for first, last in spans.get(dst_node, ()):
        if first + EDGE_MARGIN <= t <= last - EDGE_MARGIN:
            return ""
    if ref.previous_log_path is None and _restarted(model, ref):
        return "the destination ztunnel restarted and its previous log is missing"
    return "outside the time span of the destination node's ztunnel log"


def _coverage(model: Any, log: Any, first: float | None, last: float | None) -> tuple[float, float] | None:
    """The time span a ztunnel log covers. A complete log covers from the later of the window's start (logsSince)
    and its container's start to the end of its container (or the collection); a truncated one (the tail kept)
    from its first record."""
    pod = model.pod(log.namespace, log.pod)
    statuses = [s for s in dig_list(pod, "status", "containerStatuses")
                if isinstance(s, dict) and s.get("name") == log.container] if pod else []
    status = statuses[0] if statuses else {}
    if log.previous:
        state = dig_dict(status, "lastState", "terminated")
    else:
        state = dig_dict(status, "state", "running")
    started = _ts(state.get("startedAt"))
    ended = _ts(state.get("finishedAt")) if log.previous else None
    if ended is None and not log.previous:
        art = model.artifact(log.path)
        ended = _ts(art.finished if art is not None else None) or _ts(model.manifest.created_at)
    lo, hi = first, last
    if model.status(log.path) == "ok":
        since = _ts(model.manifest.window.logs_since)
        begin = max((t for t in (since, started) if t is not None), default=None)
        if begin is not None:
            lo = begin if lo is None else min(lo, begin)
    if ended is not None:
        hi = ended if hi is None else max(hi, ended)
    if lo is None or hi is None:
        return None
    return lo, hi



def _restarted(model: Any, ref: Any) -> bool:
    pod = model.pod(ref.namespace, ref.pod)
    statuses = dig_list(pod, "status", "containerStatuses")
    return any(isinstance(s, dict) and (s.get("restartCount") or 0) > 0 for s in statuses)


def _workload(pod: Any, addr: str) -> str:
    if pod is None:
        return split_addr(addr)[0]
    return f"{meta(pod).get('namespace')}/{workload_name(pod)}"


def _iso(t: float) -> str:
    from datetime import datetime, timezone

    return iso(datetime.fromtimestamp(t, tz=timezone.utc))
