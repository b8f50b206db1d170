"""The catalog of faults a scenario can inject, each reproducing a failure mode of failure-modes.md.

A fault either changes the truth (the Kubernetes state: an annotation, a restart count, a missing Gateway)
or makes one component's view diverge from the truth (a ztunnel that lacks a workload, holds an expired
certificate, or lost its xDS stream). ``Effects`` collects the divergences; the renderers of dumps, istiod
views, logs and metrics read it. ``analyzers`` names the analyzer ids expected to detect the fault (the
analyze issue implements them under these ids).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bundler.errors import ScenarioError
from bundler.synth.cluster import Cluster, Pod, bind_waypoints, service_endpoints
from bundler.synth.scenario import FaultSpec, PolicySpec, parse_minor


@dataclass
class Effects:
    missing_workloads: dict[str, set[str]] = field(default_factory=dict)  # node -> pod keys absent from its dump
    stale_workloads: list[Pod] = field(default_factory=list)  # deleted pods still in every ztunnel
    field_drift: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # node -> pod key -> fields
    cert_state: dict[tuple[str, str], str] = field(default_factory=dict)  # (node, spiffe id) -> fault
    foreign_root: set[str] = field(default_factory=set)  # nodes whose ztunnel trusts another root
    xds_disconnected: set[str] = field(default_factory=set)
    xds_nack: set[str] = field(default_factory=set)
    cni_failed: dict[str, str] = field(default_factory=dict)  # pod key -> pending | absent
    hbone_blocked: set[str] = field(default_factory=set)  # destination namespaces
    denied: dict[str, str] = field(default_factory=dict)  # destination pod key -> policy ns/name
    oom_nodes: set[str] = field(default_factory=set)
    lb_skew: dict[str, str] = field(default_factory=dict)  # service key -> favoured endpoint pod key


@dataclass(frozen=True)
class FaultType:
    name: str
    summary: str
    failure_mode: str
    analyzers: tuple[str, ...]
    params: dict[str, str]
    apply: Callable[[Cluster, Effects, dict[str, Any]], None]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary, "failureMode": self.failure_mode,
                "analyzers": list(self.analyzers), "params": dict(self.params)}


# --- parameter helpers ---------------------------------------------------------------------------------------


def _node(cluster: Cluster, params: dict[str, Any], fault: str) -> str:
    node = params.get("node")
    names = [n.name for n in cluster.nodes]
    if node is None:
        return names[-1]
    if node not in names:
        raise ScenarioError(f"fault {fault}: node {node!r} is not one of {', '.join(names)}")
    return str(node)


def _pod(cluster: Cluster, params: dict[str, Any], fault: str, key: str = "pod") -> Pod:
    """``pod: namespace/app`` (the first replica) or ``namespace/pod-name``."""
    ref = params.get(key)
    if not isinstance(ref, str) or ref.count("/") != 1:
        raise ScenarioError(f"fault {fault}: {key} must be namespace/app or namespace/pod-name")
    ns, name = ref.split("/")
    candidates = [p for p in cluster.pods if p.namespace == ns and (p.name == name or p.app == name)]
    if not candidates:
        raise ScenarioError(f"fault {fault}: no pod {ref!r} in the scenario")
    return sorted(candidates, key=lambda p: p.name)[0]


def _identity(cluster: Cluster, pod: Pod) -> str:
    return f"spiffe://{cluster.scenario.trust_domain}/ns/{pod.namespace}/sa/{pod.service_account}"


# --- the faults ------------------------------------------------------------------------------------------------


def _workload_missing(cluster: Cluster, fx: Effects, p: dict[str, Any]) -> None:
    pod = _pod(cluster, p, "workload-missing")
    node = _node(cluster, {"node": p.get("node", pod.node)}, "workload-missing")
    fx.missing_workloads.setdefault(node, set()).add(pod.key)


def _stale_workload(cluster: Cluster, fx: Effects, p: dict[str, Any]) -> None:
    # A pod was deleted but the ztunnels kept its workload; a new pod got its IP.
    heir = _pod(cluster, p, "stale-workload")
    ghost = Pod(name=f"{heir.workload_name}-{heir.labels.get('pod-template-hash', 'old')}-gh0st",
                namespace=heir.namespace, uid=heir.uid[:-4] + "dead", ip=heir.ip, node=heir.node,
                labels=dict(heir.labels), annotations={"ambient.istio.io/redirection": "enabled"},
                service_account=heir.service_account, app=heir.app, version=heir.version, ports=heir.ports,
                created=heir.created, owner_name=heir.owner_name, workload_name=heir.workload_name)
    fx.stale_workloads.append(ghost)
    cluster.deleted_pods.append(ghost)


def _field_drift(cluster: Cluster, fx: Effects, p: dict[str, Any]) -> None:
    pod = _pod(cluster, p, "field-drift")
    node = _node(cluster, p, "field-drift")
    what = p.get("field", "protocol")
    if what == "protocol":
        change = {"protocol": "TCP" if cluster.enrolled(pod) else "HBONE"}
    elif what == "waypoint":
        change = {"waypoint": {"destination": "/10.96.250.250", "hboneMtlsPort": 15008}}
    else:
        raise ScenarioError("fault field-drift: field must be protocol or waypoint")
    fx.field_drift.setdefault(node, {}).setdefault(pod.key, {}).update(change)


def _cert(state: str) -> Callable[[Cluster, Effects, dict[str, Any]], None]:
    def apply(cluster: Cluster, fx: Effects, p: dict[str, Any]) -> None:
        pod = _pod(cluster, p, f"cert-{state}")
        if not cluster.enrolled(pod):
            raise ScenarioError(f"fault cert-{state}: {pod.key} is not an ambient (HBONE) workload")
        fx.cert_state[(pod.node, _identity(cluster, pod))] = state
    return apply


def _root_mismatch(cluster: Cluster, fx: Effects, p: dict[str, Any]) -> None:
    fx.foreign_root.add(_node(cluster, p, "root-mismatch"))


def _xds_disconnected(cluster: Cluster, fx: Effects, p: dict[str, Any]) -> None:
    fx.xds_disconnected.add(_node(cluster, p, "xds-disconnected"))


def _xds_nack(cluster: Cluster, fx: Effects, p: dict[str, Any]) -> None:
    fx.xds_nack.add(_node(cluster, p, "xds-nack"))


def _not_enrolled(cluster: Cluster, fx: Effects, p: dict[str, Any]) -> None:
    pod = _pod(cluster, p, "pod-not-enrolled")
    if not cluster.ambient_expected(pod):
        raise ScenarioError(f"fault pod-not-enrolled: {pod.key} is not expected in ambient (check its namespace)")
    state = p.get("annotation", "pending")
    if state not in ("pending", "absent"):
        raise ScenarioError("fault pod-not-enrolled: annotation must be pending or absent")
    if state == "pending":
        pod.annotations["ambient.istio.io/redirection"] = "pending"
    else:
        pod.annotations.pop("ambient.istio.io/redirection", None)
    fx.cni_failed[pod.key] = state


def _hbone_blocked(cluster: Cluster, fx: Effects, p: dict[str, Any]) -> None:
    ns = p.get("namespace")
    if ns not in cluster.namespaces:
        raise ScenarioError(f"fault hbone-blocked: namespace {ns!r} is not in the scenario")
    fx.hbone_blocked.add(ns)
    ports = sorted({port for pod in cluster.pods if pod.namespace == ns and pod.component == "app" for port in pod.ports})
    cluster.network_policies.append({
        "name": "allow-app-ports-only", "namespace": ns,
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                 "ingress": [{"ports": [{"protocol": "TCP", "port": port} for port in ports]}]},
    })


def _policy_denial(cluster: Cluster, fx: Effects, p: dict[str, Any]) -> None:
    ns_name = p.get("service")
    if not isinstance(ns_name, str) or ns_name.count("/") != 1:
        raise ScenarioError("fault policy-denial: service must be namespace/name")
    svc = cluster.service_by_key(*ns_name.split("/"))
    if svc is None:
        raise ScenarioError(f"fault policy-denial: no service {ns_name!r}")
    allowed = str(p.get("allow", f"{cluster.scenario.trust_domain}/ns/{svc.namespace}/sa/nobody"))
    name = f"{svc.name}-allow-only"
    cluster.policies.append(PolicySpec(name=name, namespace=svc.namespace, action="ALLOW",
                                       selector=dict(svc.selector), from_principals=(allowed,)))
    for pod in service_endpoints(cluster, svc):
        fx.denied[pod.key] = f"{svc.namespace}/{name}"


def _waypoint_missing(cluster: Cluster, fx: Effects, p: dict[str, Any]) -> None:
    ns = p.get("namespace")
    if ns not in cluster.namespaces:
        raise ScenarioError(f"fault waypoint-missing: namespace {ns!r} is not in the scenario")
    name = str(p.get("waypoint", "waypoint"))
    mode = p.get("mode", "missing")
    wp = next((w for w in cluster.waypoints if w.namespace == ns and w.name == name), None)
    if mode == "missing":
        if wp is not None:
            wp.exists = False
            cluster.pods = [pod for pod in cluster.pods
                            if pod.labels.get("gateway.networking.k8s.io/gateway-name") != name or pod.namespace != ns]
            cluster.services = [s for s in cluster.services if not (s.namespace == ns and s.name == name)]
    elif mode == "not-ready":
        if wp is None:
            raise ScenarioError(f"fault waypoint-missing: mode not-ready needs waypoint {ns}/{name} in the scenario")
        wp.ready = False
        for pod in cluster.pods:
            if pod.labels.get("gateway.networking.k8s.io/gateway-name") == name and pod.namespace == ns:
                pod.ready = False
    else:
        raise ScenarioError("fault waypoint-missing: mode must be missing or not-ready")
    cluster.namespaces[ns]["istio.io/use-waypoint"] = name
    bind_waypoints(cluster)


def _ztunnel_oom(cluster: Cluster, fx: Effects, p: dict[str, Any]) -> None:
    node = _node(cluster, p, "ztunnel-oomkilled")
    zt = cluster.ztunnels[node]
    zt.restarts = int(p.get("restarts", 4))
    zt.last_termination = "OOMKilled"
    fx.oom_nodes.add(node)


def _version_skew(cluster: Cluster, fx: Effects, p: dict[str, Any]) -> None:
    node = _node(cluster, p, "version-skew")
    version = str(p.get("ztunnelVersion", ""))
    if not version:
        major, minor = cluster.scenario.istio_minor
        version = f"{major}.{minor - 2}.0"
    parse_minor(version)
    cluster.ztunnel_versions[node] = version
    zt = cluster.ztunnels[node]
    zt.image = f"docker.io/istio/ztunnel:{version}-distroless"
    zt.version = version


def _lb_skew(cluster: Cluster, fx: Effects, p: dict[str, Any]) -> None:
    ns_name = p.get("service")
    if not isinstance(ns_name, str) or ns_name.count("/") != 1:
        raise ScenarioError("fault lb-skew: service must be namespace/name")
    svc = cluster.service_by_key(*ns_name.split("/"))
    if svc is None:
        raise ScenarioError(f"fault lb-skew: no service {ns_name!r}")
    flows = [f for f in cluster.flows if f.service is svc]
    backends = sorted({f.destination.key: f.destination for f in flows}.values(), key=lambda pod: pod.name)
    if len(backends) < 2:
        raise ScenarioError(f"fault lb-skew: {ns_name} needs traffic to at least two endpoints")
    favoured = backends[0]
    share = float(p.get("share", 0.9))
    total = sum(f.connections for f in flows)
    # Move connections so that the favoured endpoint takes `share` of them; the others split the rest.
    for f in flows:
        f.connections = 0
    target = round(total * share)
    favoured_flows = [f for f in flows if f.destination is favoured]
    other_flows = [f for f in flows if f.destination is not favoured]
    for i in range(target):
        favoured_flows[i % len(favoured_flows)].connections += 1
    for i in range(total - target):
        other_flows[i % len(other_flows)].connections += 1
    fx.lb_skew[svc.key] = favoured.key


CATALOG: dict[str, FaultType] = {f.name: f for f in (
    FaultType("workload-missing", "A workload is missing from one node's ztunnel (istiod has it).",
              "R18 ZTUNNEL_CONFIG_DRIFT; R08 LOCAL_WORKLOAD_UNKNOWN when the pod runs on that node",
              ("ztunnel-istiod-drift", "ztunnel-kubernetes", "ztunnel-peer-drift"),
              {"pod": "namespace/app or namespace/pod", "node": "the ztunnel's node (default: the pod's node)"},
              _workload_missing),
    FaultType("stale-workload", "A deleted pod's workload is still in every ztunnel, and a new pod reuses its IP.",
              "R18 ZTUNNEL_CONFIG_DRIFT (dead pod, IP reuse)", ("ztunnel-kubernetes",),
              {"pod": "the new pod that got the IP (namespace/app)"}, _stale_workload),
    FaultType("field-drift", "One ztunnel holds a workload whose fields differ from istiod's (protocol or waypoint).",
              "R18 ZTUNNEL_CONFIG_DRIFT", ("ztunnel-istiod-drift", "ztunnel-peer-drift"),
              {"pod": "namespace/app", "node": "the drifting ztunnel's node", "field": "protocol | waypoint"},
              _field_drift),
    FaultType("cert-expired", "A local HBONE workload's certificate has expired on its node's ztunnel.",
              "R16 TRUST_ROOT_MISMATCH (expired certs)", ("certificates",), {"pod": "namespace/app"},
              _cert("expired")),
    FaultType("cert-unavailable", "ztunnel could not get a certificate for a local workload (state Unavailable).",
              "R12 CERT_IMPERSONATION_DENIED / R15 CERT_MISSING_FOR_LOCAL_WORKLOAD", ("certificates", "logs"),
              {"pod": "namespace/app"}, _cert("unavailable")),
    FaultType("cert-initializing", "A local workload's certificate is stuck in Initializing.",
              "R15 CERT_MISSING_FOR_LOCAL_WORKLOAD", ("certificates",), {"pod": "namespace/app"},
              _cert("initializing")),
    FaultType("cert-missing", "No certificate at all for a local HBONE workload.",
              "R15 CERT_MISSING_FOR_LOCAL_WORKLOAD", ("certificates",), {"pod": "namespace/app"}, _cert("missing")),
    FaultType("root-mismatch", "One node's ztunnel holds certificates from a different root of trust.",
              "R16 TRUST_ROOT_MISMATCH", ("certificates", "logs"), {"node": "the node"}, _root_mismatch),
    FaultType("xds-disconnected", "A ztunnel lost its xDS stream: connection errors, 404 from every istiod, "
              "absent from syncz.", "R07 XDS_DISCONNECTED", ("xds", "logs", "collection-gaps"),
              {"node": "the node"}, _xds_disconnected),
    FaultType("xds-nack", "A ztunnel rejects istiod's config: NACKs in its log, syncz not ACKed, ACK ERROR in istiod.",
              "R23 VERSION_SKEW_OR_UPGRADE_ORDER (xDS NACK)", ("xds", "logs"), {"node": "the node"}, _xds_nack),
    FaultType("pod-not-enrolled", "A pod expected in ambient is not captured: redirection pending or absent, "
              "istio-cni errors.", "R06 POD_NOT_ENROLLED", ("ztunnel-kubernetes", "logs"),
              {"pod": "namespace/app", "annotation": "pending | absent"}, _not_enrolled),
    FaultType("hbone-blocked", "A NetworkPolicy allows only app ports into a namespace: HBONE (15008) times out.",
              "R01 HBONE_PORT_BLOCKED", ("logs", "traffic-path", "metrics"),
              {"namespace": "the destination namespace"}, _hbone_blocked),
    FaultType("policy-denial", "An L4 ALLOW policy matches none of a service's clients: connections rejected.",
              "R03 AUTHZ_ALLOW_NO_MATCH", ("logs", "metrics"),
              {"service": "namespace/name", "allow": "the only principal allowed"}, _policy_denial),
    FaultType("waypoint-missing", "istio.io/use-waypoint names a Gateway that is missing or not ready.",
              "R13 WAYPOINT_NOT_BOUND", ("waypoints",),
              {"namespace": "namespace", "waypoint": "Gateway name", "mode": "missing | not-ready"},
              _waypoint_missing),
    FaultType("ztunnel-oomkilled", "A ztunnel was OOMKilled and restarted several times.",
              "R24 ZTUNNEL_RESTARTS_OOM", ("ztunnel-health",), {"node": "the node", "restarts": "count"},
              _ztunnel_oom),
    FaultType("version-skew", "One node runs a ztunnel two minor versions behind istiod.",
              "R23 VERSION_SKEW_OR_UPGRADE_ORDER", ("versions",),
              {"node": "the node", "ztunnelVersion": "default: istiod minor - 2"}, _version_skew),
    FaultType("lb-skew", "One endpoint of a service takes most connections.", "R29 L4_LB_EXPECTATION",
              ("load-balancing",), {"service": "namespace/name", "share": "favoured endpoint's share (0.9)"},
              _lb_skew),
)}


def apply_faults(cluster: Cluster, faults: tuple[FaultSpec, ...]) -> Effects:
    effects = Effects()
    for spec in faults:
        fault = CATALOG.get(spec.type)
        if fault is None:
            raise ScenarioError(f"unknown fault {spec.type!r}; see 'bundle synth --list-faults'")
        unknown = set(spec.params) - set(fault.params)
        if unknown:
            raise ScenarioError(f"fault {spec.type}: unknown parameter(s) {', '.join(sorted(unknown))}")
        fault.apply(cluster, effects, spec.params)
    return effects
