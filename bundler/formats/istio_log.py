"""istio Go component log lines (istiod, istio-cni, istioctl): render and parse (formats.md §7.3).

istio's ``pkg/log`` uses zap with these encoder settings: time ``2006-01-02T15:04:05.000000Z`` (UTC, six fraction
digits), lowercase level, the scope as the logger name, the message under ``msg``.

* **plain** (zap console encoder): ``<ts>\\t<level>\\t<scope>\\t<msg>``. The default scope has an empty name and zap
  leaves the column out: ``<ts>\\t<level>\\t<msg>`` (see the upstream sample ``format_txt.log``). Labels
  (``WithLabels``) are appended to the message as ``\\tk=v k=v`` with the values printed by ``fmt.Sprint`` (unquoted).
* **JSON** (``--log_as_json``): ``{"level":..,"time":..,"scope":..,"msg":..,<labels>}``, compact, in that order;
  ``scope`` is left out for the default scope (sample ``format_json.log``).

:func:`parse_line` never raises. Round trips are lossless except where the plain format is ambiguous:

* a message cannot contain a tab or a line break, and a label value cannot contain a tab, a line break or
  ``" <ident>="``;
* with the default (empty) scope and labels, a one-word message (no spaces, looks like a scope name) is read as the
  scope: ``<ts>\\tinfo\\tstarting\\tk=v`` parses as scope ``starting``, message ``k=v``. Real istio lines almost always
  have a scope, and the default-scope lines seen upstream have no labels;
* a ``caller`` column (``--log_caller``, e.g. ``nodeagent/net_linux.go:115``) is recognised and dropped.

JSON labels are kept as strings (a non-string label value is stored as its compact JSON text); the keys ``caller``
and ``stack`` are dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

from bundler.formats.ztunnel_log import format_timestamp, parse_timestamp

__all__ = ["LEVELS", "IstioLogRecord", "parse_line", "render_json", "render_plain"]

LEVELS: tuple[str, ...] = ("debug", "info", "warn", "error", "dpanic", "panic", "fatal")
"""zap's lowercase level names (istio logs ``debug``…``fatal``)."""


@dataclass(frozen=True)
class IstioLogRecord:
    """One istio Go log line.

    Attributes:
        time: UTC timestamp (microsecond precision).
        level: one of :data:`LEVELS`.
        scope: the log scope (``ads``, ``cni-agent``, ``serverca``…); ``""`` for the default scope.
        message: the message, without the labels.
        labels: ``WithLabels`` key/value pairs in order.
    """

    time: datetime
    level: str
    scope: str
    message: str
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def label_map(self) -> dict[str, str]:
        """The labels as a dict."""
        return dict(self.labels)


def render_plain(rec: IstioLogRecord) -> str:
    """One line (without the newline) as istio's console encoder writes it."""
    msg = rec.message
    if rec.labels:
        msg += "\t" + " ".join(f"{k}={v}" for k, v in rec.labels)
    head = f"{format_timestamp(rec.time)}\t{rec.level}\t"
    return head + (f"{rec.scope}\t{msg}" if rec.scope else msg)


_ZAP_ESCAPES = {i: f"\\u{i:04x}" for i in range(0x20)}
_ZAP_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord('"'): '\\"', ord("\\"): "\\\\"})


def _zap_str(s: str) -> str:
    # zap's JSON encoder escapes \\ and ", \n \r \t by name and other bytes < 0x20 as \u00xx (so \b and \f too).
    return '"' + s.translate(_ZAP_ESCAPES) + '"'


def render_json(rec: IstioLogRecord) -> str:
    """One line (without the newline) as istio's JSON encoder writes it (``--log_as_json``)."""
    parts = ['"level":' + _zap_str(rec.level), '"time":' + _zap_str(format_timestamp(rec.time))]
    if rec.scope:
        parts.append('"scope":' + _zap_str(rec.scope))
    parts.append('"msg":' + _zap_str(rec.message))
    parts.extend(_zap_str(k) + ":" + _zap_str(v) for k, v in rec.labels)
    return "{" + ",".join(parts) + "}"


_SCOPE_RE = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_CALLER_RE = re.compile(r"[\w./\-]{1,256}\.go:[0-9]{1,9}")
_LABEL_START_RE = re.compile(r"[A-Za-z_][\w.\-]*=")
_LABEL_SPLIT_RE = re.compile(r" (?=[A-Za-z_][\w.\-]*=)")


def _parse_labels(text: str) -> tuple[tuple[str, str], ...]:
    out = []
    for token in _LABEL_SPLIT_RE.split(text):
        key, _, value = token.partition("=")
        out.append((key, value))
    return tuple(out)


def _parse_plain(line: str) -> IstioLogRecord | None:
    parts = line.split("\t")
    if len(parts) < 3:
        return None
    time = parse_timestamp(parts[0])
    level = parts[1]
    if time is None or level not in LEVELS:
        return None
    rest = parts[2:]
    scope = ""
    if len(rest) >= 2 and _SCOPE_RE.fullmatch(rest[0]):
        scope = rest[0]
        rest = rest[1:]
    if len(rest) >= 2 and _CALLER_RE.fullmatch(rest[0]):
        rest = rest[1:]
    labels: tuple[tuple[str, str], ...] = ()
    if len(rest) >= 2 and _LABEL_START_RE.match(rest[-1]):
        labels = _parse_labels(rest[-1])
        rest = rest[:-1]
    return IstioLogRecord(time, level, scope, "\t".join(rest), labels)


def _label_text(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _parse_json(line: str) -> IstioLogRecord | None:
    obj = json.loads(line)
    if not isinstance(obj, dict):
        return None
    level, ts = obj.get("level"), obj.get("time")
    if not isinstance(level, str) or not isinstance(ts, str):
        return None
    time = parse_timestamp(ts)
    if time is None or level.lower() not in LEVELS:
        return None
    scope = obj.get("scope", "")
    msg = obj.get("msg", "")
    labels = tuple(
        (k, _label_text(v)) for k, v in obj.items() if k not in ("level", "time", "scope", "msg", "caller", "stack")
    )
    return IstioLogRecord(
        time,
        level.lower(),
        scope if isinstance(scope, str) else _label_text(scope),
        msg if isinstance(msg, str) else _label_text(msg),
        labels,
    )


def parse_line(line: str) -> IstioLogRecord | None:
    """Parse one istio log line (plain or JSON). ``None`` if it is not a log record. Never raises."""
    try:
        if not isinstance(line, str):
            return None
        if line.endswith("\n"):
            line = line[:-2] if line.endswith("\r\n") else line[:-1]
        if not line:
            return None
        if line[0] == "{":
            return _parse_json(line)
        return _parse_plain(line)
    except Exception:  # noqa: BLE001 - the contract is "never raises"
        return None
