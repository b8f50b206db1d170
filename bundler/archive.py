"""The bundle archive: a streaming, atomic, deterministic writer and a safe reader.

A bundle is a tar stream compressed with zstd (``*.tar.zst``). All members live under one top-level folder,
the *root*, so ``tar --zstd -xf x.tar.zst`` makes one browsable folder; inside it, paths are those of
:mod:`bundler.layout`. ``manifest.json`` is the last member. docs/archive-format.md documents the format.

Writing::

    with BundleWriter("incident.tar.zst", root="incident", mtime=1764000000) as w:
        w.manifest.command_line = ["bundle", "collect"]
        w.add("cluster/version.json", data, source={"type": "api", "apiPath": "/version"})
        w.record("ztunnel/node-a/ztunnel-x/config_dump.json", source={"type": "portforward", "port": 15000},
                 status="error", reason="timeout after 30s")
    # manifest.json is written last, then the temp file is renamed to incident.tar.zst

Reading::

    with open_bundle("incident.tar.zst") as b:      # or an extracted directory
        b.manifest.artifacts
        for path, data in b.iter_members(lambda p: p.endswith("config_dump.json")):
            ...

Every bundle comes from a stranger: the reader refuses absolute paths, ``..`` components, links and special
files, and turns a damaged or truncated archive into :class:`~bundler.errors.BundleFormatError`.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import os
import secrets
import shutil
import stat
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

import zstandard

from bundler import layout
from bundler.errors import ArtifactError, BundleError, BundleFormatError
from bundler.manifest import (
    ARTIFACT_KEYS,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_SKIPPED,
    STATUSES,
    STATUSES_WITH_MEMBER,
    Artifact,
    Manifest,
    Window,
    is_rfc3339_utc,
    rfc3339,
)

SUFFIX = ".tar.zst"
ZSTD_LEVEL = 3
# 128 MiB: the largest window that `zstd -d` and `tar --zstd -x` decode without --long / --memory flags
ZSTD_WINDOW_LOG = 27
TAR_FORMAT = tarfile.PAX_FORMAT
FILE_MODE = 0o644
_BLOCK = tarfile.BLOCKSIZE  # 512
_RECORD = tarfile.RECORDSIZE  # 10240: the archive is padded to a multiple of it, as tar does
_CHUNK = 1 << 20
_TAR_BUFSIZE = 1 << 16
MAX_MANIFEST_BYTES = 256 << 20
# Decompression-bomb limits: a stranger's archive may declare (or decompress to) anything. A real bundle's
# largest members are ztunnel dumps (tens of MB at 20k pods) and capped logs (50 MB each by default); the
# limits leave a wide margin and can be raised by the environment for exceptional bundles.
MAX_MEMBER_BYTES = 4 << 30
MAX_TOTAL_BYTES = 128 << 30
MAX_READ_BYTES = 1 << 30
# A member's reader gives a line longer than this in pieces: iterating over the lines of a stranger's log (a few
# hundred MB of zeros without a line break compress to a few KB) then holds at most this much, not the member.
MAX_LINE_BYTES = 16 << 20


def _check_readable(source: object, path: str, size: int) -> None:
    limit = _limit("MAX_READ_BYTES", MAX_READ_BYTES)
    if size > limit:
        raise BundleFormatError(f"{source}: member {path!r} is larger than {limit:,} bytes "
                                "(ZTUNNEL_BUNDLE_MAX_READ_BYTES): too big to read into memory")


def _limit(name: str, default: int) -> int:
    try:
        return int(os.environ.get(f"ZTUNNEL_BUNDLE_{name}", default))
    except ValueError:
        return default

_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_SKIPPABLE_MASK = 0xFFFFFFF0
_ZSTD_SKIPPABLE_MAGIC = 0x184D2A50


def compression_params(level: int = ZSTD_LEVEL, threads: int = 0) -> zstandard.ZstdCompressionParameters:
    """The zstd parameters of a bundle: level 3 over a 128 MiB window, without long-distance matching.

    The window lets zstd find the repetition between members of the same kind (ztunnel config dumps of a big
    mesh are near-identical), which is why producers add members in :func:`bundler.layout.order_key` order.
    Long-distance matching was measured worse once dumps are big (docs/performance.md): 1,000 nodes and 22,000
    pods (22 GB of dumps) gave 73 MB with it and 13 MB without, in half the time; on small meshes it was
    within 5% either way.
    ``threads=0`` (the default) compresses on the calling thread; other values give different (but still
    valid and, for a fixed value, deterministic) output.
    """
    return zstandard.ZstdCompressionParameters.from_level(
        level, window_log=ZSTD_WINDOW_LOG, threads=threads
    )


# --- paths -----------------------------------------------------------------------------------------------


def check_member_path(path: str) -> str:
    """Return ``path`` if it is a safe member path (relative POSIX, normalised); raise ValueError otherwise."""
    if not isinstance(path, str):
        raise TypeError(f"a member path must be a str, not {type(path).__name__}")
    if not path:
        raise ValueError("empty member path")
    if "\\" in path:
        raise ValueError(f"{path!r}: backslashes are not allowed in member paths")
    if "\x00" in path:
        raise ValueError(f"{path!r}: NUL characters are not allowed in member paths")
    if path.startswith("/"):
        raise ValueError(f"{path!r}: absolute member path")
    parts = path.split("/")
    if ".." in parts:
        raise ValueError(f"{path!r}: '..' components are not allowed in member paths")
    if any(part in ("", ".") for part in parts):
        raise ValueError(f"{path!r}: empty or '.' component in member path")
    return path


def _check_root(root: str) -> str:
    if not isinstance(root, str) or not root or "/" in root or root in (".", "..") or root.startswith("."):
        raise ValueError(f"root {root!r} must be one folder name (not empty, no '/', not starting with '.')")
    check_member_path(root)
    return root


def default_root(out_path: str | os.PathLike[str]) -> str:
    """The root folder for an archive path: its file name without ``.tar.zst``."""
    name = Path(out_path).name
    for suffix in (SUFFIX, ".tzst", ".tar"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _timestamp(value: str | datetime | None, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return rfc3339(value)
    if not is_rfc3339_utc(value):
        raise ValueError(f"{what} must be an RFC 3339 UTC time such as 2026-11-25T14:05:00Z, got {value!r}")
    return value


# --- writer ----------------------------------------------------------------------------------------------


class BundleWriter:
    """Writes a bundle archive as a stream: each member goes into the compressed tar as it is added.

    Memory does not grow with the bundle (only the manifest's artifact list is kept). Output is written to a
    temporary file ``.<name>.partial-<random>`` beside ``out_path`` and renamed to ``out_path`` (replacing it)
    only when :meth:`close` succeeds, after ``manifest.json`` has been written as the last member and the
    file has been fsynced. An exception inside the ``with`` block (or :meth:`abort`) removes the temp file.

    Output is deterministic: the same calls with the same data give byte-identical archives. Tar headers are
    PAX-format with the given ``mtime``, uid/gid 0, empty user and group names and mode 0644; no directory
    entries are written. ``createdAt`` and the window default to ``mtime``, never to the wall clock.

    Members are written in call order. Producers should add them in :func:`bundler.layout.order_key` order
    (or use :meth:`add_sorted`) so that similar artifacts sit together and compress against each other.
    The methods are serialised by a lock, so worker threads may share one writer.
    """

    def __init__(
        self,
        out_path: str | os.PathLike[str],
        root: str | None = None,
        mtime: int | float | None = None,
        *,
        generator: str = "collect",
        level: int = ZSTD_LEVEL,
        threads: int = 0,
    ) -> None:
        self.path = Path(out_path)
        self.root = _check_root(root if root is not None else default_root(self.path))
        if mtime is None:
            mtime = int(os.environ.get("SOURCE_DATE_EPOCH") or time.time())
        self.mtime = int(mtime)
        created = rfc3339(self.mtime)
        self.manifest = Manifest(generator=generator, created_at=created, window=Window(start=created, end=created))
        self._paths: set[str] = set()
        self._folders: set[str] = set()
        self._lock = threading.RLock()
        self._closed = False
        self._failed: BaseException | None = None
        self._tmp_path, fd = self._create_temp()
        try:
            self._file: BinaryIO = os.fdopen(fd, "wb")
            compressor = zstandard.ZstdCompressor(compression_params=compression_params(level, threads))
            self._zstd = compressor.stream_writer(self._file, closefd=False)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            self._remove_temp()
            raise
        self._offset = 0

    # --- public API ---

    @property
    def artifacts(self) -> list[Artifact]:
        return self.manifest.artifacts

    @property
    def closed(self) -> bool:
        return self._closed

    def add(
        self,
        path: str,
        data: bytes | bytearray | memoryview,
        kind: str | None = None,
        source: Mapping[str, Any] | None = None,
        status: str = STATUS_OK,
        reason: str | None = None,
        started: str | datetime | None = None,
        finished: str | datetime | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Artifact:
        """Write ``data`` as the member ``path`` and return its manifest entry.

        ``status`` is ok, or truncated when the data was cut (``reason`` says how). ``kind`` None means
        :func:`bundler.layout.kind_of_path`. ``source`` describes where the data came from
        and must say its ``type`` (api|portforward|proxy|logs|synth; a writer whose manifest generator is
        "synth" fills in "synth"). ``extra`` keys are merged into the manifest entry. Raises ValueError on an
        unsafe or repeated path and on malformed metadata, before anything is written.
        """
        if isinstance(data, str):
            raise TypeError("data must be bytes, not str (encode it first)")
        view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        size = len(view)

        def write_body() -> tuple[int, str]:
            self._write(view)
            return size, hashlib.sha256(view).hexdigest()

        return self._add_member(
            path, size, write_body, kind, source, status, reason, started, finished, extra
        )

    def add_fileobj(
        self,
        path: str,
        fileobj: IO[bytes],
        size: int,
        kind: str | None = None,
        source: Mapping[str, Any] | None = None,
        status: str = STATUS_OK,
        reason: str | None = None,
        started: str | datetime | None = None,
        finished: str | datetime | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Artifact:
        """Stream exactly ``size`` bytes read from ``fileobj`` into the member ``path`` (1 MiB at a time)."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"size must be a non-negative integer, got {size!r}")

        def write_body() -> tuple[int, str]:
            digest = hashlib.sha256()
            remaining = size
            while remaining:
                chunk = fileobj.read(min(_CHUNK, remaining))
                if not chunk:
                    raise OSError(f"{path}: the source ended {remaining} bytes before the {size} announced")
                digest.update(chunk)
                self._write(chunk)
                remaining -= len(chunk)
            return size, digest.hexdigest()

        return self._add_member(
            path, size, write_body, kind, source, status, reason, started, finished, extra
        )

    def add_file(
        self,
        path: str,
        local_path: str | os.PathLike[str],
        kind: str | None = None,
        source: Mapping[str, Any] | None = None,
        status: str = STATUS_OK,
        reason: str | None = None,
        started: str | datetime | None = None,
        finished: str | datetime | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Artifact:
        """Stream the local file ``local_path`` (of any size) into the member ``path``."""
        with open(local_path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            return self.add_fileobj(
                path, fh, size, kind=kind, source=source, status=status, reason=reason,
                started=started, finished=finished, extra=extra,
            )  # fmt: skip

    def record(
        self,
        path: str,
        kind: str | None = None,
        source: Mapping[str, Any] | None = None,
        status: str = STATUS_ERROR,
        reason: str | None = None,
        started: str | datetime | None = None,
        finished: str | datetime | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Artifact:
        """Record an artifact that was NOT collected (status error or skipped): a manifest entry, no member."""
        if status not in (STATUS_ERROR, STATUS_SKIPPED):
            raise ValueError(f"record() is for artifacts not collected: status must be error or skipped, not {status!r}")
        with self._lock:
            self._check_open()
            art = self._make_artifact(path, kind, source, status, reason, started, finished, extra)
            self._claim(art.path)
            self.manifest.artifacts.append(art)
            return art

    def add_sorted(self, items: Iterable[tuple[str, bytes] | tuple[str, bytes, Mapping[str, Any]]]) -> list[Artifact]:
        """Add ``(path, data)`` or ``(path, data, keywords)`` items in :func:`layout.order_key` order.

        The keywords are those of :meth:`add`. Convenient for small bundles whose members are all in memory.
        """
        listed = list(items)
        listed.sort(key=lambda item: layout.order_key(item[0]))
        out = []
        for item in listed:
            keywords = dict(item[2]) if len(item) > 2 else {}  # type: ignore[misc]
            out.append(self.add(item[0], item[1], **keywords))
        return out

    def close(self) -> None:
        """Write ``manifest.json`` as the last member, finish the zstd frame, fsync and rename into place."""
        with self._lock:
            if self._closed:
                return
            if self._failed is not None:
                self.abort()
                raise BundleError(f"{self.path}: not written: an earlier write failed: {self._failed}")
            try:
                data = self.manifest.to_json()
                self._write_header(layout.MANIFEST, len(data))
                self._write(data)
                self._pad()
                self._write(bytes(2 * _BLOCK))  # end-of-archive marker
                remainder = self._offset % _RECORD
                if remainder:
                    self._write(bytes(_RECORD - remainder))
                self._zstd.close()  # ends the frame; closefd=False leaves the file open
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                os.replace(self._tmp_path, self.path)
            except BaseException:
                self.abort()
                raise
            self._closed = True
            _fsync_dir(self.path.parent)

    def abort(self) -> None:
        """Stop writing and remove the temp file; ``out_path`` is left untouched."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(Exception):
                self._zstd.close()
            with contextlib.suppress(Exception):
                self._file.close()
            self._remove_temp()

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # --- internals ---

    def _create_temp(self) -> tuple[Path, int]:
        parent = self.path.parent
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        for _ in range(100):
            candidate = parent / f".{self.path.name}.partial-{secrets.token_hex(4)}"
            try:
                return candidate, os.open(candidate, flags, 0o666)
            except FileExistsError:
                continue
            except OSError as exc:
                raise BundleError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        raise BundleError(f"cannot write {self.path}: no free temporary name in {parent}")

    def _remove_temp(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp_path)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: the writer is closed")
        if self._failed is not None:
            raise BundleError(f"{self.path}: an earlier write failed: {self._failed}")

    def _make_artifact(
        self,
        path: str,
        kind: str | None,
        source: Mapping[str, Any] | None,
        status: str,
        reason: str | None,
        started: str | datetime | None,
        finished: str | datetime | None,
        extra: Mapping[str, Any] | None,
    ) -> Artifact:
        check_member_path(path)
        if path == layout.MANIFEST:
            raise ValueError(f"{path!r} is written by the writer itself")
        if kind is None:
            kind = layout.kind_of_path(path)
        elif not isinstance(kind, str) or not kind:
            raise ValueError(f"{path}: kind must be a non-empty string or None")
        if status not in STATUSES:
            raise ValueError(f"{path}: status must be one of {'|'.join(STATUSES)}, not {status!r}")
        if reason is not None and not isinstance(reason, str):
            raise ValueError(f"{path}: reason must be a string or None")
        src = dict(source) if source is not None else {}
        if "type" not in src:
            if self.manifest.generator != "synth":
                raise ValueError(f"{path}: source must say its type (api|portforward|proxy|logs|synth)")
            src["type"] = "synth"
        if not isinstance(src["type"], str):
            raise ValueError(f"{path}: source type must be a string")
        more = dict(extra) if extra is not None else {}
        clash = sorted(str(key) for key in more if not isinstance(key, str) or key in ARTIFACT_KEYS)
        if clash:
            raise ValueError(f"{path}: extra keys {clash} clash with the manifest's own artifact keys")
        return Artifact(
            path=path,
            kind=kind,
            source=src,
            status=status,
            reason=reason,
            started=_timestamp(started, f"{path}: started"),
            finished=_timestamp(finished, f"{path}: finished"),
            extra=more,
        )

    def _claim(self, path: str) -> None:
        """Reserve ``path``: no repeat, and no path may be both a file and a folder of another path."""
        if path in self._paths:
            raise ValueError(f"{path!r} was already added")
        if path in self._folders:
            raise ValueError(f"{path!r} is a folder of a path already added")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts))]
        for prefix in prefixes:
            if prefix in self._paths:
                raise ValueError(f"{path!r} would be inside {prefix!r}, which was already added as a file")
        self._paths.add(path)
        self._folders.update(prefixes)

    def _add_member(
        self,
        path: str,
        size: int,
        write_body: Callable[[], tuple[int, str]],
        kind: str | None,
        source: Mapping[str, Any] | None,
        status: str,
        reason: str | None,
        started: str | datetime | None,
        finished: str | datetime | None,
        extra: Mapping[str, Any] | None,
    ) -> Artifact:
        if status not in STATUSES_WITH_MEMBER:
            raise ValueError(
                f"{path}: add() writes a member, so status must be ok or truncated, not {status!r};"
                " use record() for an artifact that was not collected"
            )
        with self._lock:
            self._check_open()
            art = self._make_artifact(path, kind, source, status, reason, started, finished, extra)
            self._claim(art.path)
            try:
                self._write_header(art.path, size)
                art.size, art.sha256 = write_body()
                self._pad()
            except BaseException as exc:
                # the tar stream is now inconsistent: nothing more may be added, and close() refuses
                self._failed = exc
                raise
            self.manifest.artifacts.append(art)
            return art

    def _write(self, data: bytes | memoryview) -> None:
        self._zstd.write(data)
        self._offset += len(data)

    def _write_header(self, path: str, size: int) -> None:
        info = tarfile.TarInfo(f"{self.root}/{path}")
        info.size = size
        info.mtime = self.mtime
        info.mode = FILE_MODE
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.REGTYPE
        self._write(info.tobuf(TAR_FORMAT, "utf-8", "surrogateescape"))

    def _pad(self) -> None:
        remainder = self._offset % _BLOCK
        if remainder:
            self._write(bytes(_BLOCK - remainder))


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: not every platform or file system can fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- reader ----------------------------------------------------------------------------------------------


class MemberNotFound(ArtifactError, KeyError):
    """The bundle has no member at that path."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Member:
    """A member of a bundle: its path relative to the root, and its size in bytes."""

    path: str
    size: int


def _order_names(names: Iterable[str]) -> list[str]:
    return sorted(names, key=layout.order_key)


def create_member_file(top: Path, path: str, source: Path) -> BinaryIO:
    """A new file for member ``path`` under the folder ``top``, opened for writing. Never outside ``top`` (no
    ``..``, absolute path or symbolic link on the way), never over an existing file: BundleFormatError."""
    check_member_path(path)  # already checked when read; checked again because this writes
    dest = top.joinpath(*path.split("/"))
    real_top = os.path.realpath(top)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if os.path.commonpath([real_top, os.path.realpath(dest.parent)]) != real_top:
            raise BundleFormatError(f"{source}: member {path!r} escapes the target folder")
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        raise BundleFormatError(f"{source}: member {path!r} clashes with another member (file and folder)") from None
    return os.fdopen(fd, "wb")


class Bundle:
    """A bundle opened for reading: an archive (:class:`ArchiveBundle`) or a directory (:class:`DirectoryBundle`).

    Members are addressed by their path relative to the root (``ztunnel/node-a/ztunnel-x/config_dump.json``).
    Not thread-safe: give each thread its own Bundle.
    """

    source: Path  # what was opened (archive file or directory)
    root: str  # the name of the bundle's top-level folder
    is_archive: bool = False

    def __init__(self) -> None:
        self._manifest: Manifest | None = None

    # --- manifest ---

    @property
    def manifest(self) -> Manifest:
        """The parsed manifest; BundleFormatError if it is missing or broken."""
        if self._manifest is None:
            data = self._manifest_bytes()
            if data is None:
                raise BundleFormatError(f"{self.source}: no {layout.MANIFEST} in the bundle")
            try:
                self._manifest = Manifest.from_json(data)
            except BundleFormatError as exc:
                raise BundleFormatError(f"{self.source}: {exc}") from None
        return self._manifest

    def has_manifest(self) -> bool:
        return self._manifest_bytes() is not None

    @property
    def archive_size(self) -> int | None:
        """Size in bytes of the archive file; None for a directory."""
        return None

    # --- members ---

    def members(self) -> list[Member]:
        """Every member (files only), in stored order; for a directory, in :func:`layout.order_key` order."""
        raise NotImplementedError

    def names(self) -> list[str]:
        return [member.path for member in self.members()]

    def has(self, path: str) -> bool:
        return any(member.path == path for member in self.members())

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self.has(path)

    def size(self, path: str) -> int:
        for member in self.members():
            if member.path == path:
                return member.size
        raise MemberNotFound(f"{self.source}: no member {path!r}")

    def read(self, path: str) -> bytes:
        """The whole content of member ``path`` (MemberNotFound if there is none). Members over the read limit
        are refused: stream them with :meth:`open`."""
        _check_readable(self.source, path, self.size(path))
        with self.open(path) as fh:
            return fh.read()

    def open(self, path: str) -> BinaryIO:
        """A binary file object streaming member ``path``; close it when done."""
        raise NotImplementedError

    def iter_open(self, predicate: Callable[[str], bool] | None = None) -> Iterator[tuple[str, BinaryIO]]:
        """Yield ``(path, file object)`` for each member in stored order (that ``predicate(path)`` accepts).

        One forward pass: each file object is valid only until the next item is requested.
        """
        raise NotImplementedError

    def iter_members(self, predicate: Callable[[str], bool] | None = None) -> Iterator[tuple[str, bytes]]:
        """Yield ``(path, bytes)`` for each member in stored order (that ``predicate(path)`` accepts).

        Streaming: one forward pass, and one member in memory at a time (briefly twice its size while it is
        read). For big logs prefer :meth:`iter_open`, which holds none.
        """
        for path, fh in self.iter_open(predicate):
            yield path, fh.read()

    def extract(self, target_dir: str | os.PathLike[str]) -> Path:
        """Extract into ``target_dir/<root>/`` and return that folder; see :func:`extract_bundle`."""
        target = Path(target_dir)
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BundleError(f"cannot extract to {target}: {exc.strerror or exc}") from None
        final = target / self.root
        if final.exists() or final.is_symlink():
            raise BundleError(f"cannot extract: {final} already exists")
        staging = Path(tempfile.mkdtemp(prefix=f".{self.root}.extract-", dir=target))
        try:
            top = staging / self.root
            top.mkdir()
            for path, fh in self.iter_open():
                with create_member_file(top, path, self.source) as out:
                    shutil.copyfileobj(fh, out, _CHUNK)
            os.rename(top, final)
        except OSError as exc:
            raise BundleError(f"cannot extract to {target}: {exc.strerror or exc}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final

    # --- lifecycle ---

    def close(self) -> None:
        pass

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _manifest_bytes(self) -> bytes | None:
        raise NotImplementedError


# --- directories ---


class DirectoryBundle(Bundle):
    """An extracted bundle: a folder holding ``manifest.json`` and the layout's files.

    Symbolic links and special files inside it are refused (BundleFormatError), as in archives.
    """

    def __init__(self, root_dir: Path, source: Path | None = None) -> None:
        super().__init__()
        self.root_dir = root_dir
        self.source = source if source is not None else root_dir
        self.root = root_dir.resolve().name
        self._members: list[Member] | None = None
        self._sizes: dict[str, int] = {}

    def members(self) -> list[Member]:
        if self._members is None:
            found: dict[str, int] = {}
            self._walk(self.root_dir, "", found)
            self._members = [Member(path, found[path]) for path in _order_names(found)]
            self._sizes = found
        return list(self._members)

    def _walk(self, folder: Path, prefix: str, found: dict[str, int]) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise BundleError(f"{folder}: cannot list: {exc.strerror or exc}") from None
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            try:
                check_member_path(rel)
            except ValueError as exc:
                raise BundleFormatError(f"{self.source}: unsafe member: {exc}") from None
            if entry.is_symlink():
                raise BundleFormatError(f"{self.source}: unsafe member {rel!r}: symbolic link")
            if entry.is_dir(follow_symlinks=False):
                self._walk(Path(entry.path), f"{rel}/", found)
            elif entry.is_file(follow_symlinks=False):
                found[rel] = entry.stat(follow_symlinks=False).st_size
            else:
                raise BundleFormatError(f"{self.source}: unsafe member {rel!r}: not a regular file")

    def has(self, path: str) -> bool:
        return path in self._index()

    def size(self, path: str) -> int:
        try:
            return self._index()[path]
        except KeyError:
            raise MemberNotFound(f"{self.source}: no member {path!r}") from None

    def _index(self) -> dict[str, int]:
        if self._members is None:
            self.members()
        return self._sizes

    def open(self, path: str) -> BinaryIO:
        try:
            check_member_path(path)
        except ValueError as exc:
            raise MemberNotFound(f"{self.source}: no member {path!r} ({exc})") from None
        return self._open_checked(path)

    def _open_checked(self, path: str) -> BinaryIO:
        full = self.root_dir.joinpath(*path.split("/"))
        real_root = os.path.realpath(self.root_dir)
        if os.path.commonpath([real_root, os.path.realpath(full)]) != real_root:
            raise BundleFormatError(f"{self.source}: unsafe member {path!r}: leads outside the bundle")
        try:
            fd = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise MemberNotFound(f"{self.source}: no member {path!r}") from None
        except OSError as exc:
            raise BundleFormatError(f"{self.source}: cannot open member {path!r}: {exc.strerror or exc}") from None
        fh = _MemberReader(io.FileIO(fd, "rb"))
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            fh.close()
            raise BundleFormatError(f"{self.source}: unsafe member {path!r}: not a regular file")
        return fh

    def iter_open(self, predicate: Callable[[str], bool] | None = None) -> Iterator[tuple[str, BinaryIO]]:
        for member in self.members():
            if predicate is not None and not predicate(member.path):
                continue
            with self._open_checked(member.path) as fh:
                yield member.path, fh

    def _manifest_bytes(self) -> bytes | None:
        full = self.root_dir / layout.MANIFEST
        if not full.is_file() or full.is_symlink():
            return None
        if full.stat().st_size > MAX_MANIFEST_BYTES:
            raise BundleFormatError(f"{self.source}: {layout.MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes")
        with self._open_checked(layout.MANIFEST) as fh:
            return fh.read()


def _find_root_dir(folder: Path) -> Path:
    """The bundle folder inside ``folder``: itself if it holds manifest.json, else its single subfolder that
    does (what ``tar -xf`` makes); without any manifest, its only subfolder, or itself."""
    if (folder / layout.MANIFEST).is_file():
        return folder
    try:
        subfolders = sorted(
            entry for entry in folder.iterdir() if entry.is_dir() and not entry.is_symlink() and not entry.name.startswith(".")
        )
        has_files = any(entry.is_file() for entry in folder.iterdir() if not entry.name.startswith("."))
    except OSError as exc:
        raise BundleError(f"{folder}: cannot list: {exc.strerror or exc}") from None
    with_manifest = [sub for sub in subfolders if (sub / layout.MANIFEST).is_file()]
    if len(with_manifest) == 1:
        return with_manifest[0]
    if len(with_manifest) > 1:
        names = ", ".join(sub.name for sub in with_manifest)
        raise BundleFormatError(f"{folder}: holds several bundles ({names}); name one of them")
    if len(subfolders) == 1 and not has_files:
        return subfolders[0]
    return folder


# --- archives ---


def _format_error(source: Path, exc: BaseException) -> BundleFormatError:
    text = str(exc) or type(exc).__name__
    if "unexpected end of data" in text or isinstance(exc, EOFError):
        return BundleFormatError(f"{source}: truncated archive: {text}")
    if isinstance(exc, tarfile.TarError):
        return BundleFormatError(f"{source}: not a ztunnel-bundle archive: bad tar stream: {text}")
    return BundleFormatError(f"{source}: damaged archive: {text}")


@contextlib.contextmanager
def _guard(source: Path) -> Iterator[None]:
    """Turn what zstandard, tarfile and the OS raise while reading into one-line BundleErrors."""
    try:
        yield
    except BundleError:
        raise
    except (zstandard.ZstdError, tarfile.TarError, EOFError, ValueError) as exc:
        raise _format_error(source, exc) from None
    except OSError as exc:
        raise BundleError(f"{source}: cannot read: {exc.strerror or exc}") from None


class _MemberReader(io.BufferedReader):
    """How every member is read: a BufferedReader whose lines (``readline``, iteration) are at most
    ``ZTUNNEL_BUNDLE_MAX_LINE_BYTES`` long; a longer line comes in pieces, no byte is lost."""

    def __init__(self, raw: Any, buffer_size: int = _CHUNK) -> None:
        super().__init__(raw, buffer_size)
        self._line_limit = max(1, _limit("MAX_LINE_BYTES", MAX_LINE_BYTES))

    def readline(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size > self._line_limit:
            size = self._line_limit
        return super().readline(size)

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class _GuardedReader(io.RawIOBase):
    """A raw reader over at most ``size`` bytes of ``inner``, mapping read errors to BundleErrors."""

    def __init__(self, inner: Any, size: int, source: Path, path: str, owned: Any = None) -> None:
        self._inner = inner
        self._remaining = size
        self._size = size
        self._source = source
        self._path = path
        self._owned = owned

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._remaining <= 0:
            return 0
        view = memoryview(buffer).cast("B")
        data = self._next(len(view))
        n = len(data)
        view[:n] = data
        self._remaining -= n
        return n

    def readall(self) -> bytes:
        if self._remaining <= 0:
            return b""
        # in 1 MiB pieces (tarfile copies what it reads several times, so one big read would cost 3x the member),
        # joined once: a zeroed buffer copied into bytes cost two fresh allocations and two copies per member
        parts = []
        while self._remaining > 0:
            data = self._next(_CHUNK)
            self._remaining -= len(data)
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _next(self, most: int) -> bytes:
        """Up to ``most`` more bytes of the member (at least one); BundleFormatError when the stream ends early."""
        with _guard(self._source):
            data = self._inner.read(min(most, self._remaining))
        if not data:
            raise BundleFormatError(
                f"{self._source}: truncated archive: member {self._path!r} ends after"
                f" {self._size - self._remaining} of {self._size} bytes"
            )
        return data

    def close(self) -> None:
        if self._owned is not None:
            with contextlib.suppress(Exception):
                self._owned.close()
            self._owned = None
        super().close()


class _Tap:
    """The decompressed stream as tarfile reads it: counts bytes and keeps the most recent ones, so that a
    pass can check what follows the last member (the end-of-archive marker, or a sign of truncation)."""

    def __init__(self, raw: Any, keep: int) -> None:
        self.raw = raw
        self.pos = 0
        self.keep = keep
        self.chunks: collections.deque[bytes] = collections.deque()  # the last chunks read, at least `keep` bytes
        self.kept = 0
        self.recent_start = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n if n is not None and n >= 0 else _CHUNK)
        self.pos += len(data)
        # whole chunks are kept and dropped (no copying: tarfile reads megabytes per member)
        self.chunks.append(data)
        self.kept += len(data)
        while self.chunks and self.kept - len(self.chunks[0]) >= self.keep:
            dropped = self.chunks.popleft()
            self.kept -= len(dropped)
            self.recent_start += len(dropped)
        return data

    def bytes_at(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``offset`` (which must not be older than what is kept)."""
        while self.pos < offset + n:
            if not self.read(offset + n - self.pos):
                break
        start = offset - self.recent_start
        if start < 0:
            return b""
        return b"".join(self.chunks)[start : start + n]


class ArchiveBundle(Bundle):
    """A ``.tar.zst`` bundle, read as a stream.

    Opening checks the zstd frame structure (so a truncated file is refused at once, without decompressing)
    and reads the first tar header (to learn the root). Everything else is lazy:

    * ``iter_members``/``iter_open`` make one forward pass over the decompressed tar stream, with one member
      in memory at a time (``iter_open``: none). A pass that runs to the end also fills the index below.
    * ``members``/``names``/``manifest`` need the index: the list of members with their offsets in the
      decompressed stream and the bytes of ``manifest.json``. The first call makes one pass to build it
      (the manifest is the last member, so that is a full decompression: about 0.2 s per 500 MB of tar).
    * ``read``/``open`` use the index: they decompress forward to the member's offset. A stream left where
      the previous ``read`` ended is reused, so reading members in stored order costs one pass in total;
      reading backwards restarts decompression from the beginning. Prefer ``iter_members`` for bulk reads.

    Each pass validates every header: absolute paths, ``..``, links, special files, members outside the root
    folder and repeated members raise BundleFormatError naming the member.
    """

    is_archive = True

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.source = path
        self._root: str | None = None
        self._index: dict[str, tuple[int, int]] | None = None  # path -> (data offset, size)
        self._members: list[Member] | None = None
        self._manifest_raw: bytes | None = None
        self._cursor: tuple[Any, int] | None = None  # (decompressed stream, position)
        try:
            self._file_size = os.path.getsize(path)
        except OSError as exc:
            raise BundleError(f"{path}: cannot read: {exc.strerror or exc}") from None
        self._check_frames()
        first = self._pass(wanted=lambda _path: False)
        try:
            next(first, None)  # the first member is enough to learn the root
        finally:
            first.close()
        if self._root is None:
            raise BundleFormatError(f"{path}: not a ztunnel-bundle archive: the tar stream holds no files")
        self.root = self._root

    @property
    def archive_size(self) -> int | None:
        return self._file_size

    # --- frame check ---

    def _check_frames(self) -> None:
        """Walk the zstd frame and block headers (without decompressing) to refuse other files and truncation."""
        src = self.source
        size = self._file_size
        if size == 0:
            raise BundleFormatError(f"{src}: not a ztunnel-bundle archive: empty file")
        try:
            fh = open(src, "rb")
        except OSError as exc:
            raise BundleError(f"{src}: cannot read: {exc.strerror or exc}") from None
        with fh:
            head = fh.read(512)
            if len(head) < 4 or int.from_bytes(head[:4], "little") != _ZSTD_MAGIC:
                raise BundleFormatError(f"{src}: not a ztunnel-bundle archive: {_describe(head)}")
            pos = 0
            while pos < size:
                fh.seek(pos)
                magic_bytes = fh.read(4)
                if len(magic_bytes) < 4:
                    raise BundleFormatError(f"{src}: damaged archive: {size - pos} stray bytes after the zstd data")
                magic = int.from_bytes(magic_bytes, "little")
                if magic & _ZSTD_SKIPPABLE_MASK == _ZSTD_SKIPPABLE_MAGIC:
                    length = fh.read(4)
                    if len(length) < 4:
                        raise BundleFormatError(f"{src}: truncated archive: ends inside a zstd skippable frame")
                    pos += 8 + int.from_bytes(length, "little")
                    if pos > size:
                        raise BundleFormatError(f"{src}: truncated archive: ends inside a zstd skippable frame")
                    continue
                if magic != _ZSTD_MAGIC:
                    raise BundleFormatError(f"{src}: damaged archive: unexpected data after the zstd stream at byte {pos}")
                descriptor_byte = fh.read(1)
                if not descriptor_byte:
                    raise BundleFormatError(f"{src}: truncated archive: ends inside a zstd frame header")
                descriptor = descriptor_byte[0]
                if descriptor & 0x08:
                    raise BundleFormatError(f"{src}: damaged archive: invalid zstd frame header at byte {pos}")
                single_segment = (descriptor >> 5) & 1
                content_size_bytes = (single_segment, 2, 4, 8)[descriptor >> 6]
                header = 4 + 1 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3] + content_size_bytes
                pos += header
                while True:
                    if pos + 3 > size:
                        raise BundleFormatError(f"{src}: truncated archive: the zstd stream ends early (at byte {size})")
                    fh.seek(pos)
                    block = int.from_bytes(fh.read(3), "little")
                    block_type = (block >> 1) & 3
                    if block_type == 3:
                        raise BundleFormatError(f"{src}: damaged archive: invalid zstd block at byte {pos}")
                    pos += 3 + (1 if block_type == 1 else block >> 3)
                    if pos > size:
                        raise BundleFormatError(f"{src}: truncated archive: the zstd stream ends early (at byte {size})")
                    if block & 1:
                        break
                if descriptor & 0x04:
                    pos += 4
                    if pos > size:
                        raise BundleFormatError(f"{src}: truncated archive: ends inside a zstd checksum")

    # --- passes ---

    def _open_stream(self) -> Any:
        try:
            fh = open(self.source, "rb")
        except OSError as exc:
            raise BundleError(f"{self.source}: cannot read: {exc.strerror or exc}") from None
        return zstandard.ZstdDecompressor().stream_reader(fh, read_size=_CHUNK, read_across_frames=True, closefd=True)

    def _member_path(self, info: tarfile.TarInfo) -> str | None:
        """The member's path relative to the root, or None for a folder entry; refuses unsafe members."""
        name = info.name
        while name.startswith("./"):
            name = name[2:]
        if name in ("", "."):
            return None
        if info.issym():
            raise BundleFormatError(f"{self.source}: unsafe member {name!r}: symbolic link")
        if info.islnk():
            raise BundleFormatError(f"{self.source}: unsafe member {name!r}: hard link")
        if info.ischr() or info.isblk() or info.isfifo():
            raise BundleFormatError(f"{self.source}: unsafe member {name!r}: device or fifo")
        if not (info.isreg() or info.isdir()):
            raise BundleFormatError(f"{self.source}: unsafe member {name!r}: unsupported type {info.type!r}")
        try:
            check_member_path(name)
        except ValueError as exc:
            raise BundleFormatError(f"{self.source}: unsafe member: {exc}") from None
        top, _, rest = name.partition("/")
        if self._root is None:
            if not rest and not info.isdir():
                raise BundleFormatError(
                    f"{self.source}: not a ztunnel-bundle archive: member {name!r} is not inside a top-level folder"
                )
            self._root = top
        elif top != self._root:
            raise BundleFormatError(
                f"{self.source}: member {name!r} is outside the bundle's top-level folder {self._root + '/'!r}"
            )
        if not rest:
            if not info.isdir():
                raise BundleFormatError(f"{self.source}: member {name!r} should be the top-level folder")
            return None
        return None if info.isdir() else rest

    def _pass(self, wanted: Callable[[str], bool] | None = None) -> Iterator[tuple[str, int, BinaryIO | None]]:
        """One forward pass: yields (path, size, file object or None) for every file member.

        A file object is given when ``wanted(path)`` is true; it is valid until the next item. A pass that
        reaches the end checks the end-of-archive marker and records the index.
        """
        raw = self._open_stream()
        tap = _Tap(raw, keep=2 * _TAR_BUFSIZE + 4 * _BLOCK)
        try:
            with _guard(self.source):
                tar = tarfile.open(
                    fileobj=tap, mode="r|", bufsize=_TAR_BUFSIZE, encoding="utf-8", errors="surrogateescape"
                )
            seen: dict[str, tuple[int, int]] = {}
            order: list[Member] = []
            manifest_raw: bytes | None = None
            total = 0
            max_member = _limit("MAX_MEMBER_BYTES", MAX_MEMBER_BYTES)
            max_total = _limit("MAX_TOTAL_BYTES", MAX_TOTAL_BYTES)
            while True:
                with _guard(self.source):
                    info = tar.next()
                    tar.members.clear()  # tarfile keeps every header otherwise
                if info is None:
                    break
                path = self._member_path(info)
                if path is None:
                    continue
                if path in seen:
                    raise BundleFormatError(f"{self.source}: member {path!r} appears twice")
                if info.size > max_member:
                    raise BundleFormatError(f"{self.source}: member {path!r} is {info.size:,} bytes, over the "
                                            f"{max_member:,}-byte limit (ZTUNNEL_BUNDLE_MAX_MEMBER_BYTES)")
                total += info.size
                if total > max_total:
                    raise BundleFormatError(f"{self.source}: the members add up to more than {max_total:,} "
                                            "bytes (ZTUNNEL_BUNDLE_MAX_TOTAL_BYTES): refusing a decompression bomb")
                seen[path] = (info.offset_data, info.size)
                order.append(Member(path, info.size))
                fileobj: BinaryIO | None = None
                if path == layout.MANIFEST:
                    if info.size > MAX_MANIFEST_BYTES:
                        raise BundleFormatError(
                            f"{self.source}: {layout.MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes"
                        )
                    with _guard(self.source):
                        extracted = tar.extractfile(info)
                    assert extracted is not None
                    manifest_raw = io.BufferedReader(
                        _GuardedReader(extracted, info.size, self.source, path), _CHUNK
                    ).read()
                    self._manifest_raw = manifest_raw
                    if wanted is None or wanted(path):
                        fileobj = io.BytesIO(manifest_raw)
                elif wanted is None or wanted(path):
                    with _guard(self.source):
                        extracted = tar.extractfile(info)
                    assert extracted is not None
                    fileobj = _MemberReader(_GuardedReader(extracted, info.size, self.source, path))
                yield path, info.size, fileobj
            with _guard(self.source):
                self._check_end(tar, tap)
            if self._index is None:
                self._index = seen
                self._members = order
                self._manifest_raw = manifest_raw
        finally:
            with contextlib.suppress(Exception):
                raw.close()

    def _check_end(self, tar: tarfile.TarFile, tap: _Tap) -> None:
        """After the last member, a tar stream holds a zero block; anything else is truncation or damage."""
        end = tar.offset
        marker = tap.bytes_at(end, _BLOCK)
        if len(marker) < _BLOCK:
            raise BundleFormatError(f"{self.source}: truncated archive: the tar stream ends at byte {tap.pos}")
        if marker.count(0) != _BLOCK:
            raise BundleFormatError(f"{self.source}: damaged archive: invalid tar header at byte {end}")

    def _ensure_index(self) -> dict[str, tuple[int, int]]:
        if self._index is None:
            for _ in self._pass(wanted=lambda _path: False):
                pass
        assert self._index is not None
        return self._index

    # --- Bundle API ---

    def members(self) -> list[Member]:
        self._ensure_index()
        assert self._members is not None
        return list(self._members)

    def has(self, path: str) -> bool:
        return path in self._ensure_index()

    def size(self, path: str) -> int:
        try:
            return self._ensure_index()[path][1]
        except KeyError:
            raise MemberNotFound(f"{self.source}: no member {path!r}") from None

    def _stream_at(self, offset: int) -> Any:
        """A decompressed stream positioned at ``offset``: the cursor if it is not past it, else a new one."""
        stream, pos = self._cursor if self._cursor is not None else (None, 0)
        self._cursor = None
        if stream is None or pos > offset:
            if stream is not None:
                stream.close()
            stream, pos = self._open_stream(), 0
        scratch = bytearray(_CHUNK)
        view = memoryview(scratch)
        try:
            with _guard(self.source):
                while pos < offset:
                    n = stream.readinto(view[: min(_CHUNK, offset - pos)])
                    if not n:
                        raise BundleFormatError(f"{self.source}: truncated archive: ends at byte {pos}")
                    pos += n
        except BaseException:
            stream.close()
            raise
        return stream

    def read(self, path: str) -> bytes:
        offset, size = self._locate(path)
        _check_readable(self.source, path, size)
        stream = self._stream_at(offset)
        try:
            with _guard(self.source):
                data = stream.read(size) if size else b""  # one allocation of the member's size
                if len(data) < size:
                    parts = [data]
                    got = len(data)
                    while got < size:
                        chunk = stream.read(min(_CHUNK, size - got))
                        if not chunk:
                            raise BundleFormatError(
                                f"{self.source}: truncated archive: member {path!r} ends after {got} of {size} bytes"
                            )
                        parts.append(chunk)
                        got += len(chunk)
                    data = b"".join(parts)
        except BaseException:
            stream.close()
            raise
        self._cursor = (stream, offset + size)
        return data

    def open(self, path: str) -> BinaryIO:
        offset, size = self._locate(path)
        stream = self._stream_at(offset)
        return _MemberReader(_GuardedReader(stream, size, self.source, path, owned=stream))

    def _locate(self, path: str) -> tuple[int, int]:
        try:
            return self._ensure_index()[path]
        except KeyError:
            raise MemberNotFound(f"{self.source}: no member {path!r}") from None

    def iter_open(self, predicate: Callable[[str], bool] | None = None) -> Iterator[tuple[str, BinaryIO]]:
        wanted = predicate if predicate is not None else (lambda _path: True)
        for path, _size, fileobj in self._pass(wanted):
            if fileobj is not None:
                yield path, fileobj

    def _manifest_bytes(self) -> bytes | None:
        self._ensure_index()
        return self._manifest_raw

    def close(self) -> None:
        if self._cursor is not None:
            with contextlib.suppress(Exception):
                self._cursor[0].close()
            self._cursor = None


def _describe(head: bytes) -> str:
    """Say what a file that is not zstd looks like."""
    if head[:2] == b"\x1f\x8b":
        return "gzip-compressed, not zstd (bundles are .tar.zst)"
    if head[:3] == b"BZh":
        return "bzip2-compressed, not zstd (bundles are .tar.zst)"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz-compressed, not zstd (bundles are .tar.zst)"
    if head[:4] == b"PK\x03\x04":
        return "a zip file, not a zstd-compressed tar"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "an uncompressed tar, not zstd-compressed (bundles are .tar.zst)"
    return "not zstd-compressed"


# --- entry points ----------------------------------------------------------------------------------------


def open_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Open a bundle: a ``.tar.zst`` archive, an extracted folder holding ``manifest.json``, or a folder whose
    single subfolder holds it (what ``tar -xf`` makes).

    A bundle without a manifest still opens (so that ``verify`` can report it); its ``.manifest`` raises
    BundleFormatError.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise BundleFormatError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise BundleError(f"{path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        return DirectoryBundle(_find_root_dir(p), source=p)
    if stat.S_ISREG(st.st_mode) and p.name.endswith(".zip"):
        return _open_parts(p)
    if stat.S_ISREG(st.st_mode):
        return ArchiveBundle(p)
    raise BundleFormatError(f"{path}: not a ztunnel-bundle archive: not a regular file or directory")


def _open_parts(path: Path) -> Bundle:
    """GitHub ``.zip`` parts (bundler.parts): reassembled into a temporary archive, removed on close."""
    from bundler.parts import reassemble

    archive = reassemble(path)
    try:
        bundle = ArchiveBundle(archive)
    except BaseException:
        shutil.rmtree(archive.parent, ignore_errors=True)
        raise
    original_close = bundle.close

    def close() -> None:
        original_close()
        shutil.rmtree(archive.parent, ignore_errors=True)

    bundle.close = close  # type: ignore[method-assign]
    return bundle


def extract_bundle(path: str | os.PathLike[str], target_dir: str | os.PathLike[str]) -> Path:
    """Extract a bundle safely into ``target_dir/<root>/`` and return that folder.

    Members are written only under that folder (paths were checked, links and special files refused), into a
    staging folder first: an archive refused half-way leaves nothing behind. ``target_dir/<root>`` must not
    exist yet.
    """
    with open_bundle(path) as bundle:
        return bundle.extract(target_dir)
