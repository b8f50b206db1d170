"""``bundle validate FILE [--kind K]``: exit codes, output lines, and one-line errors without tracebacks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bundler import layout
from bundler.cli import cli, main

UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "upstream"
ISTIOCTL_TESTDATA = "istioctl/pkg/writer/ztunnel/configdump/testdata"
FIXTURE_122 = UPSTREAM / "istio" / ISTIOCTL_TESTDATA / "dump.json"
FIXTURE_LEGACY = UPSTREAM / "istio" / "@6e34ef5a88c" / ISTIOCTL_TESTDATA / "dump.json"


def ztunnel_dump() -> dict[str, Any]:
    """A small 1.23+ ztunnel config dump."""
    return {
        "certificates": [{"certChain": [], "identity": "spiffe://cluster.local/ns/default/sa/default", "state": "Initializing"}],
        "config": {},
        "policies": [{"action": "Allow", "dryRun": False, "name": "p", "namespace": "default", "rules": [], "scope": "Namespace"}],
        "services": [
            {
                "endpoints": {"Kubernetes//Pod/default/a": {"port": {"80": 8080}, "status": "Healthy", "workloadUid": "Kubernetes//Pod/default/a"}},
                "hostname": "svc.default.svc.cluster.local",
                "name": "svc",
                "namespace": "default",
                "ports": {"80": 8080},
                "subjectAltNames": [],
                "vips": ["/10.96.0.5"],
            }
        ],
        "staticConfig": {"policies": [], "services": [], "workloads": []},
        "version": {"istioVersion": "1.30.0", "version": "1.30.0"},
        "workloads": [
            {
                "clusterId": "Kubernetes",
                "name": f"pod-{index}",
                "namespace": "default",
                "protocol": "HBONE",
                "status": "Healthy",
                "uid": f"Kubernetes//Pod/default/pod-{index}",
                "workloadIps": [f"10.244.0.{index}"],
            }
            for index in range(12)
        ],
    }


def write(path: Path, document: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``bundle validate ...`` through bundler.cli.main (which turns a BundleError into one line)."""
    with pytest.raises(SystemExit) as exited:
        main(["validate", *map(str, args)])
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


def assert_one_line_error(code: int, out: str, err: str, fragment: str) -> None:
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]
    assert "Traceback" not in out + err


# --- valid and invalid files -------------------------------------------------------------------------------


def test_valid_file_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "dump.json", ztunnel_dump())
    code, out, err = run(capsys, path)
    assert (code, err) == (0, "")
    assert out == f"{path}: ztunnel-config-dump: valid\n"


def test_upstream_istioctl_fixture_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, FIXTURE_122)
    assert code == 0
    assert out.strip().endswith("ztunnel-config-dump: valid")


def test_invalid_file_lists_pointer_lines_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dump = ztunnel_dump()
    dump["workloads"][10]["protocol"] = "QUIC"
    dump["workloads"][3]["workloadIps"] = "10.244.0.3"
    dump["services"][0]["ports"]["80"] = "8080"
    dump["services"][0]["endpoints"]["Kubernetes//Pod/default/a"]["status"] = 1
    path = write(tmp_path / "dump.json", dump)
    code, out, err = run(capsys, path)
    assert (code, err) == (1, "")
    lines = out.splitlines()
    assert [line.split(": ", 1)[0] for line in lines[:-1]] == [
        "/services/0/endpoints/Kubernetes~1~1Pod~1default~1a/status",
        "/services/0/ports/80",
        "/workloads/3/workloadIps",
        "/workloads/10/protocol",
    ]
    assert lines[2] == '/workloads/3/workloadIps: expected array, got string "10.244.0.3"'
    assert '"QUIC" is not one of "TCP", "HBONE"' in lines[3]
    assert lines[-1] == f"{path}: ztunnel-config-dump: 4 error(s)"


def test_root_errors_use_slash_as_pointer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "version.json", {"major": "1", "minor": "33"})
    code, out, _ = run(capsys, path, "--kind", layout.KIND_K8S_VERSION)
    assert code == 1
    assert out.splitlines() == ['/: missing required property "gitVersion"', f"{path}: kubernetes-version: 1 error(s)"]


def test_unknown_keys_are_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dump = ztunnel_dump()
    dump["newTopLevel"] = {"x": 1}
    dump["workloads"][0]["fancyNewField"] = [1, 2, 3]
    dump["services"][0]["endpoints"]["Kubernetes//Pod/default/a"]["weight"] = 3
    code, out, _ = run(capsys, write(tmp_path / "dump.json", dump))
    assert code == 0 and out.endswith("valid\n")


# --- kind selection ----------------------------------------------------------------------------------------


def test_kind_option_overrides_detection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "dump.json", ztunnel_dump())
    code, out, _ = run(capsys, path, "--kind", layout.KIND_K8S_OBJECT)
    assert code == 1
    assert out.splitlines()[-1] == f"{path}: kubernetes-object: 3 error(s)"


def test_kind_from_bundle_layout_when_manifest_is_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty object is istiod's per-proxy dump on Istio >= 1.25; only its place in the bundle tells."""
    root = tmp_path / "bundle"
    write(root / "manifest.json", {"formatVersion": 1, "artifacts": []})
    path = write(root / "istiod" / "proxies" / "ztunnel-8xkq2" / "config_dump.json", {})
    code, out, _ = run(capsys, path)
    assert code == 0
    assert out == f"{path}: istiod-config-dump: valid\n"


def test_kind_from_the_last_path_components_without_a_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "extracted" / "istiod" / "proxies" / "ztunnel-8xkq2" / "wads.json", {})
    code, out, _ = run(capsys, path)
    assert code == 0
    assert out == f"{path}: istiod-wads: valid\n"
    path = write(tmp_path / "extracted" / "ztunnel" / "node-1" / "ztunnel-8xkq2" / "config_dump.json", {})
    code, out, _ = run(capsys, path)
    assert code == 1
    assert out.splitlines() == [
        '/: missing required property "policies"',
        '/: missing required property "services"',
        '/: missing required property "workloads"',
        f"{path}: ztunnel-config-dump: 3 error(s)",
    ]


def test_undetectable_kind_asks_for_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "thing.json", {"hello": "world"})
    assert_one_line_error(*run(capsys, path), "cannot detect the kind; use --kind")
    path = write(tmp_path / "empty-object.json", {})
    assert_one_line_error(*run(capsys, path), "cannot detect the kind; use --kind")


def test_text_artifacts_are_not_schema_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ztunnel" / "node-1" / "ztunnel-8xkq2" / "metrics.txt"
    path.parent.mkdir(parents=True)
    path.write_text("# EOF\n", encoding="utf-8")
    code, out, _ = run(capsys, path)
    assert code == 0
    assert out == f"{path}: ztunnel-metrics: not schema-validated (not a JSON artifact)\n"


def test_unknown_kind_option_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "dump.json", ztunnel_dump())
    code, _, err = run(capsys, path, "--kind", "istio-proto")
    assert code == 2
    assert "Invalid value for '--kind'" in err


def test_kind_choices_are_the_schema_kinds() -> None:
    result = CliRunner().invoke(cli, ["validate", "--help"])
    assert result.exit_code == 0
    for kind in sorted(layout.JSON_KINDS):
        assert kind in result.output


def test_click_runner_reports_errors_and_exit_code(tmp_path: Path) -> None:
    dump = ztunnel_dump()
    dump["policies"][0]["scope"] = "Cluster"
    path = write(tmp_path / "dump.json", dump)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    assert result.output.splitlines()[0].startswith("/policies/0/scope: ")


# --- one-line errors ---------------------------------------------------------------------------------------


def test_malformed_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dump.json"
    path.write_text('{"workloads": [\n  {"name": "a",}\n]}', encoding="utf-8")
    assert_one_line_error(*run(capsys, path), "malformed JSON at line 2, column")


def test_legacy_121_dump(capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(*run(capsys, FIXTURE_LEGACY), "ztunnel config dump in the <=1.21 layout (by_addr/by_uid) is not supported")


def test_legacy_121_dump_with_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(*run(capsys, FIXTURE_LEGACY, "--kind", layout.KIND_ZTUNNEL_CONFIG_DUMP), "is not supported")


def test_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.json"
    path.write_bytes(b"")
    assert_one_line_error(*run(capsys, path), "malformed JSON at line 1, column 1")


def test_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(*run(capsys, tmp_path), "is a directory")


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(*run(capsys, tmp_path / "nope.json"), "no such file")


def test_nested_5000_deep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "deep.json"
    path.write_bytes(b"[" * 5000)
    assert_one_line_error(*run(capsys, path, "--kind", layout.KIND_ISTIOD_SYNCZ), "nested deeper than 1024 levels")
    path.write_bytes(b"[" * 5000 + b"]" * 5000)
    assert_one_line_error(*run(capsys, path), "nested deeper than 1024 levels")


def test_binary_garbage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "garbage.json"
    path.write_bytes(b"\x00\xff\xfe\x28\xb5\x2f\xfd")
    assert_one_line_error(*run(capsys, path), "malformed JSON")


# --- in a real process ---------------------------------------------------------------------------------------


def _process(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from bundler.cli import main; main()", "validate", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"[" * 5000, "nested deeper than 1024 levels"),
        (b"", "malformed JSON"),
        (b'{"a": ', "malformed JSON"),
    ],
    ids=["deep", "empty", "truncated"],
)
def test_process_prints_one_line_and_exits_1(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "artifact.json"
    path.write_bytes(content)
    result = _process(str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert fragment in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_process_exit_codes_for_valid_and_invalid(tmp_path: Path) -> None:
    valid = write(tmp_path / "ok.json", ztunnel_dump())
    result = _process(str(valid))
    assert (result.returncode, result.stderr) == (0, "")
    dump = ztunnel_dump()
    dump["workloads"][0]["status"] = "Sick"
    invalid = write(tmp_path / "bad.json", dump)
    result = _process(str(invalid))
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith("/workloads/0/status: ")


@pytest.mark.skipif(shutil.which("bundle") is None, reason="the bundle console script is not installed")
def test_installed_script(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bundle", "validate", str(FIXTURE_LEGACY)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "not supported" in result.stderr
    assert "Traceback" not in result.stderr
