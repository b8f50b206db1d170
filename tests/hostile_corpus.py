"""A corpus of hostile and damaged bundles, built on demand into a folder (tests/test_hostile_bundles.py).

Every bundle comes from a stranger (docs/security.md): each :class:`Case` here builds one bad bundle from the
incident sample (``samples/bookinfo-incident.tar.zst``), with :class:`bundler.archive.BundleWriter` when the
archive itself is sound and only an artifact is bad, and with raw ``tarfile`` + ``zstandard`` when the archive is
the attack (links, devices, ``..``, absolute paths, duplicates, bombs). ``CASES`` is the list; each says what it
is, whether the bundle must be refused outright (every command: exit 1, one line), and the exit codes each
bundle command may give.

Build one with ``case.build(folder)``: it returns a :class:`Built` whose ``bundle`` is what the commands read
and ``artifact`` the one file ``bundle validate`` gets. Everything a case writes stays inside ``folder``.
"""

from __future__ import annotations

import fnmatch
import functools
import io
import json
import os
import random
import shutil
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from bundler import layout
from bundler.archive import BundleWriter, compression_params, extract_bundle, open_bundle
from bundler.manifest import STATUSES_WITH_MEMBER, Manifest

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "bookinfo-incident.tar.zst"
MTIME = 1764000000
SECRET = "ZTB-HOSTILE-SECRET-7f3a"  # the content of files outside a bundle that links point at: must never be shown


@functools.cache
def _sample_names() -> tuple[str, tuple[str, ...]]:
    with open_bundle(SAMPLE) as bundle:
        return bundle.root, tuple(sorted(bundle.names()))


def _first(pattern: str) -> str:
    """The first member of the sample matching ``pattern`` (names come from the sample: it may be regenerated)."""
    return next(name for name in _sample_names()[1] if fnmatch.fnmatchcase(name, pattern))


ROOT = _sample_names()[0]

ZT_DUMP = _first("ztunnel/*/*/config_dump.json")  # the first ztunnel by node: the one ztunnel-config shows
ZT_NODE, ZT_POD = ZT_DUMP.split("/")[1:3]
ZT_METRICS = layout.ztunnel_file(ZT_NODE, ZT_POD, "metrics.txt")
ZT_LOG = layout.ztunnel_log(ZT_NODE, ZT_POD)
ZT_POD_JSON = layout.ztunnel_file(ZT_NODE, ZT_POD, "pod.json")
ISTIOD = _first("istiod/*/version.txt").split("/")[1]
ISTIOD_LOG = layout.istiod_log(ISTIOD)
CNI_LOG = _first("cni/*/*/logs/install-cni.log")

# The documented exit codes (bundler/errors.py)
OK, ERROR, USAGE, FINDINGS, PARTIAL = 0, 1, 2, 3, 4

# The commands that read a bundle, by the name the test ids use.
COMMANDS = (
    "inspect", "inspect-json", "verify", "validate", "analyze", "ztunnel-config-all",
    "ztunnel-config-workload-json", "logs", "metrics", "diff", "pack",
)  # fmt: skip


@dataclass(frozen=True)
class Built:
    bundle: Path  # what the bundle commands are given (archive, .zip part or folder)
    artifact: Path  # what `bundle validate` is given
    secret: Path | None = None  # a file outside the bundle that the case's links point at


@dataclass(frozen=True)
class Case:
    name: str
    what: str  # one line: the attack or damage (docs/security.md lists these)
    builder: Callable[[Path], Built]
    refused: bool  # the bundle cannot be opened: every command answers exit 1 with one line
    exits: Mapping[str, frozenset[int]] = field(default_factory=dict)  # per command, overriding the defaults
    env: Mapping[str, str] = field(default_factory=dict)  # ZTUNNEL_BUNDLE_* limits for the case
    error_words: tuple[str, ...] = ()  # words the one-line error of a refused bundle must hold

    def build(self, folder: Path) -> Built:
        folder.mkdir(parents=True, exist_ok=True)
        return self.builder(folder)

    def expected(self, command: str) -> frozenset[int]:
        if command in self.exits:
            return self.exits[command]
        if self.refused:
            return frozenset({ERROR})
        return DEFAULT_EXITS[command]


# A bundle that opens, whatever its artifacts hold: the summary, the members and the analysis work (analysis
# problems are findings, exit 0); the artifact views fail with one line when their input is unusable.
DEFAULT_EXITS: dict[str, frozenset[int]] = {
    "inspect": frozenset({OK}),
    "inspect-json": frozenset({OK}),
    "verify": frozenset({OK}),
    "validate": frozenset({OK, ERROR}),
    "analyze": frozenset({OK}),
    "ztunnel-config-all": frozenset({OK}),
    "ztunnel-config-workload-json": frozenset({OK}),
    "logs": frozenset({OK}),
    "metrics": frozenset({OK}),
    "diff": frozenset({OK}),
    "pack": frozenset({OK}),
}


# --- the sample, and bundles rewritten from it ------------------------------------------------------------------


@functools.cache
def _sample() -> tuple[dict, tuple[tuple[str, bytes], ...]]:
    with open_bundle(SAMPLE) as bundle:
        members = tuple((path, data) for path, data in bundle.iter_members() if path != layout.MANIFEST)
        manifest = bundle.manifest.to_dict()
    return manifest, members


def sample_manifest() -> Manifest:
    return Manifest.from_dict(json.loads(json.dumps(_sample()[0])))


def sample_members() -> dict[str, bytes]:
    return dict(_sample()[1])


Edit = Callable[[str, bytes], bytes | None]  # (member path, its bytes) -> new bytes, or None to drop it


def _keep(path: str, data: bytes) -> bytes:
    return data


def write_variant(out: Path, edit: Edit = _keep, add: Mapping[str, bytes] | None = None) -> Path:
    """The sample rewritten by BundleWriter with its members edited (or dropped) and some added: the archive and
    its manifest are sound (sizes and hashes match), only the content is bad."""
    manifest = sample_manifest()
    arts = manifest.by_path()
    with BundleWriter(out, root=ROOT, mtime=MTIME) as w:
        m = w.manifest
        m.generator, m.command_line, m.window = manifest.generator, manifest.command_line, manifest.window
        m.scope, m.cluster = manifest.scope, manifest.cluster
        for path, data in _sample()[1]:
            new = edit(path, data)
            if new is None:
                continue
            art = arts[path]
            w.add(path, new, kind=art.kind, source=art.source, status=art.status, reason=art.reason,
                  started=art.started, finished=art.finished, extra=art.extra)
        for art in manifest.artifacts:
            if art.status not in STATUSES_WITH_MEMBER:
                w.record(art.path, kind=art.kind, source=art.source, status=art.status, reason=art.reason)
        for path, data in (add or {}).items():
            w.add(path, data, source={"type": "api"})
    return out


def _artifact_file(folder: Path, path: str, data: bytes) -> Path:
    """``data`` as a file laid out like the member ``path`` (so validate detects its kind from the path)."""
    target = folder / "artifact" / Path(*path.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def _variant(name: str, edit: Edit, focus: str) -> Callable[[Path], Built]:
    """A builder: the sample with ``edit`` applied; validate gets the (edited) member ``focus``."""

    def build(folder: Path) -> Built:
        bundle = write_variant(folder / f"{name}.tar.zst", edit)
        data = edit(focus, sample_members()[focus])
        return Built(bundle, _artifact_file(folder, focus, data if data is not None else b""))

    return build


def _each_json(value: Edit) -> Edit:
    """An edit replacing every JSON member (layout.JSON_KINDS) by ``value(path, data)``."""

    def edit(path: str, data: bytes) -> bytes:
        return value(path, data) if layout.kind_of_path(path) in layout.JSON_KINDS else data

    return edit


# --- raw archives: tar + zstd by hand ------------------------------------------------------------------------


@functools.cache
def _sample_tar() -> bytes:
    with SAMPLE.open("rb") as fh:
        return zstandard.ZstdDecompressor().stream_reader(fh).read()


def compress(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(compression_params=compression_params()).compress(raw)


def _entry(name: str, kind: str = "file", payload: bytes = b"", link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mtime = MTIME
    info.mode = 0o644
    if kind == "file":
        info.size = len(payload)
        return info, payload
    info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                 "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE}[kind]
    if kind in ("chr", "blk"):
        info.devmajor, info.devminor = 1, 3
    info.linkname = link
    return info, b""


def raw_archive(out: Path, inject: list[tuple[tarfile.TarInfo, bytes]], *, drop: Callable[[str], bool] | None = None,
                before_manifest: bool = True, pax: dict[str, str] | None = None) -> Path:
    """The sample's own tar stream with ``inject`` entries added (before manifest.json, or first), members that
    ``drop`` accepts left out, compressed with the bundle's zstd parameters."""
    src = tarfile.open(fileobj=io.BytesIO(_sample_tar()), mode="r:")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers=pax) as dst:

        def add_injected() -> None:
            for extra, payload in inject:
                dst.addfile(extra, io.BytesIO(payload) if extra.isreg() else None)

        pending = True
        if not before_manifest:
            add_injected()
            pending = False
        for info in src.getmembers():
            rel = info.name.split("/", 1)[1] if "/" in info.name else ""
            if pending and rel == layout.MANIFEST:
                add_injected()
                pending = False
            if drop is not None and drop(rel):
                continue
            dst.addfile(info, src.extractfile(info))
        if pending:
            add_injected()
    out.write_bytes(compress(buf.getvalue()))
    return out


Entries = Callable[[Path], list[tuple[tarfile.TarInfo, bytes]]]


def _raw(name: str, entries: Entries, **kwargs: object) -> Callable[[Path], Built]:
    """A builder: the sample's tar with ``entries(folder)`` injected; a secret file waits outside the bundle."""

    def build(folder: Path) -> Built:
        secret = folder / "outside" / "secret.txt"
        secret.parent.mkdir(parents=True, exist_ok=True)
        secret.write_text(SECRET + "\n")
        bundle = raw_archive(folder / f"{name}.tar.zst", entries(folder), **kwargs)
        return Built(bundle, bundle, secret)

    return build


def _with_manifest_extras(value: bytes) -> Callable[[Path], Built]:
    """The sample's manifest with ``value`` (JSON text) under unknown keys at every level (kept by the reader)."""

    def build(folder: Path) -> Built:
        doc = sample_manifest().to_dict()
        for holder in (doc, doc["cluster"], doc["tool"], doc["window"], doc["scope"], doc["artifacts"][0],
                       doc["artifacts"][0]["source"]):
            holder["x-extra"] = "@EXTRA@"
        return _with_manifest(json.dumps(doc).encode().replace(b'"@EXTRA@"', value))(folder)

    return build


def _with_manifest(manifest: bytes) -> Callable[[Path], Built]:
    """The sample's members with ``manifest.json`` replaced by ``manifest`` (raw bytes)."""

    def build(folder: Path) -> Built:
        bundle = raw_archive(folder / "manifest.tar.zst", [_entry(f"{ROOT}/{layout.MANIFEST}", payload=manifest)],
                             drop=lambda rel: rel == layout.MANIFEST)
        return Built(bundle, _artifact_file(folder, layout.MANIFEST, manifest))

    return build


# --- whole-file damage ---------------------------------------------------------------------------------------


def _file(name: str, data: Callable[[], bytes]) -> Callable[[Path], Built]:
    def build(folder: Path) -> Built:
        path = folder / name
        path.write_bytes(data())
        return Built(path, path)

    return build


def _truncated() -> bytes:
    data = SAMPLE.read_bytes()
    return data[: len(data) // 2]


def _tar_gz() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info, payload = _entry(f"{ROOT}/{layout.MANIFEST}", payload=b"{}")
        tf.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


# --- directories ---------------------------------------------------------------------------------------------


def _extracted(folder: Path) -> Path:
    return extract_bundle(SAMPLE, folder / "extracted")


def _dir_symlink(folder: Path) -> Built:
    top = _extracted(folder)
    secret = folder / "outside" / "secret.txt"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(SECRET + "\n")
    target = top / Path(*ZT_DUMP.split("/"))
    target.unlink()
    target.symlink_to(secret)
    return Built(top, target, secret)


def _dir_fifo(folder: Path) -> Built:
    top = _extracted(folder)
    target = top / Path(*ZT_LOG.split("/"))
    target.unlink()
    os.mkfifo(target)
    return Built(top, target)


# --- .zip parts ----------------------------------------------------------------------------------------------


def _parts(folder: Path, damage: Callable[[list[Path]], None]) -> Built:
    """The sample plus an incompressible member, packed into several .zip parts, then damaged."""
    from bundler.parts import _ZIP_OVERHEAD, pack

    noise = random.Random(8).randbytes(200_000)
    (folder / "packed").mkdir()
    archive = write_variant(folder / "packed" / f"{ROOT}.tar.zst", add={"extra/noise.bin": noise})
    parts = pack(archive, part_size=_ZIP_OVERHEAD + 60_000, out_dir=folder)
    archive.unlink()
    assert len(parts) >= 3, parts
    damage(parts)
    first = next((p for p in parts if p.exists()), parts[-1])
    return Built(first, first)


def _drop_part(index: int) -> Callable[[list[Path]], None]:
    return lambda parts: parts[index].unlink()


def _rewrite_note(note: object) -> Callable[[list[Path]], None]:
    """Replace the parts note (in the first part) by ``note``."""
    import zipfile

    def damage(parts: list[Path]) -> None:
        first = parts[0]
        with zipfile.ZipFile(first) as zf:
            items = [(info.filename, zf.read(info)) for info in zf.infolist()]
        with zipfile.ZipFile(first, "w") as zf:
            for name, data in items:
                zf.writestr(name, json.dumps(note).encode() if name.endswith(".parts.json") else data)

    return damage


def _part_not_zip(parts: list[Path]) -> None:
    parts[1].write_bytes(b"this is not a zip file\n" * 10)


def _part_flipped(parts: list[Path]) -> None:
    """A byte of the stored slice flipped (the zip's CRC no longer matches)."""
    data = bytearray(parts[1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    parts[1].write_bytes(bytes(data))


# --- content -------------------------------------------------------------------------------------------------

DEEP = b"[" * 100_000  # far past orjson's 1024 levels and Python's recursion limit


def _deep_valid(depth: int) -> bytes:
    """Valid JSON nested ``depth`` levels (orjson parses up to 1024): a list of lists of ... ending in 1."""
    return b"[" * depth + b"1" + b"]" * depth


def _deep_in(path: str, data: bytes) -> bytes:
    """The member with plausible fields replaced by JSON nested 1000 levels deep (parses, then walks). The deep
    value is spliced in as text: json and orjson cannot write it."""
    deep = "@DEEP@"
    kind = layout.kind_of_path(path)
    try:
        doc = json.loads(data)
    except ValueError:
        doc = {}
    if kind == layout.KIND_ISTIOD_SYNCZ:
        doc = [{"proxy": f"{ZT_POD}.istio-system", "resources": deep}]
    elif isinstance(doc, dict):
        for key in ("workloads", "services", "policies", "items", "configs", "certificates", "metadata", "spec"):
            if key in doc:
                doc[key] = [deep, {"nested": deep}] if key != "metadata" else {"name": "x", "labels": deep}
        doc["deep"] = deep
    out = json.dumps(doc, separators=(",", ":")).encode()
    return out.replace(b'"@DEEP@"', _deep_valid(1000))


def _bad_utf8_log(data: bytes) -> bytes:
    lines = data.split(b"\n")
    deep = b'{"level":"info","time":"2026-11-25T11:00:09.741678Z","scope":"x","msg":"m","f":' + _deep_valid(900) + b"}"
    bad = [b"\xff\xfe\xfd not utf-8", deep, b'{"level":"info","time":"x","f":' + DEEP + b"}",
           b"2026-11-25T11:00:09.741678Z\terror\taccess\t\xc3\x28 \xed\xa0\x80 src.addr=\xe2\x82",  # bad sequences
           b"\x00\x01\x02\x1b[31mred\x1b[0m \x1b]0;title\x07", b"\xf0\x90\x80", b"\r\r\r"]
    return b"\n".join(lines[:3] + bad + lines[3:] + bad)


def _long_line(data: bytes, size: int = 8 << 20) -> bytes:
    head = b"2026-11-25T11:00:09.741678Z\terror\taccess\tconnection complete\tsrc.addr=10.128.0.4:56793 "
    body = head + b'dst.workload="' + b"x" * (size - len(head) - 20) + b'"'
    return data + body + b"\n" + data[:2000] + b"A" * size  # one long record, then one without a line break


# schema violations: every field of the wrong type
ZT_DUMP_LIST_SHAPE = {
    "certificates": [1, "x", None, {"identity": 5, "state": [], "certChain": "nope"}, {"certChain": [{"pem": 7}]}],
    "config": "not an object",
    "policies": [None, 3, {"name": [], "namespace": {}, "action": 9, "rules": "r", "scope": None}],
    "services": [None, "svc", {"hostname": 1, "endpoints": [1, 2], "ports": "80", "vips": {"a": 1}, "name": None}],
    "stagedServices": [],
    "staticConfig": 1,
    "version": ["1.24"],
    "workloadState": {"uid": {"connections": {"inbound": "x", "outbound": [1, None, {"src": 5}]}}, "b": 7},
    "workloads": [None, 1, "w", {"uid": 5, "workloadIps": "10.0.0.1", "name": {}, "namespace": [], "node": 1,
                                 "protocol": 3, "services": "svc", "waypoint": "wp", "status": []},
                  {"uid": "u", "name": "\t" * 5000, "namespace": "ns\nINJECTED\x1b[2J",
                   "workloadIps": ["10.0.0.9", 7, None], "protocol": "TCP", "waypoint": {"destination": {"x": 1}}}],
}
LEGACY_DUMP = b'{"by_addr": {"x": 1}, "by_uid": [], "certificates": [{"cert_chain": 1}]}'
ZT_DUMP_MAP_SHAPE = {  # the 1.22 layout: workloads and services keyed by uid / name
    "workloads": {"a": None, "b": 1, "c": {"uid": [], "workloadIps": [1, 2], "name": 5}, "": "x"},
    "services": {"s": "x", "t": {"endpoints": "e", "vips": 4}},
    "policies": {"p": [], "q": {"rules": {}}},
    "certificates": {"not": "a list"},
}
ISTIOD_BAD = {
    "ambientz.json": {"workloads": {"x": 1}, "services": "s", "policies": [None, 1, {"name": 2, "rules": 3}]},
    "syncz.json": {"proxy": "not a list"},
}
ISTIOD_PROXY_BAD = {
    "config_dump.json": {"configs": [None, 1, "x", {"@type": 5}, {"@type": "type.googleapis.com/istio.workload.Address",
                                                                  "workload": "w", "service": []}]},
    "wads.json": {"configs": "nope"},
}
K8S_BAD = {
    "cluster/pods.json": {"kind": "PodList", "items": [None, 1, "p", {"metadata": [], "spec": "s", "status": 5},
                                                       {"metadata": {"name": 5, "namespace": [], "labels": "l",
                                                                     "annotations": 3},
                                                        "spec": {"containers": "c", "nodeName": 1, "hostNetwork": "y"},
                                                        "status": {"podIP": 4, "podIPs": "x", "phase": [],
                                                                   "containerStatuses": {"a": 1}}}]},
    "cluster/nodes.json": [1, 2, 3],
    "cluster/services.json": {"kind": "ServiceList", "items": {"not": "a list"}},
    "cluster/namespaces.json": {"kind": "NamespaceList", "items": [{"metadata": {"name": "x", "labels": ["a"]}}]},
    "cluster/version.json": ["v1.33.1"],
    "cluster/events.json": "events",
    "cluster/endpointslices.discovery.k8s.io.json": {"items": [{"endpoints": "e", "ports": 1}]},
    "cluster/istio/authorizationpolicies.security.istio.io.json": {"items": [{"spec": {"rules": "r", "action": 5}}]},
    "cluster/istio/peerauthentications.security.istio.io.json": {"items": [{"spec": {"mtls": "STRICT"}}]},
    "cluster/configmaps.json": {"items": [{"data": [1, 2]}]},
    ZT_POD_JSON: "pod",
}


def _schema_edit(table: Mapping[str, object]) -> Edit:
    """An edit replacing each member named in ``table`` by its value as JSON."""
    return lambda path, data: json.dumps(table[path]).encode() if path in table else data


def _each_ztunnel_dump(value: bytes) -> Edit:
    return lambda path, data: value if layout.kind_of_path(path) == layout.KIND_ZTUNNEL_CONFIG_DUMP else data


def _not_objects(path: str, data: bytes) -> bytes:
    """Each ztunnel dump a JSON array, number or string (by its path)."""
    if layout.kind_of_path(path) != layout.KIND_ZTUNNEL_CONFIG_DUMP:
        return data
    return (b"[1, 2]", b"42", b'"dump"')[sum(map(ord, path)) % 3]


def _istiod_edit(path: str, data: bytes) -> bytes:
    parts = path.split("/")
    if parts[0] == "istiod" and parts[-1] in ISTIOD_BAD and parts[1] != "proxies":
        return json.dumps(ISTIOD_BAD[parts[-1]]).encode()
    if parts[0] == "istiod" and parts[1] == "proxies" and parts[-1] in ISTIOD_PROXY_BAD:
        return json.dumps(ISTIOD_PROXY_BAD[parts[-1]]).encode()
    if parts[-1] == "version.txt":
        return b"\xff\x00" * 100
    return data


METRICS_GARBAGE = b"\n".join([
    b"# HELP istio_tcp_connections_opened garbage follows",
    b"# TYPE istio_tcp_connections_opened counter",
    b"# TYPE istio_tcp_connections_opened gauge",
    b'istio_tcp_connections_opened_total{reporter="destination" 12',
    b'istio_tcp_connections_opened_total{reporter="destination",source_workload="a"} not-a-number',
    b'istio_tcp_connections_opened_total{reporter="destination",source_workload="' + b"w" * 100_000 + b'"} 1',
    b"istio_tcp_connections_opened_total{=} 1",
    b'istio_tcp_connections_opened_total{a="\\q\\"} NaN',
    b"istio_tcp_received_bytes_total +Inf",
    b"istio_tcp_sent_bytes_total -Inf 123 456 789",
    b"# EOF",
    b"after_eof 1",
    b"\x00\x01 control characters \x1b[2J",
    b"}{}{}{",
    b"# TYPE",
    b"# HELP",
    b"9starts_with_digit 1",
    b"",
])


def _bomb(size: int) -> Callable[[Path], Built]:
    """The sample plus a ztunnel log of ``size`` zero bytes, streamed in (it compresses to a few KB)."""

    class Zeros(io.RawIOBase):
        def __init__(self, n: int) -> None:
            self.left = n

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:  # noqa: ANN001
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

    def build(folder: Path) -> Built:
        out = folder / "bomb.tar.zst"
        manifest = sample_manifest()
        arts = manifest.by_path()
        with BundleWriter(out, root=ROOT, mtime=MTIME) as w:
            w.manifest.cluster, w.manifest.scope, w.manifest.window = manifest.cluster, manifest.scope, manifest.window
            for path, data in _sample()[1]:
                if path == ZT_LOG:
                    continue
                art = arts[path]
                w.add(path, data, kind=art.kind, source=art.source, status=art.status, reason=art.reason,
                      extra=art.extra)
            w.add_fileobj(ZT_LOG, io.BufferedReader(Zeros(size), 1 << 20), size, source=arts[ZT_LOG].source)
        return Built(out, out)

    return build


def _lying_manifest(folder: Path) -> Built:
    """Wrong sizes and hashes, listed members that are absent (one outside the bundle), members not listed."""
    members = sample_members()
    manifest = sample_manifest()
    arts = manifest.by_path()
    arts[ZT_DUMP].size += 7
    arts[ZT_METRICS].sha256 = "0" * 64
    arts[ZT_LOG].size = 1 << 62
    manifest.artifacts = [a for a in manifest.artifacts if a.path != ISTIOD_LOG]  # present, not listed
    for ghost in ("ztunnel/ghost-node/ztunnel-ghost/config_dump.json", "../../../../etc/passwd",
                  "cluster/secrets.json"):
        manifest.artifacts.append(type(arts[ZT_DUMP])(path=ghost, kind=None, source={"type": "api"}, status="ok",
                                                      size=10, sha256="a" * 64))
    manifest.artifacts.append(arts[ZT_DUMP])  # listed twice
    entries = [_entry(f"{ROOT}/{p}", payload=d) for p, d in members.items()]
    entries.append(_entry(f"{ROOT}/not/listed.json", payload=b'{"surprise": true}'))
    entries.append(_entry(f"{ROOT}/{layout.MANIFEST}", payload=manifest.to_json()))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, payload in entries:
            tf.addfile(info, io.BytesIO(payload))
    out = folder / "lying.tar.zst"
    out.write_bytes(compress(buf.getvalue()))
    return Built(out, _artifact_file(folder, layout.MANIFEST, manifest.to_json()))


def _missing_manifest(folder: Path) -> Built:
    out = raw_archive(folder / "nomanifest.tar.zst", [], drop=lambda rel: rel == layout.MANIFEST)
    return Built(out, out)


def _names_with_controls(folder: Path) -> Built:
    """A ztunnel whose node and pod names hold a line break and terminal escapes, with a dump that is not JSON:
    every message naming it must still be one line."""
    node, pod = "node\nINJECTED", "zt\x1b[2J\x1b]0;pwned\x07"
    add = {layout.ztunnel_file(node, pod, "config_dump.json"): b"{not json",
           layout.ztunnel_log(node, pod): b"line\n"}
    bundle = write_variant(folder / "controls.tar.zst", lambda p, d: None if p.startswith("ztunnel/") else d, add)
    return Built(bundle, _artifact_file(folder, ZT_DUMP, b"{not json"))


# --- the corpus ----------------------------------------------------------------------------------------------

_ALL_1 = frozenset({ERROR})
_OK = frozenset({OK})
# the first ztunnel's dump is unusable
_NO_DUMP = {"ztunnel-config-all": _ALL_1, "ztunnel-config-workload-json": _ALL_1}
# Without a readable manifest the bundle's members are still read (logs, metrics, ztunnel-config), but what it holds,
# what failed to be collected and whether it was altered are unknown: inspect, verify, pack and analyze
# findings refuse it with one line naming the manifest's problem.
_BAD_MANIFEST = {command: _ALL_1 for command in ("inspect", "inspect-json", "verify", "validate", "analyze", "pack")}


CASES: list[Case] = [
    # whole files
    Case("not-an-archive", "a text file named .tar.zst", _file("notes.tar.zst", lambda: b"just some notes\n" * 20),
         refused=True, error_words=("not a ztunnel-bundle archive",)),
    Case("empty-file", "an empty file", _file("empty.tar.zst", lambda: b""), refused=True, error_words=("empty",)),
    Case("truncated-zstd", "the sample cut in half (a download that stopped)", _file("cut.tar.zst", _truncated),
         refused=True, error_words=("truncated",)),
    Case("gzip-tar", "a .tar.gz renamed .tar.zst", _file("gz.tar.zst", _tar_gz), refused=True,
         error_words=("gzip",)),
    # unsafe members
    Case("dotdot-member", "a member ../../escaped.json climbing out of the root folder",
         _raw("dotdot", lambda f: [_entry(f"{ROOT}/../../escaped.json", payload=b'{"escaped": 1}')]),
         refused=True, error_words=("unsafe member", "escaped.json")),
    Case("absolute-member", "a member with an absolute path (into the case folder)",
         _raw("absolute", lambda f: [_entry(str(f / "outside" / "absolute.json"), payload=b"{}")]),
         refused=True, error_words=("absolute",)),
    Case("symlink-outside", "a symbolic link to a file outside, then a member written through a linked folder",
         _raw("symlink", lambda f: [
             _entry(f"{ROOT}/cluster/secret.json", "symlink", link=str(f / "outside" / "secret.txt")),
             _entry(f"{ROOT}/linkdir", "symlink", link=str(f / "outside")),
             _entry(f"{ROOT}/linkdir/written.json", payload=b"{}")]),
         refused=True, error_words=("symbolic link",)),
    Case("hardlink-outside", "a hard link to a file outside the bundle",
         _raw("hardlink", lambda f: [_entry(f"{ROOT}/cluster/secret.json", "hardlink",
                                            link=str(f / "outside/secret.txt"))]),
         refused=True, error_words=("hard link",)),
    Case("fifo-member", "a fifo member (would block a reader)",
         _raw("fifo", lambda f: [_entry(f"{ROOT}/cluster/fifo.json", "fifo")]), refused=True,
         error_words=("device or fifo",)),
    Case("device-member", "character and block device members",
         _raw("device", lambda f: [_entry(f"{ROOT}/cluster/null.json", "chr"), _entry(f"{ROOT}/disk", "blk")]),
         refused=True, error_words=("device or fifo",)),
    Case("duplicate-member", "cluster/pods.json twice, the second different (a verified copy, then a swap)",
         _raw("duplicate", lambda f: [_entry(f"{ROOT}/cluster/pods.json", payload=b'{"items": []}')]),
         refused=True, error_words=("appears twice",)),
    Case("member-outside-root", "a member in a second top-level folder",
         _raw("outside", lambda f: [_entry("other-root/cluster/pods.json", payload=b"{}")]),
         refused=True, error_words=("outside",)),
    Case("pax-huge-size", "a PAX header declaring a 10^20-byte member",
         _raw("paxsize", lambda f: [_pax_size_entry()]), refused=True),
    # decompression bombs (the limits lowered by the environment: cheap)
    Case("bomb-member-limit", "an 8 MiB member over ZTUNNEL_BUNDLE_MAX_MEMBER_BYTES=1 MiB", _bomb(8 << 20),
         refused=True, env={"ZTUNNEL_BUNDLE_MAX_MEMBER_BYTES": str(1 << 20)}, error_words=("limit",)),
    Case("bomb-total-limit", "members adding up over ZTUNNEL_BUNDLE_MAX_TOTAL_BYTES=4 MiB", _bomb(8 << 20),
         refused=True, env={"ZTUNNEL_BUNDLE_MAX_TOTAL_BYTES": str(4 << 20)}, error_words=("decompression bomb",)),
    Case("bomb-read-limit", "a member over ZTUNNEL_BUNDLE_MAX_READ_BYTES: streamed, never read whole",
         _bomb(8 << 20), refused=False, env={"ZTUNNEL_BUNDLE_MAX_READ_BYTES": str(1 << 20)}),
    # .zip parts
    Case("zip-missing-part", "the second of several .zip parts is missing", lambda f: _parts(f, _drop_part(1)),
         refused=True, exits={"pack": _ALL_1}, error_words=("part02",)),
    Case("zip-missing-first-part", "the first .zip part (with the parts note) is missing",
         lambda f: _parts(f, _drop_part(0)), refused=True, error_words=("parts note",)),
    Case("zip-part-not-zip", "a .zip part that is not a zip file", lambda f: _parts(f, _part_not_zip), refused=True,
         error_words=("not a bundle part",)),
    Case("zip-part-corrupt", "a byte flipped inside a .zip part (bad CRC)", lambda f: _parts(f, _part_flipped),
         refused=True, error_words=("damaged bundle part",)),
    Case("zip-note-wrong-type", "a parts note that is a JSON list", lambda f: _parts(f, _rewrite_note([1, 2])),
         refused=True, error_words=("parts note",)),
    Case("zip-note-lies", "a parts note with a non-numeric count and a path for a name",
         lambda f: _parts(f, _rewrite_note({"parts": "many", "archive": "../../escaped.tar.zst", "size": -1})),
         refused=True, error_words=("parts note",)),
    # directories
    Case("dir-symlink-outside", "an extracted bundle whose ztunnel dump is a symlink to a file outside",
         _dir_symlink, refused=True, exits={"validate": _ALL_1, "pack": frozenset({USAGE})},
         error_words=("symbolic link",)),
    Case("dir-fifo", "an extracted bundle whose log is a fifo (reading it would hang)", _dir_fifo, refused=True,
         exits={"pack": frozenset({USAGE})}, error_words=("not a regular file",)),
    # the manifest
    Case("missing-manifest", "no manifest.json", _missing_manifest, refused=False, exits=_BAD_MANIFEST),
    Case("manifest-not-json", "manifest.json is not JSON", _with_manifest(b"{this is not json"), refused=False,
         exits=_BAD_MANIFEST),
    Case("manifest-wrong-type", "manifest.json is a JSON list", _with_manifest(b"[1, 2, 3]"), refused=False,
         exits=_BAD_MANIFEST),
    Case("manifest-wrong-field-types", "manifest.json with artifacts an object and formatVersion a string",
         _with_manifest(b'{"formatVersion": "1", "artifacts": {"a": 1}, "cluster": [], "window": 5}'),
         refused=False, exits=_BAD_MANIFEST),
    Case("manifest-deep", "manifest.json of 100000 '['", _with_manifest(DEEP), refused=False, exits=_BAD_MANIFEST),
    Case("manifest-invalid-utf8", "manifest.json with invalid UTF-8 in a string",
         _with_manifest(b'{"formatVersion": 1, "artifacts": [], "generator": "\xff\xfe"}'), refused=False,
         exits=_BAD_MANIFEST),
    Case("manifest-deep-extras", "a valid manifest whose unknown keys hold values nested 900 levels deep",
         _with_manifest_extras(_deep_valid(900)), refused=False,
         exits={**_BAD_MANIFEST, "validate": _OK}),  # the schema allows unknown keys: only the reader refuses it
    Case("manifest-newer-version", "formatVersion 99",
         _with_manifest(b'{"formatVersion": 99, "artifacts": []}'), refused=False, exits=_BAD_MANIFEST),
    Case("lying-manifest", "wrong sizes and sha256, listed members absent (one ../../etc/passwd), members unlisted",
         _lying_manifest, refused=False, exits={"verify": _ALL_1, "validate": _ALL_1}),
    # artifacts
    Case("log-invalid-utf8", "logs (ztunnel, istiod, cni) with invalid UTF-8, NULs, terminal escapes and JSON "
         "records nested 900 and 100000 levels deep",
         _variant("badutf8", lambda p, d: _bad_utf8_log(d) if p in (ZT_LOG, ISTIOD_LOG, CNI_LOG) else d, ZT_LOG),
         refused=False),
    Case("log-8mb-line", "an 8 MiB single log line, then 8 MiB without a line break",
         _variant("longline", lambda p, d: _long_line(d) if p in (ZT_LOG, ISTIOD_LOG) else d, ZT_LOG),
         refused=False),
    Case("deep-json-100000", "every JSON artifact is 100000 '[' (past every parser's recursion limit)",
         _variant("deep", _each_json(lambda p, d: DEEP), ZT_DUMP), refused=False,
         exits={**_NO_DUMP, "validate": _ALL_1}),
    Case("deep-json-1000", "every JSON artifact holds values nested 1000 levels deep (orjson parses them)",
         _variant("deep1000", _each_json(_deep_in), ZT_DUMP), refused=False,
         exits={"validate": _ALL_1, "ztunnel-config-workload-json": _ALL_1}),  # cannot be written back as JSON
    Case("json-null", "every JSON artifact is null", _variant("null", _each_json(lambda p, d: b"null"), ZT_DUMP),
         refused=False, exits={**_NO_DUMP, "validate": _ALL_1}),
    Case("empty-members", "every member is empty",
         _variant("emptymembers", lambda p, d: b"", ZT_DUMP), refused=False, exits={**_NO_DUMP, "validate": _ALL_1}),
    Case("binary-members", "every member is random bytes",
         _variant("binary", lambda p, d: random.Random(p).randbytes(min(len(d), 4096) or 1), ZT_DUMP),
         refused=False, exits={**_NO_DUMP, "validate": _ALL_1}),
    Case("ztunnel-dump-wrong-types", "ztunnel config dumps (list shape) with every field of the wrong type",
         _variant("ztlist", _each_ztunnel_dump(json.dumps(ZT_DUMP_LIST_SHAPE).encode()), ZT_DUMP),
         refused=False, exits={"validate": _ALL_1}),
    Case("ztunnel-dump-map-shape", "ztunnel config dumps in the 1.22 map shape, every entry of the wrong type",
         _variant("ztmap", _each_ztunnel_dump(json.dumps(ZT_DUMP_MAP_SHAPE).encode()), ZT_DUMP),
         refused=False, exits={"validate": _ALL_1}),
    Case("ztunnel-dump-not-object", "ztunnel config dumps that are a JSON list, number and string",
         _variant("ztscalar", _not_objects, ZT_DUMP),
         refused=False, exits={**_NO_DUMP, "validate": _ALL_1}),
    Case("ztunnel-dump-legacy", "ztunnel config dumps in the unsupported <=1.21 layout (by_addr, by_uid)",
         _variant("ztlegacy", _each_ztunnel_dump(LEGACY_DUMP), ZT_DUMP),
         refused=False, exits={**_NO_DUMP, "validate": _ALL_1}),
    Case("istiod-wrong-types", "istiod ambientz, syncz, per-proxy config_dump and WADS of the wrong shape, "
         "binary version.txt", _variant("istiod", _istiod_edit, layout.istiod_file(ISTIOD, "syncz.json")),
         refused=False, exits={"validate": _ALL_1}),
    Case("kubernetes-wrong-types", "Kubernetes lists and objects with every field of the wrong type",
         _variant("k8s", _schema_edit(K8S_BAD), "cluster/pods.json"), refused=False, exits={"validate": _ALL_1}),
    Case("metrics-garbage", "metrics.txt: broken label sets, non-numbers, 100 kB labels, text after # EOF, binary",
         _variant("metrics", lambda p, d: METRICS_GARBAGE if p.endswith("/metrics.txt") else d, ZT_METRICS),
         refused=False, exits={"validate": _OK}),
    Case("control-chars-in-names", "a ztunnel whose node and pod names hold a line break and terminal escapes",
         _names_with_controls, refused=False, exits={**_NO_DUMP, "validate": _ALL_1}),
]

# One real bomb: a few hundred MB of zeros that compress to KBs, run under an address-space limit.
REAL_BOMB_BYTES = 320 << 20
REAL_BOMB = Case("bomb-real", f"{REAL_BOMB_BYTES >> 20} MiB of zeros as one ztunnel log (a few KB compressed)",
                 _bomb(REAL_BOMB_BYTES), refused=False)


def _pax_size_entry() -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(f"{ROOT}/cluster/huge.json")
    info.mtime = MTIME
    info.size = 0
    info.pax_headers = {"size": str(10**20)}
    return info, b""


def by_name(name: str) -> Case:
    for case in [*CASES, REAL_BOMB]:
        if case.name == name:
            return case
    raise KeyError(name)


def copy_sample(folder: Path) -> Path:
    """The untouched sample, copied (diff's other side)."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(SAMPLE, folder / SAMPLE.name))
