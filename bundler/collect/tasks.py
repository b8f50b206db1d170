"""What ``bundle collect`` fetches, declared as data: each task names its bundle path, its source and how to
fetch it; the engine adds the how (priority, retries, deadline, spooling, redaction, the manifest)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlsplit

from bundler import layout
from bundler.collect.kube import Fetched, FetchError, Kube

MiB = 1024 * 1024

# Lower runs first: istiod's views and the ztunnel dumps are what a maintainer needs most; logs are bulky.
PRIORITY_VIEWS = 0
PRIORITY_STATE = 1
PRIORITY_LOGS = 2


@dataclass(frozen=True)
class Task:
    path: str
    priority: int
    timeout: float = 30.0
    max_bytes: int | None = 256 * MiB
    # An absence that is normal (a previous log of a container that never restarted) is "skipped", not "error".
    missing_ok: bool = False

    @property
    def kind(self) -> str | None:
        return layout.kind_of_path(self.path)

    def source(self) -> dict[str, Any]:
        raise NotImplementedError

    def run(self, kube: Kube, sink: BinaryIO, timeout: float) -> tuple[Fetched, dict[str, Any]]:
        """Fetch into ``sink``; return what was fetched and extra manifest fields."""
        raise NotImplementedError


def collection_order(tasks: list[Task]) -> list[Task]:
    """The order collect fetches and writes in: by priority, then as :func:`bundler.layout.order_key` sorts."""
    return sorted(tasks, key=lambda t: (t.priority, layout.order_key(t.path)))


@dataclass(frozen=True)
class ApiGet(Task):
    api_path: str = ""
    query: tuple[tuple[str, str], ...] = ()
    verb: str = "list"

    def source(self) -> dict[str, Any]:
        src: dict[str, Any] = {"type": "api", "verb": self.verb, "apiPath": self.api_path}
        if self.query:
            src["query"] = dict(self.query)
        return src

    def run(self, kube: Kube, sink: BinaryIO, timeout: float) -> tuple[Fetched, dict[str, Any]]:
        return kube.fetch(self.api_path, sink, list(self.query), timeout=timeout, max_bytes=self.max_bytes), {}


@dataclass(frozen=True)
class MergedList(Task):
    """One list gathered from several namespaces (the Istio ConfigMaps when istio-cni and istiod live apart,
    as on GKE), written as one List of the same kind."""

    api_paths: tuple[str, ...] = ()

    def source(self) -> dict[str, Any]:
        return {"type": "api", "verb": "list", "apiPaths": list(self.api_paths)}

    def run(self, kube: Kube, sink: BinaryIO, timeout: float) -> tuple[Fetched, dict[str, Any]]:
        import io

        import orjson

        merged: dict[str, Any] | None = None
        for api_path in self.api_paths:
            buf = io.BytesIO()
            kube.fetch(api_path, buf, timeout=timeout, max_bytes=self.max_bytes)
            try:
                document = orjson.loads(buf.getvalue())
            except orjson.JSONDecodeError:
                raise FetchError(f"{api_path}: the API server answered something that is not JSON") from None
            if merged is None:
                merged = document
            else:
                merged.setdefault("items", []).extend(document.get("items") or [])
        data = orjson.dumps(merged)
        sink.write(data)
        return Fetched(200, len(data), False, "application/json"), {}


@dataclass(frozen=True)
class PodLog(Task):
    namespace: str = ""
    pod: str = ""
    container: str = ""
    previous: bool = False
    since_seconds: int | None = None
    since_time: str | None = None

    def source(self) -> dict[str, Any]:
        return {"type": "logs", "namespace": self.namespace, "pod": self.pod, "container": self.container,
                "previous": self.previous}

    def run(self, kube: Kube, sink: BinaryIO, timeout: float) -> tuple[Fetched, dict[str, Any]]:
        query: list[tuple[str, Any]] = [("container", self.container)]
        if self.previous:
            query.append(("previous", "true"))
        if self.since_time:
            query.append(("sinceTime", self.since_time))
        elif self.since_seconds:
            query.append(("sinceSeconds", str(self.since_seconds)))
        # No server-side limitBytes: it keeps the *oldest* bytes. The engine keeps the newest instead.
        return kube.fetch(f"/api/v1/namespaces/{self.namespace}/pods/{self.pod}/log", sink, query,
                          accept="text/plain, */*", timeout=timeout), {}


def _split(url_path: str) -> tuple[str, list[tuple[str, str]]]:
    parts = urlsplit(url_path)
    return parts.path, parse_qsl(parts.query, keep_blank_values=True)


@dataclass(frozen=True)
class PortForwardGet(Task):
    namespace: str = ""
    pod: str = ""
    port: int = 0
    url_path: str = "/"

    def source(self) -> dict[str, Any]:
        return {"type": "portforward", "namespace": self.namespace, "pod": self.pod, "port": self.port,
                "urlPath": self.url_path}

    def run(self, kube: Kube, sink: BinaryIO, timeout: float) -> tuple[Fetched, dict[str, Any]]:
        return kube.forward_get(self.namespace, self.pod, self.port, self.url_path, sink, timeout=timeout,
                                max_bytes=self.max_bytes), {}


@dataclass(frozen=True)
class ProxyGet(Task):
    namespace: str = ""
    pod: str = ""
    port: int = 0
    url_path: str = "/"

    def source(self) -> dict[str, Any]:
        return {"type": "proxy", "namespace": self.namespace, "pod": self.pod, "port": self.port,
                "urlPath": self.url_path}

    def run(self, kube: Kube, sink: BinaryIO, timeout: float) -> tuple[Fetched, dict[str, Any]]:
        path, query = _split(self.url_path)
        api_path = f"/api/v1/namespaces/{self.namespace}/pods/{self.pod}:{self.port}/proxy{path}"
        return kube.fetch(api_path, sink, query, accept="*/*", timeout=timeout, max_bytes=self.max_bytes), {}


@dataclass(frozen=True)
class IstiodProxyView(Task):
    """istiod's view of one ztunnel. Only the replica holding the ztunnel's xDS stream answers; the others say
    404 "Proxy not connected to this Pilot instance" (formats.md 3.1), so every replica is asked."""

    replicas: tuple[tuple[str, str], ...] = ()  # (namespace, pod) of each istiod
    url_path: str = ""

    def source(self) -> dict[str, Any]:
        return {"type": "portforward", "port": 15014, "urlPath": self.url_path,
                "asked": [name for _, name in self.replicas]}

    def run(self, kube: Kube, sink: BinaryIO, timeout: float) -> tuple[Fetched, dict[str, Any]]:
        answers: list[str] = []
        errors: list[FetchError] = []
        for namespace, name in self.replicas:
            try:
                fetched = kube.forward_get(namespace, name, 15014, self.url_path, sink, timeout=timeout,
                                           max_bytes=self.max_bytes)
            except FetchError as exc:
                sink.seek(0)
                sink.truncate()
                answers.append(f"{name}: {exc.reason}")
                errors.append(exc)
                continue
            return fetched, {"source": {"type": "portforward", "namespace": namespace, "pod": name, "port": 15014,
                                        "urlPath": self.url_path, "replica": name,
                                        "asked": [n for _, n in self.replicas]}}
        if not self.replicas:
            raise FetchError("no istiod replica found")
        if all(e.status == 404 for e in errors):
            raise FetchError(f"404 from every istiod replica ({', '.join(n for _, n in self.replicas)}): "
                             "Proxy not connected to this Pilot instance", 404)
        # Not only "not connected here": a refusal, a 401, the API server gone. Retry if any answer may change.
        failed = [e for e in errors if e.status != 404]
        kinds = {e.kind for e in failed}
        retryable = any(e.retryable for e in failed)
        raise FetchError("; ".join(answers), 0 if retryable else failed[0].status, retryable=retryable,
                         kind=kinds.pop() if len(kinds) == 1 else "")

