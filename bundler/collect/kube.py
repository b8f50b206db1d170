"""Cluster access for ``bundle collect``, through the official ``kubernetes`` client only.

One shared ApiClient serves every REST call (urllib3's pool is thread-safe; its size is the worker count,
python-stack.md 1.4). Port-forwards each get a fresh ApiClient, because ``stream()`` monkey-patches the
client it is given and would break other threads' calls (python-stack.md 1.2). Bodies are streamed into a
caller's file, never held whole, and capped. Every failure becomes a :class:`FetchError` that says whether
a retry may help.
"""

from __future__ import annotations

import http.client
import io
import logging
import re
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

from bundler.errors import BundleError

CHUNK = 64 * 1024


class ClusterAccessError(BundleError):
    """The cluster cannot be reached at all (kubeconfig, context, credentials, TLS)."""


class FetchError(Exception):
    """One request failed. ``status`` is the HTTP status, or 0 for a transport error. ``kind`` says when the
    failure is the API server's rather than the request's: ``unreachable`` (no connection could be made),
    ``tls`` (the TLS handshake failed), ``unauthorized`` (the API server refused the credentials)."""

    def __init__(self, reason: str, status: int = 0, retry_after: float | None = None,
                 retryable: bool = False, kind: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.retryable = retryable
        self.kind = kind


@dataclass
class Fetched:
    status: int
    size: int
    truncated: bool
    content_type: str = ""


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _status_message(body: bytes) -> str:
    """The message of a Kubernetes Status body, or the start of the body."""
    import orjson

    try:
        doc = orjson.loads(body)
        if isinstance(doc, dict) and doc.get("message"):
            return str(doc["message"])
    except orjson.JSONDecodeError:
        pass
    return body[:200].decode("utf-8", "replace").strip()


def _copy(stream: Iterable[bytes], sink: BinaryIO, max_bytes: int | None) -> tuple[int, bool]:
    size = 0
    for chunk in stream:
        if max_bytes is not None and size + len(chunk) > max_bytes:
            sink.write(chunk[: max_bytes - size])
            return max_bytes, True
        sink.write(chunk)
        size += len(chunk)
    return size, False


class Kube:
    def __init__(self, kubeconfig: str | None = None, context: str | None = None, workers: int = 16,
                 request_timeout: float = 30.0) -> None:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        cfg = client.Configuration()
        try:
            if kubeconfig is None and context is None and _in_cluster():
                config.load_incluster_config(client_configuration=cfg)
                self.context = "in-cluster"
            else:
                with _ExecPluginErrors() as exec_errors:
                    config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg,
                                            persist_config=False)
                if exec_errors.messages:
                    # The client only logs a failed exec plugin and goes on without credentials (then: 401).
                    raise ClusterAccessError(f"the kubeconfig's exec credential plugin failed: "
                                             f"{_one_line(exec_errors.messages[0])}")
                self.context = context or _current_context(kubeconfig)
        except ConfigException as exc:
            raise ClusterAccessError(f"cannot load the Kubernetes configuration: {exc}") from None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            # An exec plugin that fails, an unreadable file, a malformed kubeconfig.
            raise ClusterAccessError(f"cannot load the Kubernetes configuration: {type(exc).__name__}: {exc}") from None
        cfg.connection_pool_maxsize = max(1, workers)
        cfg.retries = False  # retries are ours: they honour Retry-After and the deadline
        self.config = cfg
        self.api = client.ApiClient(cfg)
        self.request_timeout = request_timeout
        # Port-forwards kept open between GETs to the same pod and port (see forward_get).
        self._idle: list[tuple[tuple[str, str, int], _Tunnel]] = []  # least recently used first
        self._idle_lock = threading.Lock()
        self._max_idle = max(1, workers)
        self._closed = False

    def warm_up(self) -> None:
        """Import what the first port-forward needs (the client's CoreV1Api module and its validators: a third of a
        second) in a background thread, while the preflight and discovery wait on the network; otherwise the
        engine's first sixteen port-forwards wait for it together."""
        def load() -> None:
            try:
                from kubernetes.client.api import core_v1_api  # noqa: F401

                _portforward()
            except Exception:  # noqa: BLE001 - the first port-forward reports any real problem
                pass

        threading.Thread(target=load, name="warm-up", daemon=True).start()

    # --- REST ----------------------------------------------------------------------------------------------------

    def fetch(self, path: str, sink: BinaryIO, query: list[tuple[str, Any]] | None = None,
              accept: str = "application/json, */*", timeout: float | None = None,
              max_bytes: int | None = None) -> Fetched:
        """GET ``path`` (an API path, may hold ``{...}``-free literal segments) into ``sink``."""
        import urllib3

        from kubernetes.client.exceptions import ApiException

        timeout = timeout or self.request_timeout
        try:
            method, url, headers, body, _ = self.api.param_serialize(
                "GET", path, query_params=query or [], header_params={"Accept": accept},
                auth_settings=["BearerToken"])
            response = self.api.call_api(method, url, header_params=headers, body=body,
                                         _request_timeout=(min(10.0, timeout), timeout))
        except ApiException as exc:  # the client's wrapping of urllib3's SSLError
            raise FetchError(_tls_reason(self.config.host, str(exc.reason or "")), 0, kind="tls") from None
        except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError) as exc:
            raise FetchError(_connect_reason(self.config.host, exc), 0, retryable=True, kind="unreachable") from None
        except urllib3.exceptions.MaxRetryError as exc:
            raise FetchError(f"cannot reach the API server: {_cause(exc)}", 0, retryable=True) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise FetchError(f"connection error: {_cause(exc)}", 0, retryable=True) from None
        raw = response.response
        try:
            if response.status >= 400:
                body_bytes = raw.read(64 * 1024)
                message = _status_message(body_bytes)
                retryable = response.status in (429, 500, 502, 503, 504)
                raise FetchError(f"HTTP {response.status}: {message}", response.status,
                                 _retry_after(raw.headers), retryable,
                                 kind="unauthorized" if _api_server_401(response.status, body_bytes) else "")
            try:
                size, truncated = _copy(raw.stream(CHUNK, decode_content=True), sink, max_bytes)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise FetchError(f"connection broken while reading: {_cause(exc)}", 0, retryable=True) from None
            return Fetched(response.status, size, truncated, raw.headers.get("Content-Type", ""))
        finally:
            raw.release_conn()

    def get_json(self, path: str, query: list[tuple[str, Any]] | None = None, timeout: float | None = None) -> Any:
        import io

        import orjson

        buf = io.BytesIO()
        self.fetch(path, buf, query, timeout=timeout)
        try:
            return orjson.loads(buf.getvalue())
        except orjson.JSONDecodeError as exc:
            raise FetchError(f"{path}: the API server answered something that is not JSON ({exc})") from None

    # --- port-forward --------------------------------------------------------------------------------------------

    def forward_get(self, namespace: str, pod: str, port: int, url_path: str, sink: BinaryIO,
                    timeout: float | None = None, max_bytes: int | None = None) -> Fetched:
        """GET ``url_path`` from ``pod:port`` through a port-forward, as istioctl reaches ztunnel's admin
        port (it listens on localhost only, so the API server's pod proxy cannot).

        A forward whose response was read to its end is kept for the next GET to the same pod and port (HTTP
        keep-alive through the tunnel): istiod answers one request per ztunnel, and a new forward per request
        (a TLS and WebSocket handshake with the API server, a stream from the kubelet) was most of the time
        those took at 1,000 nodes."""
        timeout = timeout or self.request_timeout
        key = (namespace, pod, port)
        tunnel = self._take_idle(key)
        if tunnel is not None:
            try:
                return self._get_over(tunnel, key, url_path, sink, timeout, max_bytes, reused=True)
            except _StaleTunnel:
                pass  # the other end closed it while it was idle: a new forward
        return self._get_over(self._open_forward(namespace, pod, port, timeout), key, url_path, sink, timeout,
                              max_bytes, reused=False)

    def _open_forward(self, namespace: str, pod: str, port: int, timeout: float) -> Any:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        portforward = _portforward()
        api = client.ApiClient(self.config)  # a fresh one: portforward() patches the client it is given
        try:
            core = client.CoreV1Api(api)
            return portforward(core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port),
                               _request_timeout=timeout)
        except ApiException as exc:
            cause = exc.__context__  # what the websocket connection raised, wrapped by the client
            if isinstance(cause, (ssl.SSLError, ssl.CertificateError)):
                raise FetchError(_tls_reason(self.config.host, str(cause)), 0, kind="tls") from None
            if _cannot_connect(cause):
                raise FetchError(f"port-forward to {namespace}/{pod}:{port}: "
                                 f"{_connect_reason(self.config.host, cause)}", 0, retryable=True,
                                 kind="unreachable") from None
            status, message = _handshake_failure(exc)
            said = f"HTTP {status}: {message}" if status else message  # as the REST calls say it
            raise FetchError(f"port-forward to {namespace}/{pod}:{port} refused: {said}",
                             status, retryable=status in (0, 429, 500, 502, 503, 504),
                             kind="unauthorized" if status == 401 else "") from None
        except Exception as exc:  # websocket-client raises its own exception types on a failed handshake
            raise FetchError(f"port-forward to {namespace}/{pod}:{port} failed: {type(exc).__name__}: {exc}",
                             0, retryable=True) from None
        finally:
            api.close()

    def _get_over(self, pf: Any, key: tuple[str, str, int], url_path: str, sink: BinaryIO, timeout: float,
                  max_bytes: int | None, reused: bool) -> Fetched:
        namespace, pod, port = key
        reusable = isinstance(pf, _Tunnel)  # the client's own PortForward (the fallback) is used once
        keep = False
        sock = pf.socket(port)
        sock.setblocking(True)
        sock.settimeout(timeout)
        try:
            request = (f"GET {url_path} HTTP/1.1\r\nHost: localhost:{port}\r\nUser-Agent: ztunnel-bundle\r\n"
                       f"Accept: */*\r\nConnection: {'keep-alive' if reusable else 'close'}\r\n\r\n")
            try:
                sock.sendall(request.encode())
                response = http.client.HTTPResponse(sock)
                response.begin()
            except (OSError, http.client.HTTPException):
                if reused:
                    raise _StaleTunnel from None
                raise
            if response.status >= 400:
                body = response.read(64 * 1024)
                raise FetchError(f"{namespace}/{pod}:{port}{url_path}: HTTP {response.status}: "
                                 f"{body[:200].decode('utf-8', 'replace').strip()}", response.status,
                                 retryable=response.status in (429, 500, 502, 503, 504))
            size, truncated = _copy(iter(lambda: response.read(CHUNK), b""), sink, max_bytes)
            keep = reusable and not truncated and not response.will_close and response.isclosed()
            return Fetched(response.status, size, truncated, response.getheader("Content-Type", ""))
        except (OSError, http.client.HTTPException) as exc:
            error = pf.error(port)
            detail = error.strip() if error else f"{type(exc).__name__}: {exc}"
            raise FetchError(f"port-forward to {namespace}/{pod}:{port}: {detail}", 0,
                             retryable=not error) from None
        finally:
            if keep:
                self._put_idle(key, pf)
            else:
                try:
                    sock.close()
                except OSError:
                    pass

    def _take_idle(self, key: tuple[str, str, int]) -> _Tunnel | None:
        with self._idle_lock:
            for i in range(len(self._idle) - 1, -1, -1):
                if self._idle[i][0] == key:
                    tunnel = self._idle.pop(i)[1]
                    if not tunnel.ended:
                        return tunnel
                    tunnel.close()
        return None

    def _put_idle(self, key: tuple[str, str, int], tunnel: _Tunnel) -> None:
        # At most one kept forward per worker, the oldest closed first: a ztunnel is asked once, and 1,000 open
        # connections would be 1,000 sockets and their buffers for nothing.
        evicted = [tunnel]
        with self._idle_lock:
            if not self._closed:
                self._idle.append((key, tunnel))
                evicted = []
                while len(self._idle) > self._max_idle:
                    evicted.append(self._idle.pop(0)[1])
        for old in evicted:
            old.close()

    # --- permissions ---------------------------------------------------------------------------------------------

    def can_i(self, verb: str, resource: str, group: str = "", namespace: str | None = None,
              subresource: str | None = None) -> bool | None:
        """A SelfSubjectAccessReview; None when the review itself cannot be made."""
        from kubernetes import client

        attrs: dict[str, Any] = {"verb": verb, "resource": resource, "group": group}
        if namespace:
            attrs["namespace"] = namespace
        if subresource:
            attrs["subresource"] = subresource
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": attrs}}
        try:
            result = client.AuthorizationV1Api(self.api).create_self_subject_access_review(review,
                                                                                          _request_timeout=10)
        except Exception:  # urllib3 errors and pydantic validation of odd answers: the review is unknown
            return None
        return bool(result.status and result.status.allowed)

    def close(self) -> None:
        with self._idle_lock:
            self._closed = True
            tunnels = [t for _, t in self._idle]
            self._idle.clear()
        for tunnel in tunnels:
            tunnel.close()
        self.api.close()


def _portforward() -> Any:
    """The client's ``kubernetes.stream.portforward``, with a transport of our own behind the same handshake.

    The client's ``PortForward`` starts a thread and a socket pair per forward and copies every byte through
    buffers that grow with the body (``data += frame``, then ``data = data[sent:]``): with 16 forwards of 20 MB
    config dumps in flight that is hundreds of MB of fragmented heap and a quadratic copy. ``_Tunnel`` reads the
    WebSocket frames in the calling thread instead. The connection and its failures are the client's own
    (``create_websocket``, an ``ApiException`` wrapping what it raised), so callers see no difference. Falls back
    to the client's ``portforward`` if its internals differ."""
    import functools
    import importlib

    from kubernetes.stream import portforward

    module = importlib.import_module("kubernetes.stream.stream")  # the module (the package exports a function)
    request = getattr(module, "_websocket_request", None)
    if request is None or not callable(request):
        return portforward
    return functools.partial(request, _open_tunnel, {"_preload_content": False})


def _open_tunnel(configuration: Any, _method: str, url: str, **kwargs: Any) -> _Tunnel:
    from kubernetes.client.exceptions import ApiException
    from kubernetes.stream import ws_client

    try:
        websocket = ws_client.create_websocket(configuration, ws_client.get_websocket_url(url), kwargs.get("headers"))
    except Exception as exc:  # as ws_client.portforward_call reports it (the cause stays the exception's context)
        raise ApiException(status=0, reason=str(exc))
    return _Tunnel(websocket)


class _Tunnel(io.RawIOBase):
    """One forwarded port over the client's WebSocket (``v4.channel.k8s.io``: channel 0 data, 1 errors, each
    opened by a frame holding the port number), with what ``forward_get`` uses of the client's ``PortForward``:
    ``socket(port)`` (``sendall``, ``settimeout``, ``makefile`` for ``http.client``, ``close``) and
    ``error(port)``. Frames are read when the caller reads: memory is one frame, whatever the body's size."""

    def __init__(self, websocket: Any) -> None:
        super().__init__()
        self._ws = websocket
        self._error: str | None = None
        self._opened: set[int] = set()
        self._pending = memoryview(b"")
        self._ended = False

    # the PortForward side
    def socket(self, port: int) -> _Tunnel:
        return self

    def error(self, port: int) -> str | None:
        return self._error

    # the socket side
    def setblocking(self, flag: bool) -> None:
        pass

    def settimeout(self, timeout: float | None) -> None:
        self._ws.settimeout(timeout)

    def sendall(self, data: bytes) -> None:
        from websocket import WebSocketException

        try:
            self._ws.send_binary(b"\x00" + bytes(data))
        except WebSocketException as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from None

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> _TunnelFile:
        return _TunnelFile(self)

    @property
    def ended(self) -> bool:
        return self._ended or self.closed

    def close(self) -> None:
        if not self.closed:
            try:
                if self._ws.connected:
                    self._ws.send_close()
            except Exception:  # noqa: BLE001 - the server may be gone already
                pass
            try:
                self._ws.shutdown()
            except Exception:  # noqa: BLE001
                pass
        super().close()

    # the stream side, for http.client
    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        pending = self.pending()
        n = min(len(buffer), len(pending))
        buffer[:n] = pending[:n]
        self._pending = pending[n:]
        return n

    def pending(self) -> memoryview:
        """The bytes received and not read yet, waiting for the next frame when there are none; empty at the end."""
        while not self._pending:
            if self._ended:
                return self._pending
            self._pending = self._next()
        return self._pending

    def consume(self, n: int) -> None:
        self._pending = self._pending[n:]

    def _next(self) -> memoryview:
        from websocket import ABNF, WebSocketConnectionClosedException, WebSocketException, WebSocketTimeoutException

        try:
            opcode, frame = self._ws.recv_data_frame(True)
        except WebSocketTimeoutException as exc:
            raise TimeoutError(f"timed out: {exc}") from None
        except WebSocketConnectionClosedException:
            self._ended = True
            return memoryview(b"")
        except WebSocketException as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from None
        if opcode == ABNF.OPCODE_CLOSE:
            self._ended = True
        if opcode != ABNF.OPCODE_BINARY or not frame.data:
            return memoryview(b"")
        data = memoryview(frame.data)
        channel = data[0]
        if channel not in self._opened:  # its first frame: the port number
            self._opened.add(channel)
            return memoryview(b"")
        if channel == 1:  # the kubelet's error (e.g. connection refused): the stream ends here, as with the client
            self._error = (self._error or "") + bytes(data[1:]).decode("utf-8", "replace")
            self._ended = True
            return memoryview(b"")
        return data[1:] if channel == 0 else memoryview(b"")


class _TunnelFile:
    """What ``http.client`` reads one response from: the tunnel's bytes with no read-ahead (the next response on a
    kept tunnel starts in the tunnel's pending bytes, where this one ended), and a ``close`` that leaves the tunnel
    open (``http.client`` closes its file at the end of every response)."""

    def __init__(self, tunnel: _Tunnel) -> None:
        self._tunnel = tunnel

    def readinto(self, buffer: Any) -> int:
        return self._tunnel.readinto(buffer)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while chunk := self.read(CHUNK):
                parts.append(chunk)
            return b"".join(parts)
        buffer = bytearray(size)
        view = memoryview(buffer)
        filled = 0
        while filled < size:
            n = self._tunnel.readinto(view[filled:])
            if not n:
                break
            filled += n
        return bytes(view[:filled])

    def readline(self, limit: int = -1) -> bytes:
        line = bytearray()
        while limit < 0 or len(line) < limit:
            pending = self._tunnel.pending()
            if not pending:
                break
            room = len(pending) if limit < 0 else min(len(pending), limit - len(line))
            end = _find_newline(pending, room)
            take = room if end < 0 else end + 1
            line += pending[:take]
            self._tunnel.consume(take)
            if end >= 0:
                break
        return bytes(line)

    def close(self) -> None:
        pass

    def flush(self) -> None:
        pass


def _find_newline(data: memoryview, room: int) -> int:
    """The index of the first line break in ``data[:room]``, or -1. A memoryview has no ``find``: the first 256
    bytes are copied, then four times more each round, so a header line does not copy the whole 256 KiB frame."""
    window = 256
    while True:
        n = min(room, window)
        end = bytes(data[:n]).find(b"\n")
        if end >= 0 or n == room:
            return end
        window *= 4


class _StaleTunnel(Exception):
    """A kept port-forward the other end closed while it was idle."""


def _handshake_failure(exc: Any) -> tuple[int, str]:
    """The status and message of a refused port-forward. The client reports a failed websocket handshake as
    ApiException(status=0) whose reason reads "Handshake status 404 Not Found -+-+- {headers} -+-+- {body}"."""
    import re

    reason = str(exc.reason or "")
    match = re.match(r"Handshake status (\d{3})", reason)
    status = exc.status or (int(match.group(1)) if match else 0)
    body = reason.rsplit("-+-+-", 1)[-1].strip() if "-+-+-" in reason else str(exc.body or reason)
    if body.startswith(("b'", 'b"')):
        body = body[2:-1]
    return status, _status_message(body.encode("utf-8", "replace"))


def _cause(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    text = str(reason or exc)
    return text if len(text) < 300 else text[:300] + "..."


def _in_cluster() -> bool:
    import os

    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not os.environ.get("KUBECONFIG") and \
        not os.path.exists(os.path.expanduser("~/.kube/config"))


def _current_context(kubeconfig: str | None) -> str | None:
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        return active.get("name") if active else None
    except Exception:  # the context name is informational only
        return None


class _ExecPluginErrors(logging.Handler):
    """Collects what the client logs when a kubeconfig's exec plugin fails (it logs with ``logging.error`` and
    goes on without credentials). While installed on the root logger, ``logging.error`` does not configure a
    stderr handler of its own, so the failure is reported once, by the caller."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.funcName == "_load_from_exec_plugin":
            self.messages.append(record.getMessage())

    def __enter__(self) -> _ExecPluginErrors:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self)


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _tls_reason(host: str, text: str) -> str:
    """One line for a failed TLS handshake with the API server, and what it most likely means."""
    text = re.sub(r"^\s*SSLError\s*", "", text)  # the client puts the type's name on a line of its own
    text = _one_line(re.sub(r"\s*\(_ssl\.c:\d+\)", "", text))
    lower = text.lower()
    if any(s in lower for s in ("wrong_version_number", "wrong version number", "record layer failure",
                                "http_request", "packet length too long", "unexpected eof")):
        hint = "the server does not speak TLS: plain HTTP behind an https:// URL?"
    elif "expired" in lower or "not yet valid" in lower:
        hint = ""
    elif "mismatch" in lower or "not valid for" in lower or "hostname" in lower:
        hint = "the API server's certificate is not valid for the kubeconfig's server name (or tls-server-name)"
    elif "certificate verify failed" in lower:
        hint = "the API server's certificate is not signed by the kubeconfig's certificate-authority"
    else:
        hint = ""
    return f"TLS handshake with the API server {host} failed: {text}" + (f" ({hint})" if hint else "")


def _connect_reason(host: str, exc: BaseException) -> str:
    """``cannot connect to the API server https://h:p: [Errno 111] Connection refused``."""
    text = str(exc)
    marker = "Failed to establish a new connection: "
    if marker in text:
        text = text.split(marker, 1)[1]
    return f"cannot connect to the API server {host}: {_one_line(text, 300)}"


def _cannot_connect(exc: BaseException | None) -> bool:
    """No connection to the API server could be made at all (refused, no route, no such host)."""
    import errno
    import socket

    return isinstance(exc, (ConnectionRefusedError, socket.gaierror)) or (
        isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL))


def _api_server_401(status: int, body: bytes) -> bool:
    """A 401 of the API server itself (a Status ``Unauthorized``), not one a pod answered through the proxy."""
    if status != 401:
        return False
    import orjson

    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(doc, dict) and doc.get("kind") == "Status" and doc.get("reason") == "Unauthorized"
