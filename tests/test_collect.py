"""`bundle collect` against `bundle serve`: the round trip, scoping, faults, signals, secrets and the size
budget. Every test runs the official client against a real HTTPS server on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from bundler import layout
from bundler.archive import extract_bundle, open_bundle
from bundler.collect.plan import Options
from bundler.collect.run import CollectSettings, NothingCollected, collect
from bundler.collect.kube import ClusterAccessError
from bundler.errors import EXIT_OK, EXIT_PARTIAL

REPO = Path(__file__).resolve().parents[1]
INCIDENT = REPO / "samples" / "bookinfo-incident.tar.zst"


def run_collect(server, out: Path, options: Options | None = None, **settings) -> int:
    settings.setdefault("quiet", True)
    return collect(CollectSettings(out=out, kubeconfig=str(server.kubeconfig_path), **settings), options or Options())


def members(path: Path) -> dict[str, bytes]:
    with open_bundle(path) as bundle:
        return dict(bundle.iter_members())


def manifest(path: Path):
    with open_bundle(path) as bundle:
        return bundle.manifest


def test_round_trip_gives_back_the_same_artifacts(served, tmp_path):
    """Only the manifest differs: its collection times, command line, context and generator."""
    out = tmp_path / "again.tar.zst"
    assert run_collect(served(), out) == EXIT_OK
    original, again = members(INCIDENT), members(out)
    assert set(original) == set(again)
    for path, data in original.items():
        if path != layout.MANIFEST:
            assert again[path] == data, path
    before = {a.path: a for a in manifest(INCIDENT).artifacts}
    after = {a.path: a for a in manifest(out).artifacts}
    assert before.keys() == after.keys()
    for path, art in before.items():
        assert (after[path].status, after[path].kind, after[path].sha256) == (art.status, art.kind, art.sha256)
        assert after[path].source == art.source, path
    m = manifest(out)
    assert m.generator == "collect" and m.cluster.server_version == "v1.30.8"
    assert m.cluster.istio_versions["ztunnel"] == ["1.24.3"]


def test_scenario_served_directly_round_trips(served, tmp_path):
    out = tmp_path / "scenario.tar.zst"
    assert run_collect(served(REPO / "samples" / "bookinfo-healthy.yaml"), out) == EXIT_OK
    healthy = members(REPO / "samples" / "bookinfo-healthy.tar.zst")
    again = members(out)
    assert {p: d for p, d in again.items() if p != layout.MANIFEST} == \
        {p: d for p, d in healthy.items() if p != layout.MANIFEST}


def test_pod_scope_collects_the_nodes_involved_and_istiod(served, tmp_path):
    server = served()
    pods = orjson.loads(server.cluster.read("cluster/pods.json"))["items"]
    node_of = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods}
    curl = next(p for p in pods if p["metadata"]["name"].startswith("curl-"))
    # curl talks to productpage (workloadState of curl's ztunnel): the scope is both pods' nodes.
    productpage = next(n for n in node_of if n.startswith("productpage-"))
    expected = {curl["spec"]["nodeName"], node_of[productpage]}
    out = tmp_path / "pod.tar.zst"
    run_collect(server, out, Options(pods=(f"client/{curl['metadata']['name']}",)))
    files = members(out)
    ztunnel_nodes = {p.split("/")[1] for p in files if p.startswith("ztunnel/") and p.endswith("config_dump.json")}
    assert ztunnel_nodes == expected
    assert {p.split("/")[1] for p in files if p.startswith("istiod/") and p.endswith("ambientz.json")} == \
        {n for n in node_of if n.startswith("istiod-")}
    m = manifest(out)
    assert m.scope.mode == "pod" and set(m.scope.nodes) == expected


def test_node_scope(served, tmp_path):
    out = tmp_path / "node.tar.zst"
    run_collect(served(), out, Options(nodes=("ambient-worker2",)))
    dumps = [p for p in members(out) if p.endswith("config_dump.json") and p.startswith("ztunnel/")]
    assert [p.split("/")[1] for p in dumps] == ["ambient-worker2"]


FAULTS = {
    "seed": 7,
    "latency": {"ms": 5},
    "rules": [
        {"match": {"resource": "services"}, "fault": 429, "retryAfter": 0, "fraction": 0.5},
        {"match": {"resource": "events"}, "fault": 500, "fraction": 1.0},
        {"match": {"resource": "endpointslices"}, "fault": "reset", "fraction": 1.0},
        {"match": {"resource": "pods/log", "pod": "istio-cni-node-*"}, "fault": "hang", "fraction": 1.0},
    ],
    "forbidden": [{"resource": "networkpolicies"}],
    "portforwardRefused": ["istio-system/ztunnel-2tnmx"],
}


def test_faults_give_a_valid_partial_archive_that_names_each_failure(served, tmp_path):
    faults = yaml.safe_load(yaml.safe_dump(FAULTS))
    for rule in faults["rules"]:
        rule.update(rule.pop("match"))
    server = served(faults=faults)
    out = tmp_path / "faulty.tar.zst"
    code = run_collect(server, out, Options(request_timeout=2.0), deadline=30.0)
    assert code == EXIT_PARTIAL
    result = subprocess.run([sys.executable, "-m", "bundler", "verify", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    arts = {a.path: a for a in manifest(out).artifacts}
    assert arts["cluster/services.json"].status == "ok"  # the 429s were retried
    assert arts["cluster/events.json"].status == "error" and "500" in arts["cluster/events.json"].reason
    assert arts["cluster/endpointslices.discovery.k8s.io.json"].status == "error"
    netpol = arts["cluster/networkpolicies.networking.k8s.io.json"]
    assert netpol.status == "error" and "forbidden" in netpol.reason
    refused = arts[layout.ztunnel_file("ambient-worker2", "ztunnel-2tnmx", "config_dump.json")]
    assert refused.status == "error" and "port-forward" in refused.reason
    cni_logs = [a for p, a in arts.items() if p.startswith("cni/")]
    assert cni_logs and all(a.status == "error" and "timed out" in a.reason for a in cni_logs)
    ok = [a for a in arts.values() if a.status == "ok"]
    assert any(a.kind == layout.KIND_ZTUNNEL_CONFIG_DUMP for a in ok)


def test_deadline_stops_hung_requests_and_keeps_what_was_collected(served, tmp_path):
    server = served(faults={"seed": 1, "rules": [{"resource": "pods/log", "fault": "hang", "fraction": 1.0}]})
    out = tmp_path / "deadline.tar.zst"
    code = run_collect(server, out, Options(request_timeout=60.0), deadline=3.0)
    assert code == EXIT_PARTIAL
    arts = manifest(out).artifacts
    logs = [a for a in arts if a.kind in (layout.KIND_ZTUNNEL_LOG, layout.KIND_ISTIOD_LOG, layout.KIND_CNI_LOG)]
    assert logs and all(a.status in ("error", "skipped") for a in logs)
    assert all("deadline" in (a.reason or "") or "timed out" in (a.reason or "").lower()
               or "Read timed out" in (a.reason or "") for a in logs)
    assert all(a.status == "ok" for a in arts if a.kind == layout.KIND_ZTUNNEL_CONFIG_DUMP)


def test_deleted_pod_between_list_and_fetch(served, tmp_path):
    server = served(faults={"seed": 1, "deletedPods": ["istio-system/ztunnel-g8gvh"]})
    out = tmp_path / "deleted.tar.zst"
    assert run_collect(server, out) == EXIT_PARTIAL
    art = manifest(out).artifact(layout.ztunnel_file("ambient-worker", "ztunnel-g8gvh", "pod.json"))
    assert art.status == "error" and "not found" in art.reason


def test_sigint_leaves_a_valid_partial_archive(served, tmp_path):
    server = served(faults={"seed": 1, "rules": [{"resource": "pods/log", "fault": "hang", "fraction": 1.0}]})
    out = tmp_path / "interrupted.tar.zst"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bundler", "collect", "-o", str(out), "--kubeconfig",
                             str(server.kubeconfig_path), "--deadline", "120s", "--request-timeout", "60s"],
                            stderr=subprocess.PIPE, text=True, env=env)
    # Wait until the important artifacts are in and only the hung logs remain, then interrupt.
    for line in proc.stderr:
        if line.startswith("collect: configuration collected"):
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == EXIT_PARTIAL, rest
    assert "interrupted by SIGINT" in rest
    arts = manifest(out).artifacts
    assert any(a.status == "ok" for a in arts)
    assert any(a.status == "skipped" and "SIGINT" in (a.reason or "") for a in arts)
    result = subprocess.run([sys.executable, "-m", "bundler", "verify", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


SECRETS = {
    "log": "Authorization: Bearer sk-live-0123456789abcdefghijklmnopqrstuv",
    "jwt": "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEyMyJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDpkZWZhdWx0In0."
           "c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmUtc2lnbmF0dXJl",
    "env": "hunter2-super-secret-db-password",
    "configmap": "AKIAIOSFODNN7EXAMPLE",
}


def test_seeded_secrets_appear_nowhere_in_the_archive(served, tmp_path):
    root = extract_bundle(INCIDENT, tmp_path / "seeded")
    log = next(root.glob("ztunnel/*/*/logs/istio-proxy.log"))
    with open(log, "a") as fh:
        fh.write(f"2026-11-25T11:59:00.000000Z\twarn\txds::client\tupstream said {SECRETS['log']}\t\n")
        fh.write(f"2026-11-25T11:59:01.000000Z\twarn\tidentity::manager\ttoken {SECRETS['jwt']}\t\n")
    pods = orjson.loads((root / "cluster/pods.json").read_bytes())
    pods["items"][-1]["spec"]["containers"][0]["env"] = [{"name": "DB_PASSWORD", "value": SECRETS["env"]}]
    (root / "cluster/pods.json").write_bytes(orjson.dumps(pods))
    cms = orjson.loads((root / "cluster/configmaps.json").read_bytes())
    cms["items"][0]["data"]["aws"] = f"aws_access_key_id = {SECRETS['configmap']}"
    (root / "cluster/configmaps.json").write_bytes(orjson.dumps(cms))
    out = tmp_path / "redacted.tar.zst"
    run_collect(served(root), out)
    raw = b"".join(members(out).values())
    for secret in SECRETS.values():
        assert secret.encode() not in raw, secret
    redacted = [a for a in manifest(out).artifacts if a.extra.get("redactions")]
    assert {a.path for a in redacted} >= {"cluster/pods.json", "cluster/configmaps.json",
                                           str(log.relative_to(root))}


def test_size_budget_is_never_exceeded(served, tmp_path):
    out = tmp_path / "small.tar.zst"
    code = run_collect(served(), out, max_size=22_000)
    assert out.stat().st_size <= 22_000
    assert code in (EXIT_OK, EXIT_PARTIAL)
    arts = manifest(out).artifacts
    trimmed = [a for a in arts if a.status == "truncated"]
    assert trimmed and all("size budget" in a.reason for a in trimmed)
    assert all(a.status == "ok" for a in arts if a.kind in (layout.KIND_ZTUNNEL_CONFIG_DUMP,
                                                            layout.KIND_ISTIOD_AMBIENTZ, layout.KIND_K8S_LIST))
    # Only info lines went: every warning and error line of the original logs is still there.
    original, now = members(INCIDENT), members(out)
    for path, data in original.items():
        if path.endswith(".log"):
            keep = [line for line in data.splitlines() if b"\twarn\t" in line or b"\terror\t" in line]
            assert all(line in now[path] for line in keep), path


def test_unreachable_api_server_is_one_line_and_exit_1(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:9", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "x", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
    }))
    out = tmp_path / "none.tar.zst"
    result = subprocess.run([sys.executable, "-m", "bundler", "collect", "-o", str(out), "--kubeconfig",
                             str(kubeconfig), "--request-timeout", "2s"], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in result.stderr and not out.exists()


def test_failing_exec_plugin_is_a_clear_error(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "x", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                                                  "command": "false"}}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
    }))
    result = subprocess.run([sys.executable, "-m", "bundler", "collect", "-o", str(tmp_path / "x.tar.zst"),
                             "--kubeconfig", str(kubeconfig)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "error:" in result.stderr and "Traceback" not in result.stderr


def test_wrong_token_is_reported(served, tmp_path):
    server = served()
    config = yaml.safe_load(Path(server.kubeconfig_path).read_text())
    config["users"][0]["user"]["token"] = "expired"
    kubeconfig = tmp_path / "expired"
    kubeconfig.write_text(yaml.safe_dump(config))
    with pytest.raises(ClusterAccessError, match="401"):
        collect(CollectSettings(out=tmp_path / "x.tar.zst", kubeconfig=str(kubeconfig), quiet=True), Options())
    assert not (tmp_path / "x.tar.zst").exists()


def test_rbac_prints_a_read_only_cluster_role():
    result = subprocess.run([sys.executable, "-m", "bundler", "rbac"], capture_output=True, text=True)
    role = yaml.safe_load(result.stdout)
    assert role["kind"] == "ClusterRole"
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert verbs <= {"get", "list", "create"}
    creates = [r for r in role["rules"] if "create" in r["verbs"]]
    assert {res for r in creates for res in r["resources"]} == {"pods/portforward", "selfsubjectaccessreviews"}
    assert not any("secrets" in r["resources"] for r in role["rules"])


def test_preflight_names_missing_permissions(served, tmp_path, capsys):
    server = served(faults={"seed": 1, "forbidden": [{"resource": "pods/proxy"}]})
    out = tmp_path / "preflight.tar.zst"
    code = collect(CollectSettings(out=out, kubeconfig=str(server.kubeconfig_path)), Options())
    err = capsys.readouterr().err
    assert "missing permission: get pods/proxy: ztunnel metrics (15020) will be skipped" in err
    assert code == EXIT_PARTIAL
    assert all(a.status == "error" for a in manifest(out).artifacts if a.kind == layout.KIND_ZTUNNEL_METRICS)


def test_nothing_collected_raises(served, tmp_path):
    server = served(faults={"seed": 1, "rules": [{"path": "^/api/v1/namespaces/", "fault": 500, "fraction": 1.0},
                                                 {"path": "^/apis/.+/(authorizationpolicies|peerauthentications|gateways|"
                                                          "endpointslices|networkpolicies)$", "fault": 500,
                                                  "fraction": 1.0},
                                                 {"path": "^/api/v1/(pods|services|events|nodes|namespaces)$",
                                                  "query": "^$", "fault": 500, "fraction": 1.0},
                                                 {"path": "^/version$", "fault": 500, "fraction": 1.0}]})
    with pytest.raises((NothingCollected, ClusterAccessError)):
        collect(CollectSettings(out=tmp_path / "x.tar.zst", kubeconfig=str(server.kubeconfig_path), quiet=True),
                Options(request_timeout=2.0))


def test_pseudonymize_replaces_node_names_and_ips_everywhere(served, tmp_path):
    server = served()
    out = tmp_path / "pseudo.tar.zst"
    assert run_collect(server, out, Options(nodes=("ambient-worker2",)), pseudonymize=True) == EXIT_OK
    mapping = orjson.loads((tmp_path / "pseudo.pseudonyms.json").read_bytes())
    assert set(mapping["hostnames"]) == {"ambient-worker", "ambient-worker2", "ambient-worker3"}
    everything = b"".join(members(out).values()) + "".join(
        p for p in members(out)).encode()
    for real in mapping["hostnames"]:
        assert real.encode() not in everything
    pod_ips = [p["status"]["podIP"] for p in orjson.loads(server.cluster.read("cluster/pods.json"))["items"]]
    for ip in pod_ips:
        assert f'"{ip}"'.encode() not in everything
    m = manifest(out)
    assert m.scope.nodes == [mapping["hostnames"]["ambient-worker2"]]
    # The map lives beside the archive, never inside it.
    assert not any(name.endswith("pseudonyms.json") for name in members(out))


def test_for_github_writes_zip_parts_that_read_back(served, tmp_path):
    server = served()
    out = tmp_path / "gh.tar.zst"
    result = subprocess.run([sys.executable, "-m", "bundler", "collect", "-q", "-o", str(out), "--kubeconfig",
                             str(server.kubeconfig_path), "--for-github"], capture_output=True, text=True)
    assert result.returncode == EXIT_OK, result.stderr
    part = tmp_path / "gh.tar.zst.zip"
    assert part.exists() and "for GitHub" in result.stderr
    assert members(part) == members(out)


def test_finds_ztunnel_and_istio_cni_in_kube_system_as_on_gke(served, tmp_path):
    scenario = yaml.safe_load((REPO / "samples" / "bookinfo-healthy.yaml").read_text())
    scenario.update(name="gke", istioNamespaces={"ztunnel": "kube-system", "cni": "kube-system"})
    path = tmp_path / "gke.yaml"
    path.write_text(yaml.safe_dump(scenario))
    reference = tmp_path / "gke.tar.zst"
    assert subprocess.run([sys.executable, "-m", "bundler", "synth", str(path), "-o", str(reference)]).returncode == 0
    out = tmp_path / "collected.tar.zst"
    assert run_collect(served(path), out) == EXIT_OK
    original, again = members(reference), members(out)
    assert set(original) == set(again)
    dumps = [p for p in again if p.startswith("ztunnel/") and p.endswith("config_dump.json")]
    assert len(dumps) == 3
    assert orjson.loads(again["cluster/pods.json"]) == orjson.loads(original["cluster/pods.json"])
    # istio-cni-config (kube-system) and the mesh config (istio-system) are gathered into one list.
    configmaps = orjson.loads(again["cluster/configmaps.json"])["items"]
    assert {(c["metadata"]["namespace"], c["metadata"]["name"]) for c in configmaps} == {
        ("istio-system", "istio"), ("kube-system", "istio-cni-config")}
    for p in original:
        if p not in (layout.MANIFEST, "cluster/configmaps.json"):
            assert again[p] == original[p], p
    zt = manifest(out).artifact(dumps[0])
    assert zt.source["namespace"] == "kube-system"
