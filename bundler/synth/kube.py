"""Kubernetes objects of the synthetic cluster, as the API server returns them (lists with items)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bundler.synth.cluster import ISTIO_NAMESPACE, Cluster, Ids, Pod, service_endpoints
from bundler.synth.dumps import rfc3339


def api_list(kind: str, items: list[dict[str, Any]], api_version: str = "v1", resource_version: str = "1000") -> dict:
    return {"apiVersion": api_version, "items": items, "kind": f"{kind}List",
            "metadata": {"resourceVersion": resource_version}}


class KubeRenderer:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.sc = cluster.scenario
        self.ids = Ids(self.sc.seed, self.sc.name)

    def _meta(self, name: str, namespace: str | None, created, labels=None, annotations=None, uid=None,
              **extra: Any) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name}
        if namespace is not None:
            meta["namespace"] = namespace
        meta["uid"] = uid or self.ids.uid("obj", namespace, name)
        # Derived from the object, not from a counter: the same object gets the same version whatever order
        # the lists are rendered in (an archive and `bundle serve` render them in different orders).
        meta["resourceVersion"] = str(1000 + int(self.ids.hexstr(6, "rv", meta["uid"]), 16))
        meta["creationTimestamp"] = rfc3339(created)
        if labels:
            meta["labels"] = dict(labels)
        if annotations:
            meta["annotations"] = dict(annotations)
        meta.update(extra)
        return meta

    def version(self) -> dict[str, Any]:
        v = self.sc.kubernetes_version.lstrip("v")
        major, minor = v.split(".")[:2]
        return {"major": major, "minor": minor, "gitVersion": f"v{v}", "gitCommit": self.ids.hexstr(40, "k8s"),
                "gitTreeState": "clean", "buildDate": "2026-10-15T10:00:00Z", "goVersion": "go1.24.9",
                "compiler": "gc", "platform": "linux/amd64"}

    def nodes(self) -> dict[str, Any]:
        items = []
        boot = self.cluster.start - timedelta(days=30)
        for node in self.cluster.nodes:
            items.append({
                "apiVersion": "v1", "kind": "Node",
                "metadata": self._meta(node.name, None, boot, labels={
                    "kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux",
                    "topology.kubernetes.io/region": "region-1", "topology.kubernetes.io/zone": node.zone}),
                "spec": {"podCIDR": f"10.128.{node.index * 4 % 256}.0/22", "providerID": f"kind://docker/{node.name}"},
                "status": {
                    "addresses": [{"address": node.ip, "type": "InternalIP"},
                                  {"address": node.name, "type": "Hostname"}],
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                    "message": "kubelet is posting ready status",
                                    "lastTransitionTime": rfc3339(boot)}],
                    "nodeInfo": {"kubeletVersion": self.sc.kubernetes_version, "osImage": "Debian GNU/Linux 12",
                                 "kubeProxyVersion": self.sc.kubernetes_version,
                                 "bootID": self.ids.uid("boot", node.name), "machineID": self.ids.hexstr(32, "machine", node.name),
                                 "systemUUID": self.ids.uid("system", node.name),
                                 "containerRuntimeVersion": "containerd://2.1.4", "architecture": "amd64",
                                 "kernelVersion": "6.12.48", "operatingSystem": "linux"},
                },
            })
        return api_list("Node", items)

    def namespaces(self) -> dict[str, Any]:
        boot = self.cluster.start - timedelta(days=30)
        items = [{"apiVersion": "v1", "kind": "Namespace",
                  "metadata": self._meta(name, None, boot, labels=labels),
                  "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
                 for name, labels in sorted(self.cluster.namespaces.items())]
        return api_list("Namespace", items)

    def pod(self, pod: Pod) -> dict[str, Any]:
        env = [{"name": "ISTIO_META_ISTIO_VERSION", "value": pod.version}] if pod.component != "app" else []
        if pod.component == "ztunnel":
            env += [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}},
                    {"name": "CA_ADDRESS", "value": "istiod.istio-system.svc:15012"}]
        container: dict[str, Any] = {"name": pod.container, "image": pod.image,
                                     "ports": [{"containerPort": p, "protocol": "TCP"} for p in pod.ports]}
        if env:
            container["env"] = env
        if pod.component == "ztunnel":
            container["resources"] = {"limits": {"memory": "1Gi"}, "requests": {"cpu": "200m", "memory": "512Mi"}}
            container["readinessProbe"] = {"httpGet": {"path": "/healthz/ready", "port": 15021}}
        started = rfc3339(pod.created + timedelta(seconds=20))
        status: dict[str, Any] = {"restartCount": pod.restarts, "ready": pod.ready, "started": pod.ready,
                                  "name": pod.container, "image": pod.image,
                                  "imageID": f"{pod.image.split(':')[0]}@sha256:{self.ids.hexstr(64, pod.image)}",
                                  "containerID": f"containerd://{self.ids.hexstr(64, 'ctr', pod.key, pod.restarts)}",
                                  "state": {"running": {"startedAt": started}}}
        if pod.last_termination:
            status["lastState"] = {"terminated": {"exitCode": 137, "reason": pod.last_termination,
                                                  "startedAt": rfc3339(self.sc.now - timedelta(minutes=50)),
                                                  "finishedAt": rfc3339(self.sc.now - timedelta(minutes=20))}}
            status["state"] = {"running": {"startedAt": rfc3339(self.sc.now - timedelta(minutes=20))}}
        else:
            status["lastState"] = {}
        owner = {"apiVersion": "apps/v1", "kind": pod.owner_kind, "name": pod.owner_name,
                 "uid": self.ids.uid("owner", pod.namespace, pod.owner_name), "controller": True,
                 "blockOwnerDeletion": True}
        spec: dict[str, Any] = {"containers": [container], "nodeName": pod.node,
                                "serviceAccountName": pod.service_account, "restartPolicy": "Always",
                                "dnsPolicy": "ClusterFirst", "terminationGracePeriodSeconds": 30}
        if pod.host_network:
            spec["hostNetwork"] = True
        node_ip = next(n.ip for n in self.cluster.nodes if n.name == pod.node)
        conditions = [{"type": t, "status": "True" if (pod.ready or t in ("PodScheduled", "Initialized")) else "False",
                       "lastTransitionTime": started} for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": self._meta(pod.name, pod.namespace, pod.created, labels=pod.labels,
                                   annotations=pod.annotations or None, uid=pod.uid, ownerReferences=[owner]),
            "spec": spec,
            "status": {"phase": pod.phase, "conditions": conditions, "hostIP": node_ip,
                       "hostIPs": [{"ip": node_ip}], "podIP": pod.ip, "podIPs": [{"ip": pod.ip}],
                       "startTime": rfc3339(pod.created), "qosClass": "Burstable", "containerStatuses": [status]},
        }

    def pods(self) -> dict[str, Any]:
        return api_list("Pod", [self.pod(p) for p in sorted(self.cluster.pods, key=lambda p: (p.namespace, p.name))])

    def services(self) -> dict[str, Any]:
        items = []
        for svc in sorted(self.cluster.services, key=lambda s: (s.namespace, s.name)):
            obj: dict[str, Any] = {
                "apiVersion": "v1", "kind": "Service",
                "metadata": self._meta(svc.name, svc.namespace, svc.created, labels=svc.labels or None),
                "spec": {"clusterIP": svc.cluster_ip, "clusterIPs": [svc.cluster_ip], "type": "ClusterIP",
                         "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "selector": dict(svc.selector),
                         "ports": [{"name": f"tcp-{p}", "port": p, "protocol": "TCP", "targetPort": tp}
                                   for p, tp in svc.ports]},
                "status": {"loadBalancer": {}},
            }
            if svc.waypoint_bound is not None:
                ok, reason, message = svc.waypoint_bound
                obj["status"]["conditions"] = [{"type": "istio.io/WaypointBound", "status": "True" if ok else "False",
                                                "reason": reason, "message": message,
                                                "lastTransitionTime": rfc3339(self.cluster.start),
                                                "observedGeneration": 1}]
            items.append(obj)
        return api_list("Service", items)

    def endpointslices(self) -> dict[str, Any]:
        items = []
        for svc in sorted(self.cluster.services, key=lambda s: (s.namespace, s.name)):
            backends = service_endpoints(self.cluster, svc)
            items.append({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                "metadata": self._meta(f"{svc.name}-{self.ids.suffix(5, 'eps', svc.key)}", svc.namespace, svc.created,
                                       labels={"kubernetes.io/service-name": svc.name,
                                               "endpointslice.kubernetes.io/managed-by":
                                                   "endpointslice-controller.k8s.io"}),
                "endpoints": [{"addresses": [p.ip], "nodeName": p.node,
                               "conditions": {"ready": p.ready, "serving": p.ready, "terminating": False},
                               "targetRef": {"kind": "Pod", "name": p.name, "namespace": p.namespace, "uid": p.uid}}
                              for p in backends],
                "ports": [{"name": f"tcp-{p}", "port": tp, "protocol": "TCP"} for p, tp in svc.ports],
            })
        return api_list("EndpointSlice", items, "discovery.k8s.io/v1")

    def events(self) -> dict[str, Any]:
        items = []
        for zt in sorted(self.cluster.ztunnels.values(), key=lambda p: p.name):
            if zt.last_termination:
                items.append(self._event(zt, "Warning", "BackOff", "Back-off restarting failed container istio-proxy "
                                         f"in pod {zt.name}_{zt.namespace}({zt.uid})", zt.restarts))
        for pod in self.cluster.pods:
            if pod.component == "waypoint" and not pod.ready:
                items.append(self._event(pod, "Warning", "Unhealthy",
                                         "Readiness probe failed: HTTP probe failed with statuscode: 503", 40))
        return api_list("Event", items)

    def _event(self, pod: Pod, type_: str, reason: str, message: str, count: int) -> dict[str, Any]:
        first, last = self.cluster.start, self.sc.now - timedelta(minutes=2)
        name = f"{pod.name}.{self.ids.hexstr(16, 'event', pod.key, reason)}"
        return {"apiVersion": "v1", "kind": "Event",
                "metadata": self._meta(name, pod.namespace, first),
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod.name, "namespace": pod.namespace,
                                   "uid": pod.uid, "fieldPath": f"spec.containers{{{pod.container}}}"},
                "reason": reason, "message": message, "type": type_, "count": count,
                "firstTimestamp": rfc3339(first), "lastTimestamp": rfc3339(last),
                "source": {"component": "kubelet", "host": pod.node},
                "reportingComponent": "kubelet", "reportingInstance": pod.node}

    def networkpolicies(self) -> dict[str, Any]:
        items = [{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                  "metadata": self._meta(np["name"], np["namespace"], self.cluster.start - timedelta(days=1)),
                  "spec": np["spec"]} for np in self.cluster.network_policies]
        return api_list("NetworkPolicy", items, "networking.k8s.io/v1")

    def configmaps(self) -> dict[str, Any]:
        boot = self.cluster.start - timedelta(days=3)
        mesh = ("defaultConfig:\n  discoveryAddress: istiod.istio-system.svc:15012\n"
                f"defaultProviders:\n  metrics:\n  - prometheus\nenablePrometheusMerge: true\nrootNamespace: {ISTIO_NAMESPACE}\n"
                f"trustDomain: {self.sc.trust_domain}\n")
        items = [
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": self._meta("istio", ISTIO_NAMESPACE, boot, labels={"app": "istiod", "istio.io/rev": "default"}),
             "data": {"mesh": mesh, "meshNetworks": "networks: {}"}},
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": self._meta("istio-cni-config", self.sc.cni_namespace, boot, labels={"app": "istio-cni"}),
             "data": {"AMBIENT_ENABLED": "true", "AMBIENT_DNS_CAPTURE": "true" if self.sc.at_least(1, 25) else "false",
                      "AMBIENT_IPV6": "true", "CURRENT_AGENT_VERSION": self.cluster.cni_version,
                      "EXCLUDED_NAMESPACES": "kube-system", "CHAINED_CNI_PLUGIN": "true", "LOG_LEVEL": "info"}},
        ]
        return api_list("ConfigMap", items)

    def authorizationpolicies(self) -> dict[str, Any]:
        items = []
        for pol in self.cluster.policies:
            spec: dict[str, Any] = {"action": pol.action}
            if pol.selector:
                spec["selector"] = {"matchLabels": dict(pol.selector)}
            rule: dict[str, Any] = {}
            source: dict[str, Any] = {}
            if pol.from_principals:
                source["principals"] = list(pol.from_principals)
            if pol.from_namespaces:
                source["namespaces"] = list(pol.from_namespaces)
            if source:
                rule["from"] = [{"source": source}]
            if pol.to_ports:
                rule["to"] = [{"operation": {"ports": [str(p) for p in pol.to_ports]}}]
            if rule:
                spec["rules"] = [rule]
            items.append({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                          "metadata": self._meta(pol.name, pol.namespace, self.cluster.start - timedelta(days=1),
                                                 generation=1),
                          "spec": spec,
                          "status": {"conditions": [{"type": "ZtunnelAccepted", "status": "True", "reason": "Accepted",
                                                     "message": "attached to ztunnel", "observedGeneration": "1"}]}})
        return api_list("AuthorizationPolicy", items, "security.istio.io/v1")

    def peerauthentications(self) -> dict[str, Any]:
        items = [{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                  "metadata": self._meta(pa.name, pa.namespace, self.cluster.start - timedelta(days=1)),
                  "spec": {"mtls": {"mode": pa.mode}}} for pa in self.sc.peer_authentications]
        return api_list("PeerAuthentication", items, "security.istio.io/v1")

    def gateways(self) -> dict[str, Any]:
        items = []
        for wp in self.cluster.waypoints:
            if not wp.exists:
                continue
            conditions = [
                {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "Resource accepted"},
                {"type": "Programmed", "status": "True" if wp.ready else "False",
                 "reason": "Programmed" if wp.ready else "NoAddresses",
                 "message": "Resource programmed" if wp.ready else "Assigned to service(s) but no pods are ready"},
            ]
            status: dict[str, Any] = {"conditions": conditions}
            if wp.ready:
                status["addresses"] = [{"type": "IPAddress", "value": wp.address}]
            items.append({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": self._meta(wp.name, wp.namespace, self.cluster.start - timedelta(days=2),
                                       labels={"istio.io/waypoint-for": wp.waypoint_for}),
                "spec": {"gatewayClassName": "istio-waypoint",
                         "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]},
                "status": status,
            })
        return api_list("Gateway", items, "gateway.networking.k8s.io/v1")

