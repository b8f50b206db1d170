"""How `bundle serve` holds up under concurrent clients: N threads, each with its own official-client ApiClient,
send a mix of list / get / log / proxy requests for D seconds to a served synthetic mesh. Prints requests/s and
p50/p99 latency per client count, with ratios against the 1-client baseline of the same invocation.

    python bench/serve_load.py                                   # 1 and 64 clients, 10 s each, ~1000 pods
    python bench/serve_load.py --clients 1 16 64 --duration 5 --pods 2000 --nodes 20

The server runs in its own process (`bundle serve SCENARIO.yaml --port 0`), as a user would run it, so the
clients' threads do not share its interpreter. Both share the machine's cores: on a small machine the numbers
measure the pair. Every answer is checked (status, and the exact size of the proxied metrics).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def scenario(pods: int, nodes: int) -> str:
    namespaces = max(1, pods // 200)
    replicas = max(1, pods // (namespaces * 10))
    return (f"name: serve-load\nseed: 11\nnodes: {nodes}\nwindow: 1h\n"
            f"generate: {{namespaces: {namespaces}, deploymentsPerNamespace: 10, replicas: {replicas}, "
            "connectionsPerDeployment: 5}\n")


def start(source: Path, kubeconfig: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "bundler", "serve", str(source), "--port", "0",
                                "--kubeconfig-out", str(kubeconfig)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert process.stdout is not None
    for line in process.stdout:  # the command says where its kubeconfig is once it listens
        if line.startswith("kubeconfig:"):
            return process
    process.wait()
    raise SystemExit(f"bundle serve did not start: {process.stderr.read() if process.stderr else ''}")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def new_api(kubeconfig: Path):
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = 2
    cfg.retries = False
    return client.ApiClient(cfg)


class Targets:
    """What the clients ask for, found once before the timed runs (and fetched once, so that the server has
    rendered every scenario artifact the runs touch)."""

    def __init__(self, kubeconfig: Path) -> None:
        import orjson
        from kubernetes import client

        with new_api(kubeconfig) as api:
            core = client.CoreV1Api(api)
            pods = orjson.loads(core.list_pod_for_all_namespaces(_preload_content=False).data)["items"]
            self.pod_count = len(pods)
            self.ztunnels = sorted(p["metadata"]["name"] for p in pods if p["metadata"].get("labels", {}).get("app")
                                   == "ztunnel")
            apps = [p for p in pods if p["metadata"]["namespace"] != "istio-system"]
            self.apps = [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in apps[:50]]
            self.app_label = [(p["metadata"]["namespace"], p["metadata"]["labels"]["app"]) for p in apps[:50]
                              if "app" in p["metadata"].get("labels", {})]
            self.metrics_size: dict[str, int] = {}
            for zt in self.ztunnels:
                body = core.connect_get_namespaced_pod_proxy_with_path(f"{zt}:15020", "istio-system",
                                                                       "stats/prometheus", _preload_content=False)
                self.metrics_size[zt] = len(body.data)
                core.read_namespaced_pod_log(zt, "istio-system", tail_lines=1, _preload_content=False)


OPERATIONS = ("list-all", "list-selected", "get", "log", "proxy")


def client_loop(kubeconfig: Path, targets: Targets, index: int, deadline_box: list[float],
                start_barrier: threading.Barrier, out: list[tuple[str, float, bool]]) -> None:
    from kubernetes import client

    with new_api(kubeconfig) as api:
        core = client.CoreV1Api(api)
        start_barrier.wait()  # every client is built; the clock starts now
        deadline = deadline_box[0]
        n = index
        while time.perf_counter() < deadline:
            op = OPERATIONS[n % len(OPERATIONS)]
            zt = targets.ztunnels[n % len(targets.ztunnels)]
            ns, pod = targets.apps[n % len(targets.apps)] if targets.apps else ("istio-system", zt)
            began = time.perf_counter()
            ok = True
            try:
                if op == "list-all":
                    resp = core.list_pod_for_all_namespaces(_preload_content=False)
                    ok = resp.status == 200 and len(resp.data) > 0
                elif op == "list-selected":
                    sel_ns, app = targets.app_label[n % len(targets.app_label)] if targets.app_label else (ns, "x")
                    resp = core.list_namespaced_pod(sel_ns, label_selector=f"app={app}", _preload_content=False)
                    ok = resp.status == 200 and b'"items":[' in resp.data
                elif op == "get":
                    resp = core.read_namespaced_pod(pod, ns, _preload_content=False)
                    ok = resp.status == 200 and pod.encode() in resp.data
                elif op == "log":
                    resp = core.read_namespaced_pod_log(zt, "istio-system", tail_lines=100, timestamps=True,
                                                        _preload_content=False)
                    ok = resp.status == 200
                else:
                    resp = core.connect_get_namespaced_pod_proxy_with_path(
                        f"{zt}:15020", "istio-system", "stats/prometheus", _preload_content=False)
                    ok = resp.status == 200 and len(resp.data) == targets.metrics_size[zt]
            except Exception:  # noqa: BLE001 - counted as an error
                ok = False
            out.append((op, time.perf_counter() - began, ok))
            n += 1


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run(kubeconfig: Path, targets: Targets, clients: int, duration: float, server_pid: int) -> dict[str, float]:
    cpu_before = cpu_seconds(server_pid)
    results: list[list[tuple[str, float, bool]]] = [[] for _ in range(clients)]
    deadline_box: list[float] = []
    barrier = threading.Barrier(clients + 1, action=lambda: deadline_box.append(time.perf_counter() + duration))
    threads = [threading.Thread(target=client_loop, args=(kubeconfig, targets, i, deadline_box, barrier, results[i]),
                                daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    began = time.perf_counter()
    for t in threads:
        t.join(duration + 120)
    wall = time.perf_counter() - began
    cpu_after = cpu_seconds(server_pid)
    samples = [s for r in results for s in r]
    latencies = [s[1] for s in samples]
    row: dict[str, float] = {
        "clients": clients, "requests": len(samples), "errors": sum(1 for s in samples if not s[2]),
        "rps": len(samples) / wall if wall else 0.0, "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000, "wall_s": wall,
        # The server's share of one core, and its CPU per request.
        "server_cpu": (cpu_after - cpu_before) / wall if cpu_before is not None and cpu_after is not None else -1.0,
    }
    for op in OPERATIONS:
        times = [s[1] for s in samples if s[0] == op]
        row[f"{op}_p50_ms"] = percentile(times, 0.50) * 1000
        row[f"{op}_p99_ms"] = percentile(times, 0.99) * 1000
    return row


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[64],
                        help="client counts to run (1, the baseline, is always run first)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per client count")
    parser.add_argument("--pods", type=int, default=1000, help="approximate pods of the synthetic mesh")
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    counts = sorted({1, *args.clients})
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        source = Path(tmp) / "serve-load.yaml"
        source.write_text(scenario(args.pods, args.nodes))
        kubeconfig = Path(tmp) / "kubeconfig"
        process = start(source, kubeconfig)
        try:
            targets = Targets(kubeconfig)
            rows = [run(kubeconfig, targets, c, args.duration, process.pid) for c in counts]
        finally:
            stop(process)
    if args.json:
        print(json.dumps(rows))
        return rows
    base = rows[0]
    print(f"bundle serve, {targets.pod_count} pods on {args.nodes} nodes, {args.duration:g} s per run, mixed "
          f"{'/'.join(OPERATIONS)}; ratios against 1 client")
    print(f"{'clients':>8} {'requests':>9} {'errors':>7} {'req/s':>9} {'x':>6} {'p50 ms':>8} {'x':>6} "
          f"{'p99 ms':>8} {'x':>6} {'server CPU':>11}")
    for r in rows:
        cpu = f"{r['server_cpu'] * 100:.0f}%" if r["server_cpu"] >= 0 else "?"
        print(f"{r['clients']:>8} {r['requests']:>9} {r['errors']:>7} {r['rps']:>9.1f} "
              f"{r['rps'] / base['rps'] if base['rps'] else 0:>6.2f} {r['p50_ms']:>8.1f} "
              f"{r['p50_ms'] / base['p50_ms'] if base['p50_ms'] else 0:>6.2f} {r['p99_ms']:>8.1f} "
              f"{r['p99_ms'] / base['p99_ms'] if base['p99_ms'] else 0:>6.2f} {cpu:>11}")
    print("p50 / p99 ms per operation:")
    for r in rows:
        parts = [f"{op} {r[op + '_p50_ms']:.1f}/{r[op + '_p99_ms']:.1f}" for op in OPERATIONS]
        print(f"{r['clients']:>8}  " + ", ".join(parts))
    return rows


if __name__ == "__main__":
    main()
