"""64 concurrent clients against one served bundle, REST and port-forward mixed: every answer correct."""

from __future__ import annotations

import http.client
import threading

from kubernetes import client, config
from kubernetes.stream import portforward

from bundler import layout

CLIENTS = 64
ROUNDS = 3


def _forward_get(kubeconfig: str, namespace: str, pod: str, port: int, path: str) -> bytes:
    api = config.new_client_from_config(config_file=kubeconfig)  # one client per port-forward
    try:
        pf = portforward(client.CoreV1Api(api).connect_get_namespaced_pod_portforward, pod, namespace,
                         ports=str(port))
        sock = pf.socket(port)
        sock.setblocking(True)
        sock.settimeout(30)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 200
        body = response.read()
        sock.close()
        return body
    finally:
        api.close()


def test_64_clients_rest_and_port_forward_all_correct(served_incident, incident_dir):
    kubeconfig = str(served_incident.kubeconfig_path)
    shared = config.new_client_from_config(config_file=kubeconfig)
    shared.configuration.connection_pool_maxsize = CLIENTS
    core = client.CoreV1Api(shared)
    dumps = sorted(incident_dir.glob("ztunnel/*/*/config_dump.json"))
    expected_pods = sorted(p.metadata.name for p in core.list_pod_for_all_namespaces().items)
    errors: list[str] = []
    start = threading.Barrier(CLIENTS)

    def work(n: int) -> None:
        try:
            start.wait(timeout=60)
            for round_ in range(ROUNDS):
                choice = (n + round_) % 4
                dump = dumps[(n + round_) % len(dumps)]
                node, pod = dump.parent.parent.name, dump.parent.name
                if choice == 0:
                    body = _forward_get(kubeconfig, "istio-system", pod, 15000, "/config_dump")
                    assert body == dump.read_bytes(), f"config_dump of {pod}"
                elif choice == 1:
                    names = sorted(p.metadata.name for p in core.list_pod_for_all_namespaces().items)
                    assert names == expected_pods
                elif choice == 2:
                    response = core.connect_get_namespaced_pod_proxy_with_path(
                        f"{pod}:15020", "istio-system", "stats/prometheus", _preload_content=False)
                    assert response.data == (incident_dir / layout.ztunnel_file(node, pod, "metrics.txt")).read_bytes()
                else:
                    log = core.read_namespaced_pod_log(pod, "istio-system", container="istio-proxy", tail_lines=5)
                    lines = (incident_dir / layout.ztunnel_log(node, pod)).read_text().splitlines(keepends=True)
                    assert log == "".join(lines[-5:])
        except Exception as exc:  # collected and reported below with the client's number
            errors.append(f"client {n}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    shared.close()
    assert not any(t.is_alive() for t in threads)
    assert errors == []
