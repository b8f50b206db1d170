"""``bundle serve`` against the official Python client: discovery, get/list with selectors, errors as Status
objects, logs with every option, the pod proxy byte for byte, tables, watch, concurrency and the CLI."""

from __future__ import annotations

import base64
import importlib.util
import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from bundler.serve import app as serve_app
from bundler.serve.server import ServeError, serve, start_server

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
ZT_OOM = "ztunnel-kkb2m"  # the OOMKilled ztunnel of the incident sample: it has a previous log
ZT_OOM_DIR = "ztunnel/ambient-worker3/ztunnel-kkb2m"
ISTIOD = "istiod-40b6fe0ec8-zdc48"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)  # the sample's collection time


def api_client(server) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(server.kubeconfig_path))


@pytest.fixture(scope="module")
def core(served_incident):
    api = api_client(served_incident)
    yield client.CoreV1Api(api)
    api.close()


def raw_get(api: client.ApiClient, path: str, query=None, accept: str = "application/json"):
    """A GET through the client's own transport (auth and CA), with an exact path and query: the urllib3
    response, or ApiException for a status >= 400 (as the generated methods do)."""
    params = api.param_serialize("GET", path, query_params=query or [], header_params={"Accept": accept},
                                 auth_settings=["BearerToken"])
    response = api.call_api(*params, _request_timeout=(5, 30))
    response.read()
    if response.status >= 400:
        raise ApiException(http_resp=response, body=response.data.decode(), data=None)
    return response.response


def status_of(exc: ApiException) -> dict:
    body = json.loads(exc.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == exc.status
    return body


def log_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def line_time(line: bytes) -> datetime:
    return datetime.fromisoformat(line.split(b"\t", 1)[0].decode().replace("Z", "+00:00"))


# --- discovery and version ---------------------------------------------------------------------------------------


def test_version_is_the_bundles(core, incident_dir):
    version = client.VersionApi(core.api_client).get_code()
    assert version.git_version == json.loads((incident_dir / "cluster/version.json").read_bytes())["gitVersion"]


def test_discovery_lists_core_istio_and_gateway_api(core):
    groups = {g.name: g for g in client.ApisApi(core.api_client).get_api_versions().groups}
    assert {"security.istio.io", "gateway.networking.k8s.io", "discovery.k8s.io"} <= set(groups)
    assert groups["security.istio.io"].preferred_version.group_version == "security.istio.io/v1"
    resources = {r.name: r for r in core.get_api_resources().resources}
    assert {"pods", "nodes", "namespaces", "services", "pods/log", "pods/proxy", "pods/portforward"} <= set(resources)
    assert resources["pods"].verbs == ["get", "list"] and resources["pods"].namespaced
    assert resources["pods"].short_names == ["po"] and resources["pods"].singular_name == "pod"
    assert not resources["nodes"].namespaced
    assert resources["pods/portforward"].verbs == ["create", "get"]
    istio = client.CustomObjectsApi(core.api_client).get_api_resources("security.istio.io", "v1")
    assert "authorizationpolicies" in {r.name for r in istio.resources}


def test_aggregated_discovery_is_answered_with_legacy_json(core):
    accept = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
              "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json")
    response = raw_get(core.api_client, "/apis", accept=accept)
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.data)["kind"] == "APIGroupList"


def test_unknown_paths_are_404_status(core):
    for path in ("/apis/example.com/v1/widgets", "/api/v1/widgets", "/openapi/v2", "/api/v1/pods/x"):
        with pytest.raises(ApiException) as exc:
            raw_get(core.api_client, path)
        body = status_of(exc.value)
        assert exc.value.status == 404 and body["reason"] == "NotFound"
        assert body["message"] == "the server could not find the requested resource"


# --- list and get ------------------------------------------------------------------------------------------------


def test_list_pods_all_namespaces_and_per_namespace(core, incident_dir):
    expected = json.loads((incident_dir / "cluster/pods.json").read_bytes())["items"]
    pods = core.list_pod_for_all_namespaces()
    assert sorted(p.metadata.name for p in pods.items) == sorted(p["metadata"]["name"] for p in expected)
    assert all(p.metadata.resource_version for p in pods.items)
    system = core.list_namespaced_pod("istio-system")
    assert {p.metadata.namespace for p in system.items} == {"istio-system"}
    assert ZT_OOM in {p.metadata.name for p in system.items}
    assert core.list_namespaced_pod("no-such-namespace").items == []


def test_lists_set_kind_and_resource_version(core):
    document = json.loads(raw_get(core.api_client, "/api/v1/namespaces/bookinfo/services").data)
    assert document["kind"] == "ServiceList" and document["apiVersion"] == "v1"
    assert document["metadata"]["resourceVersion"]
    assert all(i["kind"] == "Service" and i["apiVersion"] == "v1" for i in document["items"])
    gateways = json.loads(raw_get(core.api_client, "/apis/gateway.networking.k8s.io/v1/gateways").data)
    assert gateways["kind"] == "GatewayList" and gateways["apiVersion"] == "gateway.networking.k8s.io/v1"


@pytest.mark.parametrize("selector, predicate", [
    ("app=ztunnel", lambda l: l.get("app") == "ztunnel"),
    ("app==ztunnel", lambda l: l.get("app") == "ztunnel"),
    ("app!=ztunnel", lambda l: l.get("app") != "ztunnel"),
    ("app in (ztunnel, istiod)", lambda l: l.get("app") in ("ztunnel", "istiod")),
    ("app notin (ztunnel)", lambda l: l.get("app") != "ztunnel"),
    ("version", lambda l: "version" in l),
    ("!version", lambda l: "version" not in l),
    ("app=reviews,version in (v1,v3)", lambda l: l.get("app") == "reviews" and l.get("version") in ("v1", "v3")),
])
def test_label_selectors(core, selector, predicate):
    everything = core.list_pod_for_all_namespaces().items
    expected = sorted(p.metadata.name for p in everything if predicate(p.metadata.labels or {}))
    got = sorted(p.metadata.name for p in core.list_pod_for_all_namespaces(label_selector=selector).items)
    assert got == expected and got


def test_field_selector_on_node_name_picks_exactly_that_nodes_pods(core, incident_dir):
    expected = json.loads((incident_dir / "cluster/pods.json").read_bytes())["items"]
    on_node = sorted(p["metadata"]["name"] for p in expected if p["spec"].get("nodeName") == "ambient-worker3")
    got = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=ambient-worker3").items
    assert sorted(p.metadata.name for p in got) == on_node and ZT_OOM in on_node
    others = core.list_pod_for_all_namespaces(field_selector="spec.nodeName!=ambient-worker3").items
    assert len(others) + len(on_node) == len(expected)
    one = core.list_pod_for_all_namespaces(field_selector=f"metadata.name={ZT_OOM},metadata.namespace=istio-system")
    assert [p.metadata.name for p in one.items] == [ZT_OOM]
    combined = core.list_namespaced_pod("istio-system", label_selector="app=ztunnel",
                                        field_selector="spec.nodeName==ambient-worker3")
    assert [p.metadata.name for p in combined.items] == [ZT_OOM]


def test_unsupported_field_and_bad_label_selector_are_400(core):
    with pytest.raises(ApiException) as exc:
        core.list_pod_for_all_namespaces(field_selector="spec.containers=x")
    body = status_of(exc.value)
    assert exc.value.status == 400 and body["reason"] == "BadRequest"
    assert body["message"] == "field label not supported: spec.containers"
    with pytest.raises(ApiException) as exc:
        core.list_pod_for_all_namespaces(label_selector="app in ztunnel")
    assert exc.value.status == 400


def test_get_a_pod_and_a_node_and_a_custom_object(core, incident_dir):
    pod = core.read_namespaced_pod(ZT_OOM, "istio-system")
    assert pod.spec.node_name == "ambient-worker3"
    assert pod.status.container_statuses[0].last_state.terminated.reason == "OOMKilled"
    # Raw: the synthetic nodes lack nodeInfo fields (bootID, machineID...) that kubernetes 37's models require.
    node = orjson.loads(core.read_node("ambient-worker", _preload_content=False).data)
    assert node["metadata"]["name"] == "ambient-worker" and node["kind"] == "Node"
    policies = json.loads((incident_dir / "cluster/istio/authorizationpolicies.security.istio.io.json").read_bytes())
    first = policies["items"][0]["metadata"]
    got = client.CustomObjectsApi(core.api_client).get_namespaced_custom_object(
        "security.istio.io", "v1", first["namespace"], "authorizationpolicies", first["name"])
    assert got["metadata"]["name"] == first["name"] and got["kind"] == "AuthorizationPolicy"


def test_missing_pod_is_404_like_the_api_server(core):
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod("no-such-pod", "istio-system")
    body = status_of(exc.value)
    assert exc.value.status == 404 and body["reason"] == "NotFound"
    assert body["message"] == 'pods "no-such-pod" not found'
    assert body["details"] == {"name": "no-such-pod", "kind": "pods"}
    with pytest.raises(ApiException) as exc:
        client.CustomObjectsApi(core.api_client).get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", "bookinfo", "gateways", "nope")
    assert status_of(exc.value)["message"] == 'gateways.gateway.networking.k8s.io "nope" not found'


# --- authentication and read-only -------------------------------------------------------------------------------


def test_wrong_or_missing_token_is_401(served_incident, tmp_path):
    wrong = served_incident.kubeconfig()
    wrong["users"][0]["user"]["token"] = "not-the-token"
    (tmp_path / "kubeconfig").write_text(json.dumps(wrong))
    with config.new_client_from_config(config_file=str(tmp_path / "kubeconfig")) as api, \
            pytest.raises(ApiException) as exc:
        client.CoreV1Api(api).list_namespace()
    body = status_of(exc.value)
    assert exc.value.status == 401 and body["reason"] == "Unauthorized"
    ca = base64.b64decode(served_incident.kubeconfig()["clusters"][0]["cluster"]["certificate-authority-data"])
    pool = urllib3.PoolManager(ca_cert_data=ca.decode())
    response = pool.request("GET", f"{served_incident.url}/api/v1/pods", retries=False)
    assert response.status == 401 and json.loads(response.data)["reason"] == "Unauthorized"


def test_tls_is_verified_against_the_generated_ca(served_incident):
    pool = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=None, ca_cert_data=None)
    with pytest.raises(urllib3.exceptions.SSLError):
        pool.request("GET", f"{served_incident.url}/version", retries=False)
    other = start_server(SAMPLES / "bookinfo-healthy.tar.zst")
    try:  # another run's CA does not vouch for this server
        wrong = urllib3.PoolManager(ca_cert_data=other.ca_pem.decode())
        with pytest.raises(urllib3.exceptions.SSLError):
            wrong.request("GET", f"{served_incident.url}/version", retries=False)
    finally:
        other.stop()


def test_writes_are_405_read_only(core):
    with pytest.raises(ApiException) as exc:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="x")))
    body = status_of(exc.value)
    assert exc.value.status == 405 and body["reason"] == "MethodNotAllowed"
    assert "read-only bundle" in body["message"]
    with pytest.raises(ApiException) as exc:
        core.delete_namespaced_pod(ZT_OOM, "istio-system")
    assert exc.value.status == 405


# --- logs ----------------------------------------------------------------------------------------------------------


def test_log_whole_and_tail_lines(core, incident_dir):
    path = incident_dir / ZT_OOM_DIR / "logs/istio-proxy.log"
    resp = core.read_namespaced_pod_log(ZT_OOM, "istio-system", _preload_content=False)
    assert resp.data == path.read_bytes()
    tail = core.read_namespaced_pod_log(ZT_OOM, "istio-system", tail_lines=5)
    assert tail.encode() == b"".join(log_lines(path)[-5:])
    assert core.read_namespaced_pod_log(ZT_OOM, "istio-system", tail_lines=0) == ""


def test_log_since_seconds_counts_from_the_collection_time(core, incident_dir):
    lines = log_lines(incident_dir / ZT_OOM_DIR / "logs/istio-proxy.log")
    expected = [line for line in lines if line_time(line) >= NOW - timedelta(seconds=600)]
    assert 0 < len(expected) < len(lines)
    got = core.read_namespaced_pod_log(ZT_OOM, "istio-system", since_seconds=600)
    assert got.encode() == b"".join(expected)


def test_log_since_time_through_call_api(core, incident_dir):
    lines = log_lines(incident_dir / ZT_OOM_DIR / "logs/istio-proxy.log")
    since = NOW - timedelta(minutes=15)
    expected = [line for line in lines if line_time(line) >= since]
    query = [("sinceTime", since.strftime("%Y-%m-%dT%H:%M:%SZ"))]
    response = raw_get(core.api_client, f"/api/v1/namespaces/istio-system/pods/{ZT_OOM}/log", query,
                       accept="text/plain")
    assert response.data == b"".join(expected) and expected
    with pytest.raises(ApiException) as exc:
        raw_get(core.api_client, f"/api/v1/namespaces/istio-system/pods/{ZT_OOM}/log",
                [("sinceTime", "2026-11-25T11:00:00Z"), ("sinceSeconds", "5")])
    assert exc.value.status == 400


def test_log_timestamps_prefix_each_lines_own_time(core, incident_dir):
    lines = log_lines(incident_dir / ZT_OOM_DIR / "logs/istio-proxy.log")[-3:]
    got = core.read_namespaced_pod_log(ZT_OOM, "istio-system", tail_lines=3, timestamps=True).encode()
    for out, line in zip(got.splitlines(keepends=True), lines, strict=True):
        stamp, rest = out.split(b" ", 1)
        assert rest == line
        assert datetime.fromisoformat(stamp.decode().replace("Z", "+00:00")) == line_time(line)
        assert stamp.endswith(b"Z") and not stamp.endswith(b"0Z")  # RFC3339Nano: no trailing zeros


def test_log_previous_limit_bytes_and_errors(core, incident_dir):
    previous = (incident_dir / ZT_OOM_DIR / "logs/istio-proxy.previous.log").read_bytes()
    got = core.read_namespaced_pod_log(ZT_OOM, "istio-system", previous=True, _preload_content=False)
    assert got.data == previous
    cut = core.read_namespaced_pod_log(ZT_OOM, "istio-system", previous=True, limit_bytes=100, _preload_content=False)
    assert cut.data == previous[:100]
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod_log("ztunnel-g8gvh", "istio-system", previous=True)
    body = status_of(exc.value)
    assert exc.value.status == 400
    assert body["message"] == 'previous terminated container "istio-proxy" in pod "ztunnel-g8gvh" not found'
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod_log(ZT_OOM, "istio-system", container="nope")
    assert exc.value.status == 400
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod_log("nope", "istio-system")
    assert exc.value.status == 404 and status_of(exc.value)["message"] == 'pods "nope" not found'


def test_log_of_istiod_follow_sends_what_exists(core, incident_dir):
    expected = (incident_dir / f"istiod/{ISTIOD}/logs/discovery.log").read_bytes()
    got = core.read_namespaced_pod_log(ISTIOD, "istio-system", container="discovery", follow=True,
                                       _preload_content=False)
    assert got.data == expected


def test_log_index_and_formats():
    data = (b"2026-11-25T11:00:00.5Z\tinfo\ta\n"
            b"  continuation without a time\n"
            b'{"level":"info","time":"2026-11-25T11:00:01.000000123Z","message":"x"}\n'
            b"2026-11-25T13:00:02+02:00\tinfo\tzone\n")
    index = serve_app.LogIndex.build(data)
    stamps = [serve_app.rfc3339nano(t) for t in index.times]
    assert stamps == [b"2026-11-25T11:00:00.5Z", b"2026-11-25T11:00:00.5Z", b"2026-11-25T11:00:01.000000123Z",
                      b"2026-11-25T11:00:02Z"]
    assert serve_app._tail_start(data, 1) == data.index(b"2026-11-25T13")
    assert serve_app._tail_start(data, 10) == 0


# --- pod proxy ------------------------------------------------------------------------------------------------------


def test_proxy_to_ztunnel_metrics_is_byte_identical(core, incident_dir):
    expected = (incident_dir / ZT_OOM_DIR / "metrics.txt").read_bytes()
    resp = core.connect_get_namespaced_pod_proxy_with_path(f"{ZT_OOM}:15020", "istio-system", "stats/prometheus",
                                                           _preload_content=False)
    assert resp.data == expected
    assert resp.headers["Content-Type"].startswith("text/plain")
    # HEAD: the same status and headers, no body.
    head = core.connect_head_namespaced_pod_proxy_with_path(f"{ZT_OOM}:15020", "istio-system",
                                                             "stats/prometheus", _preload_content=False)
    assert head.status == 200 and head.data == b""


def test_proxy_to_ztunnel_admin_port_is_connection_refused(core):
    with pytest.raises(ApiException) as exc:
        core.connect_get_namespaced_pod_proxy_with_path(f"{ZT_OOM}:15000", "istio-system", "config_dump")
    body = status_of(exc.value)
    assert exc.value.status == 503 and body["reason"] == "ServiceUnavailable"
    assert body["message"] == "error trying to reach service: dial tcp 10.128.8.2:15000: connect: connection refused"


def test_proxy_to_istiod_debug_endpoints(core, incident_dir):
    for path, file in (("debug/syncz", "syncz.json"), ("version", "version.txt")):
        resp = core.connect_get_namespaced_pod_proxy_with_path(f"{ISTIOD}:15014", "istio-system", path,
                                                               _preload_content=False)
        assert resp.data == (incident_dir / "istiod" / ISTIOD / file).read_bytes()
    # A query string is passed on: istiod's view of one ztunnel, from the replica that holds its connection.
    resp = raw_get(core.api_client, f"/api/v1/namespaces/istio-system/pods/{ISTIOD}:15014/proxy/debug/config_dump",
                   [("proxyID", "ztunnel-g8gvh.istio-system")])
    assert resp.data == (incident_dir / "istiod/proxies/ztunnel-g8gvh/config_dump.json").read_bytes()
    with pytest.raises(ApiException) as exc:
        core.connect_get_namespaced_pod_proxy_with_path("nope:15014", "istio-system", "version")
    assert exc.value.status == 404


def test_proxy_default_port_is_the_first_container_port(core, incident_dir):
    expected = (incident_dir / ZT_OOM_DIR / "metrics.txt").read_bytes()
    resp = core.connect_get_namespaced_pod_proxy_with_path(ZT_OOM, "istio-system", "stats/prometheus",
                                                           _preload_content=False)
    assert resp.data == expected


# --- tables and watch -------------------------------------------------------------------------------------------

TABLE = ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,"
         "application/json")  # what kubectl get asks for


def test_pods_as_table(core):
    table = json.loads(raw_get(core.api_client, "/api/v1/pods", accept=TABLE).data)
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    columns = [(c["name"], c["priority"]) for c in table["columnDefinitions"]]
    assert columns[:7] == [("Name", 0), ("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0), ("IP", 1),
                           ("Node", 1)]
    rows = {r["cells"][0]: r for r in table["rows"]}
    oom = rows[ZT_OOM]
    assert oom["cells"][1:5] == ["1/1", "Running", "4 (20m ago)", "3d1h"]
    assert oom["cells"][5:7] == ["10.128.8.2", "ambient-worker3"]
    assert oom["object"]["kind"] == "PartialObjectMetadata"
    assert oom["object"]["metadata"]["namespace"] == "istio-system"
    full = json.loads(raw_get(core.api_client, f"/api/v1/namespaces/istio-system/pods/{ZT_OOM}",
                              [("includeObject", "Object")], accept=TABLE).data)
    assert len(full["rows"]) == 1 and full["rows"][0]["object"]["kind"] == "Pod"


@pytest.mark.parametrize("path, columns", [
    ("/api/v1/nodes", ["Name", "Status", "Roles", "Age", "Version"]),
    ("/api/v1/namespaces/bookinfo/services", ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"]),
    ("/api/v1/namespaces", ["Name", "Status", "Age"]),
    ("/apis/security.istio.io/v1/authorizationpolicies", ["Name", "Age"]),
])
def test_tables_of_other_kinds(core, path, columns):
    table = json.loads(raw_get(core.api_client, path, accept=TABLE).data)
    assert [c["name"] for c in table["columnDefinitions"] if c["priority"] == 0] == columns
    assert table["rows"] and all(len(r["cells"]) == len(table["columnDefinitions"]) for r in table["rows"])


def test_node_and_service_cells(core):
    nodes = json.loads(raw_get(core.api_client, "/api/v1/nodes", accept=TABLE).data)
    assert nodes["rows"][0]["cells"][:5] == ["ambient-worker", "Ready", "<none>", "30d", "v1.30.8"]
    services = json.loads(raw_get(core.api_client, "/api/v1/namespaces/bookinfo/services", accept=TABLE).data)
    details = next(r["cells"] for r in services["rows"] if r["cells"][0] == "details")
    assert details[:5] == ["details", "ClusterIP", "10.96.0.11", "<none>", "9080/TCP"]


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (59, "59s"), (119, "119s"), (120, "2m"), (125, "2m5s"), (600, "10m"), (45 * 60, "45m"),
    (3 * 3600, "3h"), (3 * 3600 + 60 * 20, "3h20m"), (9 * 3600, "9h"), (73 * 3600, "3d1h"), (30 * 86400, "30d"),
    (800 * 86400, "2y70d"), (-5, "<invalid>"),
])
def test_ages_read_like_kubectl(seconds, text):
    assert serve_app.human_duration(seconds) == text


def test_watch_sends_current_items_then_ends(core):
    response = raw_get(core.api_client, "/api/v1/namespaces/istio-system/pods",
                       [("watch", "true"), ("labelSelector", "app=ztunnel")])
    events = [json.loads(line) for line in response.data.splitlines()]
    assert [e["type"] for e in events] == ["ADDED"] * 3
    assert {e["object"]["metadata"]["name"] for e in events} >= {ZT_OOM}
    everything = raw_get(core.api_client, "/api/v1/namespaces/istio-system/pods", [("watch", "true")])
    newest = max(int(json.loads(line)["object"]["metadata"]["resourceVersion"])
                 for line in everything.data.splitlines())
    later = raw_get(core.api_client, "/api/v1/namespaces/istio-system/pods",
                    [("watch", "true"), ("resourceVersion", str(newest))])
    assert later.data == b""


# --- other sources, concurrency -----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["dir", "scenario"])
def test_serves_the_extracted_folder_and_the_scenario(source, incident_dir, served_incident):
    path = incident_dir if source == "dir" else SAMPLES / "bookinfo-incident.yaml"
    reference = client.CoreV1Api(api_client(served_incident))
    with serve(path) as server:
        assert server.name == "ztunnel-bundle-bookinfo-incident"
        api = api_client(server)
        core = client.CoreV1Api(api)
        pods = sorted(p.metadata.name for p in core.list_pod_for_all_namespaces().items)
        assert pods == sorted(p.metadata.name for p in reference.list_pod_for_all_namespaces().items)
        ztunnels = [p for p in core.list_namespaced_pod("istio-system", label_selector="app=ztunnel").items]
        oom = next(p.metadata.name for p in ztunnels if p.spec.node_name == "ambient-worker3")
        metrics = core.connect_get_namespaced_pod_proxy_with_path(f"{oom}:15020", "istio-system",
                                                                  "stats/prometheus", _preload_content=False).data
        assert metrics.startswith(b"# HELP") or metrics.startswith(b"# TYPE")
        assert core.read_namespaced_pod_log(oom, "istio-system", previous=True, tail_lines=2).count("\n") == 2
        if source == "dir":
            assert metrics == (incident_dir / ZT_OOM_DIR / "metrics.txt").read_bytes()
        api.close()
    reference.api_client.close()


def test_64_concurrent_clients_get_correct_answers(served_incident, incident_dir):
    metrics = (incident_dir / ZT_OOM_DIR / "metrics.txt").read_bytes()
    log = (incident_dir / ZT_OOM_DIR / "logs/istio-proxy.log").read_bytes()
    pods = len(json.loads((incident_dir / "cluster/pods.json").read_bytes())["items"])

    def worker(i: int) -> int:
        with api_client(served_incident) as api:
            core = client.CoreV1Api(api)
            for j in range(4):
                match (i + j) % 4:
                    case 0:
                        assert len(orjson.loads(core.list_pod_for_all_namespaces(
                            _preload_content=False).data)["items"]) == pods
                    case 1:
                        assert core.read_namespaced_pod(ZT_OOM, "istio-system").metadata.name == ZT_OOM
                    case 2:
                        assert core.read_namespaced_pod_log(ZT_OOM, "istio-system", _preload_content=False).data == log
                    case 3:
                        assert core.connect_get_namespaced_pod_proxy_with_path(
                            f"{ZT_OOM}:15020", "istio-system", "stats/prometheus",
                            _preload_content=False).data == metrics
        return i

    with ThreadPoolExecutor(64) as pool:
        assert sorted(pool.map(worker, range(64))) == list(range(64))


def test_fault_hooks_deleted_pods_and_slow_logs(incident_dir, monkeypatch):
    pytest.importorskip("bundler.serve.faults")
    from bundler.serve import app as served_app

    paused: list[float] = []

    async def record(delay: float) -> None:  # observe the pacing instead of waiting for it
        paused.append(delay)

    monkeypatch.setattr(served_app, "_pace_sleep", record)
    faults = {"deletedPods": ["istio-system/ztunnel-g8gvh"],
              "slowLogs": {"bytesPerSecond": 10_000_000, "pods": {f"istio-system/{ZT_OOM}": 100_000}}}
    with serve(SAMPLES / "bookinfo-incident.tar.zst", faults=faults) as server, api_client(server) as api:
        core = client.CoreV1Api(api)
        assert core.read_namespaced_pod("ztunnel-g8gvh", "istio-system").metadata.name == "ztunnel-g8gvh"
        core.list_namespaced_pod("istio-system", _preload_content=False)  # now it has been seen, and is gone
        for call in (lambda: core.read_namespaced_pod("ztunnel-g8gvh", "istio-system"),
                     lambda: core.read_namespaced_pod_log("ztunnel-g8gvh", "istio-system"),
                     lambda: core.connect_get_namespaced_pod_proxy_with_path(
                         "ztunnel-g8gvh:15020", "istio-system", "stats/prometheus")):
            with pytest.raises(ApiException) as exc:
                call()
            assert exc.value.status == 404 and status_of(exc.value)["message"] == 'pods "ztunnel-g8gvh" not found'
        log = (incident_dir / ZT_OOM_DIR / "logs/istio-proxy.log").read_bytes()
        assert core.read_namespaced_pod_log(ZT_OOM, "istio-system", _preload_content=False).data == log
        # Paced at the pod's own rate (100 kB/s, not the global 10 MB/s): the last chunk is due len/rate after
        # the first, and it came in chunks of a tenth of the rate, each after a pause.
        assert len(paused) >= max(1, len(log) // 10_000 - 1)
        assert max(paused) >= 0.9 * len(log) / 100_000


# --- the server's helpers and the CLI -----------------------------------------------------------------------------


def test_port_in_use_is_a_serve_error(served_incident):
    with pytest.raises(ServeError, match="address already in use"):
        start_server(SAMPLES / "bookinfo-healthy.tar.zst", port=served_incident.port)


def test_kubeconfig_names_the_bundle_and_holds_the_ca(served_incident):
    cfg = served_incident.kubeconfig()
    assert cfg["current-context"] == "ztunnel-bundle-bookinfo-incident"
    assert cfg["clusters"][0]["cluster"]["server"] == served_incident.url
    assert base64.b64decode(cfg["clusters"][0]["cluster"]["certificate-authority-data"]) == served_incident.ca_pem
    assert cfg["users"][0]["user"]["token"] == served_incident.token
    assert oct(served_incident.kubeconfig_path.stat().st_mode & 0o777) == "0o600"


def _bundle_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bundler", "serve", *args]


def test_cli_serves_until_sigint(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    process = subprocess.Popen(_bundle_command(str(SAMPLES / "bookinfo-incident.tar.zst"), "--port", "0",
                                               "--kubeconfig-out", str(kubeconfig)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        seen = []
        for line in process.stdout:  # synchronised by the command's own output
            seen.append(line)
            if line.startswith("kubeconfig:"):
                break
        text = "".join(seen)
        assert "port: " in text and f"kubeconfig: {kubeconfig}" in text
        port = int(next(line for line in seen if line.startswith("port: ")).split()[1])
        assert port > 0
        for _ in range(3):
            seen.append(process.stdout.readline())
        assert f"export KUBECONFIG={kubeconfig}" in "".join(seen) and "kubectl get pods -A" in "".join(seen)
        with config.new_client_from_config(config_file=str(kubeconfig)) as api:
            assert len(client.CoreV1Api(api).list_namespaced_pod("istio-system").items) == 8
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        err = process.stderr.read()
        assert "Traceback" not in err and err.strip() == "stopped"
        assert kubeconfig.exists()  # asked for, so kept
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def test_cli_sigterm_is_a_clean_stop(tmp_path):
    process = subprocess.Popen(_bundle_command(str(SAMPLES / "bookinfo-incident.yaml")), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        kubeconfig = None
        for line in process.stdout:
            if line.startswith("kubeconfig:"):
                kubeconfig = Path(line.split(":", 1)[1].strip())
                break
        assert kubeconfig is not None and kubeconfig.exists()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert not kubeconfig.exists() and not kubeconfig.parent.exists()  # the temporary kubeconfig is removed
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def test_cli_rejects_a_non_bundle_with_one_line(tmp_path):
    bogus = tmp_path / "bogus.tar.zst"
    bogus.write_text("not an archive")
    result = subprocess.run(_bundle_command(str(bogus), "--port", "0"), capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_load_benchmark_smoke(capsys, tmp_path):
    spec = importlib.util.spec_from_file_location("serve_load", REPO / "bench" / "serve_load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--clients", "1", "3", "--duration", "0.5", "--pods", "40", "--nodes", "2"])
    assert [r["clients"] for r in rows] == [1, 3]
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in rows)
    assert "ratios against 1 client" in capsys.readouterr().out
