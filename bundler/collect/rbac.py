"""The permissions ``bundle collect`` needs: a preflight that names what is missing and what it will cost,
and the minimal read-only ClusterRole (``bundle rbac``)."""

from __future__ import annotations

from dataclasses import dataclass

from bundler.collect.kube import Kube


@dataclass(frozen=True)
class Permission:
    verb: str
    resource: str
    group: str = ""
    subresource: str | None = None
    needed_for: str = ""


PERMISSIONS: tuple[Permission, ...] = (
    Permission("list", "pods", needed_for="finding ztunnel, istiod and istio-cni, and the pods list"),
    Permission("get", "pods", subresource="log", needed_for="every log"),
    Permission("create", "pods", subresource="portforward",
               needed_for="ztunnel config dumps (admin port 15000) and istiod's debug views (15014)"),
    Permission("get", "pods", subresource="proxy", needed_for="ztunnel metrics (15020)"),
    Permission("list", "nodes", needed_for="nodes and scope"),
    Permission("list", "namespaces", needed_for="namespace ambient labels"),
    Permission("list", "services", needed_for="services"),
    Permission("list", "endpointslices", "discovery.k8s.io", needed_for="endpoint slices"),
    Permission("list", "events", needed_for="events"),
    Permission("list", "networkpolicies", "networking.k8s.io", needed_for="network policies (HBONE 15008)"),
    Permission("list", "configmaps", needed_for="mesh config and istio-cni-config"),
    Permission("list", "authorizationpolicies", "security.istio.io", needed_for="authorization policies"),
    Permission("list", "peerauthentications", "security.istio.io", needed_for="peer authentications"),
    Permission("list", "gateways", "gateway.networking.k8s.io", needed_for="waypoints"),
)

CLUSTER_ROLE = """\
# Read-only access for `bundle collect` (ztunnel-bundle). It reads; the only "create" is pods/portforward,
# which opens a tunnel to a pod's port (ztunnel's admin port listens on localhost only). No Secrets.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: ztunnel-bundle-collector
rules:
- apiGroups: [""]
  resources: [pods, nodes, namespaces, services, events, configmaps]
  verbs: [get, list]
- apiGroups: [""]
  resources: [pods/log, pods/proxy]
  verbs: [get]
- apiGroups: [""]
  resources: [pods/portforward]
  verbs: [create, get]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list]
- apiGroups: [security.istio.io, networking.istio.io, telemetry.istio.io, gateway.networking.k8s.io]
  resources: ["*"]
  verbs: [get, list]
- apiGroups: [authorization.k8s.io]
  resources: [selfsubjectaccessreviews]
  verbs: [create]
"""


def preflight(kube: Kube) -> tuple[list[str], bool]:
    """(messages naming each missing permission and what it costs, whether the review could be made)."""
    from concurrent.futures import ThreadPoolExecutor

    def review(p: Permission) -> bool | None:
        return kube.can_i(p.verb, p.resource, p.group, subresource=p.subresource)

    # The reviews at once (as many as the client's connection pool holds): one after another they cost a round
    # trip each before anything is collected.
    parallel = max(1, min(len(PERMISSIONS), getattr(getattr(kube, "config", None), "connection_pool_maxsize", 1) or 1))
    with ThreadPoolExecutor(parallel, thread_name_prefix="preflight") as pool:
        answers = list(pool.map(review, PERMISSIONS))
    missing = []
    for p, allowed in zip(PERMISSIONS, answers):
        if allowed is None:
            return ["the permission preflight could not run (SelfSubjectAccessReview failed); going on"], False
        if not allowed:
            what = f"{p.resource}/{p.subresource}" if p.subresource else p.resource
            group = f" in {p.group}" if p.group else ""
            missing.append(f"missing permission: {p.verb} {what}{group}: {p.needed_for} will be skipped")
    return missing, True
