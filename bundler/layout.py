"""The bundle's layout: where each artifact lives, what kind it is, and the order members are written in.

Paths are POSIX, relative to the bundle root (the single top-level folder of the archive, or an extracted
directory). docs/archive-format.md documents the same layout for people.
"""

from __future__ import annotations

import re

MANIFEST = "manifest.json"
FORMAT_VERSION = 1

# Artifact kinds, as recorded in the manifest. Each JSON kind has a schema schemas/<kind>.schema.json.
KIND_MANIFEST = "manifest"
KIND_K8S_VERSION = "kubernetes-version"
KIND_K8S_LIST = "kubernetes-list"
KIND_K8S_OBJECT = "kubernetes-object"
KIND_ZTUNNEL_CONFIG_DUMP = "ztunnel-config-dump"
KIND_ZTUNNEL_METRICS = "ztunnel-metrics"
KIND_ZTUNNEL_LOG = "ztunnel-log"
KIND_ISTIOD_VERSION = "istiod-version"
KIND_ISTIOD_AMBIENTZ = "istiod-ambientz"
KIND_ISTIOD_SYNCZ = "istiod-syncz"
KIND_ISTIOD_CONFIG_DUMP = "istiod-config-dump"  # /debug/config_dump?proxyID= (Address resources)
KIND_ISTIOD_WADS = "istiod-wads"  # /debug/config_dump?proxyID=&types=WADS (Authorization resources)
KIND_ISTIOD_LOG = "istiod-log"
KIND_CNI_LOG = "cni-log"
KIND_FINDINGS = "findings"

JSON_KINDS = frozenset(
    {
        KIND_MANIFEST,
        KIND_K8S_VERSION,
        KIND_K8S_LIST,
        KIND_K8S_OBJECT,
        KIND_ZTUNNEL_CONFIG_DUMP,
        KIND_ISTIOD_AMBIENTZ,
        KIND_ISTIOD_SYNCZ,
        KIND_ISTIOD_CONFIG_DUMP,
        KIND_ISTIOD_WADS,
        KIND_FINDINGS,
    }
)


# --- cluster-wide Kubernetes state -------------------------------------------------------------------------


def k8s_version() -> str:
    return "cluster/version.json"


def k8s_list(resource: str, group: str = "") -> str:
    """A list of one resource kind: core kinds by plural (``pods``), others as ``<plural>.<group>``."""
    if not group:
        return f"cluster/{resource}.json"
    if group.endswith("istio.io"):
        return f"cluster/istio/{resource}.{group}.json"
    if group == "gateway.networking.k8s.io":
        return f"cluster/gateway-api/{resource}.{group}.json"
    return f"cluster/{resource}.{group}.json"


# --- istiod ------------------------------------------------------------------------------------------------


def istiod_file(pod: str, name: str) -> str:
    """``version.txt``, ``ambientz.json`` or ``syncz.json`` of one istiod replica."""
    return f"istiod/{pod}/{name}"


def istiod_log(pod: str, container: str = "discovery", previous: bool = False) -> str:
    return f"istiod/{pod}/logs/{container}{'.previous' if previous else ''}.log"


def istiod_proxy_dump(ztunnel_pod: str) -> str:
    """istiod's view of one ztunnel (from whichever replica holds its xDS connection; the manifest says which)."""
    return f"istiod/proxies/{ztunnel_pod}/config_dump.json"


def istiod_proxy_wads(ztunnel_pod: str) -> str:
    return f"istiod/proxies/{ztunnel_pod}/wads.json"


# --- ztunnel and istio-cni, per node -----------------------------------------------------------------------


def ztunnel_file(node: str, pod: str, name: str) -> str:
    """``config_dump.json``, ``metrics.txt`` or ``pod.json`` of the ztunnel ``pod`` on ``node``."""
    return f"ztunnel/{node}/{pod}/{name}"


def ztunnel_log(node: str, pod: str, container: str = "istio-proxy", previous: bool = False) -> str:
    return f"ztunnel/{node}/{pod}/logs/{container}{'.previous' if previous else ''}.log"


def cni_log(node: str, pod: str, container: str = "install-cni", previous: bool = False) -> str:
    return f"cni/{node}/{pod}/logs/{container}{'.previous' if previous else ''}.log"


# --- member order ------------------------------------------------------------------------------------------
# zstd only finds the repetition between ztunnel dumps when they sit next to each other in the stream (within
# its 128 MiB window), so members are grouped by kind first and by node second. Bulky logs go last.

_ORDER: tuple[tuple[re.Pattern[str], int], ...] = tuple(
    (re.compile(pattern), rank)
    for pattern, rank in (
        (r"^cluster/", 10),
        (r"^istiod/[^/]+/(version\.txt|ambientz\.json|syncz\.json)$", 20),
        (r"^istiod/proxies/[^/]+/config_dump\.json$", 30),
        (r"^istiod/proxies/[^/]+/wads\.json$", 31),
        (r"^ztunnel/[^/]+/[^/]+/pod\.json$", 40),
        (r"^ztunnel/[^/]+/[^/]+/config_dump\.json$", 41),
        (r"^ztunnel/[^/]+/[^/]+/metrics\.txt$", 42),
        (r"^istiod/[^/]+/logs/", 50),
        (r"^cni/", 51),
        (r"^ztunnel/[^/]+/[^/]+/logs/", 52),
        (r"^manifest\.json$", 99),
    )
)


def order_key(path: str) -> tuple[int, str]:
    """Sort key giving the order in which members are written to an archive."""
    for pattern, rank in _ORDER:
        if pattern.search(path):
            return (rank, path)
    return (90, path)


def kind_of_path(path: str) -> str | None:
    """The artifact kind a path of this layout holds, or None when the path is not part of the layout."""
    if path == MANIFEST:
        return KIND_MANIFEST
    if path == "cluster/version.json":
        return KIND_K8S_VERSION
    if path.startswith("cluster/") and path.endswith(".json"):
        return KIND_K8S_LIST
    parts = path.split("/")
    if parts[0] == "istiod":
        if len(parts) == 4 and parts[1] == "proxies":
            return {"config_dump.json": KIND_ISTIOD_CONFIG_DUMP, "wads.json": KIND_ISTIOD_WADS}.get(parts[3])
        if len(parts) == 3:
            return {
                "version.txt": KIND_ISTIOD_VERSION,
                "ambientz.json": KIND_ISTIOD_AMBIENTZ,
                "syncz.json": KIND_ISTIOD_SYNCZ,
            }.get(parts[2])
        if len(parts) == 4 and parts[2] == "logs":
            return KIND_ISTIOD_LOG
    if parts[0] == "ztunnel":
        if len(parts) == 4:
            return {
                "config_dump.json": KIND_ZTUNNEL_CONFIG_DUMP,
                "metrics.txt": KIND_ZTUNNEL_METRICS,
                "pod.json": KIND_K8S_OBJECT,
            }.get(parts[3])
        if len(parts) == 5 and parts[3] == "logs":
            return KIND_ZTUNNEL_LOG
    if parts[0] == "cni" and len(parts) == 5 and parts[3] == "logs":
        return KIND_CNI_LOG
    return None
