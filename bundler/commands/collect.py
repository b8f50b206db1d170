"""``bundle collect``: one command during an incident."""

from __future__ import annotations

import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

_DURATION = re.compile(r"^(\d+)(s|m|h|d)?$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(k|kb|m|mb|g|gb|kib|mib|gib)?$", re.I)


def _seconds(value: str, what: str) -> int:
    match = _DURATION.match(value.strip())
    if not match:
        raise click.BadParameter(f"{value!r} is not a duration like 30s, 10m, 1h or 2d", param_hint=what)
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[match.group(2)]


def _bytes(value: str) -> int:
    match = _SIZE.match(value.strip())
    if not match:
        raise click.BadParameter(f"{value!r} is not a size like 25MB or 500k", param_hint="--max-size")
    unit = (match.group(2) or "").lower()
    scale = {"": 1, "k": 1000, "kb": 1000, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
             "kib": 1024, "mib": 1024**2, "gib": 1024**3}[unit]
    return int(float(match.group(1)) * scale)


def _default_output() -> str:
    return datetime.now(timezone.utc).strftime("ztunnel-bundle-%Y%m%dT%H%M%SZ.tar.zst")


@click.command("collect")
@click.option("-o", "--output", default=None, help="Archive to write (*.tar.zst); default ztunnel-bundle-<time>.tar.zst")
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="Path to the kubeconfig (default: as kubectl).")
@click.option("--context", default=None, help="The kubeconfig context to use.")
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Scope to the nodes running pods of NS.")
@click.option("--pod", "pods", multiple=True, help="Scope to NS/NAME's node and the nodes of the pods it talks to.")
@click.option("--node", "nodes", multiple=True, help="Scope to this node's ztunnel and istio-cni.")
@click.option("--since", default=None, help="Only logs newer than this (e.g. 1h), applied by the API server.")
@click.option("--since-time", default=None, help="Only logs after this RFC 3339 time.")
@click.option("--log-bytes", default="50MB", show_default=True, help="Keep at most this much of each container log (the newest).")
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 256), help="Requests in flight.")
@click.option("--request-timeout", default="30s", show_default=True, help="Timeout of each request.")
@click.option("--deadline", default="5m", show_default=True, help="Stop and write what is collected after this long.")
@click.option("--max-size", default="25MB", show_default=True, help="The archive never exceeds this (GitHub's attachment limit).")
@click.option("--no-redact", is_flag=True, help="Do not redact tokens and keys found in logs and objects.")
@click.option("--for-github", is_flag=True, help="Also wrap the archive into .zip parts of at most 25 MB (GitHub attachments).")
@click.option("--pseudonymize", is_flag=True, help="Replace IPs and hostnames consistently; the map goes beside the archive.")
@click.option("--ztunnel-selector", default="app=ztunnel", show_default=True)
@click.option("--istiod-selector", default="app=istiod", show_default=True)
@click.option("--cni-selector", default="k8s-app=istio-cni-node", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr (warnings and an early stop are still said).")
def command(output, kubeconfig, context, namespaces, pods, nodes, since, since_time, log_bytes, concurrency,
            request_timeout, deadline, max_size, no_redact, for_github, pseudonymize, ztunnel_selector, istiod_selector,
            cni_selector, quiet) -> None:
    """Collect a ztunnel debug bundle from the current cluster (read-only, no Secrets).

    Exit codes: 0 complete, 4 partial (some artifacts could not be collected: the manifest says why),
    1 nothing usable could be written."""
    from bundler.collect.plan import Options, Selectors
    from bundler.collect.run import CollectSettings, collect

    if since and since_time:
        raise click.UsageError("--since and --since-time exclude each other")
    if since_time:
        try:
            datetime.fromisoformat(since_time.replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter(f"{since_time!r} is not an RFC 3339 time", param_hint="--since-time") from None
    for ref in pods:
        if ref.count("/") != 1:
            raise click.BadParameter(f"{ref!r}: expected NAMESPACE/NAME", param_hint="--pod")
    options = Options(namespaces=tuple(namespaces), pods=tuple(pods), nodes=tuple(nodes),
                      since_seconds=_seconds(since, "--since") if since else None, since_time=since_time,
                      log_bytes=_bytes(log_bytes), request_timeout=float(_seconds(request_timeout, "--request-timeout")),
                      selectors=Selectors(ztunnel_selector, istiod_selector, cni_selector))
    settings = CollectSettings(out=Path(output or _default_output()), kubeconfig=kubeconfig, context=context,
                               workers=concurrency, deadline=float(_seconds(deadline, "--deadline")),
                               max_size=_bytes(max_size), redact=not no_redact, pseudonymize=pseudonymize, quiet=quiet)
    code = collect(settings, options)
    if for_github and settings.out.exists():
        from bundler.parts import pack

        for part in pack(settings.out):
            click.echo(f"for GitHub: {part} ({part.stat().st_size:,} bytes)", err=True)
    sys.exit(code)

