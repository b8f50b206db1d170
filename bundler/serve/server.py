"""Run the ``bundle serve`` API server in a background thread: for the CLI, and for tests.

    with serve("samples/bookinfo-incident.tar.zst") as server:
        api = kubernetes.config.new_client_from_config(config_file=str(server.kubeconfig_path))
        ...

``start_server`` binds 127.0.0.1 (port 0: a free one) in the calling thread, so a port in use is a ``ServeError``
at once; the event loop then runs in a daemon thread until ``stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from bundler.errors import BundleError
from bundler.serve.state import ServedCluster, load_served_cluster
from bundler.serve.tls import kubeconfig, make_tls, new_token, write_kubeconfig


class ServeError(BundleError):
    """The server cannot start (the port is in use, the address cannot be bound)."""


def cluster_name(source: str | Path) -> str:
    """``ztunnel-bundle-<root>``: the archive's name without its suffixes, the folder's or the scenario's."""
    path = Path(source)
    root = path.name
    for suffix in (".tar.zst", ".tzst", ".tar", ".yaml", ".yml"):
        if root.endswith(suffix) and len(root) > len(suffix):
            root = root[: -len(suffix)]
            break
    return f"ztunnel-bundle-{root or 'served'}"


def _load_faults(faults: Any) -> Any:
    if faults is None or hasattr(faults, "middleware"):
        return faults
    from bundler.serve.faults import FaultInjector

    if isinstance(faults, dict):
        return FaultInjector.from_dict(faults)
    return FaultInjector.load(faults)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise ServeError(f"cannot listen on {host}:{port}: {reason}") from None
    return sock


@dataclass
class RunningServer:
    """A server running in a background thread. ``stop()`` (or leaving the ``with`` block) shuts it down, closes the
    cluster if the server loaded it, and removes the temporary files (the kubeconfig unless one was asked for)."""

    cluster: ServedCluster
    host: str
    port: int
    token: str
    name: str
    ca_pem: bytes
    kubeconfig_path: Path
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _runner: web.AppRunner = field(repr=False)
    _owns_cluster: bool = field(default=True, repr=False)
    _tmpdir: Path | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)
    _stop_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def kubeconfig(self) -> dict[str, Any]:
        return kubeconfig(self.name, self.url, self.ca_pem, self.token)

    def ca_file(self) -> Path:
        """The CA certificate as a PEM file in the server's temporary folder (for clients that want a path)."""
        assert self._tmpdir is not None
        path = self._tmpdir / "ca.crt"
        if not path.exists():
            path.write_bytes(self.ca_pem)
        return path

    def stop(self, timeout: float = 10.0) -> None:
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            if self._loop.is_running():
                future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
                with contextlib.suppress(Exception):
                    future.result(timeout)
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._loop.close()
        finally:
            if self._owns_cluster:
                self.cluster.close()
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)

    async def _shutdown(self) -> None:
        await self._runner.cleanup()  # open requests get shutdown_timeout (1 s), then are cancelled
        await asyncio.get_running_loop().shutdown_default_executor()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_server(source: str | Path | ServedCluster, *, port: int = 0, host: str = "127.0.0.1",
                 kubeconfig_out: str | Path | None = None, faults: Any = None, token: str | None = None,
                 name: str | None = None) -> RunningServer:
    """Serve ``source`` (a bundle archive or folder, a scenario YAML, or an already loaded ServedCluster, which then
    stays the caller's to close) on ``host:port`` over HTTPS and write a kubeconfig for it.

    ``faults``: a FaultInjector, or a path / dict to build one from. ``token``: the bearer token (random if None).
    ``kubeconfig_out``: where to write the kubeconfig (kept after stop); by default a temporary file (removed)."""
    from bundler.serve.app import make_app

    owns = not isinstance(source, ServedCluster)
    cluster = load_served_cluster(source) if owns else source
    tmpdir: Path | None = None
    sock: socket.socket | None = None
    try:
        injector = _load_faults(faults)
        if name is None:
            name = cluster_name(source) if owns else "ztunnel-bundle-served"
        token = token or new_token()
        tls = make_tls(("127.0.0.1", "localhost", "::1") if host in ("127.0.0.1", "localhost", "::1")
                       else (host, "127.0.0.1", "localhost"))
        ssl_context = tls.ssl_context()
        sock = _bind(host, port)
        bound_port = sock.getsockname()[1]
        tmpdir = Path(tempfile.mkdtemp(prefix="ztunnel-bundle-serve-"))
        app = make_app(cluster, token, injector)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, handle_signals=False)
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        async def setup() -> None:
            await runner.setup()
            site = web.SockSite(runner, sock, ssl_context=ssl_context)
            await site.start()
            if injector is not None and hasattr(injector, "stop_listening"):
                injector.stop_listening = functools.partial(_stop_listening, runner, site)

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(setup())
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()

        thread = threading.Thread(target=run, name=f"{name}-{bound_port}", daemon=True)
        thread.start()
        started.wait()
        if failure:
            thread.join()
            loop.close()
            raise ServeError(f"cannot start the server: {failure[0]}") from failure[0]
        sock = None  # the server owns it now
        config_path = Path(kubeconfig_out).absolute() if kubeconfig_out else tmpdir / "kubeconfig"
        server = RunningServer(cluster=cluster, host=host, port=bound_port, token=token, name=name,
                               ca_pem=tls.ca_pem, kubeconfig_path=config_path, _loop=loop, _thread=thread,
                               _runner=runner, _owns_cluster=owns, _tmpdir=tmpdir)
        try:
            write_kubeconfig(config_path, server.kubeconfig())
        except OSError as exc:
            server.stop()
            raise ServeError(f"cannot write the kubeconfig {config_path}: {exc.strerror or exc}") from None
        return server
    except BaseException:
        if sock is not None:
            sock.close()
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
        if owns:
            cluster.close()
        raise


async def _stop_listening(runner: web.AppRunner, site: web.BaseSite) -> None:
    """The API server goes away (faults ``shutdownAfter``): new connections are refused and every open one is
    reset, as when a control plane node dies. The loop keeps running: ``stop()`` still cleans up."""
    await site.stop()
    for handler in runner.server.connections if runner.server is not None else []:
        transport = handler.transport
        if transport is None:
            continue
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


@contextlib.contextmanager
def serve(source: str | Path | ServedCluster, **options: Any) -> Iterator[RunningServer]:
    """``start_server`` as a context manager."""
    server = start_server(source, **options)
    try:
        yield server
    finally:
        server.stop()
