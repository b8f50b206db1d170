"""The configuration analyzers (ztunnel-istiod-drift, ztunnel-kubernetes, ztunnel-peer-drift, certificates, xds)
as one table (style.md "One analyzer test table").

Each case is a small synthetic mesh (``BASE`` plus changes and the catalog faults that the catalog maps to the
analyzer) built with ``bundler.synth``, and the exact set of ``(code, resource)`` findings at warning or above
the analyzer must report. Resources are written symbolically (``pod:shop/api`` is the first replica of app
``api`` in ``shop``, the pod the fault picks; ``zt:node-a`` is the ztunnel of node-a) and resolved against the
built mesh. Every evidence item must point at an artifact of the bundle, and its JSON pointer must resolve (or
its line range exist). The healthy base, for every Istio version synth supports, is the clean twin of every case:
no finding at warning or above from these analyzers. The samples close the table.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from analyzers.certificates import Certificates
from analyzers.xds import Xds
from analyzers.ztunnel_istiod_drift import ZtunnelIstiodDrift
from analyzers.ztunnel_kubernetes import ZtunnelKubernetes
from analyzers.ztunnel_peer_drift import ZtunnelPeerDrift
from bundler.analysis import Analyzer, Report, run_analyzers, severity_rank
from bundler.archive import extract_bundle
from bundler.model import BundleModel, CertInfo, ZtunnelView
from bundler.synth.build import SyntheticMesh, build_mesh, write_bundle
from bundler.synth.faults import CATALOG
from bundler.synth.scenario import scenario_from_dict

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
ANALYZERS: tuple[type[Analyzer], ...] = (ZtunnelIstiodDrift, ZtunnelKubernetes, ZtunnelPeerDrift, Certificates, Xds)
IDS = {cls.metadata.id for cls in ANALYZERS}
WARNING = severity_rank("warning")

BASE: dict[str, Any] = {
    "name": "config-base",
    "seed": 20,
    "istioVersion": "1.28.1",
    "now": "2026-11-25T12:00:00Z",
    "nodes": ["node-a", "node-b", "node-c"],
    "istiod": {"replicas": 2},
    "namespaces": [
        {"name": "shop", "ambient": True,
         "deployments": [{"name": "web-v1", "app": "web", "ports": [8080]},
                         {"name": "api-v1", "app": "api", "replicas": 3, "ports": [9090]},
                         {"name": "db-v1", "app": "db", "ports": [5432]},
                         # host network in an ambient namespace: not enrolled, shares its node's IP
                         {"name": "agent", "app": "agent", "hostNetwork": True, "ports": [9100]}],
         "services": [{"name": "web", "ports": [{"port": 80, "targetPort": 8080}]},
                      {"name": "api", "ports": [9090]}, {"name": "db", "ports": [5432]}],
         "waypoints": [{"name": "waypoint"}]},
        {"name": "legacy", "ambient": False,  # outside the mesh: TCP everywhere, no certificates
         "deployments": [{"name": "batch-v1", "app": "batch", "ports": [8000]}]},
    ],
    "peerAuthentications": [{"name": "default", "namespace": "istio-system", "mode": "STRICT"}],
    "authorizationPolicies": [{"name": "db-from-api", "namespace": "shop", "action": "ALLOW",
                               "selector": {"app": "db"}, "fromPrincipals": ["cluster.local/ns/shop/sa/api"],
                               "toPorts": [5432]}],
    "traffic": [{"from": "shop/web", "to": "shop/api", "port": 9090, "connections": 30},
                {"from": "shop/api", "to": "shop/db", "port": 5432, "connections": 12}],
}
# Placement in BASE (seed 20, the same in every case: it depends on the seed and name only): web, one api replica
# and batch on node-a; the first two api replicas (the one a fault picks) and the host-network agent on node-b;
# db and the waypoint on node-c.
VERSIONS = ("1.22.5", "1.23.4", "1.24.3", "1.25.2", "1.26.3", "1.27.1", "1.28.1", "1.29.0", "1.30.2", "1.31.0")


@dataclass(frozen=True)
class Case:
    name: str
    analyzer: type[Analyzer]
    faults: tuple[dict[str, Any], ...]
    expected: tuple[tuple[str, str], ...]  # (code, symbolic resource)
    changes: dict[str, Any] = field(default_factory=dict)


def case(analyzer: type[Analyzer], name: str, faults: list[dict[str, Any]], expected: list[tuple[str, str]],
           **changes: Any) -> Case:
    return Case(name, analyzer, tuple(faults), tuple(expected), changes)


WM_LOCAL = [{"type": "workload-missing", "pod": "shop/api"}]  # on the pod's own node (R08)
WM_REMOTE = [{"type": "workload-missing", "pod": "shop/db", "node": "node-a"}]
STALE = [{"type": "stale-workload", "pod": "shop/web"}]
FD_PROTOCOL = [{"type": "field-drift", "pod": "shop/api", "node": "node-a"}]
FD_WAYPOINT = [{"type": "field-drift", "pod": "shop/db", "node": "node-c", "field": "waypoint"}]
NOT_ENROLLED = [{"type": "pod-not-enrolled", "pod": "shop/web"},
                {"type": "pod-not-enrolled", "pod": "shop/db", "annotation": "absent"}]
CERTS = [{"type": "cert-expired", "pod": "shop/web"}, {"type": "cert-unavailable", "pod": "shop/db"},
         {"type": "cert-initializing", "pod": "shop/api"}]
CERT_MISSING = [{"type": "cert-missing", "pod": "shop/api"}]
ROOT = [{"type": "root-mismatch", "node": "node-b"}]
XDS_DOWN = [{"type": "xds-disconnected", "node": "node-b"}]
XDS_NACK = [{"type": "xds-nack", "node": "node-c"}]

CASES = [
    # --- ztunnel-istiod-drift -----------------------------------------------------------------------------------
    case(ZtunnelIstiodDrift, "drift-workload-missing-local", WM_LOCAL,
           [("missing-workload", "pod:shop/api@zt:node-b")]),
    case(ZtunnelIstiodDrift, "drift-workload-missing-remote-per-proxy", WM_REMOTE,
           [("missing-workload", "pod:shop/db@zt:node-a")], istioVersion="1.24.3"),
    case(ZtunnelIstiodDrift, "drift-workload-missing-1.22-map-shape", WM_REMOTE,
           [("missing-workload", "pod:shop/db@zt:node-a")], istioVersion="1.22.5"),
    case(ZtunnelIstiodDrift, "drift-protocol", FD_PROTOCOL, [("field-drift", "pod:shop/api@zt:node-a")]),
    case(ZtunnelIstiodDrift, "drift-protocol-1.22-map-shape", FD_PROTOCOL,
           [("field-drift", "pod:shop/api@zt:node-a")], istioVersion="1.22.5"),
    case(ZtunnelIstiodDrift, "drift-waypoint-per-proxy", FD_WAYPOINT, [("field-drift", "pod:shop/db@zt:node-c")],
           istioVersion="1.23.4"),
    case(ZtunnelIstiodDrift, "drift-stale-workload-is-extra", STALE,
           [("extra-workload", f"ghost:shop/web@zt:{n}") for n in ("node-a", "node-b", "node-c")]),
    case(ZtunnelIstiodDrift, "drift-ignores-enrolment-faults", NOT_ENROLLED, []),
    # --- ztunnel-kubernetes ---------------------------------------------------------------------------------------
    case(ZtunnelKubernetes, "kube-workload-missing-local", WM_LOCAL, [("missing-workload", "pod:shop/api@zt:node-b")]),
    case(ZtunnelKubernetes, "kube-workload-missing-remote", WM_REMOTE,
           [("missing-workload", "pod:shop/db@zt:node-a")]),
    case(ZtunnelKubernetes, "kube-stale-workload", STALE,
           [("stale-workload", "ghost:shop/web"), ("duplicate-ip", "ghost:shop/web"),
            ("duplicate-ip", "pod:shop/web")]),
    case(ZtunnelKubernetes, "kube-pod-not-enrolled", NOT_ENROLLED,
           [("pod-not-enrolled", "pod:shop/web@zt:node-a"), ("pod-not-enrolled", "pod:shop/db@zt:node-c")]),
    case(ZtunnelKubernetes, "kube-pod-not-enrolled-1.24-json", NOT_ENROLLED[:1],
           [("pod-not-enrolled", "pod:shop/web@zt:node-a")], istioVersion="1.24.3", logFormat="json"),
    case(ZtunnelKubernetes, "kube-protocol-drift", FD_PROTOCOL, [("protocol-mismatch", "pod:shop/api@zt:node-a")]),
    # --- ztunnel-peer-drift ---------------------------------------------------------------------------------------
    case(ZtunnelPeerDrift, "peer-workload-missing-local", WM_LOCAL, [("missing-workload", "pod:shop/api@zt:node-b")]),
    case(ZtunnelPeerDrift, "peer-workload-missing-1.22", WM_REMOTE, [("missing-workload", "pod:shop/db@zt:node-a")],
           istioVersion="1.22.5"),
    case(ZtunnelPeerDrift, "peer-protocol", FD_PROTOCOL, [("field-drift", "pod:shop/api@zt:node-a")]),
    case(ZtunnelPeerDrift, "peer-protocol-1.22-map-shape", FD_PROTOCOL, [("field-drift", "pod:shop/api@zt:node-a")],
           istioVersion="1.22.5"),
    case(ZtunnelPeerDrift, "peer-waypoint", FD_WAYPOINT, [("field-drift", "pod:shop/db@zt:node-c")]),
    case(ZtunnelPeerDrift, "peer-stale-everywhere-is-no-drift", STALE, []),
    # --- certificates -------------------------------------------------------------------------------------------
    case(Certificates, "cert-states", CERTS,
           [("cert-expired", "pod:shop/web@zt:node-a"), ("cert-unavailable", "pod:shop/db@zt:node-c"),
            ("cert-initializing", "pod:shop/api@zt:node-b"), ("cert-initializing", "pod:shop/api#2@zt:node-b")]),
    case(Certificates, "cert-states-1.24-chain-with-root", CERTS[:1], [("cert-expired", "pod:shop/web@zt:node-a")],
           istioVersion="1.24.3"),
    case(Certificates, "cert-missing", CERT_MISSING,
           [("cert-missing", "pod:shop/api@zt:node-b"), ("cert-missing", "pod:shop/api#2@zt:node-b")]),
    case(Certificates, "root-mismatch", ROOT, [("root-mismatch", "zt:node-b")]),
    case(Certificates, "root-mismatch-1.25", ROOT, [("root-mismatch", "zt:node-b")], istioVersion="1.25.2"),
    # --- xds -------------------------------------------------------------------------------------------------------
    case(Xds, "xds-disconnected", XDS_DOWN,
           [("xds-disconnected", "zt:node-b"), ("xds-connection-errors", "zt:node-b")]),
    case(Xds, "xds-disconnected-one-replica", XDS_DOWN,
           [("xds-disconnected", "zt:node-b"), ("xds-connection-errors", "zt:node-b")], istiod={"replicas": 1}),
    case(Xds, "xds-nack", XDS_NACK,
           [("xds-nack", "zt:node-c"), ("xds-not-acked", "zt:node-c"), ("istiod-ack-error", "zt:node-c")]),
    case(Xds, "xds-nack-json-logs", XDS_NACK,
           [("xds-nack", "zt:node-c"), ("xds-not-acked", "zt:node-c"), ("istiod-ack-error", "zt:node-c")],
           logFormat="json", istioVersion="1.26.3"),
]

# Faults the catalog gives to other analyzers: these five must stay quiet (no false positive from side effects).
OTHER_FAULTS = {
    "version-skew": [{"type": "version-skew", "node": "node-b"}],
    "version-skew-to-1.22": [{"type": "version-skew", "node": "node-b", "ztunnelVersion": "1.22.5"}],
    "ztunnel-oomkilled": [{"type": "ztunnel-oomkilled", "node": "node-b"}],
    "hbone-blocked": [{"type": "hbone-blocked", "namespace": "shop"}],
    "policy-denial": [{"type": "policy-denial", "service": "shop/db"}],
    "lb-skew": [{"type": "lb-skew", "service": "shop/api"}],
}
# Healthy variants: other placements of Istio, another trust domain, JSON logs, one istiod.
HEALTHY_VARIANTS = {
    "trust-domain-example.org": {"trustDomain": "example.org"},
    "gke-kube-system": {"istioNamespaces": {"ztunnel": "kube-system", "cni": "kube-system"}},
    "json-logs-one-istiod": {"logFormat": "json", "istiod": {"replicas": 1}},
    "per-proxy-full-1.28": {"istiod": {"replicas": 2, "perProxyDump": "full"}},
}


# --- building and running ------------------------------------------------------------------------------------------


@dataclass
class Built:
    mesh: SyntheticMesh
    path: Path
    reports: dict[str, Report] = field(default_factory=dict)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory):
    """Build (once per module) the bundle of BASE + changes + faults; returns Built."""
    cache: dict[str, Built] = {}
    folder = tmp_path_factory.mktemp("config-analyzers")

    def build(faults: tuple[dict[str, Any], ...] = (), **changes: Any) -> Built:
        key = orjson.dumps({"faults": faults, **changes}, option=orjson.OPT_SORT_KEYS).decode()
        if key not in cache:
            data = orjson.loads(orjson.dumps(BASE))
            data.update(changes)
            data["faults"] = list(faults)
            mesh = build_mesh(scenario_from_dict(data))  # one scenario name: the same placement in every case
            out = folder / f"case-{len(cache)}.tar.zst"
            write_bundle(mesh, out, ["bundle", "synth", "config-base.yaml", "-o", out.name])
            cache[key] = Built(mesh, out)
        return cache[key]

    return build


def run(built: Built, analyzers: tuple[type[Analyzer], ...] = ANALYZERS) -> Report:
    key = ",".join(a.metadata.id for a in analyzers)
    if key not in built.reports:
        with BundleModel.open(built.path) as model:
            built.reports[key] = run_analyzers(model, [a() for a in analyzers])
            check_evidence(model, built.reports[key])
    return built.reports[key]


def check_evidence(model: BundleModel, report: Report) -> None:
    """Every evidence item names a member of the bundle; pointers resolve, line ranges exist."""
    docs: dict[str, Any] = {}
    for finding in report.findings:
        assert finding.code != "internal-error", finding.message
        for ev in finding.evidence:
            assert model.has(ev.path), f"{finding.id}: evidence path {ev.path} is not in the bundle"
            if ev.pointer is not None:
                if ev.path not in docs:
                    docs[ev.path] = orjson.loads(model.bundle.read(ev.path))
                resolve(docs[ev.path], ev.pointer, f"{finding.id}: {ev.path}#{ev.pointer}")
            if ev.lines is not None:
                total = model.bundle.read(ev.path).count(b"\n")
                assert ev.lines[1] <= total, f"{finding.id}: {ev.path} has {total} lines, not {ev.lines}"


def resolve(doc: Any, pointer: str, where: str) -> Any:
    node = doc
    for token in pointer.split("/")[1:] if pointer else ():
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            assert token.isdigit() and int(token) < len(node), f"{where}: no index {token}"
            node = node[int(token)]
        else:
            assert isinstance(node, dict) and token in node, f"{where}: no key {token!r}"
            node = node[token]
    return node


def resolve_symbol(mesh: SyntheticMesh, symbol: str) -> tuple[str, str | None, str, str | None]:
    """``pod:ns/app[#n][@zt:node]``, ``ghost:ns/app`` (the deleted pod of stale-workload), ``zt:node`` ->
    (kind, namespace, name, ztunnel pod)."""
    cluster = mesh.cluster
    subject, _, where = symbol.partition("@")
    ztunnel = cluster.ztunnels[where.removeprefix("zt:")].name if where else None
    kind, _, ref = subject.partition(":")
    if kind == "zt":
        zt = cluster.ztunnels[ref]
        return ("Pod", zt.namespace, zt.name, zt.name)
    ref, _, nth = ref.partition("#")
    ns, app = ref.split("/")
    if kind == "ghost":
        pods = [p for p in cluster.deleted_pods if p.namespace == ns and p.app == app]
    else:
        pods = sorted((p for p in cluster.pods if p.namespace == ns and p.app == app), key=lambda p: p.name)
        if nth:  # the n-th replica on the same node as the first one (e.g. both api replicas of node-b)
            pods = [p for p in pods if p.node == pods[0].node]
    return ("Pod", ns, pods[int(nth or 1) - 1].name, ztunnel)


def reported(report: Report, analyzer_ids: set[str]) -> set[tuple[str, str, str | None, str, str | None]]:
    return {(f.code, r.kind, r.namespace, r.name, r.ztunnel)
            for f in report.findings if f.analyzer in analyzer_ids and severity_rank(f.severity) >= WARNING
            for r in f.resources}


def describe(report: Report) -> str:
    return "\n".join(f"  {f.severity} {f.analyzer}/{f.code}: {f.message}" for f in report.findings)


# --- the table -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", CASES, ids=lambda c: c.name)
def test_analyzer_table(row: Case, bundles) -> None:
    built = bundles(row.faults, **row.changes)
    report = run(built, (row.analyzer,))
    expected = {(code, *resolve_symbol(built.mesh, symbol)) for code, symbol in row.expected}
    got = reported(report, {row.analyzer.metadata.id})
    assert got == expected, f"{row.name}:\n{describe(report)}"


def test_every_fault_the_catalog_gives_these_analyzers_has_a_case() -> None:
    covered = {(f["type"], c.analyzer.metadata.id) for c in CASES if c.expected for f in c.faults}
    for fault in CATALOG.values():
        for analyzer_id in set(fault.analyzers) & IDS:
            assert (fault.name, analyzer_id) in covered, f"no case for {fault.name} -> {analyzer_id}"


@pytest.mark.parametrize("version", VERSIONS)
def test_healthy_mesh_has_no_finding(version: str, bundles) -> None:
    report = run(bundles(istioVersion=version))
    assert not reported(report, IDS), describe(report)
    assert not any(f.code == "internal-error" for f in report.findings)


@pytest.mark.parametrize("fault", sorted(OTHER_FAULTS))
def test_other_faults_cause_no_finding_here(fault: str, bundles) -> None:
    report = run(bundles(tuple(OTHER_FAULTS[fault])))
    assert not reported(report, IDS), describe(report)


@pytest.mark.parametrize("variant", sorted(HEALTHY_VARIANTS))
def test_healthy_variants_have_no_finding(variant: str, bundles) -> None:
    report = run(bundles(**HEALTHY_VARIANTS[variant]))
    assert not reported(report, IDS), describe(report)


# --- what synth cannot inject: the healthy base with one view altered on the way to the analyzer ---------------------


def _shift(info: CertInfo, valid_from: str, expiration: str) -> CertInfo:
    return replace(info, valid_from=valid_from, expiration=expiration)


def _leaf(view: ZtunnelView, change) -> ZtunnelView:
    """The ztunnel view with its first certificate's leaf changed."""
    cert = view.certificates[0]
    view.certificates[0] = replace(cert, chain=(change(cert.chain[0]),) + cert.chain[1:])
    return view


def _identity(view: ZtunnelView, identity: str) -> ZtunnelView:
    cert = view.certificates[0]
    view.certificates[0] = replace(cert, identity=identity)
    view.pointers[("certificates", identity)] = view.pointers[("certificates", cert.identity)]
    return view


MUTATIONS = [
    # (name, analyzer, node whose ztunnel view is altered, alteration, expected codes)
    ("cert-expiring-renewal-overdue", Certificates, "node-a",
     lambda v: _leaf(v, lambda c: _shift(c, "2026-11-24T16:00:00Z", "2026-11-25T16:00:00Z")), {"cert-expiring"}),
    ("cert-young-leaf-is-fine", Certificates, "node-a",
     lambda v: _leaf(v, lambda c: _shift(c, "2026-11-25T11:00:00Z", "2026-11-26T11:00:00Z")), set()),
    ("cert-not-yet-valid", Certificates, "node-a",
     lambda v: _leaf(v, lambda c: _shift(c, "2026-11-25T14:00:00Z", "2026-11-26T14:00:00Z")),
     {"cert-not-yet-valid"}),
    ("cert-other-trust-domain", Certificates, "node-a",
     lambda v: _identity(v, "spiffe://other.example/ns/shop/sa/web"),
     {"trust-domain-mismatch", "cert-identity-mismatch", "cert-missing"}),
]


@pytest.mark.parametrize("name,analyzer,node,alter,expected", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_altered_views(name: str, analyzer: type[Analyzer], node: str, alter, expected: set[str], bundles) -> None:
    built = bundles()
    with BundleModel.open(built.path) as model:
        original = model.ztunnels

        def ztunnels():
            for view in original():
                yield alter(view) if view.node == node else view

        model.ztunnels = ztunnels  # type: ignore[method-assign]
        report = run_analyzers(model, [analyzer()])
        check_evidence(model, report)
    got = {f.code for f in report.findings if severity_rank(f.severity) >= WARNING}
    assert got == expected, describe(report)


@pytest.mark.parametrize("cls", [ZtunnelIstiodDrift, ZtunnelKubernetes], ids=lambda c: c.metadata.id)
def test_pod_created_just_before_the_collection_is_not_missing(cls: type[Analyzer], bundles) -> None:
    """The bundle is no atomic snapshot: a pod created seconds before the dump may not have reached it yet."""
    built = bundles(tuple(WM_LOCAL))
    name = resolve_symbol(built.mesh, "pod:shop/api")[2]
    with BundleModel.open(built.path) as model:
        for pod in model.pods():
            if pod["metadata"]["name"] == name:
                pod["metadata"]["creationTimestamp"] = "2026-11-25T11:59:50Z"
        report = run_analyzers(model, [cls()])
    missing = [f for f in report.findings if f.code == "missing-workload"]
    assert missing and all(f.severity == "info" for f in missing), describe(report)


def test_pre_1_23_syncz_fields_not_acked(bundles) -> None:
    built = bundles()
    with BundleModel.open(built.path) as model:
        entries = model.syncz()
        proxy = entries[0][1]["proxy"]
        old = [(replica, {"proxy": e["proxy"], "proxy_type": "ztunnel", "cluster_sent": "n1", "cluster_acked": "n1",
                          "endpoint_sent": "n2", "endpoint_acked": "n1" if e["proxy"] == proxy else "n2"})
               for replica, e in entries]
        model.syncz = lambda: old  # type: ignore[method-assign]
        report = run_analyzers(model, [Xds()])
    found = [(f.code, r.name) for f in report.findings for r in f.resources if severity_rank(f.severity) >= WARNING]
    assert found == [("xds-not-acked", proxy.split(".")[0])], describe(report)


def test_discovery_selectors() -> None:
    from analyzers.ztunnel_kubernetes import discovered_namespaces

    class Model:
        def __init__(self, mesh: str) -> None:
            self.mesh = mesh

        def k8s(self, resource: str, group: str = "") -> list[dict[str, Any]]:
            return [{"metadata": {"name": "istio", "namespace": "istio-system"}, "data": {"mesh": self.mesh}}]

        def namespaces(self) -> dict[str, dict[str, str]]:
            return {"shop": {"team": "a"}, "legacy": {}, "istio-system": {}}

    assert discovered_namespaces(Model("trustDomain: cluster.local\n")) is None
    selectors = ("discoverySelectors:\n- matchLabels: {team: a}\n"
                 "- matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [istio-system]}]\n")
    assert discovered_namespaces(Model(selectors)) == {"shop", "istio-system"}
    assert discovered_namespaces(Model("discoverySelectors:\n- matchExpressions: [{key: a, operator: Gt}]\n")) is None


def test_ztunnels_and_certificates_views(bundles) -> None:
    built = bundles(tuple(XDS_NACK + XDS_DOWN + CERTS[:1]))
    report = run(built)
    rows = {row["node"]: row for row in report.views["ztunnels"]}
    assert set(rows) == {"node-a", "node-b", "node-c"}
    assert rows["node-c"]["sync"] == "nack" and rows["node-b"]["sync"] == "disconnected"
    assert rows["node-a"]["sync"] == "ok"
    assert rows["node-a"]["certificates"]["expired"] == 1
    assert rows["node-c"]["errors"] >= 12  # the NACK lines
    for row in rows.values():
        assert row["version"] == "1.28.1" and row["workloads"] > 0 and row["policies"] == 2
    certs = report.views["certificates"]
    assert {c["node"] for c in certs} == {"node-a", "node-b", "node-c"}
    assert all(c["identity"].startswith("spiffe://cluster.local/ns/") and c["expiration"] for c in certs)


def test_drift_view_lists_the_differing_fields(bundles) -> None:
    report = run(bundles(tuple(FD_PROTOCOL)))
    rows = [r for r in report.views["drift"] if r["kind"] == "workload"]
    references = {r["reference"] for r in rows}
    assert references == {"ambientz", "majority"}
    for row in rows:
        assert row["node"] == "node-a" and row["status"] == "different"
        assert row["fields"] == [{"field": "protocol", "ztunnel": "TCP", "reference": "HBONE"}]


# --- the samples ---------------------------------------------------------------------------------------------------


def _sample(name: str) -> Report:
    with BundleModel.open(SAMPLES / name) as model:
        report = run_analyzers(model, [a() for a in ANALYZERS])
        check_evidence(model, report)
    return report


def test_sample_healthy_has_no_finding() -> None:
    report = _sample("bookinfo-healthy.tar.zst")
    assert not reported(report, IDS), describe(report)


DEGRADE = ("ztunnel/ambient-worker2/*/config_dump.json", "istiod/*/syncz.json", "istiod/*/ambientz.json",
           "cluster/pods.json", "cluster/configmaps.json", "cluster/namespaces.json", "cluster/nodes.json",
           "ztunnel/ambient-worker/*/logs/istio-proxy.log")


@pytest.mark.parametrize("pattern", DEGRADE + ("*all*",))
def test_missing_artifacts_are_unknown_not_findings(pattern: str, tmp_path: Path) -> None:
    """Artifacts the manifest lists but the bundle lacks (one replica's syncz, a dump, the pods...): no crash and
    no finding at warning or above (missing means unknown; collection-gaps reports it)."""
    root = Path(extract_bundle(SAMPLES / "bookinfo-healthy.tar.zst", tmp_path))
    for pat in DEGRADE if pattern == "*all*" else (pattern,):
        for found in sorted(root.glob(pat))[:1]:
            found.unlink()
    with BundleModel.open(root) as model:
        report = run_analyzers(model, [a() for a in ANALYZERS])
    assert not any(f.code == "internal-error" for f in report.findings), describe(report)
    assert not reported(report, IDS), describe(report)


def test_sample_incident_findings() -> None:
    report = _sample("bookinfo-incident.tar.zst")
    by_code: dict[tuple[str, str], set[tuple[str | None, str, str | None]]] = {}
    for f in report.findings:
        if severity_rank(f.severity) >= WARNING:
            for r in f.resources:
                by_code.setdefault((f.analyzer, f.code), set()).add((r.namespace, r.name.split("-")[0], r.node))
    # workload-missing: ratings (on ambient-worker2) is missing from ambient-worker's ztunnel
    for analyzer in ("ztunnel-istiod-drift", "ztunnel-kubernetes", "ztunnel-peer-drift"):
        assert ("bookinfo", "ratings", "ambient-worker2") in by_code[(analyzer, "missing-workload")]
    zt_worker = {f.resources[0].ztunnel for f in report.findings if f.code == "missing-workload"}
    assert zt_worker == {"ztunnel-g8gvh"}  # the ztunnel of ambient-worker
    assert ("bookinfo", "reviews", "ambient-worker") in by_code[("certificates", "cert-expired")]
    assert ("bookinfo", "details", "ambient-worker") in by_code[("ztunnel-kubernetes", "pod-not-enrolled")]
    pending = next(f for f in report.findings if f.code == "pod-not-enrolled")
    assert "pending" in pending.message
    assert ("istio-system", "ztunnel", "ambient-worker2") in by_code[("xds", "xds-nack")]
    # nothing else at warning or above
    assert set(by_code) == {
        ("ztunnel-istiod-drift", "missing-workload"), ("ztunnel-kubernetes", "missing-workload"),
        ("ztunnel-peer-drift", "missing-workload"), ("certificates", "cert-expired"),
        ("ztunnel-kubernetes", "pod-not-enrolled"), ("xds", "xds-nack"), ("xds", "xds-not-acked"),
        ("xds", "istiod-ack-error"),
    }, describe(report)


# --- metadata ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ANALYZERS, ids=lambda c: c.metadata.id)
def test_metadata(cls: type[Analyzer]) -> None:
    meta = cls.metadata
    assert meta.id in {"ztunnel-istiod-drift", "ztunnel-kubernetes", "ztunnel-peer-drift", "certificates", "xds"}
    assert meta.description and meta.docs.startswith("https://") and meta.inputs
    assert meta.severity in ("warning", "error", "critical")
    assert importlib.import_module(cls.__module__).__doc__  # what it detects, at the top of its file
