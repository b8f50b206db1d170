"""``bundle synth``: build a synthetic mesh bundle from a scenario file."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from bundler.errors import ScenarioError


def _print_faults(fmt: str) -> None:
    from bundler.synth.faults import CATALOG

    if fmt == "json":
        click.echo(orjson.dumps([f.to_dict() for f in CATALOG.values()], option=orjson.OPT_INDENT_2).decode())
        return
    for fault in CATALOG.values():
        click.echo(f"{fault.name}")
        click.echo(f"    {fault.summary}")
        click.echo(f"    failure mode: {fault.failure_mode}")
        click.echo(f"    detected by:  {', '.join(fault.analyzers)}")
        params = ", ".join(f"{k} ({v})" for k, v in fault.params.items())
        click.echo(f"    parameters:   {params}")


@click.command("synth")
@click.argument("scenario", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", help="Archive to write (*.tar.zst); with --list-faults: text or json.")
@click.option("--list-faults", is_flag=True, help="List the faults a scenario can inject, and exit.")
def command(scenario: str | None, output: str | None, list_faults: bool) -> None:
    """Build a synthetic ambient-mesh bundle from SCENARIO (YAML); the same scenario gives the same bytes."""
    if list_faults:
        fmt = output or "text"
        if fmt not in ("text", "json"):
            raise click.UsageError("with --list-faults, -o is text or json")
        _print_faults(fmt)
        return
    if not scenario:
        raise click.UsageError("missing SCENARIO (or use --list-faults)")
    if not output:
        raise click.UsageError("missing -o OUT.tar.zst")
    if not output.endswith(".tar.zst"):
        raise ScenarioError(f"{output}: the output must be named *.tar.zst")

    from bundler.synth.build import build_mesh, write_bundle
    from bundler.synth.scenario import load_scenario

    mesh = build_mesh(load_scenario(scenario))
    # File names only: the same scenario must give the same bytes wherever it is run from.
    command_line = ["bundle", "synth", Path(scenario).name, "-o", Path(output).name]
    path = write_bundle(mesh, output, command_line)
    click.echo(f"wrote {path} ({path.stat().st_size:,} bytes): {len(mesh.cluster.nodes)} nodes, "
               f"{len(mesh.cluster.pods)} pods, {len(mesh.scenario.faults)} fault(s)", err=True)
