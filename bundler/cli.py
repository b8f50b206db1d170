"""The ``bundle`` command line. Subcommands load lazily so that ``--help`` stays fast and offline
commands never import the Kubernetes client."""

from __future__ import annotations

import importlib
import sys

import click

from bundler import __version__
from bundler.errors import EXIT_ERROR, BundleError
from bundler.views import printable

# command name -> "module:attribute" of a click.Command
COMMANDS: dict[str, str] = {
    "inspect": "bundler.commands.inspect:command",
    "verify": "bundler.commands.verify:command",
    "validate": "bundler.commands.validate:command",
    "synth": "bundler.commands.synth:command",
    "serve": "bundler.commands.serve:command",
    "collect": "bundler.commands.collect:command",
    "rbac": "bundler.commands.rbac:command",
    "pack": "bundler.commands.pack:command",
    "analyze": "bundler.commands.analyze:command",
    "ztunnel-config": "bundler.commands.ztunnel_config:command",
    "logs": "bundler.commands.logs:command",
    "metrics": "bundler.commands.metrics:command",
    "diff": "bundler.commands.diff:command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ztunnel-bundle")
def cli() -> None:
    """Capture and analyze debug bundles of Istio's ambient data plane (ztunnel)."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: a BundleError becomes one line on stderr and its exit code, never a traceback."""
    try:
        # Without standalone mode, click returns ctx.exit(N)'s code instead of exiting: pass it on.
        result = cli.main(args=argv, prog_name="bundle", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BundleError as exc:
        # one line, whatever the names from a hostile bundle in it hold: control characters are shown escaped
        click.echo(f"error: {printable(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(EXIT_ERROR)
    sys.exit(result if isinstance(result, int) and not isinstance(result, bool) else 0)
