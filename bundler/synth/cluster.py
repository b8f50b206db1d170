"""The cluster a scenario describes: nodes, pods with IPs, services, waypoints, policies and the Istio
components, all consistent with each other. Every other synth module renders views of this one state."""

from __future__ import annotations

import hashlib
import ipaddress
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bundler.synth.scenario import (
    Deployment,
    NamespaceSpec,
    PolicySpec,
    Scenario,
    ServiceSpec,
    TrafficSpec,
    WaypointSpec,
)

ISTIO_NAMESPACE = "istio-system"
HBONE_PORT = 15008
_POD_BASE = int(ipaddress.IPv4Address("10.128.0.0"))
_ALNUM = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet Kubernetes uses for generated name suffixes


@dataclass
class Node:
    name: str
    ip: str
    index: int
    zone: str


@dataclass
class Pod:
    name: str
    namespace: str
    uid: str  # Kubernetes metadata.uid
    ip: str
    node: str
    labels: dict[str, str]
    annotations: dict[str, str]
    service_account: str
    app: str
    version: str
    ports: tuple[int, ...]
    created: datetime
    owner_kind: str = "ReplicaSet"
    owner_name: str = ""
    workload_name: str = ""
    host_network: bool = False
    ready: bool = True
    phase: str = "Running"
    restarts: int = 0
    last_termination: str | None = None
    image: str = ""
    container: str = "app"
    component: str = "app"  # app | ztunnel | istiod | cni | waypoint
    native_tunnel: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def istio_uid(self, cluster_id: str) -> str:
        return f"{cluster_id}//Pod/{self.namespace}/{self.name}"


@dataclass
class Service:
    name: str
    namespace: str
    cluster_ip: str
    ports: tuple[tuple[int, int], ...]
    selector: dict[str, str]
    labels: dict[str, str]
    created: datetime
    waypoint: str | None = None  # "namespace/name" of the Gateway it uses, if any
    waypoint_bound: tuple[bool, str, str] | None = None  # (status, reason, message) of istio.io/WaypointBound

    @property
    def hostname(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.hostname}"


@dataclass
class Waypoint:
    name: str
    namespace: str
    waypoint_for: str
    ready: bool
    exists: bool = True
    address: str = ""  # the waypoint Service's cluster IP

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class Flow:
    """Connections from one client pod to one destination pod through a service."""

    source: Pod
    service: Service
    destination: Pod
    port: int
    target_port: int
    connections: int


@dataclass
class Cluster:
    scenario: Scenario
    nodes: list[Node]
    namespaces: dict[str, dict[str, str]]  # name -> labels
    pods: list[Pod]
    services: list[Service]
    waypoints: list[Waypoint]
    policies: list[PolicySpec]
    ztunnels: dict[str, Pod]  # node -> ztunnel pod
    cni_pods: dict[str, Pod]  # node -> istio-cni pod
    istiods: list[Pod]
    flows: list[Flow]
    xds_replica: dict[str, str]  # ztunnel pod name -> istiod pod it is connected to
    ztunnel_versions: dict[str, str] = field(default_factory=dict)  # node -> Istio version of its ztunnel
    istiod_version: str = ""
    cni_version: str = ""
    deleted_pods: list[Pod] = field(default_factory=list)  # gone from Kubernetes (stale-workload fault)
    network_policies: list[dict] = field(default_factory=list)
    _indexes: dict[str, tuple[tuple, dict[str, list[Pod]]]] = field(default_factory=dict, repr=False)

    @property
    def start(self) -> datetime:
        return self.scenario.now - self.scenario.window

    def pods_on(self, node: str) -> list[Pod]:
        return self._index("node").get(node, [])

    def namespace_pods(self) -> dict[str, list[Pod]]:
        return self._index("namespace")

    def _index(self, attribute: str) -> dict[str, list[Pod]]:
        # Faults may replace the pod list; the index follows it.
        key = (attribute, id(self.pods), len(self.pods))
        cached = self._indexes.get(attribute)
        if cached is None or cached[0] != key:
            index: dict[str, list[Pod]] = {}
            for pod in self.pods:
                index.setdefault(getattr(pod, attribute), []).append(pod)
            cached = (key, index)
            self._indexes[attribute] = cached
        return cached[1]

    def pod_by_key(self, key: str) -> Pod | None:
        return next((p for p in self.pods if p.key == key), None)

    def service_by_key(self, namespace: str, name: str) -> Service | None:
        return next((s for s in self.services if s.namespace == namespace and s.name == name), None)

    def ambient_expected(self, pod: Pod) -> bool:
        """The istio-cni enablement predicate of failure-modes.md section 0.6 (default selectors)."""
        if pod.host_network or pod.component != "app" or not pod.ip or pod.phase in ("Succeeded", "Failed"):
            return False
        if "sidecar.istio.io/status" in pod.annotations or pod.namespace == "kube-system":
            return False
        mode = pod.labels.get("istio.io/dataplane-mode")
        if mode == "ambient":
            return True
        return self.namespaces.get(pod.namespace, {}).get("istio.io/dataplane-mode") == "ambient" and mode != "none"

    def enrolled(self, pod: Pod) -> bool:
        return pod.annotations.get("ambient.istio.io/redirection") == "enabled"


class Ids:
    """Deterministic identifiers and randomness, one independent stream per purpose, so that adding a fault
    or a namespace does not reshuffle everything else."""

    def __init__(self, seed: int, name: str) -> None:
        self.seed = seed
        self.name = name

    def rng(self, *purpose: object) -> random.Random:
        return random.Random(f"{self.seed}/{self.name}/" + "/".join(map(str, purpose)))

    def uid(self, *purpose: object) -> str:
        return str(uuid.UUID(bytes=hashlib.sha256(f"{self.seed}/uid/{purpose}".encode()).digest()[:16], version=4))

    def suffix(self, length: int, *purpose: object) -> str:
        rng = self.rng("suffix", *purpose)
        return "".join(rng.choice(_ALNUM) for _ in range(length))

    def hexstr(self, length: int, *purpose: object) -> str:
        return hashlib.sha256(f"{self.seed}/hex/{purpose}".encode()).hexdigest()[:length]


def _bulk_namespaces(scenario: Scenario) -> list[NamespaceSpec]:
    gen = scenario.generate
    out = []
    rng = random.Random(f"{scenario.seed}/generate")
    for n in range(gen.namespaces):
        ambient = rng.random() < gen.ambient_fraction
        deployments = tuple(
            Deployment(name=f"svc-{d:03d}-v1", app=f"svc-{d:03d}", version="v1", replicas=gen.replicas,
                       service_account=f"svc-{d:03d}", ports=(8080,))
            for d in range(gen.deployments_per_namespace)
        )
        services = tuple(ServiceSpec(name=f"svc-{d:03d}", selector={"app": f"svc-{d:03d}"}, ports=((80, 8080),))
                         for d in range(gen.deployments_per_namespace))
        labels = {"istio.io/dataplane-mode": "ambient"} if ambient else {}
        out.append(NamespaceSpec(f"team-{n:03d}", ambient, labels, deployments, services, ()))
    return out


def _bulk_traffic(scenario: Scenario, namespaces: list[NamespaceSpec]) -> list[TrafficSpec]:
    per = scenario.generate.connections_per_deployment
    if not per:
        return []
    traffic = []
    for ns in namespaces:
        count = len(ns.deployments)
        for i, dep in enumerate(ns.deployments):
            target = ns.services[(i + 1) % count]
            traffic.append(TrafficSpec(f"{ns.name}/{dep.app}", f"{ns.name}/{target.name}", target.ports[0][0], per))
    return traffic


class _IpPool:
    def __init__(self) -> None:
        self.next_pod: dict[int, int] = {}
        self.next_service = 10

    def pod_ip(self, node: Node) -> str:
        # Each node owns a /22 of 10.128.0.0/9, as a CNI's per-node pod CIDR would.
        n = self.next_pod.get(node.index, 2)
        self.next_pod[node.index] = n + 1
        return str(ipaddress.IPv4Address(_POD_BASE + node.index * 1024 + n))

    def service_ip(self) -> str:
        n = self.next_service
        self.next_service += 1
        return f"10.96.{n // 256}.{n % 256}"


def build_cluster(scenario: Scenario) -> Cluster:
    ids = Ids(scenario.seed, scenario.name)
    nodes = [Node(name, f"172.18.{(i + 2) // 256}.{(i + 2) % 256}", i, f"zone-{'abc'[i % 3]}")
             for i, name in enumerate(scenario.nodes)]
    pool = _IpPool()
    start = scenario.now - scenario.window
    boot = start - timedelta(days=3)
    version = scenario.istio_version

    namespace_specs = list(scenario.namespaces) + _bulk_namespaces(scenario)
    namespaces: dict[str, dict[str, str]] = {
        ns: {"kubernetes.io/metadata.name": ns}
        for ns in sorted({ISTIO_NAMESPACE, scenario.ztunnel_namespace, scenario.cni_namespace})}
    for ns in namespace_specs:
        namespaces[ns.name] = {"kubernetes.io/metadata.name": ns.name, **ns.labels}

    pods: list[Pod] = []
    schedule = ids.rng("schedule")

    def add_pod(name: str, namespace: str, node: Node, **kw: object) -> Pod:
        pod = Pod(name=name, namespace=namespace, uid=ids.uid("pod", namespace, name), node=node.name,
                  ip=node.ip if kw.get("host_network") else pool.pod_ip(node), **kw)  # type: ignore[arg-type]
        pods.append(pod)
        return pod

    # Istio's own components: a ztunnel and an istio-cni pod per node, istiod replicas.
    ztunnels: dict[str, Pod] = {}
    cni_pods: dict[str, Pod] = {}
    for node in nodes:
        zt = add_pod(f"ztunnel-{ids.suffix(5, 'ztunnel', node.name)}", scenario.ztunnel_namespace, node,
                     labels={"app": "ztunnel", "sidecar.istio.io/inject": "false", "istio.io/dataplane-mode": "none"},
                     annotations={}, service_account="ztunnel", app="ztunnel", version=version, ports=(15020, 15021),
                     created=boot, owner_kind="DaemonSet", owner_name="ztunnel", workload_name="ztunnel",
                     image=f"docker.io/istio/ztunnel:{version}-distroless", container="istio-proxy",
                     component="ztunnel")
        ztunnels[node.name] = zt
        cni = add_pod(f"istio-cni-node-{ids.suffix(5, 'cni', node.name)}", scenario.cni_namespace, node,
                      labels={"k8s-app": "istio-cni-node", "sidecar.istio.io/inject": "false"}, annotations={},
                      service_account="istio-cni", app="istio-cni-node", version=version, ports=(15014,),
                      created=boot, owner_kind="DaemonSet", owner_name="istio-cni-node",
                      workload_name="istio-cni-node", host_network=True,
                      image=f"docker.io/istio/install-cni:{version}-distroless", container="install-cni",
                      component="cni")
        cni_pods[node.name] = cni
    rs_hash = ids.hexstr(10, "istiod-rs")
    istiods = [
        add_pod(f"istiod-{rs_hash}-{ids.suffix(5, 'istiod', i)}", ISTIO_NAMESPACE, nodes[i % len(nodes)],
                labels={"app": "istiod", "istio": "pilot", "istio.io/rev": "default",
                        "sidecar.istio.io/inject": "false"},
                annotations={}, service_account="istiod", app="istiod", version=version,
                ports=(8080, 15010, 15012, 15014, 15017), created=boot, owner_name=f"istiod-{rs_hash}",
                workload_name="istiod", image=f"docker.io/istio/pilot:{version}-distroless", container="discovery",
                component="istiod")
        for i in range(scenario.istiod_replicas)
    ]

    # Application workloads, spread over the nodes.
    services: list[Service] = []
    waypoints: list[Waypoint] = []
    for ns in namespace_specs:
        for wp in ns.waypoints:
            waypoints.append(_add_waypoint(ns, wp, nodes, ids, pool, add_pod, services, boot, version, schedule))
        for dep in ns.deployments:
            rs = ids.hexstr(10, "rs", ns.name, dep.name)
            for r in range(dep.replicas):
                node = nodes[schedule.randrange(len(nodes))]
                created = boot + timedelta(hours=schedule.randrange(1, 48))
                labels = {"app": dep.app, "version": dep.version, "pod-template-hash": rs, **dep.labels}
                add_pod(f"{dep.name}-{rs}-{ids.suffix(5, 'pod', ns.name, dep.name, r)}", ns.name, node,
                        labels=labels, annotations={}, service_account=dep.service_account, app=dep.app,
                        version=dep.version, ports=dep.ports, created=created, owner_name=f"{dep.name}-{rs}",
                        workload_name=dep.name, host_network=dep.host_network,
                        image=f"docker.io/istio/examples-{dep.app}:1.20.3")
        for svc in ns.services:
            services.append(Service(svc.name, ns.name, pool.service_ip(), svc.ports, svc.selector, dict(svc.labels),
                                    boot))

    cluster = Cluster(
        scenario=scenario, nodes=nodes, namespaces=namespaces, pods=pods, services=services, waypoints=waypoints,
        policies=list(scenario.policies), ztunnels=ztunnels, cni_pods=cni_pods, istiods=istiods, flows=[],
        xds_replica={}, istiod_version=version, cni_version=version,
        ztunnel_versions={n.name: version for n in nodes},
    )

    # istio-cni enrols the ambient-expected pods: the annotation says so.
    for pod in pods:
        if cluster.ambient_expected(pod):
            pod.annotations["ambient.istio.io/redirection"] = "enabled"

    bind_waypoints(cluster)
    assign = ids.rng("xds")
    for node in nodes:
        cluster.xds_replica[ztunnels[node.name].name] = istiods[assign.randrange(len(istiods))].name
    cluster.flows = _flows(cluster, list(scenario.traffic) + _bulk_traffic(scenario, namespace_specs), ids)
    return cluster


def _add_waypoint(ns: NamespaceSpec, wp: WaypointSpec, nodes: list[Node], ids: Ids, pool: _IpPool, add_pod,
                  services: list[Service], boot: datetime, version: str, schedule: random.Random) -> Waypoint:
    rs = ids.hexstr(10, "waypoint-rs", ns.name, wp.name)
    for r in range(wp.replicas):
        node = nodes[schedule.randrange(len(nodes))]
        add_pod(f"{wp.name}-{rs}-{ids.suffix(5, 'waypoint', ns.name, wp.name, r)}", ns.name, node,
                labels={"gateway.networking.k8s.io/gateway-name": wp.name, "gateway.istio.io/managed":
                        "istio.io-mesh-controller", "istio.io/dataplane-mode": "none",
                        "networking.istio.io/tunnel": "http", "app": wp.name},
                annotations={}, service_account=wp.name, app=wp.name, version=version, ports=(15008, 15021),
                created=boot, owner_name=f"{wp.name}-{rs}", workload_name=wp.name,
                image=f"docker.io/istio/proxyv2:{version}-distroless", container="istio-proxy",
                component="waypoint", native_tunnel=True)
    svc = Service(wp.name, ns.name, pool.service_ip(), ((15021, 15021), (15008, 15008)),
                  {"gateway.networking.k8s.io/gateway-name": wp.name},
                  {"gateway.networking.k8s.io/gateway-name": wp.name, "gateway.istio.io/managed":
                   "istio.io-mesh-controller"}, boot)
    services.append(svc)
    return Waypoint(wp.name, ns.name, wp.waypoint_for, ready=wp.replicas > 0, address=svc.cluster_ip)


def bind_waypoints(cluster: Cluster) -> None:
    """Resolve istio.io/use-waypoint (service label over namespace label) as istiod does, with its status."""
    by_key = {w.key: w for w in cluster.waypoints}
    for svc in cluster.services:
        if "gateway.networking.k8s.io/gateway-name" in svc.labels:
            continue
        ns_labels = cluster.namespaces.get(svc.namespace, {})
        name = svc.labels.get("istio.io/use-waypoint") or ns_labels.get("istio.io/use-waypoint")
        if not name or name == "none":
            continue
        wp_ns = svc.labels.get("istio.io/use-waypoint-namespace") or ns_labels.get(
            "istio.io/use-waypoint-namespace") or svc.namespace
        key = f"{wp_ns}/{name}"
        wp = by_key.get(key)
        if wp is None or not wp.exists or not wp.ready:
            svc.waypoint = None
            svc.waypoint_bound = (False, "WaypointIsNotReady", f'waypoint "{key}" is not ready')
        elif wp.waypoint_for not in ("service", "all"):
            svc.waypoint = None
            svc.waypoint_bound = (False, "UnsupportedTrafficType",
                                  f'attempting to bind to traffic type "service" which the waypoint "{key}" '
                                  'does not support')
        else:
            svc.waypoint = key
            svc.waypoint_bound = (True, "WaypointAccepted", f"Successfully attached to waypoint {key}")


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def service_endpoints(cluster: Cluster, svc: Service) -> list[Pod]:
    return [p for p in cluster.namespace_pods().get(svc.namespace, ()) if selects(svc.selector, p.labels)
            and p.phase == "Running" and p.ip]


def _flows(cluster: Cluster, traffic: list[TrafficSpec], ids: Ids) -> list[Flow]:
    """Spread each traffic entry's connections over its client pods and the service's endpoints, round robin
    from a random start (what ztunnel's L4 balancing gives on average)."""
    flows: list[Flow] = []
    for t in traffic:
        src_ns, src_app = t.source.split("/")
        dst_ns, dst_name = t.service.split("/")
        svc = cluster.service_by_key(dst_ns, dst_name)
        if svc is None:
            continue
        clients = [p for p in cluster.pods if p.namespace == src_ns and p.app == src_app and p.component == "app"]
        backends = service_endpoints(cluster, svc)
        if not clients or not backends:
            continue
        port, target = next(((p, tp) for p, tp in svc.ports if p == t.port or not t.port), svc.ports[0])
        counts: dict[tuple[int, int], int] = {}
        rng = ids.rng("flows", t.source, t.service)
        offset = rng.randrange(len(backends))
        for c in range(t.connections):
            key = (c % len(clients), (offset + c) % len(backends))
            counts[key] = counts.get(key, 0) + 1
        for (ci, bi), n in sorted(counts.items()):
            flows.append(Flow(clients[ci], svc, backends[bi], port, target, n))
    return flows
