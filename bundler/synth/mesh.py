"""Istio's view of the synthetic cluster: workloads, services and authorization policies, rendered both
as ztunnel shows them in ``/config_dump`` and as istiod sends them (proto-JSON), per formats.md sections
2.3-2.5 and 3.4-3.5. Fields appear only in the Istio versions that have them."""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

from bundler.synth.cluster import HBONE_PORT, ISTIO_NAMESPACE, Cluster, Pod, Service, selects, service_endpoints
from bundler.synth.scenario import PolicySpec

STRICT_POLICY = "istio_converted_static_strict"


def _ip_bytes(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed


def b64_ip(ip: str, ascii_text: bool = False) -> str:
    """An IP as proto ``bytes`` in jsonpb: base64 of the raw address, or (istiod's /debug/ambientz quirk,
    formats.md 3.3) base64 of its ASCII text."""
    raw = ip.encode() if ascii_text else _ip_bytes(ip)
    return base64.b64encode(raw).decode()


class MeshView:
    """Computes each workload, service and policy once; dumps of every node share these objects."""

    def __init__(self, cluster: Cluster, minor: int | None = None) -> None:
        self.cluster = cluster
        self.scenario = cluster.scenario
        # The Istio minor version whose fields to render (a skewed ztunnel shows its own version's fields).
        self.minor = minor if minor is not None else cluster.scenario.istio_minor[1]
        self.waypoint_ip = {w.key: w.address for w in cluster.waypoints}
        self.node_zone = {n.name: n.zone for n in cluster.nodes}
        self.workload_pods = [p for p in cluster.pods if p.ip and p.phase not in ("Succeeded", "Failed")]
        self.services_of: dict[str, list[Service]] = {}
        self.endpoints: dict[str, list[Pod]] = {}
        for svc in cluster.services:
            backends = service_endpoints(cluster, svc)
            self.endpoints[svc.key] = backends
            for pod in backends:
                self.services_of.setdefault(pod.key, []).append(svc)
        self.policy_specs = list(cluster.policies)
        self.selector_policies: dict[str, list[str]] = {}
        for pol in self.policy_specs:
            if pol.selector:
                for pod in cluster.pods:
                    if pod.namespace == pol.namespace and selects(pol.selector, pod.labels):
                        self.selector_policies.setdefault(pod.key, []).append(f"{pol.namespace}/{pol.name}")

    # --- helpers ---------------------------------------------------------------------------------------------

    def at_least(self, minor: int) -> bool:
        return self.minor >= minor

    def protocol(self, pod: Pod) -> str:
        if pod.native_tunnel or self.cluster.enrolled(pod):
            return "HBONE"
        return "TCP"

    def identity(self, pod: Pod) -> str:
        return f"spiffe://{self.scenario.trust_domain}/ns/{pod.namespace}/sa/{pod.service_account}"

    def workload_type(self, pod: Pod) -> str:
        if self.at_least(26) or pod.owner_kind != "ReplicaSet":
            return "pod"
        return "deployment"

    # --- ztunnel /config_dump form ---------------------------------------------------------------------------

    def ztunnel_workload(self, pod: Pod) -> dict[str, Any]:
        sc = self.scenario
        wl: dict[str, Any] = {
            "workloadIps": [pod.ip],
            "protocol": self.protocol(pod),
            "uid": pod.istio_uid(sc.cluster_id),
            "name": pod.name,
            "namespace": pod.namespace,
            "trustDomain": sc.trust_domain,
            "serviceAccount": pod.service_account,
            "workloadName": pod.workload_name,
            "workloadType": self.workload_type(pod),
            "canonicalName": pod.labels.get("app", pod.workload_name),
            "canonicalRevision": pod.labels.get("version", "latest"),
            "node": pod.node,
            "status": "Healthy" if pod.ready and pod.phase == "Running" else "Unhealthy",
            "clusterId": sc.cluster_id,
            "locality": {"region": "region-1", "subzone": "", "zone": self.node_zone.get(pod.node, "")},
        }
        if self.at_least(24):
            wl["networkMode"] = "HostNetwork" if pod.host_network else "Standard"
            services = self.services_of.get(pod.key)
            if services:
                wl["services"] = [s.key for s in services]
        if self.at_least(26):
            wl["capacity"] = 1
        if pod.native_tunnel:
            wl["nativeTunnel"] = True
        policies = self.selector_policies.get(pod.key)
        if policies:
            wl["authorizationPolicies"] = policies
        return wl

    def ztunnel_service(self, svc: Service, backends: list[Pod] | None = None) -> dict[str, Any]:
        sc = self.scenario
        backends = self.endpoints[svc.key] if backends is None else backends
        ports = {str(p): tp for p, tp in svc.ports}
        out: dict[str, Any] = {
            "name": svc.name,
            "namespace": svc.namespace,
            "hostname": svc.hostname,
            "vips": [f"/{svc.cluster_ip}"],
            "ports": ports,
            "subjectAltNames": [],
        }
        endpoints: dict[str, Any] = {}
        for pod in backends:
            uid = pod.istio_uid(sc.cluster_id)
            if self.at_least(24):
                endpoints[uid] = {"port": dict(ports), "status": "Healthy" if pod.ready else "Unhealthy",
                                  "workloadUid": uid}
            else:
                endpoints[f"{uid}:/{pod.ip}"] = {"address": f"/{pod.ip}", "port": dict(ports),
                                                 "service": svc.key, "workloadUid": uid}
        out["endpoints"] = endpoints
        if svc.waypoint:
            out["waypoint"] = {"destination": f"/{self.waypoint_ip[svc.waypoint]}", "hboneMtlsPort": HBONE_PORT}
        if self.at_least(23):
            out["ipFamilies"] = "IPv4"
        if self.at_least(29):
            out["canonical"] = True
        if self.at_least(31):
            out["visibility"] = "Public"
        return out

    def policies(self) -> list[tuple[str, str, str, str, list[list[list[dict[str, Any]]]]]]:
        """(namespace, name, scope, action, rules) in ztunnel's rule nesting, including istiod-made ones."""
        out = []
        for pa in self.scenario.peer_authentications:
            if pa.mode != "STRICT":
                continue
            if pa.namespace == ISTIO_NAMESPACE:
                out.append((ISTIO_NAMESPACE, STRICT_POLICY, "Global", "Deny",
                            [[[{"notPrincipals": [{"Presence": []}]}]]]))
            else:
                out.append((pa.namespace, f"converted_peer_authentication_{pa.name}", "Namespace", "Deny",
                            [[[{"notPrincipals": [{"Presence": []}]}]]]))
        for pol in self.policy_specs:
            out.append((pol.namespace, pol.name, _scope(pol), pol.action.capitalize(), _rules(pol)))
        return sorted(out, key=lambda p: (p[0], p[1]))

    def ztunnel_policies(self) -> list[dict[str, Any]]:
        out = []
        for namespace, name, scope, action, rules in self.policies():
            pol: dict[str, Any] = {"action": action, "name": name, "namespace": namespace, "rules": rules,
                                   "scope": scope}
            if self.at_least(29):
                pol["dryRun"] = False
            out.append(pol)
        return out

    # --- istiod proto-JSON form ------------------------------------------------------------------------------

    def proto_workload(self, pod: Pod, ascii_ips: bool = False) -> dict[str, Any]:
        sc = self.scenario
        wl: dict[str, Any] = {
            "uid": pod.istio_uid(sc.cluster_id),
            "name": pod.name,
            "namespace": pod.namespace,
            "addresses": [b64_ip(pod.ip, ascii_ips)],
        }
        if self.protocol(pod) == "HBONE":
            wl["tunnelProtocol"] = "HBONE"
        wl["trustDomain"] = sc.trust_domain
        wl["serviceAccount"] = pod.service_account
        wl["node"] = pod.node
        wl["canonicalName"] = pod.labels.get("app", pod.workload_name)
        wl["canonicalRevision"] = pod.labels.get("version", "latest")
        workload_type = self.workload_type(pod).upper()
        if workload_type != "DEPLOYMENT":
            wl["workloadType"] = workload_type
        wl["workloadName"] = pod.workload_name
        if pod.native_tunnel:
            wl["nativeTunnel"] = True
        services = self.services_of.get(pod.key)
        if services:
            wl["services"] = {s.key: {"ports": [{"servicePort": p, "targetPort": tp} for p, tp in s.ports]}
                              for s in services}
        policies = self.selector_policies.get(pod.key)
        if policies:
            wl["authorizationPolicies"] = policies
        if not (pod.ready and pod.phase == "Running"):
            wl["status"] = "UNHEALTHY"
        wl["clusterId"] = sc.cluster_id
        wl["locality"] = {"region": "region-1", "zone": self.node_zone.get(pod.node, "")}
        if pod.host_network and self.at_least(24):
            wl["networkMode"] = "HOST_NETWORK"
        return wl

    def proto_service(self, svc: Service, ascii_ips: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": svc.name,
            "namespace": svc.namespace,
            "hostname": svc.hostname,
            "addresses": [{"address": b64_ip(svc.cluster_ip, ascii_ips)}],
            "ports": [{"servicePort": p, "targetPort": tp} for p, tp in svc.ports],
        }
        if svc.waypoint:
            out["waypoint"] = {"address": {"address": b64_ip(self.waypoint_ip[svc.waypoint], ascii_ips)},
                               "hboneMtlsPort": HBONE_PORT}
        if self.at_least(23):
            out["ipFamilies"] = "IPV4_ONLY"
        if self.at_least(29):
            out["canonical"] = True
        return out

    def proto_policies(self) -> list[dict[str, Any]]:
        out = []
        for namespace, name, scope, action, rules in self.policies():
            pol: dict[str, Any] = {"name": name, "namespace": namespace}
            proto_scope = {"Global": None, "Namespace": "NAMESPACE", "WorkloadSelector": "WORKLOAD_SELECTOR"}[scope]
            if proto_scope:
                pol["scope"] = proto_scope
            if action == "Deny":
                pol["action"] = "DENY"
            if rules:
                pol["groups"] = [{"rules": [{"matches": [_proto_match(m) for m in clause]} for clause in rule]}
                                 for rule in rules]
            out.append(pol)
        return out


def _scope(pol: PolicySpec) -> str:
    if pol.selector:
        return "WorkloadSelector"
    return "Global" if pol.namespace == ISTIO_NAMESPACE else "Namespace"


def _rules(pol: PolicySpec) -> list[list[list[dict[str, Any]]]]:
    """One rule whose clauses are AND-ed: the sources, then the ports."""
    clauses: list[list[dict[str, Any]]] = []
    source: dict[str, Any] = {}
    if pol.from_principals:
        source["principals"] = [{"Exact": p} for p in pol.from_principals]
    if pol.from_namespaces:
        source["namespaces"] = [{"Exact": n} for n in pol.from_namespaces]
    if source:
        clauses.append([source])
    if pol.to_ports:
        clauses.append([{"destinationPorts": list(pol.to_ports)}])
    if not clauses:
        # An ALLOW with no rules allows nothing; a DENY with no rules is dropped by istiod. Keep the shape.
        return []
    return [clauses]


def _proto_match(match: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, values in match.items():
        if key in ("destinationPorts", "notDestinationPorts"):
            out[key] = values
        else:
            out[key] = [{"presence": {}} if "Presence" in v else {k.lower(): val for k, val in v.items()}
                        for v in values]
    return out
