"""Cluster access for ``bundle collect``, through the official ``kubernetes`` client only.

One shared ApiClient serves every REST call (urllib3's pool is thread-safe; its size is the worker count,
python-stack.md 1.4). Port-forwards each get a fresh ApiClient, because ``stream()`` monkey-patches the
client it is given and would break other threads' calls (python-stack.md 1.2). Bodies are streamed into a
caller's file, never held whole, and capped. Every failure becomes a :class:`FetchError` that says whether
a retry may help.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

from bundler.errors import BundleError

CHUNK = 64 * 1024


class ClusterAccessError(BundleError):
    """The cluster cannot be reached at all (kubeconfig, context, credentials, TLS)."""


class FetchError(Exception):
    """One request failed. ``status`` is the HTTP status, or 0 for a transport error."""

    def __init__(self, reason: str, status: int = 0, retry_after: float | None = None,
                 retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.retryable = retryable


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
                config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg,
                                        persist_config=False)
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
        except ApiException as exc:
            raise FetchError(f"TLS or request error: {exc.reason}".strip(), 0, retryable=False) from None
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
                                 _retry_after(raw.headers), retryable)
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
        port (it listens on localhost only, so the API server's pod proxy cannot)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import portforward

        timeout = timeout or self.request_timeout
        api = client.ApiClient(self.config)  # a fresh one: portforward() patches the client it is given
        try:
            core = client.CoreV1Api(api)
            try:
                pf = portforward(core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port),
                                 _request_timeout=timeout)
            except ApiException as exc:
                status, message = _handshake_failure(exc)
                raise FetchError(f"port-forward to {namespace}/{pod}:{port} refused: {message}",
                                 status, retryable=status in (0, 429, 500, 502, 503, 504)) from None
            except Exception as exc:  # websocket-client raises its own exception types on a failed handshake
                raise FetchError(f"port-forward to {namespace}/{pod}:{port} failed: {type(exc).__name__}: {exc}",
                                 0, retryable=True) from None
            sock = pf.socket(port)
            sock.setblocking(True)
            sock.settimeout(timeout)
            try:
                request = (f"GET {url_path} HTTP/1.1\r\nHost: localhost:{port}\r\nUser-Agent: ztunnel-bundle\r\n"
                           "Accept: */*\r\nConnection: close\r\n\r\n")
                sock.sendall(request.encode())
                response = http.client.HTTPResponse(sock)
                response.begin()
                if response.status >= 400:
                    body = response.read(64 * 1024)
                    raise FetchError(f"{namespace}/{pod}:{port}{url_path}: HTTP {response.status}: "
                                     f"{body[:200].decode('utf-8', 'replace').strip()}", response.status,
                                     retryable=response.status in (429, 500, 502, 503, 504))
                size, truncated = _copy(iter(lambda: response.read(CHUNK), b""), sink, max_bytes)
                return Fetched(response.status, size, truncated, response.getheader("Content-Type", ""))
            except (OSError, http.client.HTTPException) as exc:
                error = pf.error(port)
                detail = error.strip() if error else f"{type(exc).__name__}: {exc}"
                raise FetchError(f"port-forward to {namespace}/{pod}:{port}: {detail}", 0,
                                 retryable=not error) from None
            finally:
                try:
                    sock.close()
                except OSError:
                    pass
        finally:
            api.close()

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
        self.api.close()


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

