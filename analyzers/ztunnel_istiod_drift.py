"""ztunnel-istiod-drift (R18 point 5, R08): each ztunnel's workloads, services and policies against istiod's view
of that ztunnel.

The reference is istiod's per-proxy dump (``/debug/config_dump?proxyID=``, with the policies of its WADS dump)
when it holds anything, else ``/debug/ambientz`` (istiod's global set: on Istio >= 1.25 the per-proxy dump is
empty, formats.md 3.2); every message says which one was used. ztunnels that agree share their dicts, and each
distinct pair of dicts is compared once.

* present in istiod only (``missing-*``): ztunnel did not apply what istiod sends (NACK, stream down or
  stuck). A missing workload of the ztunnel's own node is critical: its connections fail with "timed out
  waiting for workload" (R08).
* present in ztunnel only (``extra-*``): ztunnel kept state istiod no longer has (a stale workload or service
  after a stream got stuck). ztunnel may legitimately hold more than istiod's view (formats.md 3.5 point 5:
  on-demand xDS, other clusters' entries, removals still pending), so only entries of this cluster count as a
  problem: other clusters' workloads, non-Kubernetes service hostnames, services of namespaces this cluster
  does not have, and anything on an on-demand ztunnel are ``info``.
* in both but different (``field-drift``, ``service-drift``, ``policy-drift``): the message and the
  ``drift`` view list the differing fields of ``comparable()``. Service endpoints of workloads already
  reported missing or extra are left out of the service comparison (one cause, one finding).

A ztunnel without any istiod view is not a finding here (collection-gaps reports the missing artifacts); it
is listed in the ``driftSkipped`` view. Policies are compared only when istiod's view has a policy source
(WADS dump or ambientz).

Views: ``drift`` rows ``{ztunnel, node, kind, key, reference, status, fields: [{field, ztunnel, reference}]}``
(``reference`` is "istiod per-proxy" or "ambientz"; a side that lacks the entry has no key in ``fields``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from bundler import layout
from bundler.analysis.dig import dig
from bundler.analysis import Analyzer, Context, Evidence, Finding, Metadata, Resource

DOCS = "https://istio.io/latest/docs/ambient/usage/troubleshoot-ztunnel/"
REFERENCES = (
    "https://istio.io/latest/docs/ambient/usage/troubleshoot-ztunnel/",
    "https://github.com/istio/istio/issues/54889",
    "https://github.com/istio/istio/issues/57674",
    "https://github.com/istio/istio/issues/58514",
)
REMEDIATION = (
    "Check the ztunnel's xDS stream (its log for 'XDS client' errors and 'sending response ... type=Nack', and "
    "istiod's /debug/syncz for the proxy) and istiod's push health. Restarting the divergent ztunnel makes it "
    "re-sync from istiod (it drains the node's connections: do it in a quiet window)."
)
MAX_PER_CODE = 100  # findings of one code for one ztunnel; the rest are summed up in one more finding
MAX_VIEW_ROWS = 2000
YOUNG = timedelta(seconds=60)  # objects younger than this at collection time may legitimately not have synced

# Fields whose difference is cosmetic (labels for telemetry), not a traffic or security problem.
COSMETIC_FIELDS = frozenset({"canonical_name", "canonical_revision", "workload_name"})

_KINDS = ("workloads", "services", "policies")
_SINGULAR = {"workloads": "workload", "services": "service", "policies": "policy"}
_TITLES = {
    "missing-workload": "ztunnel lacks a workload istiod sends it",
    "extra-workload": "ztunnel holds a workload istiod does not send",
    "field-drift": "ztunnel's copy of a workload differs from istiod's",
    "missing-service": "ztunnel lacks a service istiod sends it",
    "extra-service": "ztunnel holds a service istiod does not send",
    "service-drift": "ztunnel's copy of a service differs from istiod's",
    "missing-policy": "ztunnel lacks an authorization policy istiod sends it",
    "extra-policy": "ztunnel holds an authorization policy istiod does not send",
    "policy-drift": "ztunnel's copy of an authorization policy differs from istiod's",
}
_DRIFT_CODE = {"workloads": "field-drift", "services": "service-drift", "policies": "policy-drift"}


# --- helpers shared with ztunnel-peer-drift and ztunnel-kubernetes ----------------------------------------------


def workload_kind(uid: str) -> str:
    """The Kubernetes kind behind a workload uid (failure-modes.md 0.1: ``<cluster>//Pod/<ns>/<name>``, ...)."""
    for marker, kind in (("//Pod/", "Pod"), ("/WorkloadEntry/", "WorkloadEntry"),
                         ("/ServiceEntry/", "ServiceEntry"), ("/EndpointSlice/", "EndpointSlice")):
        if marker in uid:
            return kind
    return "Workload"


def workload_resource(w: Any, ztunnel: Any | None = None) -> Resource:
    """A workload as a Resource: its kind, namespace and name, the node it runs on and the ztunnel viewing it."""
    return Resource(workload_kind(w.uid), w.name or w.uid, w.namespace or None, node=w.node or None,
                    ztunnel=ztunnel.pod if ztunnel is not None else None)


def entry_resource(kind: str, obj: Any, ztunnel: Any | None = None) -> Resource:
    """Any workloads/services/policies entry as a Resource (the node is the ztunnel's for services and policies)."""
    if kind == "workloads":
        return workload_resource(obj, ztunnel)
    node = ztunnel.node if ztunnel is not None else None
    zt = ztunnel.pod if ztunnel is not None else None
    if kind == "services":
        return Resource("Service", obj.name or obj.hostname, obj.namespace or None, node=node, ztunnel=zt)
    return Resource("AuthorizationPolicy", obj.name, obj.namespace or None, node=node, ztunnel=zt)


def jsonable(value: Any) -> Any:
    """Tuples (the model's canonical sequences) as lists, for views and excerpts."""
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def short(value: Any, limit: int = 120) -> str:
    text = json.dumps(jsonable(value), separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def differing_fields(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ (or that one side lacks), in the order of ``ours`` then ``theirs``."""
    keys = list(ours) + [k for k in theirs if k not in ours]
    return [k for k in keys if ours.get(k, _ABSENT) != theirs.get(k, _ABSENT)]


def fields_view(ours: Mapping[str, Any], theirs: Mapping[str, Any], names: Iterable[str]) -> list[dict[str, Any]]:
    out = []
    for name in names:
        row: dict[str, Any] = {"field": name}
        if name in ours:
            row["ztunnel"] = jsonable(ours[name])
        if name in theirs:
            row["reference"] = jsonable(theirs[name])
        out.append(row)
    return out


def present_fields(side: Mapping[str, Any]) -> list[str]:
    """The fields of an entry that only one side has, without the empty ones (null, "", [], false): the row of a
    missing or extra entry shows what the entry is, not every default."""
    return [k for k, v in side.items() if v not in (None, "", (), False)]


def collection_time(model: Any) -> datetime | None:
    """When the bundle was collected: the manifest window's end, else its createdAt."""
    try:
        manifest = model.manifest
    except Exception:  # noqa: BLE001 - a bundle without a readable manifest has no collection time
        return None
    for text in (getattr(manifest.window, "end", None), manifest.created_at):
        moment = parse_time(text)
        if moment is not None:
            return moment
    return None


def dump_time(model: Any, path: str, default: datetime | None) -> datetime | None:
    """When an artifact was collected (its manifest ``started``), else ``default``. A bundle is no atomic
    snapshot: a pod created after a ztunnel's dump was taken cannot be in it."""
    art = model.artifact(path)
    return parse_time(getattr(art, "started", None)) or default


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def map_shape_ips(zt: Any) -> set[str]:
    """On a 1.22 (map-shaped) dump, the IPs its workloads are keyed by: a workload sharing one of them with
    another (host-network pods share their node's IP) cannot appear in the dump, so its absence says nothing."""
    if zt.shape != "map":
        return set()
    return {ip for w in zt.workloads.values() for ip in w.ips}


def pod_is_young(model: Any, namespace: str, name: str, now: datetime | None) -> bool:
    """A pod created less than YOUNG before ``now`` (or after it): it may not have reached every ztunnel yet."""
    if now is None:
        return False
    pod = model.pod(namespace, name)
    if pod is None:
        return False
    created = parse_time(dig(pod, "metadata", "creationTimestamp"))
    return created is not None and now - created < YOUNG


_ABSENT = object()


# --- the analyzer ------------------------------------------------------------------------------------------------


class ZtunnelIstiodDrift(Analyzer):
    metadata = Metadata(
        id="ztunnel-istiod-drift",
        title="ztunnel's configuration differs from istiod's",
        severity="error",
        description=("Compares each ztunnel's workloads, services and authorization policies with istiod's view "
                     "of that ztunnel (the per-proxy dump, else ambientz): entries missing from ztunnel, entries "
                     "only ztunnel holds, and field-level differences."),
        docs=DOCS,
        inputs=(layout.KIND_ZTUNNEL_CONFIG_DUMP, layout.KIND_ISTIOD_CONFIG_DUMP, layout.KIND_ISTIOD_WADS,
                layout.KIND_ISTIOD_AMBIENTZ, layout.KIND_K8S_LIST),
    )

    def analyze(self, ctx: Context) -> Iterator[Finding]:
        model = ctx.model
        now = collection_time(model)
        namespaces = set(model.namespaces())
        rows: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        key_diffs: dict[tuple[int, int], Any] = {}
        for zt in model.ztunnels():
            ref = model.istiod_view(zt.pod)
            if ref is None:
                skipped.append({"ztunnel": zt.pod, "node": zt.node,
                                "reason": "no istiod view of this ztunnel (per-proxy dump nor ambientz)"})
                continue
            yield from _Comparison(ctx, zt, ref, dump_time(model, zt.path, now), namespaces, rows, key_diffs).run()
        ctx.view("drift", rows[:MAX_VIEW_ROWS])
        if skipped:
            ctx.view("driftSkipped", skipped)


class _Comparison:
    """One ztunnel against istiod's view of it."""

    def __init__(self, ctx: Context, zt: Any, ref: Any, now: datetime | None, namespaces: set[str],
                 rows: list[dict[str, Any]], key_diffs: dict[tuple[int, int], Any] | None = None) -> None:
        self.ctx, self.zt, self.ref, self.now, self.namespaces, self.rows = ctx, zt, ref, now, namespaces, rows
        self.key_diffs = key_diffs if key_diffs is not None else {}
        self.reference = "istiod per-proxy" if ref.source == "per-proxy" else "ambientz"
        self.cluster_id = str(zt.config.get("clusterId") or "Kubernetes")
        self.domain = str(zt.config.get("clusterDomain") or "cluster.local")
        self.on_demand = bool(zt.config.get("xdsOnDemand"))
        self.shadowed = map_shape_ips(zt)
        self.counts: dict[str, int] = {}

    def run(self) -> Iterator[Finding]:
        zt, ref = self.zt, self.ref
        skip_uids: set[str] = set()
        for kind in _KINDS:
            if kind == "policies" and ref.policies_path is None:
                continue  # istiod's policies were not collected: unknown, not "none"
            ours, theirs = getattr(zt, kind), getattr(ref, kind)
            missing, extra, changed = self._key_diff(ours, theirs)
            for key in missing:
                finding = self._missing(kind, key, theirs[key])
                if kind == "workloads":
                    skip_uids.add(key)
                if finding is not None:
                    yield from self._emit(finding)
            for key in extra:
                if kind == "workloads":
                    skip_uids.add(key)
                yield from self._emit(self._extra(kind, key, ours[key]))
            for key in changed:
                a, b = ours[key], theirs[key]
                finding = self._differs(kind, key, a, b, skip_uids)
                if finding is not None:
                    yield from self._emit(finding)
        yield from self._summaries()

    def _key_diff(self, ours: Any, theirs: Any) -> tuple[list[str], list[str], list[str]]:
        """Keys only istiod has, keys only ztunnel has, and keys whose objects differ (the model interns equal
        objects: ``is`` tells). ztunnels that agree share their dicts (bundler/model/sections.py), and so this."""
        memo_key = (id(ours), id(theirs))
        found = self.key_diffs.get(memo_key)
        if found is None:
            found = (sorted(theirs.keys() - ours.keys()), sorted(ours.keys() - theirs.keys()),
                     sorted(k for k in ours.keys() & theirs.keys() if ours[k] is not theirs[k]), ours, theirs)
            self.key_diffs[memo_key] = found  # keeps both dicts alive, so their ids stay theirs
        return found[0], found[1], found[2]

    # -- the three cases ----------------------------------------------------------------------------------------

    def _missing(self, kind: str, key: str, obj: Any) -> Finding | None:
        zt = self.zt
        local = kind == "workloads" and obj.node == zt.node
        if self.on_demand and not local:
            return None  # an on-demand ztunnel fetches remote entries when first needed
        if kind == "workloads" and self.shadowed.intersection(obj.ips):
            return None  # a 1.22 dump keys workloads by IP: another workload with this IP hides it
        what = _SINGULAR[kind]
        if kind == "workloads":
            hbone = obj.protocol == "HBONE" or obj.native_tunnel
            severity = "critical" if local and hbone else "error" if hbone else "warning"
            if workload_kind(key) == "Pod" and pod_is_young(self.ctx.model, obj.namespace, obj.name, self.now):
                severity = "info"
            impact = (" It runs on this node: its connections fail with 'timed out waiting for workload' (R08)."
                      if local else "")
        elif kind == "services":
            severity, impact = "error", " Traffic to its VIPs is not load-balanced by this ztunnel."
        else:
            severity, impact = "error", " This ztunnel does not enforce it."
        self._row(kind, key, None, obj.comparable(), "missing")
        message = (f"ztunnel {zt.pod} on node {zt.node} has no {what} {key}, which istiod's view of it "
                   f"({self.reference}) holds.{impact}")
        return self.ctx.finding(
            f"missing-{what}", message, title=_TITLES[f"missing-{what}"], severity=severity,
            resources=[entry_resource(kind, obj, zt)],
            evidence=[self._ref_evidence(kind, key, f"istiod ({self.reference}) has {what} {key}"),
                      Evidence(zt.path, zt.pointer(kind, key), excerpt=f"no {what} {key} in the ztunnel's {kind}")],
            remediation=REMEDIATION, references=REFERENCES)

    def _extra(self, kind: str, key: str, obj: Any) -> Finding:
        zt = self.zt
        what = _SINGULAR[kind]
        severity, why = "warning", "ztunnel kept state istiod no longer has (stale entry)"
        if self.on_demand:
            severity, why = "info", "this ztunnel uses on-demand xDS, which may hold entries istiod's view lacks"
        elif kind == "workloads" and obj.cluster_id != self.cluster_id:
            severity, why = "info", f"it belongs to cluster {obj.cluster_id} (on-demand or multi-cluster)"
        elif kind == "services" and not self._local_service(obj):
            severity, why = "info", "it is not a Kubernetes service of this cluster (on-demand or multi-cluster)"
        self._row(kind, key, obj.comparable(), None, "extra")
        message = (f"ztunnel {zt.pod} on node {zt.node} holds {what} {key}, which istiod's view of it "
                   f"({self.reference}) does not: {why}.")
        return self.ctx.finding(
            f"extra-{what}", message, title=_TITLES[f"extra-{what}"], severity=severity,
            resources=[entry_resource(kind, obj, zt)],
            evidence=[Evidence(zt.path, zt.pointer(kind, key), excerpt=short(obj.comparable())),
                      self._ref_evidence(kind, None, f"istiod ({self.reference}) has no {what} {key}")],
            remediation=REMEDIATION, references=REFERENCES)

    def _differs(self, kind: str, key: str, ours: Any, theirs: Any, skip_uids: set[str]) -> Finding | None:
        a, b = ours.comparable(), theirs.comparable()
        if kind == "services" and skip_uids:
            # endpoints of workloads already reported missing/extra are the same cause
            a = {**a, "endpoints": tuple(e for e in a["endpoints"] if e[0] not in skip_uids)}
            b = {**b, "endpoints": tuple(e for e in b["endpoints"] if e[0] not in skip_uids)}
        fields = differing_fields(a, b)
        if not fields:
            return None
        zt = self.zt
        what = _SINGULAR[kind]
        severity = "warning" if all(f in COSMETIC_FIELDS for f in fields) else "error"
        self.rows.append({"ztunnel": zt.pod, "node": zt.node, "kind": what, "key": key, "reference": self.reference,
                          "status": "different", "fields": fields_view(a, b, fields)})
        details = "; ".join(f"{f}: ztunnel {short(a.get(f), 60)}, istiod {short(b.get(f), 60)}" for f in fields)
        message = (f"ztunnel {zt.pod} on node {zt.node}: {what} {key} differs from istiod's view "
                   f"({self.reference}) in {', '.join(fields)} ({details}).")
        code = _DRIFT_CODE[kind]
        return self.ctx.finding(
            code, message, title=_TITLES[code], severity=severity, resources=[entry_resource(kind, ours, zt)],
            evidence=[Evidence(zt.path, zt.pointer(kind, key), excerpt=details[:300]),
                      self._ref_evidence(kind, key, f"istiod ({self.reference}) {what} {key}")],
            remediation=REMEDIATION, references=REFERENCES)

    # -- plumbing -------------------------------------------------------------------------------------------------

    def _local_service(self, svc: Any) -> bool:
        """A Kubernetes service of this cluster: <name>.<ns>.svc.<domain> in a namespace the cluster has."""
        return (svc.hostname == f"{svc.name}.{svc.namespace}.svc.{self.domain}"
                and (not self.namespaces or svc.namespace in self.namespaces))

    def _ref_evidence(self, kind: str, key: str | None, excerpt: str) -> Evidence:
        ref = self.ref
        path = ref.policies_path if kind == "policies" and ref.policies_path else ref.path
        pointer = ref.pointer(kind, key) if key is not None else ""
        return Evidence(path, pointer or "", excerpt=excerpt)

    def _row(self, kind: str, key: str, ours: Mapping[str, Any] | None, theirs: Mapping[str, Any] | None,
             status: str) -> None:
        zt = self.zt
        a, b = ours or {}, theirs or {}
        self.rows.append({"ztunnel": zt.pod, "node": zt.node, "kind": _SINGULAR[kind], "key": key,
                          "reference": self.reference, "status": status,
                          "fields": fields_view(a, b, present_fields(a or b))})

    def _emit(self, finding: Finding) -> Iterator[Finding]:
        n = self.counts.get(finding.code, 0) + 1
        self.counts[finding.code] = n
        if n <= MAX_PER_CODE:
            yield finding

    def _summaries(self) -> Iterator[Finding]:
        zt = self.zt
        for code, n in sorted(self.counts.items()):
            if n <= MAX_PER_CODE:
                continue
            yield self.ctx.finding(
                code, f"ztunnel {zt.pod} on node {zt.node}: {n - MAX_PER_CODE} more '{code}' differences from "
                f"istiod's view ({self.reference}) than the {MAX_PER_CODE} reported one by one.",
                title=_TITLES[code], severity="error",
                resources=[Resource("Pod", zt.pod, zt.namespace or None, node=zt.node, ztunnel=zt.pod)],
                evidence=[Evidence(zt.path, "")], remediation=REMEDIATION, references=REFERENCES)
