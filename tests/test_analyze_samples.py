"""`bundle analyze` end to end on the samples: every fault injected into the incident sample yields a finding
from an analyzer the fault catalog names, about the right resource; the healthy sample yields nothing at
warning or above."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bundler.archive import open_bundle
from bundler.synth.faults import CATALOG

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def analyze(path: Path, *extra: str) -> tuple[int, dict]:
    result = subprocess.run([sys.executable, "-m", "bundler", "analyze", str(path), "--format", "json", *extra],
                            capture_output=True, text=True)
    assert result.returncode in (0, 3), result.stderr
    return result.returncode, orjson.loads(result.stdout)


def resource_names(finding: dict) -> set[str]:
    return {r["name"] for r in finding["resources"]} | {r.get("node") or "" for r in finding["resources"]} | \
        {r.get("ztunnel") or "" for r in finding["resources"]}


def test_healthy_sample_has_nothing_at_warning_or_above():
    code, report = analyze(SAMPLES / "bookinfo-healthy.tar.zst", "--fail-on", "warning")
    serious = [f["id"] for f in report["findings"] if f["severity"] != "info"]
    assert serious == [] and code == 0


@pytest.fixture(scope="module")
def incident():
    with open_bundle(SAMPLES / "bookinfo-incident.tar.zst") as bundle:
        faults = bundle.manifest.extra["scenario"]["faults"]
    return faults, analyze(SAMPLES / "bookinfo-incident.tar.zst")[1]


def test_every_injected_fault_is_found_by_a_cataloged_analyzer(incident):
    faults, report = incident
    assert faults
    serious = [f for f in report["findings"] if f["severity"] in ("warning", "error", "critical")]
    for fault in faults:
        expected = set(CATALOG[fault["type"]].analyzers)
        # The resource each fault is about: its pod's app or its node.
        about = fault.get("pod", "").split("/")[-1] or fault.get("service", "").split("/")[-1] or fault.get("node")
        hits = [f for f in serious if f["analyzer"] in expected
                and any(about and about in name for name in resource_names(f))]
        assert hits, f"{fault['type']} ({about}) found by none of {sorted(expected)}"


def test_evidence_points_at_files_of_the_bundle(incident):
    _, report = incident
    with open_bundle(SAMPLES / "bookinfo-incident.tar.zst") as bundle:
        names = set(bundle.names())
        for finding in report["findings"]:
            for evidence in finding["evidence"]:
                assert evidence["path"] in names, evidence
                if evidence.get("lines"):
                    start, end = evidence["lines"]
                    lines = bundle.read(evidence["path"]).splitlines()
                    assert 1 <= start <= end <= len(lines)


def test_fail_on_error_exits_3_on_the_incident():
    assert analyze(SAMPLES / "bookinfo-incident.tar.zst", "--fail-on", "error")[0] == 3


def test_an_altered_member_is_an_integrity_finding(tmp_path):
    from bundler.archive import extract_bundle

    damaged = extract_bundle(SAMPLES / "bookinfo-incident.tar.zst", tmp_path)
    metrics = next(damaged.glob("ztunnel/*/*/metrics.txt"))
    metrics.write_text(metrics.read_text().replace("istio_build", "istio_bulid", 1))
    _, report = analyze(damaged)
    altered = [f for f in report["findings"] if f["analyzer"] == "integrity" and f["code"] == "member-altered"]
    assert altered and altered[0]["severity"] == "error"
    _, clean = analyze(SAMPLES / "bookinfo-incident.tar.zst")
    assert not [f for f in clean["findings"] if f["analyzer"] == "integrity"]
