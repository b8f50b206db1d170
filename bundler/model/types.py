"""The canonical model analyzers read: every ztunnel dump shape (1.22 maps, 1.23+ lists) and istiod's
proto-JSON (base64 addresses, omitted defaults, renamed fields; formats.md 3.5) normalised into the same
dataclasses, so that analyzers never see format differences.

Values follow ztunnel's rendering (formats.md 2.3-2.5): protocol "HBONE"/"TCP", status "Healthy"/"Unhealthy",
scope "Global"/"Namespace"/"WorkloadSelector", action "Allow"/"Deny", addresses as IP text, gateways as
"<network>/<ip>" or "<namespace>/<hostname>", defaults filled in (trustDomain "cluster.local", serviceAccount
"default", clusterId "Kubernetes", capacity 1, workloadType lowercase).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Workload:
    uid: str
    name: str
    namespace: str
    ips: tuple[str, ...]
    protocol: str  # HBONE | TCP
    node: str = ""
    service_account: str = "default"
    trust_domain: str = "cluster.local"
    waypoint: str | None = None  # "<net>/<ip>" or "<ns>/<hostname>"
    network_gateway: str | None = None
    status: str = "Healthy"
    services: tuple[str, ...] = ()  # "ns/hostname", sorted
    authorization_policies: tuple[str, ...] = ()  # "ns/name", sorted
    network: str = ""
    cluster_id: str = "Kubernetes"
    workload_type: str = ""
    workload_name: str = ""
    canonical_name: str = ""
    canonical_revision: str = ""
    native_tunnel: bool = False
    network_mode: str = "Standard"
    hostname: str = ""
    locality: tuple[str, str, str] = ("", "", "")  # (region, zone, subzone)
    capacity: int = 1
    application_tunnel: tuple[str, int | None] | None = None  # (protocol NONE|PROXY, port)

    def comparable(self) -> dict[str, Any]:
        """The fields both ztunnel and istiod express, for diffs (what istiod cannot send is left out).

        ``workload_type`` is left out on purpose: since Istio 1.26 istiod sends POD for every pod while older
        ztunnels and istiods used the owner kind (formats.md 2.3), so comparing it gives false drift. So are
        the fields a ztunnel of some versions does not render (network mode < 1.24, capacity < 1.26, locality).
        Sequences are sorted tuples (sets compared as sets): equal dicts mean no drift.
        """
        return {
            "uid": self.uid,
            "name": self.name,
            "namespace": self.namespace,
            "ips": tuple(sorted(self.ips)),
            "protocol": self.protocol,
            "node": self.node,
            "service_account": self.service_account,
            "trust_domain": self.trust_domain,
            "waypoint": self.waypoint,
            "status": self.status,
            "services": tuple(sorted(self.services)),
            "authorization_policies": tuple(sorted(self.authorization_policies)),
            "network": self.network,
            "cluster_id": self.cluster_id,
            "canonical_name": self.canonical_name,
            "canonical_revision": self.canonical_revision,
            "native_tunnel": self.native_tunnel,
            "workload_name": self.workload_name,
        }

    @property
    def key(self) -> str:
        return self.uid


@dataclass(frozen=True)
class Endpoint:
    workload_uid: str
    ports: tuple[tuple[int, int], ...]  # (service port, target port), sorted
    status: str = "Healthy"

    def comparable(self) -> tuple[str, str, tuple[tuple[int, int], ...]]:
        return (self.workload_uid, self.status, self.ports)


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    hostname: str
    vips: tuple[str, ...]  # "<net>/<ip>", sorted
    ports: tuple[tuple[int, int], ...]  # (service port, target port), sorted
    endpoints: tuple[Endpoint, ...] = ()  # sorted by uid
    waypoint: str | None = None
    subject_alt_names: tuple[str, ...] = ()
    cidr_vips: tuple[str, ...] = ()  # "<net>/<ip>/<len>" (ztunnel >= 1.30 cidrVips; istiod addresses with a short prefix)
    ip_families: str | None = None  # IPv4 | IPv6 | Dual; None = automatic
    load_balancer: tuple[str, str, tuple[str, ...]] | None = None  # (mode, health policy, routing preferences)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.hostname}"

    def comparable(self) -> dict[str, Any]:
        """The fields both sides express: identity, VIPs, ports, waypoint and endpoints (uid, status, ports).

        Endpoints on the istiod side are derived from istiod's workloads (formats.md 3.5); on a 1.22/1.23
        ztunnel the endpoint status is the workload's. ``cidr_vips``/``ip_families``/``load_balancer`` are left
        out: not every ztunnel version renders them.
        """
        return {
            "namespace": self.namespace,
            "name": self.name,
            "hostname": self.hostname,
            "vips": tuple(sorted(self.vips)),
            "ports": tuple(sorted(self.ports)),
            "waypoint": self.waypoint,
            "endpoints": tuple(sorted(e.comparable() for e in self.endpoints)),
        }


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    scope: str  # Global | Namespace | WorkloadSelector
    action: str  # Allow | Deny
    rules: Any = ()  # ztunnel's nesting: tuple(rule) of tuple(clause) of tuple(match dict as sorted items)
    dry_run: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def comparable(self) -> dict[str, Any]:
        """Everything: both sides express all of it (``rules`` is already canonical: values, matches, clauses
        and rules are sorted, since each level is an OR or an AND and order carries no meaning)."""
        return {
            "namespace": self.namespace,
            "name": self.name,
            "scope": self.scope,
            "action": self.action,
            "rules": self.rules,
            "dry_run": self.dry_run,
        }

    def rules_json(self) -> list[list[list[dict[str, Any]]]]:
        """``rules`` back in ztunnel's JSON nesting (for display): ``[[[{"principals": [{"Exact": ...}]}]]]``."""
        return [[[{key: [_uncanon(v) for v in values] for key, values in match} for match in clause]
                 for clause in rule] for rule in self.rules]


def _uncanon(value: Any) -> Any:
    """Undo the canonical form of a match value: a tuple of (str, value) pairs was an object, () an empty list."""
    if isinstance(value, tuple):
        if value and all(isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) for item in value):
            return {k: _uncanon(v) for k, v in value}
        return [_uncanon(v) for v in value]
    return value


@dataclass(frozen=True)
class CertInfo:
    serial: int  # ztunnel writes decimal
    valid_from: str  # RFC 3339
    expiration: str  # RFC 3339
    pem: str  # decoded PEM text ("" if absent)


@dataclass(frozen=True)
class Certificate:
    identity: str  # spiffe://<td>/ns/<ns>/sa/<sa>
    state: str  # Available | Initializing | Unavailable: <error>
    chain: tuple[CertInfo, ...] = ()  # leaf first
    roots: tuple[CertInfo, ...] = ()  # rootCerts (>= 1.26), or the last certificate of a 1.22-1.25 chain


@dataclass(frozen=True)
class Connection:
    direction: str  # inbound | outbound
    src: str
    actual_dst: str
    original_dst: str | None
    protocol: str | None


@dataclass(frozen=True)
class WorkloadState:
    pod_uid: str  # Kubernetes metadata.uid
    name: str
    namespace: str
    service_account: str
    state: str  # Up | Pending
    connections: tuple[Connection, ...] = ()


@dataclass
class ZtunnelView:
    """One ztunnel's /config_dump, normalised. ``path`` is the artifact; ``pointer(kind, key)`` gives the JSON
    pointer of an object in the original document (the shapes differ: /workloads/3 or /workloads/net~1ip)."""

    node: str
    pod: str
    namespace: str
    path: str
    shape: str  # "map" (1.22) | "list" (1.23+)
    istio_version: str
    workloads: dict[str, Workload] = field(default_factory=dict)  # by uid
    services: dict[str, Service] = field(default_factory=dict)  # by "ns/hostname"
    policies: dict[str, Policy] = field(default_factory=dict)  # by "ns/name"
    certificates: list[Certificate] = field(default_factory=list)
    workload_state: dict[str, WorkloadState] = field(default_factory=dict)  # by pod uid
    staged_services: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    pointers: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, key) -> JSON pointer
    version: dict[str, Any] = field(default_factory=dict)  # the dump's "version" object (BuildInfo), raw
    issues: list[tuple[str, str]] = field(default_factory=list)  # (JSON pointer, message): entries left out

    def pointer(self, kind: str, key: str) -> str:
        return self.pointers.get((kind, key), f"/{kind}")

    def certificate(self, identity: str) -> Certificate | None:
        return next((c for c in self.certificates if c.identity == identity), None)


@dataclass
class IstiodView:
    """istiod's view of one ztunnel: the per-proxy dump when it holds anything, else /debug/ambientz (the
    global set; formats.md 3.2: on Istio >= 1.25 the per-proxy dump is empty). ``source`` says which."""

    ztunnel_pod: str
    source: str  # "per-proxy" | "ambientz"
    path: str
    replica: str | None
    workloads: dict[str, Workload] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    policies: dict[str, Policy] = field(default_factory=dict)
    # where the policies come from: the per-proxy WADS dump (wads.json), else ambientz; None if neither
    policies_path: str | None = None
    # endpoints of services istiod's workloads name but that istiod does not send (ztunnel: stagedServices)
    staged_services: dict[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    # (kind, key) -> JSON pointer, into ``path`` (workloads, services) or ``policies_path`` (policies)
    pointers: dict[tuple[str, str], str] = field(default_factory=dict)
    issues: list[tuple[str, str]] = field(default_factory=list)  # (JSON pointer, message): entries left out

    def pointer(self, kind: str, key: str) -> str:
        return self.pointers.get((kind, key), "")


@dataclass(frozen=True)
class Problem:
    """An artifact (or part of one) that could not be read, parsed or normalised; analyzers report these.

    ``reason``: missing (no member), not-collected (manifest status error/skipped), unsupported (<=1.21 dump),
    malformed (not JSON / wrong shape), invalid (an entry left out), unreadable (damaged archive, bad UTF-8).
    """

    path: str
    message: str
    pointer: str = ""
    reason: str = "malformed"
    line: int | None = None  # 1-based, for text artifacts (logs)

    def __str__(self) -> str:
        where = self.path + (self.pointer and f"#{self.pointer}") + (f":{self.line}" if self.line else "")
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class ZtunnelRef:
    """One ztunnel of the bundle, from the manifest (and the members): where its artifacts are.

    ``dump_status`` is the manifest status of the config dump (ok|truncated|error|skipped), or "missing" when
    neither the manifest nor the bundle has it. Other paths are None when the bundle has no such artifact.
    """

    node: str
    pod: str
    namespace: str
    dump_path: str
    dump_status: str
    dump_reason: str | None = None
    metrics_path: str | None = None
    log_path: str | None = None
    previous_log_path: str | None = None
    pod_json_path: str | None = None
    istiod_dump_path: str | None = None  # istiod/proxies/<pod>/config_dump.json
    istiod_wads_path: str | None = None
    xds_replica: str | None = None  # the istiod replica that answered for this ztunnel (manifest source)


@dataclass(frozen=True)
class IstiodRef:
    """One istiod replica: its version text (``/version``, stripped; None if unreadable) and artifact paths."""

    pod: str
    namespace: str
    version: str | None
    version_path: str | None = None
    ambientz_path: str | None = None
    syncz_path: str | None = None
    log_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class LogRecordRef:
    """A parsed log line and where it is: ``line`` is 1-based."""

    path: str
    line: int
    record: Any  # bundler.formats.ztunnel_log.ZtunnelLogRecord | bundler.formats.istio_log.IstioLogRecord
    text: str


@dataclass(frozen=True)
class LogFile:
    path: str
    component: str  # ztunnel | istiod | cni
    namespace: str
    pod: str
    container: str
    node: str
    previous: bool
