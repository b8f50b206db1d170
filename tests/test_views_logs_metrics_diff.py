"""``bundle logs``, ``bundle metrics`` and ``bundle diff``: offline views of one bundle or two."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from bundler.cli import cli, main
from bundler.formats import openmetrics
from bundler.model import BundleModel
from bundler.synth.build import build_mesh, write_bundle
from bundler.synth.scenario import scenario_from_dict

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
INCIDENT = SAMPLES / "bookinfo-incident.tar.zst"
HEALTHY = SAMPLES / "bookinfo-healthy.tar.zst"


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def jlines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def ts(record: dict) -> datetime:
    return datetime.fromisoformat(record["time"].replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def incident_dir(tmp_path_factory) -> Path:
    from bundler.archive import extract_bundle

    return Path(extract_bundle(INCIDENT, tmp_path_factory.mktemp("views-incident")))


@pytest.fixture(scope="module")
def all_records() -> list[dict]:
    return jlines(run("logs", INCIDENT, "-o", "json"))


# --- logs -----------------------------------------------------------------------------------------------------------


def test_logs_merged_in_time_order_across_files(all_records):
    times = [ts(r) for r in all_records]
    assert times == sorted(times)
    assert {r["component"] for r in all_records} == {"ztunnel", "istiod", "cni"}
    assert len({r["path"] for r in all_records}) > 3  # really a merge of several files
    # every parsed record of every file is there
    with BundleModel.open(INCIDENT) as m:
        total = sum(1 for log in m.logs() for ref in m.log_records(log) if ref.record is not None)
    assert len(all_records) == total


def test_logs_text_lines_are_prefixed_original_lines(incident_dir, all_records):
    lines = run("logs", incident_dir).splitlines()
    assert len(lines) == len(all_records)
    for line, rec in zip(lines[:50], all_records[:50]):
        prefix = f"[{rec['component']}/{rec['pod']}] "
        assert line.startswith(prefix)
        original = (incident_dir / rec["path"]).read_text().splitlines()[rec["line"] - 1]
        assert line[len(prefix):] == original


def test_logs_json_fields(all_records):
    rec = next(r for r in all_records if r["component"] == "ztunnel" and r.get("target") == "access")
    assert set(rec) >= {"time", "level", "component", "node", "pod", "path", "line", "target", "message", "fields"}
    assert rec["node"] and rec["fields"]["direction"] in ("inbound", "outbound")
    ist = next(r for r in all_records if r["component"] == "istiod")
    assert "scope" in ist and ist["node"] == ""


def test_logs_component_node_pod(all_records):
    out = jlines(run("logs", INCIDENT, "-o", "json", "--component", "istiod", "--component", "cni"))
    assert out and {r["component"] for r in out} == {"istiod", "cni"}
    assert len(out) == sum(r["component"] in ("istiod", "cni") for r in all_records)
    node = next(r["node"] for r in all_records if r["component"] == "ztunnel")
    out = jlines(run("logs", INCIDENT, "-o", "json", "--node", node))
    assert out and {r["node"] for r in out} == {node}
    pod = next(r["pod"] for r in all_records if r["component"] == "ztunnel")
    out = jlines(run("logs", INCIDENT, "-o", "json", "--pod", pod))
    assert out and {r["pod"] for r in out} == {pod}


def test_logs_level(all_records):
    warn = jlines(run("logs", INCIDENT, "-o", "json", "--level", "warn"))
    assert warn and {r["level"] for r in warn} <= {"error", "warn"}
    assert len(warn) == sum(r["level"] in ("error", "warn") for r in all_records)
    err = jlines(run("logs", INCIDENT, "-o", "json", "--level", "error"))
    assert err and {r["level"] for r in err} == {"error"} and len(err) < len(warn)


def test_logs_since_until(all_records):
    middle = ts(all_records[len(all_records) // 2])
    stamp = middle.isoformat().replace("+00:00", "Z")
    after = jlines(run("logs", INCIDENT, "-o", "json", "--since", stamp))
    before = jlines(run("logs", INCIDENT, "-o", "json", "--until", stamp))
    assert after and before and all(ts(r) >= middle for r in after) and all(ts(r) <= middle for r in before)
    assert len(after) + len(before) >= len(all_records)
    # durations are relative to the collection time (12:00:00Z in the sample)
    recent = jlines(run("logs", INCIDENT, "-o", "json", "--since", "15m"))
    end = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
    assert recent and all(ts(r) >= end - timedelta(minutes=15) for r in recent)
    assert len(recent) == sum(ts(r) >= end - timedelta(minutes=15) for r in all_records)


def test_logs_workload_and_direction(all_records):
    out = jlines(run("logs", INCIDENT, "-o", "json", "--workload", "ratings-v1"))
    assert out
    for r in out:
        names = (r["fields"].get("src.workload", ""), r["fields"].get("dst.workload", ""))
        assert any(str(n).startswith("ratings-v1") for n in names) or r["pod"].startswith("ratings-v1")
    pod_name = next(r["fields"]["dst.workload"] for r in out if "dst.workload" in r["fields"])
    exact = jlines(run("logs", INCIDENT, "-o", "json", "--workload", pod_name))
    assert exact and len(exact) <= len(out)
    inbound = jlines(run("logs", INCIDENT, "-o", "json", "--direction", "inbound"))
    assert inbound and {r["fields"]["direction"] for r in inbound} == {"inbound"}


def test_logs_signature_and_grep(all_records):
    policy = jlines(run("logs", INCIDENT, "-o", "json", "--signature", "policy-rejection"))
    assert policy and any("policy rejection" in str(r["fields"].get("error", "")) for r in policy)
    assert all(r["level"] in ("error", "warn") for r in policy)
    xds = jlines(run("logs", INCIDENT, "-o", "json", "--signature", "xds-error"))
    assert xds and any("ACK ERROR" in r["message"] for r in xds)
    grep = run("logs", INCIDENT, "--grep", r"ACK ERROR").splitlines()
    assert grep and all(re.search("ACK ERROR", line) for line in grep)
    assert len(grep) == sum("ACK ERROR" in r["message"] for r in all_records)


def test_logs_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["logs", str(tmp_path / "nope.tar.zst")])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["logs", str(INCIDENT), "--since", "yesterday"])
    assert exc.value.code == 1
    with pytest.raises(SystemExit) as exc:
        main(["logs", str(INCIDENT), "--grep", "("])
    assert exc.value.code == 1
    assert "Traceback" not in capsys.readouterr().err


# --- metrics --------------------------------------------------------------------------------------------------------


def _file_sums(bundle_dir: Path) -> dict[str, dict[str, float]]:
    sums: dict[str, dict[str, float]] = {}
    for path in sorted(bundle_dir.glob("ztunnel/*/*/metrics.txt")):
        pod = path.parent.name
        for family in openmetrics.parse(path.read_bytes()):
            for s in family.samples:
                if s.name.startswith("istio_tcp_") and not s.name.endswith("_created"):
                    sums.setdefault(s.name, {}).setdefault(pod, 0)
                    sums[s.name][pod] += s.value
    return sums


def test_metrics_sums_equal_the_metrics_files(incident_dir):
    out = json.loads(run("metrics", INCIDENT, "-o", "json"))
    assert out["by"] == "ztunnel"
    expected = _file_sums(incident_dir)
    assert expected and out["series"] == expected
    text = run("metrics", incident_dir)
    name = next(iter(expected))
    assert name in text


def test_metrics_names_labels_and_by_workload(incident_dir):
    opened = json.loads(run("metrics", INCIDENT, "istio_tcp_connections_opened", "-o", "json"))
    assert list(opened["series"]) == ["istio_tcp_connections_opened_total"]
    by_wl = json.loads(run("metrics", INCIDENT, "istio_tcp_connections_opened_total", "--by", "workload",
                           "-o", "json"))
    per_zt = opened["series"]["istio_tcp_connections_opened_total"]
    per_wl = by_wl["series"]["istio_tcp_connections_opened_total"]
    assert sum(per_wl.values()) == sum(per_zt.values())
    assert all(" -> " in key for key in per_wl)
    filtered = json.loads(run("metrics", INCIDENT, "istio_tcp_connections_opened", "--label",
                              "destination_workload=ratings-v1", "--label", "reporter=destination", "-o", "json"))
    groups = filtered["series"]["istio_tcp_connections_opened_total"]
    expected = 0
    for path in incident_dir.glob("ztunnel/*/*/metrics.txt"):
        for labels, value in openmetrics.samples(path.read_bytes(), "istio_tcp_connections_opened"):
            if labels.get("destination_workload") == "ratings-v1" and labels.get("reporter") == "destination":
                expected += value
    assert expected and sum(groups.values()) == expected


def test_metrics_bad_label(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["metrics", str(INCIDENT), "--label", "oops"])
    assert exc.value.code == 1
    assert "KEY=VALUE" in capsys.readouterr().err


# --- diff -----------------------------------------------------------------------------------------------------------

BASE = {
    "name": "mini",
    "seed": 3,
    "istioVersion": "1.28.1",
    "nodes": ["n1", "n2"],
    "istiod": {"replicas": 1},
    "now": "2026-11-25T12:00:00Z",
    "window": "1h",
    "namespaces": [
        {"name": "shop", "ambient": True,
         "deployments": [{"name": "web-v1", "app": "web", "ports": [8080]},
                         {"name": "api-v1", "app": "api", "ports": [9090]}],
         "services": [{"name": "web", "ports": [8080]}, {"name": "api", "ports": [9090]}]},
    ],
    "traffic": [{"from": "shop/web", "to": "shop/api", "port": 9090, "connections": 10}],
}


def synth(tmp_path: Path, name: str, faults: list[dict]) -> Path:
    data = orjson.loads(orjson.dumps(BASE))
    data["faults"] = faults
    out = tmp_path / f"{name}.tar.zst"
    return write_bundle(build_mesh(scenario_from_dict(data)), out, ["bundle", "synth", "x.yaml", "-o", out.name])


@pytest.fixture(scope="module")
def synth_pair(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("views-diff")
    old = synth(tmp, "old", [])
    new = synth(tmp, "new", [{"type": "workload-missing", "pod": "shop/api", "node": "n1"},
                             {"type": "cert-expired", "pod": "shop/web"}])
    return old, new


def test_diff_of_a_bundle_with_itself_is_empty(incident_dir):
    assert run("diff", INCIDENT, incident_dir).strip() == "no differences"
    out = json.loads(run("diff", INCIDENT, INCIDENT, "-o", "json"))
    assert out == {"ztunnels": [], "findings": {"appeared": [], "resolved": []}}


def test_diff_of_synthetic_bundles(synth_pair):
    old, new = synth_pair
    out = json.loads(run("diff", old, new, "-o", "json"))
    by_node = {z["node"]: z for z in out["ztunnels"]}
    n1 = by_node["n1"]
    removed = n1["workloads"]["removed"]
    assert any("/shop/api-v1-" in uid for uid in removed)
    assert not n1["workloads"]["added"]
    certs = [z["certificates"] for z in out["ztunnels"] if "certificates" in z]
    rotated = [r for c in certs for r in c["rotated"]]
    web = [r for r in rotated if r["identity"] == "spiffe://cluster.local/ns/shop/sa/web"]
    assert web and web[0]["old_serial"] != web[0]["new_serial"]
    assert web[0]["new_expiration"] < "2026-11-25T12:00:00Z"  # the expired one
    appeared = {(f["analyzer"], f["code"]) for f in out["findings"]["appeared"]}
    assert any(code == "cert-expired" for _a, code in appeared)
    assert any(code == "missing-workload" for _a, code in appeared)
    text = run("diff", old, new)
    assert "- workload" in text and "certificate" in text and "findings appeared:" in text
    # and back again: the workload is added, the findings are resolved
    back = json.loads(run("diff", new, old, "-o", "json"))
    assert {(f["analyzer"], f["code"]) for f in back["findings"]["resolved"]} == appeared


def test_diff_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["diff", str(INCIDENT), str(tmp_path / "missing")])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
