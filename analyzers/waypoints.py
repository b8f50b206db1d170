"""waypoints: ``istio.io/use-waypoint`` that is not in effect (failure-modes.md R13, and R21 for a waypoint without a
ready pod).

A namespace, Service, ServiceEntry, Pod or WorkloadEntry labelled ``istio.io/use-waypoint: <gateway>`` (``none`` opts
out; ``istio.io/use-waypoint-namespace`` names another namespace) asks that its traffic go through that waypoint.
When the Gateway is missing, not ready (no ``status.addresses``, ``Programmed`` not True), not a waypoint, or serves
the wrong traffic type (``istio.io/waypoint-for``: ``service`` by default, a pod-level label needs ``workload`` or
``all``), ztunnel sends the traffic straight to the destination and every L7 policy and route of the waypoint is
silently skipped. istiod says so in the ``istio.io/WaypointBound`` condition of Services and ServiceEntries; pods
get no condition, so their case is computed here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from analyzers.logs import labels, meta
from bundler import layout
from bundler.analysis import Analyzer, Context, Evidence, Finding, Metadata, Resource
from bundler.analysis.dig import dig, dig_list

USE = "istio.io/use-waypoint"
USE_NS = "istio.io/use-waypoint-namespace"
FOR = "istio.io/waypoint-for"
BOUND = "istio.io/WaypointBound"
WAYPOINT_CLASSES = ("istio-waypoint",)
MESH_CONTROLLER = "istio.io/mesh-controller"
GATEWAY_GROUP = "gateway.networking.k8s.io"
NETWORKING = "networking.istio.io"

_REFS = ("https://istio.io/latest/docs/ambient/usage/troubleshoot-waypoint/",
         "https://github.com/istio/istio/issues/53637", "https://github.com/istio/istio/issues/58432")


@dataclass
class _Problem:
    code: str
    title: str
    detail: str
    gateway: tuple[str, str]
    resources: list[Resource] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


class Waypoints(Analyzer):
    metadata = Metadata(
        id="waypoints",
        title="waypoint requested but not in effect",
        severity="error",
        description=("Checks every istio.io/use-waypoint label (namespace, Service, ServiceEntry, Pod, "
                     "WorkloadEntry) against the Gateway it names: missing, not ready (no status.addresses, "
                     "Programmed not True), not a waypoint class, or the wrong istio.io/waypoint-for; and reports "
                     "Services/ServiceEntries whose istio.io/WaypointBound condition is False."),
        docs="https://istio.io/latest/docs/ambient/usage/troubleshoot-waypoint/",
        inputs=(layout.KIND_K8S_LIST,),
    )

    def analyze(self, ctx: Context) -> Iterable[Finding]:
        model = ctx.model
        gateways_path = layout.k8s_list("gateways", GATEWAY_GROUP)
        gateways = {(meta(g).get("namespace"), meta(g).get("name")): (i, g)
                    for i, g in enumerate(model.k8s("gateways", GATEWAY_GROUP))}
        class_labels = {meta(c).get("name"): (labels(c), dig(c, "spec", "controllerName"))
                        for c in model.k8s("gatewayclasses", GATEWAY_GROUP)}
        gateways_known = model.status(gateways_path) in ("ok", "truncated")
        namespaces = model.namespaces()
        ns_items = {meta(n).get("name"): i for i, n in enumerate(model.k8s("namespaces"))}
        problems: dict[tuple[str, tuple[str, str]], _Problem] = {}
        unbound: list[dict[str, Any]] = []

        def check(holder: Resource, holder_labels: dict[str, str], default_ns: str, needs: str | None,
                  path: str, pointer: str | None) -> tuple[str, str] | None:
            name = holder_labels.get(USE)
            if not name or name == "none":
                return None
            key = (holder_labels.get(USE_NS) or default_ns, name)
            problem = _gateway_problem(key, gateways, class_labels, needs, gateways_known)
            if problem is None:
                return key
            code, title, detail, gw_pointer = problem
            entry = problems.get((code, key))
            if entry is None:
                entry = problems[(code, key)] = _Problem(code, title, detail, key,
                                                         [Resource("Gateway", key[1], key[0])])
                if gw_pointer is not None:
                    entry.evidence.append(Evidence(gateways_path, pointer=gw_pointer))
            entry.resources.append(holder)
            if pointer is not None:
                entry.evidence.append(Evidence(path, pointer=pointer))
            return key

        ns_path = layout.k8s_list("namespaces")
        for ns, ns_labels in sorted(namespaces.items()):
            check(Resource("Namespace", ns), ns_labels, ns, None, ns_path,
                  f"/items/{ns_items.get(ns, 0)}/metadata/labels/{_escape(USE)}")
        for resource, group, kind, needs in (("services", "", "Service", "service"),
                                             ("serviceentries", NETWORKING, "ServiceEntry", "service"),
                                             ("pods", "", "Pod", "workload"),
                                             ("workloadentries", NETWORKING, "WorkloadEntry", "workload")):
            path = layout.k8s_list(resource, group)
            for i, obj in enumerate(model.k8s(resource, group)):
                m = meta(obj)
                own = labels(obj)
                if "gateway.networking.k8s.io/gateway-name" in own:
                    continue  # the waypoint's own Service and pods
                ns, name = str(m.get("namespace", "")), str(m.get("name", ""))
                holder = Resource(kind, name, ns, node=(dig(obj, "spec", "nodeName") if isinstance(dig(obj, "spec", "nodeName"), str) else None)
                                  if kind == "Pod" else None)
                if USE in own:
                    target = check(holder, own, ns, needs, path, f"/items/{i}/metadata/labels/{_escape(USE)}")
                elif kind in ("Service", "ServiceEntry"):
                    ns_labels = namespaces.get(ns, {})
                    target = None
                    if ns_labels.get(USE) and ns_labels.get(USE) != "none":
                        target = (ns_labels.get(USE_NS) or ns, ns_labels[USE])
                        # a namespace-wide waypoint that cannot take service traffic
                        check(holder, ns_labels, ns, needs, path, None)
                else:
                    continue
                if kind in ("Service", "ServiceEntry"):
                    unbound += _condition(obj, i, path, holder, target, problems)
        for (code, key), problem in sorted(problems.items()):
            holders = [r for r in problem.resources if r.kind != "Gateway"]
            names = ", ".join(f"{r.kind} {r.namespace + '/' if r.namespace else ''}{r.name}" for r in holders[:10])
            more = f" and {len(holders) - 10} more" if len(holders) > 10 else ""
            yield ctx.finding(
                code, f"waypoint {key[0]}/{key[1]} {problem.detail}; requested by {names}{more}: their traffic "
                      "skips the waypoint, so its L7 policies and routes are not applied",
                title=problem.title, severity="warning" if code == "not-a-waypoint" else "error",
                resources=_unique(problem.resources), evidence=_unique(problem.evidence),
                remediation=_REMEDIATION[code], references=_REFS,
            )
        for finding in unbound:
            yield ctx.finding(**finding)


def _condition(obj: dict[str, Any], index: int, path: str, holder: Resource, target: tuple[str, str] | None,
               problems: dict[tuple[str, tuple[str, str]], _Problem]) -> list[dict[str, Any]]:
    """A False istio.io/WaypointBound: folded into the Gateway's problem when that explains it, else a finding of
    its own (returned as ``ctx.finding`` arguments)."""
    out: list[dict[str, Any]] = []
    conditions = dig_list(obj, "status", "conditions")
    for j, cond in enumerate(conditions):
        if not isinstance(cond, dict) or cond.get("type") != BOUND or cond.get("status") != "False":
            continue
        evidence = Evidence(path, pointer=f"/items/{index}/status/conditions/{j}",
                            excerpt=f"{cond.get('reason')}: {cond.get('message')}")
        explained = [p for (code, key), p in problems.items() if key == target]
        if explained:
            for p in explained:
                if holder not in p.resources:
                    p.resources.append(holder)
                p.evidence.append(evidence)
            continue
        reason = cond.get("reason") or "unknown reason"
        out.append(dict(
            code="waypoint-not-bound",
            message=(f"{holder.kind} {holder.namespace}/{holder.name} is not bound to its waypoint "
                     f"(istio.io/WaypointBound False, {reason}: {cond.get('message') or 'no message'}): its "
                     "traffic skips the waypoint"),
            title="service not bound to its waypoint", severity="error", resources=[holder],
            evidence=[evidence], remediation=_REMEDIATION.get(_REASONS.get(reason, ""), _REMEDIATION["unbound"]),
            references=_REFS,
        ))
    return out


_REASONS = {"WaypointIsNotReady": "waypoint-not-ready", "UnsupportedTrafficType": "waypoint-traffic-type-mismatch"}
_REMEDIATION = {
    "waypoint-missing": ("Create the Gateway (gatewayClassName: istio-waypoint, an HBONE listener on 15008, e.g. "
                         "'istioctl waypoint apply -n <ns> --name <name>'), or fix the istio.io/use-waypoint "
                         "(and istio.io/use-waypoint-namespace) label."),
    "waypoint-not-ready": ("Make the waypoint's pods Ready (check its Deployment, events and Envoy logs); istiod "
                           "uses a waypoint only once its Gateway has status.addresses. 'Waiting for controller' "
                           "means istiod does not reconcile Gateways (Gateway API CRDs, revision)."),
    "not-a-waypoint": "Point istio.io/use-waypoint at a Gateway of class istio-waypoint.",
    "waypoint-traffic-type-mismatch": ("Set istio.io/waypoint-for on the Gateway to the traffic it must take "
                                       "(service, workload or all): a pod-level label needs workload or all."),
    "unbound": ("Read the condition's reason: fix the Gateway, allowedRoutes for cross-namespace use "
                "(AttachmentDenied), or istio.io/waypoint-for (UnsupportedTrafficType)."),
}


def _gateway_problem(key: tuple[str, str], gateways: dict, class_labels: dict, needs: str | None,
                     gateways_known: bool) -> tuple[str, str, str, str | None] | None:
    """(code, title, detail, JSON pointer of the Gateway) of what is wrong with the waypoint ``key``, or None."""
    found = gateways.get(key)
    if found is None:
        if not gateways_known:
            return None  # the Gateways were not collected: unknown, not missing
        return ("waypoint-missing", "istio.io/use-waypoint names a Gateway that does not exist",
                "does not exist", None)
    index, gateway = found
    spec, status = gateway.get("spec") or {}, gateway.get("status") or {}
    klass = spec.get("gatewayClassName", "")
    klass_labels, controller = class_labels.get(klass, ({}, None))
    if klass not in WAYPOINT_CLASSES and controller != MESH_CONTROLLER:
        return ("not-a-waypoint", "istio.io/use-waypoint names a Gateway that is not a waypoint",
                f"is of class {klass or 'none'}, not istio-waypoint", f"/items/{index}/spec/gatewayClassName")
    conditions = {c.get("type"): c for c in status.get("conditions") or () if isinstance(c, dict)}
    programmed = conditions.get("Programmed") or {}
    if not status.get("addresses") or programmed.get("status") not in (None, "True"):
        why = [f"Programmed {programmed.get('status')} ({programmed.get('reason')}: {programmed.get('message')})"
               ] if programmed else []
        if not status.get("addresses"):
            why.append("no status.addresses")
        return ("waypoint-not-ready", "istio.io/use-waypoint names a waypoint that is not ready",
                f"is not ready: {', '.join(why)}", f"/items/{index}/status")
    serves = labels(gateway).get(FOR) or klass_labels.get(FOR) or "service"
    if serves == "none" or (needs is not None and serves not in (needs, "all")):
        return ("waypoint-traffic-type-mismatch", "waypoint does not serve the requested traffic type",
                f"serves {serves} traffic (istio.io/waypoint-for), not {needs or 'any'} traffic",
                f"/items/{index}/metadata/labels")
    return None


def _unique(items: list[Any]) -> list[Any]:
    return list(dict.fromkeys(items))
