"""Big artifacts are redacted in worker processes (bundler.collect.engine): same bytes, same counts as inline."""

from __future__ import annotations

from pathlib import Path

import orjson

from bundler import layout
from bundler.archive import open_bundle
from bundler.collect import engine
from bundler.collect.plan import Options
from bundler.collect.run import CollectSettings, collect
from bundler.collect.tasks import ApiGet
from bundler.errors import EXIT_OK

REPO = Path(__file__).resolve().parents[1]
INCIDENT = REPO / "samples" / "bookinfo-incident.tar.zst"
LOG = (b"2026-11-25T11:59:00.000000Z\twarn\txds::client\tupstream said password=hunter2-super-secret\t\n"
       b"2026-11-25T11:59:01.000000Z\tinfo\txds::client\tnothing to see\t\n")


def _outcome(spool: Path, path: str) -> engine.Outcome:
    return engine.Outcome(ApiGet(path, 0), "ok", spool=spool, size=spool.stat().st_size)


def test_pool_and_inline_redaction_agree(tmp_path, monkeypatch):
    pods = {"kind": "PodList", "items": [{"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "env": [{"name": "DB_PASSWORD", "value": "hunter2-super-secret"}]}]}}]}
    inputs = {"log": LOG, "list": orjson.dumps(pods), "clean": b"nothing secret here\n" * 10}
    results = {}
    for threshold in (0, 1 << 40):  # every artifact in a worker process, then every one inline
        monkeypatch.setattr(engine, "REDACT_IN_PROCESS_BYTES", threshold)
        eng = engine.Engine(None, [], tmp_path, 1, None)
        try:
            for name, data in inputs.items():
                spool = tmp_path / f"{name}-{threshold}"
                spool.write_bytes(data)
                outcome = _outcome(spool, layout.k8s_list("pods") if name == "list" else "ztunnel/n/p/metrics.txt")
                if name == "list":
                    eng._redact_json(outcome)
                else:
                    eng._redact_text(outcome)
                results[name, threshold > 0] = (spool.read_bytes(), outcome.extra.get("redactions"))
            assert (eng._redactors is not None) == (threshold == 0)
        finally:
            eng._stop_redaction_pool()
    for name in inputs:
        assert results[name, False] == results[name, True], name
    assert b"hunter2" not in results["log", False][0] and results["log", False][1]
    assert b"hunter2" not in results["list", False][0] and results["list", False][1]
    assert results["clean", False] == (inputs["clean"], None)


def test_round_trip_with_every_artifact_redacted_in_worker_processes(served, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "REDACT_IN_PROCESS_BYTES", 0)
    out = tmp_path / "pool.tar.zst"
    settings = CollectSettings(out=out, kubeconfig=str(served().kubeconfig_path), quiet=True)
    assert collect(settings, Options()) == EXIT_OK
    with open_bundle(INCIDENT) as a, open_bundle(out) as b:
        original, again = dict(a.iter_members()), dict(b.iter_members())
    assert original.keys() == again.keys()
    assert all(again[p] == d for p, d in original.items() if p != layout.MANIFEST)
