"""Deterministic fault injection for ``bundle serve`` (``--faults FILE``; the schema is in docs/serve-faults.md).

The served API is the test bed and the benchmark target of ``bundle collect``, which must finish even when
parts of the cluster misbehave. A faults file makes the served API misbehave on purpose: slow answers, narrow
bandwidth, 429 / 500 / 503 / 504 Status errors, connection resets, requests that never get an answer, 403s
with the API server's message, pods deleted between a list and a fetch, refused port-forwards, slow logs.

Every random decision is a hash of ``(seed, rule, method, request target, n)`` where ``n`` counts how many
times that exact ``(method, target)`` has been seen before: the same seed and the same requests give the same
faults however the requests interleave (no shared random stream consumed in arrival order).

The middleware (``FaultInjector.middleware``) does everything itself, in this order, for each request:

1. count the request and draw the decision of every matching rule; once ``shutdownAfter`` requests have been
   answered, the API server goes away (the request is reset, the server stops listening and drops its
   connections); once ``unauthorizedAfter`` have been, every request gets 401 Unauthorized (a revoked token);
2. wait the latency (global ``latency`` plus that of every rule that fired);
3. the fault of the first rule that fired with a ``fault``: a Status error, a reset, or a hang;
4. ``forbidden``: 403 Forbidden;
5. ``deletedPods``: 404 NotFound for a pod (or its log, proxy, port-forward) that has been listed before;
6. the handler; a pod list's answer is inspected to note the pods it listed (see ``note_listed``);
7. the body of a plain ``web.Response`` is streamed at the lowest applicable rate (``bandwidth``, the
   bandwidth of the rules that fired, ``slowLogs`` for pod logs). Stream and WebSocket responses are left
   alone: a handler that streams logs itself should pace them with ``log_rate()``.

Refused port-forwards are the app's business (the refusal travels in the port-forward protocol's error
stream): it asks ``portforward_refused(namespace, pod, port)``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import math
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
import yaml
from aiohttp import web

from bundler.errors import BundleError

__all__ = [
    "ApiRequest",
    "Decision",
    "FaultInjector",
    "FaultsError",
    "parse_api_path",
    "request_verb",
    "status_body",
]

DEFAULT_USER = "system:serviceaccount:default:ztunnel-bundle"
FAULT_STATUSES = (429, 500, 503, 504)
FAULT_KINDS = ("reset", "hang")
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Subresources of a namespace: /api/v1/namespaces/<ns>/<these> is the namespace itself, not a resource in it.
_NAMESPACE_SUBRESOURCES = ("status", "finalize")


class FaultsError(BundleError):
    """A faults file is invalid."""


# --- Kubernetes request paths ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiRequest:
    """What a Kubernetes API path asks for, as the API server's RequestInfo sees it.

    ``namespace`` is None for cluster-scoped requests (and for non-resource paths); ``resource`` is "" for
    non-resource paths (``/version``, ``/api``, ``/apis/<group>/<version>`` discovery, ``/openapi/v2``).
    For ``/api/v1/namespaces/<ns>`` the namespace is ``<ns>`` and the resource ``namespaces``, as in the API
    server. Proxy names ``[scheme:]name[:port]`` are split: ``name`` is the object's name.
    """

    group: str
    version: str
    namespace: str | None
    resource: str
    name: str
    subresource: str
    port: str = ""  # proxy: the port (a number or a port name)
    scheme: str = ""  # proxy: "http" / "https" when given
    proxy_path: str = ""  # proxy: what follows ".../proxy", e.g. "/stats/prometheus"
    watch: bool = False  # the deprecated /watch/ path prefix

    @property
    def is_resource(self) -> bool:
        return bool(self.resource)

    @property
    def resource_path(self) -> str:
        """``pods``, ``pods/log``: what rules and ``forbidden`` match, and what 403 messages name."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def parse_api_path(path: str) -> ApiRequest:
    """Parse a Kubernetes API URL path (no query), e.g. ``/api/v1/namespaces/ns/pods/p:15020/proxy/stats``."""
    path = path.split("?", 1)[0]
    parts = [p for p in path.split("/") if p]
    none = ApiRequest("", "", None, "", "", "")
    if not parts or parts[0] not in ("api", "apis"):
        return none
    if parts[0] == "api":
        if len(parts) < 2:
            return none
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) < 3:
            return ApiRequest(parts[1] if len(parts) > 1 else "", "", None, "", "", "")
        group, version, rest = parts[1], parts[2], parts[3:]
    watch = False
    if rest and rest[0] == "watch":
        watch, rest = True, rest[1:]
    if not rest:
        return ApiRequest(group, version, None, "", "", "", watch=watch)
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    raw_name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    name, port, scheme, proxy_path = raw_name, "", "", ""
    if subresource == "proxy":
        pieces = raw_name.split(":")
        if len(pieces) == 3:
            scheme, name, port = pieces
        elif len(pieces) == 2:
            name, port = pieces
        marker = f"/{resource}/{raw_name}/proxy"
        at = path.find(marker)
        proxy_path = path[at + len(marker):] if at >= 0 else ""
    return ApiRequest(group, version, namespace, resource, name, subresource, port, scheme, proxy_path, watch)


def request_verb(method: str, api: ApiRequest, query: str = "") -> str:
    """The Kubernetes verb of a request (as RBAC sees it): get, list, watch, create, update, patch, delete,
    deletecollection; the lower-cased method for non-resource paths."""
    method = method.upper()
    if not api.is_resource:
        return method.lower()
    verb = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete"}.get(method, method.lower())
    if api.watch and verb == "get":
        return "watch"
    if verb == "get" and not api.name:
        params = dict(parse_qsl(query, keep_blank_values=True))
        return "watch" if params.get("watch", "").lower() in ("1", "true") else "list"
    if verb == "delete" and not api.name:
        return "deletecollection"
    return verb


# --- Status bodies --------------------------------------------------------------------------------------------

_REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 429: "TooManyRequests", 500: "InternalError",
            503: "ServiceUnavailable", 504: "Timeout"}


def status_body(code: int, message: str, details: dict[str, Any] | None = None, reason: str | None = None) -> bytes:
    """A ``kind: Status`` failure as the API server writes it (empty ``details`` fields omitted, as in Go)."""
    status: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": message, "reason": reason or _REASONS.get(code, "Unknown")}
    details = {k: v for k, v in (details or {}).items() if v not in ("", None, [], {})}
    if details:
        status["details"] = details
    status["code"] = code
    return orjson.dumps(status)


def _status_response(code: int, message: str, details: dict[str, Any] | None = None,
                     headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=code, body=status_body(code, message, details), headers=headers,
                        content_type="application/json")


def _qualified(group: str, resource: str) -> str:
    return f"{resource}.{group}" if group else resource


# --- the configuration ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    ms: float = 0.0
    jitter_ms: float = 0.0


@dataclass(frozen=True)
class Rule:
    index: int
    verbs: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    path: re.Pattern[str] | None = None
    query: re.Pattern[str] | None = None
    fraction: float = 1.0
    fault: int | str | None = None  # 429 / 500 / 503 / 504 / "reset" / "hang"
    retry_after: int | None = None
    message: str | None = None
    latency: Latency | None = None
    bandwidth: int | None = None

    def matches(self, method: str, verb: str, api: ApiRequest, path: str, query: str) -> bool:
        if self.methods and method.upper() not in self.methods:
            return False
        if self.verbs and not _any_glob(verb, self.verbs):
            return False
        if self.resources and not (api.is_resource and _any_glob(api.resource_path, self.resources)):
            return False
        if self.groups and not (api.is_resource and _any_glob(api.group, self.groups)):
            return False
        if self.namespaces and not _any_glob(api.namespace or "", self.namespaces):
            return False
        if self.names and not (api.name and _any_glob(api.name, self.names)):
            return False
        if self.path is not None and not self.path.search(path):
            return False
        if self.query is not None and not self.query.search(query):
            return False
        return True


@dataclass(frozen=True)
class Forbidden:
    resources: tuple[str, ...]
    namespaces: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def matches(self, verb: str, api: ApiRequest) -> bool:
        if not api.is_resource or not _any_glob(api.resource_path, self.resources):
            return False
        if self.groups and not _any_glob(api.group, self.groups):
            return False
        if self.verbs and not _any_glob(verb, self.verbs):
            return False
        if self.namespaces and not (api.namespace is not None and _any_glob(api.namespace, self.namespaces)):
            return False
        return True


@dataclass(frozen=True)
class Config:
    seed: int = 0
    user: str = DEFAULT_USER
    latency: Latency | None = None
    bandwidth: int | None = None
    rules: tuple[Rule, ...] = ()
    forbidden: tuple[Forbidden, ...] = ()
    deleted_pods: tuple[str, ...] = ()  # "namespace/name" globs
    portforward_refused: tuple[str, ...] = ()  # "namespace/name[:port]" globs
    slow_logs: int | None = None
    slow_logs_pods: tuple[tuple[str, int], ...] = ()  # ("namespace/name" glob, bytes per second)
    shutdown_after: int | None = None  # the API server goes away after this many requests
    unauthorized_after: int | None = None  # the token is revoked after this many requests: 401 from then on


def _any_glob(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


class _Reader:
    """Strict access to one mapping of the faults file; every error names the key, on one line."""

    def __init__(self, data: Any, where: str, allowed: Iterable[str]) -> None:
        if not isinstance(data, dict):
            raise FaultsError(f"{where}: expected a mapping, got {_type_name(data)}")
        self.data = data
        self.where = where
        unknown = [k for k in data if k not in set(allowed)]
        if unknown:
            raise FaultsError(f"{where}: unknown key(s) {', '.join(repr(str(k)) for k in unknown)}")

    def key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def get(self, key: str) -> Any:
        return self.data.get(key)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _int(value: Any, where: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultsError(f"{where}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise FaultsError(f"{where}: must be >= {minimum}, got {value}")
    return value


def _number(value: Any, where: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FaultsError(f"{where}: expected a number, got {value!r}")
    if value < minimum:
        raise FaultsError(f"{where}: must be >= {minimum:g}, got {value}")
    return float(value)


def _rate(value: Any, where: str) -> int:
    return _int(value, where, minimum=1)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    """A string or a list of strings (non-empty)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(s, str) and s for s in items):
        raise FaultsError(f"{where}: expected a string or a non-empty list of strings, got {value!r}")
    return tuple(items)


def _regex(value: Any, where: str) -> re.Pattern[str]:
    if not isinstance(value, str):
        raise FaultsError(f"{where}: expected a regular expression string, got {value!r}")
    try:
        return re.compile(value)
    except re.error as exc:
        raise FaultsError(f"{where}: invalid regular expression {value!r}: {exc}") from exc


def _latency(value: Any, where: str) -> Latency:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Latency(_number(value, where))
    r = _Reader(value, where, ("ms", "jitterMs"))
    ms = _number(r.get("ms"), r.key("ms")) if r.has("ms") else 0.0
    jitter = _number(r.get("jitterMs"), r.key("jitterMs")) if r.has("jitterMs") else 0.0
    return Latency(ms, jitter)


def _verbs(value: Any, where: str) -> tuple[str, ...]:
    verbs = tuple(v.lower() for v in _strings(value, where))
    for v in verbs:
        if v != "*" and v not in VERBS:
            raise FaultsError(f"{where}: unknown verb {v!r} (one of {', '.join(VERBS)}, or *)")
    return verbs


def _methods(value: Any, where: str) -> tuple[str, ...]:
    methods = tuple(m.upper() for m in _strings(value, where))
    for m in methods:
        if m not in METHODS:
            raise FaultsError(f"{where}: unknown HTTP method {m!r} (one of {', '.join(METHODS)})")
    return methods


def _pod_pattern(item: Any, where: str, port: bool = False) -> str:
    shape = "namespace/name[:port]" if port else "namespace/name"
    if (not isinstance(item, str) or item.count("/") != 1 or not all(item.split("/"))
            or (not port and ":" in item)):
        raise FaultsError(f"{where}: expected {shape}, got {item!r}")
    return item


def _pod_patterns(value: Any, where: str, port: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise FaultsError(f"{where}: expected a list of namespace/name, got {value!r}")
    return tuple(_pod_pattern(item, f"{where}[{i}]", port) for i, item in enumerate(value))


_RULE_KEYS = ("verb", "method", "resource", "group", "namespace", "name", "pod", "path", "query", "fraction",
              "fault", "retryAfter", "message", "latency", "bandwidth")


def _rule(data: Any, index: int) -> Rule:
    where = f"rules[{index}]"
    r = _Reader(data, where, _RULE_KEYS)
    if r.has("name") and r.has("pod"):
        raise FaultsError(f"{where}: give name or pod, not both")
    kwargs: dict[str, Any] = {}
    if r.has("verb"):
        kwargs["verbs"] = _verbs(r.get("verb"), r.key("verb"))
    if r.has("method"):
        kwargs["methods"] = _methods(r.get("method"), r.key("method"))
    if r.has("resource"):
        kwargs["resources"] = _strings(r.get("resource"), r.key("resource"))
    if r.has("group"):
        group = r.get("group")
        kwargs["groups"] = ("",) if group == "" else _strings(group, r.key("group"))
    if r.has("namespace"):
        kwargs["namespaces"] = _strings(r.get("namespace"), r.key("namespace"))
    for key in ("name", "pod"):
        if r.has(key):
            kwargs["names"] = _strings(r.get(key), r.key(key))
    if r.has("pod") and "resources" not in kwargs:
        kwargs["resources"] = ("pods", "pods/*")
    if r.has("path"):
        kwargs["path"] = _regex(r.get("path"), r.key("path"))
    if r.has("query"):
        kwargs["query"] = _regex(r.get("query"), r.key("query"))
    if "fraction" in r.data:
        fraction = r.get("fraction")
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
            raise FaultsError(f"{r.key('fraction')}: must be a number from 0 to 1, got {fraction!r}")
        kwargs["fraction"] = float(fraction)
    fault = r.get("fault")
    if fault is not None:
        if isinstance(fault, bool) or fault not in FAULT_STATUSES + FAULT_KINDS:
            choices = ", ".join(str(f) for f in FAULT_STATUSES + FAULT_KINDS)
            raise FaultsError(f"{r.key('fault')}: must be one of {choices}, got {fault!r}")
        kwargs["fault"] = fault
    if r.has("retryAfter"):
        if fault not in (429, 503, 504):
            raise FaultsError(f"{r.key('retryAfter')}: only with fault 429, 503 or 504")
        kwargs["retry_after"] = _int(r.get("retryAfter"), r.key("retryAfter"), minimum=0)
    elif fault == 429:
        kwargs["retry_after"] = 1
    if r.has("message"):
        if fault not in FAULT_STATUSES or not isinstance(r.get("message"), str):
            raise FaultsError(f"{r.key('message')}: a string, only with a status fault (429, 500, 503, 504)")
        kwargs["message"] = r.get("message")
    if r.has("latency"):
        kwargs["latency"] = _latency(r.get("latency"), r.key("latency"))
    if r.has("bandwidth"):
        kwargs["bandwidth"] = _rate(r.get("bandwidth"), r.key("bandwidth"))
    if fault is None and "latency" not in kwargs and "bandwidth" not in kwargs:
        raise FaultsError(f"{where}: a rule needs a fault, a latency or a bandwidth")
    return Rule(index=index, **kwargs)


def _forbidden(data: Any, index: int) -> Forbidden:
    where = f"forbidden[{index}]"
    if isinstance(data, str) and data:
        return Forbidden(resources=(data,))
    r = _Reader(data, where, ("resource", "namespace", "namespaces", "verb", "verbs", "group"))
    if not r.has("resource"):
        raise FaultsError(f"{where}: missing required key 'resource'")
    if r.has("namespace") and r.has("namespaces"):
        raise FaultsError(f"{where}: give namespace or namespaces, not both")
    if r.has("verb") and r.has("verbs"):
        raise FaultsError(f"{where}: give verb or verbs, not both")
    ns_key = "namespaces" if r.has("namespaces") else "namespace"
    verb_key = "verbs" if r.has("verbs") else "verb"
    group = r.get("group")
    return Forbidden(
        resources=_strings(r.get("resource"), r.key("resource")),
        namespaces=_strings(r.get(ns_key), r.key(ns_key)) if r.has(ns_key) else (),
        verbs=_verbs(r.get(verb_key), r.key(verb_key)) if r.has(verb_key) else (),
        groups=(("",) if group == "" else _strings(group, r.key("group"))) if "group" in r.data else (),
    )


def _slow_logs(value: Any) -> tuple[int | None, tuple[tuple[str, int], ...]]:
    if isinstance(value, int) and not isinstance(value, bool):
        return _rate(value, "slowLogs"), ()
    r = _Reader(value, "slowLogs", ("bytesPerSecond", "pods"))
    rate = _rate(r.get("bytesPerSecond"), r.key("bytesPerSecond")) if r.has("bytesPerSecond") else None
    pods: list[tuple[str, int]] = []
    if r.has("pods"):
        per_pod = r.get("pods")
        if not isinstance(per_pod, dict):
            raise FaultsError(f"slowLogs.pods: expected a mapping of namespace/name to bytes per second, "
                              f"got {per_pod!r}")
        for pattern, pod_rate in per_pod.items():
            where = f"slowLogs.pods[{pattern!r}]"
            pods.append((_pod_pattern(pattern, where), _rate(pod_rate, where)))
    if rate is None and not pods:
        raise FaultsError("slowLogs: give bytesPerSecond or pods")
    return rate, tuple(pods)


_TOP_KEYS = ("seed", "user", "latency", "bandwidth", "rules", "forbidden", "deletedPods", "portforwardRefused",
             "slowLogs", "shutdownAfter", "unauthorizedAfter")


def config_from_dict(data: Any) -> Config:
    """Validate a faults document strictly; a FaultsError names the offending key."""
    if data is None:
        data = {}
    r = _Reader(data, "", _TOP_KEYS)
    kwargs: dict[str, Any] = {}
    if "seed" in r.data:
        kwargs["seed"] = _int(r.get("seed"), "seed")
    if "user" in r.data:
        user = r.get("user")
        if not isinstance(user, str) or not user:
            raise FaultsError(f"user: expected a user name, got {user!r}")
        kwargs["user"] = user
    if r.has("latency"):
        kwargs["latency"] = _latency(r.get("latency"), "latency")
    if r.has("bandwidth"):
        kwargs["bandwidth"] = _rate(r.get("bandwidth"), "bandwidth")
    if r.has("rules"):
        rules = r.get("rules")
        if not isinstance(rules, list):
            raise FaultsError(f"rules: expected a list, got {_type_name(rules)}")
        kwargs["rules"] = tuple(_rule(item, i) for i, item in enumerate(rules))
    if r.has("forbidden"):
        items = r.get("forbidden")
        if not isinstance(items, list):
            raise FaultsError(f"forbidden: expected a list, got {_type_name(items)}")
        kwargs["forbidden"] = tuple(_forbidden(item, i) for i, item in enumerate(items))
    if r.has("deletedPods"):
        kwargs["deleted_pods"] = _pod_patterns(r.get("deletedPods"), "deletedPods")
    if r.has("portforwardRefused"):
        kwargs["portforward_refused"] = _pod_patterns(r.get("portforwardRefused"), "portforwardRefused", port=True)
    if r.has("slowLogs"):
        kwargs["slow_logs"], kwargs["slow_logs_pods"] = _slow_logs(r.get("slowLogs"))
    if r.has("shutdownAfter"):
        kwargs["shutdown_after"] = _int(r.get("shutdownAfter"), "shutdownAfter", minimum=0)
    if r.has("unauthorizedAfter"):
        kwargs["unauthorized_after"] = _int(r.get("unauthorizedAfter"), "unauthorizedAfter", minimum=0)
    return Config(**kwargs)


# --- decisions ------------------------------------------------------------------------------------------------


def draw(seed: int, purpose: str, method: str, target: str, n: int) -> float:
    """A number in [0, 1) fixed by its inputs: blake2b of (seed, purpose, method, target, n)."""
    text = "\x00".join((str(seed), purpose, method.upper(), target, str(n))).encode("utf-8", "surrogatepass")
    (value,) = struct.unpack(">Q", hashlib.blake2b(text, digest_size=8).digest())
    return value / 2.0**64


@dataclass
class Decision:
    """What happens to one request."""

    n: int  # how many times this (method, target) was seen before
    verb: str
    api: ApiRequest
    index: int = 0  # how many requests (any) were planned before this one
    latency_ms: float = 0.0
    bandwidth: int | None = None  # bytes per second for the body, None for no limit
    fault: int | str | None = None
    rule: Rule | None = None  # the rule whose fault applies
    fired: tuple[int, ...] = ()  # indexes of the rules that fired


Sleep = Callable[[float], Awaitable[Any]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FaultInjector:
    """Applies a faults file to an aiohttp app: add ``injector.middleware`` to the app's middlewares and call
    ``shutdown()`` (or append ``injector.on_shutdown`` to ``app.on_shutdown``) when the server stops."""

    def __init__(self, config: Config | None = None, *, sleep: Sleep | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.config = config or Config()
        self._sleep: Sleep = sleep or asyncio.sleep
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], int] = {}
        self._listed: set[tuple[str, str]] = set()
        # Namespaces ("" for all) whose every pod was listed in an answer the middleware could not read.
        self._listed_scopes: set[str] = set()
        self._stats: Counter[str] = Counter()
        self._hung: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._stopped = False
        self._gone = False
        self.log_bytes_per_second: int | None = self.config.slow_logs
        # Set by the server (``start_server``): closes its listener and drops every open connection. Awaited
        # once, when ``shutdownAfter`` is reached; without it, requests from then on are only reset.
        self.stop_listening: Callable[[], Awaitable[Any]] | None = None

    # --- construction ---------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any], **kwargs: Any) -> FaultInjector:
        return cls(config_from_dict(data), **kwargs)

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> FaultInjector:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise FaultsError(f"{path}: cannot read faults file: {exc}") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise FaultsError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
        try:
            return cls(config_from_dict(data), **kwargs)
        except FaultsError as exc:
            raise FaultsError(f"{path}: {exc}") from exc

    # --- queries for the app ------------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """Counts: requests, latency (requests delayed), latency_ms (total), bandwidth (bodies throttled),
        status_429 / status_500 / status_503 / status_504, reset, hang, forbidden, not_found (deleted pods),
        portforward_refused, slow_logs (log bodies throttled), shutdown (``shutdownAfter`` reached),
        unauthorized (401s of ``unauthorizedAfter``)."""
        with self._lock:
            return dict(self._stats)

    @property
    def hanging(self) -> int:
        """How many requests are hung right now."""
        with self._lock:
            return len(self._hung)

    def _count(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self._stats[key] += amount

    def note_listed(self, namespace: str | None, names: Iterable[str]) -> None:
        """Record that a pod list answered these pods (``namespace`` None: names are ``namespace/name``).
        The middleware calls it itself for the pod lists it sees as plain JSON responses."""
        keys = []
        for name in names:
            if namespace is None:
                ns, _, name = name.partition("/")
            else:
                ns = namespace
            if self._is_deleted(ns, name):
                keys.append((ns, name))
        if keys:
            with self._lock:
                self._listed.update(keys)

    def _is_deleted(self, namespace: str, name: str) -> bool:
        return _any_glob(f"{namespace}/{name}", self.config.deleted_pods)

    def pod_deleted(self, namespace: str, name: str) -> bool:
        """True for a pod of ``deletedPods`` that a pod list has shown: it is gone by the time it is fetched."""
        if not self._is_deleted(namespace, name):
            return False
        with self._lock:
            return ((namespace, name) in self._listed or namespace in self._listed_scopes
                    or "" in self._listed_scopes)

    def portforward_refused(self, namespace: str, pod: str, port: int | str | None = None) -> bool:
        """True when a port-forward to ``pod`` (on ``port``) must be refused (counted in stats)."""
        keys = [f"{namespace}/{pod}"] + ([f"{namespace}/{pod}:{port}"] if port is not None else [])
        for pattern in self.config.portforward_refused:
            if any(fnmatch.fnmatchcase(k, pattern) for k in keys):
                self._count("portforward_refused")
                return True
        return False

    def log_rate(self, namespace: str, pod: str) -> int | None:
        """Bytes per second for the log of ``pod``: its ``slowLogs.pods`` rate, else the global one."""
        for pattern, rate in self.config.slow_logs_pods:
            if fnmatch.fnmatchcase(f"{namespace}/{pod}", pattern):
                return rate
        return self.log_bytes_per_second

    # --- decisions -----------------------------------------------------------------------------------------

    def plan(self, method: str, target: str) -> Decision:
        """Decide what happens to a request ``target`` (path and query, as sent) and count it. Pure given the
        seed and how many times the same (method, target) was planned before."""
        method = method.upper()
        with self._lock:
            n = self._seen.get((method, target), 0)
            self._seen[(method, target)] = n + 1
            index = self._stats["requests"]
            self._stats["requests"] += 1
        raw_path, _, query = target.partition("?")
        path = unquote(raw_path)
        api = parse_api_path(path)
        verb = request_verb(method, api, query)
        cfg = self.config
        decision = Decision(n=n, verb=verb, api=api, index=index, bandwidth=cfg.bandwidth)
        latency = 0.0
        if cfg.latency is not None:
            latency += cfg.latency.ms + cfg.latency.jitter_ms * draw(cfg.seed, "latency", method, target, n)
        fired = []
        for rule in cfg.rules:
            if not rule.matches(method, verb, api, path, query):
                continue
            if rule.fraction < 1.0 and draw(cfg.seed, f"rule{rule.index}", method, target, n) >= rule.fraction:
                continue
            fired.append(rule.index)
            if rule.latency is not None:
                jitter = draw(cfg.seed, f"rule{rule.index}-latency", method, target, n)
                latency += rule.latency.ms + rule.latency.jitter_ms * jitter
            if rule.bandwidth is not None:
                decision.bandwidth = min(rule.bandwidth, decision.bandwidth or rule.bandwidth)
            if rule.fault is not None and decision.fault is None:
                decision.fault, decision.rule = rule.fault, rule
        decision.latency_ms = latency
        decision.fired = tuple(fired)
        return decision

    def forbidden(self, verb: str, api: ApiRequest) -> bool:
        return any(f.matches(verb, api) for f in self.config.forbidden)

    # --- the middleware ---------------------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        decision = self.plan(request.method, request.rel_url.raw_path_qs)
        api = decision.api
        cfg = self.config
        if cfg.shutdown_after is not None and decision.index >= cfg.shutdown_after:
            await self._go_away()
            return _reset(request)
        if cfg.unauthorized_after is not None and decision.index >= cfg.unauthorized_after:
            self._count("unauthorized")
            return web.Response(status=401, body=status_body(401, "Unauthorized", reason="Unauthorized"),
                                content_type="application/json")
        if decision.latency_ms > 0:
            self._count("latency")
            self._count("latency_ms", round(decision.latency_ms))
            await self._sleep(decision.latency_ms / 1000.0)
        if decision.fault is not None:
            return await self._fault(request, decision)
        if self.config.forbidden and self.forbidden(decision.verb, api):
            self._count("forbidden")
            return self._forbidden_response(decision.verb, api)
        if (self.config.deleted_pods and api.resource == "pods" and not api.group and api.name
                and api.namespace is not None and self.pod_deleted(api.namespace, api.name)):
            self._count("not_found")
            return _status_response(404, f'pods "{api.name}" not found', {"name": api.name, "kind": "pods"})
        response = await handler(request)
        pod_list = (self.config.deleted_pods and api.resource == "pods" and not api.group and not api.subresource
                    and not api.name and decision.verb == "list" and response.status == 200)
        body = response.body if isinstance(response, web.Response) and not response.prepared else None
        if not isinstance(body, (bytes, bytearray)):
            if pod_list:
                self._note_unread_list(request, api.namespace)
            return response
        if pod_list:
            self._note_list_body(api.namespace, bytes(body))
        rate = decision.bandwidth
        log_rate = None
        if api.resource == "pods" and api.subresource == "log" and api.namespace is not None:
            log_rate = self.log_rate(api.namespace, api.name)
            if log_rate is not None:
                rate = min(rate, log_rate) if rate is not None else log_rate
        if rate is None or request.method == "HEAD" or not body:
            return response
        self._count("slow_logs" if log_rate is not None and rate == log_rate else "bandwidth")
        return await self._throttle(request, response, bytes(body), rate)

    async def on_shutdown(self, app: web.Application | None = None) -> None:
        """For ``app.on_shutdown``: releases hung requests so the server stops promptly."""
        self.shutdown()

    def shutdown(self) -> None:
        """Release every hung request (it ends with a reset); requests that would hang later are reset at once.
        Safe to call from any thread, more than once."""
        with self._lock:
            self._stopped = True
            hung = list(self._hung)
        for loop, future in hung:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # the loop is closed: nothing waits any more
                pass

    async def _go_away(self) -> None:
        """``shutdownAfter`` was reached: the API server goes away. Hung requests are released (reset), the
        server's listener is closed and its connections dropped (``stop_listening``); runs once."""
        with self._lock:
            first, self._gone = not self._gone, True
        if not first:
            self._count("reset")
            return
        self._count("shutdown")
        self.shutdown()
        if self.stop_listening is not None:
            await self.stop_listening()

    # --- faults -----------------------------------------------------------------------------------------------

    async def _fault(self, request: web.Request, decision: Decision) -> web.StreamResponse:
        fault, rule = decision.fault, decision.rule
        assert rule is not None
        if fault == "reset":
            self._count("reset")
            return _reset(request)
        if fault == "hang":
            self._count("hang")
            await self._hang()
            return _reset(request)
        assert isinstance(fault, int)
        self._count(f"status_{fault}")
        headers = {}
        details: dict[str, Any] = {}
        if rule.retry_after is not None:
            headers["Retry-After"] = str(rule.retry_after)
            details["retryAfterSeconds"] = rule.retry_after
        if fault == 429:
            message = rule.message or "Too many requests, please try again later."
        elif fault == 500:
            cause = rule.message or "injected fault"
            message = f"Internal error occurred: {cause}"
            details["causes"] = [{"message": cause}]
        elif fault == 503:
            message = rule.message or "the server is currently unable to handle the request"
        else:
            message = "Timeout: " + (rule.message or "request did not complete within the allotted timeout")
        return _status_response(fault, message, details, headers)

    async def _hang(self) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._lock:
            if self._stopped:
                return
            self._hung.add(entry)
        try:
            await future
        finally:
            with self._lock:
                self._hung.discard(entry)

    def _forbidden_response(self, verb: str, api: ApiRequest) -> web.Response:
        user = self.config.user
        scope = (f"in the namespace {_go_quote(api.namespace)}" if api.namespace
                 else "at the cluster scope")
        reason = (f"User {_go_quote(user)} cannot {verb} resource {_go_quote(api.resource_path)} "
                  f"in API group {_go_quote(api.group)} {scope}")
        what = _qualified(api.group, api.resource)
        head = f"{what} {_go_quote(api.name)} is forbidden" if api.name else f"{what} is forbidden"
        details = {"name": api.name, "group": api.group, "kind": api.resource}
        return _status_response(403, f"{head}: {reason}", details)

    def _note_unread_list(self, request: web.Request, namespace: str | None) -> None:
        """A pod list streamed by the handler cannot be read back: without a selector it showed every pod of
        its namespace (of the cluster, for ``/api/v1/pods``); with one, nothing is assumed."""
        if request.query.get("labelSelector") or request.query.get("fieldSelector"):
            return
        with self._lock:
            self._listed_scopes.add(namespace or "")

    def _note_list_body(self, namespace: str | None, body: bytes) -> None:
        # Cheap test first: parse only when a deleted pod's name may be in the list.
        patterns = self.config.deleted_pods
        if not any(_literal_part(p.split("/", 1)[1]).encode() in body for p in patterns):
            return
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if not isinstance(document, dict):
            return
        objects = document.get("items")
        if objects is None and isinstance(document.get("rows"), list):  # a Table (kubectl get)
            objects = [row.get("object") for row in document["rows"] if isinstance(row, dict)]
        keys = []
        for obj in objects or []:
            meta = obj.get("metadata") if isinstance(obj, dict) else None
            if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
                continue
            ns = meta.get("namespace") or namespace or ""
            keys.append(f"{ns}/{meta['name']}")
        self.note_listed(None, keys)

    async def _throttle(self, request: web.Request, response: web.Response, body: bytes,
                        rate: int) -> web.StreamResponse:
        """Stream ``body`` in chunks, each sent when ``rate`` bytes per second allow (paced against the clock,
        so per-chunk sleep overshoots do not add up)."""
        stream = web.StreamResponse(status=response.status, reason=response.reason, headers=response.headers)
        stream.content_length = len(body)
        chunk = max(1, min(64 * 1024, rate // 10))
        try:
            await stream.prepare(request)
            start = self._clock()
            for offset in range(0, len(body), chunk):
                piece = body[offset:offset + chunk]
                due = start + (offset + len(piece)) / rate
                delay = due - self._clock()
                if delay > 0:
                    await self._sleep(delay)
                await stream.write(piece)
            await stream.write_eof()
        except ConnectionError:  # the client went away mid-body
            pass
        return stream


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _reset(request: web.Request) -> web.Response:
    """Close the connection without an answer; SO_LINGER 0 makes it a TCP RST, as a crashed peer would."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except (OSError, AttributeError, ValueError):
                pass
        transport.abort()
    # aiohttp writes this to a closed transport, notices the ConnectionError and drops it quietly.
    return web.Response(status=500)


def _literal_part(pattern: str) -> str:
    """The longest run of a glob with no wildcard, for a quick substring test."""
    runs = re.split(r"[*?\[\]]", pattern)
    return max(runs, key=len)


def _go_quote(text: str | None) -> str:
    """Go's %q for the plain strings of Kubernetes names (JSON escaping is the same for these)."""
    return orjson.dumps(text or "").decode()
