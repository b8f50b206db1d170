"""The runtime analyzers (logs, traffic-path, load-balancing, metrics, waypoints, versions, ztunnel-health) as one
table: a small synthetic mesh with one catalog fault each (docs/synth.md), and the findings at warning or above the
seven analyzers must report for it, matched on (analyzer, code, severity) and a resource, with evidence that points
at the right artifact (and, for logs, at lines holding the signature). Each fault has its clean twin: the same mesh
without faults, on every Istio minor the formats change at and in JSON logs, reports nothing at warning or above.

Bundles are built once per scenario (module-scoped cache) with ``bundle synth``'s own code.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from analyzers.load_balancing import LoadBalancing, chi2_sf
from analyzers.logs import LogSignatures
from analyzers.metrics import Metrics
from analyzers.traffic_path import TrafficPath
from analyzers.versions import Versions, image_tag, parse_version
from analyzers.waypoints import Waypoints
from analyzers.ztunnel_health import ZtunnelHealth
from bundler.analysis import Finding, Report, run_analyzers, severity_rank
from bundler.archive import extract_bundle
from bundler.model import BundleModel
from bundler.synth.build import build_mesh, write_bundle
from bundler.synth.cluster import build_cluster
from bundler.synth.scenario import scenario_from_dict

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
RUNTIME = (LogSignatures, TrafficPath, LoadBalancing, Metrics, Waypoints, Versions, ZtunnelHealth)
WARNING = severity_rank("warning")

# Three nodes; `shop` has a 3-replica service (api) for load balancing, `mesh` a waypoint nobody uses yet.
BASE: dict[str, Any] = {
    "name": "runtime-base", "seed": 7, "istioVersion": "1.28.1", "now": "2026-11-25T12:00:00Z", "window": "1h",
    "nodes": ["node-a", "node-b", "node-c"], "istiod": {"replicas": 2},
    "namespaces": [
        {"name": "shop", "ambient": True,
         "deployments": [
             {"name": "web-v1", "app": "web", "version": "v1", "serviceAccount": "web", "ports": [8080]},
             {"name": "api-v1", "app": "api", "version": "v1", "serviceAccount": "api", "ports": [9080],
              "replicas": 3},
             {"name": "db-v1", "app": "db", "version": "v1", "serviceAccount": "db", "ports": [5432]}],
         "services": [{"name": "web", "ports": [8080]}, {"name": "api", "ports": [9080]},
                      {"name": "db", "ports": [5432]}]},
        {"name": "mesh", "ambient": True,
         "deployments": [{"name": "front-v1", "app": "front", "version": "v1", "serviceAccount": "front",
                          "ports": [8080]}],
         "services": [{"name": "front", "ports": [8080]}],
         "waypoints": [{"name": "waypoint"}]},
        {"name": "client", "ambient": True,
         "deployments": [{"name": "curl", "app": "curl", "version": "v1", "serviceAccount": "curl",
                          "ports": [8080]}]},
    ],
    "peerAuthentications": [{"name": "default", "namespace": "istio-system", "mode": "STRICT"}],
    "traffic": [
        {"from": "client/curl", "to": "shop/web", "port": 8080, "connections": 40},
        {"from": "shop/web", "to": "shop/api", "port": 9080, "connections": 90},
        {"from": "shop/api", "to": "shop/db", "port": 5432, "connections": 45},
        {"from": "client/curl", "to": "mesh/front", "port": 8080, "connections": 20},
    ],
}


def scenario(*faults: dict[str, Any], patch: Callable[[dict[str, Any]], None] | None = None,
             **overrides: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(overrides)
    data["faults"] = list(faults)
    if patch is not None:
        patch(data)
    return data


def pod_label_waypoint(data: dict[str, Any]) -> None:
    """A pod-level istio.io/use-waypoint to a waypoint that serves only service traffic (the default)."""
    mesh = next(ns for ns in data["namespaces"] if ns["name"] == "mesh")
    mesh["deployments"][0]["labels"] = {"istio.io/use-waypoint": "waypoint"}


def placement() -> dict[str, str]:
    """app -> node of its (first) pod: the scheduler is the scenario's seed, so faults can target a pod's node."""
    cluster = build_cluster(scenario_from_dict(scenario()))
    out: dict[str, str] = {}
    for pod in cluster.pods:
        if pod.component == "app":
            out.setdefault(pod.app, pod.node)
    return out


NODE_OF = placement()


@dataclass(frozen=True)
class Expect:
    """A finding at warning or above: its analyzer, code, severity, one resource it must name (``name`` is a prefix:
    synthetic pod names end in generated suffixes), and optionally where its evidence must point: a path regex and,
    for line evidence, a text the lines must hold."""

    analyzer: str
    code: str
    severity: str
    kind: str
    namespace: str | None
    name: str
    node: str | None = None
    path: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class Case:
    name: str
    scenario: dict[str, Any] = field(hash=False)
    expected: tuple[Expect, ...]


ZT = "istio-system"
CASES = [
    Case("hbone-blocked", scenario({"type": "hbone-blocked", "namespace": "shop"}), (
        Expect("logs", "hbone-port-blocked", "critical", "Pod", "shop", "web-v1-",
               path=rf"^ztunnel/{NODE_OF['curl']}/ztunnel-[^/]+/logs/istio-proxy\.log$",
               text="maybe a NetworkPolicy is blocking HBONE port 15008"),
        Expect("traffic-path", "no-inbound", "error", "Pod", "shop", "web-v1-", node=NODE_OF["web"],
               path=r"^ztunnel/node-[abc]/.*/istio-proxy\.log$", text='direction="outbound"'),
        Expect("metrics", "connections-failed-connect", "warning", "Pod", "shop", "web-v1-",
               path=r"^ztunnel/node-[abc]/ztunnel-[^/]+/metrics\.txt$"),
    )),
    Case("hbone-blocked-1.30-json", scenario({"type": "hbone-blocked", "namespace": "shop"}, istioVersion="1.30.0",
                                             logFormat="json"), (
        Expect("logs", "hbone-port-blocked", "critical", "Pod", "shop", "api-v1-",
               path=r"^ztunnel/node-[abc]/.*/istio-proxy\.log$", text='"direction":"outbound"'),
        Expect("traffic-path", "no-inbound", "error", "Pod", "shop", "db-v1-"),
        Expect("metrics", "connections-failed-network-policy", "warning", "Pod", "shop", "db-v1-",
               path=r"metrics\.txt$"),
    )),
    Case("policy-denial", scenario({"type": "policy-denial", "service": "shop/db",
                                    "allow": "cluster.local/ns/shop/sa/web"}), (
        Expect("logs", "policy-allow-no-match", "error", "Pod", "shop", "db-v1-",
               path=r"^ztunnel/node-[abc]/.*/istio-proxy\.log$",
               text="policy rejection: allow policies exist, but none allowed"),
        Expect("metrics", "connections-failed-deny", "warning", "Pod", "shop", "db-v1-", path=r"metrics\.txt$"),
        Expect("metrics", "connections-failed-connect", "warning", "Pod", "shop", "db-v1-"),
    )),
    Case("cert-unavailable", scenario({"type": "cert-unavailable", "pod": "shop/web"}), (
        Expect("logs", "certificate-fetch-failed", "error", "Pod", "shop", "web-v1-",
               path=r"^ztunnel/node-[abc]/.*/istio-proxy\.log$", text="certificate fetch failed"),
    )),
    Case("xds-disconnected", scenario({"type": "xds-disconnected", "node": "node-a"}), (
        Expect("logs", "xds-disconnected", "critical", "Pod", ZT, "ztunnel-", node="node-a",
               path=r"^ztunnel/node-a/.*/istio-proxy\.log$", text="XDS client connection error"),
    )),
    Case("xds-nack", scenario({"type": "xds-nack", "node": "node-b"}), (
        Expect("logs", "xds-nack", "error", "Pod", ZT, "ztunnel-", node="node-b",
               path=r"^ztunnel/node-b/.*/istio-proxy\.log$", text="Nack"),
    )),
    Case("pod-not-enrolled-pending", scenario({"type": "pod-not-enrolled", "pod": "shop/db"}), (
        Expect("logs", "cni-enrollment-failed", "error", "Pod", "shop", "db-v1-",
               path=r"^cni/node-[abc]/istio-cni-node-[^/]+/logs/install-cni\.log$", text="pod partially added"),
    )),
    Case("pod-not-enrolled-absent", scenario({"type": "pod-not-enrolled", "pod": "shop/db",
                                              "annotation": "absent"}), (
        Expect("logs", "cni-enrollment-failed", "error", "Pod", "shop", "db-v1-",
               path=r"^cni/.*/install-cni\.log$", text="Failed capturing pod, will not retry"),
    )),
    Case("workload-missing-on-its-node", scenario({"type": "workload-missing", "pod": "shop/web"}), (
        Expect("logs", "local-workload-unknown", "error", "Pod", "shop", "web-v1-",
               path=r"istio-proxy\.log$", text="timed out waiting for workload"),
    )),
    Case("root-mismatch", scenario({"type": "root-mismatch", "node": NODE_OF["db"]}), (
        Expect("logs", "tls-trust-failure", "critical", "Pod", "shop", "db-v1-", text="UnknownIssuer"),
        Expect("traffic-path", "no-inbound", "error", "Pod", "shop", "db-v1-"),
        Expect("metrics", "connections-failed-connect", "warning", "Pod", "shop", "db-v1-"),
    )),
    Case("waypoint-missing", scenario({"type": "waypoint-missing", "namespace": "shop", "waypoint": "waypoint"}), (
        Expect("waypoints", "waypoint-missing", "error", "Gateway", "shop", "waypoint",
               path=r"^cluster/namespaces\.json$"),
        Expect("waypoints", "waypoint-missing", "error", "Service", "shop", "api",
               path=r"^cluster/services\.json$"),
    )),
    Case("waypoint-not-ready", scenario({"type": "waypoint-missing", "namespace": "mesh", "waypoint": "waypoint",
                                         "mode": "not-ready"}), (
        Expect("waypoints", "waypoint-not-ready", "error", "Gateway", "mesh", "waypoint",
               path=r"^cluster/gateway-api/gateways\.gateway\.networking\.k8s\.io\.json$"),
        Expect("waypoints", "waypoint-not-ready", "error", "Service", "mesh", "front"),
        Expect("waypoints", "waypoint-not-ready", "error", "Namespace", None, "mesh"),
    )),
    Case("waypoint-pod-label-service-waypoint", scenario(patch=pod_label_waypoint), (
        Expect("waypoints", "waypoint-traffic-type-mismatch", "error", "Pod", "mesh", "front-v1-",
               path=r"^cluster/pods\.json$"),
    )),
    Case("ztunnel-oomkilled", scenario({"type": "ztunnel-oomkilled", "node": "node-c"}), (
        Expect("ztunnel-health", "ztunnel-oomkilled", "error", "Pod", ZT, "ztunnel-", node="node-c",
               path=r"^ztunnel/node-c/ztunnel-[^/]+/logs/istio-proxy\.previous\.log$", text="connection complete"),
        Expect("ztunnel-health", "ztunnel-oomkilled", "error", "Pod", ZT, "ztunnel-", node="node-c",
               path=r"^ztunnel/node-c/ztunnel-[^/]+/pod\.json$"),
    )),
    Case("version-skew", scenario({"type": "version-skew", "node": "node-b"}), (
        Expect("versions", "ztunnel-skew-unsupported", "error", "Pod", ZT, "ztunnel-", node="node-b",
               path=r"^ztunnel/node-b/ztunnel-[^/]+/config_dump\.json$"),
        Expect("versions", "ztunnel-versions-mixed", "warning", "Pod", ZT, "ztunnel-", node="node-b"),
        Expect("versions", "cni-ztunnel-mismatch", "warning", "Pod", ZT, "ztunnel-", node="node-b"),
    )),
    Case("version-skew-map-shaped-dump", scenario({"type": "version-skew", "node": "node-a"}, istioVersion="1.24.3"), (
        Expect("versions", "ztunnel-skew-unsupported", "error", "Pod", ZT, "ztunnel-", node="node-a",
               path=r"^ztunnel/node-a/ztunnel-[^/]+/config_dump\.json$"),
        Expect("versions", "ztunnel-versions-mixed", "warning", "Pod", ZT, "ztunnel-", node="node-a"),
        Expect("versions", "cni-ztunnel-mismatch", "warning", "Pod", ZT, "ztunnel-", node="node-a"),
    )),
    Case("lb-skew", scenario({"type": "lb-skew", "service": "shop/api"}), (
        Expect("load-balancing", "endpoint-skew", "warning", "Service", "shop", "api",
               path=r"^ztunnel/node-[abc]/.*/istio-proxy\.log$", text="api.shop.svc.cluster.local"),
    )),
]

def case(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


HEALTHY = {f"healthy-{v}": scenario(istioVersion=v) for v in ("1.22.5", "1.24.3", "1.26.2", "1.28.1", "1.30.0")}
HEALTHY["healthy-json"] = scenario(logFormat="json")
HEALTHY["healthy-1.22-json"] = scenario(istioVersion="1.22.5", logFormat="json")


# --- bundles, built once per scenario ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle_of(tmp_path_factory: pytest.TempPathFactory) -> Callable[[dict[str, Any]], Path]:
    cache: dict[str, Path] = {}
    folder = tmp_path_factory.mktemp("runtime-bundles")

    def build(data: dict[str, Any]) -> Path:
        key = json.dumps(data, sort_keys=True)
        if key not in cache:
            out = folder / f"b{len(cache)}.tar.zst"
            write_bundle(build_mesh(scenario_from_dict(data)), out, ["bundle", "synth", "test.yaml"])
            cache[key] = out
        return cache[key]

    return build


def analyze(path: Path) -> tuple[Report, BundleModel]:
    model = BundleModel.open(path)
    return run_analyzers(model, [cls() for cls in RUNTIME]), model


def serious(report: Report) -> list[Finding]:
    return [f for f in report.findings if severity_rank(f.severity) >= WARNING]


def names(resource: Any, expect: Expect) -> bool:
    return (resource.kind == expect.kind and resource.namespace == expect.namespace
            and resource.name.startswith(expect.name) and (expect.node is None or resource.node == expect.node))


def line_text(model: BundleModel, path: str, lines: tuple[int, int]) -> str:
    text = model.bundle.read(path).decode("utf-8").splitlines()
    return "\n".join(text[lines[0] - 1: lines[1]])


def resolve(doc: Any, pointer: str) -> Any:
    """The value at an RFC 6901 pointer, or None."""
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(doc, list) and token.isdigit() and int(token) < len(doc):
            doc = doc[int(token)]
        elif isinstance(doc, dict) and token in doc:
            doc = doc[token]
        else:
            return None
    return doc


def check_expected(report: Report, model: BundleModel, expected: tuple[Expect, ...]) -> None:
    found = {(f.analyzer, f.code, f.severity): f for f in serious(report)}
    assert set(found) == {(e.analyzer, e.code, e.severity) for e in expected}, \
        [(f.analyzer, f.code, f.severity, f.message) for f in serious(report)]
    for e in expected:
        finding = found[(e.analyzer, e.code, e.severity)]
        assert any(names(r, e) for r in finding.resources), (e, [r.display() for r in finding.resources])
        assert finding.evidence, e
        for ev in finding.evidence:
            assert model.has(ev.path), ev.path  # evidence points at a member of the bundle
            if ev.pointer is not None:
                assert resolve(orjson.loads(model.bundle.read(ev.path)), ev.pointer) is not None, ev.display()
            if ev.lines is not None:
                assert ev.excerpt is None or ev.excerpt.splitlines()[0][:80] in line_text(model, ev.path, ev.lines)
        if e.path is None:
            continue
        matching = [ev for ev in finding.evidence if re.search(e.path, ev.path)]
        assert matching, (e, [ev.display() for ev in finding.evidence])
        if e.text is not None:
            assert any(ev.lines is not None and e.text in line_text(model, ev.path, ev.lines) for ev in matching), \
                (e, [ev.display() for ev in matching])
        assert finding.remediation and finding.references, e


# --- the table ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_fault_is_reported(case: Case, bundle_of: Callable[[dict[str, Any]], Path]) -> None:
    report, model = analyze(bundle_of(case.scenario))
    with model:
        check_expected(report, model, case.expected)


@pytest.mark.parametrize("name", sorted(HEALTHY))
def test_healthy_mesh_reports_nothing_serious(name: str, bundle_of: Callable[[dict[str, Any]], Path]) -> None:
    report, model = analyze(bundle_of(HEALTHY[name]))
    model.close()
    assert serious(report) == [], [(f.analyzer, f.code, f.message) for f in serious(report)]
    assert {run.id: run.status for run in report.analyzers} == {cls.metadata.id: "ok" for cls in RUNTIME}


def test_healthy_sample_reports_nothing_serious() -> None:
    report, model = analyze(SAMPLES / "bookinfo-healthy.tar.zst")
    model.close()
    assert serious(report) == [], [(f.analyzer, f.code, f.message) for f in serious(report)]


def test_incident_sample() -> None:
    report, model = analyze(SAMPLES / "bookinfo-incident.tar.zst")
    with model:
        check_expected(report, model, (
            Expect("logs", "policy-allow-no-match", "error", "Pod", "bookinfo", "ratings-v1-",
                   path=r"^ztunnel/ambient-worker2/.*/istio-proxy\.log$", text="allow policies exist, but none"),
            Expect("metrics", "connections-failed-deny", "warning", "Pod", "bookinfo", "ratings-v1-"),
            Expect("metrics", "connections-failed-connect", "warning", "Pod", "bookinfo", "ratings-v1-"),
            Expect("ztunnel-health", "ztunnel-oomkilled", "error", "Pod", ZT, "ztunnel-", node="ambient-worker3",
                   path=r"^ztunnel/ambient-worker3/.*/istio-proxy\.previous\.log$"),
            Expect("logs", "cni-enrollment-failed", "error", "Pod", "bookinfo", "details-v1-",
                   path=r"^cni/.*/install-cni\.log$", text="no ztunnel connection"),
            Expect("logs", "xds-nack", "error", "Pod", ZT, "ztunnel-", node="ambient-worker2"),
        ))


# --- "unknown", not "no inbound" ---------------------------------------------------------------------------------


def test_truncated_destination_log_is_unknown_not_missing(bundle_of, tmp_path: Path) -> None:
    """hbone-blocked, but the destination node's ztunnel log is marked truncated: traffic-path must not claim its
    connections never arrived; it says they could not be checked."""
    folder = Path(extract_bundle(bundle_of(case("hbone-blocked").scenario), tmp_path))
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    with BundleModel.open(folder) as model:
        web = next(p for p in model.pods() if p["metadata"]["name"].startswith("web-v1-"))
        node = web["spec"]["nodeName"]
        target = next(ref for ref in model.ztunnel_refs() if ref.node == node)
    for art in manifest["artifacts"]:
        if art["path"] == target.log_path:
            art["status"], art["reason"] = "truncated", "kept the last 50 MiB"
    (folder / "manifest.json").write_bytes(orjson.dumps(manifest))
    report, model = analyze(folder)
    model.close()
    no_inbound = [f for f in report.findings if f.code == "no-inbound"]
    assert all(r.ztunnel != target.pod for f in no_inbound for r in f.resources)
    unknown = [f for f in report.findings if f.analyzer == "traffic-path" and f.code == "inbound-unknown"]
    assert unknown and unknown[0].severity == "info"
    assert any(r.kind == "Node" and r.name == node for r in unknown[0].resources)


# --- views and helpers -------------------------------------------------------------------------------------------


def test_load_balancing_view(bundle_of) -> None:
    report, model = analyze(bundle_of(case("lb-skew").scenario))
    model.close()
    rows = {row["service"]: row for row in report.views["loadBalancing"]}
    api = rows["shop/api.shop.svc.cluster.local"]
    assert api["skewed"] is True and len(api["endpoints"]) == 3 and api["expected"] == 30.0
    assert sum(e["connections"] for e in api["endpoints"]) == 90
    assert all(e["node"].startswith("node-") for e in api["endpoints"])
    assert not any(row["skewed"] for name, row in rows.items() if name != "shop/api.shop.svc.cluster.local")


@pytest.mark.parametrize("statistic,df,expected", [
    (3.841, 1, 0.05), (10.828, 1, 0.001), (5.991, 2, 0.05), (16.266, 3, 0.001), (13.816, 2, 0.001),
    (0.0, 4, 1.0), (2.0, 1, 0.1573), (30.0, 30, 0.4657), (100.0, 10, 5.45e-17),
])
def test_chi2_survival(statistic: float, df: int, expected: float) -> None:
    assert chi2_sf(statistic, df) == pytest.approx(expected, rel=2e-3)


@pytest.mark.parametrize("text,version", [
    ("1.24.3", (1, 24, 3)), ("1.28.1-c078df6c-Clean", (1, 28, 1)), ("1.24-dev", (1, 24, 0)),
    ("1.26.0-distroless", (1, 26, 0)), ("latest", None), (None, None),
])
def test_parse_version(text: str | None, version: tuple[int, int, int] | None) -> None:
    assert parse_version(text) == version


def test_image_tag() -> None:
    assert image_tag("docker.io/istio/ztunnel:1.24.3-distroless") == "1.24.3-distroless"
    assert image_tag("registry:5000/istio/ztunnel:1.25.0") == "1.25.0"
    assert image_tag("registry:5000/istio/ztunnel@sha256:abc") is None


def test_metadata() -> None:
    assert [cls.metadata.id for cls in RUNTIME] == [
        "logs", "traffic-path", "load-balancing", "metrics", "waypoints", "versions", "ztunnel-health"]
    for cls in RUNTIME:
        assert cls.metadata.description and cls.metadata.docs.startswith("https://") and cls.metadata.inputs


# --- signatures the catalog faults do not produce, from crafted lines --------------------------------------------


def _extracted(bundle: Path, tmp_path: Path) -> Path:
    return Path(extract_bundle(bundle, tmp_path))


def test_log_signatures_from_crafted_lines(bundle_of, tmp_path: Path) -> None:
    """Lines appended to the db node's ztunnel log, one per signature (and severity): each is classified, counted
    on its own, and its evidence is that very line."""
    from datetime import datetime, timedelta, timezone

    from bundler.formats.ztunnel_log import ZtunnelLogRecord, render_plain

    folder = _extracted(bundle_of(scenario()), tmp_path)
    at = datetime(2026, 11, 25, 11, 30, tzinfo=timezone.utc)
    pods_path = folder / "cluster" / "pods.json"
    pods_doc = orjson.loads(pods_path.read_bytes())
    pods = {p["metadata"]["name"].split("-")[0]: p for p in pods_doc["items"]
            if p["metadata"]["namespace"] in ("shop", "client")}
    db, api, curl, web = pods["db"], pods["api"], pods["curl"], pods["web"]
    web["status"]["startTime"] = (at - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")  # a fresh pod
    pods_path.write_bytes(orjson.dumps(pods_doc))
    with BundleModel.open(folder) as model:
        ref = next(r for r in model.ztunnel_refs() if r.node == db["spec"]["nodeName"])
    db_ip, db_name, api_ip = db["status"]["podIP"], db["metadata"]["name"], api["status"]["podIP"]

    def inbound(error: str, identity: str | None, src_ip: str = "10.128.9.9", dst: dict[str, Any] = db
                ) -> ZtunnelLogRecord:
        fields = [("src.addr", f"{src_ip}:40000")] + ([("src.identity", identity)] if identity else [])
        fields += [("dst.addr", f"{dst['status']['podIP']}:5432"), ("dst.workload", dst["metadata"]["name"]),
                   ("dst.namespace", "shop"), ("direction", "inbound"), ("bytes_sent", 0), ("bytes_recv", 0),
                   ("duration", "0ms"), ("error", error)]
        return ZtunnelLogRecord(at, "error", "access", "connection complete", (), tuple(fields))

    def outbound(error: str, port: int) -> ZtunnelLogRecord:
        return ZtunnelLogRecord(at, "error", "access", "connection complete", (), (
            ("src.addr", f"{db_ip}:{port}"), ("dst.addr", f"{api_ip}:15008"), ("dst.hbone_addr", f"{api_ip}:9080"),
            ("direction", "outbound"), ("error", error)))

    def local_unknown(pod: dict[str, Any], sa: str) -> ZtunnelLogRecord:
        return ZtunnelLogRecord(at, "warn", "access", "connection failed", (), (
            ("src.addr", f"{pod['status']['podIP']}:41002"), ("dst.addr", "10.96.0.10:53"), ("direction", "outbound"),
            ("error", f"failed to fetch information about local workload: {sa}.shop ({pod['metadata']['name']})")))

    strict = ("connection closed due to policy rejection: explicitly denied by: "
              "istio-system/istio_converted_static_strict")
    xds = (("xds", (("id", "3"),)),)
    crafted = {  # (code, severity) -> the line
        ("policy-waypoint-not-allowed", "error"): inbound(
            "connection closed due to policy rejection: allow policies exist, but none allowed",
            "spiffe://cluster.local/ns/mesh/sa/waypoint"),
        # plaintext from an ambient pod (its capture is broken): error; from outside the mesh: warning
        ("policy-strict-plaintext", "error"): inbound(strict, None, src_ip=curl["status"]["podIP"]),
        ("policy-strict-plaintext", "warning"): inbound(strict, None, src_ip="192.0.2.10", dst=api),
        ("policy-explicit-deny", "info"): inbound("connection closed due to policy rejection: explicitly denied by: "
                                                  "shop/deny-all", "spiffe://cluster.local/ns/client/sa/curl"),
        ("policy-rejection", "error"): inbound("connection closed due to policy rejection", None),  # <= 1.23
        ("hbone-port-blocked", "critical"): outbound("io error: deadline has elapsed", 41000),  # <= 1.23
        ("identity-mismatch", "error"): outbound("io error: invalid peer certificate: Other(OtherError(identity "
                                                 "verification error: peer did not present the expected SAN", 41001),
        ("dns-failure", "warning"): ZtunnelLogRecord(at, "warn", "state", "dns lookup failed", (),
                                                     (("err", "no record"), ("hostname", "db.example.com"))),
        ("local-workload-unknown", "error"): local_unknown(db, "db"),
        ("local-workload-unknown", "info"): local_unknown(web, "web"),  # 30s after the pod started: the race
        ("certificate-renewal-failed", "warning"): ZtunnelLogRecord(
            at, "info", "identity::manager", "certificate renewal failed (signing gRPC error (Unavailable)); retaining "
            "existing valid certificate", (), (("id", "spiffe://cluster.local/ns/shop/sa/db"),)),
        ("xds-reconnected", "info"): ZtunnelLogRecord(at, "warn", "xds::client", "XDS client error: gRPC error "
                                                      "(Unavailable), retrying in 20ms", xds),
    }
    log = folder / ref.log_path
    first = len(log.read_text().splitlines()) + 1
    lines = {key: first + i for i, key in enumerate(crafted)}
    established = ZtunnelLogRecord(at + timedelta(seconds=2), "info", "xds::client", "Stream established", xds)
    with log.open("a") as fh:
        for record in [*crafted.values(), established]:
            fh.write(render_plain(record) + "\n")

    with BundleModel.open(folder) as model:
        report = run_analyzers(model, [LogSignatures()])
    found = {(f.code, f.severity): f for f in report.findings}
    assert set(found) == set(crafted), sorted(found)
    for key, line in lines.items():
        assert [(e.path, e.lines) for e in found[key].evidence] == [(ref.log_path, (line, line))], key
    for key in (("policy-waypoint-not-allowed", "error"), ("policy-strict-plaintext", "error"),
                ("local-workload-unknown", "error")):
        assert [(r.kind, r.namespace, r.name) for r in found[key].resources] == [("Pod", "shop", db_name)]
    blocked = found[("hbone-port-blocked", "critical")]
    assert [(r.kind, r.name) for r in blocked.resources] == [("Pod", api["metadata"]["name"])]
    assert "is an ambient pod" in found[("policy-strict-plaintext", "error")].message
    assert "start-up race" in found[("local-workload-unknown", "info")].message


def test_waypoint_conditions_and_classes(bundle_of, tmp_path: Path) -> None:
    """A WaypointBound False that no Gateway problem explains is reported with its reason; a use-waypoint naming a
    Gateway that is not a waypoint is a warning; `none` opts out."""
    folder = _extracted(bundle_of(scenario()), tmp_path)
    services_path = folder / "cluster" / "services.json"
    services = orjson.loads(services_path.read_bytes())
    for svc in services["items"]:
        name = (svc["metadata"]["namespace"], svc["metadata"]["name"])
        if name == ("shop", "web"):
            svc["metadata"]["labels"] = {"istio.io/use-waypoint": "waypoint", "istio.io/use-waypoint-namespace": "mesh"}
            svc["status"]["conditions"] = [{"type": "istio.io/WaypointBound", "status": "False",
                                            "reason": "AttachmentDenied", "message": "we are not permitted to attach "
                                            "to waypoint mesh/waypoint (missing allowedRoutes?)"}]
        if name == ("shop", "db"):
            svc["metadata"]["labels"] = {"istio.io/use-waypoint": "ingress", "istio.io/use-waypoint-namespace": "mesh"}
        if name == ("shop", "api"):
            svc["metadata"]["labels"] = {"istio.io/use-waypoint": "none"}
    services_path.write_bytes(orjson.dumps(services))
    gateways_path = folder / "cluster" / "gateway-api" / "gateways.gateway.networking.k8s.io.json"
    gateways = orjson.loads(gateways_path.read_bytes())
    gateways["items"].append({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                              "metadata": {"name": "ingress", "namespace": "mesh"},
                              "spec": {"gatewayClassName": "istio", "listeners": [{"name": "http", "port": 80}]},
                              "status": {"addresses": [{"value": "10.96.9.9"}],
                                         "conditions": [{"type": "Programmed", "status": "True"}]}})
    gateways_path.write_bytes(orjson.dumps(gateways))
    with BundleModel.open(folder) as model:
        report = run_analyzers(model, [Waypoints()])
    found = {f.code: f for f in report.findings}
    assert set(found) == {"waypoint-not-bound", "not-a-waypoint"}
    assert found["waypoint-not-bound"].severity == "error" and "AttachmentDenied" in found["waypoint-not-bound"].message
    assert [(r.kind, r.name) for r in found["waypoint-not-bound"].resources] == [("Service", "web")]
    assert found["waypoint-not-bound"].evidence[0].pointer.endswith("/status/conditions/0")
    assert found["not-a-waypoint"].severity == "warning"
    assert {(r.kind, r.name) for r in found["not-a-waypoint"].resources} == {("Gateway", "ingress"), ("Service", "db")}


def test_load_balancing_falls_back_to_metrics_when_logs_are_cut(bundle_of, tmp_path: Path) -> None:
    """With a ztunnel log truncated, the access lines no longer count every connection: the skew is judged from
    istio_tcp_connections_opened_total (reporter=destination), by workload."""

    def two_workloads(data: dict[str, Any]) -> None:
        shop = next(ns for ns in data["namespaces"] if ns["name"] == "shop")
        shop["deployments"].append({"name": "api-v2", "app": "api", "version": "v2", "serviceAccount": "api",
                                    "ports": [9080]})

    folder = _extracted(bundle_of(scenario({"type": "lb-skew", "service": "shop/api"}, patch=two_workloads)),
                        tmp_path)
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    for art in manifest["artifacts"]:
        if art["kind"] == "ztunnel-log":
            art["status"], art["reason"] = "truncated", "kept the last 50 MiB"
            break
    (folder / "manifest.json").write_bytes(orjson.dumps(manifest))
    with BundleModel.open(folder) as model:
        report = run_analyzers(model, [LoadBalancing()])
    skew = next(f for f in report.findings if f.code == "endpoint-skew")
    assert "from metrics" in skew.message and "api-v1" in skew.message
    assert any(ev.path.endswith("/metrics.txt") for ev in skew.evidence)
    row = next(r for r in report.views["loadBalancing"] if r["service"] == "shop/api.shop.svc.cluster.local")
    assert row["skewed"] and {e["name"] for e in row["endpoints"]} == {"api-v1", "api-v2"}
