"""ztunnel log lines: render them exactly as ztunnel writes them, and parse them back.

Three layouts exist (formats.md §5, failure-modes.md §0.4b and §6.1):

* **plain** (default since 1.22, ztunnel's ``IstioFormat``)::

      <ts>\\t<level>\\t<target>[:<span>{k=v ...}]*\\t<message>\\t<k=v k=v ...>

  The message is followed by a tab even when there are no ``k=v`` pairs (a trailing tab). String field values are
  Rust ``Debug``-quoted; fields recorded with ``%`` (Display), numbers and bools are unquoted.
* **JSON** (``LOG_FORMAT=json``): ``{"level":..,"time":..,"scope":<full target>,"message":..,<fields>,<span>:{..}}``,
  compact, in that key order.
* **legacy** (ztunnel <= 1.21, tracing's default layout): ``<ts>  WARN xds{id=10}: ztunnel::xds::client: <message>``.
  Only parsed, best effort: level, spans, target and the rest of the line as the message (fields are not split out).

:func:`parse_line` never raises and runs in linear time on any input, including multi-megabyte lines.

Lossless round trips (``parse_line(render_plain(r)) == r`` and ``parse_line(render_json(r)) == r``) hold for records
whose parts are representable in the format; the normalisations are:

* ``time`` is UTC with microsecond precision; extra fraction digits on input are truncated.
* plain: a value of a :data:`DISPLAY_KEYS` key (or a :class:`Display` value) is written without quotes, so it parses
  back as ``str`` only if it has no space, tab or line break, and does not start with ``"``.
  Unquoted values of other keys are typed by their text: ``true``/``false`` -> bool, ``-?\\d+`` -> int, Rust float
  syntax -> float, anything else -> str.
* plain: the target and span texts cannot contain tabs, and a span field's raw value cannot contain
  ``" <ident>="`` or unbalanced braces or quotes.
* JSON: a span value that is a Debug-quoted string (``"ns/name"``) is written as the JSON string without the quotes,
  as ztunnel does, so it parses back unquoted; integer-looking and ``true``/``false`` span values become JSON numbers
  and bools. Non-finite floats become ``null`` (serde_json does the same) and parse back as ``None``.
* JSON: field keys must not repeat and must not be ``level``, ``time``, ``scope``, ``message`` or a span name.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

__all__ = [
    "ACCESS_FIELD_ORDER",
    "DISPLAY_KEYS",
    "EXPLICIT_TARGETS",
    "EXTERNAL_TARGET_PREFIXES",
    "LEVELS",
    "Display",
    "ZtunnelLogRecord",
    "access_fields",
    "format_duration_ms",
    "format_timestamp",
    "full_target",
    "parse_line",
    "parse_timestamp",
    "render_json",
    "render_plain",
    "rust_debug_str",
    "rust_float",
    "short_target",
    "unescape_rust_debug",
]

LEVELS: tuple[str, ...] = ("error", "warn", "info", "debug", "trace")
"""ztunnel log levels, lowercase as written in the plain and JSON formats (formats.md §5.1)."""

DISPLAY_KEYS: frozenset[str] = frozenset({"src.addr", "dst.addr", "dst.hbone_addr"})
"""Access-log fields that ztunnel records with ``%`` (Display), so the plain format writes them **unquoted**.

formats.md §5.1 ("src.addr, dst.addr, dst.hbone_addr are Display -> unquoted") and §5.3
(``Z:src/proxy/metrics.rs:782`` records ``dst.hbone_addr`` with ``display``). Every other ``str`` field is
Debug-quoted (all string fields of the access log are quoted since 1.23). The istio.io docs show ``dst.hbone_addr``
quoted; :func:`parse_line` accepts both. Use :class:`Display` for other Display-recorded values (``address=``).
"""

EXPLICIT_TARGETS: frozenset[str] = frozenset({"access", "dns"})
"""Targets that ztunnel sets explicitly (``target: "access"``): they carry no ``ztunnel::`` prefix in JSON ``scope``."""

EXTERNAL_TARGET_PREFIXES: tuple[str, ...] = (
    "hickory_", "h2", "hyper", "rustls", "tokio", "tonic", "tower", "tracing", "log", "kube", "mio", "want",
)
"""First path segments of third-party crates whose events reach ztunnel's log (``hickory_proto::udp::...``).

Their target is not under ``ztunnel::``, so :func:`full_target` leaves it bare. ``hyper_util`` is ztunnel's own module
(``Z:src/hyper_util.rs``) and is special-cased.
"""

_OWN_MODULES_LOOKING_EXTERNAL = frozenset({"hyper_util"})

ACCESS_FIELD_ORDER: tuple[str, ...] = (
    "src.addr",
    "src.workload",
    "src.namespace",
    "src.identity",
    "src.cluster",
    "dst.addr",
    "dst.hbone_addr",
    "dst.service",
    "dst.workload",
    "dst.namespace",
    "dst.identity",
    "dst.cluster",
    "direction",
    "bytes_sent",
    "bytes_recv",
    "duration",
    "error",
)
"""Access-log fields in the order ztunnel writes them (formats.md §5.3, ``Z:src/proxy/metrics.rs:739-801``).

``src.cluster``/``dst.cluster`` exist only from 1.31; ``src.identity``/``dst.identity`` only with mTLS; ``error`` only
on failure. A field whose value is ``None`` is left out.
"""


class Display(str):
    """A ``str`` field value that ztunnel records with ``%`` (Display): rendered unquoted in the plain format.

    Keys in :data:`DISPLAY_KEYS` get this treatment automatically. It compares equal to the plain ``str`` that
    :func:`parse_line` returns.
    """

    __slots__ = ()


FieldValue = str | int | float | bool | None
SpanFields = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ZtunnelLogRecord:
    """One ztunnel log event.

    Attributes:
        time: UTC timestamp (microsecond precision).
        level: ``error``, ``warn``, ``info``, ``debug`` or ``trace``.
        target: short target as in the plain format: the module path without ``ztunnel::`` (``xds::client``), or an
            explicit target (``access``, ``dns``), or a third-party target (``hickory_proto::udp``).
        message: the event message (Display, never quoted).
        spans: enclosing spans from the root, ``(name, ((key, raw value text), ...))``; the raw value text is written
            verbatim in the plain format (``(("xds", (("id", "1"),)),)`` -> ``xds::client:xds{id=1}``).
        fields: the event's other fields in order; values ``str``, ``int``, ``float`` or ``bool``.
    """

    time: datetime
    level: str
    target: str
    message: str
    spans: tuple[tuple[str, SpanFields], ...] = ()
    fields: tuple[tuple[str, FieldValue], ...] = ()

    def field(self, key: str, default: FieldValue = None) -> FieldValue:
        """The value of the first field named ``key``, or ``default``."""
        for k, v in self.fields:
            if k == key:
                return v
        return default

    @property
    def field_map(self) -> dict[str, FieldValue]:
        """The fields as a dict (the last value wins if a key repeats)."""
        return dict(self.fields)


# ---------------------------------------------------------------------------------------------------------------------
# Timestamps

_TS_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,30}))?Z")


def format_timestamp(t: datetime) -> str:
    """``2024-05-04T09:59:05.028771Z``: RFC 3339, UTC, six fraction digits (tracing's ``SystemTime``; istio's Go log).

    A naive datetime is taken as UTC.
    """
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc)
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{t.microsecond:06d}Z"
    )


def parse_timestamp(text: str) -> datetime | None:
    """Parse ``YYYY-MM-DDTHH:MM:SS[.fraction]Z`` into an aware UTC datetime; ``None`` if it is not one."""
    if len(text) > 60:
        return None
    m = _TS_RE.fullmatch(text)
    if m is None:
        return None
    frac = m.group(7) or ""
    micro = int((frac + "000000")[:6])
    try:
        return datetime(
            int(m.group(1)), int(m.group(2)), int(m.group(3)),
            int(m.group(4)), int(m.group(5)), int(m.group(6)), micro, tzinfo=timezone.utc,
        )
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------------------------
# Rust Debug / Display value text


def _is_grapheme_extend(ch: str) -> bool:
    # Python has no Grapheme_Extend property; Mn and Me are nearly all of it (the rest are a few Mc marks and ZWNJ,
    # which is Cf and escaped anyway).
    return unicodedata.category(ch) in ("Mn", "Me")


_DEBUG_SIMPLE = {"\0": "\\0", "\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", '"': '\\"'}


def rust_debug_str(s: str) -> str:
    """``format!("{:?}", s)`` for a Rust ``&str``: double-quoted, with Rust's escapes.

    ``\\0 \\t \\r \\n \\\\ \\"`` are escaped by name; characters that are not printable (Unicode categories Cc,
    Cf, Cs, Co, Cn, Zl, Zp and Zs other than the space, the same set as Rust's ``is_printable`` and Python's
    ``str.isprintable``) and combining marks (Rust escapes Grapheme_Extend) become ``\\u{hex}``. A single quote is not
    escaped.
    """
    if s.isascii() and s.isprintable():
        if "\\" in s or '"' in s:
            s = s.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + s + '"'
    out = ['"']
    for ch in s:
        esc = _DEBUG_SIMPLE.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch.isascii():
            out.append(ch if ch.isprintable() else f"\\u{{{ord(ch):x}}}")
        elif not ch.isprintable() or _is_grapheme_extend(ch):
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_UNESCAPE_RE = re.compile(r"\\(?:u\{([0-9a-fA-F]{1,6})\}|(.))", re.S)
_UNESCAPE_NAMED = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'"}


def _unescape_match(m: re.Match[str]) -> str:
    hexdigits = m.group(1)
    if hexdigits is not None:
        cp = int(hexdigits, 16)
        return chr(cp) if cp <= 0x10FFFF else m.group(0)
    return _UNESCAPE_NAMED.get(m.group(2), m.group(0))


def unescape_rust_debug(body: str) -> str:
    """Undo :func:`rust_debug_str` on the text between the quotes. Unknown escapes are kept as written."""
    if "\\" not in body:
        return body
    return _UNESCAPE_RE.sub(_unescape_match, body)


def rust_float(x: float) -> str:
    """``format!("{:?}", x)`` for an ``f64``: shortest round-trip digits (``1.0``, ``1e16``, ``1.5e-7``, ``NaN``).

    Python's ``repr`` switches to exponent notation at the same thresholds as Rust (1e16 and 1e-4).
    """
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    r = repr(float(x))
    if "e" in r:
        mant, exp = r.split("e")
        return f"{mant}e{int(exp)}"
    return r


def format_duration_ms(ms: int) -> str:
    """The access log's ``duration`` value: ``"<ms>ms"`` (a string, so it is quoted in the plain format)."""
    return f"{int(ms)}ms"


def _plain_value(key: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return rust_float(value)
    if isinstance(value, Display) or (isinstance(value, str) and key in DISPLAY_KEYS):
        return str(value)
    if isinstance(value, str):
        return rust_debug_str(value)
    if value is None:
        return "None"
    return rust_debug_str(str(value))


# ---------------------------------------------------------------------------------------------------------------------
# Targets


def full_target(target: str) -> str:
    """The tracing target as it appears in JSON ``scope``: ``xds::client`` -> ``ztunnel::xds::client``.

    Explicit targets (:data:`EXPLICIT_TARGETS`), third-party crates (:data:`EXTERNAL_TARGET_PREFIXES`), the crate root
    ``ztunnel`` and targets that already start with ``ztunnel::`` are returned unchanged.
    """
    if not target or target == "ztunnel" or target.startswith("ztunnel::") or target in EXPLICIT_TARGETS:
        return target
    first = target.split("::", 1)[0]
    if first not in _OWN_MODULES_LOOKING_EXTERNAL and (
        first.startswith("hickory_") or first in EXTERNAL_TARGET_PREFIXES
    ):
        return target
    return "ztunnel::" + target


def short_target(target: str) -> str:
    """The target as the plain format writes it: the ``ztunnel::`` prefix removed (``Z:src/telemetry.rs``)."""
    return target[len("ztunnel::"):] if target.startswith("ztunnel::") else target


# ---------------------------------------------------------------------------------------------------------------------
# Rendering


def _render_spans(spans: Iterable[tuple[str, SpanFields]]) -> str:
    out = []
    for name, fields in spans:
        out.append(":" + name)
        if fields:
            out.append("{" + " ".join(f"{k}={v}" for k, v in fields) + "}")
    return "".join(out)


def render_plain(rec: ZtunnelLogRecord) -> str:
    """One line (without the newline) in ztunnel's plain format, byte for byte as ``IstioFormat`` writes it.

    ``<ts>\\t<level>\\t<target><spans>\\t<message>\\t<k=v k=v>``: the tab after the target is there because the message
    is itself a field, and the message is always followed by a tab.
    """
    fields = " ".join(f"{k}={_plain_value(k, v)}" for k, v in rec.fields)
    return (
        f"{format_timestamp(rec.time)}\t{rec.level}\t{rec.target}{_render_spans(rec.spans)}\t{rec.message}\t{fields}"
    )


def _json_str(s: str) -> str:
    # serde_json escapes exactly what json.dumps(ensure_ascii=False) escapes (", \\, \b \f \n \r \t, other < 0x20 as
    # \u00xx with lowercase hex) and leaves everything else, including DEL and U+2028, as UTF-8.
    return json.dumps(s, ensure_ascii=False)


def _json_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return rust_float(value) if math.isfinite(value) else "null"
    if value is None:
        return "null"
    return _json_str(str(value))


_CANON_INT_RE = re.compile(r"-?[0-9]{1,300}")


def _canonical_int(text: str) -> bool:
    if _CANON_INT_RE.fullmatch(text) is None:
        return False
    return str(int(text)) == text


def _span_json_value(raw: str) -> str:
    if raw in ("true", "false") or _canonical_int(raw):
        return raw
    if len(raw) >= 2 and raw[0] == '"' and _quoted_end(raw, 0, _QuoteCache()) == len(raw):
        return _json_str(unescape_rust_debug(raw[1:-1]))
    return _json_str(raw)


def render_json(rec: ZtunnelLogRecord) -> str:
    """One line (without the newline) in ztunnel's JSON format (``LOG_FORMAT=json``; formats.md §5.2).

    Compact, keys in the order ``level``, ``time``, ``scope`` (the full target), ``message``, the fields (dotted keys
    stay flat; numbers and bools stay JSON numbers and bools), then one object per span, root first.
    """
    parts = [
        '"level":' + _json_str(rec.level),
        '"time":' + _json_str(format_timestamp(rec.time)),
        '"scope":' + _json_str(full_target(rec.target)),
        '"message":' + _json_str(rec.message),
    ]
    parts.extend(_json_str(k) + ":" + _json_value(v) for k, v in rec.fields)
    for name, fields in rec.spans:
        inner = ",".join(_json_str(k) + ":" + _span_json_value(v) for k, v in fields)
        parts.append(_json_str(name) + ":{" + inner + "}")
    return "{" + ",".join(parts) + "}"


def access_fields(values: Mapping[str, FieldValue]) -> tuple[tuple[str, FieldValue], ...]:
    """Order access-log field values as ztunnel writes them (:data:`ACCESS_FIELD_ORDER`), leaving out ``None``.

    Raises:
        ValueError: a key is not an access-log field.
    """
    unknown = set(values) - set(ACCESS_FIELD_ORDER)
    if unknown:
        raise ValueError(f"not access-log fields: {', '.join(sorted(unknown))}")
    return tuple((k, values[k]) for k in ACCESS_FIELD_ORDER if values.get(k) is not None)


# ---------------------------------------------------------------------------------------------------------------------
# Scanning helpers (all linear time)

_QSTR_BODY_RE = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.S)


class _QuoteCache:
    """Remembers the last quoted-string scan so overlapping scans cost nothing (keeps the tokenizers linear).

    If a scan from ``start`` ended at ``end`` (or ran off the end), a scan from any ``"`` strictly inside that range
    was an escaped quote of that scan; starting there, the scanner is in the same state one character later, so it
    ends at the same place.
    """

    __slots__ = ("start", "end")

    def __init__(self) -> None:
        self.start = -1
        self.end = -1


def _quoted_end(s: str, i: int, cache: _QuoteCache) -> int:
    """``s[i] == '"'``: index just past the closing quote, or -1 if the string is unterminated."""
    if cache.start >= 0 and cache.start < i and (cache.end == -1 or i < cache.end - 1):
        return cache.end
    m = _QSTR_BODY_RE.match(s, i + 1)
    e = m.end()
    end = e + 1 if e < len(s) and s[e] == '"' else -1
    cache.start, cache.end = i, end
    return end


_KEY_RE = re.compile(r"([A-Za-z_][\w.\-]*)=")
_NEXT_KEY_RE = re.compile(r" (?=[A-Za-z_][\w.\-]*=)")


def _tokenize_kv(s: str) -> list[tuple[str, str, bool]]:
    """Split ``k=v k="quoted" ...`` into ``(key, value text, quoted)``; the quoted value text keeps its escapes.

    An unquoted value runs to the next ``" <ident>="``, so Display values with spaces survive. Text that is not a
    ``k=v`` pair is skipped.
    """
    out: list[tuple[str, str, bool]] = []
    cache = _QuoteCache()
    n = len(s)
    pos = 0
    while pos < n:
        if s[pos] == " ":
            pos += 1
            continue
        m = _KEY_RE.match(s, pos)
        if m is None:
            nxt = _NEXT_KEY_RE.search(s, pos)
            pos = n if nxt is None else nxt.start()
            continue
        key = m.group(1)
        vpos = m.end()
        if vpos < n and s[vpos] == '"':
            end = _quoted_end(s, vpos, cache)
            if end != -1 and (end == n or s[end] == " "):
                out.append((key, s[vpos + 1 : end - 1], True))
                pos = end
                continue
        nxt = _NEXT_KEY_RE.search(s, vpos)
        end = n if nxt is None else nxt.start()
        out.append((key, s[vpos:end].rstrip(" "), False))
        pos = end
    return out


_INT_RE = re.compile(r"-?[0-9]+")
_FLOAT_RE = re.compile(r"-?[0-9]+\.[0-9]+(?:e-?[0-9]+)?|-?[0-9]+e-?[0-9]+|NaN|-?inf")


def _typed_unquoted(key: str, text: str) -> FieldValue:
    if key in DISPLAY_KEYS:
        return text
    if text == "true":
        return True
    if text == "false":
        return False
    if len(text) <= 4000:
        if _INT_RE.fullmatch(text):
            return int(text)
        if _FLOAT_RE.fullmatch(text):
            return float(text)
    return text


def _parse_fields(s: str) -> tuple[tuple[str, FieldValue], ...]:
    out: list[tuple[str, FieldValue]] = []
    for key, text, quoted in _tokenize_kv(s):
        out.append((key, unescape_rust_debug(text) if quoted else _typed_unquoted(key, text)))
    return tuple(out)


def _parse_span_fields(s: str) -> SpanFields:
    return tuple((k, f'"{text}"' if quoted else text) for k, text, quoted in _tokenize_kv(s))


_SPAN_NAME_RE = re.compile(r"[^:{}\s]+")
_BRACE_OR_QUOTE_RE = re.compile(r'[{}"]')


def _brace_end(s: str, i: int, cache: _QuoteCache) -> int:
    """``s[i] == '{'``: index just past the matching ``}`` (quotes respected), or -1."""
    depth = 0
    n = len(s)
    j = i
    while j < n:
        m = _BRACE_OR_QUOTE_RE.search(s, j)
        if m is None:
            return -1
        k = m.start()
        c = s[k]
        if c == '"':
            e = _quoted_end(s, k, cache)
            if e == -1:
                return -1
            j = e
            continue
        depth += 1 if c == "{" else -1
        j = k + 1
        if depth == 0:
            return j
    return -1


def _scan_span_chain(s: str, pos: int) -> tuple[list[tuple[str, SpanFields]], int]:
    """Parse ``name{fields}:name:name{fields}`` from ``pos``; returns the spans and the index after the last one.

    Separators are single colons; ``::`` ends the chain.
    """
    spans: list[tuple[str, SpanFields]] = []
    cache = _QuoteCache()
    n = len(s)
    while True:
        m = _SPAN_NAME_RE.match(s, pos)
        if m is None:
            return spans, pos
        name = m.group(0)
        j = m.end()
        fields: SpanFields = ()
        if j < n and s[j] == "{":
            e = _brace_end(s, j, cache)
            if e == -1:
                return spans, pos
            fields = _parse_span_fields(s[j + 1 : e - 1])
            j = e
        spans.append((name, fields))
        pos = j
        if j + 1 < n and s[j] == ":" and s[j + 1] not in ": ":
            pos = j + 1
            continue
        return spans, pos


def _split_target(seg: str) -> tuple[str, tuple[tuple[str, SpanFields], ...]]:
    """``proxy::h2::client:proxy{wl=ns/pod}:outbound{id=1}`` -> target and spans."""
    i = 0
    n = len(seg)
    while True:
        i = seg.find(":", i)
        if i == -1:
            return seg, ()
        if i + 1 < n and seg[i + 1] == ":":
            i += 2
            continue
        break
    target = seg[:i]
    spans, end = _scan_span_chain(seg, i + 1)
    if end != n or not spans:
        return seg, ()  # not a well-formed span chain: keep the whole segment as the target
    return target, tuple(spans)


# ---------------------------------------------------------------------------------------------------------------------
# Parsing


def _parse_plain(line: str) -> ZtunnelLogRecord | None:
    t1 = line.find("\t", 0, 64)
    if t1 == -1:
        return None
    time = parse_timestamp(line[:t1])
    if time is None:
        return None
    t2 = line.find("\t", t1 + 1, t1 + 8)
    if t2 == -1:
        return None
    level = line[t1 + 1 : t2]
    if level not in LEVELS:
        return None
    t3 = line.find("\t", t2 + 1)
    if t3 == -1:
        target, spans = _split_target(line[t2 + 1 :])
        return ZtunnelLogRecord(time, level, target, "", spans)
    target, spans = _split_target(line[t2 + 1 : t3])
    rest = line[t3 + 1 :]
    last = rest.rfind("\t")
    if last == -1:
        # no trailing tab (trailing whitespace stripped by some tool): the rest is the message
        return ZtunnelLogRecord(time, level, target, rest, spans)
    return ZtunnelLogRecord(time, level, target, rest[:last], spans, _parse_fields(rest[last + 1 :]))


def _span_raw(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return rust_float(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _field_from_json(value: object) -> FieldValue:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _parse_json(line: str) -> ZtunnelLogRecord | None:
    obj = json.loads(line)
    if not isinstance(obj, dict):
        return None
    level, ts = obj.get("level"), obj.get("time")
    if not isinstance(level, str) or not isinstance(ts, str):
        return None
    level = level.lower()
    time = parse_timestamp(ts)
    if level not in LEVELS or time is None:
        return None
    scope = obj.get("scope", "")
    msg_key = "message" if "message" in obj else "msg" if "msg" in obj else ""
    message = obj.get(msg_key, "")
    fields: list[tuple[str, FieldValue]] = []
    spans: list[tuple[str, SpanFields]] = []
    for key, value in obj.items():
        if key in ("level", "time", "scope") or key == msg_key:
            continue
        if isinstance(value, dict):
            spans.append((key, tuple((k, _span_raw(v)) for k, v in value.items())))
        else:
            fields.append((key, _field_from_json(value)))
    return ZtunnelLogRecord(
        time,
        level,
        short_target(scope if isinstance(scope, str) else str(scope)),
        message if isinstance(message, str) else str(message),
        tuple(spans),
        tuple(fields),
    )


_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
_LEGACY_HEAD_RE = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,30})?Z) {1,8}(TRACE|DEBUG|INFO|WARN|ERROR) "
)
_MODULE_PATH_COLON_RE = re.compile(r"([A-Za-z_][\w\-]*(?:::[A-Za-z_][\w\-]*)*): ")


def _parse_legacy(line: str) -> ZtunnelLogRecord | None:
    if "\x1b" in line:
        line = _ANSI_RE.sub("", line)
    m = _LEGACY_HEAD_RE.match(line)
    if m is None:
        return None
    time = parse_timestamp(m.group(1))
    if time is None:
        return None
    level = m.group(2).lower()
    pos = m.end()
    spans, end = _scan_span_chain(line, pos)
    if spans and line.startswith(": ", end):
        tm = _MODULE_PATH_COLON_RE.match(line, end + 2)
        if tm is not None:
            return ZtunnelLogRecord(time, level, short_target(tm.group(1)), line[tm.end():], tuple(spans))
    tm = _MODULE_PATH_COLON_RE.match(line, pos)
    if tm is not None:
        return ZtunnelLogRecord(time, level, short_target(tm.group(1)), line[tm.end():])
    return ZtunnelLogRecord(time, level, "", line[pos:])


def parse_line(line: str) -> ZtunnelLogRecord | None:
    """Parse one ztunnel log line in the plain, JSON or legacy (<= 1.21) layout.

    A trailing ``\\n``/``\\r\\n`` is ignored. Values may be quoted or unquoted for any key. Returns ``None`` for
    anything that is not a log record (blank lines, continuation lines of multi-line messages, garbage). Never raises.
    """
    try:
        if not isinstance(line, str):
            return None
        if line.endswith("\n"):
            line = line[:-2] if line.endswith("\r\n") else line[:-1]
        if not line:
            return None
        if line[0] == "{":
            return _parse_json(line)
        return _parse_plain(line) or _parse_legacy(line)
    except Exception:  # noqa: BLE001 - the contract is "never raises"; a bad line is simply not a record
        return None
