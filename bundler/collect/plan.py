"""Discovery and scope: find the ambient control and data plane wherever it runs, decide which nodes are in
scope, and list the tasks that collect them."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from bundler import layout
from bundler.collect.kube import FetchError, Kube
from bundler.collect.tasks import (
    PRIORITY_LOGS,
    PRIORITY_STATE,
    PRIORITY_VIEWS,
    ApiGet,
    IstiodProxyView,
    MergedList,
    MiB,
    PodLog,
    PortForwardGet,
    ProxyGet,
    Task,
    collection_order,
)

LARGE_CLUSTER_NODES = 50

# Kubernetes lists collected cluster-wide: (plural, group, version). Istio and Gateway API kinds are found by
# discovery, since which exist depends on the cluster.
CORE_LISTS = (
    ("nodes", "", "v1"),
    ("namespaces", "", "v1"),
    ("pods", "", "v1"),
    ("services", "", "v1"),
    ("events", "", "v1"),
    ("endpointslices", "discovery.k8s.io", "v1"),
    ("networkpolicies", "networking.k8s.io", "v1"),
)
DISCOVERED_GROUPS = ("security.istio.io", "networking.istio.io", "telemetry.istio.io", "gateway.networking.k8s.io")


@dataclass
class Selectors:
    ztunnel: str = "app=ztunnel"
    istiod: str = "app=istiod"
    cni: str = "k8s-app=istio-cni-node"


@dataclass
class Options:
    namespaces: tuple[str, ...] = ()
    pods: tuple[str, ...] = ()  # namespace/name
    nodes: tuple[str, ...] = ()
    since_seconds: int | None = None
    since_time: str | None = None
    log_bytes: int = 50 * MiB
    request_timeout: float = 30.0
    selectors: Selectors = field(default_factory=Selectors)


@dataclass
class Discovery:
    version: dict[str, Any]
    nodes: list[dict[str, Any]]
    ztunnels: list[dict[str, Any]]
    istiods: list[dict[str, Any]]
    cnis: list[dict[str, Any]]
    api_resources: list[tuple[str, str, str]]  # (plural, group, version) of the Istio / Gateway API kinds


@dataclass
class Plan:
    tasks: list[Task]
    scope_mode: str
    scope_nodes: list[str]
    warnings: list[str]
    discovery: Discovery


def _name(obj: dict[str, Any]) -> str:
    return obj.get("metadata", {}).get("name", "")


def _ns(obj: dict[str, Any]) -> str:
    return obj.get("metadata", {}).get("namespace", "")


def _node(obj: dict[str, Any]) -> str:
    return obj.get("spec", {}).get("nodeName", "")


def _get_json(kube: Kube, path: str, query: list[tuple[str, Any]] | None = None) -> Any:
    """``kube.get_json`` with the engine's retry policy (429, 5xx, resets, timeouts; Retry-After, capped), so a
    throttled or briefly failing API server does not end the collection before it starts. An API server that
    cannot be connected to at all is reported at once."""
    import random
    import time

    from bundler.collect.engine import BACKOFF_BASE, BACKOFF_CAP, MAX_ATTEMPTS

    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return kube.get_json(path, query)
        except FetchError as exc:
            if not exc.retryable or exc.kind == "unreachable" or attempt == MAX_ATTEMPTS:
                raise
            backoff = BACKOFF_BASE * 2 ** (attempt - 1) * (0.5 + random.random())
            time.sleep(min(BACKOFF_CAP, exc.retry_after if exc.retry_after is not None else backoff))


def _pods(kube: Kube, selector: str) -> list[dict[str, Any]]:
    items = _get_json(kube, "/api/v1/pods", [("labelSelector", selector)]).get("items") or []
    return sorted(items, key=lambda p: (_ns(p), _name(p)))


def discover(kube: Kube, selectors: Selectors) -> Discovery:
    # The requests are independent: at 20 ms a round trip, one after the other they were a tenth of a small
    # collection. Results are read in the old order, so the first error raised is the one it always was.
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="discover") as pool:
        version = pool.submit(_get_json, kube, "/version")
        nodes = pool.submit(_get_json, kube, "/api/v1/nodes")
        apis = pool.submit(_get_json, kube, "/apis")
        pods = {role: pool.submit(_pods, kube, selector) for role, selector in
                (("ztunnel", selectors.ztunnel), ("istiod", selectors.istiod), ("cni", selectors.cni))}
        version_info = version.result()
        node_items = nodes.result().get("items") or []
        try:
            groups = apis.result().get("groups") or []
        except FetchError:
            groups = []
        lookups = []
        for group in groups:
            if group.get("name") not in DISCOVERED_GROUPS:
                continue
            preferred = (group.get("preferredVersion") or {}).get("version") or group["versions"][0]["version"]
            lookups.append((group["name"], preferred,
                            pool.submit(_get_json, kube, f"/apis/{group['name']}/{preferred}")))
        api_resources: list[tuple[str, str, str]] = []
        for name, preferred, lookup in lookups:
            try:
                resources = lookup.result().get("resources") or []
            except FetchError:
                continue
            for res in resources:
                if "/" not in res.get("name", "") and "list" in res.get("verbs", []):
                    api_resources.append((res["name"], name, preferred))
        return Discovery(
            version=version_info,
            nodes=sorted(node_items, key=_name),
            ztunnels=pods["ztunnel"].result(),
            istiods=pods["istiod"].result(),
            cnis=pods["cni"].result(),
            api_resources=sorted(api_resources, key=lambda r: (r[1], r[0])),
        )


def _peer_nodes(kube: Kube, pod: dict[str, Any], ztunnel: dict[str, Any] | None, timeout: float) -> set[str]:
    """The nodes of the pods ``pod`` talks to, from its node's ztunnel: the connections it holds for the pod
    (workloadState) mapped to pods by IP, as the troubleshooting guide follows a connection to its peer."""
    if ztunnel is None:
        return set()
    buf = io.BytesIO()
    try:
        kube.forward_get(_ns(ztunnel), _name(ztunnel), 15000, "/config_dump", buf, timeout=timeout)
        dump = orjson.loads(buf.getvalue())
        all_pods = _get_json(kube, "/api/v1/pods").get("items") or []
    except (FetchError, orjson.JSONDecodeError):
        return set()
    by_ip = {}
    for p in all_pods:
        for ip in p.get("status", {}).get("podIPs") or []:
            by_ip[ip.get("ip")] = _node(p)
    state = (dump.get("workloadState") or {}).get(pod.get("metadata", {}).get("uid", ""), {})
    peers = set()
    for direction in ("inbound", "outbound"):
        for conn in (state.get("connections") or {}).get(direction) or []:
            for key in ("src", "actualDst", "originalDst"):
                address = conn.get(key)
                if isinstance(address, str):
                    ip = address.rsplit(":", 1)[0].strip("[]")
                    if ip in by_ip and by_ip[ip]:
                        peers.add(by_ip[ip])
    return peers


def resolve_scope(kube: Kube, d: Discovery, options: Options) -> tuple[str, list[str], list[str]]:
    """(mode, nodes in scope, warnings)."""
    all_nodes = [_name(n) for n in d.nodes]
    warnings: list[str] = []
    if not (options.namespaces or options.pods or options.nodes):
        if len(all_nodes) > LARGE_CLUSTER_NODES:
            warnings.append(f"{len(all_nodes)} nodes and no scope: collecting every ztunnel may take a while; "
                            "narrow it with --namespace NS, --pod NS/NAME or --node NODE")
        return "mesh", all_nodes, warnings
    nodes: set[str] = set(options.nodes)
    unknown = sorted(set(options.nodes) - set(all_nodes))
    if unknown:
        warnings.append(f"node(s) not found: {', '.join(unknown)}")
    ztunnel_on = {_node(z): z for z in d.ztunnels}
    namespaces = set(options.namespaces)
    for ns in options.namespaces:
        for pod in _get_json(kube, f"/api/v1/namespaces/{ns}/pods").get("items") or []:
            if _node(pod):
                nodes.add(_node(pod))
    for ref in options.pods:
        ns, _, name = ref.partition("/")
        try:
            pod = _get_json(kube, f"/api/v1/namespaces/{ns}/pods/{name}")
        except FetchError as exc:
            warnings.append(f"pod {ref}: {exc.reason}")
            continue
        namespaces.add(ns)
        if _node(pod):
            nodes.add(_node(pod))
            nodes |= _peer_nodes(kube, pod, ztunnel_on.get(_node(pod)), options.request_timeout)
    # Keep the waypoints the workloads in scope use: their pods' nodes come along.
    for ns in sorted(namespaces):
        try:
            waypoints = _get_json(kube, f"/api/v1/namespaces/{ns}/pods",
                                  [("labelSelector", "gateway.networking.k8s.io/gateway-name")]).get("items")
        except FetchError:
            waypoints = []
        nodes |= {_node(p) for p in waypoints or [] if _node(p)}
    mode = "pod" if options.pods else "namespace" if options.namespaces else "node"
    return mode, sorted(nodes & set(all_nodes)) if all_nodes else sorted(nodes), warnings


def _containers(pod: dict[str, Any]) -> list[tuple[str, int]]:
    """(container name, restart count) of each container."""
    restarts = {s.get("name"): s.get("restartCount", 0) for s in pod.get("status", {}).get("containerStatuses") or []}
    return [(c.get("name", ""), restarts.get(c.get("name"), 0)) for c in pod.get("spec", {}).get("containers") or []]


def _log_tasks(pod: dict[str, Any], path_of, options: Options) -> list[Task]:
    out: list[Task] = []
    for container, restarts in _containers(pod):
        for previous in (False, True) if restarts else (False,):
            # The read timeout bounds the wait between bytes, not the whole download: a big log is fine.
            out.append(PodLog(path_of(container, previous), PRIORITY_LOGS, timeout=options.request_timeout,
                              max_bytes=options.log_bytes, missing_ok=previous, namespace=_ns(pod), pod=_name(pod),
                              container=container, previous=previous, since_seconds=options.since_seconds,
                              since_time=options.since_time))
    return out


def build_plan(kube: Kube, options: Options) -> Plan:
    d = discover(kube, options.selectors)
    mode, scope_nodes, warnings = resolve_scope(kube, d, options)
    in_scope = set(scope_nodes)
    timeout = options.request_timeout
    tasks: list[Task] = [ApiGet(layout.k8s_version(), PRIORITY_STATE, timeout, api_path="/version", verb="get")]
    for plural, group, version in CORE_LISTS:
        api_path = f"/api/{version}/{plural}" if not group else f"/apis/{group}/{version}/{plural}"
        tasks.append(ApiGet(layout.k8s_list(plural, group), PRIORITY_STATE, timeout, api_path=api_path))
    for plural, group, version in d.api_resources:
        tasks.append(ApiGet(layout.k8s_list(plural, group), PRIORITY_STATE, timeout,
                            api_path=f"/apis/{group}/{version}/{plural}"))
    # The Istio ConfigMaps: mesh config beside istiod, istio-cni-config beside istio-cni (kube-system on GKE).
    istio_namespaces = sorted({_ns(p) for p in d.istiods} or {"istio-system"})
    istio_namespaces += sorted({_ns(p) for p in d.cnis} - set(istio_namespaces))
    paths = tuple(f"/api/v1/namespaces/{ns}/configmaps" for ns in istio_namespaces)
    if len(paths) == 1:
        tasks.append(ApiGet(layout.k8s_list("configmaps"), PRIORITY_STATE, timeout, api_path=paths[0]))
    else:
        tasks.append(MergedList(layout.k8s_list("configmaps"), PRIORITY_STATE, timeout, api_paths=paths))

    replicas = tuple((_ns(p), _name(p)) for p in d.istiods)
    for istiod in d.istiods:
        ns, name = _ns(istiod), _name(istiod)
        for file, url in (("version.txt", "/version"), ("ambientz.json", "/debug/ambientz"),
                          ("syncz.json", "/debug/syncz")):
            tasks.append(PortForwardGet(layout.istiod_file(name, file), PRIORITY_VIEWS, timeout, namespace=ns,
                                        pod=name, port=15014, url_path=url))
        tasks += _log_tasks(istiod, lambda c, prev, name=name: layout.istiod_log(name, c, prev), options)

    for zt in d.ztunnels:
        node, ns, name = _node(zt), _ns(zt), _name(zt)
        if node not in in_scope:
            continue
        proxy_id = f"{name}.{ns}"
        tasks.append(IstiodProxyView(layout.istiod_proxy_dump(name), PRIORITY_VIEWS, timeout, replicas=replicas,
                                     url_path=f"/debug/config_dump?proxyID={proxy_id}"))
        tasks.append(IstiodProxyView(layout.istiod_proxy_wads(name), PRIORITY_VIEWS, timeout, replicas=replicas,
                                     url_path=f"/debug/config_dump?proxyID={proxy_id}&types=WADS"))
        tasks.append(PortForwardGet(layout.ztunnel_file(node, name, "config_dump.json"), PRIORITY_VIEWS,
                                    max(timeout, 60), namespace=ns, pod=name, port=15000, url_path="/config_dump"))
        tasks.append(ApiGet(layout.ztunnel_file(node, name, "pod.json"), PRIORITY_STATE, timeout,
                            api_path=f"/api/v1/namespaces/{ns}/pods/{name}", verb="get"))
        tasks.append(ProxyGet(layout.ztunnel_file(node, name, "metrics.txt"), PRIORITY_STATE, timeout,
                              namespace=ns, pod=name, port=15020, url_path="/stats/prometheus"))
        tasks += _log_tasks(zt, lambda c, prev, node=node, name=name: layout.ztunnel_log(node, name, c, prev),
                            options)
    for cni in d.cnis:
        node, name = _node(cni), _name(cni)
        if node in in_scope:
            tasks += _log_tasks(cni, lambda c, prev, node=node, name=name: layout.cni_log(node, name, c, prev),
                                options)
    missing = sorted(in_scope - {_node(z) for z in d.ztunnels})
    if d.ztunnels and missing and mode != "mesh":
        warnings.append(f"no ztunnel pod on node(s) {', '.join(missing[:10])}")
    if not d.ztunnels:
        warnings.append(f"no ztunnel pod found (selector {options.selectors.ztunnel}); is ambient installed?")
    if not d.istiods:
        warnings.append(f"no istiod pod found (selector {options.selectors.istiod})")
    tasks = collection_order(tasks)
    return Plan(tasks, mode, scope_nodes, warnings, d)
