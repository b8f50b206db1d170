"""How `bundle collect` and `bundle analyze` scale with the mesh: for each size, a synthetic mesh (`bundle synth`)
served by `bundle serve` in its own process with injected latency, collected through the official client.

    python bench/scale.py                                   # (10 nodes, 1k pods), (100, 10k), (1000, 20k)
    python bench/scale.py --sizes 10x1000 100x10000 --latency-ms 20
    python bench/scale.py --sizes 50x5000 --skip-analyze --skip-serial --json
    python bench/scale.py --smoke                           # 2 nodes, 50 pods, 1 ms: does it still run?

For each size it prints:

- collect: wall time with the default concurrency (or --workers) next to the ideal bound for that concurrency,
  requests / concurrency x latency + bytes / bandwidth (requests and bytes from the collected manifest, plus the
  preflight and discovery requests; bandwidth: --bandwidth, which the served API then enforces, else the loopback
  throughput of the same `bundle serve` measured for one large transfer in the same run), the same collection one
  request at a time (--concurrency 1), collect/ideal and serial/parallel; collect's CPU time and the server's;
- collect's peak RSS (each collect is its own child process, measured with wait4), as a ratio against the smallest
  size: it must stay flat as the node count grows;
- the archive next to `tar czf` of its extracted layout (ratio tar.gz / archive, target >= 20x), and the archive of
  the same mesh without logs;
- analyze (`bundle analyze X --format json`, its own process): wall time and peak RSS, as ratios against the
  smallest size of the same invocation.

Every figure is measured in the run; ratios are against the first (smallest) size of the same invocation. The
machine's cores are shared by the server, the collector and the compressors: on a small machine the numbers
measure all of them together, so the table also gives the CPU floor, (collect CPU + serve CPU) / cores, and
collect's wall time against the larger of the ideal bound and that floor.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other bench scripts
from serve_load import cpu_seconds  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = ((10, 1_000), (100, 10_000), (1000, 20_000))
SMOKE_SIZES = ((2, 50),)


# --- the mesh ----------------------------------------------------------------------------------------------------

def scenario(nodes: int, pods: int, logs: bool = True) -> str:
    """bench/synth_scale.py's mesh: namespaces of 10 deployments, ~pods pods. Logs off = no traffic: the logs
    are then a few start-up lines per component (and the metrics have no traffic series)."""
    namespaces = max(1, pods // 200)
    replicas = max(1, pods // (namespaces * 10))
    connections = 5 if logs else 0
    return (f"name: scale\nseed: 7\nnodes: {nodes}\n"
            f"generate: {{namespaces: {namespaces}, deploymentsPerNamespace: 10, replicas: {replicas}, "
            f"connectionsPerDeployment: {connections}}}\n")


def parse_size(text: str) -> tuple[int, int]:
    nodes, sep, pods = text.lower().partition("x")
    try:
        if not sep:
            raise ValueError
        return int(nodes), int(pods.replace("k", "000"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NODESxPODS, e.g. 100x10000 or 100x10k") from None


# --- child processes ---------------------------------------------------------------------------------------------

def _env() -> dict[str, str]:
    # `python -m bundler` from this checkout, whatever the installed `bundle` entry point points at.
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Child(NamedTuple):
    code: int
    wall_s: float
    rss_mb: float  # peak RSS of this child alone (wait4's rusage)
    cpu_s: float  # user + system
    stderr: str  # and stdout


# Children are started by a small launcher process, not by this one: Linux carries a process's peak RSS across
# fork/vfork + exec (ru_maxrss of a child starts at its parent's high-water mark), so a child of this process,
# which reads manifests and grows, would report this process's peak, not its own.
_LAUNCHER_CODE = r"""
import json, os, subprocess, sys, time
for line in sys.stdin:
    req = json.loads(line)
    with open(req["log"], "wb") as err:
        began = time.perf_counter()
        process = subprocess.Popen(req["argv"], stdout=err, stderr=err, cwd=req["cwd"], env=req["env"])
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - began
    print(json.dumps({"code": os.waitstatus_to_exitcode(status), "wall": wall, "maxrss_kb": usage.ru_maxrss,
                      "cpu": usage.ru_utime + usage.ru_stime}), flush=True)
"""
_launcher: subprocess.Popen | None = None


def _launch(argv: list[str], log: Path) -> dict:
    global _launcher
    if _launcher is None or _launcher.poll() is not None:
        _launcher = subprocess.Popen([sys.executable, "-I", "-c", _LAUNCHER_CODE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
    assert _launcher.stdin is not None and _launcher.stdout is not None
    _launcher.stdin.write(json.dumps({"argv": argv, "log": str(log), "cwd": str(REPO), "env": _env()}) + "\n")
    _launcher.stdin.flush()
    return json.loads(_launcher.stdout.readline())


def _stop_launcher() -> None:
    global _launcher
    if _launcher is not None:
        if _launcher.stdin is not None:
            _launcher.stdin.close()  # it ends at EOF
        _launcher.wait()
        _launcher = None


def run_child(args: list[str], log: Path) -> Child:
    """Run ``python -m bundler ARGS`` and measure it with wait4: wall time, peak RSS (of the process, or of its
    largest child) and CPU (its own and its children's)."""
    answer = _launch([sys.executable, "-m", "bundler", *args], log)
    return Child(answer["code"], answer["wall"], answer["maxrss_kb"] / 1024, answer["cpu"],
                 log.read_text(errors="replace"))


class Server:
    """`bundle serve SOURCE --port 0` in its own process; ready once its kubeconfig is written and /readyz answers."""

    def __init__(self, source: Path, workdir: Path, faults: Path | None, timeout: float = 600.0) -> None:
        self.kubeconfig = workdir / "kubeconfig"
        self.log = workdir / "serve.log"
        args = [sys.executable, "-m", "bundler", "serve", str(source), "--port", "0",
                "--kubeconfig-out", str(self.kubeconfig)]
        if faults is not None:
            args += ["--faults", str(faults)]
        self._log = open(self.log, "w")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO, env=_env())
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.02
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"bundle serve exited ({self.process.returncode}): {self.log.read_text()[-2000:]}")
            if self._load_kubeconfig() and self._ready():
                return
            time.sleep(delay)
            delay = min(0.25, delay * 1.5)
        raise SystemExit(f"bundle serve was not ready after {timeout:g}s: {self.log.read_text()[-2000:]}")

    def _load_kubeconfig(self) -> bool:
        try:
            config = yaml.safe_load(self.kubeconfig.read_text())
            cluster = config["clusters"][0]["cluster"]
            self.url = cluster["server"]
            self.ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
            self.token = config["users"][0]["user"]["token"]
            return True
        except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError, ValueError):
            return False  # not written yet, or half written

    def _connection(self, timeout: float = 60.0) -> http.client.HTTPSConnection:
        host, _, port = self.url.removeprefix("https://").partition(":")
        context = ssl.create_default_context(cadata=self.ca)
        return http.client.HTTPSConnection(host, int(port), context=context, timeout=timeout)

    def _ready(self) -> bool:
        try:
            conn = self._connection(5.0)
            conn.request("GET", "/readyz", headers={"Authorization": f"Bearer {self.token}"})
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def throughput(self, path: str, latency_s: float, repeat: int = 2) -> tuple[float, int]:
        """Bytes/s of one large transfer (GET ``path`` on an open connection, body streamed and dropped), the best
        of ``repeat`` after a warm-up; from the request to the last byte, less the injected latency."""
        best, size = 0.0, 0
        for i in range(repeat + 1):
            conn = self._connection()
            conn.connect()
            began = time.perf_counter()
            conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"})
            response = conn.getresponse()
            size = 0
            while chunk := response.read(1 << 20):
                size += len(chunk)
            elapsed = time.perf_counter() - began - latency_s
            conn.close()
            if response.status != 200:
                raise SystemExit(f"GET {path}: HTTP {response.status}")
            if i and elapsed > 0:
                best = max(best, size / elapsed)
        return best, size

    def cpu_seconds(self) -> float | None:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


# --- what a collection asked --------------------------------------------------------------------------------------

def requests_and_bytes(archive: Path) -> tuple[int, int, int]:
    """(requests, bytes, artifacts) of a collection, from its manifest: one request per attempt of each artifact
    (an istiod per-proxy view asks the replicas in turn until one answers), plus the preflight's access reviews and
    discovery (version, nodes, /apis, each discovered group, three pod lists by label)."""
    from bundler.archive import open_bundle
    from bundler.collect.plan import DISCOVERED_GROUPS
    from bundler.collect.rbac import PERMISSIONS

    with open_bundle(archive) as bundle:
        manifest = bundle.manifest
    requests = size = 0
    groups: set[str] = set()
    for art in manifest.artifacts:
        source = art.source or {}
        attempts = int((art.extra or {}).get("attempts", 1) or 1)
        per_attempt = 1
        asked = source.get("asked")
        if asked:
            replica = source.get("replica")
            per_attempt = asked.index(replica) + 1 if replica in asked else len(asked)
        requests += attempts * per_attempt
        size += art.size or 0
        for path in (source.get("apiPath"), *(source.get("apiPaths") or ())):
            parts = (path or "").split("/")
            if len(parts) > 2 and parts[1] == "apis" and parts[2] in DISCOVERED_GROUPS:
                groups.add(parts[2])
    requests += len(PERMISSIONS) + 3 + len(groups) + 3
    return requests, size, len(manifest.artifacts)


# --- one size ------------------------------------------------------------------------------------------------------

def synth(nodes: int, pods: int, logs: bool, workdir: Path) -> tuple[Path, Child]:
    name = f"s{nodes}x{pods}{'' if logs else '-nologs'}"
    source = workdir / f"{name}.yaml"
    source.write_text(scenario(nodes, pods, logs))
    out = workdir / f"{name}.tar.zst"
    child = run_child(["synth", str(source), "-o", str(out)], workdir / f"{name}.synth.log")
    if child.code != 0:
        raise SystemExit(f"bundle synth {source.name} failed ({child.code}): {child.stderr[-2000:]}")
    return out, child


def tar_gz_size(archive: Path, workdir: Path) -> tuple[int, int]:
    """(size of `tar czf` of the extracted archive, bytes extracted). The extraction is removed afterwards."""
    from bundler.archive import extract_bundle

    folder = workdir / "extracted"
    folder.mkdir()
    try:
        root = extract_bundle(archive, folder)
        extracted = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        out = workdir / "extracted.tar.gz"
        subprocess.run(["tar", "czf", str(out), "-C", str(root.parent), root.name], check=True)
        size = out.stat().st_size
        out.unlink()
        return size, extracted
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def collect(server: Server, out: Path, concurrency: int | None, deadline: str, log: Path, redact: bool = True) -> Child:
    args = ["collect", "--kubeconfig", str(server.kubeconfig), "-o", str(out), "--deadline", deadline]
    if not redact:
        args.append("--no-redact")
    if concurrency is not None:
        args += ["--concurrency", str(concurrency)]
    return run_child(args, log)


def default_concurrency() -> int:
    from bundler.commands.collect import command

    return next(p.default for p in command.params if p.name == "concurrency")


def run_size(nodes: int, pods: int, args: argparse.Namespace, workdir: Path) -> dict:
    row: dict = {"nodes": nodes, "pods_requested": pods, "logs": args.logs, "latency_ms": args.latency_ms}
    archive, child = synth(nodes, pods, args.logs, workdir)
    row["synth_s"] = child.wall_s
    row["synth_archive_mb"] = archive.stat().st_size / 1e6
    if args.logs and not args.skip_nologs:
        other, _ = synth(nodes, pods, False, workdir)
        row["nologs_archive_mb"] = other.stat().st_size / 1e6
        other.unlink()
    elif not args.logs:
        row["nologs_archive_mb"] = row["synth_archive_mb"]
    summary = re.search(r"(\d+) nodes, (\d+) pods", child.stderr)
    row["pods"] = int(summary.group(2)) if summary else pods

    measured = archive  # what the size and analyze figures are of: the collected archive, else the synthetic one
    if not args.skip_collect:
        faults = workdir / "faults.yaml"
        spec: dict = {"seed": 1}
        if args.latency_ms:
            spec["latency"] = {"ms": args.latency_ms}
        if args.bandwidth:
            spec["bandwidth"] = args.bandwidth
        faults.write_text(yaml.safe_dump(spec))
        server = Server(archive, workdir, faults)
        try:
            if args.bandwidth:
                row["bandwidth_mbs"], row["bandwidth_source"] = args.bandwidth / 1e6, "fault"
            else:
                rate, size = server.throughput("/api/v1/pods", args.latency_ms / 1000)
                row["bandwidth_mbs"], row["bandwidth_source"] = rate / 1e6, f"measured ({size / 1e6:.1f} MB pod list)"
            concurrency = args.workers or default_concurrency()
            row["concurrency"] = concurrency
            out = workdir / "collected.tar.zst"
            cpu_before = server.cpu_seconds()
            child = collect(server, out, args.workers, args.deadline, workdir / "collect.log", args.redact)
            cpu_after = server.cpu_seconds()
            if child.code not in (0, 4) or not out.exists():
                raise SystemExit(f"bundle collect failed ({child.code}): {child.stderr[-2000:]}")
            row.update(collect_s=child.wall_s, collect_rss_mb=child.rss_mb, collect_cpu_s=child.cpu_s,
                       collect_exit=child.code, budget_rounds=child.stderr.count("size budget:"))
            if cpu_before is not None and cpu_after is not None:
                row["serve_cpu_s"] = cpu_after - cpu_before
            requests, size, artifacts = requests_and_bytes(out)
            row.update(requests=requests, bytes_mb=size / 1e6, artifacts=artifacts)
            latency = args.latency_ms / 1000
            row["ideal_s"] = requests / concurrency * latency + size / (row["bandwidth_mbs"] * 1e6)
            row["serial_ideal_s"] = requests * latency + size / (row["bandwidth_mbs"] * 1e6)
            # The server runs on the same cores: collect cannot end before their CPU work is done.
            row["cores"] = os.cpu_count() or 1
            row["cpu_floor_s"] = (row["collect_cpu_s"] + row.get("serve_cpu_s", 0.0)) / row["cores"]
            if not args.skip_serial:
                serial_out = workdir / "collected-serial.tar.zst"
                serial = collect(server, serial_out, 1, args.deadline, workdir / "collect-serial.log", args.redact)
                if serial.code not in (0, 4):
                    raise SystemExit(f"bundle collect --concurrency 1 failed ({serial.code}): {serial.stderr[-2000:]}")
                row.update(serial_s=serial.wall_s, serial_rss_mb=serial.rss_mb, serial_exit=serial.code)
                serial_out.unlink(missing_ok=True)
        finally:
            server.stop()
        row["collected_archive_mb"] = out.stat().st_size / 1e6
        measured = out
    row["archive_mb"] = measured.stat().st_size / 1e6
    row["archive_of"] = "collected" if measured != archive else "synth"
    if not args.skip_targz:
        targz, extracted = tar_gz_size(measured, workdir)
        row.update(targz_mb=targz / 1e6, extracted_mb=extracted / 1e6)
    if not args.skip_analyze:
        child = run_child(["analyze", str(measured), "--format", "json", "-o", str(workdir / "report.json")],
                          workdir / "analyze.log")
        if child.code not in (0, 3):
            raise SystemExit(f"bundle analyze failed ({child.code}): {child.stderr[-2000:]}")
        row.update(analyze_s=child.wall_s, analyze_rss_mb=child.rss_mb)
    return row


# --- output ----------------------------------------------------------------------------------------------------------

def _x(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}" if value is not None and base else "-"


def _f(value: float | None, fmt: str) -> str:
    return format(value, fmt) if value is not None else "-"


def report(rows: list[dict], args: argparse.Namespace) -> None:
    base = rows[0]
    where = f"{base['nodes']} nodes / {base['pods']} pods"
    logs = "with logs" if args.logs else "without logs"
    print(f"bundle collect{'' if args.redact else ' --no-redact'} / analyze scale, {logs}, latency {args.latency_ms} ms "
          "per request; "
          f"ratios (x) against the {where} run of this invocation")
    if "collect_s" in base:
        bw = {r["bandwidth_source"] for r in rows}
        print(f"\ncollect against `bundle serve` in its own process, concurrency {base['concurrency']}; ideal = "
              f"requests / concurrency x latency + bytes / bandwidth; bandwidth: {', '.join(sorted(bw))}")
        print(f"{'nodes':>6} {'pods':>6} {'requests':>8} {'MB':>8} {'MB/s':>6} {'ideal s':>8} {'collect s':>9} "
              f"{'x ideal':>7} {'serial s':>8} {'x ideal':>7} {'speedup':>7} {'CPU s':>7} {'serve CPU':>9} {'RSS MB':>7} {'x':>5} "
              f"{'exit':>4} {'CPU floor s':>11} {'x bound':>7}")
        for r in rows:
            bound = max(r["ideal_s"], r["cpu_floor_s"])
            speedup = r["serial_s"] / r["collect_s"] if "serial_s" in r else None
            serial_x = r["serial_s"] / r["serial_ideal_s"] if "serial_s" in r else None
            print(f"{r['nodes']:>6} {r['pods']:>6} {r['requests']:>8} {r['bytes_mb']:>8.1f} {r['bandwidth_mbs']:>6.0f} "
                  f"{r['ideal_s']:>8.3f} {r['collect_s']:>9.2f} {r['collect_s'] / r['ideal_s']:>7.2f} "
                  f"{_f(r.get('serial_s'), '>8.2f')} {_f(serial_x, '>7.2f')} {_f(speedup, '>7.2f')} {r['collect_cpu_s']:>7.1f} "
                  f"{_f(r.get('serve_cpu_s'), '>9.1f')} {r['collect_rss_mb']:>7.0f} "
                  f"{_x(r['collect_rss_mb'], base['collect_rss_mb']):>5} {r['collect_exit']:>4} "
                  f"{r['cpu_floor_s']:>11.2f} {r['collect_s'] / bound:>7.2f}")
    if "collect_s" in base:
        print("(serial: --concurrency 1, its x ideal against requests x latency + bytes / bandwidth; CPU s: collect's "
              "user+system, its redaction processes included; RSS: collect's peak, wait4, the largest of its processes;\n"
              " CPU floor: (collect CPU + serve CPU) / cores, the least wall time this machine allows when the server "
              "shares its cores; x bound: collect s / max(ideal, CPU floor))")
    print(f"\narchive ({base['archive_of']}) against `tar czf` of its extracted layout")
    print(f"{'nodes':>6} {'pods':>6} {'extracted MB':>12} {'archive MB':>10} {'x':>6} {'tar.gz MB':>9} "
          f"{'tar.gz/archive':>14} {'no-logs MB':>10}")
    for r in rows:
        ratio = r["targz_mb"] / r["archive_mb"] if "targz_mb" in r else None
        print(f"{r['nodes']:>6} {r['pods']:>6} {_f(r.get('extracted_mb'), '>12.1f')} {r['archive_mb']:>10.2f} "
              f"{_x(r['archive_mb'], base['archive_mb']):>6} {_f(r.get('targz_mb'), '>9.2f')} "
              f"{_f(ratio, '>14.1f')} {_f(r.get('nologs_archive_mb'), '>10.2f')}")
    if "analyze_s" in base:
        print(f"\nbundle analyze {base['archive_of']} archive --format json")
        print(f"{'nodes':>6} {'pods':>6} {'wall s':>8} {'x':>6} {'peak RSS MB':>11} {'x':>6}")
        for r in rows:
            print(f"{r['nodes']:>6} {r['pods']:>6} {r['analyze_s']:>8.2f} {_x(r['analyze_s'], base['analyze_s']):>6} "
                  f"{r['analyze_rss_mb']:>11.0f} {_x(r['analyze_rss_mb'], base['analyze_rss_mb']):>6}")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=parse_size, nargs="+", metavar="NODESxPODS",
                        help="sizes to run, e.g. 10x1000 100x10k (default: 10x1000 100x10000 1000x20000)")
    parser.add_argument("--latency-ms", type=int, default=20, help="latency the served API adds to every request")
    parser.add_argument("--bandwidth", type=int, default=None,
                        help="bytes/s the served API allows per response (default: unlimited, measured)")
    parser.add_argument("--workers", type=int, default=None,
                        help="collect --concurrency of the parallel run (default: collect's own default)")
    parser.add_argument("--logs", action=argparse.BooleanOptionalAction, default=True,
                        help="the mesh has traffic, hence access logs (default); --no-logs: start-up lines only")
    parser.add_argument("--redact", action=argparse.BooleanOptionalAction, default=True,
                        help="--no-redact: collect --no-redact, to see the rest of collect against the ideal")
    parser.add_argument("--deadline", default="2h", help="collect --deadline (default 2h: measure, do not cut)")
    parser.add_argument("--skip-collect", action="store_true", help="no serve / collect: size and analyze of synth")
    parser.add_argument("--skip-serial", action="store_true", help="no --concurrency 1 collection")
    parser.add_argument("--skip-analyze", action="store_true")
    parser.add_argument("--skip-targz", action="store_true", help="no extraction and tar czf")
    parser.add_argument("--skip-nologs", action="store_true", help="do not build the no-logs variant for its size")
    parser.add_argument("--workdir", type=Path, default=None, help="where temporary files go (default: the system's)")
    parser.add_argument("--smoke", action="store_true", help="one tiny size (2 nodes, 50 pods): does it run?")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--save", type=Path, default=None, help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    sizes = sorted(args.sizes or (SMOKE_SIZES if args.smoke else DEFAULT_SIZES))
    rows = []
    try:
        for nodes, pods in sizes:
            with tempfile.TemporaryDirectory(prefix=f"scale-{nodes}-", dir=args.workdir) as tmp:
                rows.append(run_size(nodes, pods, args, Path(tmp)))
            if not args.json:
                print(f"done: {nodes} nodes x {pods} pods", file=sys.stderr, flush=True)
    finally:
        _stop_launcher()
    sys.stderr.flush()
    if args.save:
        args.save.write_text(json.dumps(rows, indent=1))
    if args.json:
        print(json.dumps(rows))
    else:
        report(rows, args)
    return rows


if __name__ == "__main__":
    main()
