"""``bundle inspect`` and ``bundle verify``, through the real entry point (bundler.cli.main) and click's runner."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner

from bundler import layout
from bundler.archive import BundleWriter, extract_bundle, open_bundle
from bundler.cli import cli, main
from bundler.commands.verify import verify_bundle

MTIME = 1764000000
ROOT = "bookinfo-incident"
ZT_A = layout.ztunnel_file("node-a", "ztunnel-abc", "config_dump.json")
ZT_B = layout.ztunnel_file("node-b", "ztunnel-def", "config_dump.json")
ZT_C = layout.ztunnel_file("node-c", "ztunnel-ghi", "config_dump.json")
LOG_A = layout.ztunnel_log("node-a", "ztunnel-abc")
DUMP = b'{"workloads": [{"uid": "a"}], "services": []}'


def write_bundle(path: Path) -> Path:
    with BundleWriter(path, root=ROOT, mtime=MTIME) as w:
        m = w.manifest
        m.command_line = ["bundle", "collect", "-n", "bookinfo"]
        m.window.start, m.window.end = "2026-11-25T14:00:00Z", "2026-11-25T14:05:00Z"
        m.window.logs_since = "2026-11-25T13:00:00Z"
        m.scope.mode, m.scope.namespaces = "namespace", ["bookinfo"]
        m.cluster.server_version, m.cluster.context, m.cluster.node_count = "v1.33.1", "kind-ambient", 3
        m.cluster.istio_versions.update(istiod=["1.28.0"], ztunnel=["1.28.0"], cni=["1.28.0"])
        api = {"type": "api", "verb": "list"}
        w.add(layout.k8s_version(), b'{"gitVersion": "v1.33.1"}', source=api)
        w.add(layout.k8s_list("pods"), b'{"items": []}', source=api)
        w.add(layout.istiod_file("istiod-6d9f", "version.txt"), b"1.28.0\n", source={"type": "proxy", "port": 15014})
        w.add(layout.istiod_file("istiod-7a1b", "version.txt"), b"1.28.0\n", source={"type": "proxy", "port": 15014})
        w.add(layout.istiod_proxy_dump("ztunnel-abc"), b'{"configs": []}', source={"type": "proxy", "port": 15014})
        w.add(ZT_A, DUMP, source={"type": "portforward", "port": 15000})
        w.add(ZT_B, DUMP, source={"type": "portforward", "port": 15000})
        w.record(ZT_C, source={"type": "portforward", "port": 15000}, status="error", reason="timeout after 30s")
        w.record(layout.cni_log("node-c", "istio-cni-x"), source={"type": "logs"}, status="skipped",
                 reason="pod not running")  # fmt: skip
        w.add(LOG_A, b"x" * 4000, source={"type": "logs"}, status="truncated", reason="kept the last 4000 bytes")
    return path


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return write_bundle(tmp_path / f"{ROOT}.tar.zst")


@pytest.fixture
def extracted(archive: Path, tmp_path: Path) -> Path:
    return extract_bundle(archive, tmp_path / "x")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the real entry point; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code, out, err


def assert_one_error_line(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0]


# --- verify ----------------------------------------------------------------------------------------------


def test_verify_clean_archive(archive: Path, capsys) -> None:
    code, out, err = run(capsys, "verify", str(archive))
    assert code == 0, err
    assert out.strip().splitlines() == ["ok: 8 members match the manifest (2 artifacts not collected)"]
    assert err == ""


@pytest.mark.parametrize("form", ["bundle folder", "parent folder"])
def test_verify_clean_directory(extracted: Path, capsys, form: str) -> None:
    given = extracted if form == "bundle folder" else extracted.parent
    code, out, err = run(capsys, "verify", str(given))
    assert code == 0, err
    assert out.startswith("ok: 8 members match")


def test_verify_flipped_byte(extracted: Path, capsys) -> None:
    member = extracted / ZT_A
    data = bytearray(member.read_bytes())
    data[10] ^= 0x01
    member.write_bytes(bytes(data))
    code, out, err = run(capsys, "verify", str(extracted))
    assert code == 1
    assert out.strip().splitlines() == [f"altered  {ZT_A}: " + out.split(f"{ZT_A}: ", 1)[1].strip()]
    assert "sha256" in out
    assert_one_error_line(err, "verification failed", "1 altered", "7 of 8 members match")


def test_verify_size_change(extracted: Path, capsys) -> None:
    with open(extracted / LOG_A, "ab") as fh:
        fh.write(b"more")
    code, out, err = run(capsys, "verify", str(extracted))
    assert code == 1
    assert f"altered  {LOG_A}: size 4004 bytes, the manifest says 4000" in out


def test_verify_removed_member(extracted: Path, capsys) -> None:
    (extracted / ZT_B).unlink()
    code, out, err = run(capsys, "verify", str(extracted))
    assert code == 1
    assert out.strip().splitlines() == [f"missing  {ZT_B}: status ok in the manifest, no member"]
    assert_one_error_line(err, "1 missing")


def test_verify_extra_member(extracted: Path, capsys) -> None:
    (extracted / "cluster" / "notes.txt").write_text("added by hand\n")
    (extracted / ZT_C).parent.mkdir(parents=True)
    (extracted / ZT_C).write_bytes(b"{}")  # the manifest says this one was not collected
    code, out, err = run(capsys, "verify", str(extracted))
    assert code == 1
    lines = sorted(out.strip().splitlines())
    assert lines == [
        "extra    cluster/notes.txt: 14 bytes, not in the manifest",
        f"extra    {ZT_C}: present, but the manifest says error (not collected)",
    ]
    assert_one_error_line(err, "2 extra")


def test_verify_missing_manifest(extracted: Path, capsys) -> None:
    (extracted / layout.MANIFEST).unlink()
    code, out, err = run(capsys, "verify", str(extracted.parent))
    assert code == 1
    assert out.strip() == "manifest manifest.json: missing: 8 members cannot be checked"
    assert_one_error_line(err, "1 manifest")


def test_verify_archive_without_manifest(tmp_path: Path, capsys) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo(f"{ROOT}/{ZT_A}")
        info.size = len(DUMP)
        tf.addfile(info, io.BytesIO(DUMP))
    path = tmp_path / "nomanifest.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
    code, out, err = run(capsys, "verify", str(path))
    assert code == 1
    assert "manifest manifest.json: missing" in out


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"formatVersion": 1, "artifacts": [{"path": "a", "status": "weird"}]}', "artifacts[0].status"),
    ],
)
def test_verify_unparsable_manifest(extracted: Path, capsys, content: bytes, words: str) -> None:
    (extracted / layout.MANIFEST).write_bytes(content)
    code, out, err = run(capsys, "verify", str(extracted))
    assert code == 1
    assert out.startswith("manifest manifest.json: unreadable:")
    assert words in out
    assert_one_error_line(err, "verification failed")


def test_verify_several_problems_at_once(extracted: Path) -> None:
    (extracted / ZT_B).unlink()
    (extracted / ZT_A).write_bytes(b"{}")
    (extracted / "extra.bin").write_bytes(b"\0")
    with open_bundle(extracted) as bundle:
        result = verify_bundle(bundle)
    assert sorted((p.kind, p.path) for p in result.problems) == [
        ("altered", ZT_A),
        ("extra", "extra.bin"),
        ("missing", ZT_B),
    ]
    assert not result.ok
    assert result.summary().startswith("verification failed: 3 problems (1 altered, 1 extra, 1 missing)")


def test_verify_with_click_runner(archive: Path, extracted: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(cli, ["verify", str(archive)])
    assert ok.exit_code == 0, ok.output
    assert "ok: 8 members match" in ok.stdout
    (extracted / ZT_A).write_bytes(b"{}")
    bad = runner.invoke(cli, ["verify", str(extracted)])
    assert bad.exit_code == 1
    assert f"altered  {ZT_A}" in bad.stdout


@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_commands_refuse_hostile_archives(tmp_path: Path, capsys, command: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ok = tarfile.TarInfo(f"{ROOT}/cluster/nodes.json")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"[]"))
        link = tarfile.TarInfo(f"{ROOT}/cluster/pods.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tf.addfile(link)
    path = tmp_path / "hostile.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
    code, out, err = run(capsys, command, str(path))
    assert code == 1
    assert_one_error_line(err, "hostile.tar.zst", "symbolic link", "cluster/pods.json")


@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_commands_refuse_damaged_input(archive: Path, tmp_path: Path, capsys, command: str) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    code, _, err = run(capsys, command, str(text))
    assert code == 1
    assert_one_error_line(err, "notes.txt: not a ztunnel-bundle archive")

    cut = tmp_path / "cut.tar.zst"
    cut.write_bytes(archive.read_bytes()[:-20])
    code, _, err = run(capsys, command, str(cut))
    assert code == 1
    assert_one_error_line(err, "cut.tar.zst: truncated")

    code, _, err = run(capsys, command, str(tmp_path / "missing.tar.zst"))
    assert code == 1
    assert_one_error_line(err, "no such file")


# --- inspect ---------------------------------------------------------------------------------------------


def test_inspect_json(archive: Path, capsys) -> None:
    code, out, err = run(capsys, "inspect", str(archive), "-o", "json")
    assert code == 0, err
    summary = json.loads(out)
    with open_bundle(archive) as bundle:
        member_bytes = sum(m.size for m in bundle.members())
    assert summary["bundle"] == {
        "source": str(archive),
        "root": ROOT,
        "type": "archive",
        "archiveBytes": archive.stat().st_size,
        "members": 9,
        "memberBytes": member_bytes,
    }
    assert summary["formatVersion"] == 1
    assert summary["tool"]["name"] == "ztunnel-bundle"
    assert summary["generator"] == "collect"
    assert summary["createdAt"] == "2025-11-24T16:00:00Z"
    assert summary["window"] == {
        "start": "2026-11-25T14:00:00Z",
        "end": "2026-11-25T14:05:00Z",
        "logsSince": "2026-11-25T13:00:00Z",
    }
    assert summary["scope"]["mode"] == "namespace" and summary["scope"]["namespaces"] == ["bookinfo"]
    assert summary["cluster"]["serverVersion"] == "v1.33.1"
    assert summary["cluster"]["istioVersions"]["ztunnel"] == ["1.28.0"]
    assert summary["nodes"] == ["node-a", "node-b", "node-c"]
    assert summary["ztunnels"] == {"node-a": ["ztunnel-abc"], "node-b": ["ztunnel-def"], "node-c": ["ztunnel-ghi"]}
    assert summary["istiod"] == ["istiod-6d9f", "istiod-7a1b"]
    assert summary["cni"] == {"node-c": ["istio-cni-x"]}
    artifacts = summary["artifacts"]
    assert artifacts["total"] == 10
    assert artifacts["byStatus"] == {
        "ok": {"count": 7, "bytes": 25 + 13 + 7 + 7 + 15 + 2 * len(DUMP)},
        "error": {"count": 1, "bytes": 0},
        "skipped": {"count": 1, "bytes": 0},
        "truncated": {"count": 1, "bytes": 4000},
    }
    assert artifacts["byKind"][layout.KIND_ZTUNNEL_CONFIG_DUMP] == {"count": 3, "bytes": 2 * len(DUMP)}
    assert artifacts["byKind"][layout.KIND_ISTIOD_VERSION] == {"count": 2, "bytes": 14}
    assert summary["collectionErrors"] == [
        {"path": ZT_C, "kind": layout.KIND_ZTUNNEL_CONFIG_DUMP, "status": "error", "reason": "timeout after 30s"},
        {"path": layout.cni_log("node-c", "istio-cni-x"), "kind": layout.KIND_CNI_LOG, "status": "skipped",
         "reason": "pod not running"},
        {"path": LOG_A, "kind": layout.KIND_ZTUNNEL_LOG, "status": "truncated", "reason": "kept the last 4000 bytes"},
    ]  # fmt: skip


def test_inspect_json_is_stable(archive: Path, extracted: Path, capsys) -> None:
    first = run(capsys, "inspect", "-o", "json", str(archive))[1]
    second = run(capsys, "inspect", "-o", "json", str(archive))[1]
    assert first == second
    on_dir = json.loads(run(capsys, "inspect", "-o", "json", str(extracted))[1])
    on_archive = json.loads(first)
    assert on_dir["bundle"]["type"] == "directory" and on_dir["bundle"]["archiveBytes"] is None
    for key in ("bundle", "tool"):
        on_dir.pop(key), on_archive.pop(key)
    assert on_dir == on_archive


def test_inspect_text(archive: Path, capsys) -> None:
    code, out, err = run(capsys, "inspect", str(archive))
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(" ")}
    assert f"{ROOT} (archive {archive.name})" in rows["bundle"]
    assert "1, written by ztunnel-bundle" in rows["format"]
    assert "2026-11-25T14:00:00Z .. 2026-11-25T14:05:00Z, logs since 2026-11-25T13:00:00Z" in rows["window"]
    assert "namespace; namespaces: bookinfo" in rows["scope"]
    assert "v1.33.1, context kind-ambient, 3 nodes" in rows["cluster"]
    assert "istiod 1.28.0; ztunnel 1.28.0; cni 1.28.0" in rows["istio"]
    assert "in 9 members; archive" in rows["size"]
    assert "node-a, node-b, node-c" in rows["nodes"]
    assert "node-a  ztunnel-abc" in rows["ztunnels"]
    assert "istiod-6d9f, istiod-7a1b" in rows["istiod"]
    assert "7 ok, 1 error, 1 skipped, 1 truncated" in rows["artifacts"]
    assert "collection errors (3)" in out
    assert f"error     {ZT_C}" in out and "timeout after 30s" in out
    assert "ztunnel-config-dump" in out
    # aligned: every labelled row puts its value in the same column
    columns = {len(line) - len(line[16:].lstrip()) for line in rows.values() if len(line) > 16}
    assert columns == {16}


def test_inspect_missing_manifest(extracted: Path, capsys) -> None:
    (extracted / layout.MANIFEST).unlink()
    code, _, err = run(capsys, "inspect", str(extracted))
    assert code == 1
    assert_one_error_line(err, "no manifest.json")


def test_inspect_with_click_runner(extracted: Path) -> None:
    result = CliRunner().invoke(cli, ["inspect", "-o", "json", str(extracted)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["bundle"]["root"] == ROOT
    assert CliRunner().invoke(cli, ["inspect", "-o", "yaml", str(extracted)]).exit_code == 2
