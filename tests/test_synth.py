"""Synthetic meshes: determinism, the samples, schema-valid artifacts for every Istio version, real
certificate chains, consistent traffic, and the observable evidence of every fault in the catalog."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import hashes

from bundler import layout
from bundler.archive import open_bundle
from bundler.formats import ztunnel_log
from bundler.synth.build import build_mesh, write_bundle
from bundler.synth.faults import CATALOG
from bundler.synth.scenario import scenario_from_dict
from bundler.validation import validate_bytes

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)

BASE = {
    "name": "mini",
    "seed": 3,
    "istioVersion": "1.28.1",
    "nodes": ["n1", "n2", "n3"],
    "istiod": {"replicas": 2},
    "now": "2026-11-25T12:00:00Z",
    "namespaces": [
        {"name": "shop", "ambient": True,
         "deployments": [{"name": "web-v1", "app": "web", "ports": [8080]},
                         {"name": "api-v1", "app": "api", "replicas": 3, "ports": [9090]},
                         {"name": "db-v1", "app": "db", "ports": [5432]}],
         "services": [{"name": "web", "ports": [{"port": 80, "targetPort": 8080}]},
                      {"name": "api", "ports": [9090]}, {"name": "db", "ports": [5432]}],
         "waypoints": [{"name": "waypoint"}]},
        {"name": "legacy", "ambient": False,
         "deployments": [{"name": "batch-v1", "app": "batch", "ports": [8000]}]},
    ],
    "peerAuthentications": [{"name": "default", "namespace": "istio-system", "mode": "STRICT"}],
    "authorizationPolicies": [{"name": "db-from-api", "namespace": "shop", "action": "ALLOW",
                               "selector": {"app": "db"}, "fromPrincipals": ["cluster.local/ns/shop/sa/api"],
                               "toPorts": [5432]}],
    "traffic": [{"from": "shop/web", "to": "shop/api", "port": 9090, "connections": 30},
                {"from": "shop/api", "to": "shop/db", "port": 5432, "connections": 12}],
}


def scenario(**changes):
    data = orjson.loads(orjson.dumps(BASE))
    data.update(changes)
    return scenario_from_dict(data)


def synth(tmp_path: Path, sc, name: str | None = None) -> Path:
    out = tmp_path / f"{name or sc.name}.tar.zst"
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_bundle(build_mesh(sc), out, ["bundle", "synth", "x.yaml", "-o", out.name])


def members(path: Path) -> dict[str, bytes]:
    with open_bundle(path) as b:
        return dict(b.iter_members())


def log_records(data: bytes) -> list[ztunnel_log.ZtunnelLogRecord]:
    return [r for r in map(ztunnel_log.parse_line, data.decode().splitlines()) if r is not None]


def dump_of(files: dict[str, bytes], node: str) -> dict:
    path = next(p for p in files if p.startswith(f"ztunnel/{node}/") and p.endswith("config_dump.json"))
    return orjson.loads(files[path])


# --- determinism and samples ----------------------------------------------------------------------------------


def test_same_scenario_gives_identical_bytes(tmp_path):
    a = synth(tmp_path / "a", scenario())
    b = synth(tmp_path / "b", scenario())
    assert a.read_bytes() == b.read_bytes()


def test_another_seed_gives_another_mesh(tmp_path):
    a = synth(tmp_path / "a", scenario())
    b = synth(tmp_path / "b", scenario(seed=4))
    assert a.read_bytes() != b.read_bytes()


@pytest.mark.parametrize("name", ["bookinfo-healthy", "bookinfo-incident"])
def test_samples_regenerate_byte_for_byte(tmp_path, name):
    out = tmp_path / f"{name}.tar.zst"
    result = subprocess.run([sys.executable, "-m", "bundler", "synth", str(SAMPLES / f"{name}.yaml"), "-o", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    committed = SAMPLES / f"{name}.tar.zst"
    assert out.read_bytes() == committed.read_bytes(), f"regenerate with: bundle synth samples/{name}.yaml -o {committed}"
    assert committed.stat().st_size < 1_000_000


def test_stock_tar_lists_a_synthetic_bundle(tmp_path):
    path = synth(tmp_path, scenario())
    result = subprocess.run(["tar", "--zstd", "-tf", str(path)], capture_output=True, text=True)
    if result.returncode != 0 and "zstd" in result.stderr:
        pytest.skip("tar without zstd support")
    names = result.stdout.split()
    assert "mini/manifest.json" in names
    assert any(n.endswith("/config_dump.json") and n.startswith("mini/ztunnel/n2/") for n in names)


def test_config_dumps_sit_together_ordered_by_node(tmp_path):
    with open_bundle(synth(tmp_path, scenario())) as b:
        order = [p for p, _ in b.iter_members()]
    dumps = [i for i, p in enumerate(order) if p.startswith("ztunnel/") and p.endswith("config_dump.json")]
    assert dumps == list(range(dumps[0], dumps[0] + 3))
    assert [order[i].split("/")[1] for i in dumps] == ["n1", "n2", "n3"]
    assert order[-1] == "manifest.json"


# --- formats: every artifact valid, for every supported Istio version ---------------------------------------


@pytest.mark.parametrize("version", [f"1.{m}.0" for m in range(22, 32)])
def test_every_json_artifact_validates(tmp_path, version):
    files = members(synth(tmp_path, scenario(istioVersion=version)))
    checked = Counter()
    for path, data in files.items():
        kind = layout.kind_of_path(path)
        if kind in layout.JSON_KINDS:
            found, issues = validate_bytes(data, kind=kind, path=path)
            assert issues == [], (path, issues[:3])
            checked[kind] += 1
    assert checked[layout.KIND_ZTUNNEL_CONFIG_DUMP] == 3
    assert checked[layout.KIND_ISTIOD_AMBIENTZ] == 2
    assert checked[layout.KIND_K8S_LIST] >= 10


def test_dump_shape_follows_the_version(tmp_path):
    old = dump_of(members(synth(tmp_path / "a", scenario(istioVersion="1.22.5"))), "n2")
    new = dump_of(members(synth(tmp_path / "b", scenario(istioVersion="1.30.0"))), "n2")
    assert isinstance(old["workloads"], dict) and all(k.startswith("/") for k in old["workloads"])
    assert isinstance(new["workloads"], list)
    assert "rootCerts" not in old["certificates"][0] and len(old["certificates"][0]["certChain"]) == 2
    assert len(new["certificates"][0]["rootCerts"]) == 1
    assert all("capacity" in w for w in new["workloads"]) and not any("capacity" in w for w in old["workloads"].values())
    svc = next(s for s in new["services"] if s["name"] == "api")
    assert set(next(iter(svc["endpoints"].values()))) == {"port", "status", "workloadUid"}


def test_ztunnel_dump_is_pretty_printed_with_sorted_keys(tmp_path):
    files = members(synth(tmp_path, scenario()))
    raw = next(d for p, d in files.items() if p.endswith("config_dump.json") and p.startswith("ztunnel/"))
    assert raw.startswith(b'{\n  "certificates": [')
    document = orjson.loads(raw)
    assert list(document) == sorted(document)
    assert all(list(w) == sorted(w) for w in document["workloads"])


def test_istiod_views_use_proto_json(tmp_path):
    files = members(synth(tmp_path, scenario(istioVersion="1.24.2")))
    ambientz = orjson.loads(next(d for p, d in files.items() if p.endswith("ambientz.json")))
    web = next(w for w in ambientz["workloads"] if w["name"].startswith("web-v1"))
    # ambientz: the IP's ASCII text, base64-encoded; the per-proxy dump: the raw 4 bytes.
    assert base64.b64decode(web["addresses"][0]).decode().count(".") == 3
    assert "status" not in web and web["tunnelProtocol"] == "HBONE"
    per_proxy = orjson.loads(next(d for p, d in files.items() if p.startswith("istiod/proxies/")
                                  and p.endswith("config_dump.json")))
    entry = next(c for c in per_proxy["configs"] if "workload" in c and c["workload"]["name"].startswith("web-v1"))
    assert entry["@type"] == "type.googleapis.com/istio.workload.Address"
    assert len(base64.b64decode(entry["workload"]["addresses"][0])) == 4


def test_per_proxy_dump_is_empty_from_istio_1_25(tmp_path):
    files = members(synth(tmp_path, scenario(istioVersion="1.26.0")))
    dumps = [orjson.loads(d) for p, d in files.items() if p.startswith("istiod/proxies/") and p.endswith("config_dump.json")]
    assert dumps and all(d == {} for d in dumps)


# --- certificates --------------------------------------------------------------------------------------------


def test_certificates_are_real_chains_for_local_hbone_workloads(tmp_path):
    files = members(synth(tmp_path, scenario()))
    pods = orjson.loads(files["cluster/pods.json"])["items"]
    for node in ("n1", "n2", "n3"):
        dump = dump_of(files, node)
        # ztunnel prefetches for its node's HBONE workloads, native-tunnel ones (waypoints) included.
        local = {f"spiffe://cluster.local/ns/{p['metadata']['namespace']}/sa/{p['spec']['serviceAccountName']}"
                 for p in pods if p["spec"]["nodeName"] == node
                 and (p["metadata"].get("annotations", {}).get("ambient.istio.io/redirection") == "enabled"
                      or p["metadata"]["labels"].get("networking.istio.io/tunnel") == "http")}
        assert {c["identity"] for c in dump["certificates"]} == local
        for cert in dump["certificates"]:
            leaf = x509.load_pem_x509_certificate(base64.b64decode(cert["certChain"][0]["pem"]))
            root = x509.load_pem_x509_certificate(base64.b64decode(cert["rootCerts"][0]["pem"]))
            root.public_key().verify(leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert san.get_values_for_type(x509.UniformResourceIdentifier) == [cert["identity"]]
            assert int(cert["certChain"][0]["serialNumber"]) == leaf.serial_number
            assert cert["certChain"][0]["expirationTime"] > "2026-11-25T12:00:00Z" > cert["certChain"][0]["validFrom"]


# --- traffic: logs and metrics agree with each other ---------------------------------------------------------


def test_every_outbound_access_line_has_its_inbound_line(tmp_path):
    files = members(synth(tmp_path, scenario()))
    outbound, inbound = Counter(), Counter()
    for path, data in files.items():
        if path.startswith("ztunnel/") and path.endswith("istio-proxy.log"):
            for rec in log_records(data):
                if rec.target == "access":
                    f = dict(rec.fields)
                    key = (f["src.addr"], f["dst.hbone_addr"])
                    (outbound if f["direction"] == "outbound" else inbound)[key] += 1
    assert sum(outbound.values()) == 42
    assert outbound == inbound


def test_metrics_count_the_logged_connections(tmp_path):
    from bundler.formats import openmetrics

    files = members(synth(tmp_path, scenario()))
    opened = 0
    for path, data in files.items():
        if path.endswith("metrics.txt"):
            text = data.decode()
            assert text.endswith("# EOF\n")
            for labels, value in openmetrics.samples(text, "istio_tcp_connections_opened"):
                if labels["reporter"] == "source":
                    opened += value
    assert opened == 42


def test_json_log_format(tmp_path):
    files = members(synth(tmp_path, scenario(logFormat="json")))
    line = next(d for p, d in files.items() if p.endswith("istio-proxy.log") and d).decode().splitlines()[0]
    assert orjson.loads(line)["scope"] == "access"


# --- the fault catalog ---------------------------------------------------------------------------------------

REQUIRED_FAULTS = {
    "workload-missing", "stale-workload", "field-drift", "cert-expired", "cert-unavailable", "cert-initializing",
    "cert-missing", "root-mismatch", "xds-disconnected", "xds-nack", "pod-not-enrolled", "hbone-blocked",
    "policy-denial", "waypoint-missing", "ztunnel-oomkilled", "version-skew", "lb-skew",
}


def test_catalog_lists_every_required_fault_with_its_analyzers():
    result = subprocess.run([sys.executable, "-m", "bundler", "synth", "--list-faults", "-o", "json"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    catalog = {f["name"]: f for f in orjson.loads(result.stdout)}
    assert REQUIRED_FAULTS <= set(catalog)
    for fault in catalog.values():
        assert fault["analyzers"] and fault["failureMode"] and fault["summary"]


def faulty(tmp_path, *faults, **changes) -> dict[str, bytes]:
    return members(synth(tmp_path, scenario(faults=list(faults), **changes)))


def pod_named(files, app: str) -> dict:
    return next(p for p in orjson.loads(files["cluster/pods.json"])["items"] if p["metadata"]["name"].startswith(app))


def test_fault_workload_missing(tmp_path):
    files = faulty(tmp_path, {"type": "workload-missing", "pod": "shop/db", "node": "n2"})
    db = pod_named(files, "db-v1")["metadata"]["name"]
    names = lambda node: {w["name"] for w in dump_of(files, node)["workloads"]}  # noqa: E731
    assert db not in names("n2") and db in names("n1") and db in names("n3")


def test_fault_stale_workload_reuses_an_ip(tmp_path):
    files = faulty(tmp_path, {"type": "stale-workload", "pod": "shop/api"})
    workloads = dump_of(files, "n1")["workloads"]
    ips = Counter(ip for w in workloads for ip in w["workloadIps"])
    dup = [ip for ip, n in ips.items() if n == 2]
    assert len(dup) == 1
    live = {p["metadata"]["name"] for p in orjson.loads(files["cluster/pods.json"])["items"]}
    ghosts = [w["name"] for w in workloads if dup[0] in w["workloadIps"] and w["name"] not in live]
    assert len(ghosts) == 1


def test_fault_field_drift(tmp_path):
    files = faulty(tmp_path, {"type": "field-drift", "pod": "shop/web", "node": "n1", "field": "protocol"},
                   istioVersion="1.24.0")
    web = lambda node: next(w for w in dump_of(files, node)["workloads"] if w["name"].startswith("web-v1"))  # noqa
    assert web("n1")["protocol"] == "TCP" and web("n2")["protocol"] == "HBONE"


@pytest.mark.parametrize("fault,check", [
    ("cert-expired", lambda c: c["certChain"][0]["expirationTime"] < "2026-11-25T12:00:00Z"),
    ("cert-unavailable", lambda c: c["state"].startswith("Unavailable: ") and c["certChain"] == []),
    ("cert-initializing", lambda c: c["state"] == "Initializing"),
])
def test_fault_certificate_states(tmp_path, fault, check):
    files = faulty(tmp_path, {"type": fault, "pod": "shop/web"})
    web = pod_named(files, "web-v1")
    cert = next(c for c in dump_of(files, web["spec"]["nodeName"])["certificates"]
                if c["identity"] == "spiffe://cluster.local/ns/shop/sa/web")
    assert check(cert)


def test_fault_cert_missing(tmp_path):
    files = faulty(tmp_path, {"type": "cert-missing", "pod": "shop/web"})
    node = pod_named(files, "web-v1")["spec"]["nodeName"]
    assert "spiffe://cluster.local/ns/shop/sa/web" not in {c["identity"] for c in dump_of(files, node)["certificates"]}


def test_fault_root_mismatch(tmp_path):
    # n2 and n3 run HBONE workloads (n1 runs none: no certificates there).
    files = faulty(tmp_path, {"type": "root-mismatch", "node": "n3"})
    roots = {node: {c["rootCerts"][0]["pem"] for c in dump_of(files, node)["certificates"]} for node in ("n2", "n3")}
    assert len(roots["n2"]) == len(roots["n3"]) == 1 and roots["n2"] != roots["n3"]
    clean = faulty(tmp_path / "clean")
    assert {c["rootCerts"][0]["pem"] for n in ("n2", "n3") for c in dump_of(clean, n)["certificates"]} == roots["n2"]


def test_fault_xds_disconnected(tmp_path):
    path = synth(tmp_path, scenario(faults=[{"type": "xds-disconnected", "node": "n2"}]))
    with open_bundle(path) as b:
        manifest = b.manifest
        files = dict(b.iter_members())
    zt = next(p.split("/")[2] for p in files if p.startswith("ztunnel/n2/"))
    art = manifest.artifact(layout.istiod_proxy_dump(zt))
    assert art.status == "error" and "Proxy not connected to this Pilot instance" in art.reason
    assert layout.istiod_proxy_dump(zt) not in files
    syncz = [s for p, d in files.items() if p.endswith("syncz.json") for s in orjson.loads(d)]
    assert f"{zt}.istio-system" not in {s["proxy"] for s in syncz} and len(syncz) == 2
    lines = log_records(files[layout.ztunnel_log("n2", zt)])
    assert any(r.message.startswith("XDS client connection error") for r in lines)


def test_fault_xds_nack(tmp_path):
    files = faulty(tmp_path, {"type": "xds-nack", "node": "n1"})
    syncz = {s["proxy"]: s for p, d in files.items() if p.endswith("syncz.json") for s in orjson.loads(d)}
    zt = next(p.split("/")[2] for p in files if p.startswith("ztunnel/n1/"))
    address = syncz[f"{zt}.istio-system"]["resources"]["type.googleapis.com/istio.workload.Address"]
    assert address["acked"] != address["sent"]
    assert any(dict(r.fields).get("type") == "Nack" for r in log_records(files[layout.ztunnel_log("n1", zt)]))
    assert any(b"ACK ERROR" in d for p, d in files.items() if p.startswith("istiod/") and p.endswith(".log"))


def test_fault_pod_not_enrolled(tmp_path):
    files = faulty(tmp_path, {"type": "pod-not-enrolled", "pod": "shop/web", "annotation": "pending"})
    web = pod_named(files, "web-v1")
    assert web["metadata"]["annotations"]["ambient.istio.io/redirection"] == "pending"
    node = web["spec"]["nodeName"]
    assert web["metadata"]["uid"] not in dump_of(files, node)["workloadState"]
    assert next(w for w in dump_of(files, node)["workloads"] if w["name"] == web["metadata"]["name"])["protocol"] == "TCP"
    cni = next(d for p, d in files.items() if p.startswith(f"cni/{node}/"))
    assert b"pod partially added, annotating with pending status" in cni


def test_fault_hbone_blocked(tmp_path):
    files = faulty(tmp_path, {"type": "hbone-blocked", "namespace": "shop"})
    errors = [r for p, d in files.items() if p.endswith("istio-proxy.log") for r in log_records(d)
              if "maybe a NetworkPolicy is blocking HBONE port 15008" in str(dict(r.fields).get("error"))]
    assert len(errors) == 42 and all(dict(r.fields)["direction"] == "outbound" for r in errors)
    policies = orjson.loads(files["cluster/networkpolicies.networking.k8s.io.json"])["items"]
    assert policies and all(15008 not in [p["port"] for p in rule["ports"]]
                            for np in policies for rule in np["spec"]["ingress"])


def test_fault_policy_denial(tmp_path):
    files = faulty(tmp_path, {"type": "policy-denial", "service": "shop/api"})
    denied = [r for p, d in files.items() if p.endswith("istio-proxy.log") for r in log_records(d)
              if "allow policies exist, but none allowed" in str(dict(r.fields).get("error"))]
    assert len(denied) == 30 and all(dict(r.fields)["direction"] == "inbound" for r in denied)
    assert any(p["name"] == "api-allow-only" for p in dump_of(files, "n1")["policies"])


def test_fault_waypoint_missing(tmp_path):
    files = faulty(tmp_path, {"type": "waypoint-missing", "namespace": "shop", "waypoint": "ghost"})
    api = next(s for s in orjson.loads(files["cluster/services.json"])["items"] if s["metadata"]["name"] == "api")
    condition = api["status"]["conditions"][0]
    assert condition["type"] == "istio.io/WaypointBound" and condition["status"] == "False"
    assert not any("waypoint" in s for s in dump_of(files, "n1")["services"] if s["name"] == "api")


def test_fault_waypoint_not_ready(tmp_path):
    files = faulty(tmp_path, {"type": "waypoint-missing", "namespace": "shop", "waypoint": "waypoint",
                              "mode": "not-ready"})
    gw = orjson.loads(files["cluster/gateway-api/gateways.gateway.networking.k8s.io.json"])["items"][0]
    assert "addresses" not in gw["status"]


def test_fault_ztunnel_oomkilled(tmp_path):
    files = faulty(tmp_path, {"type": "ztunnel-oomkilled", "node": "n1"})
    pod = orjson.loads(next(d for p, d in files.items() if p.startswith("ztunnel/n1/") and p.endswith("pod.json")))
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 4 and status["lastState"]["terminated"]["reason"] == "OOMKilled"
    assert any(p.startswith("ztunnel/n1/") and p.endswith("istio-proxy.previous.log") for p in files)


def test_fault_version_skew(tmp_path):
    files = faulty(tmp_path, {"type": "version-skew", "node": "n2"})
    assert dump_of(files, "n2")["version"]["istioVersion"] == "1.26.0"
    assert dump_of(files, "n1")["version"]["istioVersion"] == "1.28.1"


def test_fault_lb_skew(tmp_path):
    files = faulty(tmp_path, {"type": "lb-skew", "service": "shop/api", "share": 0.8})
    per_endpoint = Counter()
    for p, d in files.items():
        if p.endswith("istio-proxy.log"):
            for r in log_records(d):
                f = dict(r.fields)
                if f.get("direction") == "inbound" and f.get("dst.service", "").startswith("api."):
                    per_endpoint[f["dst.workload"]] += 1
    assert sorted(per_endpoint.values()) == [3, 3, 24]


# --- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,message", [
    ("name: x\nnodes: 0\n", "nodes"),
    ("name: x\nistioVersion: '1.20.0'\n", "not supported"),
    ("name: x\nfaults: [{type: nope}]\n", "unknown fault"),
    ("name: x\nbogus: 1\n", "unknown key"),
    ("{{{", "not valid YAML"),
])
def test_bad_scenarios_get_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = subprocess.run([sys.executable, "-m", "bundler", "synth", str(path), "-o", str(tmp_path / "x.tar.zst")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.tar.zst").exists()


def test_scenario_keys_are_documented():
    doc = (REPO / "docs" / "synth.md").read_text()
    for key in ("istioVersion", "namespaces", "deployments", "services", "waypoints", "authorizationPolicies",
                "peerAuthentications", "traffic", "faults", "generate", "perProxyDump", "logFormat",
                "istioNamespaces"):
        assert f"`{key}`" in doc, key
    for fault in CATALOG:
        assert f"`{fault}`" in doc, fault


def test_sample_scenarios_parse():
    for path in SAMPLES.glob("*.yaml"):
        assert yaml.safe_load(path.read_text())["name"] == path.stem


@pytest.mark.slow
def test_large_scenario_synthesises(tmp_path):
    sc = scenario_from_dict({"name": "large", "nodes": 40, "generate": {"namespaces": 10, "deploymentsPerNamespace": 10,
                             "replicas": 10, "connectionsPerDeployment": 5}})
    path = synth(tmp_path, sc)
    with open_bundle(path) as b:
        dumps = [p for p in b.names() if p.startswith("ztunnel/") and p.endswith("config_dump.json")]
        assert len(dumps) == 40
        one = orjson.loads(b.read(dumps[0]))
    assert len(one["workloads"]) == 1000 + 40 * 2 + 1  # apps + ztunnel and istio-cni per node + istiod
    assert re.match(r"^large$", b.root)
