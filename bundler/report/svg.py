"""Geometry of the report's inline SVG charts.

These functions only compute numbers and plain-text labels; the SVG elements are written by the template
(``templates/_charts.html.j2``) with autoescaping on, so that no label taken from a bundle is ever inserted
as markup. Coordinates are in the SVG's user units (the ``viewBox``); the chart scales to the page width.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

EXPIRING_WITHIN = timedelta(hours=24)

# Tick steps tried for a time axis, smallest first.
_TIME_STEPS = [
    timedelta(minutes=m) for m in (1, 5, 15, 30)
] + [timedelta(hours=h) for h in (1, 2, 3, 6, 12)] + [timedelta(days=d) for d in (1, 2, 7, 14, 30, 91, 182, 365, 730, 1826, 3652)]


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 string as an aware datetime (UTC when no offset), or None when absent or unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text[-1:] in "zZ":
        text = text[:-1] + "+00:00"
    # Go and Rust print up to nanoseconds; datetime keeps microseconds.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:min(digits, 6)].ljust(6, '0')}{rest[digits:]}" if digits else head + rest
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def format_time(value: datetime | None, *, seconds: bool = False) -> str:
    if value is None:
        return ""
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def format_duration(delta: timedelta) -> str:
    """A short human duration: "3d 4h", "5h 12m", "42m", "12s"."""
    total = int(abs(delta.total_seconds()))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def relative(moment: datetime | None, now: datetime | None) -> str:
    if moment is None or now is None:
        return ""
    delta = moment - now
    if abs(delta) < timedelta(seconds=1):
        return "now"
    return f"in {format_duration(delta)}" if delta > timedelta(0) else f"{format_duration(delta)} ago"


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis in the middle (both ends of names matter)."""
    if len(text) <= limit:
        return text
    keep = limit - 1
    head = (keep + 1) // 2
    return text[:head] + "\u2026" + text[len(text) - (keep - head):]


def _time_ticks(start: datetime, end: datetime, max_ticks: int = 7) -> tuple[list[datetime], timedelta]:
    span = end - start
    step = _TIME_STEPS[-1]
    for candidate in _TIME_STEPS:
        if span / candidate <= max_ticks:
            step = candidate
            break
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    first = epoch + step * math.ceil((start - epoch) / step)
    ticks = []
    tick = first
    while tick <= end and len(ticks) < 64:
        ticks.append(tick)
        tick += step
    return ticks, step


def _tick_label(tick: datetime, step: timedelta) -> str:
    tick = tick.astimezone(timezone.utc)
    if step >= timedelta(days=1):
        return tick.strftime("%Y-%m-%d")
    if tick.hour == 0 and tick.minute == 0:
        return tick.strftime("%m-%d %H:%M")
    return tick.strftime("%H:%M")


def short_identity(identity: str) -> str:
    """``spiffe://cluster.local/ns/a/sa/b`` -> ``ns/a/sa/b`` (the trust domain is the same for nearly all)."""
    if identity.startswith("spiffe://"):
        rest = identity[len("spiffe://"):]
        _, slash, path = rest.partition("/")
        if slash and path:
            return path
    return identity


def certificate_state(cert: dict[str, Any], now: datetime | None) -> str:
    """expired | expiring (within 24h) | pending (not yet valid) | valid | unknown (no dates or no "now")."""
    expiration = cert.get("expirationTime")
    valid_from = cert.get("validFromTime")
    if expiration is None or now is None:
        state = str(cert.get("state") or "").lower()
        if "expired" in state:
            return "expired"
        return "unknown"
    if expiration <= now:
        return "expired"
    if valid_from is not None and valid_from > now:
        return "pending"
    if expiration - now <= EXPIRING_WITHIN:
        return "expiring"
    return "valid"


def certificate_timeline(certs: list[dict[str, Any]], now: datetime | None, *, width: int = 1000) -> dict[str, Any]:
    """Rows of a horizontal timeline, one bar per certificate from validFrom to expiration.

    ``certs`` are normalised entries (see ``html._certificates``) with ``validFromTime``/``expirationTime``
    datetimes and a ``status`` from :func:`certificate_state`. Returns the chart geometry: ``width``,
    ``height``, ``ticks`` [{x, label}], ``now`` {x, label} or None, ``rows`` [{y, label, tooltip, status,
    bar {x, w} or None, note}], and the plot area ``x0``/``x1``/``top``/``bottom``.
    """
    row_h, top, label_w, pad = 20, 34, 330, 12
    x0, x1 = label_w + pad, width - pad
    moments = [c[k] for c in certs for k in ("validFromTime", "expirationTime") if c.get(k) is not None]
    if now is not None:
        moments.append(now)
    if moments:
        start, end = min(moments), max(moments)
    else:
        start = end = datetime(1970, 1, 1, tzinfo=timezone.utc)
    if end - start < timedelta(hours=1):
        middle = start + (end - start) / 2
        start, end = middle - timedelta(minutes=30), middle + timedelta(minutes=30)
    margin = (end - start) * 0.02
    start, end = start - margin, end + margin
    span = (end - start).total_seconds()

    def x_of(moment: datetime) -> float:
        return round(x0 + (x1 - x0) * (moment - start).total_seconds() / span, 1)

    rows = []
    for index, cert in enumerate(certs):
        y = top + index * row_h
        valid_from, expiration = cert.get("validFromTime"), cert.get("expirationTime")
        bar = None
        note = ""
        if valid_from is not None and expiration is not None:
            left, right = x_of(min(valid_from, expiration)), x_of(max(valid_from, expiration))
            bar = {"x": left, "w": max(round(right - left, 1), 2.0)}
        elif expiration is not None:
            # No start: a short stub ending at the expiration, so its end stays readable.
            right = x_of(expiration)
            bar = {"x": max(x0, right - 6), "w": max(min(6.0, right - x0), 2.0)}
        else:
            note = "no validity dates" + (f" ({cert['state']})" if cert.get("state") else "")
        label = shorten(f"{short_identity(cert['identity'])} \u00b7 {cert['node'] or cert['ztunnel']}", 52)
        rows.append({"y": y, "label": label, "tooltip": cert["tooltip"], "status": cert["status"], "bar": bar,
                     "note": note, "text_y": y + 14})

    ticks, step = _time_ticks(start, end)
    height = top + max(len(rows), 1) * row_h + 8
    return {
        "width": width,
        "height": height,
        "x0": x0,
        "x1": x1,
        "top": top - 4,
        "bottom": height - 4,
        "label_x": label_w,
        "ticks": [{"x": x_of(t), "label": _tick_label(t, step)} for t in ticks],
        "now": {"x": x_of(now), "label": "collected " + format_time(now)} if now is not None else None,
        "rows": rows,
    }


def load_balancing_chart(service: dict[str, Any], *, width: int = 1000) -> dict[str, Any]:
    """Horizontal bars (connections per endpoint) with a vertical line at the round-robin expectation.

    ``service`` is a normalised loadBalancing entry (``html._load_balancing``). Bars that deviate from the
    expectation by more than half of it are flagged ``off`` (drawn amber) when the service is skewed.
    """
    row_h, top, label_w, pad, value_w = 22, 24, 330, 12, 70
    x0, x1 = label_w + pad, width - pad - value_w
    endpoints = service["endpoints"]
    expected = service["expected"]
    if expected is not None and expected < 0:
        expected = None
    peak = max([e["connections"] for e in endpoints] + [expected or 0, 1])
    scale = (x1 - x0) / (peak * 1.05)
    rows = []
    for index, endpoint in enumerate(endpoints):
        y = top + index * row_h
        connections = endpoint["connections"]
        w = round(connections * scale, 1)
        off = bool(service["skewed"] and expected and abs(connections - expected) > 0.5 * expected)
        label = shorten(endpoint["name"] + (f" \u00b7 {endpoint['node']}" if endpoint["node"] else ""), 52)
        tooltip = f"{endpoint['name']} (node {endpoint['node'] or '?'}): {connections} connections"
        if expected is not None:
            tooltip += f", expected {expected:g}"
        rows.append({"y": y + 3, "h": row_h - 6, "text_y": y + 15, "w": max(w, 1.0) if connections else 0.0,
                     "label": label, "value": connections, "value_x": round(x0 + w + 6, 1), "off": off,
                     "tooltip": tooltip})
    height = top + max(len(rows), 1) * row_h + 6
    expected_line = None
    if expected is not None:
        x = round(x0 + expected * scale, 1)
        expected_line = {"x": x, "label": f"expected {expected:g}", "top": top - 6, "bottom": height - 2}
    return {"width": width, "height": height, "x0": x0, "x1": x1, "top": top - 2, "bottom": height - 4,
            "label_x": label_w, "rows": rows, "expected": expected_line}
