"""``bundle serve``: a bundle (or a scenario) as a read-only Kubernetes API server on 127.0.0.1, over HTTPS."""

from __future__ import annotations

import shlex
import signal
import threading

import click


@click.command("serve")
@click.argument("source", metavar="BUNDLE|SCENARIO.yaml", type=click.Path(exists=False))
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port on 127.0.0.1 to listen on; 0 picks a free one.")
@click.option("--kubeconfig-out", type=click.Path(dir_okay=False),
              help="Write the kubeconfig here (kept after the server stops). Default: a temporary file, removed "
                   "when the server stops.")
@click.option("--faults", "faults_file", type=click.Path(dir_okay=False),
              help="A fault-injection file (latency, errors, deleted pods, slow logs) to apply to the API.")
def command(source: str, port: int, kubeconfig_out: str | None, faults_file: str | None) -> None:
    """Serve BUNDLE (a .tar.zst archive or an extracted folder) or SCENARIO.yaml as a read-only Kubernetes API
    server, so that kubectl, the official Python client and `bundle collect` can be pointed at it.

    Every run makes a new CA and bearer token and writes a kubeconfig for them. Runs until Ctrl-C."""
    from bundler.serve.server import start_server

    faults = None
    if faults_file:
        try:
            from bundler.serve.faults import FaultInjector
        except ImportError as exc:
            from bundler.errors import BundleError

            raise BundleError(f"fault injection is not available: {exc}") from None
        faults = FaultInjector.load(faults_file)

    server = start_server(source, port=port, kubeconfig_out=kubeconfig_out, faults=faults)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        path = shlex.quote(str(server.kubeconfig_path))
        click.echo(f"serving {server.name} (read-only) at {server.url}")
        click.echo(f"port: {server.port}")
        click.echo(f"kubeconfig: {server.kubeconfig_path}")
        click.echo("use it with:")
        click.echo(f"  export KUBECONFIG={path}")
        click.echo("  kubectl get pods -A")
        click.echo("press Ctrl-C to stop")
        while not stop.wait(3600):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
    click.echo("stopped", err=True)
