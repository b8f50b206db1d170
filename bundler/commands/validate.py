"""``bundle validate FILE [--kind K]``: check one artifact file against the schema of its kind."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import click

from bundler import layout
from bundler.errors import EXIT_ERROR, ArtifactError
from bundler.validation import UnsupportedFormatError, validate_bytes

# The layout is at most 5 components deep (ztunnel/<node>/<pod>/logs/<container>.log).
_MAX_LAYOUT_DEPTH = 5


def _path_hint(path: Path) -> str:
    """The path to detect the kind from: relative to the bundle root when an ancestor folder holds the bundle's
    manifest.json, else the absolute path (whose last components are matched against the layout)."""
    absolute = path.absolute()
    for depth, parent in enumerate(absolute.parents):
        if depth >= _MAX_LAYOUT_DEPTH:
            break
        if (parent / layout.MANIFEST).is_file():
            return absolute.relative_to(parent).as_posix()
    return absolute.as_posix()


def _read(path: Path) -> bytes:
    """The file's bytes. Only a regular file is read: a fifo or a device (planted in an extracted bundle) would
    block or never end, so it is opened without blocking and refused."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except IsADirectoryError:
        raise ArtifactError(f"{path}: is a directory; validate takes one artifact file") from None
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ArtifactError(f"{path}: not a regular file (a fifo, device or socket); "
                                "validate takes one artifact file")
        try:
            return fh.read()
        except OSError as exc:
            raise ArtifactError(f"{path}: cannot read: {exc.strerror or exc}") from None


@click.command("validate")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=True, exists=False))
@click.option(
    "--kind",
    type=click.Choice(sorted(layout.JSON_KINDS)),
    help="Artifact kind to validate against (default: from the file's path in the bundle layout, else its content).",
)
def command(file: Path, kind: str | None) -> None:
    """Validate one artifact FILE against the JSON Schema of its kind.

    Prints each error as '<JSON pointer>: <message>', then a summary line. Exit status 0 when the file is
    valid, 1 when it has errors or cannot be read, parsed or recognised.
    """
    if file.is_dir():
        raise ArtifactError(f"{file}: is a directory; validate takes one artifact file")
    data = _read(file)
    try:
        kind, issues = validate_bytes(data, kind=kind, path=_path_hint(file))
    except UnsupportedFormatError as exc:
        raise UnsupportedFormatError(f"{file}: {exc}") from None
    except ArtifactError as exc:
        raise ArtifactError(f"{file}: {exc}") from None

    if kind not in layout.JSON_KINDS:
        click.echo(f"{file}: {kind}: not schema-validated (not a JSON artifact)")
        return
    for issue in issues:
        click.echo(f"{issue.display_pointer}: {issue.message}")
    if issues:
        click.echo(f"{file}: {kind}: {len(issues)} error(s)")
        # Not ctx.exit(): bundler.cli.main runs click with standalone_mode=False, which turns click's Exit into a
        # return value that main() does not pass on. SystemExit goes through click untouched.
        sys.exit(EXIT_ERROR)
    click.echo(f"{file}: {kind}: valid")
