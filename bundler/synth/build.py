"""Turn a scenario into a bundle: the same artifacts, paths and manifest that ``bundle collect`` writes.

Members are produced lazily, one at a time, in ``layout.order_key`` order, so memory holds the shared mesh
model (which grows with pods) plus one artifact, not the whole bundle (which grows with nodes x pods).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bundler import layout
from bundler.manifest import Artifact, Manifest
from bundler.synth.cluster import Cluster, build_cluster
from bundler.synth.dumps import DumpRenderer, rfc3339
from bundler.synth.faults import Effects, apply_faults
from bundler.synth.kube import KubeRenderer
from bundler.synth.mesh import MeshView
from bundler.synth.scenario import Scenario
from bundler.synth.telemetry import Telemetry, TelemetryBuilder, render_istio_log, render_metrics, render_ztunnel_log

NOT_CONNECTED = "Proxy not connected to this Pilot instance. It may be connected to another instance."


def ztunnel_json(document: Any) -> bytes:
    """ztunnel pretty-prints a serde_json Value: keys sorted at every depth, two-space indent."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def go_json(document: Any) -> bytes:
    """istiod writes compact JSON in proto field order (no sorting)."""
    return orjson.dumps(document)


def kube_json(document: Any) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)


@dataclass
class Item:
    path: str
    source: dict[str, Any]
    produce: Callable[[], bytes] | None  # None: not collected (see status/reason)
    status: str = "ok"
    reason: str | None = None


@dataclass
class SyntheticMesh:
    """Everything a scenario defines, ready to render: used by ``bundle synth`` and by ``bundle serve``."""

    scenario: Scenario
    cluster: Cluster
    effects: Effects
    mesh: MeshView
    dumps: DumpRenderer
    kube: KubeRenderer
    telemetry: Telemetry


def build_mesh(scenario: Scenario) -> SyntheticMesh:
    cluster = build_cluster(scenario)
    effects = apply_faults(cluster, scenario.faults)
    mesh = MeshView(cluster)
    dumps = DumpRenderer(cluster, mesh, effects)
    telemetry = TelemetryBuilder(cluster, mesh, effects).build()
    return SyntheticMesh(scenario, cluster, effects, mesh, dumps, KubeRenderer(cluster), telemetry)


def _api(path: str, verb: str = "list") -> dict[str, Any]:
    return {"type": "api", "verb": verb, "apiPath": path}


def _forward(pod: Any, port: int, url_path: str, **extra: Any) -> dict[str, Any]:
    return {"type": "portforward", "namespace": pod.namespace, "pod": pod.name, "port": port, "urlPath": url_path,
            **extra}


def _logs(pod: Any, container: str, previous: bool = False) -> dict[str, Any]:
    return {"type": "logs", "namespace": pod.namespace, "pod": pod.name, "container": container,
            "previous": previous}


def items(sm: SyntheticMesh) -> Iterator[Item]:
    sc, cluster, kube, dumps, tel = sm.scenario, sm.cluster, sm.kube, sm.dumps, sm.telemetry
    lists = (
        ("nodes", "", "/api/v1/nodes", kube.nodes),
        ("namespaces", "", "/api/v1/namespaces", kube.namespaces),
        ("pods", "", "/api/v1/pods", kube.pods),
        ("services", "", "/api/v1/services", kube.services),
        ("endpointslices", "discovery.k8s.io", "/apis/discovery.k8s.io/v1/endpointslices", kube.endpointslices),
        ("events", "", "/api/v1/events", kube.events),
        ("networkpolicies", "networking.k8s.io", "/apis/networking.k8s.io/v1/networkpolicies", kube.networkpolicies),
        ("configmaps", "", "/api/v1/namespaces/istio-system/configmaps", kube.configmaps),  # see below
        ("authorizationpolicies", "security.istio.io", "/apis/security.istio.io/v1/authorizationpolicies",
         kube.authorizationpolicies),
        ("peerauthentications", "security.istio.io", "/apis/security.istio.io/v1/peerauthentications",
         kube.peerauthentications),
        ("gateways", "gateway.networking.k8s.io", "/apis/gateway.networking.k8s.io/v1/gateways", kube.gateways),
    )
    yield Item(layout.k8s_version(), _api("/version", "get"), lambda: kube_json(kube.version()))
    for resource, group, api_path, render in lists:
        source = _api(api_path)
        if resource == "configmaps" and sc.cni_namespace != "istio-system":
            # The Istio ConfigMaps from two namespaces, merged into one list (as collect gathers them).
            source = {"type": "api", "verb": "list", "apiPaths": [api_path,
                      f"/api/v1/namespaces/{sc.cni_namespace}/configmaps"]}
        yield Item(layout.k8s_list(resource, group), source, lambda render=render: kube_json(render()))

    replicas = [p.name for p in cluster.istiods]
    for istiod in cluster.istiods:
        yield Item(layout.istiod_file(istiod.name, "version.txt"), _forward(istiod, 15014, "/version"),
                   lambda: dumps.istiod_version_text().encode())
        yield Item(layout.istiod_file(istiod.name, "ambientz.json"), _forward(istiod, 15014, "/debug/ambientz"),
                   lambda: go_json(dumps.ambientz()))
        yield Item(layout.istiod_file(istiod.name, "syncz.json"), _forward(istiod, 15014, "/debug/syncz"),
                   lambda name=istiod.name: go_json(dumps.syncz(name)))
        yield Item(layout.istiod_log(istiod.name), _logs(istiod, "discovery"),
                   lambda name=istiod.name: render_istio_log(tel.istiod[name], sc.log_format))

    for node in sorted(cluster.ztunnels):
        zt = cluster.ztunnels[node]
        proxy_id = f"{zt.name}.{zt.namespace}"
        for path, url, render in (
            (layout.istiod_proxy_dump(zt.name), f"/debug/config_dump?proxyID={proxy_id}", dumps.proxy_config_dump),
            (layout.istiod_proxy_wads(zt.name), f"/debug/config_dump?proxyID={proxy_id}&types=WADS", dumps.proxy_wads),
        ):
            if node in sm.effects.xds_disconnected:
                yield Item(path, {"type": "portforward", "port": 15014, "urlPath": url, "asked": replicas}, None,
                           "error", f"404 from every istiod replica ({', '.join(replicas)}): {NOT_CONNECTED}")
            else:
                replica = next(p for p in cluster.istiods if p.name == cluster.xds_replica[zt.name])
                yield Item(path, _forward(replica, 15014, url, replica=replica.name, asked=replicas),
                           lambda render=render: go_json(render()))
        base = (node, zt.name)
        yield Item(layout.ztunnel_file(*base, "pod.json"),
                   _api(f"/api/v1/namespaces/{zt.namespace}/pods/{zt.name}", "get"),
                   lambda zt=zt: kube_json(kube.pod(zt)))
        yield Item(layout.ztunnel_file(*base, "config_dump.json"), _forward(zt, 15000, "/config_dump"),
                   lambda node=node: ztunnel_json(dumps.ztunnel_dump(node)))
        yield Item(layout.ztunnel_file(*base, "metrics.txt"),
                   {"type": "proxy", "namespace": zt.namespace, "pod": zt.name, "port": 15020,
                    "urlPath": "/stats/prometheus"},
                   lambda node=node: render_metrics(tel.ztunnel[node]))
        yield Item(layout.ztunnel_log(*base), _logs(zt, "istio-proxy"),
                   lambda node=node: render_ztunnel_log(tel.ztunnel[node].current, sc.log_format))
        if zt.restarts:
            yield Item(layout.ztunnel_log(*base, previous=True), _logs(zt, "istio-proxy", previous=True),
                       lambda node=node: render_ztunnel_log(tel.ztunnel[node].previous, sc.log_format))
        cni = cluster.cni_pods[node]
        yield Item(layout.cni_log(node, cni.name), _logs(cni, "install-cni"),
                   lambda node=node: render_istio_log(tel.cni[node], sc.log_format))


def _describe(sm: SyntheticMesh, m: Manifest, command_line: list[str]) -> None:
    """The manifest's header: what a collect from this cluster at the scenario's ``now`` would say."""
    sc = sm.scenario
    at = rfc3339(sc.now)
    m.generator = "synth"
    m.command_line = list(command_line)
    m.created_at = at
    m.window.start = at
    m.window.end = at
    m.window.logs_since = rfc3339(sc.now - sc.window)
    m.scope.mode = "mesh"
    m.cluster.server_version = sc.kubernetes_version
    m.cluster.context = f"synth:{sc.name}"
    m.cluster.node_count = len(sm.cluster.nodes)
    m.cluster.istio_versions = {
        "istiod": sorted({sm.cluster.istiod_version}),
        "ztunnel": sorted(set(sm.cluster.ztunnel_versions.values())),
        "cni": sorted({sm.cluster.cni_version}),
    }
    m.extra["scenario"] = {"name": sc.name, "seed": sc.seed, "istioVersion": sc.istio_version,
                           "faults": [{"type": f.type, **f.params} for f in sc.faults]}


def scenario_manifest(sm: SyntheticMesh) -> tuple[Manifest, dict[str, Callable[[], bytes]]]:
    """The manifest a bundle of this mesh would have (without sizes and hashes) and, for each member, the
    function that renders it: what ``bundle serve`` needs to serve a scenario without writing an archive."""
    manifest = Manifest()
    _describe(sm, manifest, ["bundle", "serve", f"{sm.scenario.name}.yaml"])
    at = rfc3339(sm.scenario.now)
    producers: dict[str, Callable[[], bytes]] = {}
    for item in sorted(items(sm), key=lambda i: layout.order_key(i.path)):
        manifest.artifacts.append(Artifact(item.path, layout.kind_of_path(item.path), dict(item.source), item.status,
                                           item.reason, started=at, finished=at))
        if item.produce is not None:
            producers[item.path] = item.produce
    return manifest, producers


def write_bundle(sm: SyntheticMesh, out: str | Path, command_line: list[str]) -> Path:
    from bundler.archive import BundleWriter

    sc = sm.scenario
    out = Path(out)
    root = out.name.removesuffix(".tar.zst") if out.name.endswith(".tar.zst") else out.stem
    at = rfc3339(sc.now)
    gc.disable()  # bulk object creation: the cyclic collector only costs time here (python-stack.md 3)
    try:
        with BundleWriter(out, root=root, mtime=int(sc.now.timestamp())) as writer:
            _describe(sm, writer.manifest, command_line)
            for item in sorted(items(sm), key=lambda i: layout.order_key(i.path)):
                if item.produce is None:
                    writer.record(item.path, kind=layout.kind_of_path(item.path), source=item.source,
                                  status=item.status, reason=item.reason, started=at, finished=at)
                else:
                    writer.add(item.path, item.produce(), source=item.source, started=at, finished=at)
    finally:
        gc.enable()
    return out
