"""Reading an archive once: every member hashed, ztunnel dumps handed to the model, everything else put on disk.

Analyzers read members in any order, and random access into one zstd stream means decompressing from its start
each time, so an archive is not analyzed in place. Extracting it whole costs as much again as reading it: in a
mesh of 1,000 nodes the ztunnel dumps are 20 GB of nearly identical text (the archive: a few MB). So the model
reads the archive once, in stored order: each ztunnel dump is turned into its view there and then and not
written, the other members (Kubernetes lists, logs, metrics, istiod's views: small) go to a temporary folder,
and every member's size and sha256 is recorded for the integrity check. :class:`PassedBundle` then serves the
members from the folder, and a dump (rarely wanted raw afterwards) from the archive.

istiod's per-proxy dumps of Istio <= 1.24 repeat byte for byte (istiod sends every ztunnel the same configuration):
1,000 of 13 MB each were 13 GB written to the folder, most of the time analyze took. A member of those kinds whose
content was already written is not written again: it is read from the first copy.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from bundler import layout
from bundler.archive import Bundle, DirectoryBundle, Member, check_member_path, create_member_file
from bundler.errors import BundleError

__all__ = ["DiskFull", "PassedBundle", "read_once"]

_CHUNK = 1 << 20
_REPEATED_KINDS = frozenset({layout.KIND_ISTIOD_CONFIG_DUMP, layout.KIND_ISTIOD_WADS})
_MARGIN = 256 << 20  # free space kept on the disk while writing


class DiskFull(BundleError):
    """Not enough free disk space for the members that go to disk."""


def read_once(archive: Bundle, folder: Path, consume: Callable[[str], bool],
              on_member: Callable[[str, bytes], None]) -> tuple[PassedBundle, dict[str, tuple[int, str]]]:
    """One forward pass over ``archive``: members that ``consume(path)`` accepts are given to
    ``on_member(path, data)`` (one in memory at a time) and not written; the others are written under
    ``folder/<root>/``. Returns the bundle to read from afterwards and ``{path: (size, sha256)}`` of every member
    but the manifest. BundleError (damaged archive, no room on the disk) leaves the caller to clean ``folder``."""
    top = folder / archive.root
    top.mkdir()
    digests: dict[str, tuple[int, str]] = {}
    consumed: set[str] = set()
    first_with: dict[tuple[int, str], str] = {}  # (size, sha256) -> the member written with that content
    aliases: dict[str, str] = {}  # a member not written -> the member with the same content
    room = _free(folder)
    with ThreadPoolExecutor(1, thread_name_prefix="sha256") as hasher:
        for path, fh in archive.iter_open():
            check_member_path(path)  # already checked when read; never write outside `top`
            if consume(path):
                data = fh.read()
                # hashlib lets go of the GIL: the dump is hashed on the other core while it is parsed
                hashed = hasher.submit(_sha256, data)
                consumed.add(path)
                on_member(path, data)
                digests[path] = (len(data), hashed.result())
                del data
                continue
            if layout.kind_of_path(path) in _REPEATED_KINDS:
                data = fh.read()
                key = (len(data), _sha256(data))
                if key in first_with:
                    aliases[path] = first_with[key]
                    digests[path] = key
                    continue
                first_with[key] = path
                fh = io.BytesIO(data)
                del data
            size, digest = _write(top, path, archive.source, fh, folder, room)
            room -= size
            if path != layout.MANIFEST:
                digests[path] = (size, digest)
    return PassedBundle(archive, DirectoryBundle(top, source=archive.source), consumed, aliases), digests


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(top: Path, path: str, source: Path, fh: BinaryIO, folder: Path, room: int) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    try:
        out = create_member_file(top, path, source)
    except OSError as exc:
        raise BundleError(f"cannot write {top / path}: {exc.strerror or exc}") from None
    with out:
        while chunk := fh.read(_CHUNK):
            size += len(chunk)
            if size > room:
                room = _free(folder)  # checked again only after each `room` bytes written
                if size > room:
                    raise DiskFull(f"not enough free disk space in {folder} to read {source}")
            digest.update(chunk)
            out.write(chunk)
    return size, digest.hexdigest()


def _free(folder: Path) -> int:
    return max(0, shutil.disk_usage(folder).free - _MARGIN)


class PassedBundle(Bundle):
    """An archive after :func:`read_once`: members from the folder, the consumed ones from the archive."""

    is_archive = False  # nothing to extract any more

    def __init__(self, archive: Bundle, disk: DirectoryBundle, consumed: set[str],
                 aliases: dict[str, str] | None = None) -> None:
        super().__init__()
        self.archive = archive
        self.disk = disk
        self.consumed = consumed
        self.aliases = aliases or {}  # members not written, read from a member with the same bytes
        self.source = archive.source
        self.root = archive.root

    @property
    def archive_size(self) -> int | None:
        return self.archive.archive_size

    def members(self) -> list[Member]:
        return self.archive.members()  # the pass filled the archive's index: no second pass

    def has(self, path: str) -> bool:
        return self.archive.has(path)

    def size(self, path: str) -> int:
        return self.archive.size(path)

    def _side(self, path: str) -> Bundle:
        return self.archive if path in self.consumed else self.disk

    def read(self, path: str) -> bytes:
        return self._side(path).read(self.aliases.get(path, path))

    def open(self, path: str) -> BinaryIO:
        return self._side(path).open(self.aliases.get(path, path))

    def iter_open(self, predicate: Callable[[str], bool] | None = None) -> Iterator[tuple[str, BinaryIO]]:
        for member in self.members():
            if predicate is None or predicate(member.path):
                with self.open(member.path) as fh:
                    yield member.path, fh

    def _manifest_bytes(self) -> bytes | None:
        return self.disk._manifest_bytes()  # noqa: SLF001 - the same bundle seen from its folder

    def close(self) -> None:
        self.archive.close()
        self.disk.close()
