"""Scenario files: the YAML that describes a synthetic ambient mesh, loaded into dataclasses.

A scenario names the Istio version (which picks the config_dump shape), the nodes, namespaces with their
ambient labels, deployments, services, waypoints, policies, istiod replicas, traffic and faults. The same
scenario and seed always give the same cluster, byte for byte. docs/synth.md documents every key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from bundler.errors import ScenarioError

SUPPORTED_ISTIO = ((1, 22), (1, 31))  # inclusive range of minor versions whose formats we generate

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")


@dataclass(frozen=True)
class Deployment:
    name: str
    app: str
    version: str
    replicas: int
    service_account: str
    ports: tuple[int, ...]
    labels: dict[str, str] = field(default_factory=dict)
    host_network: bool = False


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    selector: dict[str, str]
    ports: tuple[tuple[int, int], ...]  # (port, targetPort)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WaypointSpec:
    name: str
    waypoint_for: str = "service"
    replicas: int = 1


@dataclass(frozen=True)
class NamespaceSpec:
    name: str
    ambient: bool
    labels: dict[str, str]
    deployments: tuple[Deployment, ...]
    services: tuple[ServiceSpec, ...]
    waypoints: tuple[WaypointSpec, ...]


@dataclass(frozen=True)
class PolicySpec:
    """An AuthorizationPolicy (L4 only: what ztunnel enforces)."""

    name: str
    namespace: str
    action: str  # ALLOW | DENY
    selector: dict[str, str] | None
    from_principals: tuple[str, ...] = ()
    from_namespaces: tuple[str, ...] = ()
    to_ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class PeerAuthenticationSpec:
    name: str
    namespace: str
    mode: str  # STRICT | PERMISSIVE


@dataclass(frozen=True)
class TrafficSpec:
    """``connections`` TCP connections from the pods of ``source`` (namespace/app) to a service."""

    source: str
    service: str  # namespace/name
    port: int
    connections: int


@dataclass(frozen=True)
class FaultSpec:
    type: str
    params: dict[str, Any]


@dataclass(frozen=True)
class GenerateSpec:
    """Bulk workloads for large meshes, added to the namespaces listed explicitly."""

    namespaces: int = 0
    deployments_per_namespace: int = 0
    replicas: int = 1
    ambient_fraction: float = 1.0
    connections_per_deployment: int = 0


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    istio_version: str
    kubernetes_version: str
    now: datetime
    window: timedelta
    log_format: str  # plain | json
    cluster_id: str
    trust_domain: str
    nodes: tuple[str, ...]
    istiod_replicas: int
    per_proxy_dump: str  # auto | full | empty
    namespaces: tuple[NamespaceSpec, ...]
    policies: tuple[PolicySpec, ...]
    peer_authentications: tuple[PeerAuthenticationSpec, ...]
    traffic: tuple[TrafficSpec, ...]
    faults: tuple[FaultSpec, ...]
    generate: GenerateSpec
    source_path: str = ""
    ztunnel_namespace: str = "istio-system"  # GKE installs ztunnel and istio-cni in kube-system
    cni_namespace: str = "istio-system"

    @property
    def istio_minor(self) -> tuple[int, int]:
        return parse_minor(self.istio_version)

    def at_least(self, major: int, minor: int) -> bool:
        return self.istio_minor >= (major, minor)


def parse_minor(version: str) -> tuple[int, int]:
    match = re.match(r"^(\d+)\.(\d+)", version)
    if not match:
        raise ScenarioError(f"istioVersion {version!r} is not a version like 1.28.1")
    return int(match.group(1)), int(match.group(2))


def parse_duration(text: str | int, what: str) -> timedelta:
    if isinstance(text, int):
        return timedelta(seconds=text)
    match = _DURATION.match(str(text).strip())
    if not match:
        raise ScenarioError(f"{what}: {text!r} is not a duration like 30m, 1h or 2d")
    amount, unit = int(match.group(1)), match.group(2)
    return timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]: amount})


class _Reader:
    """Typed access to one mapping of the YAML, with errors that name the offending key."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ScenarioError(f"{where}: expected a mapping, got {type(data).__name__}")
        self.data = data
        self.where = where

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., ) -> Any:
        if key not in self.data or self.data[key] is None:
            if default is ...:
                raise ScenarioError(f"{self.where}: missing required key {key!r}")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise ScenarioError(f"{self.where}.{key}: expected {names}, got {value!r}")
        return value

    def name(self, key: str, default: Any = ...) -> str:
        value = self.get(key, str, default)
        if value is not None and not _NAME.match(value):
            raise ScenarioError(f"{self.where}.{key}: {value!r} is not a valid Kubernetes name")
        return value

    def labels(self, key: str) -> dict[str, str]:
        value = self.get(key, dict, {})
        return {str(k): str(v) for k, v in value.items()}

    def unknown_keys(self, known: set[str]) -> None:
        extra = sorted(set(self.data) - known)
        if extra:
            raise ScenarioError(f"{self.where}: unknown key(s) {', '.join(map(repr, extra))}")


def _ports(values: Any, where: str) -> tuple[int, ...]:
    if not isinstance(values, list) or not all(isinstance(p, int) and 0 < p < 65536 for p in values):
        raise ScenarioError(f"{where}: expected a list of port numbers")
    return tuple(values)


def _deployment(data: Any, where: str) -> Deployment:
    r = _Reader(data, where)
    r.unknown_keys({"name", "app", "version", "replicas", "serviceAccount", "ports", "labels", "hostNetwork"})
    name = r.name("name")
    app = r.get("app", str, name)
    replicas = r.get("replicas", int, 1)
    if replicas < 0:
        raise ScenarioError(f"{where}.replicas: must be >= 0")
    return Deployment(
        name=name,
        app=app,
        version=r.get("version", str, "v1"),
        replicas=replicas,
        service_account=r.name("serviceAccount", app),
        ports=_ports(r.get("ports", list, [8080]), f"{where}.ports"),
        labels=r.labels("labels"),
        host_network=r.get("hostNetwork", bool, False),
    )


def _service(data: Any, where: str) -> ServiceSpec:
    r = _Reader(data, where)
    r.unknown_keys({"name", "selector", "ports", "labels"})
    name = r.name("name")
    ports: list[tuple[int, int]] = []
    for i, port in enumerate(r.get("ports", list)):
        if isinstance(port, int):
            ports.append((port, port))
        elif isinstance(port, dict):
            pr = _Reader(port, f"{where}.ports[{i}]")
            ports.append((pr.get("port", int), pr.get("targetPort", int, pr.get("port", int))))
        else:
            raise ScenarioError(f"{where}.ports[{i}]: expected a port number or {{port, targetPort}}")
    return ServiceSpec(name=name, selector=r.labels("selector") or {"app": name}, ports=tuple(ports),
                       labels=r.labels("labels"))


def _namespace(data: Any, where: str) -> NamespaceSpec:
    r = _Reader(data, where)
    r.unknown_keys({"name", "ambient", "labels", "useWaypoint", "deployments", "services", "waypoints"})
    name = r.name("name")
    labels = r.labels("labels")
    ambient = r.get("ambient", bool, False)
    if ambient:
        labels.setdefault("istio.io/dataplane-mode", "ambient")
    use_waypoint = r.get("useWaypoint", str, None)
    if use_waypoint:
        labels["istio.io/use-waypoint"] = use_waypoint
    waypoints = []
    for i, wp in enumerate(r.get("waypoints", list, [])):
        wr = _Reader(wp, f"{where}.waypoints[{i}]")
        wr.unknown_keys({"name", "for", "replicas"})
        waypoint_for = wr.get("for", str, "service")
        if waypoint_for not in ("service", "workload", "all", "none"):
            raise ScenarioError(f"{where}.waypoints[{i}].for: must be service, workload, all or none")
        waypoints.append(WaypointSpec(wr.name("name", "waypoint"), waypoint_for, wr.get("replicas", int, 1)))
    return NamespaceSpec(
        name=name,
        ambient=ambient,
        labels=labels,
        deployments=tuple(_deployment(d, f"{where}.deployments[{i}]")
                          for i, d in enumerate(r.get("deployments", list, []))),
        services=tuple(_service(s, f"{where}.services[{i}]") for i, s in enumerate(r.get("services", list, []))),
        waypoints=tuple(waypoints),
    )


def _policy(data: Any, where: str) -> PolicySpec:
    r = _Reader(data, where)
    r.unknown_keys({"name", "namespace", "action", "selector", "fromPrincipals", "fromNamespaces", "toPorts"})
    action = r.get("action", str, "ALLOW").upper()
    if action not in ("ALLOW", "DENY"):
        raise ScenarioError(f"{where}.action: ztunnel enforces ALLOW or DENY, not {action!r}")
    selector = r.get("selector", dict, None)
    return PolicySpec(
        name=r.name("name"),
        namespace=r.name("namespace"),
        action=action,
        selector={str(k): str(v) for k, v in selector.items()} if selector else None,
        from_principals=tuple(str(p) for p in r.get("fromPrincipals", list, [])),
        from_namespaces=tuple(str(p) for p in r.get("fromNamespaces", list, [])),
        to_ports=_ports(r.get("toPorts", list, []), f"{where}.toPorts"),
    )


def _nodes(value: Any) -> tuple[str, ...]:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        width = max(2, len(str(value)))
        return tuple(f"node-{i:0{width}d}" for i in range(1, value + 1))
    if isinstance(value, list) and value and all(isinstance(n, str) and _NAME.match(n) for n in value):
        if len(set(value)) != len(value):
            raise ScenarioError("nodes: duplicate node names")
        return tuple(value)
    raise ScenarioError("nodes: expected a positive count or a list of node names")


def scenario_from_dict(data: Any, source_path: str = "") -> Scenario:
    r = _Reader(data, "scenario")
    r.unknown_keys({
        "name", "seed", "istioVersion", "kubernetesVersion", "now", "window", "logFormat", "clusterId",
        "trustDomain", "nodes", "istiod", "namespaces", "authorizationPolicies", "peerAuthentications",
        "traffic", "faults", "generate", "istioNamespaces",
    })
    version = str(r.get("istioVersion", (str, float), "1.28.1"))
    minor = parse_minor(version)
    if not SUPPORTED_ISTIO[0] <= minor <= SUPPORTED_ISTIO[1]:
        low, high = SUPPORTED_ISTIO
        raise ScenarioError(f"istioVersion {version}: synth generates {low[0]}.{low[1]} to {high[0]}.{high[1]} "
                            "(the <=1.21 config_dump layout is not supported)")
    now_value = r.get("now", (str, datetime), "2026-11-25T12:00:00Z")
    try:
        now = now_value if isinstance(now_value, datetime) else datetime.fromisoformat(now_value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ScenarioError(f"now: {now_value!r} is not an RFC 3339 time") from exc
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    now = now.astimezone(timezone.utc).replace(microsecond=0)

    istiod = _Reader(r.get("istiod", dict, {}), "scenario.istiod")
    istiod.unknown_keys({"replicas", "perProxyDump"})
    per_proxy = istiod.get("perProxyDump", str, "auto")
    if per_proxy not in ("auto", "full", "empty"):
        raise ScenarioError("istiod.perProxyDump: must be auto, full or empty")

    log_format = r.get("logFormat", str, "plain")
    if log_format not in ("plain", "json"):
        raise ScenarioError("logFormat: must be plain or json")

    gen = _Reader(r.get("generate", dict, {}), "scenario.generate")
    gen.unknown_keys({"namespaces", "deploymentsPerNamespace", "replicas", "ambientFraction",
                      "connectionsPerDeployment"})
    generate = GenerateSpec(
        namespaces=gen.get("namespaces", int, 0),
        deployments_per_namespace=gen.get("deploymentsPerNamespace", int, 0),
        replicas=gen.get("replicas", int, 1),
        ambient_fraction=gen.get("ambientFraction", float, 1.0),
        connections_per_deployment=gen.get("connectionsPerDeployment", int, 0),
    )

    traffic = []
    for i, t in enumerate(r.get("traffic", list, [])):
        tr = _Reader(t, f"scenario.traffic[{i}]")
        tr.unknown_keys({"from", "to", "port", "connections"})
        source, service = tr.get("from", str), tr.get("to", str)
        for label, value in (("from", source), ("to", service)):
            if value.count("/") != 1:
                raise ScenarioError(f"scenario.traffic[{i}].{label}: expected namespace/name, got {value!r}")
        traffic.append(TrafficSpec(source, service, tr.get("port", int, 0), tr.get("connections", int, 10)))

    faults = []
    for i, f in enumerate(r.get("faults", list, [])):
        fr = _Reader(f, f"scenario.faults[{i}]")
        params = {k: v for k, v in fr.data.items() if k != "type"}
        faults.append(FaultSpec(fr.get("type", str), params))

    namespaces = tuple(_namespace(n, f"scenario.namespaces[{i}]") for i, n in enumerate(r.get("namespaces", list, [])))
    names = [n.name for n in namespaces]
    if len(set(names)) != len(names):
        raise ScenarioError("namespaces: duplicate namespace names")

    scenario = Scenario(
        name=r.name("name"),
        seed=r.get("seed", int, 1),
        istio_version=version,
        kubernetes_version=str(r.get("kubernetesVersion", str, "v1.31.4")),
        now=now,
        window=parse_duration(r.get("window", (str, int), "1h"), "window"),
        log_format=log_format,
        cluster_id=r.get("clusterId", str, "Kubernetes"),
        trust_domain=r.get("trustDomain", str, "cluster.local"),
        nodes=_nodes(r.get("nodes", (int, list), 3)),
        istiod_replicas=istiod.get("replicas", int, 1),
        per_proxy_dump=per_proxy,
        namespaces=namespaces,
        policies=tuple(_policy(p, f"scenario.authorizationPolicies[{i}]")
                       for i, p in enumerate(r.get("authorizationPolicies", list, []))),
        peer_authentications=tuple(
            PeerAuthenticationSpec(
                _Reader(p, f"scenario.peerAuthentications[{i}]").name("name"),
                _Reader(p, f"scenario.peerAuthentications[{i}]").name("namespace", "istio-system"),
                str(p.get("mode", "STRICT")).upper(),
            )
            for i, p in enumerate(r.get("peerAuthentications", list, []))
        ),
        traffic=tuple(traffic),
        faults=tuple(faults),
        generate=generate,
        source_path=source_path,
    )
    placement = _Reader(r.get("istioNamespaces", dict, {}), "scenario.istioNamespaces")
    placement.unknown_keys({"ztunnel", "cni"})
    scenario = replace(scenario, ztunnel_namespace=placement.name("ztunnel", "istio-system"),
                       cni_namespace=placement.name("cni", "istio-system"))
    if scenario.istiod_replicas < 1:
        raise ScenarioError("istiod.replicas: at least one istiod replica is needed")
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ScenarioError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    try:
        return scenario_from_dict(data, str(path))
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from exc
