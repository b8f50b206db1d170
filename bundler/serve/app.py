"""The read-only Kubernetes API of ``bundle serve``, as an aiohttp application.

``make_app(cluster, token, faults=None)`` answers what the official Python client and kubectl ask of an API server:

* discovery (``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>[/<version>]``): legacy JSON only, so
  kubectl's request for aggregated discovery falls back; ``/openapi/v2`` and ``/openapi/v3`` are 404 (kubectl copes);
* ``get`` and ``list`` of every resource the bundle holds, with ``labelSelector`` and ``fieldSelector``, as JSON or,
  when the Accept header asks ``as=Table``, as a ``meta.k8s.io/v1`` Table with kubectl's columns (AGE counts from
  the bundle's collection time, ``cluster.now``). A request the bundle recorded exactly (no selector, the same
  path: ``cluster.stored_response``) gets the recorded bytes, so that collecting from a served bundle gives the
  same bundle back; anything else is built from the parsed objects, with apiVersion/kind on every item and a
  resourceVersion on every object. ``limit`` and ``continue`` are ignored: every item, no continue token;
* ``watch=true``: the matching objects newer than the request's ``resourceVersion`` (all of them without one) as
  ``ADDED`` events, then the stream ends. A bundle never changes, so there is nothing more to wait for; a client that
  re-watches in a loop (the Python ``Watch`` without ``timeout_seconds``) should pass a timeout;
* ``pods/log`` with container, previous, tailLines, sinceSeconds/sinceTime (``now`` is ``cluster.now``), timestamps,
  limitBytes and follow (what exists is sent, then the stream ends);
* ``pods/proxy`` (GET/HEAD) through ``cluster.proxy``; ``pods/portforward`` through
  ``bundler.serve.portforward.handle_portforward``;
* every write verb is refused with a 405 ``MethodNotAllowed`` Status.

Errors are ``Status`` objects shaped like the real API server's. Every request needs ``Authorization: Bearer
<token>``.
"""

from __future__ import annotations

import asyncio
import calendar
import hmac
import re
import time
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from bundler.serve.state import ResourceType, ServedCluster
from bundler.manifest import parse_time

READ_ONLY_MESSAGE = ("the server does not allow this method on the requested resource: "
                     "this cluster is a read-only bundle served by ztunnel-bundle")
NOT_FOUND_MESSAGE = "the server could not find the requested resource"

CHUNK = 64 * 1024
JSON = "application/json"

CLUSTER_KEY = web.AppKey("cluster", ServedCluster)
API_KEY = web.AppKey("api", object)


# --- Status objects ----------------------------------------------------------------------------------------------


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason}
    if details is not None:
        body["details"] = details
    body["code"] = code
    return orjson.dumps(body)


def status_response(code: int, reason: str, message: str, details: dict[str, Any] | None = None,
                    headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=code, body=status_body(code, reason, message, details),
                        headers={"Content-Type": JSON, **(headers or {})})


def not_found(rt: ResourceType, name: str) -> web.Response:
    resource = f"{rt.resource}.{rt.group}" if rt.group else rt.resource
    details: dict[str, Any] = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.resource
    return status_response(404, "NotFound", f'{resource} "{name}" not found', details)


def no_such_path() -> web.Response:
    return status_response(404, "NotFound", NOT_FOUND_MESSAGE, {})


def bad_request(message: str) -> web.Response:
    return status_response(400, "BadRequest", message)


class _Reply(Exception):
    """Raised to answer a request early (an error Status)."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__()
        self.response = response


# --- times, as kubectl shows them --------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """A duration the way kubectl prints ages (apimachinery's ``duration.HumanDuration``)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if rest == 0 else f"{hours // 24 // 365}y{rest}d"
    return f"{hours // 24 // 365}y"


def _since(value: Any, now: datetime) -> str:
    when = parse_time(value)
    if when is None:
        return "<unknown>"
    return human_duration((now - when).total_seconds())


# --- label and field selectors -----------------------------------------------------------------------------------

_KEY = r"[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_REQUIREMENT = re.compile(
    rf"^\s*(?:!\s*(?P<absent>{_KEY})"
    rf"|(?P<key>{_KEY})\s*(?:(?P<op>==|!=|=)\s*(?P<value>{_VALUE})"
    rf"|\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\)"
    rf"|\s*(?P<cmp>[<>])\s*(?P<number>-?\d+))?)\s*$"
)

Predicate = Callable[[dict[str, str]], bool]


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_label_selector(text: str) -> list[Predicate]:
    """``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``, ``a>1``; commas are AND.
    Raises ValueError with the API server's message for a selector it cannot parse."""
    predicates: list[Predicate] = []
    if not text.strip():
        return predicates
    for raw in _split_top_level(text):
        m = _REQUIREMENT.match(raw)
        if not m:
            raise ValueError(f"unable to parse requirement: found '{raw.strip()}', expected: a valid label selector")
        if m["absent"]:
            key = m["absent"]
            predicates.append(lambda labels, k=key: k not in labels)
        elif m["op"]:
            key, value = m["key"], m["value"]
            if m["op"] == "!=":
                predicates.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                predicates.append(lambda labels, k=key, v=value: k in labels and labels[k] == v)
        elif m["setop"]:
            key = m["key"]
            values = frozenset(v.strip() for v in m["values"].split(",") if v.strip())
            if m["setop"] == "in":
                if not values:
                    raise ValueError(f"unable to parse requirement: {raw.strip()}: for 'in' operator, "
                                     "values set can't be empty")
                predicates.append(lambda labels, k=key, vs=values: k in labels and labels[k] in vs)
            else:
                predicates.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif m["cmp"]:
            key, number, greater = m["key"], int(m["number"]), m["cmp"] == ">"
            predicates.append(lambda labels, k=key, n=number, gt=greater: _compare(labels.get(k), n, gt))
        else:
            key = m["key"]
            predicates.append(lambda labels, k=key: k in labels)
    return predicates


def _compare(value: str | None, number: int, greater: bool) -> bool:
    try:
        have = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return have > number if greater else have < number


# Fields each resource can be selected on, as the real API server allows (metadata.name and metadata.namespace
# everywhere).
_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "pods"): ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                   "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"),
    ("", "nodes"): ("spec.unschedulable",),
    ("", "namespaces"): ("status.phase",),
    ("", "services"): ("spec.clusterIP", "spec.type"),
    ("", "events"): ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                     "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                     "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"),
}
_FIELD_DEFAULTS = {"spec.hostNetwork": "false", "spec.unschedulable": "false"}


def _field_value(obj: dict[str, Any], path: str) -> str:
    if path == "source":  # events: source.component
        path = "source.component"
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return _FIELD_DEFAULTS.get(path, "")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _unescape_field(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def parse_field_selector(text: str, rt: ResourceType) -> list[Callable[[dict[str, Any]], bool]]:
    """``field=value``, ``field==value``, ``field!=value``, comma = AND. Raises ValueError (the real server's
    message) for a field this resource cannot be selected on."""
    allowed = {"metadata.name", "metadata.namespace", *_FIELDS.get((rt.group, rt.resource), ())}
    predicates: list[Callable[[dict[str, Any]], bool]] = []
    if not text.strip():
        return predicates
    for raw in re.split(r"(?<!\\),", text):
        raw = raw.strip()
        if not raw:
            continue
        m = re.match(r"^([^=!]+?)\s*(==|!=|=)\s*(.*)$", raw)
        if not m:
            raise ValueError(f"invalid selector: '{text}'; can't understand '{raw}'")
        name, op, value = m[1].strip(), m[2], _unescape_field(m[3].strip())
        if name not in allowed:
            raise ValueError(f"field label not supported: {name}")
        if op == "!=":
            predicates.append(lambda obj, f=name, v=value: _field_value(obj, f) != v)
        else:
            predicates.append(lambda obj, f=name, v=value: _field_value(obj, f) == v)
    return predicates


# --- the objects, serialised once ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    namespace: str
    name: str
    obj: dict[str, Any]
    raw: bytes
    labels: dict[str, str]
    rv: int | None
    _partial: bytes | None = None

    @property
    def partial(self) -> bytes:
        """The object as ``meta.k8s.io/v1`` PartialObjectMetadata."""
        if self._partial is None:
            self._partial = orjson.dumps({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                          "metadata": self.obj.get("metadata", {})})
        return self._partial


def _stable_rv(rt: ResourceType, namespace: str, name: str) -> str:
    return str(1 + zlib.crc32(f"{rt.group}/{rt.resource}/{namespace}/{name}".encode()) % 999_983)


def _index(cluster: ServedCluster) -> tuple[dict[tuple[str, str], list[_Entry]], str]:
    entries: dict[tuple[str, str], list[_Entry]] = {}
    newest = 0
    for key, rt in cluster.resources.items():
        rows = []
        for obj in cluster.list(*key):
            meta = obj.get("metadata") or {}
            namespace, name = meta.get("namespace", "") or "", meta.get("name", "") or ""
            if not meta.get("resourceVersion"):
                meta = {**meta, "resourceVersion": _stable_rv(rt, namespace, name)}
            obj = {**obj, "apiVersion": obj.get("apiVersion") or rt.group_version,
                   "kind": obj.get("kind") or rt.kind, "metadata": meta}
            try:
                rv: int | None = int(meta["resourceVersion"])
                newest = max(newest, rv)
            except (TypeError, ValueError):
                rv = None
            rows.append(_Entry(namespace, name, obj, orjson.dumps(obj), dict(meta.get("labels") or {}), rv))
        entries[key] = rows
    return entries, str(newest or 1000)


# --- tables ----------------------------------------------------------------------------------------------------------


def _column(name: str, description: str = "", priority: int = 0, type_: str = "string", fmt: str = "") -> dict:
    return {"name": name, "type": type_, "format": fmt, "description": description, "priority": priority}


_NAME = _column("Name", "Name must be unique within a namespace.", fmt="name")
_AGE = _column("Age", "CreationTimestamp is a timestamp representing the server time when this object was created.")


def _pod_cells(pod: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    meta = pod.get("metadata") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    total = len(spec.get("containers") or [])
    ready = restarts = 0
    last_restart: datetime | None = None
    initializing = False
    init_statuses = status.get("initContainerStatuses") or []
    for i, cs in enumerate(init_statuses):
        restarts += int(cs.get("restartCount") or 0)
        state = cs.get("state") or {}
        term = state.get("terminated")
        if term and term.get("exitCode", 0) == 0:
            continue
        if term:
            reason = "Init:" + (term.get("reason") or (f"Signal:{term['signal']}" if term.get("signal")
                                                        else f"ExitCode:{term.get('exitCode')}"))
        elif (state.get("waiting") or {}).get("reason") and state["waiting"]["reason"] != "PodInitializing":
            reason = "Init:" + state["waiting"]["reason"]
        else:
            reason = f"Init:{i}/{len(spec.get('initContainers') or [])}"
        initializing = True
        break
    if not initializing:
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += int(cs.get("restartCount") or 0)
            finished = parse_time(((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt"))
            if finished and (last_restart is None or finished > last_restart):
                last_restart = finished
            state = cs.get("state") or {}
            if (state.get("waiting") or {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif (state.get("terminated") or {}).get("reason"):
                reason = state["terminated"]["reason"]
            elif state.get("terminated"):
                term = state["terminated"]
                reason = f"Signal:{term['signal']}" if term.get("signal") else f"ExitCode:{term.get('exitCode')}"
            elif cs.get("ready") and "running" in state:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
            reason = "Running" if conditions.get("Ready") == "True" else "NotReady"
    if meta.get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    restart_cell = str(restarts)
    if restarts and last_restart is not None:
        restart_cell = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"
    gates = spec.get("readinessGates") or []
    if gates:
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        passed = sum(1 for g in gates if conditions.get(g.get("conditionType")) == "True")
        gate_cell = f"{passed}/{len(gates)}"
    else:
        gate_cell = "<none>"
    return [meta.get("name", ""), f"{ready}/{total}", reason, restart_cell,
            _since(meta.get("creationTimestamp"), now), status.get("podIP") or "<none>",
            spec.get("nodeName") or "<none>", status.get("nominatedNodeName") or "<none>", gate_cell]


def _node_cells(node: dict[str, Any], now: datetime) -> list[Any]:
    meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    state = "Unknown" if not ready else ("Ready" if ready[0].get("status") == "True" else "NotReady")
    if spec.get("unschedulable"):
        state += ",SchedulingDisabled"
    roles = set()
    for key, value in (meta.get("labels") or {}).items():
        if key.startswith("node-role.kubernetes.io/"):
            roles.add(key.split("/", 1)[1])
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    info = status.get("nodeInfo") or {}
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    return [meta.get("name", ""), state, ",".join(sorted(r for r in roles if r)) or "<none>",
            _since(meta.get("creationTimestamp"), now), info.get("kubeletVersion", ""),
            addresses.get("InternalIP") or "<none>", addresses.get("ExternalIP") or "<none>",
            info.get("osImage") or "<unknown>", info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>"]


def _service_cells(svc: dict[str, Any], now: datetime) -> list[Any]:
    meta, spec, status = svc.get("metadata") or {}, svc.get("spec") or {}, svc.get("status") or {}
    kind = spec.get("type") or "ClusterIP"
    cluster_ip = spec.get("clusterIP") or "<none>"
    external = list(spec.get("externalIPs") or [])
    if kind == "ExternalName":
        external_cell = spec.get("externalName") or "<none>"
    elif kind == "LoadBalancer":
        ingress = [i.get("ip") or i.get("hostname") for i in (status.get("loadBalancer") or {}).get("ingress") or []]
        addresses = [a for a in ingress if a] + external
        external_cell = ",".join(addresses) if addresses else "<pending>"
    else:
        external_cell = ",".join(external) if external else "<none>"
    ports = []
    for p in spec.get("ports") or []:
        text = f"{p.get('port')}"
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        ports.append(f"{text}/{p.get('protocol') or 'TCP'}")
    selector = spec.get("selector") or {}
    return [meta.get("name", ""), kind, cluster_ip, external_cell, ",".join(ports) or "<none>",
            _since(meta.get("creationTimestamp"), now),
            ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>"]


def _event_cells(ev: dict[str, Any], now: datetime) -> list[Any]:
    meta, involved = ev.get("metadata") or {}, ev.get("involvedObject") or {}
    last = ev.get("lastTimestamp") or ev.get("eventTime") or meta.get("creationTimestamp")
    first = ev.get("firstTimestamp") or ev.get("eventTime") or meta.get("creationTimestamp")
    source = ev.get("source") or {}
    source_cell = ", ".join(s for s in (source.get("component"), source.get("host")) if s) or \
        ev.get("reportingComponent") or ""
    return [_since(last, now), ev.get("type", ""), ev.get("reason", ""),
            f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}", involved.get("fieldPath", ""),
            source_cell, ev.get("message", ""), _since(first, now), int(ev.get("count") or 1), meta.get("name", "")]


def _gateway_cells(gw: dict[str, Any], now: datetime) -> list[Any]:
    meta, spec, status = gw.get("metadata") or {}, gw.get("spec") or {}, gw.get("status") or {}
    addresses = [a.get("value") for a in status.get("addresses") or [] if a.get("value")]
    programmed = [c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Programmed"]
    return [meta.get("name", ""), spec.get("gatewayClassName", ""), addresses[0] if addresses else "",
            programmed[0] if programmed else "Unknown", _since(meta.get("creationTimestamp"), now)]


def _generic_cells(obj: dict[str, Any], now: datetime) -> list[Any]:
    meta = obj.get("metadata") or {}
    return [meta.get("name", ""), _since(meta.get("creationTimestamp"), now)]


def _configmap_cells(cm: dict[str, Any], now: datetime) -> list[Any]:
    meta = cm.get("metadata") or {}
    return [meta.get("name", ""), len(cm.get("data") or {}) + len(cm.get("binaryData") or {}),
            _since(meta.get("creationTimestamp"), now)]


_TABLES: dict[tuple[str, str], tuple[list[dict[str, Any]], Callable[[dict[str, Any], datetime], list[Any]]]] = {
    ("", "pods"): ([_NAME, _column("Ready", "The aggregate readiness state of this pod for accepting traffic."),
                    _column("Status", "The aggregate status of the containers in this pod."),
                    _column("Restarts", "The number of times the containers in this pod have been restarted and "
                                        "when the last container in this pod has restarted."),
                    _AGE, _column("IP", "IP address allocated to the pod.", 1),
                    _column("Node", "Name of the node this pod is assigned to.", 1),
                    _column("Nominated Node", "Name of the node this pod is nominated to run on.", 1),
                    _column("Readiness Gates", "Pod readiness gates.", 1)], _pod_cells),
    ("", "nodes"): ([_NAME, _column("Status", "The status of the node"), _column("Roles", "The roles of the node"),
                     _AGE, _column("Version", "Kubelet Version reported by the node."),
                     _column("Internal-IP", "List of internal IPs for the node.", 1),
                     _column("External-IP", "List of external IPs for the node.", 1),
                     _column("OS-Image", "OS Image reported by the node.", 1),
                     _column("Kernel-Version", "Kernel Version reported by the node.", 1),
                     _column("Container-Runtime", "Container Runtime Version reported by the node.", 1)],
                    _node_cells),
    ("", "services"): ([_NAME, _column("Type", "The type of the service."),
                        _column("Cluster-IP", "The IP address of the service."),
                        _column("External-IP", "The external IP addresses of the service."),
                        _column("Port(s)", "The ports of the service."), _AGE,
                        _column("Selector", "The selector of the service.", 1)], _service_cells),
    ("", "namespaces"): ([_NAME, _column("Status", "The status of the namespace"), _AGE],
                         lambda ns, now: [(ns.get("metadata") or {}).get("name", ""),
                                          (ns.get("status") or {}).get("phase", ""),
                                          _since((ns.get("metadata") or {}).get("creationTimestamp"), now)]),
    ("", "events"): ([_column("Last Seen", "Time when last event occurred"), _column("Type", "Type of event"),
                      _column("Reason", "Reason of event"), _column("Object", "Object of event"),
                      _column("Subobject", "Subobject of event", 1), _column("Source", "Source of event", 1),
                      _column("Message", "Message of event"), _column("First Seen", "Time of first event", 1),
                      _column("Count", "Count of event", 1, "integer"),
                      _column("Name", "Name of event", 1, fmt="name")],
                     _event_cells),
    ("", "configmaps"): ([_NAME, _column("Data", "Number of data keys.", type_="integer"), _AGE], _configmap_cells),
    ("gateway.networking.k8s.io", "gateways"): ([_NAME, _column("Class"), _column("Address"),
                                                 _column("Programmed"), _AGE], _gateway_cells),
}


def _table_spec(rt: ResourceType):
    return _TABLES.get((rt.group, rt.resource), ([_NAME, _AGE], _generic_cells))


# --- logs ----------------------------------------------------------------------------------------------------------

# An RFC 3339 time at the start of a line (ztunnel plain and legacy, istio Go plain) or as JSON's "time" value.
_TIME = re.compile(rb"(\d{4}-\d\d-\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?(Z|z|[+-]\d\d:?\d\d)?")
_JSON_TIME = b'"time":"'
_HOUR_CACHE: dict[tuple[bytes, bytes], int] = {}


def _line_time(data: bytes, start: int, end: int) -> int | None:
    """The time a log line carries, in nanoseconds since the epoch, or None."""
    if start < end and data[start] == 0x7B:  # '{': a JSON line
        at = data.find(_JSON_TIME, start, end)
        if at < 0:
            return None
        start = at + len(_JSON_TIME)
    m = _TIME.match(data, start, min(end, start + 48))
    if not m:
        return None
    day, hour, minute, second, fraction, zone = m.groups()
    base = _HOUR_CACHE.get((day, hour))
    if base is None:
        try:
            y, mo, d = int(day[:4]), int(day[5:7]), int(day[8:10])
            base = calendar.timegm((y, mo, d, int(hour), 0, 0))
        except (ValueError, OverflowError):
            return None
        if len(_HOUR_CACHE) < 100_000:
            _HOUR_CACHE[(day, hour)] = base
    seconds = base + int(minute) * 60 + int(second)
    if zone and zone not in (b"Z", b"z"):
        sign = 1 if zone[:1] == b"+" else -1
        digits = zone[1:].replace(b":", b"")
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    nanos = int(fraction.ljust(9, b"0")) if fraction else 0
    return seconds * 1_000_000_000 + nanos


def rfc3339nano(ns: int) -> bytes:
    """Go's ``time.RFC3339Nano`` in UTC: trailing zeros of the fraction dropped."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return (text + "Z").encode()


@dataclass
class LogIndex:
    """Where each line of a log starts and ends, and its time (a line without one takes the previous line's)."""

    data: bytes
    starts: array = field(default_factory=lambda: array("q"))
    ends: array = field(default_factory=lambda: array("q"))
    times: array = field(default_factory=lambda: array("q"))

    @classmethod
    def build(cls, data: bytes) -> LogIndex:
        index = cls(data)
        pos, size, last = 0, len(data), 0
        first_untimed = True
        pending = 0  # untimed lines at the start take the first time found
        while pos < size:
            nl = data.find(b"\n", pos)
            end = size if nl < 0 else nl + 1
            t = _line_time(data, pos, end)
            if t is None:
                if first_untimed:
                    pending += 1
                t = last
            else:
                if first_untimed and pending:
                    for i in range(pending):
                        index.times[i] = t
                first_untimed = False
                last = t
            index.starts.append(pos)
            index.ends.append(end)
            index.times.append(t)
            pos = end
        return index


class _LogCache:
    """Log indexes, least recently used first out, within a byte budget."""

    def __init__(self, budget: int = 256 * 1024 * 1024) -> None:
        self.budget = budget
        self.used = 0
        self.items: OrderedDict[Any, LogIndex] = OrderedDict()

    def get(self, key: Any) -> LogIndex | None:
        index = self.items.get(key)
        if index is not None:
            self.items.move_to_end(key)
        return index

    def put(self, key: Any, index: LogIndex) -> None:
        if key in self.items:
            return
        self.items[key] = index
        self.used += len(index.data)
        while self.used > self.budget and len(self.items) > 1:
            _, old = self.items.popitem(last=False)
            self.used -= len(old.data)


def _tail_start(data: bytes, lines: int) -> int:
    """The offset of the first of the last ``lines`` lines."""
    if lines <= 0:
        return len(data)
    end = len(data)
    if end and data[end - 1] == 0x0A:
        end -= 1
    pos = end
    for _ in range(lines):
        nl = data.rfind(b"\n", 0, pos)
        if nl < 0:
            return 0
        pos = nl
    return pos + 1


# --- the application -----------------------------------------------------------------------------------------------


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1", "yes")


def _int_param(query, name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise _Reply(bad_request(f"{name}: Invalid value: \"{value}\": must be an integer")) from None


class Api:
    """The handlers. One instance per application; everything it precomputes is read-only afterwards."""

    def __init__(self, cluster: ServedCluster, token: str, faults: Any = None) -> None:
        self.cluster = cluster
        self.token = token.encode()
        self.faults = faults
        self.entries, self.resource_version = _index(cluster)
        self.by_plural: dict[tuple[str, str, str], ResourceType] = {}  # (group, version, plural) -> type
        for (group, plural), rt in cluster.resources.items():
            self.by_plural[(group, rt.version, plural)] = rt
        self.by_name: dict[tuple[str, str, str, str], _Entry] = {}  # (group, plural, namespace, name) -> entry
        for (group, plural), rows in self.entries.items():
            for entry in rows:
                self.by_name.setdefault((group, plural, entry.namespace, entry.name), entry)
        self.logs = _LogCache()

    # --- entry points ----------------------------------------------------------------------------------------------

    @web.middleware
    async def auth_middleware(self, request: web.Request, handler):
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode(), self.token):
            return status_response(401, "Unauthorized", "Unauthorized")
        return await handler(request)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except _Reply as reply:
            return reply.response
        except web.HTTPException:
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:  # noqa: BLE001 - an API server answers every request with a Status
            return status_response(500, "InternalError", f"an error on the server has prevented the request "
                                                         f"from succeeding: {type(exc).__name__}: {exc}")

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = request.rel_url.raw_path
        segments = [unquote(s) for s in raw.split("/")[1:]]
        trailing_slash = len(segments) > 1 and segments[-1] == ""
        while segments and segments[-1] == "":
            segments.pop()
        method = request.method

        # pods/portforward: the one request that is not a read (an upgrade, GET for websockets, POST for SPDY).
        pod_sub = self._pod_subresource(segments)
        if pod_sub is not None and pod_sub[2] == "portforward" and method in ("GET", "POST"):
            return await self._portforward(request, pod_sub[0], pod_sub[1])
        if method == "POST" and segments == ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"]:
            return await self._access_review(request)
        if method not in ("GET", "HEAD"):
            return status_response(405, "MethodNotAllowed", READ_ONLY_MESSAGE, headers={"Allow": "GET, HEAD"})
        if pod_sub is not None:
            namespace, pod, sub, rest = pod_sub
            if sub == "log":
                return await self._log(request, namespace, pod)
            if sub == "proxy":
                return await self._proxy(request, namespace, pod, rest, trailing_slash)
            return no_such_path()

        match segments:
            case []:
                return self._json({"paths": self._paths()})
            case ["version"]:
                return self._stored(request) or self._json(self.cluster.version)
            case ["healthz" | "livez" | "readyz", *_]:
                return web.Response(text="ok", content_type="text/plain")
            case ["api"]:
                return self._json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}]})
            case ["api", "v1"]:
                return self._json(self._resource_list("", "v1"))
            case ["apis"]:
                return self._json({"kind": "APIGroupList", "apiVersion": "v1", "groups": self._groups()})
            case ["apis", group]:
                for g in self._groups():
                    if g["name"] == group:
                        return self._json({"kind": "APIGroup", "apiVersion": "v1", **g})
                return no_such_path()
            case ["apis", group, version]:
                if not any(g == group and v == version for g, v, _ in self.by_plural):
                    return no_such_path()
                return self._json(self._resource_list(group, version))
            case ["api", "v1", *rest]:
                return await self._resource(request, "", "v1", rest)
            case ["apis", group, version, *rest]:
                return await self._resource(request, group, version, rest)
        return no_such_path()

    async def _access_review(self, request: web.Request) -> web.Response:
        """A SelfSubjectAccessReview (what ``kubectl auth can-i`` and the collector's preflight ask): reads are
        allowed, as is the pods/portforward create; what the faults file forbids is not. Nothing is stored."""
        from bundler.serve.faults import ApiRequest

        try:
            review = orjson.loads(await request.read())
            attrs = review["spec"]["resourceAttributes"]
            verb, resource = str(attrs.get("verb", "")), str(attrs.get("resource", ""))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return bad_request("a SelfSubjectAccessReview with spec.resourceAttributes is required")
        subresource = str(attrs.get("subresource") or "")
        allowed = verb in ("get", "list", "watch") or (verb == "create" and subresource == "portforward")
        reason = "read-only bundle" if allowed else "the served bundle is read-only"
        if allowed and self.faults is not None and hasattr(self.faults, "forbidden"):
            api = ApiRequest(str(attrs.get("group") or ""), str(attrs.get("version") or ""),
                             attrs.get("namespace") or None, resource, str(attrs.get("name") or ""), subresource)
            if self.faults.forbidden(verb, api):
                allowed, reason = False, "forbidden by the faults file"
        review["status"] = {"allowed": allowed, "reason": reason}
        review.setdefault("apiVersion", "authorization.k8s.io/v1")
        review.setdefault("kind", "SelfSubjectAccessReview")
        return self._json(review, status=201)

    # --- discovery -------------------------------------------------------------------------------------------------

    def _paths(self) -> list[str]:
        paths = {"/api", "/api/v1", "/apis", "/version", "/healthz", "/livez", "/readyz"}
        for group, version, _ in self.by_plural:
            if group:
                paths.update({f"/apis/{group}", f"/apis/{group}/{version}"})
        return sorted(paths)

    def _groups(self) -> list[dict[str, Any]]:
        versions: dict[str, list[str]] = {}
        for group, version, _ in self.by_plural:
            if group and version not in versions.setdefault(group, []):
                versions[group].append(version)
        groups = []
        for group in sorted(versions):
            listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in sorted(versions[group], reverse=True)]
            groups.append({"name": group, "versions": listed, "preferredVersion": listed[0]})
        return groups

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        resources = []
        for (g, v, plural), rt in sorted(self.by_plural.items()):
            if g != group or v != version:
                continue
            entry: dict[str, Any] = {"name": plural, "singularName": rt.kind.lower(), "namespaced": rt.namespaced,
                                     "kind": rt.kind, "verbs": ["get", "list"]}
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if (g, plural) in (("", "pods"), ("", "services")):
                entry["categories"] = ["all"]  # kubectl get all
            resources.append(entry)
            if (g, plural) == ("", "pods"):
                resources += [
                    {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
                    {"name": "pods/portforward", "singularName": "", "namespaced": True,
                     "kind": "PodPortForwardOptions", "verbs": ["create", "get"]},
                    {"name": "pods/proxy", "singularName": "", "namespaced": True, "kind": "PodProxyOptions",
                     "verbs": ["get"]},
                ]
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": resources}

    @staticmethod
    def _json(document: Any, status: int = 200) -> web.Response:
        return web.Response(status=status, body=orjson.dumps(document), headers={"Content-Type": JSON})

    # --- get, list, watch ------------------------------------------------------------------------------------------

    async def _resource(self, request: web.Request, group: str, version: str, rest: list[str]):
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest:
            return no_such_path()
        rt = self.by_plural.get((group, version, rest[0]))
        if rt is None:
            return no_such_path()
        if namespace is not None and not rt.namespaced:
            return no_such_path()
        if len(rest) == 1:
            return await self._list(request, rt, namespace)
        if len(rest) == 2:
            if namespace is None and rt.namespaced:
                return no_such_path()
            return self._get(request, rt, namespace, rest[1])
        return no_such_path()

    def _pod_subresource(self, segments: list[str]) -> tuple[str, str, str, list[str]] | None:
        """(namespace, pod, subresource, rest) for ``/api/v1/namespaces/<ns>/pods/<pod>/<sub>[/rest...]``."""
        if len(segments) >= 7 and segments[:3] == ["api", "v1", "namespaces"] and segments[4] == "pods":
            return segments[3], segments[5], segments[6], segments[7:]
        return None

    def _find(self, rt: ResourceType, namespace: str | None, name: str) -> _Entry | None:
        return self.by_name.get((rt.group, rt.resource, namespace or "", name))

    def _pod_gone(self, namespace: str, name: str) -> bool:
        return self.faults is not None and bool(self.faults.pod_deleted(namespace, name))

    def _get(self, request: web.Request, rt: ResourceType, namespace: str | None, name: str) -> web.StreamResponse:
        entry = self._find(rt, namespace, name)
        if entry is None or (rt.group, rt.resource) == ("", "pods") and self._pod_gone(entry.namespace, name):
            return not_found(rt, name)
        if _wants_table(request):
            return self._table_response(request, rt, [entry])
        return self._stored(request) or web.Response(body=entry.raw, headers={"Content-Type": JSON})

    def _select(self, request: web.Request, rt: ResourceType, namespace: str | None) -> list[_Entry]:
        query = request.query
        try:
            labels = parse_label_selector(query.get("labelSelector", ""))
            fields = parse_field_selector(query.get("fieldSelector", ""), rt)
        except ValueError as exc:
            raise _Reply(bad_request(str(exc))) from None
        rows = self.entries.get((rt.group, rt.resource), [])
        if namespace is not None:
            rows = [e for e in rows if e.namespace == namespace]
        if labels:
            rows = [e for e in rows if all(p(e.labels) for p in labels)]
        if fields:
            rows = [e for e in rows if all(p(e.obj) for p in fields)]
        return rows

    def _stored(self, request: web.Request) -> web.Response | None:
        """The bundle's own bytes for exactly this request, when it holds them (a list or object fetched with no
        selector, ``/version``): collecting from a served bundle then gives the same bytes back."""
        query = request.query
        if query.get("labelSelector") or query.get("fieldSelector") or _wants_table(request):
            return None
        stored = getattr(self.cluster, "stored_response", None)
        if stored is None:
            return None
        path = unquote(request.rel_url.raw_path).rstrip("/")
        try:
            body = stored(path)
        except Exception:  # noqa: BLE001 - fall back to the parsed objects
            return None
        return None if body is None else web.Response(body=body, headers={"Content-Type": JSON})

    async def _list(self, request: web.Request, rt: ResourceType, namespace: str | None) -> web.StreamResponse:
        rows = self._select(request, rt, namespace)
        if _truthy(request.query.get("watch")):
            return await self._watch(request, rt, rows)
        if _wants_table(request):
            return self._table_response(request, rt, rows)
        stored = self._stored(request)
        if stored is not None:
            return stored
        head = orjson.dumps({"kind": f"{rt.kind}List", "apiVersion": rt.group_version,
                             "metadata": {"resourceVersion": self.resource_version}})
        return await self._send_parts(request, [head[:-1], b',"items":['], [e.raw for e in rows], b"]}")

    async def _send_parts(self, request: web.Request, head: list[bytes], items: list[bytes],
                          tail: bytes) -> web.StreamResponse:
        """A JSON list, ``head + items joined by commas + tail``: one body when small, else streamed."""
        size = sum(map(len, head)) + sum(map(len, items)) + max(0, len(items) - 1) + len(tail)
        if size <= 1024 * 1024:
            return web.Response(body=b"".join(head) + b",".join(items) + tail, headers={"Content-Type": JSON})
        response = web.StreamResponse(headers={"Content-Type": JSON})
        response.content_length = size
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        batch: list[bytes] = list(head)
        batched = 0
        for i, item in enumerate(items):
            if i:
                batch.append(b",")
            batch.append(item)
            batched += len(item)
            if batched >= 256 * 1024:
                await response.write(b"".join(batch))
                batch, batched = [], 0
        batch.append(tail)
        await response.write(b"".join(batch))
        await response.write_eof()
        return response

    async def _watch(self, request: web.Request, rt: ResourceType, rows: list[_Entry]) -> web.StreamResponse:
        since = request.query.get("resourceVersion", "")
        try:
            after = int(since) if since else 0
        except ValueError:
            return bad_request(f'resourceVersion: Invalid value: "{since}": must be an integer')
        table = _wants_table(request)
        response = web.StreamResponse(headers={"Content-Type": JSON})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for entry in rows:
            if entry.rv is not None and entry.rv <= after:
                continue
            if table:
                obj = self._table_bytes(request, rt, [entry])
            else:
                obj = entry.raw
            await response.write(b'{"type":"ADDED","object":' + obj + b"}\n")
        await response.write_eof()
        return response

    def _table_bytes(self, request: web.Request, rt: ResourceType, rows: list[_Entry]) -> bytes:
        columns, cells = _table_spec(rt)
        include = request.query.get("includeObject", "PartialObjectMetadata")
        now = self.cluster.now
        out = [b'{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{"resourceVersion":',
               orjson.dumps(self.resource_version), b'},"columnDefinitions":', orjson.dumps(columns), b',"rows":[']
        for i, entry in enumerate(rows):
            if i:
                out.append(b",")
            out.append(b'{"cells":')
            out.append(orjson.dumps(cells(entry.obj, now)))
            if include == "None":
                out.append(b"}")
                continue
            out.append(b',"object":')
            out.append(entry.raw if include == "Object" else entry.partial)
            out.append(b"}")
        out.append(b"]}")
        return b"".join(out)

    def _table_response(self, request: web.Request, rt: ResourceType, rows: list[_Entry]) -> web.Response:
        return web.Response(body=self._table_bytes(request, rt, rows), headers={"Content-Type": JSON})

    # --- pods/log ----------------------------------------------------------------------------------------------------

    async def _log(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        pods = self.cluster.resource("", "pods")
        assert pods is not None
        entry = self._find(pods, namespace, name)
        if entry is None or self._pod_gone(namespace, name):
            return not_found(pods, name)
        query = request.query
        containers = [c.get("name", "") for c in (entry.obj.get("spec") or {}).get("containers") or []]
        container = query.get("container") or None
        if container is None:
            if len(containers) != 1:
                return bad_request(f"a container name must be specified for pod {name}, "
                                   f"choose one of: [{' '.join(containers)}]")
            container = containers[0]
        elif container not in containers:
            init = [c.get("name") for c in (entry.obj.get("spec") or {}).get("initContainers") or []]
            if container not in init:
                return bad_request(f"container {container} is not valid for pod {name}")
        previous = _truthy(query.get("previous"))
        tail = _int_param(query, "tailLines")
        limit = _int_param(query, "limitBytes")
        since_seconds = _int_param(query, "sinceSeconds")
        since_time = query.get("sinceTime")
        timestamps = _truthy(query.get("timestamps"))
        if since_seconds is not None and since_time:
            return bad_request("at most one of `sinceTime` or `sinceSeconds` may be specified")
        if since_seconds is not None and since_seconds <= 0:
            return bad_request(f"sinceSeconds: Invalid value: {since_seconds}: must be greater than 0")
        if limit is not None and limit <= 0:
            return bad_request(f"limitBytes: Invalid value: {limit}: must be greater than 0")
        if tail is not None and tail < 0:
            tail = None  # kubectl's --tail=-1: everything
        since_ns: int | None = None
        if since_seconds is not None:
            since_ns = int(self.cluster.now.timestamp()) * 1_000_000_000 - since_seconds * 1_000_000_000
        elif since_time:
            when = parse_time(since_time)
            if when is None:
                return bad_request(f'sinceTime: Invalid value: "{since_time}": must be an RFC3339 time')
            since_ns = int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000

        # A bundle never changes, so an indexed log is served from the index without reading it again.
        key = (namespace, name, container, previous)
        index = self.logs.get(key)
        if index is not None:
            data = index.data
        else:
            read = await asyncio.to_thread(self.cluster.log, namespace, name, container, previous)
            if read is None:
                if previous:
                    return bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
                read = b""
            data = read

        if since_ns is None and not timestamps:
            start = 0 if tail is None else _tail_start(data, tail)
            pieces: Iterable[bytes | memoryview] = [memoryview(data)[start:]]
        else:
            if index is None:
                index = await asyncio.to_thread(LogIndex.build, data)
                self.logs.put(key, index)
            pieces = _log_pieces(index, tail, since_ns, timestamps)

        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        rate = None
        if self.faults is not None:
            log_rate = getattr(self.faults, "log_rate", None)
            rate = log_rate(namespace, name) if log_rate is not None else self.faults.log_bytes_per_second
        await _write_limited(response, pieces, limit, rate)
        await response.write_eof()
        return response

    # --- pods/proxy --------------------------------------------------------------------------------------------------

    async def _proxy(self, request: web.Request, namespace: str, target: str, rest: list[str],
                     trailing_slash: bool) -> web.StreamResponse:
        pods = self.cluster.resource("", "pods")
        assert pods is not None
        parts = target.split(":")
        if len(parts) == 3:  # scheme:name:port
            parts = parts[1:]
        name = parts[0]
        port_text = parts[1] if len(parts) > 1 else ""
        entry = self._find(pods, namespace, name)
        if entry is None or self._pod_gone(namespace, name):
            return not_found(pods, name)
        port = _resolve_port(entry.obj, port_text)
        if port is None:
            return status_response(503, "ServiceUnavailable",
                                   f'no endpoints available for pod "{name}": port "{port_text}" not found')
        path = "/" + "/".join(rest)
        if trailing_slash and rest:
            path += "/"
        if request.query_string:
            path += "?" + request.query_string
        answer = await asyncio.to_thread(self.cluster.proxy, namespace, name, port, request.method, path)
        if answer is None:
            pod_ip = (entry.obj.get("status") or {}).get("podIP", "")
            return status_response(503, "ServiceUnavailable", f"error trying to reach service: dial tcp "
                                                              f"{pod_ip}:{port}: connect: connection refused")
        return web.Response(status=answer.status, body=answer.body, headers={"Content-Type": answer.content_type})

    # --- pods/portforward --------------------------------------------------------------------------------------------

    async def _portforward(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        pods = self.cluster.resource("", "pods")
        assert pods is not None
        if self._find(pods, namespace, name) is None or self._pod_gone(namespace, name):
            return not_found(pods, name)
        try:
            from bundler.serve.portforward import handle_portforward
        except ImportError:
            return status_response(501, "NotImplemented", "port-forward is not available in this build")
        return await handle_portforward(request, self.cluster, namespace, name, self.faults)


def _wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def _resolve_port(pod: dict[str, Any], text: str) -> int | None:
    ports = [p for c in (pod.get("spec") or {}).get("containers") or [] for p in c.get("ports") or []]
    if not text:
        return int(ports[0]["containerPort"]) if ports else 80
    if text.isdigit():
        return int(text)
    for p in ports:
        if p.get("name") == text:
            return int(p["containerPort"])
    return None


def _log_pieces(index: LogIndex, tail: int | None, since_ns: int | None, timestamps: bool) -> Iterator[bytes]:
    """The selected lines (kubelet's order: the tail first, then the time filter), with time prefixes if asked."""
    count = len(index.starts)
    first = 0 if tail is None else max(0, count - tail)
    data = memoryview(index.data)
    starts, ends, times = index.starts, index.ends, index.times
    if not timestamps:
        # Contiguous runs of selected lines go out as slices of the log.
        run_start = None
        for i in range(first, count):
            keep = since_ns is None or times[i] >= since_ns
            if keep and run_start is None:
                run_start = starts[i]
            elif not keep and run_start is not None:
                yield data[run_start:starts[i]]
                run_start = None
        if run_start is not None:
            yield data[run_start:]
        return
    last_ns, last_prefix = -1, b""
    for i in range(first, count):
        t = times[i]
        if since_ns is not None and t < since_ns:
            continue
        if t != last_ns:
            last_ns, last_prefix = t, rfc3339nano(t) + b" "
        yield last_prefix
        yield data[starts[i]:ends[i]]


# The pause between paced chunks; a module attribute so that tests can observe the pacing without waiting.
_pace_sleep = asyncio.sleep


async def _write_limited(response: web.StreamResponse, pieces: Iterable[bytes | memoryview], limit: int | None,
                         rate: int | None) -> None:
    """Write the pieces in chunks of about 64 KiB, stopping after ``limit`` bytes; at ``rate`` bytes/s if given."""
    remaining = limit if limit is not None else -1
    step = CHUNK if not rate else max(1, rate // 10)
    buffer = bytearray()

    loop = asyncio.get_running_loop()
    start, sent = loop.time(), 0

    async def flush(data: bytes | memoryview | bytearray) -> None:
        nonlocal sent
        if not rate:
            await response.write(data)
            return
        view = memoryview(data)
        for at in range(0, len(view), step):
            piece = view[at:at + step]
            sent += len(piece)
            # Paced against the clock, so that sleeping longer than asked does not add up.
            delay = start + sent / rate - loop.time()
            if delay > 0:
                await _pace_sleep(delay)
            await response.write(piece)

    for piece in pieces:
        if remaining == 0:
            break
        if remaining > 0 and len(piece) > remaining:
            piece = piece[:remaining]
        if remaining > 0:
            remaining -= len(piece)
        if len(piece) >= CHUNK and not buffer:
            await flush(piece)
            continue
        buffer += piece
        if len(buffer) >= CHUNK:
            await flush(buffer)
            buffer = bytearray()
    if buffer:
        await flush(buffer)


def make_app(cluster: ServedCluster, token: str, faults: Any = None) -> web.Application:
    """The API server's application for ``cluster``: requests need ``Authorization: Bearer <token>``.

    ``faults`` (a ``bundler.serve.faults.FaultInjector``) adds its middleware after authentication and is asked
    whether a listed pod has since been deleted, and how fast logs stream."""
    api = Api(cluster, token, faults)
    middlewares = [api.auth_middleware]
    if faults is not None:
        middlewares.append(faults.middleware)
    app = web.Application(middlewares=middlewares, client_max_size=1024 * 1024)
    if faults is not None and hasattr(faults, "on_shutdown"):
        app.on_shutdown.append(faults.on_shutdown)  # releases hung requests, so that stopping is prompt
    app[CLUSTER_KEY] = cluster
    app[API_KEY] = api
    app.router.add_route("*", "/{path:.*}", api.handle)
    return app
