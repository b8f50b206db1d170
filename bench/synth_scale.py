"""How `bundle synth` scales with the node count at a fixed number of pods: wall time, peak RSS and
archive size per size, each as a ratio against the smallest run of the same invocation.

    python bench/synth_scale.py                 # 10k pods on 10, 50 and 200 nodes
    python bench/synth_scale.py --pods 1000 --nodes 5 20   # a quick run

Every ztunnel holds every workload, so the archive's uncompressed content grows with nodes x pods; the
generator's memory must not (it renders one member at a time).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def scenario(nodes: int, pods: int) -> str:
    namespaces = max(1, pods // 200)
    replicas = max(1, pods // (namespaces * 10))
    return (f"name: scale\nseed: 7\nnodes: {nodes}\n"
            f"generate: {{namespaces: {namespaces}, deploymentsPerNamespace: 10, replicas: {replicas}, "
            "connectionsPerDeployment: 5}\n")


def run_one(nodes: int, pods: int, workdir: Path) -> dict[str, float]:
    path = workdir / f"scale-{nodes}.yaml"
    path.write_text(scenario(nodes, pods))
    out = workdir / f"scale-{nodes}.tar.zst"
    # Each run in its own process, so that peak RSS is that run's alone.
    code = ("import resource, sys, time; from bundler.cli import main; t = time.perf_counter();\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    result = subprocess.run([sys.executable, "-c", code, "synth", str(path), "-o", str(out)],
                            capture_output=True, text=True, check=True)
    wall, rss_kb = result.stdout.split()
    return {"nodes": nodes, "wall_s": float(wall), "rss_mb": int(rss_kb) / 1024, "archive_mb": out.stat().st_size / 1e6}


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_one(n, args.pods, Path(tmp)) for n in sorted(args.nodes)]
    base = rows[0]
    if args.json:
        print(json.dumps(rows))
        return rows
    print(f"bundle synth, {args.pods} pods; ratios against the {base['nodes']}-node run of this invocation")
    print(f"{'nodes':>6} {'wall s':>8} {'x':>6} {'peak RSS MB':>12} {'x':>6} {'archive MB':>11} {'x':>6}")
    for r in rows:
        print(f"{r['nodes']:>6} {r['wall_s']:>8.2f} {r['wall_s'] / base['wall_s']:>6.2f} {r['rss_mb']:>12.0f} "
              f"{r['rss_mb'] / base['rss_mb']:>6.2f} {r['archive_mb']:>11.2f} {r['archive_mb'] / base['archive_mb']:>6.2f}")
    return rows


if __name__ == "__main__":
    main()
