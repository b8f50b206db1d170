"""``bundle logs BUNDLE``: the bundle's logs, filtered and merged across pods in time order."""

from __future__ import annotations

import json
import re
import sys

import click

from bundler.errors import BundleError


# Control characters but the tab: a log line holds what remote clients sent (paths, headers), and an escape
# sequence from a stranger's bundle must not reach the terminal. They are shown escaped (\r, \x1b), as
# bundler.views.printable does, in one regular expression pass (logs are big).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _printable(line: str) -> str:
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], line) if _CONTROL.search(line) else line


@click.command("logs")
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("--component", "components", multiple=True, type=click.Choice(["ztunnel", "istiod", "cni"]),
              help="Only this component (repeatable).")
@click.option("--node", "nodes", multiple=True, help="Only pods on this node (repeatable).")
@click.option("--pod", "pods", multiple=True, help="Only this pod (repeatable).")
@click.option("--level", type=click.Choice(["error", "warn", "info", "debug"]), help="Minimum level.")
@click.option("--since", help="RFC 3339 time, or a duration before the collection time (30m, 2h).")
@click.option("--until", help="RFC 3339 time, or a duration before the collection time.")
@click.option("--workload", "workloads", multiple=True,
              help="Records whose src.workload or dst.workload is NAME, or of the pod NAME (repeatable).")
@click.option("--direction", type=click.Choice(["inbound", "outbound"]), help="Access-log direction.")
@click.option("--signature", "signatures", multiple=True,
              type=click.Choice(["hbone-blocked", "policy-rejection", "xds-error", "cert-error", "dns-error"]),
              help="Error/warn records matching a named error signature (repeatable).")
@click.option("--grep", "pattern", help="Regular expression over the line text.")
@click.option("-o", "--output", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(bundle: str, components: tuple[str, ...], nodes: tuple[str, ...], pods: tuple[str, ...],
            level: str | None, since: str | None, until: str | None, workloads: tuple[str, ...],
            direction: str | None, signatures: tuple[str, ...], pattern: str | None, fmt: str) -> None:
    """Print the log records of BUNDLE in time order, one line each, prefixed with [component/pod]."""
    from bundler.commands.analyze import open_model
    from bundler.views import logs as view

    grep = None
    if pattern is not None:
        try:
            grep = re.compile(pattern)
        except re.error as exc:
            raise BundleError(f"--grep {pattern!r}: {exc}") from None
    with open_model(bundle) as model:
        reference = view.collection_time(model) if (since or until) else None
        flt = view.LogFilter(
            components=components, nodes=nodes, pods=pods, level=level,
            since=view.parse_time(since, reference) if since else None,
            until=view.parse_time(until, reference) if until else None,
            workloads=workloads, direction=direction, signatures=signatures, grep=grep,
        )
        out = sys.stdout
        for log, ref in view.merged(model, flt):
            if fmt == "json":
                out.write(json.dumps(view.to_json(log, ref), ensure_ascii=False, default=str) + "\n")
            else:
                out.write(_printable(f"{view.prefix(log)} {ref.text}") + "\n")
        out.flush()
