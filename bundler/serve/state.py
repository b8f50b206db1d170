"""What ``bundle serve`` serves: a cluster reconstructed from a bundle or a scenario.

Everything is driven by the manifest: each artifact's ``source`` says which API call, pod log, port-forward
or pod-proxy request produced it, so the server answers exactly that request with exactly those bytes.
That makes ``collect`` from a served bundle give the same bundle back (the round trip), whatever produced it:
``bundle collect`` against a real cluster, or ``bundle synth``.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from bundler import layout
from bundler.errors import BundleError
from bundler.manifest import Artifact, Manifest, parse_time

NOT_CONNECTED = "Proxy not connected to this Pilot instance. It may be connected to another instance.\n"


@dataclass(frozen=True)
class ResourceType:
    """One API resource, for discovery and routing."""

    group: str  # "" for the core group
    version: str
    resource: str  # plural, e.g. "pods"
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    file: str = ""  # the bundle path holding its list

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


# The resources a bundle stores (bundler.layout.k8s_list), as the API server describes them.
RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "nodes", "Node", False, ("no",)),
    ResourceType("", "v1", "namespaces", "Namespace", False, ("ns",)),
    ResourceType("", "v1", "pods", "Pod", True, ("po",)),
    ResourceType("", "v1", "services", "Service", True, ("svc",)),
    ResourceType("", "v1", "events", "Event", True, ("ev",)),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    ResourceType("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",)),
    ResourceType("security.istio.io", "v1", "authorizationpolicies", "AuthorizationPolicy", True, ("ap",)),
    ResourceType("security.istio.io", "v1", "peerauthentications", "PeerAuthentication", True, ("pa",)),
    ResourceType("security.istio.io", "v1", "requestauthentications", "RequestAuthentication", True, ("ra",)),
    ResourceType("networking.istio.io", "v1", "serviceentries", "ServiceEntry", True, ("se",)),
    ResourceType("networking.istio.io", "v1", "destinationrules", "DestinationRule", True, ("dr",)),
    ResourceType("networking.istio.io", "v1", "virtualservices", "VirtualService", True, ("vs",)),
    ResourceType("networking.istio.io", "v1", "workloadentries", "WorkloadEntry", True, ("we",)),
    ResourceType("networking.istio.io", "v1", "sidecars", "Sidecar", True),
    ResourceType("telemetry.istio.io", "v1", "telemetries", "Telemetry", True, ("telemetry",)),
    ResourceType("gateway.networking.k8s.io", "v1", "gateways", "Gateway", True, ("gtw",)),
    ResourceType("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute", True),
    ResourceType("gateway.networking.k8s.io", "v1", "gatewayclasses", "GatewayClass", False, ("gc",)),
)


def _file_of(rt: ResourceType) -> str:
    return layout.k8s_list(rt.resource, rt.group)


@dataclass
class Response:
    """An HTTP answer from a pod's port (through port-forward or the API server's pod proxy)."""

    status: int
    body: bytes
    content_type: str = "application/json"


@dataclass
class ServedCluster:
    """A read-only cluster. ``read(path)`` gives a bundle member's bytes; ``artifacts`` are the manifest's."""

    manifest: Manifest
    read: Callable[[str], bytes]
    now: datetime
    resources: dict[tuple[str, str], ResourceType] = field(default_factory=dict)  # (group, plural) -> type
    objects: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    version: dict[str, Any] = field(default_factory=dict)
    _logs: dict[tuple[str, str, str, bool], str] = field(default_factory=dict)
    _forwards: dict[tuple[str, str, int], list[Artifact]] = field(default_factory=dict)
    _proxies: dict[tuple[str, str, int], list[Artifact]] = field(default_factory=dict)
    _istiod_proxy_views: list[Artifact] = field(default_factory=list)
    _api: dict[str, str] = field(default_factory=dict)  # apiPath -> bundle path
    _cleanup: Callable[[], None] | None = None

    # --- construction -----------------------------------------------------------------------------------------

    @classmethod
    def build(cls, manifest: Manifest, read: Callable[[str], bytes], cleanup=None) -> ServedCluster:
        now = _parse_time(manifest.window.end or manifest.created_at)
        cluster = cls(manifest=manifest, read=read, now=now, _cleanup=cleanup)
        ok = {a.path: a for a in manifest.artifacts if a.collected}
        for rt in RESOURCES:
            path = _file_of(rt)
            if path in ok:
                document = orjson.loads(read(path))
                items = document.get("items") or []
                cluster.resources[(rt.group, rt.resource)] = rt
                cluster.objects[(rt.group, rt.resource)] = [
                    {"apiVersion": rt.group_version, "kind": rt.kind, **item} for item in items
                ]
        # Lists of kinds this table does not know (a newer Istio CRD, say) are served from what they say.
        for path in ok:
            if path.startswith(("cluster/istio/", "cluster/gateway-api/")) and path.endswith(".json") and \
                    not any(_file_of(rt) == path for rt in RESOURCES):
                rt = _resource_from_list(path, read(path))
                if rt is not None:
                    cluster.resources[(rt.group, rt.resource)] = rt
                    items = orjson.loads(read(path)).get("items") or []
                    cluster.objects[(rt.group, rt.resource)] = [
                        {"apiVersion": rt.group_version, "kind": rt.kind, **item} for item in items]
        # Core kinds are always discoverable, even when the bundle holds none of them.
        for rt in RESOURCES:
            if rt.group == "" and (rt.group, rt.resource) not in cluster.resources:
                cluster.resources[(rt.group, rt.resource)] = rt
                cluster.objects[(rt.group, rt.resource)] = []
        if layout.k8s_version() in ok:
            cluster.version = orjson.loads(read(layout.k8s_version()))
        else:
            server = manifest.cluster.server_version or "v1.31.0"
            major, minor = server.lstrip("v").split(".")[:2]
            cluster.version = {"major": major, "minor": minor, "gitVersion": server, "platform": "linux/amd64"}
        for art in manifest.artifacts:
            src = art.source or {}
            kind = src.get("type")
            if kind == "api" and art.collected and src.get("apiPath") and not src.get("query"):
                cluster._api[src["apiPath"]] = art.path
            elif kind == "logs" and art.collected:
                key = (src.get("namespace", ""), src.get("pod", ""), src.get("container", ""),
                       bool(src.get("previous")))
                cluster._logs[key] = art.path
            elif kind == "portforward" and art.kind in (layout.KIND_ISTIOD_CONFIG_DUMP, layout.KIND_ISTIOD_WADS):
                cluster._istiod_proxy_views.append(art)
            elif kind == "portforward" and art.collected:
                cluster._forwards.setdefault((src.get("namespace", ""), src.get("pod", ""), int(src["port"])),
                                             []).append(art)
            elif kind == "proxy" and art.collected:
                cluster._proxies.setdefault((src.get("namespace", ""), src.get("pod", ""), int(src["port"])),
                                            []).append(art)
        return cluster

    def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = None

    # --- Kubernetes objects -------------------------------------------------------------------------------------

    def resource(self, group: str, plural: str) -> ResourceType | None:
        return self.resources.get((group, plural))

    def list(self, group: str, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        items = self.objects.get((group, plural), [])
        if namespace is None:
            return items
        return [o for o in items if o.get("metadata", {}).get("namespace") == namespace]

    def get(self, group: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        for obj in self.list(group, plural, namespace):
            if obj.get("metadata", {}).get("name") == name:
                return obj
        return None

    def stored_response(self, api_path: str) -> bytes | None:
        """The exact bytes the bundle holds for an API request with no selector (a whole list, one object,
        /version): served as they are, so that collecting from a served bundle gives the same bytes back."""
        path = self._api.get(api_path)
        return None if path is None else self.read(path)

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get("", "pods", namespace, name)

    # --- pod logs, port-forward, pod proxy ------------------------------------------------------------------

    def log(self, namespace: str, pod: str, container: str | None, previous: bool = False) -> bytes | None:
        """The log bytes of a container (the pod's first container when ``container`` is None), or None."""
        if container is None:
            obj = self.pod(namespace, pod)
            containers = (obj or {}).get("spec", {}).get("containers") or [{}]
            container = containers[0].get("name", "")
        path = self._logs.get((namespace, pod, container, previous))
        return None if path is None else self.read(path)

    def containers(self, namespace: str, pod: str) -> list[str]:
        obj = self.pod(namespace, pod)
        return [c.get("name", "") for c in (obj or {}).get("spec", {}).get("containers", [])]

    def forward(self, namespace: str, pod: str, port: int, method: str, target: str) -> Response | None:
        """Answer an HTTP request sent to ``pod:port`` through a port-forward; None if nothing listens there."""
        if self._is_istiod_debug(namespace, pod, port):
            answer = self._istiod_proxy_view(pod, target)
            if answer is not None:
                return answer
        # A port reached through the pod proxy (ztunnel's 15020) answers a port-forward just the same.
        key = (namespace, pod, port)
        return self._from_sources(self._forwards.get(key, []) + self._proxies.get(key, []), target,
                                  listening=self._listens(namespace, pod, port))

    def proxy(self, namespace: str, pod: str, port: int, method: str, target: str) -> Response | None:
        """Answer a request through the API server's pod proxy. The ztunnel admin port (15000) listens on
        localhost only, so the proxy cannot reach it: that is None (connection refused), as in a cluster."""
        if self._is_istiod_debug(namespace, pod, port):
            answer = self._istiod_proxy_view(pod, target)
            if answer is not None:
                return answer
            return self._from_sources(self._forwards.get((namespace, pod, port)), target, listening=True)
        if port == 15000:
            return None
        return self._from_sources(self._proxies.get((namespace, pod, port)), target,
                                  listening=self._listens(namespace, pod, port))

    def _listens(self, namespace: str, pod: str, port: int) -> bool:
        return bool(self._forwards.get((namespace, pod, port)) or self._proxies.get((namespace, pod, port)))

    def _from_sources(self, arts: list[Artifact] | None, target: str, listening: bool) -> Response | None:
        if not arts:
            return None
        wanted = _normalise(target)
        aliases = {"/metrics": "/stats/prometheus"}
        wanted = aliases.get(wanted, wanted)
        for art in arts:
            if _normalise(art.source.get("urlPath", "")) == wanted:
                return Response(200, self.read(art.path), _content_type(art.path))
        return Response(404, b"") if listening else None

    def _is_istiod_debug(self, namespace: str, pod: str, port: int) -> bool:
        obj = self.pod(namespace, pod)
        labels = (obj or {}).get("metadata", {}).get("labels", {})
        return port == 15014 and (labels.get("app") == "istiod" or pod.startswith("istiod"))

    def _istiod_proxy_view(self, replica: str, target: str) -> Response | None:
        """``/debug/config_dump?proxyID=<pod>.<ns>[&types=WADS]`` as the replica ``replica`` answers it."""
        parts = urlsplit(target)
        if parts.path != "/debug/config_dump":
            return None
        query = dict(parse_qsl(parts.query))
        proxy_id = query.get("proxyID", "")
        if not proxy_id:
            return Response(400, b"You must provide a proxyID in the query string\n", "text/plain; charset=utf-8")
        wads = query.get("types", "").upper() == "WADS"
        wanted_kind = layout.KIND_ISTIOD_WADS if wads else layout.KIND_ISTIOD_CONFIG_DUMP
        for art in self._istiod_proxy_views:
            url = art.source.get("urlPath", "")
            art_query = dict(parse_qsl(urlsplit(url).query))
            # istiod matches proxyID as a substring of the connection ID "<pod>.<ns>-<n>" (formats.md 3.1).
            if art.kind != wanted_kind or not art_query.get("proxyID", "\0").startswith(proxy_id):
                continue
            if art.collected and art.source.get("replica") == replica:
                return Response(200, self.read(art.path))
            return Response(404, NOT_CONNECTED.encode(), "text/plain; charset=utf-8")
        return Response(404, NOT_CONNECTED.encode(), "text/plain; charset=utf-8")


def _resource_from_list(path: str, data: bytes) -> ResourceType | None:
    """``cluster/istio/<plural>.<group>.json`` holding a ``<Kind>List``: enough to serve it."""
    plural, _, group = path.rsplit("/", 1)[-1].removesuffix(".json").partition(".")
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or not group:
        return None
    api_version = str(document.get("apiVersion", ""))
    version = api_version.rsplit("/", 1)[-1] if "/" in api_version else "v1"
    kind = str(document.get("kind", "")).removesuffix("List") or plural.capitalize()
    items = document.get("items") or []
    namespaced = any(isinstance(i, dict) and i.get("metadata", {}).get("namespace") for i in items) or not items
    return ResourceType(group, version, plural, kind, namespaced)


def _normalise(target: str) -> str:
    parts = urlsplit(target if target.startswith("/") else "/" + target)
    query = "&".join(f"{k}={v}" for k, v in sorted(parse_qsl(parts.query, keep_blank_values=True)))
    return parts.path + (f"?{query}" if query else "")


def _content_type(path: str) -> str:
    if path.endswith(".json"):
        return "application/json"
    return "text/plain; charset=utf-8"


def _parse_time(value: str) -> datetime:
    return parse_time(value) or datetime.now(timezone.utc)


# --- sources ---------------------------------------------------------------------------------------------------


def from_bundle(path: str | Path) -> ServedCluster:
    """Serve a bundle. An archive is extracted (safely) to a temporary folder first: random access into a
    zstd stream would mean decompressing from the start for every request."""
    from bundler.archive import extract_bundle, open_bundle

    path = Path(path)
    if path.is_dir():
        bundle = open_bundle(path)
        manifest = bundle.manifest
        lock = threading.Lock()

        def read_dir(member: str) -> bytes:
            with lock:
                return bundle.read(member)

        return ServedCluster.build(manifest, read_dir, cleanup=bundle.close)
    tmp = Path(tempfile.mkdtemp(prefix="ztunnel-bundle-serve-"))
    try:
        root = extract_bundle(path, tmp)
        bundle = open_bundle(root)
        manifest = bundle.manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    def read(member: str) -> bytes:
        return (root / member).read_bytes()

    def cleanup() -> None:
        bundle.close()
        shutil.rmtree(tmp, ignore_errors=True)

    return ServedCluster.build(manifest, read, cleanup=cleanup)


def from_scenario(path: str | Path) -> ServedCluster:
    """Serve a scenario's synthetic mesh directly, with no archive: each artifact is rendered when first asked
    for and kept."""
    from bundler.manifest import Artifact as ManifestArtifact
    from bundler.synth.build import build_mesh, scenario_manifest
    from bundler.synth.scenario import load_scenario

    mesh = build_mesh(load_scenario(path))
    manifest, producers = scenario_manifest(mesh)
    cache: dict[str, bytes] = {}
    lock = threading.Lock()

    def read(member: str) -> bytes:
        with lock:
            if member not in cache:
                if member not in producers:
                    raise BundleError(f"{member}: not in the scenario")
                cache[member] = producers[member]()
            return cache[member]

    assert all(isinstance(a, ManifestArtifact) for a in manifest.artifacts)
    return ServedCluster.build(manifest, read)


def load_served_cluster(source: str | Path) -> ServedCluster:
    source = Path(source)
    if source.suffix in (".yaml", ".yml"):
        return from_scenario(source)
    return from_bundle(source)
