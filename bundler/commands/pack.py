"""``bundle pack``: wrap an archive into .zip parts GitHub accepts as attachments."""

from __future__ import annotations

from pathlib import Path

import click

from bundler.errors import BundleError


@click.command("pack")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.option("--part-size", default="25MB", show_default=True, help="Largest part (GitHub's attachment limit).")
def command(archive: str, part_size: str) -> None:
    """Wrap ARCHIVE (*.tar.zst) into .zip parts of at most --part-size; every bundle command reads them back."""
    from bundler.archive import open_bundle
    from bundler.commands.collect import _bytes
    from bundler.parts import pack

    if not archive.endswith(".tar.zst"):
        raise BundleError(f"{archive}: expected a *.tar.zst bundle")
    with open_bundle(archive) as bundle:  # refuse to pack something that is not a bundle
        bundle.manifest
    for path in pack(Path(archive), _bytes(part_size)):
        click.echo(f"{path} ({path.stat().st_size:,} bytes)")
