"""``bundle diff OLD NEW``: what changed between two bundles of the same cluster."""

from __future__ import annotations

import json

import click


@click.command("diff")
@click.argument("old", type=click.Path(path_type=str))
@click.argument("new", type=click.Path(path_type=str))
@click.option("--no-findings", is_flag=True, help="Do not run the analyzers (faster).")
@click.option("-o", "--output", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(old: str, new: str, no_findings: bool, fmt: str) -> None:
    """Compare OLD and NEW: per ztunnel (by node) workloads, services and policies added, removed or changed,
    certificates rotated, appeared or gone, and analyzer findings that appeared or were resolved."""
    from bundler.commands.analyze import open_model
    from bundler.views import diff as view

    with open_model(old) as a, open_model(new) as b:
        result = view.diff(a, b, findings=not no_findings)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        click.echo(view.render_text(result))
