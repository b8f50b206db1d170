"""``bundle rbac``: the minimal read-only ClusterRole that ``bundle collect`` needs."""

from __future__ import annotations

import click


@click.command("rbac")
def command() -> None:
    """Print the minimal read-only ClusterRole for `bundle collect` (YAML)."""
    from bundler.collect.rbac import CLUSTER_ROLE

    click.echo(CLUSTER_ROLE, nl=False)
