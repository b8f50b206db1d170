"""``bundle verify BUNDLE``: check every member against the manifest (sha256 and size).

Prints one line per problem on stdout; on success a final ``ok: ...`` line, on failure the summary becomes the
one-line ``error: verification failed: ...`` on stderr and the exit code is 1.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import click

from bundler import layout
from bundler.archive import Bundle, open_bundle
from bundler.errors import BundleError, BundleFormatError
from bundler.manifest import STATUSES_WITH_MEMBER

_CHUNK = 1 << 20


class VerificationError(BundleError):
    """The bundle does not match its manifest."""


@dataclass(frozen=True)
class Problem:
    kind: str  # manifest | missing | extra | altered
    path: str
    detail: str

    def line(self) -> str:
        return f"{self.kind:<9}{self.path}: {self.detail}"


@dataclass
class Result:
    problems: list[Problem] = field(default_factory=list)
    members: int = 0  # members in the bundle, manifest.json excluded
    matched: int = 0  # members whose size and sha256 match the manifest
    not_collected: int = 0  # manifest entries with status error/skipped (no member expected)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            extra = ""
            if self.not_collected:
                extra = f" ({self.not_collected} {_plural(self.not_collected, 'artifact')} not collected)"
            return f"ok: {self.matched} {_plural(self.matched, 'member')} match the manifest{extra}"
        counts = Counter(problem.kind for problem in self.problems)
        detail = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        noun = _plural(len(self.problems), "problem")
        return f"verification failed: {len(self.problems)} {noun} ({detail}); {self.matched} of {self.members} members match"


def _plural(n: int, noun: str) -> str:
    return noun if n == 1 else f"{noun}s"


def _hash_members(bundle: Bundle) -> dict[str, tuple[int, str]]:
    """(size, sha256) of every member but the manifest, in one streaming pass."""
    found: dict[str, tuple[int, str]] = {}
    for path, fh in bundle.iter_open(lambda p: p != layout.MANIFEST):
        digest = hashlib.sha256()
        size = 0
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        found[path] = (size, digest.hexdigest())
    return found


def verify_bundle(bundle: Bundle, digests: dict[str, tuple[int, str]] | None = None) -> Result:
    """Compare the members of ``bundle`` with its manifest. Damaged or unsafe archives raise BundleFormatError.
    ``digests``: ``{path: (size, sha256)}`` of every member but the manifest, when already computed."""
    found = _hash_members(bundle) if digests is None else digests
    result = Result(members=len(found))
    if not bundle.has_manifest():
        result.problems.append(Problem("manifest", layout.MANIFEST, f"missing: {len(found)} members cannot be checked"))
        return result
    try:
        manifest = bundle.manifest
    except BundleFormatError as exc:
        text = str(exc)
        prefix = f"{bundle.source}: {layout.MANIFEST}: "
        text = text[len(prefix):] if text.startswith(prefix) else text
        result.problems.append(Problem("manifest", layout.MANIFEST, f"unreadable: {text}"))
        return result

    listed = Counter(art.path for art in manifest.artifacts)
    for path, times in sorted(listed.items()):
        if times > 1:
            result.problems.append(Problem("manifest", path, f"listed {times} times"))
    if layout.MANIFEST in listed:
        result.problems.append(Problem("manifest", layout.MANIFEST, "lists itself as an artifact"))

    expected = manifest.by_path()
    for art in manifest.artifacts:
        if art is not expected.get(art.path) or art.path == layout.MANIFEST:
            continue
        member = found.get(art.path)
        if art.status not in STATUSES_WITH_MEMBER:
            result.not_collected += 1
            if member is not None:
                result.problems.append(
                    Problem("extra", art.path, f"present, but the manifest says {art.status} (not collected)")
                )
            continue
        if art.sha256 is None:
            result.problems.append(Problem("manifest", art.path, f"status {art.status} but no sha256"))
            continue
        if member is None:
            result.problems.append(Problem("missing", art.path, f"status {art.status} in the manifest, no member"))
            continue
        size, sha256 = member
        if size != art.size:
            result.problems.append(
                Problem("altered", art.path, f"size {size} bytes, the manifest says {art.size}")
            )
        elif sha256 != art.sha256:
            result.problems.append(
                Problem("altered", art.path, f"sha256 {sha256[:12]}..., the manifest says {art.sha256[:12]}...")
            )
        else:
            result.matched += 1
    for path in found:
        if path not in expected:
            result.problems.append(Problem("extra", path, f"{found[path][0]} bytes, not in the manifest"))
    return result


@click.command("verify")
@click.argument("bundle", type=click.Path(path_type=Path))
def command(bundle: Path) -> None:
    """Check every member of BUNDLE (a .tar.zst archive or an extracted directory) against the manifest:
    missing, extra and altered members (sha256 and size). Exit 0 when all match, 1 otherwise."""
    with open_bundle(bundle) as opened:
        result = verify_bundle(opened)
    for problem in result.problems:
        click.echo(problem.line())
    if not result.ok:
        raise VerificationError(result.summary())
    click.echo(result.summary())
