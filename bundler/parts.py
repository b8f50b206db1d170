"""GitHub attachments: it refuses ``.zst`` files and anything over 25 MB, but takes ``.zip``. A bundle is
wrapped into ``.zip`` parts (stored, not recompressed: the archive is already zstd), each at most the part
size, and read back transparently by every bundle command.

Layout: ``NAME.tar.zst.zip`` when one part is enough, else ``NAME.part01.zip``, ``NAME.part02.zip``, ...
Each zip holds one slice ``NAME.tar.zst.<NNN>``; the first also holds ``NAME.parts.json`` (the parts count,
the archive's size and sha256), so that a missing or altered part is a clear error, not a corrupt archive.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path

import orjson

from bundler.errors import BundleFormatError

GITHUB_LIMIT = 25 * 1000 * 1000
_ZIP_OVERHEAD = 64 * 1024  # local and central headers, the parts note: generous
_PART = re.compile(r"^(?P<name>.+)\.part(?P<n>\d{2,})\.zip$")
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError, zlib.error)
_MAX_NOTE = 1 << 20  # the parts note is a few hundred bytes
_MAX_PARTS = 10_000


def _base(archive: Path) -> str:
    return archive.name.removesuffix(".tar.zst")


def pack(archive: str | Path, part_size: int = GITHUB_LIMIT, out_dir: str | Path | None = None) -> list[Path]:
    """Wrap ``archive`` into zip parts of at most ``part_size`` bytes each; returns their paths."""
    archive = Path(archive)
    out = Path(out_dir) if out_dir else archive.parent
    size = archive.stat().st_size
    slice_size = part_size - _ZIP_OVERHEAD
    if slice_size <= 0:
        raise ValueError(f"part size {part_size} is too small")
    count = max(1, -(-size // slice_size))
    digest = hashlib.sha256()
    with open(archive, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    note = orjson.dumps({"archive": archive.name, "parts": count, "size": size, "sha256": digest.hexdigest()})
    base = _base(archive)
    paths = [out / f"{archive.name}.zip"] if count == 1 else [out / f"{base}.part{i:02d}.zip"
                                                               for i in range(1, count + 1)]
    with open(archive, "rb") as fh:
        for i, path in enumerate(paths, 1):
            tmp = path.with_name(f".{path.name}.partial")
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
                if i == 1:
                    zf.writestr(f"{base}.parts.json", note)
                remaining = min(slice_size, size - (i - 1) * slice_size)
                with zf.open(f"{archive.name}.{i:03d}", "w", force_zip64=False) as member:
                    while remaining > 0:
                        chunk = fh.read(min(1 << 20, remaining))
                        member.write(chunk)
                        remaining -= len(chunk)
            tmp.replace(path)
    return paths


def _check_note(note: object, part: Path) -> dict[str, object]:
    """The parts note, checked: a stranger's zip may hold anything there."""
    if not isinstance(note, dict):
        raise BundleFormatError(f"{part}: the parts note is not a JSON object")
    parts, size, sha256 = note.get("parts"), note.get("size"), note.get("sha256")
    archive = note.get("archive", "bundle.tar.zst")
    if isinstance(parts, bool) or not isinstance(parts, int) or not 1 <= parts <= _MAX_PARTS:
        raise BundleFormatError(f"{part}: the parts note's parts count is not a number from 1 to {_MAX_PARTS}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BundleFormatError(f"{part}: the parts note's size is not a byte count")
    if not isinstance(sha256, str) or not isinstance(archive, str) or not Path(archive).name:
        raise BundleFormatError(f"{part}: the parts note's archive name or sha256 is not a string")
    return {**note, "parts": parts, "size": size, "sha256": sha256, "archive": archive}


def is_parts(path: str | Path) -> bool:
    return str(path).endswith(".zip")


def _siblings(path: Path) -> list[Path]:
    match = _PART.match(path.name)
    if not match:
        return [path]
    found = sorted(path.parent.glob(f"{glob_escape(match.group('name'))}.part*.zip"),
                   key=lambda p: int(_PART.match(p.name).group("n")) if _PART.match(p.name) else 0)
    return [p for p in found if _PART.match(p.name)]


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def reassemble(path: str | Path, target_dir: str | Path | None = None) -> Path:
    """Join the parts that ``path`` belongs to into one ``.tar.zst`` in ``target_dir`` (a new temporary folder
    by default; the caller removes it) and check it against the parts note."""
    path = Path(path)
    parts = _siblings(path)
    folder = Path(target_dir) if target_dir else Path(tempfile.mkdtemp(prefix="ztunnel-bundle-parts-"))
    zips: list[zipfile.ZipFile] = []
    try:
        note = None
        slices: list[tuple[int, zipfile.ZipFile, zipfile.ZipInfo]] = []
        for part in parts:
            try:
                zf = zipfile.ZipFile(part)
            except (zipfile.BadZipFile, OSError) as exc:
                raise BundleFormatError(f"{part}: not a bundle part: {exc}") from None
            zips.append(zf)
            for info in zf.infolist():
                if info.filename.endswith(".parts.json") and note is None:
                    if info.file_size > _MAX_NOTE:
                        raise BundleFormatError(f"{part}: the parts note is larger than {_MAX_NOTE} bytes")
                    try:
                        note = _check_note(orjson.loads(zf.read(info)), part)
                    except orjson.JSONDecodeError:
                        raise BundleFormatError(f"{part}: the parts note is not JSON") from None
                elif re.search(r"\.tar\.zst\.\d{3}$", info.filename) and "/" not in info.filename:
                    slices.append((int(info.filename.rsplit(".", 1)[1]), zf, info))
        if note is None:
            match = _PART.match(path.name)
            first = f"{match.group('name') if match else _base(path)}.part01.zip"
            raise BundleFormatError(f"{path}: no parts note: the first part ({first}) is missing")
        numbers = sorted(n for n, _, _ in slices)
        if numbers != list(range(1, note["parts"] + 1)):
            missing = sorted(set(range(1, note["parts"] + 1)) - set(numbers))
            raise BundleFormatError(f"{path}: bundle parts missing: {', '.join(f'part{n:02d}' for n in missing)}"
                                    if missing else f"{path}: unexpected bundle parts")
        name = Path(note["archive"]).name
        if not name.endswith(".tar.zst"):
            name += ".tar.zst"
        out = folder / name
        digest = hashlib.sha256()
        written = 0
        with open(out, "wb") as dst:
            for _, zf, info in sorted(slices, key=lambda s: s[0]):
                with zf.open(info) as src:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        written += len(chunk)
                        if written > note["size"]:  # a deflated slice may expand without bound: not past the note
                            raise BundleFormatError(f"{path}: the bundle parts hold more than the parts note's "
                                                    f"{note['size']:,} bytes (a part was altered)")
                        digest.update(chunk)
                        dst.write(chunk)
        for zf in zips:
            zf.close()
        if digest.hexdigest() != note["sha256"] or out.stat().st_size != note["size"]:
            raise BundleFormatError(f"{path}: the reassembled archive does not match the parts note (a part was "
                                    "altered or comes from another bundle)")
        return out
    except BaseException as exc:
        for zf in zips:
            zf.close()
        if target_dir is None:
            shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, _ZIP_ERRORS):  # a damaged part: bad CRC, a truncated or unsupported member
            raise BundleFormatError(f"{path}: damaged bundle part: {exc}") from None
        raise
