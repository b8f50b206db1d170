"""A tiny run of the benchmarks, so that they keep working (no timing assertions)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synth_scale_smoke(capsys):
    rows = load("synth_scale").main(["--pods", "100", "--nodes", "2", "4"])
    assert [r["nodes"] for r in rows] == [2, 4]
    assert all(r["archive_mb"] > 0 and r["rss_mb"] > 0 for r in rows)
    assert "ratios against the 2-node run" in capsys.readouterr().out


def test_scale_smoke(capsys):
    rows = load("scale").main(["--smoke", "--latency-ms", "1"])
    assert [(r["nodes"], r["pods_requested"]) for r in rows] == [(2, 50)]
    row = rows[0]
    for key in ("collect_s", "ideal_s", "serial_s", "requests", "bytes_mb", "bandwidth_mbs", "collect_rss_mb",
                "archive_mb", "targz_mb", "nologs_archive_mb", "analyze_s", "analyze_rss_mb"):
        assert row[key] > 0, key
    assert row["collect_exit"] == 0 and row["pods"] > 0
    out = capsys.readouterr().out
    assert "ratios (x) against the 2 nodes" in out and "tar.gz/archive" in out
