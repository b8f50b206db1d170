"""The canonical model (bundler.model): ztunnel dumps of every shape and istiod's proto-JSON normalise to the same
objects, so a healthy mesh shows no drift on any supported version; faults do show; bad input becomes Problems;
pointers, log lines and metrics lead back to the evidence; dumps stream one at a time."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from bundler import layout
from bundler.archive import BundleWriter, extract_bundle
from bundler.formats.istio_log import IstioLogRecord
from bundler.formats.ztunnel_log import ZtunnelLogRecord
from bundler.model import BundleModel, IstiodView, Policy, Service, Workload, ZtunnelView
from bundler.model import normalize
from bundler.synth.build import build_mesh, write_bundle
from bundler.synth.scenario import scenario_from_dict

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
INCIDENT = SAMPLES / "bookinfo-incident.tar.zst"
HEALTHY = SAMPLES / "bookinfo-healthy.tar.zst"
UPSTREAM = Path("/work/shared/upstream/istio")
FIXTURE = UPSTREAM / "istioctl/pkg/writer/ztunnel/configdump/testdata/dump.json"
LEGACY_FIXTURE = UPSTREAM / "@6e34ef5a88c/istioctl/pkg/writer/ztunnel/configdump/testdata/dump.json"
needs_upstream = pytest.mark.skipif(not FIXTURE.is_file(), reason="upstream fixtures not available")

MESH = {
    "name": "model",
    "seed": 7,
    "istioVersion": "1.28.1",
    "nodes": ["n1", "n2", "n3"],
    "istiod": {"replicas": 2},
    "now": "2026-11-25T12:00:00Z",
    "namespaces": [
        {"name": "shop", "ambient": True, "useWaypoint": "waypoint",
         "deployments": [{"name": "web-v1", "app": "web", "ports": [8080]},
                         {"name": "api-v1", "app": "api", "replicas": 3, "ports": [9090]},
                         {"name": "db-v1", "app": "db", "ports": [5432]}],
         "services": [{"name": "web", "ports": [{"port": 80, "targetPort": 8080}]},
                      {"name": "api", "ports": [9090]}, {"name": "db", "ports": [5432]}],
         "waypoints": [{"name": "waypoint"}]},
        {"name": "legacy", "ambient": False,
         "deployments": [{"name": "batch-v1", "app": "batch", "ports": [8000]}],
         "services": [{"name": "batch", "ports": [8000]}]},
    ],
    "peerAuthentications": [{"name": "default", "namespace": "istio-system", "mode": "STRICT"},
                            {"name": "strict", "namespace": "shop", "mode": "STRICT"}],
    "authorizationPolicies": [
        {"name": "db-from-api", "namespace": "shop", "action": "ALLOW", "selector": {"app": "db"},
         "fromPrincipals": ["cluster.local/ns/shop/sa/api"], "toPorts": [5432]},
        {"name": "deny-legacy", "namespace": "shop", "action": "DENY", "fromNamespaces": ["legacy"]},
    ],
    "traffic": [{"from": "shop/web", "to": "shop/api", "port": 9090, "connections": 30},
                {"from": "shop/api", "to": "shop/db", "port": 5432, "connections": 12}],
}
VERSIONS = [f"1.{minor}.{minor % 4}" for minor in range(22, 32)]


def synth(tmp_path: Path, **changes: Any) -> Path:
    data = orjson.loads(orjson.dumps(MESH))
    data.update(changes)
    out = tmp_path / f"{data['name']}.tar.zst"
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_bundle(build_mesh(scenario_from_dict(data)), out, ["bundle", "synth", "model.yaml"])


def resolve(doc: Any, pointer: str) -> Any:
    """A small RFC 6901 resolver."""
    if pointer == "":
        return doc
    assert pointer.startswith("/"), pointer
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        doc = doc[int(token)] if isinstance(doc, list) else doc[token]
    return doc


def drift(zt: ZtunnelView, istiod: IstiodView) -> list[tuple[str, str, Any]]:
    """What the drift analyzer sees: keys on one side only, and comparable() differences."""
    out: list[tuple[str, str, Any]] = []
    for kind in ("workloads", "services", "policies"):
        ours, theirs = getattr(zt, kind), getattr(istiod, kind)
        for key in sorted(set(ours) - set(theirs)):
            out.append((kind, key, "ztunnel only"))
        for key in sorted(set(theirs) - set(ours)):
            out.append((kind, key, "istiod only"))
        for key in sorted(set(ours) & set(theirs)):
            a, b = ours[key].comparable(), theirs[key].comparable()
            if a != b:
                out.append((kind, key, {f: (a[f], b[f]) for f in a if a[f] != b[f]}))
    return out


def check_pointers(view: ZtunnelView, doc: dict[str, Any]) -> int:
    checked = 0
    for (kind, key), pointer in view.pointers.items():
        raw = resolve(doc, pointer)
        if kind == "workloads":
            assert raw["uid"] == key
        elif kind == "services":
            assert f"{raw['namespace']}/{raw['hostname']}" == key
        elif kind == "policies":
            assert f"{raw['namespace']}/{raw['name']}" == key
        elif kind == "certificates":
            assert raw["identity"] == key
        elif kind == "workloadState":
            assert pointer.rsplit("/", 1)[1] == key and "info" in raw
        else:
            raise AssertionError(kind)
        checked += 1
    for kind, items in (("workloads", view.workloads), ("services", view.services), ("policies", view.policies),
                        ("workloadState", view.workload_state)):
        assert all((kind, key) in view.pointers for key in items), kind
    return checked


# --- the samples ---------------------------------------------------------------------------------------------------


def test_healthy_sample_has_no_drift_against_ambientz():
    with BundleModel.open(HEALTHY) as m:
        views = list(m.ztunnels())
        assert [v.node for v in views] == ["ambient-worker", "ambient-worker2", "ambient-worker3"]
        for zt in views:
            istiod = m.istiod_view(zt.pod)
            assert istiod is not None and istiod.source == "ambientz"  # 1.28: the per-proxy dump is {}
            assert istiod.replica == m.ztunnel_ref(zt.pod).xds_replica
            assert zt.shape == "list" and zt.istio_version == "1.28.1"
            assert zt.workloads and zt.services and zt.policies
            assert drift(zt, istiod) == []
        assert m.problems == []


def test_incident_sample_shows_the_missing_workload():
    with BundleModel.open(INCIDENT) as m:
        found = {}
        for zt in m.ztunnels():
            istiod = m.istiod_view(zt.pod)
            assert istiod is not None and istiod.source == "per-proxy"  # 1.24: populated
            assert istiod.policies_path == layout.istiod_proxy_wads(zt.pod)
            found[zt.node] = drift(zt, istiod)
        ratings = [uid for uid, _ in m.ambientz().workloads.items() if "/ratings-v1-" in uid]
        assert len(ratings) == 1
        assert found["ambient-worker2"] == [] and found["ambient-worker3"] == []
        missing = found["ambient-worker"]
        assert ("workloads", ratings[0], "istiod only") in missing
        assert [(kind, key) for kind, key, _ in missing] == [
            ("workloads", ratings[0]), ("services", "bookinfo/ratings.bookinfo.svc.cluster.local")]
        assert missing[1][2]["endpoints"][0] == ()
        assert m.problems == []


def test_incident_sample_refs_and_other_faults_are_visible():
    with BundleModel.open(INCIDENT) as m:
        refs = m.ztunnel_refs()
        assert [(r.node, r.dump_status) for r in refs] == [
            ("ambient-worker", "ok"), ("ambient-worker2", "ok"), ("ambient-worker3", "ok")]
        oom = refs[2]
        assert oom.previous_log_path and oom.previous_log_path.endswith("istio-proxy.previous.log")
        assert all(r.namespace == "istio-system" and r.pod_json_path and r.metrics_path for r in refs)
        istiods = m.istiod_refs()
        assert len(istiods) == 2 and all(r.version.startswith("1.24.3-") for r in istiods)
        # xds-nack on ambient-worker2: its syncz entry is not ACKed
        entries = {e["proxy"]: (replica, e) for replica, e in m.syncz()}
        nacked = entries[f"{refs[1].pod}.istio-system"][1]
        resource = nacked["resources"][normalize.ADDRESS_TYPE]
        assert resource["acked"] != resource["sent"]
        # cert-expired: reviews' certificate on its node has expired before the bundle was made
        expired = [c for zt in m.ztunnels() for c in zt.certificates
                   if c.identity.endswith("/sa/bookinfo-reviews") and c.chain and c.chain[0].expiration < "2026-11-25T12"]
        assert expired and all(len(c.roots) == 1 and not c.roots[0].pem.startswith("LS0t") for c in expired)
        assert "-----BEGIN CERTIFICATE-----" in expired[0].chain[0].pem


def test_kubernetes_lists_and_lookups():
    with BundleModel.open(INCIDENT) as m:
        pods = m.pods()
        assert pods and m.pods() is pods  # cached
        some = next(p for p in pods if p["metadata"]["namespace"] == "bookinfo")
        assert m.pod("bookinfo", some["metadata"]["name"]) is some
        assert m.pod("bookinfo", "nope") is None
        by_ip = m.pods_by_ip()
        assert by_ip[some["status"]["podIP"]] is some
        assert not any(p.get("spec", {}).get("hostNetwork") for p in by_ip.values())
        assert m.namespaces()["bookinfo"].get("istio.io/dataplane-mode") == "ambient"
        assert len(m.nodes()) == 3
        assert m.k8s("authorizationpolicies", "security.istio.io")
        assert m.k8s("nothere") == [] and m.problems == []


def test_logs_are_streamed_with_line_numbers():
    with BundleModel.open(INCIDENT) as m:
        logs = m.logs("ztunnel")
        assert [lf.node for lf in logs] == ["ambient-worker", "ambient-worker2", "ambient-worker3", "ambient-worker3"]
        assert [lf.previous for lf in logs] == [False, False, False, True]
        log = logs[0]
        lines = m.bundle.read(log.path).decode().splitlines()
        records = list(m.log_records(log))
        assert [r.line for r in records] == list(range(1, len(lines) + 1))
        assert [r.text for r in records] == lines
        access = [r for r in records if isinstance(r.record, ZtunnelLogRecord) and r.record.target == "access"]
        assert access and access[0].record.message == "connection complete"
        assert dict(access[0].record.fields)["src.addr"] in lines[access[0].line - 1]
        assert {lf.component for lf in m.logs()} == {"ztunnel", "istiod", "cni"}
        istiod = m.logs("istiod")[0]
        assert istiod.node == "" and istiod.container == "discovery"
        first = next(m.log_records(istiod))
        assert isinstance(first.record, IstioLogRecord) and first.line == 1
        assert all(lf.component == "cni" for lf in m.logs("cni"))


def test_metrics_parse():
    with BundleModel.open(INCIDENT) as m:
        families = m.metrics("ambient-worker")
        names = {f.name for f in families}
        assert "istio_tcp_connections_opened" in names and "istio_build" in names
        opened = next(f for f in families if f.name == "istio_tcp_connections_opened")
        assert opened.type == "counter" and opened.samples
        assert m.metrics("no-such-node") == []


def test_validation_issues_cover_every_json_artifact():
    with BundleModel.open(HEALTHY) as m:
        results = list(m.validation_issues())
        json_members = [p for p in m.bundle.names() if layout.kind_of_path(p) in layout.JSON_KINDS]
        assert sorted(p for p, _, _ in results) == sorted(json_members)
        assert all(issues == [] for _, _, issues in results)
        kinds = {kind for _, kind, _ in results}
        assert {layout.KIND_ZTUNNEL_CONFIG_DUMP, layout.KIND_ISTIOD_AMBIENTZ, layout.KIND_MANIFEST} <= kinds


def test_pointers_resolve_in_the_raw_documents():
    with BundleModel.open(INCIDENT) as m:
        for zt in m.ztunnels():
            doc = orjson.loads(m.bundle.read(zt.path))
            assert check_pointers(zt, doc) > 10
            istiod = m.istiod_view(zt.pod)
            dump = orjson.loads(m.bundle.read(istiod.path))
            wads = orjson.loads(m.bundle.read(istiod.policies_path))
            for (kind, key), pointer in istiod.pointers.items():
                raw = resolve(wads if kind == "policies" else dump, pointer)
                name = raw["uid"] if kind == "workloads" else f"{raw['namespace']}/{raw.get('hostname', raw.get('name'))}"
                assert name == key


def test_directory_zip_and_archive_give_the_same_model(tmp_path):
    from bundler.parts import pack

    folder = extract_bundle(INCIDENT, tmp_path / "x")
    shutil.copy(INCIDENT, tmp_path / "copy.tar.zst")
    (tmp_path / "zip").mkdir()
    parts = pack(tmp_path / "copy.tar.zst", out_dir=tmp_path / "zip")

    def snapshot(source: Path) -> dict[str, Any]:
        with BundleModel.open(source) as m:
            views = []
            for zt in m.ztunnels():
                istiod = m.istiod_view(zt.pod)
                views.append((zt.node, zt.pod, zt.workloads, zt.services, zt.policies, zt.certificates,
                              zt.workload_state, zt.pointers, istiod.source, istiod.workloads, istiod.services,
                              istiod.policies))
            return {
                "refs": m.ztunnel_refs(), "istiods": m.istiod_refs(), "views": views, "pods": m.pods(),
                "logs": m.logs(), "records": [list(m.log_records(lf)) for lf in m.logs()],
                "metrics": m.metrics("ambient-worker2"), "syncz": m.syncz(),
                "validation": sorted(m.validation_issues(), key=lambda t: t[0]), "problems": m.problems,
            }

    archive = snapshot(INCIDENT)
    assert snapshot(folder) == archive
    assert snapshot(folder.parent) == archive  # the folder `tar -xf` makes, holding the bundle folder
    assert snapshot(parts[0]) == archive


# --- every supported version: ztunnel and istiod agree on a healthy mesh ------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_healthy_synthetic_mesh_has_no_drift(tmp_path, version):
    minor = int(version.split(".")[1])
    with BundleModel.open(synth(tmp_path, istioVersion=version)) as m:
        views = 0
        for zt in m.ztunnels():
            views += 1
            assert zt.shape == ("map" if minor == 22 else "list") and zt.istio_version == version
            per_proxy = m.istiod_view(zt.pod)
            assert per_proxy.source == ("per-proxy" if minor <= 24 else "ambientz")
            for istiod in (per_proxy, m.ambientz()):
                assert drift(zt, istiod) == [], (version, zt.node, istiod.source)
            assert set(zt.workloads) == set(per_proxy.workloads) and len(zt.workloads) > 10
            shop = {k: s for k, s in zt.services.items() if k.startswith("shop/") and s.name != "waypoint"}
            assert len(shop) == 3 and all(s.waypoint and s.waypoint.startswith("/") for s in shop.values())
            assert all(s.endpoints for s in shop.values())
            assert zt.services["shop/web.shop.svc.cluster.local"].ports == ((80, 8080),)
            web = next(w for w in zt.workloads.values() if w.name.startswith("web-v1-"))
            assert web.services == ("shop/web.shop.svc.cluster.local",) and web.protocol == "HBONE"
            batch = next(w for w in zt.workloads.values() if w.name.startswith("batch-v1-"))
            assert batch.protocol == "TCP"
            assert {p.name for p in zt.policies.values()} == {
                "istio_converted_static_strict", "converted_peer_authentication_strict", "db-from-api", "deny-legacy"}
            for cert in zt.certificates:
                if cert.state == "Available":
                    assert len(cert.chain) == 1 and len(cert.roots) == 1  # the root split off on <= 1.25 too
            doc = orjson.loads(m.bundle.read(zt.path))
            check_pointers(zt, doc)
        assert views == 3
        assert m.problems == []


def test_drift_shows_on_a_synthetic_field_drift(tmp_path):
    path = synth(tmp_path, faults=[{"type": "field-drift", "pod": "shop/web", "node": "n2", "field": "protocol"}])
    with BundleModel.open(path) as m:
        by_node = {zt.node: drift(zt, m.istiod_view(zt.pod)) for zt in m.ztunnels()}
        assert by_node["n1"] == [] and by_node["n3"] == []
        (kind, key, fields), = by_node["n2"]
        assert kind == "workloads" and "/web-v1-" in key and fields == {"protocol": ("TCP", "HBONE")}


# --- equal objects are interned ------------------------------------------------------------------------------------


def test_equal_workloads_of_different_dumps_are_one_object():
    with BundleModel.open(HEALTHY) as m:
        first: dict[str, Workload] = {}
        shared = 0
        for zt in m.ztunnels():
            for uid, wl in zt.workloads.items():
                if uid in first:
                    assert wl is first[uid]
                    shared += 1
                first.setdefault(uid, wl)
        assert shared > 20
        istiod = m.istiod_view("ztunnel-sn7ks")
        # istiod's objects equal to ztunnel's (same version: even workload_type and locality agree) are shared too
        assert sum(istiod.workloads[uid] is wl for uid, wl in first.items()) == len(first)


def test_per_proxy_view_without_wads_takes_the_policies_from_ambientz(tmp_path):
    folder = extract_bundle(INCIDENT, tmp_path / "x")
    with BundleModel.open(INCIDENT) as m:
        ref = m.ztunnel_refs()[1]
    (folder / layout.istiod_proxy_wads(ref.pod)).unlink()
    with BundleModel.open(folder) as m:
        istiod = m.istiod_view(ref.pod)
        assert istiod.source == "per-proxy" and istiod.policies_path == layout.istiod_file(ref.xds_replica,
                                                                                          "ambientz.json")
        assert drift(m.ztunnel(ref.pod), istiod) == []
        assert [p.reason for p in m.problems] == ["missing"]  # the manifest lists wads.json


def test_a_bundle_without_manifest_or_sources_still_loads(tmp_path):
    folder = extract_bundle(HEALTHY, tmp_path / "x")
    (folder / "manifest.json").unlink()
    with BundleModel.open(folder) as m:
        refs = m.ztunnel_refs()
        assert [r.namespace for r in refs] == ["istio-system"] * 3  # from the pod list
        assert [r.dump_status for r in refs] == ["ok"] * 3 and all(r.xds_replica is None for r in refs)
        assert len(list(m.ztunnels())) == 3
        assert m.istiod_view(refs[0].pod).source == "ambientz"
        assert [p.path for p in m.problems] == ["manifest.json"]


# --- streaming -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["archive", "directory"])
def test_ztunnels_come_in_node_order_parsed_once_and_agreeing_sections_are_shared(tmp_path, monkeypatch, form):
    path = synth(tmp_path, nodes=["n3", "n1", "n4", "n2"])
    if form == "directory":
        path = extract_bundle(path, tmp_path / "x")
    with BundleModel.open(path) as m:
        reads: list[str] = []
        real_read = m.bundle.read
        monkeypatch.setattr(m.bundle, "read", lambda p: reads.append(p) or real_read(p))
        views = list(m.ztunnels())
        assert [v.node for v in views] == ["n1", "n2", "n3", "n4"]
        assert all(v.namespace == "istio-system" for v in views)
        # ztunnels that agree share one dict per section: a thousand views cost little more than one
        assert all(v.workloads is views[0].workloads for v in views)
        assert all(v.services is views[0].services for v in views)
        # a second pass and m.ztunnel() give the cached views without reading a dump again; an archive's dumps
        # were read during its one pass already
        assert [id(v) for v in m.ztunnels()] == [id(v) for v in views]
        assert m.ztunnel(views[2].pod) is views[2]
        dumps = [p for p in reads if p.endswith("config_dump.json") and p.startswith("ztunnel/")]
        assert len(dumps) == (4 if form == "directory" else 0) and len(set(dumps)) == len(dumps)
        assert m.ztunnel("no-such-pod") is None


# --- the upstream fixtures -----------------------------------------------------------------------------------------


@needs_upstream
def test_upstream_1_22_map_dump_normalises():
    doc = orjson.loads(FIXTURE.read_bytes())
    view = normalize.ztunnel_view(doc, node="ambient-worker2", pod="ztunnel-x", path="dump.json")
    assert view.shape == "map" and view.issues == []
    assert len(view.workloads) == len({w["uid"] for w in doc["workloads"].values()})
    ratings = view.workloads["Kubernetes//Pod/bookinfo/ratings-v1-6484c4d9bb-mdxm5"]
    assert ratings.waypoint == "/10.96.65.117"  # the hand-made `port` key is ignored
    assert ratings.network == "network1" and ratings.native_tunnel and ratings.ips == ("10.244.2.54",)
    # services keyed by VIP, endpoints in the old "uid:net/ip" shape
    waypoint = view.services["bookinfo/namespace-istio-waypoint.bookinfo.svc.cluster.local"]
    assert waypoint.vips == ("/10.96.65.117",) and waypoint.ports == ((15008, 15008), (15021, 15021))
    (ep,) = waypoint.endpoints
    assert ep.workload_uid == "Kubernetes//Pod/bookinfo/namespace-istio-waypoint-d94944bf6-z89g2"
    assert ep.status == "Healthy"  # from the workload: the old endpoint shape has no status
    # no workload carries `services` in 1.22: derived from the endpoints
    assert view.workloads[ep.workload_uid].services == (waypoint.key,)
    assert set(view.policies) == {"default/allow-nothing", "default/allow-waypoint"}
    allow = view.policies["default/allow-waypoint"]
    assert allow.scope == "WorkloadSelector" and allow.action == "Allow"
    assert allow.rules_json() == [[[{"serviceAccounts": [{"namespace": "default", "serviceAccount": "waypoint"}]}]]]
    assert view.policies["default/allow-nothing"].rules == ()
    assert len(view.workload_state) == 6
    state = view.workload_state["54ce2023-7c77-4bb8-b6c3-eccf619cd6f2"]
    assert state.name == "productpage-v1-796f87b58-97bjk" and state.state == "Up"
    assert {c.direction for c in state.connections} == {"inbound", "outbound"}
    assert all(c.protocol == "HBONE" for c in state.connections)
    # certificates: raw PEM (old data), root last in the chain, no rootCerts
    assert [c.state.split(":")[0] for c in view.certificates] == ["Available", "Initializing", "Unavailable",
                                                                   "Unavailable"]
    istiod = view.certificates[0]
    assert len(istiod.chain) == 1 and len(istiod.roots) == 1
    assert istiod.chain[0].pem.startswith("-----BEGIN CERTIFICATE-----")
    assert istiod.chain[0].serial == 305554775863395697262503895661564044819
    assert check_pointers(view, doc) > 50
    assert view.pointer("workloads", ratings.uid) == "/workloads/network1~110.244.2.54"
    assert view.pointer("certificates", "spiffe://cluster.local/ns/istio-system/sa/istiod") == "/certificates/0"


@needs_upstream
def test_legacy_dump_is_a_problem_not_an_exception(tmp_path):
    with pytest.raises(normalize.UnsupportedDump):
        normalize.ztunnel_view(orjson.loads(LEGACY_FIXTURE.read_bytes()))
    out = tmp_path / "mixed.tar.zst"
    with BundleWriter(out, root="mixed", mtime=1764000000, generator="synth") as w:
        w.add(layout.ztunnel_file("node-a", "ztunnel-a", "config_dump.json"), FIXTURE.read_bytes())
        w.add(layout.ztunnel_file("node-b", "ztunnel-b", "config_dump.json"), LEGACY_FIXTURE.read_bytes())
    with BundleModel.open(out) as m:
        assert [r.pod for r in m.ztunnel_refs()] == ["ztunnel-a", "ztunnel-b"]
        assert [v.pod for v in m.ztunnels()] == ["ztunnel-a"]
        (problem,) = m.problems
        assert problem.reason == "unsupported" and problem.path.endswith("ztunnel-b/config_dump.json")
        assert "by_addr" in problem.message
        assert m.ztunnel("ztunnel-b") is None
        results = {path: issues for path, _, issues in m.validation_issues()}
        assert "ztunnel/node-b/ztunnel-b/config_dump.json" not in results
        assert len(m.problems) == 1  # the same problem, found twice, is listed once


# --- bad input never raises ----------------------------------------------------------------------------------------


def test_bad_artifacts_become_problems(tmp_path):
    folder = extract_bundle(HEALTHY, tmp_path / "x")
    healthy = BundleModel.open(HEALTHY)
    refs = healthy.ztunnel_refs()
    healthy.close()
    broken, missing, fine = refs
    (folder / broken.dump_path).write_bytes(b'{"workloads": [')  # truncated JSON
    (folder / missing.dump_path).unlink()
    # a per-proxy dump that is istiod's 404 text, a WADS dump that is not an object
    (folder / layout.istiod_proxy_dump(fine.pod)).write_bytes(b"Proxy not connected to this Pilot instance")
    # a workload that is not an object and a service without hostname inside an otherwise good dump
    doc = orjson.loads((folder / fine.dump_path).read_bytes())
    doc["workloads"].insert(0, "nonsense")
    doc["services"][1] = {"name": "x"}
    (folder / fine.dump_path).write_bytes(orjson.dumps(doc))
    # a log with invalid UTF-8 and no final newline; metrics that do not parse
    log = folder / fine.log_path
    log.write_bytes(log.read_bytes() + b"2026-11-25T11:59:59.000000Z\tinfo\taccess\tbad \xff byte\t\nnot a record")
    (folder / fine.metrics_path).write_bytes(b"this is { not metrics\n")
    (folder / "cluster/pods.json").write_bytes(b'{"kind": "PodList", "items": 3}')
    with BundleModel.open(folder) as m:
        views = list(m.ztunnels())
        assert [v.pod for v in views] == [fine.pod]
        view = views[0]
        assert len(view.issues) == 2
        assert view.pointers[("workloads", next(iter(view.workloads)))] == "/workloads/1"
        istiod = m.istiod_view(fine.pod)
        assert istiod is not None and istiod.source == "ambientz"
        records = list(m.log_records(m.ztunnel_ref(fine.pod).log_path))
        assert records[-1].record is None and records[-1].text == "not a record"
        bad = records[-2]
        assert bad.record is not None and "\ufffd" in bad.record.message
        assert m.metrics(fine.node) == []
        assert m.pods() == []
        by_path = {}
        for p in m.problems:
            by_path.setdefault(p.path, []).append(p)
        assert by_path[broken.dump_path][0].reason == "malformed"
        assert by_path[missing.dump_path][0].reason == "missing"
        assert {p.pointer for p in by_path[fine.dump_path]} == {"/workloads/0", "/services/1"}
        assert all(p.reason == "invalid" for p in by_path[fine.dump_path])
        assert by_path[layout.istiod_proxy_dump(fine.pod)][0].reason == "malformed"
        (utf8,) = by_path[fine.log_path]
        assert utf8.line == bad.line and utf8.reason == "unreadable"
        assert by_path[fine.metrics_path] and by_path["cluster/pods.json"][0].pointer == "/items"
        problems = len(m.problems)
        list(m.ztunnels())
        results = {path for path, _, _ in m.validation_issues()}
        assert broken.dump_path not in results and fine.dump_path in results
        assert len(m.problems) == problems  # found again (by validation too): still listed once


def test_not_collected_dump_is_listed_but_skipped(tmp_path):
    out = tmp_path / "partial.tar.zst"
    with BundleWriter(out, root="partial", mtime=1764000000, generator="synth") as w:
        w.add(layout.ztunnel_file("a", "ztunnel-a", "pod.json"), b"{}")
        w.record(layout.ztunnel_file("a", "ztunnel-a", "config_dump.json"), reason="timeout after 30s")
        w.record(layout.istiod_proxy_dump("ztunnel-a"), reason="404 from every istiod replica")
    with BundleModel.open(out) as m:
        (ref,) = m.ztunnel_refs()
        assert ref.dump_status == "error" and ref.dump_reason == "timeout after 30s"
        assert list(m.ztunnels()) == []
        assert m.istiod_view("ztunnel-a") is None
        reasons = {p.path: p.reason for p in m.problems}
        assert reasons == {ref.dump_path: "not-collected", layout.istiod_proxy_dump("ztunnel-a"): "not-collected"}
        assert "timeout after 30s" in m.problems[0].message


# --- normalisation details -----------------------------------------------------------------------------------------


def test_decode_ip_handles_raw_bytes_and_the_ambientz_ascii_quirk():
    import base64

    assert normalize.decode_ip("CvQCNg==") == "10.244.2.54"
    assert normalize.decode_ip(base64.b64encode(b"10.244.2.54").decode()) == "10.244.2.54"
    assert normalize.decode_ip(base64.b64encode(b"fd00::1").decode()) == "fd00::1"
    raw6 = base64.b64encode(bytes.fromhex("fd000000000000000000000000000001")).decode()
    assert normalize.decode_ip(raw6) == "fd00::1"
    assert normalize.decode_ip(base64.b64encode(b"1::2").decode(), prefer_text=True) == "1::2"
    with pytest.raises(ValueError):
        normalize.decode_ip("bm90IGFuIGlw")  # "not an ip"


def test_istiod_defaults_and_renames():
    wl, ports = normalize.istiod_workload({
        "uid": "c1//Pod/ns/a", "name": "a", "namespace": "ns", "addresses": ["CgAAAQ=="],
        "waypoint": {"hostname": {"namespace": "ns", "hostname": "wp.ns.svc.cluster.local"}, "hboneMtlsPort": 15008},
        "networkGateway": {"address": {"network": "net2", "address": "CgAAAg=="}},
        "services": {"ns/s.ns.svc.cluster.local": {"ports": [{"servicePort": 80, "targetPort": 8080},
                                                            {"servicePort": 81}]}},
        "status": "UNHEALTHY", "networkMode": "HOST_NETWORK", "capacity": 3,
    })
    assert (wl.protocol, wl.trust_domain, wl.service_account, wl.cluster_id, wl.workload_type) == (
        "TCP", "cluster.local", "default", "Kubernetes", "deployment")
    assert wl.ips == ("10.0.0.1",) and wl.status == "Unhealthy" and wl.network_mode == "HostNetwork"
    assert wl.waypoint == "ns/wp.ns.svc.cluster.local" and wl.network_gateway == "net2/10.0.0.2"
    assert wl.capacity == 3 and ports == {"ns/s.ns.svc.cluster.local": ((80, 8080), (81, 0))}
    pol = normalize.istiod_policy({
        "name": "p", "namespace": "ns", "action": "DENY", "dryRun": True,
        "groups": [{"rules": [{"matches": [{"sourceIps": [{"address": "CgAAAA==", "length": 24}],
                                            "principals": [{"suffix": "/sa/x"}, {"presence": {}}, {}],
                                            "notDestinationPorts": [22], "namespaces": []}]}]}],
    })
    assert (pol.scope, pol.action, pol.dry_run) == ("Global", "Deny", True)
    ztunnel_form = normalize.ztunnel_policy({
        "action": "Deny", "dryRun": True, "name": "p", "namespace": "ns", "scope": "Global",
        "rules": [[[{"notDestinationPorts": [22], "principals": [{"Presence": []}, {"Suffix": "/sa/x"}],
                     "sourceIps": ["10.0.0.0/24"]}]]],
    })
    assert pol.comparable() == ztunnel_form.comparable() and pol == ztunnel_form
    svc = normalize.istiod_service({
        "name": "s", "namespace": "ns", "hostname": "s.ns.svc.cluster.local",
        "addresses": [{"address": "CgAAZA=="}, {"network": "n", "address": "CgAAAA==", "length": 24}],
        "ports": [{"servicePort": 80, "targetPort": 8080, "appProtocol": "HTTP11"}],
        "ipFamilies": "DUAL", "loadBalancing": {"routingPreference": ["NETWORK", "ZONE"], "mode": "FAILOVER"},
    })
    assert svc.vips == ("/10.0.0.100",) and svc.cidr_vips == ("n/10.0.0.0/24",)
    assert svc.ports == ((80, 8080),) and svc.ip_families == "Dual"
    assert svc.load_balancer == ("Failover", "OnlyHealthy", ("Network", "Zone"))


def test_ambientz_with_null_lists():
    view = normalize.istiod_view_from_ambientz({"workloads": None, "services": None, "policies": None})
    assert view.workloads == {} and view.services == {} and view.policies == {} and view.issues == []
    with pytest.raises(normalize.NormalizeError):
        normalize.istiod_view_from_ambientz([])


def test_ztunnel_defaults_and_certificate_shapes():
    import base64

    wl = normalize.ztunnel_workload({"uid": "u", "name": "n", "namespace": "ns", "workloadIps": [],
                                     "protocol": "HBONE", "status": "Healthy"})
    assert (wl.trust_domain, wl.service_account, wl.cluster_id, wl.network_mode, wl.capacity) == (
        "cluster.local", "default", "Kubernetes", "Standard", 1)
    assert set(wl.comparable()) == {
        "uid", "name", "namespace", "ips", "protocol", "node", "service_account", "trust_domain", "waypoint",
        "status", "services", "authorization_policies", "network", "cluster_id", "canonical_name",
        "canonical_revision", "native_tunnel", "workload_name"}
    pem = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n").decode()
    cert = {"expirationTime": "2027-01-01T00:00:00Z", "pem": pem, "serialNumber": "42", "validFrom": "2026-01-01T00:00:00Z"}
    new = normalize.ztunnel_certificate({"identity": "spiffe://td/ns/a/sa/b", "state": "Available",
                                         "certChain": [cert], "rootCerts": [cert]})
    old = normalize.ztunnel_certificate({"identity": "spiffe://td/ns/a/sa/b", "state": "Available",
                                         "certChain": [cert, cert]})
    assert new == old and new.chain[0].serial == 42 and new.chain[0].pem.startswith("-----BEGIN")
    lone = normalize.ztunnel_certificate({"identity": "i", "state": "Available", "certChain": [cert]})
    assert len(lone.chain) == 1 and lone.roots == ()  # one certificate that is not (readably) self-signed
    pending = normalize.ztunnel_workload_state("uid1", {"info": {"name": "n", "namespace": "ns",
                                                                 "serviceAccount": "sa"}, "state": "Pending"})
    assert pending.state == "Pending" and pending.connections == ()
    assert normalize.json_pointer("workloads", "net/10.0.0.1", "a~b") == "/workloads/net~110.0.0.1/a~0b"


def test_comparable_sets_ignore_order():
    a = Service("ns", "s", "s.ns", ("/10.0.0.2", "/10.0.0.1"), ((80, 80),))
    b = Service("ns", "s", "s.ns", ("/10.0.0.1", "/10.0.0.2"), ((80, 80),))
    assert a.comparable() == b.comparable()
    p1 = normalize.ztunnel_policy({"name": "p", "namespace": "ns", "rules": [[[{"namespaces": [{"Exact": "a"}, {"Exact": "b"}]}]]]})
    p2 = normalize.ztunnel_policy({"name": "p", "namespace": "ns", "rules": [[[{"namespaces": [{"Exact": "b"}, {"Exact": "a"}]}]]]})
    assert isinstance(p1, Policy) and p1.comparable() == p2.comparable()
    assert p1.scope == "Global" and p1.action == "Allow"


def test_validation_of_distinct_items_equals_whole_document_validation(tmp_path):
    from bundler.validation import validate_bytes

    folder = extract_bundle(INCIDENT, tmp_path / "x")
    with BundleModel.open(folder) as m:
        refs = m.ztunnel_refs()
        istiod = m.istiod_refs()[0]
    first, second = (folder / refs[0].dump_path), (folder / refs[1].dump_path)
    doc = orjson.loads(first.read_bytes())
    bad = dict(doc["workloads"][0], protocol=5, workloadIps="10.0.0.1")
    doc["workloads"] += [bad, "not an object", bad, doc["workloads"][1]]
    doc["services"][0] = {k: v for k, v in doc["services"][0].items() if k != "hostname"}
    doc["policies"].append({"name": "p", "namespace": "ns", "action": "Maybe", "rules": [[["x"]]], "scope": 3})
    first.write_bytes(orjson.dumps(doc))
    other = orjson.loads(second.read_bytes())
    other["workloads"].insert(0, bad)  # the same invalid object in another dump: cached, at another index
    second.write_bytes(orjson.dumps(other))
    ambientz = folder / istiod.ambientz_path
    amb = orjson.loads(ambientz.read_bytes())
    amb["workloads"][2]["addresses"] = "MTAuMC4wLjE="
    amb["policies"] = None
    ambientz.write_bytes(orjson.dumps(amb))
    proxy = folder / layout.istiod_proxy_dump(refs[0].pod)
    dump = orjson.loads(proxy.read_bytes())
    dump["configs"][1] = {"@type": normalize.ADDRESS_TYPE, "workload": {"uid": 3}}
    proxy.write_bytes(orjson.dumps(dump))
    with BundleModel.open(folder) as m:
        results = list(m.validation_issues())
        for path, kind, issues in results:
            assert (kind, issues) == validate_bytes((folder / path).read_bytes(), path=path), path
        flagged = {path for path, _, issues in results if issues}
        assert flagged == {refs[0].dump_path, refs[1].dump_path, istiod.ambientz_path,
                           layout.istiod_proxy_dump(refs[0].pod)}
        pointers = {i.pointer for path, _, issues in results if path == refs[1].dump_path for i in issues}
        assert pointers and all(p.startswith("/workloads/0") for p in pointers)


# --- Istio <= 1.24: per-proxy dumps that repeat ----------------------------------------------------------------


def _per_proxy_views(source: Path) -> list[IstiodView]:
    with BundleModel.open(source) as m:
        return [m.istiod_view(zt.pod) for zt in m.ztunnels()]


def test_repeated_per_proxy_dumps_are_converted_once_and_their_view_shared(tmp_path):
    shared = _per_proxy_views(INCIDENT)
    whole = _per_proxy_views(Path(extract_bundle(INCIDENT, tmp_path)))  # a folder: no digests, each converted
    assert [v.ztunnel_pod for v in shared] == [v.ztunnel_pod for v in whole]
    for a, b in zip(shared, whole, strict=True):
        assert a.source == b.source == "per-proxy"
        assert (a.path, a.policies_path, a.replica) == (b.path, b.policies_path, b.replica)
        assert a.path == layout.istiod_proxy_dump(a.ztunnel_pod)
        assert a.policies_path == layout.istiod_proxy_wads(a.ztunnel_pod)
        assert (a.workloads, a.services, a.policies, a.pointers) == (b.workloads, b.services, b.policies, b.pointers)
    # the two ztunnels served by the same replica from the same bytes share one conversion
    assert len({id(v.workloads) for v in shared}) < len(shared)
    assert len({id(v.workloads) for v in whole}) == len(whole)


def test_problems_of_a_repeated_per_proxy_dump_are_reported_for_each_copy(tmp_path, monkeypatch):
    from bundler.model import bundle as bundle_module
    from tests.hostile_corpus import write_variant

    def break_first_workload(path: str, data: bytes) -> bytes:
        # the same damage in every copy: an address that is not base64 of an IP (left out of the view, and a
        # schema violation)
        if path.startswith("istiod/proxies/") and path.endswith("/config_dump.json"):
            return data.replace(b'"addresses":["', b'"addresses":["not an ip', 1)
        return data

    monkeypatch.setattr(bundle_module, "_VALIDATED_BY_DIGEST_FROM", 0)  # validate small members by digest too
    source = write_variant(tmp_path / "broken.tar.zst", break_first_workload)
    with BundleModel.open(source) as m:
        paths = [layout.istiod_proxy_dump(zt.pod) for zt in m.ztunnels()]
        issues = {path: found for path, _, found in m.validation_issues() if path in paths}
        for zt in m.ztunnels():
            m.istiod_view(zt.pod)
        problems = {p.path for p in m.problems if p.reason == "invalid"}
    assert set(issues) == set(paths) and all(issues.values())
    assert len({tuple((i.pointer, i.message) for i in v) for v in issues.values()}) == 1
    assert set(paths) <= problems
