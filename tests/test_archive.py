"""The archive format: BundleWriter, the manifest model and schema, open_bundle / extract_bundle."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard
from jsonschema import Draft202012Validator

from bundler import __version__, layout
from bundler.archive import (
    ZSTD_WINDOW_LOG,
    ArchiveBundle,
    BundleWriter,
    DirectoryBundle,
    MemberNotFound,
    check_member_path,
    extract_bundle,
    open_bundle,
)
from bundler.errors import BundleError, BundleFormatError
from bundler.manifest import Artifact, Manifest
from bundler.resources import schemas_dir

MTIME = 1764000000
ROOT = "bookinfo-incident"

ZT_A = layout.ztunnel_file("node-a", "ztunnel-abc", "config_dump.json")
ZT_B = layout.ztunnel_file("node-b", "ztunnel-def", "config_dump.json")

# (path, data, source), roughly in layout.order_key order
MEMBERS: list[tuple[str, bytes, dict]] = [
    (layout.k8s_version(), b'{"gitVersion": "v1.33.1"}', {"type": "api", "verb": "get", "apiPath": "/version"}),
    (layout.k8s_list("pods"), b'{"kind": "PodList", "items": []}', {"type": "api", "verb": "list", "apiPath": "/api/v1/pods"}),
    (layout.istiod_file("istiod-6d9f", "version.txt"), b"1.28.0\n", {"type": "proxy", "port": 15014, "urlPath": "/version"}),
    (layout.istiod_file("istiod-6d9f", "ambientz.json"), b'{"workloads": []}', {"type": "proxy", "port": 15014}),
    (layout.istiod_proxy_dump("ztunnel-abc"), b'{"configs": []}', {"type": "proxy", "port": 15014, "replica": "istiod-6d9f"}),
    (ZT_A, b'{"workloads": [{"uid": "a"}]}' * 50, {"type": "portforward", "pod": "ztunnel-abc", "port": 15000}),
    (layout.ztunnel_file("node-a", "ztunnel-abc", "metrics.txt"), b"istio_build{} 1\n# EOF\n", {"type": "proxy", "port": 15020}),
    (layout.ztunnel_log("node-a", "ztunnel-abc"), b"".join(b"line %d\n" % i for i in range(2000)), {"type": "logs"}),
]


def write_sample(path: Path, root: str = ROOT, mtime: int = MTIME) -> Path:
    with BundleWriter(path, root=root, mtime=mtime) as w:
        w.manifest.command_line = ["bundle", "collect", "-n", "bookinfo"]
        w.manifest.cluster.server_version = "v1.33.1"
        w.manifest.cluster.istio_versions["istiod"] = ["1.28.0"]
        for member_path, data, source in MEMBERS:
            w.add(member_path, data, source=source, started="2026-11-25T14:05:00Z", finished="2026-11-25T14:05:01Z")
        w.record(ZT_B, source={"type": "portforward", "pod": "ztunnel-def", "port": 15000}, status="error",
                 reason="timeout after 30s")  # fmt: skip
    return path


def zstd_file(path: Path, raw: bytes) -> Path:
    path.write_bytes(zstandard.ZstdCompressor().compress(raw))
    return path


def decompressed(path: Path) -> bytes:
    with path.open("rb") as fh:
        return zstandard.ZstdDecompressor().stream_reader(fh).read()


def tar_bytes(entries: list[tuple[str, str, bytes | str]]) -> bytes:
    """A tar built by hand: entries are (name, type, payload) with type file|dir|symlink|hardlink|fifo|chr."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(payload, bytes)
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
                "chr": tarfile.CHRTYPE,
            }[kind]
            if kind in ("symlink", "hardlink"):
                assert isinstance(payload, str)
                info.linkname = payload
            tf.addfile(info)
    return buf.getvalue()


def has_tar_zstd() -> bool:
    if shutil.which("tar") is None or shutil.which("zstd") is None:
        return False
    out = subprocess.run(["tar", "--help"], capture_output=True, text=True)
    return "--zstd" in out.stdout


needs_tar_zstd = pytest.mark.skipif(not has_tar_zstd(), reason="tar --zstd not available")
needs_zstd_cli = pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd CLI not available")


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return write_sample(tmp_path / f"{ROOT}.tar.zst")


# --- round trip ------------------------------------------------------------------------------------------


def expected_names() -> list[str]:
    return [p for p, _, _ in MEMBERS] + [layout.MANIFEST]


def check_contents(bundle) -> None:
    assert bundle.root == ROOT
    assert sorted(bundle.names()) == sorted(expected_names())
    for member_path, data, _ in MEMBERS:
        assert bundle.read(member_path) == data
        assert bundle.size(member_path) == len(data)
    manifest = bundle.manifest
    assert manifest.format_version == layout.FORMAT_VERSION
    assert manifest.tool.name == "ztunnel-bundle" and manifest.tool.version == __version__
    assert manifest.generator == "collect"
    assert manifest.command_line == ["bundle", "collect", "-n", "bookinfo"]
    assert manifest.created_at == "2025-11-24T16:00:00Z"
    assert manifest.cluster.server_version == "v1.33.1"
    assert [a.path for a in manifest.artifacts] == [p for p, _, _ in MEMBERS] + [ZT_B]
    for art, (member_path, data, source) in zip(manifest.artifacts, MEMBERS):
        assert art.status == "ok"
        assert art.size == len(data)
        assert art.sha256 == hashlib.sha256(data).hexdigest()
        assert art.kind == layout.kind_of_path(member_path)
        assert art.source == source
    failed = manifest.artifact(ZT_B)
    assert failed is not None
    assert (failed.status, failed.reason, failed.size, failed.sha256) == ("error", "timeout after 30s", 0, None)
    assert ZT_B not in bundle


def test_round_trip_archive(archive: Path) -> None:
    with open_bundle(archive) as bundle:
        assert isinstance(bundle, ArchiveBundle)
        assert bundle.is_archive and bundle.archive_size == archive.stat().st_size
        # stored order is call order, and the manifest is the last member
        assert bundle.names() == expected_names()
        check_contents(bundle)


def test_round_trip_directory_both_forms(archive: Path, tmp_path: Path) -> None:
    top = extract_bundle(archive, tmp_path / "out")
    assert top == tmp_path / "out" / ROOT
    for given in (top, tmp_path / "out"):  # the bundle folder, and the folder tar -xf extracts into
        with open_bundle(given) as bundle:
            assert isinstance(bundle, DirectoryBundle)
            assert not bundle.is_archive and bundle.archive_size is None
            check_contents(bundle)
            # a directory lists members in layout order
            assert bundle.names() == sorted(expected_names(), key=layout.order_key)


def test_directory_beside_the_archive(archive: Path, tmp_path: Path) -> None:
    """`cd x && tar -xf bundle.tar.zst` leaves the archive beside the extracted folder."""
    folder = tmp_path / "x"
    extract_bundle(archive, folder)
    shutil.copy(archive, folder / archive.name)
    with open_bundle(folder) as bundle:
        assert bundle.root == ROOT
        check_contents(bundle)


def test_iter_members_streams_in_stored_order(archive: Path) -> None:
    with open_bundle(archive) as bundle:
        seen = [(p, d) for p, d in bundle.iter_members()]
        assert [p for p, _ in seen] == expected_names()
        assert dict(seen)[ZT_A] == MEMBERS[5][1]
        picked = [p for p, _ in bundle.iter_members(lambda p: p.startswith("ztunnel/"))]
        assert picked == [p for p, _, _ in MEMBERS if p.startswith("ztunnel/")]


def test_iter_members_fills_the_index(archive: Path) -> None:
    bundle = open_bundle(archive)
    for _ in bundle.iter_members(lambda p: False):
        pass
    assert bundle._manifest_raw is not None  # noqa: SLF001  (no second pass needed for the manifest)
    assert bundle.manifest.artifacts
    bundle.close()


def test_open_streams_a_member_and_random_access(archive: Path) -> None:
    log = layout.ztunnel_log("node-a", "ztunnel-abc")
    with open_bundle(archive) as bundle:
        with bundle.open(log) as fh:
            assert fh.readline() == b"line 0\n"
            assert sum(1 for _ in fh) == 1999
        # backwards after forwards, and again
        assert bundle.read(log).endswith(b"line 1999\n")
        assert bundle.read(layout.k8s_version()) == MEMBERS[0][1]
        assert bundle.read(log).startswith(b"line 0\n")
        with pytest.raises(MemberNotFound) as info:
            bundle.read("nope.json")
        assert isinstance(info.value, KeyError)
        assert "nope.json" in str(info.value)


def test_add_file_and_fileobj(tmp_path: Path) -> None:
    local = tmp_path / "spool.log"
    local.write_bytes(os.urandom(3 << 20))  # larger than the writer's 1 MiB chunk
    out = tmp_path / "b.tar.zst"
    with BundleWriter(out, root="b", mtime=MTIME, generator="synth") as w:
        art = w.add_file(layout.ztunnel_log("n", "z"), local, source={"type": "logs"})
        w.add_fileobj(layout.cni_log("n", "c"), io.BytesIO(b"abcdef"), 3, status="truncated", reason="kept 3 bytes")
    assert art.size == local.stat().st_size
    assert art.sha256 == hashlib.sha256(local.read_bytes()).hexdigest()
    with open_bundle(out) as bundle:
        assert bundle.read(layout.ztunnel_log("n", "z")) == local.read_bytes()
        assert bundle.read(layout.cni_log("n", "c")) == b"abc"
        cni = bundle.manifest.artifact(layout.cni_log("n", "c"))
        assert cni is not None and (cni.status, cni.source) == ("truncated", {"type": "synth"})


def test_add_sorted_uses_layout_order(tmp_path: Path) -> None:
    out = tmp_path / "s.tar.zst"
    shuffled = list(reversed(MEMBERS))
    with BundleWriter(out, mtime=MTIME) as w:
        w.add_sorted([(p, d, {"source": s}) for p, d, s in shuffled])
    with open_bundle(out) as bundle:
        assert bundle.root == "s"  # default root: the file name without .tar.zst
        assert bundle.names() == sorted((p for p, _, _ in MEMBERS), key=layout.order_key) + [layout.MANIFEST]


def test_extra_keys_are_merged(tmp_path: Path) -> None:
    out = tmp_path / "e.tar.zst"
    with BundleWriter(out, mtime=MTIME) as w:
        w.add(ZT_A, b"{}", source={"type": "portforward"}, extra={"redactions": {"certificates": 2}})
    with open_bundle(out) as bundle:
        raw = json.loads(bundle.read(layout.MANIFEST))
        assert raw["artifacts"][0]["redactions"] == {"certificates": 2}
        assert bundle.manifest.artifacts[0].extra == {"redactions": {"certificates": 2}}


# --- determinism and stock tools -------------------------------------------------------------------------


def test_deterministic(tmp_path: Path) -> None:
    a = write_sample(tmp_path / "a.tar.zst")
    b = write_sample(tmp_path / "b.tar.zst")
    assert a.read_bytes() == b.read_bytes()
    c = write_sample(tmp_path / "c.tar.zst", mtime=MTIME + 1)
    assert a.read_bytes() != c.read_bytes()


def test_tar_headers_are_normalised(archive: Path) -> None:
    raw = decompressed(archive)
    assert len(raw) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = tf.getmembers()
    assert [m.name for m in members] == [f"{ROOT}/{p}" for p in expected_names()]
    for m in members:
        assert (m.isreg(), m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (True, MTIME, 0, 0, "", "", 0o644)


def test_zstd_parameters(archive: Path) -> None:
    params = zstandard.get_frame_parameters(archive.read_bytes()[:18])
    assert params.window_size == 1 << ZSTD_WINDOW_LOG


@needs_tar_zstd
def test_stock_tar_lists_and_extracts(archive: Path, tmp_path: Path) -> None:
    listed = subprocess.run(["tar", "--zstd", "-tf", str(archive)], capture_output=True, text=True, check=True)
    assert listed.stdout.splitlines() == [f"{ROOT}/{p}" for p in expected_names()]
    target = tmp_path / "x"
    target.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", str(archive)], cwd=target, check=True)
    assert [p.name for p in target.iterdir()] == [ROOT]
    assert (target / ROOT / ZT_A).read_bytes() == MEMBERS[5][1]
    with open_bundle(target) as bundle:
        check_contents(bundle)


@needs_zstd_cli
def test_stock_zstd_decompresses(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "plain.tar"
    subprocess.run(["zstd", "-q", "-d", str(archive), "-o", str(out)], check=True)
    with tarfile.open(out) as tf:
        assert tf.getnames()[-1] == f"{ROOT}/{layout.MANIFEST}"


@needs_tar_zstd
def test_reads_an_archive_made_by_stock_tar(archive: Path, tmp_path: Path) -> None:
    """A bundle written by hand (GNU tar, directory entries, zstd checksum) reads the same."""
    top = extract_bundle(archive, tmp_path / "x")
    repacked = tmp_path / "repacked.tar.zst"
    subprocess.run(["tar", "--zstd", "-cf", str(repacked), "-C", str(top.parent), ROOT], check=True)
    with open_bundle(repacked) as bundle:
        check_contents(bundle)


# --- atomic writing --------------------------------------------------------------------------------------


def test_exception_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "x.tar.zst"
    with pytest.raises(RuntimeError):
        with BundleWriter(out, mtime=MTIME) as w:
            w.add(ZT_A, b"{}", source={"type": "portforward"})
            assert any(p.name.startswith(".x.tar.zst.partial-") for p in tmp_path.iterdir())
            raise RuntimeError("collector crashed")
    assert list(tmp_path.iterdir()) == []


def test_exception_keeps_the_previous_file(archive: Path) -> None:
    before = archive.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with BundleWriter(archive, root=ROOT, mtime=MTIME) as w:
            w.add(ZT_A, b"{}", source={"type": "portforward"})
            raise KeyboardInterrupt
    assert archive.read_bytes() == before
    assert [p.name for p in archive.parent.iterdir()] == [archive.name]


def test_success_leaves_only_the_archive(archive: Path) -> None:
    assert [p.name for p in archive.parent.iterdir()] == [archive.name]


def test_failed_write_poisons_the_writer(tmp_path: Path) -> None:
    out = tmp_path / "p.tar.zst"
    w = BundleWriter(out, mtime=MTIME, generator="synth")
    with pytest.raises(OSError):
        w.add_fileobj(ZT_A, io.BytesIO(b"short"), 100)  # the source ends early: the stream is inconsistent
    with pytest.raises(BundleError):
        w.add(ZT_B, b"{}")
    with pytest.raises(BundleError):
        w.close()
    assert list(tmp_path.iterdir()) == []


def test_missing_output_folder_is_a_bundle_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot write"):
        BundleWriter(tmp_path / "nope" / "x.tar.zst", mtime=MTIME)


# --- what add() and record() accept ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "../x", "a/../b", "ztunnel/..", "a\\b", "", "a//b", "./a", "a/./b", "a/", "manifest.json", "a\x00b"],
)
def test_add_rejects_bad_paths(tmp_path: Path, path: str) -> None:
    with BundleWriter(tmp_path / "x.tar.zst", mtime=MTIME, generator="synth") as w:
        with pytest.raises(ValueError):
            w.add(path, b"x")
        with pytest.raises(ValueError):
            w.record(path, status="skipped", reason="r")
        assert w.artifacts == []


def test_add_rejects_repeats_and_file_folder_clashes(tmp_path: Path) -> None:
    with BundleWriter(tmp_path / "x.tar.zst", mtime=MTIME, generator="synth") as w:
        w.add("a/b", b"1")
        with pytest.raises(ValueError, match="already added"):
            w.add("a/b", b"2")
        with pytest.raises(ValueError, match="already added"):
            w.record("a/b", status="error", reason="r")
        with pytest.raises(ValueError):
            w.add("a", b"folder a is taken")
        with pytest.raises(ValueError):
            w.add("a/b/c", b"a/b is a file")
        w.record("c/d", status="skipped", reason="r")
        with pytest.raises(ValueError):
            w.add("c/d", b"recorded already")
    with open_bundle(tmp_path / "x.tar.zst") as bundle:
        assert bundle.names() == ["a/b", layout.MANIFEST]


@pytest.mark.parametrize(
    "call",
    [
        lambda w: w.add(ZT_A, "text is not bytes"),
        lambda w: w.add(ZT_A, b"x", status="error"),  # no member for error/skipped: use record()
        lambda w: w.add(ZT_A, b"x", status="bogus"),
        lambda w: w.record(ZT_A, status="ok"),
        lambda w: w.record(ZT_A, status="truncated"),
        lambda w: w.add(ZT_A, b"x", started="yesterday"),
        lambda w: w.add(ZT_A, b"x", finished="2026-11-25 14:05:00"),
        lambda w: w.add(ZT_A, b"x", extra={"sha256": "forged"}),
        lambda w: w.add(ZT_A, b"x", source={"pod": "no type"}),
        lambda w: w.add(ZT_A, b"x", source={"type": 3}),
    ],
)
def test_add_rejects_bad_metadata(tmp_path: Path, call) -> None:
    with BundleWriter(tmp_path / "x.tar.zst", mtime=MTIME) as w:
        with pytest.raises((ValueError, TypeError)):
            call(w)
        w.add(ZT_A, b"still usable", source={"type": "portforward"})
    with open_bundle(tmp_path / "x.tar.zst") as bundle:
        assert bundle.read(ZT_A) == b"still usable"


def test_synth_writer_fills_the_source_type(tmp_path: Path) -> None:
    with BundleWriter(tmp_path / "x.tar.zst", mtime=MTIME, generator="synth") as w:
        art = w.add(ZT_A, b"{}", source={"pod": "ztunnel-abc"})
    assert art.source == {"pod": "ztunnel-abc", "type": "synth"}


def test_check_member_path() -> None:
    assert check_member_path("ztunnel/node-a/z/config_dump.json") == "ztunnel/node-a/z/config_dump.json"
    with pytest.raises(ValueError):
        check_member_path("a/../../b")


# --- the manifest ----------------------------------------------------------------------------------------


def manifest_validator() -> Draft202012Validator:
    schema = json.loads((schemas_dir() / "manifest.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_manifest_validates_against_the_schema(archive: Path) -> None:
    with open_bundle(archive) as bundle:
        raw = json.loads(bundle.read(layout.MANIFEST))
    errors = sorted(manifest_validator().iter_errors(raw), key=str)
    assert errors == []


def test_schema_rejects_broken_manifests(archive: Path) -> None:
    with open_bundle(archive) as bundle:
        raw = json.loads(bundle.read(layout.MANIFEST))
    validator = manifest_validator()
    raw["futureKey"] = {"anything": True}  # unknown keys are allowed
    raw["artifacts"][0]["futureKey"] = 1
    assert validator.is_valid(raw)
    for mutate in (
        lambda m: m["artifacts"][0].update(status="fine"),
        lambda m: m["artifacts"][0].update(sha256="XYZ"),
        lambda m: m["artifacts"][0].update(path="../x"),
        lambda m: m["artifacts"][0].update(sha256=None),  # ok needs a hash
        lambda m: m["artifacts"][-1].update(size=5),  # error has no member
        lambda m: m.update(createdAt="yesterday"),
        lambda m: m.pop("window"),
        lambda m: m["scope"].update(mode="galaxy"),
    ):
        broken = json.loads(json.dumps(raw))
        mutate(broken)
        assert not validator.is_valid(broken)


def test_manifest_json_is_sorted_and_indented(archive: Path) -> None:
    with open_bundle(archive) as bundle:
        text = bundle.read(layout.MANIFEST).decode()
    obj = json.loads(text)
    assert text == json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert list(obj) == sorted(obj)


def test_manifest_round_trip_keeps_unknown_keys() -> None:
    raw = {
        "formatVersion": 1,
        "tool": {"name": "ztunnel-bundle", "version": "9.9", "build": "abc"},
        "generator": "collect",
        "commandLine": ["bundle"],
        "createdAt": "2026-11-25T14:05:00Z",
        "window": {"start": "2026-11-25T14:00:00Z", "end": "2026-11-25T14:05:00Z", "logsSince": "2026-11-25T13:00:00Z"},
        "scope": {"mode": "namespace", "namespaces": ["bookinfo"], "pods": [], "nodes": [], "labelSelector": "x"},
        "cluster": {"serverVersion": "v1.33.1", "context": "kind", "nodeCount": 3,
                    "istioVersions": {"istiod": ["1.28.0"], "ztunnel": [], "cni": [], "waypoint": ["1.28.0"]}},
        "artifacts": [{"path": "a", "kind": None, "source": {"type": "api", "verb": "get"}, "status": "ok",
                       "reason": None, "size": 1, "sha256": "0" * 64, "started": None, "finished": None,
                       "truncation": {"keptBytes": 1}}],
        "future": [1, 2],
    }  # fmt: skip
    manifest = Manifest.from_dict(raw)
    assert manifest.to_dict() == raw
    assert manifest.window.logs_since == "2026-11-25T13:00:00Z"
    assert manifest.artifacts[0].extra == {"truncation": {"keptBytes": 1}}
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_manifest_reader_is_tolerant_of_absent_keys() -> None:
    manifest = Manifest.from_dict({"formatVersion": 1, "artifacts": [{"path": "a", "status": "skipped"}]})
    assert manifest.artifacts == [Artifact(path="a", status="skipped")]
    assert manifest.cluster.istio_versions == {"istiod": [], "ztunnel": [], "cni": []}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "expected a JSON object"),
        ({"artifacts": []}, "missing required key 'formatVersion'"),
        ({"formatVersion": "1", "artifacts": []}, "formatVersion: expected an integer"),
        ({"formatVersion": 2, "artifacts": []}, "newer than this tool reads"),
        ({"formatVersion": 1}, "missing required key 'artifacts'"),
        ({"formatVersion": 1, "artifacts": {}}, "artifacts: expected a list"),
        ({"formatVersion": 1, "artifacts": [{"path": "a", "status": "fine"}]}, "artifacts[0].status"),
        ({"formatVersion": 1, "artifacts": [{"path": "a", "status": "ok", "size": -1}]}, "artifacts[0].size"),
        ({"formatVersion": 1, "artifacts": [{"path": "a", "status": "ok", "sha256": "abc"}]}, "artifacts[0].sha256"),
        ({"formatVersion": 1, "artifacts": [{"status": "ok"}]}, "artifacts[0]: missing required key 'path'"),
        ({"formatVersion": 1, "artifacts": [], "scope": {"pods": "ns/p"}}, "scope.pods: expected a list of strings"),
        ({"formatVersion": 1, "artifacts": [], "cluster": {"istioVersions": {"istiod": "1.28"}}},
         "cluster.istioVersions.istiod"),
    ],
)  # fmt: skip
def test_manifest_from_dict_errors(raw, message: str) -> None:
    with pytest.raises(BundleFormatError) as info:
        Manifest.from_dict(raw)
    assert message in str(info.value)
    assert str(info.value).startswith("manifest.json")


def test_manifest_from_json_rejects_bad_json() -> None:
    with pytest.raises(BundleFormatError, match="not valid JSON"):
        Manifest.from_json(b"{nope")


# --- hostile and damaged input ---------------------------------------------------------------------------


def assert_refused(path: Path, *words: str) -> str:
    with pytest.raises(BundleFormatError) as info:
        with open_bundle(path) as bundle:
            bundle.names()
            bundle.manifest  # noqa: B018
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message
    return message


def test_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "notes.tar.zst").write_text("just some text\n")
    assert_refused(tmp_path / "notes.tar.zst", "notes.tar.zst", "not a ztunnel-bundle archive")
    (tmp_path / "empty.tar.zst").write_bytes(b"")
    assert_refused(tmp_path / "empty.tar.zst", "empty file")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.addfile(tarfile.TarInfo("r/x"), io.BytesIO(b""))
    (tmp_path / "gz.tar.zst").write_bytes(buf.getvalue())
    assert_refused(tmp_path / "gz.tar.zst", "gzip")
    zstd_file(tmp_path / "notar.tar.zst", b"zstd, but not a tar stream" * 40)
    assert_refused(tmp_path / "notar.tar.zst", "not a ztunnel-bundle archive")


def test_no_such_file(tmp_path: Path) -> None:
    with pytest.raises(BundleFormatError, match="no such file"):
        open_bundle(tmp_path / "missing.tar.zst")


@pytest.mark.parametrize("keep", [4, 9, 100, -1])
def test_truncated_archive(archive: Path, tmp_path: Path, keep: int) -> None:
    data = archive.read_bytes()
    cut = tmp_path / "cut.tar.zst"
    cut.write_bytes(data[:keep] if keep > 0 else data[:keep])
    assert_refused(cut, "cut.tar.zst", "truncated")


@pytest.mark.parametrize("where", ["early", "middle", "in-manifest", "before-end-marker"])
def test_truncated_tar_inside_complete_zstd(archive: Path, tmp_path: Path, where: str) -> None:
    raw = decompressed(archive)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        last = tf.getmembers()[-1]
    end_of_data = last.offset_data + last.size
    keep = {"early": 700, "middle": len(raw) // 2, "in-manifest": end_of_data - 10, "before-end-marker": end_of_data}
    cut = zstd_file(tmp_path / "cut.tar.zst", raw[: keep[where]])
    assert_refused(cut, "truncated")


def test_truncated_at_a_member_boundary(tmp_path: Path) -> None:
    raw = tar_bytes([(f"{ROOT}/a", "file", b"x" * 512), (f"{ROOT}/b", "file", b"y" * 512)])
    cut = zstd_file(tmp_path / "cut.tar.zst", raw[:1024])  # header + data of a, then nothing
    assert_refused(cut, "truncated")


def test_garbage_after_a_member(tmp_path: Path) -> None:
    raw = tar_bytes([(f"{ROOT}/a", "file", b"x" * 512)])
    broken = zstd_file(tmp_path / "g.tar.zst", raw[:1024] + b"\xff" * 512 + bytes(1024))
    assert_refused(broken, "damaged")


def test_flipped_compressed_bytes_never_give_a_traceback(archive: Path, tmp_path: Path) -> None:
    """A damaged stream gives a BundleError or, when zstd cannot tell, different content (verify's job)."""
    data = archive.read_bytes()
    with open_bundle(archive) as bundle:
        original = dict(bundle.iter_members())
    damaged = tmp_path / "flip.tar.zst"
    outcomes = {"refused": 0, "differs": 0, "same": 0}
    for offset in range(4, len(data), max(1, len(data) // 60)):
        flipped = bytearray(data)
        flipped[offset] ^= 0x5A
        damaged.write_bytes(bytes(flipped))
        try:
            with open_bundle(damaged) as bundle:
                contents = dict(bundle.iter_members())
        except BundleError as exc:  # anything else (ZstdError, tarfile.ReadError, ...) fails the test
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
            continue
        # a few flips only touch the zero padding after the end-of-archive marker
        outcomes["differs" if contents != original else "same"] += 1
    assert outcomes["refused"] > 0 and outcomes["differs"] > 0
    assert outcomes["same"] <= 3, outcomes


@pytest.mark.parametrize(
    ("entries", "words"),
    [
        ([(f"{ROOT}/ok", "file", b"1"), (f"{ROOT}/../../evil", "file", b"x")], ["unsafe member", "evil"]),
        ([(f"{ROOT}/ok", "file", b"1"), ("/etc/evil", "file", b"x")], ["absolute", "/etc/evil"]),
        ([(f"{ROOT}/link", "symlink", "/etc/passwd")], ["symbolic link", f"{ROOT}/link"]),
        ([(f"{ROOT}/a", "file", b"1"), (f"{ROOT}/hard", "hardlink", f"{ROOT}/a")], ["hard link", "hard"]),
        ([(f"{ROOT}/fifo", "fifo", b"")], ["device or fifo", "fifo"]),
        ([(f"{ROOT}/tty", "chr", b"")], ["device or fifo", "tty"]),
        ([(f"{ROOT}/a", "file", b"1"), ("other/b", "file", b"2")], ["outside", "other/b"]),
        ([("loose.json", "file", b"1")], ["not inside a top-level folder"]),
        ([(f"{ROOT}/a", "file", b"1"), (f"{ROOT}/a", "file", b"2")], ["appears twice"]),
        ([(f"{ROOT}/a\\b", "file", b"1")], ["backslash"]),
    ],
)
def test_hostile_members_are_refused(tmp_path: Path, entries, words: list[str]) -> None:
    hostile = zstd_file(tmp_path / "hostile.tar.zst", tar_bytes(entries))
    assert_refused(hostile, "hostile.tar.zst", *words)
    target = tmp_path / "target"
    with pytest.raises(BundleFormatError):
        extract_bundle(hostile, target)
    # nothing was written, not even a partial folder
    assert not target.exists() or list(target.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_empty_tar_is_refused(tmp_path: Path) -> None:
    assert_refused(zstd_file(tmp_path / "e.tar.zst", bytes(10240)), "holds no files")


def test_directory_entries_and_dot_slash_prefix_are_accepted(tmp_path: Path) -> None:
    raw = tar_bytes([(f"./{ROOT}", "dir", b""), (f"./{ROOT}/cluster", "dir", b""), (f"./{ROOT}/cluster/nodes.json", "file", b"[]")])
    with open_bundle(zstd_file(tmp_path / "d.tar.zst", raw)) as bundle:
        assert bundle.root == ROOT
        assert bundle.names() == ["cluster/nodes.json"]
        assert not bundle.has_manifest()
        with pytest.raises(BundleFormatError, match="no manifest.json"):
            bundle.manifest  # noqa: B018


def test_directory_with_a_symlink_is_refused(archive: Path, tmp_path: Path) -> None:
    top = extract_bundle(archive, tmp_path / "out")
    (top / "cluster" / "secrets.json").symlink_to("/etc/passwd")
    with pytest.raises(BundleFormatError, match="symbolic link"):
        with open_bundle(top) as bundle:
            bundle.names()
    with pytest.raises(BundleFormatError):
        with open_bundle(top) as bundle:
            bundle.read("cluster/secrets.json")


def test_directory_read_cannot_escape(archive: Path, tmp_path: Path) -> None:
    top = extract_bundle(archive, tmp_path / "out")
    (tmp_path / "out" / "secret").write_text("s")
    with open_bundle(top) as bundle:
        for path in ("../secret", "/etc/passwd"):
            with pytest.raises(BundleError):
                bundle.read(path)


def test_extract_refuses_to_overwrite(archive: Path, tmp_path: Path) -> None:
    extract_bundle(archive, tmp_path / "out")
    with pytest.raises(BundleError, match="already exists"):
        extract_bundle(archive, tmp_path / "out")


def test_directory_without_manifest_opens(archive: Path, tmp_path: Path) -> None:
    top = extract_bundle(archive, tmp_path / "out")
    (top / layout.MANIFEST).unlink()
    with open_bundle(tmp_path / "out") as bundle:  # the single subfolder is still found
        assert bundle.root == ROOT
        assert not bundle.has_manifest()
        with pytest.raises(BundleFormatError, match="no manifest.json"):
            bundle.manifest  # noqa: B018


def test_directory_with_several_bundles_is_ambiguous(archive: Path, tmp_path: Path) -> None:
    extract_bundle(archive, tmp_path / "out")
    shutil.copytree(tmp_path / "out" / ROOT, tmp_path / "out" / "second")
    with pytest.raises(BundleFormatError, match="several bundles"):
        open_bundle(tmp_path / "out")


# --- decompression-bomb limits --------------------------------------------------------------------------------


def _zeros_bundle(path, size):
    from bundler.archive import BundleWriter

    with BundleWriter(path, root="bomb", mtime=1764000000) as w:
        w.add("ztunnel/n1/z/logs/istio-proxy.log", b"\0" * size, source={"type": "logs"})
    return path


def test_member_over_the_limit_is_refused(tmp_path, monkeypatch):
    from bundler.archive import open_bundle
    from bundler.errors import BundleFormatError

    path = _zeros_bundle(tmp_path / "bomb.tar.zst", 2 << 20)
    assert path.stat().st_size < 10_000  # 2 MB of zeros compress to almost nothing
    monkeypatch.setenv("ZTUNNEL_BUNDLE_MAX_MEMBER_BYTES", str(1 << 20))
    with pytest.raises(BundleFormatError, match="over the .*-byte limit"):
        with open_bundle(path) as b:
            list(b.iter_members())


def test_total_over_the_limit_is_refused_and_extraction_writes_nothing(tmp_path, monkeypatch):
    from bundler.archive import extract_bundle
    from bundler.errors import BundleFormatError

    path = _zeros_bundle(tmp_path / "bomb.tar.zst", 2 << 20)
    monkeypatch.setenv("ZTUNNEL_BUNDLE_MAX_TOTAL_BYTES", str(1 << 20))
    target = tmp_path / "out"
    with pytest.raises(BundleFormatError, match="decompression bomb"):
        extract_bundle(path, target)
    assert not (target / "bomb").exists()


def test_read_refuses_a_member_too_big_for_memory(tmp_path, monkeypatch):
    from bundler.archive import open_bundle
    from bundler.errors import BundleFormatError

    path = _zeros_bundle(tmp_path / "big.tar.zst", 2 << 20)
    monkeypatch.setenv("ZTUNNEL_BUNDLE_MAX_READ_BYTES", str(1 << 20))
    with open_bundle(path) as b:
        with pytest.raises(BundleFormatError, match="too big to read into memory"):
            b.read("ztunnel/n1/z/logs/istio-proxy.log")
        with b.open("ztunnel/n1/z/logs/istio-proxy.log") as fh:  # streaming still works
            assert len(fh.read()) == 2 << 20
