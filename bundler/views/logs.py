"""``bundle logs``: the log records of a bundle, filtered and merged across files in time order.

Each file is streamed (``BundleModel.log_records``) and the streams are merged with a heap, so memory is bounded
by the number of files, not their size. Lines that are not records (continuations, garbage) are dropped.
"""

from __future__ import annotations

import datetime as dt
import heapq
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bundler.errors import BundleError

LEVELS = {"error": 0, "warn": 1, "info": 2, "debug": 3, "trace": 4}
_LEVEL_ALIASES = {"warning": "warn", "fatal": "error", "panic": "error", "critical": "error", "dpanic": "error"}

# named error signatures: a regex over the message and the error field
SIGNATURES: dict[str, re.Pattern[str]] = {
    "hbone-blocked": re.compile(r"15008|hbone|connection (?:refused|reset|timed out)|deadline has elapsed", re.I),
    "policy-rejection": re.compile(r"RBAC|policy rejection|denied|401 Unauthorized|403", re.I),
    "xds-error": re.compile(r"xds|ACK ERROR|NACK|rejected|XdsError|stream closed", re.I),
    "cert-error": re.compile(r"certificate|cert(?:ificate)? expired|UnknownIssuer|BadSignature|csr|x509|TLS", re.I),
    "dns-error": re.compile(r"dns|NXDOMAIN|SERVFAIL|resolve|lookup", re.I),
}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, reference: dt.datetime | None) -> dt.datetime:
    """RFC 3339, or a duration (``30m``, ``2h``, ``-1h``) relative to ``reference`` (the collection time):
    ``30m`` means 30 minutes before it."""
    value = text.strip()
    m = _DURATION.match(value.lstrip("-+"))
    if m:
        if reference is None:
            raise BundleError(f"{text}: the bundle has no collection time, give an RFC 3339 time")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
        delta = dt.timedelta(seconds=seconds)
        return reference + delta if value.startswith("+") else reference - delta
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BundleError(f"{text}: not an RFC 3339 time nor a duration (30s, 15m, 2h, 1d)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc)


def collection_time(model: Any) -> dt.datetime | None:
    try:
        manifest = model.manifest
    except BundleError:
        return None
    for text in (getattr(manifest.window, "end", ""), manifest.created_at):
        if text:
            try:
                return parse_time(text, None)
            except BundleError:
                continue
    return None


@dataclass
class LogFilter:
    components: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    pods: tuple[str, ...] = ()
    level: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    workloads: tuple[str, ...] = ()
    direction: str | None = None
    signatures: tuple[str, ...] = ()
    grep: re.Pattern[str] | None = None
    _max_level: int = field(default=99, init=False)

    def __post_init__(self) -> None:
        if self.level is not None:
            self._max_level = LEVELS[self.level]
        unknown = [s for s in self.signatures if s not in SIGNATURES]
        if unknown:
            raise BundleError(f"unknown signature {', '.join(unknown)}: choose from {', '.join(SIGNATURES)}")

    def wants_file(self, log: Any) -> bool:
        if self.components and log.component not in self.components:
            return False
        if self.nodes and log.node not in self.nodes:
            return False
        if self.pods and log.pod not in self.pods:
            return False
        return True

    def wants(self, log: Any, ref: Any) -> bool:
        rec = ref.record
        level = _LEVEL_ALIASES.get(rec.level, rec.level)
        if LEVELS.get(level, 2) > self._max_level:
            return False
        t = rec.time if rec.time.tzinfo else rec.time.replace(tzinfo=dt.timezone.utc)
        if self.since is not None and t < self.since:
            return False
        if self.until is not None and t > self.until:
            return False
        fields = record_fields(rec)
        if self.workloads:
            names = {str(fields.get("src.workload", "")), str(fields.get("dst.workload", ""))}
            if not any(w == log.pod or any(n == w or n.startswith(w + "-") for n in names if n)
                       for w in self.workloads):
                return False
        if self.direction and str(fields.get("direction", "")) != self.direction:
            return False
        if self.signatures:
            if level not in ("error", "warn"):
                return False
            text = f"{rec.message} {fields.get('error', '')}"
            if not any(SIGNATURES[s].search(text) for s in self.signatures):
                return False
        if self.grep is not None and not self.grep.search(ref.text):
            return False
        return True


def record_fields(rec: Any) -> dict[str, Any]:
    if hasattr(rec, "fields"):
        return dict(rec.fields)
    return dict(getattr(rec, "labels", ()))


def _stream(model: Any, log: Any, flt: LogFilter, index: int) -> Iterator[tuple[dt.datetime, int, int, Any, Any]]:
    for ref in model.log_records(log):
        if ref.record is None or not flt.wants(log, ref):
            continue
        t = ref.record.time if ref.record.time.tzinfo else ref.record.time.replace(tzinfo=dt.timezone.utc)
        yield (t, index, ref.line, log, ref)


def merged(model: Any, flt: LogFilter) -> Iterator[tuple[Any, Any]]:
    """``(LogFile, LogRecordRef)`` of every matching record of every matching file, in time order (ties: file
    path order, then line)."""
    files = [log for log in model.logs() if flt.wants_file(log)]
    streams = [_stream(model, log, flt, i) for i, log in enumerate(files)]
    for _t, _i, _line, log, ref in heapq.merge(*streams, key=lambda item: (item[0], item[1], item[2])):
        yield log, ref


def to_json(log: Any, ref: Any) -> dict[str, Any]:
    rec = ref.record
    out: dict[str, Any] = {
        "time": rec.time.isoformat().replace("+00:00", "Z") if rec.time.tzinfo else rec.time.isoformat() + "Z",
        "level": rec.level,
        "component": log.component,
        "node": log.node,
        "pod": log.pod,
        "path": ref.path,
        "line": ref.line,
    }
    if hasattr(rec, "target"):
        out["target"] = rec.target
    else:
        out["scope"] = rec.scope
    out["message"] = rec.message
    out["fields"] = record_fields(rec)
    return out


def prefix(log: Any) -> str:
    return f"[{log.component}/{log.pod}]"


def render_text(items: Iterable[tuple[Any, Any]]) -> Iterator[str]:
    for log, ref in items:
        yield f"{prefix(log)} {ref.text}"
