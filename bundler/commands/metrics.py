"""``bundle metrics BUNDLE [NAME...]``: ztunnel metrics summed per ztunnel or per workload pair."""

from __future__ import annotations

import json

import click


@click.command("metrics")
@click.argument("bundle", type=click.Path(path_type=str))
@click.argument("names", nargs=-1)
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Only samples with this label (repeatable).")
@click.option("--by", type=click.Choice(["ztunnel", "workload"]), default="ztunnel", show_default=True,
              help="Sum per ztunnel pod, or per source -> destination workload.")
@click.option("-o", "--output", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(bundle: str, names: tuple[str, ...], labels: tuple[str, ...], by: str, fmt: str) -> None:
    """Sum metric samples of BUNDLE (default: every istio_tcp_* series, per ztunnel). NAME is a sample name
    (istio_tcp_connections_opened_total) or a family name (istio_tcp_connections_opened)."""
    from bundler.commands.analyze import open_model
    from bundler.views import metrics as view

    wanted = view.parse_labels(labels)
    with open_model(bundle) as model:
        summary = view.summarize(model, names, wanted, by)
    if fmt == "json":
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(view.render_text(summary))
