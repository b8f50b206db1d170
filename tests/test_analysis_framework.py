"""The analyzer framework and ``bundle analyze``: the engine's contract (skip, crash, group, ids, order),
suppressions, the CLI (formats, --only/--skip, --fail-on, --list, errors), the findings schema, the two
built-in analyzers (collection-gaps, schema-validation) and a third-party plug-in installed from
tests/plugin_example.

The table follows istioctl's analyzer tests (docs/writing-analyzers.md): each case names analyzers and a
bundle and lists the findings expected as (analyzer, code, count), ignoring order and wording; a failing case
has a clean twin.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml

from analyzers.collection_gaps import CollectionGaps
from analyzers.schema_validation import SchemaValidation
from bundler import layout
from bundler.analysis import (
    SEVERITIES,
    Analyzer,
    Context,
    Evidence,
    Finding,
    Metadata,
    Resource,
    load_analyzers,
    run_analyzers,
)
from bundler.analysis import engine
from bundler.analysis.engine import UnknownAnalyzerError
from bundler.analysis.output import html_report, render_json, render_text
from bundler.analysis.suppress import Suppression, SuppressionError, load_suppressions
from bundler.archive import BundleWriter, extract_bundle, open_bundle
from bundler.model import BundleModel
from bundler.validation import validate_document

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
HEALTHY = SAMPLES / "bookinfo-healthy.tar.zst"
NOW = dt.datetime(2026, 11, 25, 13, 0, tzinfo=dt.timezone.utc)


# --- bundles -------------------------------------------------------------------------------------------------


def _synth(out: Path, name: str, faults: list[dict]) -> Path:
    from bundler.synth.build import build_mesh, write_bundle
    from bundler.synth.scenario import scenario_from_dict

    data = yaml.safe_load((SAMPLES / "bookinfo-healthy.yaml").read_text())
    data["name"] = name
    data["faults"] = faults
    return write_bundle(build_mesh(scenario_from_dict(data)), out, ["bundle", "synth", f"{name}.yaml"])


def _gappy(out: Path) -> Path:
    """A small bundle written by hand: one ztunnel whose config dump failed, whose log was truncated by the size
    budget, and whose previous log is skipped (normal: the container never restarted)."""
    with open_bundle(HEALTHY) as sample:
        version = sample.read(layout.k8s_version())
        zt_pod_json = next(p for p in sample.names() if p.startswith("ztunnel/") and p.endswith("/pod.json"))
        pod_json = sample.read(zt_pod_json)
    node, pod = "ambient-worker", "ztunnel-gap01"
    src = {"namespace": "istio-system", "pod": pod}
    with BundleWriter(out, root="gappy", mtime=int(NOW.timestamp())) as w:
        w.add(layout.k8s_version(), version, source={"type": "api", "apiPath": "/version"})
        w.add(layout.ztunnel_file(node, pod, "pod.json"), pod_json, source={"type": "api", **src})
        w.record(layout.ztunnel_file(node, pod, "config_dump.json"), source={"type": "portforward", "port": 15000, **src},
                 status="error", reason="timeout after 30s (after 3 attempts)")
        w.add(layout.ztunnel_log(node, pod), b"2026-11-25T12:59:59.000000Z\tinfo\tztunnel\tstarted\n",
              source={"type": "logs", "container": "istio-proxy", **src}, status="truncated",
              reason="size budget: dropped the oldest info-level lines")
        w.record(layout.ztunnel_log(node, pod, previous=True), source={"type": "logs", "previous": True, **src},
                 status="skipped", reason="previous terminated container not found")
    return out


def _broken(folder: Path) -> Path:
    """The healthy sample extracted, with one schema violation in a ztunnel dump and istiod's ambientz cut."""
    root = extract_bundle(HEALTHY, folder)
    dump_path = next(root.glob("ztunnel/*/*/config_dump.json"))
    dump = json.loads(dump_path.read_text())
    dump["workloads"][0]["protocol"] = 5
    dump_path.write_text(json.dumps(dump))
    ambientz = next(root.glob("istiod/*/ambientz.json"))
    ambientz.write_text(ambientz.read_text()[:100])
    return root


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("bundles")
    return {
        "healthy": HEALTHY,
        "xds": _synth(tmp / "xds-gap.tar.zst", "xds-gap", [{"type": "xds-disconnected", "node": "ambient-worker2"}]),
        "gappy": _gappy(tmp / "gappy.tar.zst"),
        "broken": _broken(tmp / "broken"),
    }


@pytest.fixture
def model(bundles) -> Iterator[BundleModel]:
    with BundleModel.open(bundles["healthy"]) as m:
        yield m


def analyze(path: Path, analyzers: list[Analyzer] | None, **kwargs) -> engine.Report:
    with BundleModel.open(path) as m:
        return run_analyzers(m, analyzers, now=NOW, **kwargs)


# --- tiny analyzers ------------------------------------------------------------------------------------------


def meta(ident: str, severity: str = "warning", inputs: tuple[str, ...] = ()) -> Metadata:
    return Metadata(id=ident, title=f"{ident} title", severity=severity, description=f"test analyzer {ident}",
                    docs=f"https://example.invalid/{ident}", inputs=inputs)


class Crashes(Analyzer):
    metadata = meta("t-crash")

    def analyze(self, ctx: Context):
        ctx.view("ztunnels", [{"pod": "lost"}])
        yield ctx.finding("before", "reported before the crash")
        raise RuntimeError("boom\n  on a second line")


class NeedsAbsent(Analyzer):
    metadata = meta("t-absent", inputs=("no-such-kind",))

    def analyze(self, ctx: Context):
        raise AssertionError("an analyzer whose inputs are all absent must not run")


class NeedsOnePresent(Analyzer):
    metadata = meta("t-present", severity="info", inputs=("no-such-kind", layout.KIND_ZTUNNEL_CONFIG_DUMP))

    def analyze(self, ctx: Context):
        assert ctx.has_input(layout.KIND_ZTUNNEL_CONFIG_DUMP) and not ctx.has_input("no-such-kind")
        yield ctx.finding("ran", "it ran")


class FiveSame(Analyzer):
    metadata = meta("t-five", severity="error")

    def analyze(self, ctx: Context):
        for i in (3, 1, 4, 0, 2):  # any order: grouping sorts
            yield ctx.finding("same", "a pod has the problem", resources=[Resource("Pod", f"p{i}", "ns")],
                              evidence=[Evidence(f"x/{i}.json", "/a")], references=["https://example.invalid/ref"])


class PerZtunnel(Analyzer):
    """Reads the real model: one finding per ztunnel."""

    metadata = meta("t-zt", severity="info", inputs=(layout.KIND_ZTUNNEL_CONFIG_DUMP,))

    def analyze(self, ctx: Context):
        for ref in ctx.model.ztunnel_refs():
            yield ctx.finding("seen", f"ztunnel {ref.pod}", resources=[
                Resource("Pod", ref.pod, ref.namespace, node=ref.node, ztunnel=ref.pod)],
                evidence=[Evidence(ref.dump_path, "")])


class ManyEvidence(Analyzer):
    metadata = meta("t-many", severity="info")

    def analyze(self, ctx: Context):
        for i in range(30):
            yield ctx.finding("many", f"line {i}", resources=[Resource("Pod", f"p{i:02d}", "ns")],
                              evidence=[Evidence("log.txt", lines=(i + 1, i + 1))])


class BadSeverity(Analyzer):
    metadata = meta("t-badsev")

    def analyze(self, ctx: Context):
        yield ctx.finding("ok", "fine")
        yield Finding("t-badsev", "x", "fatal", "t", "m")


class BadPointer(Analyzer):
    metadata = meta("t-badptr")

    def analyze(self, ctx: Context):
        yield ctx.finding("x", "m", evidence=[Evidence("a.json", "workloads")])


class ReturnsNone(Analyzer):
    metadata = meta("t-none", severity="info")

    def analyze(self, ctx: Context):
        return None


class Mixed(Analyzer):
    metadata = meta("t-mixed", severity="info")

    def analyze(self, ctx: Context):
        for severity in ("info", "critical", "warning", "error"):
            yield ctx.finding(f"c-{severity}", severity, severity=severity, resources=[Resource("Pod", "p", "ns")])


class Viewer(Analyzer):
    metadata = meta("t-view", severity="info")

    def analyze(self, ctx: Context):
        ctx.view("ztunnels", [{"pod": "a"}])
        ctx.view("extra", {"k": 1})
        return ()


class Viewer2(Analyzer):
    metadata = meta("t-view2", severity="info")

    def analyze(self, ctx: Context):
        ctx.view("ztunnels", [{"pod": "b"}])
        ctx.view("extra", {"j": 2})
        return ()


# --- the table -----------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    analyzers: list[Analyzer]
    expected: list[tuple[str, str, int]]  # (analyzer, code, count)
    bundle: str = "healthy"
    skipped: list[str] = field(default_factory=list)


CASES = [
    Case("crash-is-internal-error", [Crashes()], [("t-crash", "before", 1), ("t-crash", "internal-error", 1)]),
    Case("inputs-all-absent-skipped", [NeedsAbsent()], [], skipped=["t-absent"]),
    Case("one-input-present-runs", [NeedsOnePresent()], [("t-present", "ran", 1)]),
    Case("five-identical-grouped", [FiveSame()], [("t-five", "same", 5)]),
    Case("one-per-ztunnel-grouped", [PerZtunnel()], [("t-zt", "seen", 3)]),
    Case("invalid-severity-is-internal-error", [BadSeverity()], [("t-badsev", "ok", 1), ("t-badsev", "internal-error", 1)]),
    Case("invalid-pointer-is-internal-error", [BadPointer()], [("t-badptr", "internal-error", 1)]),
    Case("returns-none", [ReturnsNone()], []),
    Case("collection-gaps-healthy", [CollectionGaps()], []),
    Case("collection-gaps-xds-disconnected", [CollectionGaps()], [("collection-gaps", "istiod-proxy-view-404", 1)],
         bundle="xds"),
    Case("collection-gaps-failed-dump", [CollectionGaps()],
         [("collection-gaps", "ztunnel-config-dump-missing", 1), ("collection-gaps", "logs-truncated", 1)],
         bundle="gappy"),
    Case("schema-validation-healthy", [SchemaValidation()], []),
    Case("schema-validation-broken", [SchemaValidation()],
         [("schema-validation", "schema-invalid", 1), ("schema-validation", "artifact-unreadable", 1)], bundle="broken"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_analyzer_table(case: Case, bundles) -> None:
    report = analyze(bundles[case.bundle], case.analyzers)
    assert Counter((f.analyzer, f.code, f.count) for f in report.findings) == Counter(case.expected)
    assert [r.id for r in report.analyzers if r.status == "skipped"] == case.skipped
    assert validate_document(report.to_dict(), layout.KIND_FINDINGS) == []


# --- engine --------------------------------------------------------------------------------------------------


def test_crash_is_one_line_without_traceback_and_keeps_earlier_findings(bundles):
    report = analyze(bundles["healthy"], [Crashes(), NeedsOnePresent()])
    error = next(f for f in report.findings if f.code == "internal-error")
    assert error.analyzer == "t-crash" and error.severity == "error"
    assert "RuntimeError: boom on a second line" in error.message
    assert "\n" not in error.message and "Traceback" not in render_json(report)
    assert error.resources == [Resource("Analyzer", "t-crash")]
    assert {r.id: r.status for r in report.analyzers} == {"t-crash": "crashed", "t-present": "ok"}
    assert "ztunnels" not in report.views  # a crashed analyzer's views are dropped
    assert any(f.analyzer == "t-present" for f in report.findings)  # the others ran


def test_skipped_analyzer_is_a_note_with_its_inputs(bundles):
    report = analyze(bundles["healthy"], [NeedsAbsent()])
    doc = report.to_dict()
    assert doc["analyzers"]["skipped"] == [{
        "id": "t-absent", "status": "skipped", "title": "t-absent title", "severity": "warning",
        "docs": "https://example.invalid/t-absent",
        "reason": "none of its inputs is in the bundle (no-such-kind)", "inputs": ["no-such-kind"]}]
    assert "skipped  t-absent: none of its inputs" in render_text(report)


def test_grouping_keeps_all_resources_and_caps_evidence(bundles):
    five = analyze(bundles["healthy"], [FiveSame()]).findings[0]
    assert [r.name for r in five.resources] == ["p0", "p1", "p2", "p3", "p4"]
    assert [e.path for e in five.evidence] == [f"x/{i}.json" for i in range(5)]
    assert five.references == ["https://example.invalid/ref"] and five.messages == []
    many = analyze(bundles["healthy"], [ManyEvidence()]).findings[0]
    assert many.count == 30 and len(many.resources) == 30
    assert len(many.evidence) == engine.MAX_EVIDENCE and many.evidence_omitted == 10
    assert many.messages[:2] == ["line 0", "line 1"] and many.messages_omitted == 10
    assert many.to_dict()["evidenceOmitted"] == 10


def test_ids_are_stable_across_runs_and_depend_on_resources(bundles):
    analyzers = [FiveSame(), PerZtunnel(), Mixed(), Crashes()]
    first, second = analyze(bundles["healthy"], analyzers), analyze(bundles["healthy"], analyzers)
    assert [f.id for f in first.findings] == [f.id for f in second.findings]
    one, two = first.to_dict(), second.to_dict()
    one.pop("analyzedAt"), two.pop("analyzedAt")
    assert one == two
    ids = [f.id for f in first.findings]
    assert len(set(ids)) == len(ids)
    five = next(f for f in first.findings if f.code == "same")
    assert five.id.startswith("t-five/same/") and len(five.id.rsplit("/", 1)[1]) == 12
    # the same findings on other resources have another id; a different order of emission does not matter
    with BundleModel.open(bundles["xds"]) as m:
        other = run_analyzers(m, [PerZtunnel()], now=NOW).findings[0]
    assert other.id != next(f for f in first.findings if f.code == "seen").id


def test_findings_are_ordered_by_severity_then_analyzer_code_resource(bundles):
    report = analyze(bundles["healthy"], [Mixed(), FiveSame(), PerZtunnel()])
    keys = [(f.severity, f.analyzer, f.code) for f in report.findings]
    assert keys == [("critical", "t-mixed", "c-critical"), ("error", "t-five", "same"), ("error", "t-mixed", "c-error"),
                    ("warning", "t-mixed", "c-warning"), ("info", "t-mixed", "c-info"), ("info", "t-zt", "seen")]
    assert report.summary() == {"info": 2, "warning": 1, "error": 2, "critical": 1, "total": 6}
    assert report.worst() == "critical"


def test_only_and_skip_select_by_id(bundles):
    both = [FiveSame(), Mixed()]
    assert {f.analyzer for f in analyze(bundles["healthy"], both, only=["t-five"]).findings} == {"t-five"}
    assert {f.analyzer for f in analyze(bundles["healthy"], both, skip=["t-five"]).findings} == {"t-mixed"}
    with pytest.raises(UnknownAnalyzerError, match="nope"):
        analyze(bundles["healthy"], both, only=["nope"])
    with pytest.raises(ValueError, match="twice"):
        analyze(bundles["healthy"], [FiveSame(), FiveSame()])


def test_views_are_collected_and_merged_for_the_html_report(bundles):
    report = analyze(bundles["healthy"], [Viewer(), Viewer2()])
    assert report.views == {"ztunnels": [{"pod": "a"}, {"pod": "b"}], "extra": {"k": 1, "j": 2}}
    assert "views" not in report.to_dict()
    html_doc = html_report(report, {"bundle": {"root": "x"}})
    assert html_doc["views"]["ztunnels"] == [{"pod": "a"}, {"pod": "b"}] and html_doc["views"]["bundle"] == {"root": "x"}
    assert validate_document(html_doc, layout.KIND_FINDINGS) == []


def test_entry_points_that_fail_to_load_become_internal_errors(bundles, monkeypatch):
    group = engine.ENTRY_POINT_GROUP
    fake = [
        importlib_metadata.EntryPoint("t-five", "tests.test_analysis_framework:FiveSame", group),
        importlib_metadata.EntryPoint("t-missing", "tests.no_such_module:Nothing", group),
        importlib_metadata.EntryPoint("t-misnamed", "tests.test_analysis_framework:Mixed", group),
        importlib_metadata.EntryPoint("t-notanalyzer", "tests.test_analysis_framework:meta", group),
    ]
    monkeypatch.setattr(engine, "_entry_points", lambda g: fake if g == group else [])
    registry = load_analyzers()
    assert [a.metadata.id for a in registry.analyzers] == ["t-five"]
    assert [e.id for e in registry.errors] == ["t-misnamed", "t-missing", "t-notanalyzer"]
    assert "differs from the analyzer's metadata.id 't-mixed'" in registry.errors[0].message
    report = analyze(bundles["healthy"], None)
    assert Counter((f.analyzer, f.code) for f in report.findings) == Counter(
        {("t-five", "same"): 1, ("t-misnamed", "internal-error"): 1, ("t-missing", "internal-error"): 1,
         ("t-notanalyzer", "internal-error"): 1})
    assert [r["id"] for r in report.to_dict()["analyzers"]["failed"]] == ["t-misnamed", "t-missing", "t-notanalyzer"]
    # a broken plug-in can be skipped like any analyzer
    assert {f.analyzer for f in analyze(bundles["healthy"], None, skip=["t-missing"]).findings} == {
        "t-five", "t-misnamed", "t-notanalyzer"}


def test_metadata_and_finding_are_checked():
    with pytest.raises(ValueError, match="severity"):
        meta("x", severity="fatal")
    with pytest.raises(ValueError, match="Metadata.id"):
        meta("has/slash")
    with pytest.raises(ValueError, match="inputs"):
        Metadata("x", "t", "info", "d", "docs", inputs="ztunnel-config-dump")  # type: ignore[arg-type]
    ctx = Context(None, meta("x"))
    with pytest.raises(ValueError):
        ctx.finding("c", "m", severity="fatal")
    finding = ctx.finding("c", "m", title="own title", severity="critical")
    assert (finding.analyzer, finding.title, finding.severity, finding.count) == ("x", "own title", "critical", 1)
    assert SEVERITIES == ("info", "warning", "error", "critical")


# --- suppressions --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "suppression, suppressed, kept",
    [
        (Suppression("t-five/same", "known"), 5, 0),
        (Suppression("t-five", "whole analyzer"), 5, 0),
        (Suppression("t-*/s*", "globs"), 5, 0),
        (Suppression("t-five/same", "two pods", resource="Pod/ns/p[01]"), 2, 3),
        (Suppression("t-five/other", "another code"), 0, 5),
        (Suppression("t-five/same", "another namespace", resource="Pod/other/*"), 0, 5),
        (Suppression("t-five/same", "still valid today", expires=NOW.date()), 5, 0),
    ],
    ids=["code", "analyzer", "glob", "resource", "no-match-code", "no-match-resource", "expires-today"],
)
def test_suppression_matching(bundles, suppression, suppressed, kept):
    report = analyze(bundles["healthy"], [FiveSame()], suppressions=[suppression])
    assert sum(s.finding.count for s in report.suppressed) == suppressed
    assert sum(f.count for f in report.findings) == kept
    for item in report.suppressed:
        assert item.suppression == suppression
    assert validate_document(report.to_dict(), layout.KIND_FINDINGS) == []


def test_expired_suppression_suppresses_nothing_and_is_a_warning(bundles):
    expired = Suppression("t-five/same", "accepted until the upgrade", expires=dt.date(2026, 11, 24), where="s.yaml: entry 1")
    report = analyze(bundles["healthy"], [FiveSame()], suppressions=[expired])
    assert report.suppressed == []
    assert Counter((f.analyzer, f.code, f.severity) for f in report.findings) == Counter(
        {("t-five", "same", "error"): 1, ("suppressions", "suppression-expired", "warning"): 1})
    warning = next(f for f in report.findings if f.code == "suppression-expired")
    assert "2026-11-24" in warning.message and "s.yaml: entry 1" in warning.message


def test_suppressions_file(tmp_path):
    good = tmp_path / "s.yaml"
    good.write_text(
        "- id: collection-gaps/istiod-proxy-view-404\n  resource: 'Pod/istio-system/ztunnel-*'\n"
        "  reason: node being replaced\n  expires: 2099-01-31\n"
        "- {id: schema-validation, reason: old istio}\n")
    loaded = load_suppressions(good)
    assert loaded[0] == Suppression("collection-gaps/istiod-proxy-view-404", "node being replaced",
                                    "Pod/istio-system/ztunnel-*", dt.date(2099, 1, 31), "s.yaml: entry 1")
    assert loaded[1].expires is None and loaded[1].resource is None
    wrapped = tmp_path / "w.yaml"
    wrapped.write_text("suppressions:\n- {id: a, reason: b, expires: '2026-01-01'}\n")
    assert load_suppressions(wrapped)[0].expires == dt.date(2026, 1, 1)
    for text, message in (
        ("- {id: a}\n", "reason"),
        ("- {reason: b}\n", "id must"),
        ("- {id: a, reason: b, until: 2026-01-01}\n", "unknown key"),
        ("- {id: a, reason: b, expires: soon}\n", "expires"),
        ("id: a\n", "expected a list"),
        ("- [unclosed\n", "not valid YAML"),
    ):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(SuppressionError, match=message):
            load_suppressions(bad)
    with pytest.raises(SuppressionError, match="no such file"):
        load_suppressions(tmp_path / "absent.yaml")


# --- built-in analyzers --------------------------------------------------------------------------------------


def test_collection_gaps_names_the_failed_artifact_and_what_it_hides(bundles):
    report = analyze(bundles["gappy"], [CollectionGaps()])
    dump = next(f for f in report.findings if f.code == "ztunnel-config-dump-missing")
    assert dump.severity == "warning"
    assert dump.resources == [Resource("Pod", "ztunnel-gap01", "istio-system", node="ambient-worker", ztunnel="ztunnel-gap01")]
    assert "unknown, not fine" in dump.message
    [evidence] = dump.evidence
    assert evidence.path == "manifest.json" and evidence.pointer is not None
    assert "config_dump.json: error: timeout after 30s" in (evidence.excerpt or "")
    truncated = next(f for f in report.findings if f.code == "logs-truncated")
    assert truncated.severity == "info" and "partial window" in truncated.message
    # the skipped previous log is normal: not a gap
    assert not any(".previous.log" in (e.excerpt or "") for f in report.findings for e in f.evidence)
    assert [g["status"] for g in report.views["gaps"]] == ["error", "truncated"]


def test_collection_gaps_on_xds_disconnected_names_the_ztunnel(bundles):
    report = analyze(bundles["xds"], [CollectionGaps()])
    [finding] = report.findings
    assert finding.severity == "warning" and "no xDS stream" in finding.message
    [resource] = finding.resources
    assert resource.kind == "Pod" and resource.node == "ambient-worker2" and resource.ztunnel == resource.name
    assert {e.excerpt.split(":")[0] for e in finding.evidence} == {
        f"istiod/proxies/{resource.name}/config_dump.json", f"istiod/proxies/{resource.name}/wads.json"}


def test_schema_validation_points_at_the_file_and_pointer(bundles):
    report = analyze(bundles["broken"], [SchemaValidation(), PerZtunnel()])
    invalid = next(f for f in report.findings if f.code == "schema-invalid")
    assert invalid.severity == "error"
    [evidence] = invalid.evidence
    assert evidence.path.startswith("ztunnel/") and evidence.path.endswith("/config_dump.json")
    assert evidence.pointer == "/workloads/0/protocol"
    unreadable = next(f for f in report.findings if f.code == "artifact-unreadable")
    assert unreadable.evidence[0].path.endswith("/ambientz.json") and "JSON" in unreadable.message
    assert any(f.analyzer == "t-zt" for f in report.findings)  # the rest of the analysis goes on


def test_registered_analyzers_are_sound():
    """istioctl's meta-tests: every registered analyzer loads, ids are unique and match the entry points,
    metadata is complete, and each built-in lives in its own analyzers/<module>.py."""
    registry = load_analyzers()
    assert registry.errors == []
    ids = [a.metadata.id for a in registry.analyzers]
    assert {"collection-gaps", "schema-validation"} <= set(ids) and len(ids) == len(set(ids))
    for analyzer in registry.analyzers:
        m = analyzer.metadata
        assert m.description and m.docs and m.title and m.severity in SEVERITIES, m.id
        module = type(analyzer).__module__
        if module.startswith("analyzers."):
            assert module.count(".") == 1, f"{m.id}: one analyzer per file, analyzers/<module>.py"
            for kind in m.inputs:
                assert kind in vars(layout).values(), f"{m.id}: input {kind!r} is not a bundler.layout kind"


# --- the command line ----------------------------------------------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bundler", "analyze", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


# The framework's own analyzers only: the domain analyzers have their own tests (tests/analyzers/).
BUILT_INS = ("--only", "collection-gaps", "--only", "schema-validation")


def test_cli_text_summary_on_stdout(bundles):
    healthy = cli(str(bundles["healthy"]), *BUILT_INS)
    assert healthy.returncode == 0, healthy.stderr
    out = healthy.stdout
    for expected in ("bundle        bookinfo-healthy", "cluster       v1.31.4", "istio         istiod 1.28.1",
                     "completeness  41/41 artifacts ok", "findings      0 (0 critical, 0 error, 0 warning, 0 info)",
                     "no findings"):
        assert expected in out
    xds = cli(str(bundles["xds"]), *BUILT_INS)
    assert xds.returncode == 0
    assert "completeness  39/41 artifacts ok (2 error)" in xds.stdout
    line = next(li for li in xds.stdout.splitlines() if li.startswith("WARNING"))
    assert "collection-gaps/istiod-proxy-view-404/" in line and "1 resource: Pod istio-system/ztunnel-" in line
    assert "evidence: manifest.json#/artifacts/" in xds.stdout


@pytest.mark.parametrize("args, code", [
    (["--fail-on", "warning"], 3),
    (["--fail-on", "error"], 0),
    (["--fail-on", "warning", "--format", "json"], 3),
    (["--fail-on", "critical", "--format", "json"], 0),
    ([], 0),
])
def test_cli_fail_on(bundles, args, code):
    result = cli(str(bundles["xds"]), *BUILT_INS, *args)
    assert result.returncode == code, result.stderr
    if "json" in args:
        json.loads(result.stdout)


def test_cli_json_validates_and_files_are_written(bundles, tmp_path):
    result = cli(str(bundles["xds"]), "--format", "json")
    document = json.loads(result.stdout)
    assert validate_document(document, layout.KIND_FINDINGS) == []
    assert document["bundle"]["root"] == str(bundles["xds"]) and document["bundle"]["name"] == "xds-gap"
    assert document["bundle"]["createdAt"] == "2026-11-25T12:00:00Z"
    assert document["bundle"]["cluster"]["context"] == "synth:xds-gap"
    assert document["summary"]["warning"] == 1
    assert {r["id"] for r in document["analyzers"]["run"]} >= {"collection-gaps", "schema-validation"}

    single = tmp_path / "one.json"
    assert cli(str(bundles["xds"]), "--format", "json", "-o", str(single)).returncode == 0
    assert validate_document(json.loads(single.read_text()), layout.KIND_FINDINGS) == []
    base = tmp_path / "report"
    both = cli(str(bundles["xds"]), "--format", "json,text", "-o", str(base))
    assert both.returncode == 0, both.stderr
    assert (tmp_path / "report.json").is_file() and "completeness" in (tmp_path / "report.txt").read_text()
    assert "completeness" in both.stdout and f"wrote {base}.json" in both.stderr

    usage = cli(str(bundles["xds"]), "--format", "json,text")
    assert usage.returncode == 2 and "-o PATH" in usage.stderr
    unknown = cli(str(bundles["xds"]), "--format", "pdf")
    assert unknown.returncode == 2


@pytest.mark.skipif(find_spec("bundler.report.html") is None, reason="bundler.report.html is not there yet")
def test_cli_html(bundles, tmp_path):
    result = cli(str(bundles["xds"]), "--format", "html,json", "-o", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "r.html").read_text()
    assert "<html" in html.lower() and "istiod-proxy-view-404" in html


def test_cli_only_skip(bundles):
    only = cli(str(bundles["xds"]), "--only", "schema-validation", "--format", "json")
    assert only.returncode == 0, only.stderr
    document = json.loads(only.stdout)
    assert [r["id"] for r in document["analyzers"]["run"]] == ["schema-validation"] and document["findings"] == []
    skipped = json.loads(cli(str(bundles["xds"]), "--skip", "collection-gaps", "--format", "json").stdout)
    assert "collection-gaps" not in {r["id"] for r in skipped["analyzers"]["run"]}
    unknown = cli(str(bundles["xds"]), "--only", "no-such-analyzer")
    assert unknown.returncode == 2 and "no-such-analyzer" in unknown.stderr and "Traceback" not in unknown.stderr


def test_cli_suppress(bundles, tmp_path):
    accepted = tmp_path / "accepted.yaml"
    accepted.write_text("- id: collection-gaps/istiod-proxy-view-404\n  resource: ambient-worker2\n"
                        "  reason: node being replaced\n  expires: 2099-12-31\n")
    result = cli(str(bundles["xds"]), *BUILT_INS, "--suppress", str(accepted), "--fail-on", "warning", "--format",
                 "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["findings"] == []
    [item] = document["suppressed"]
    assert item["code"] == "istiod-proxy-view-404" and item["suppression"]["reason"] == "node being replaced"
    assert validate_document(document, layout.KIND_FINDINGS) == []

    expired = tmp_path / "expired.yaml"
    expired.write_text("- {id: collection-gaps, reason: old, expires: 2020-01-01}\n")
    result = cli(str(bundles["xds"]), *BUILT_INS, "--suppress", str(expired), "--fail-on", "warning")
    assert result.returncode == 3
    assert "suppressions/suppression-expired/" in result.stdout and "istiod-proxy-view-404" in result.stdout

    broken = tmp_path / "broken.yaml"
    broken.write_text("- {id: x}\n")
    result = cli(str(bundles["xds"]), "--suppress", str(broken))
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "reason" in result.stderr


def test_cli_list_shows_the_built_ins():
    result = cli("--list")
    assert result.returncode == 0, result.stderr
    for expected in ("collection-gaps", "schema-validation", "artifacts not collected or truncated", "warning",
                     "docs/writing-analyzers.md#collection-gaps", "inputs:"):
        assert expected in result.stdout
    listed = json.loads(cli("--list", "--format", "json").stdout)
    assert {"collection-gaps", "schema-validation"} <= {a["id"] for a in listed["analyzers"]}


@pytest.mark.parametrize("content", [b"not a bundle at all", None], ids=["garbage", "absent"])
def test_cli_unreadable_bundle_is_one_line_exit_1(tmp_path, content):
    path = tmp_path / "x.tar.zst"
    if content is not None:
        path.write_bytes(content)
    result = cli(str(path))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_cli_missing_bundle_argument_is_a_usage_error():
    assert cli().returncode == 2


# --- a third-party plug-in -----------------------------------------------------------------------------------


def test_plugin_package_is_listed_and_runs(tmp_path, bundles):
    """tests/plugin_example installed the way a user would (pip), into a private folder put on PYTHONPATH: its
    entry point is found like a built-in's, and the shared environment is never touched (nothing to
    uninstall; the folder goes with tmp_path)."""
    source = tmp_path / "src"
    shutil.copytree(REPO / "tests" / "plugin_example", source)  # pip may write build files beside the sources
    site = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "--target", str(site), str(source)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}

    listed = cli("--list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "example.ztunnel-inventory" in listed.stdout and "ztunnel inventory" in listed.stdout
    result = cli(str(bundles["healthy"]), "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    [finding] = [f for f in document["findings"] if f["analyzer"] == "example.ztunnel-inventory"]
    assert finding["code"] == "inventory" and finding["count"] == 3 and finding["severity"] == "info"
    assert validate_document(document, layout.KIND_FINDINGS) == []
    # not installed here: the plug-in exists only for that subprocess
    assert "example.ztunnel-inventory" not in {a.metadata.id for a in load_analyzers().analyzers}
