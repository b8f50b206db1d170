"""The size budget (``--max-size``): what has to go, goes by priority, and the manifest records it.

Order of sacrifice: debug and trace log lines, then info lines, oldest first, across every log. Warnings,
errors and configuration (dumps, istiod views, Kubernetes objects) are never cut. Only when the logs hold
nothing more to give are the metrics dropped; if the archive is still too big after that, the caller is
told (it cannot be made smaller without losing configuration).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from bundler import layout
from bundler.collect.engine import Outcome

# The level of a line, for the three formats a bundle's logs use: ztunnel plain (tab-separated), the JSON
# formats ("level":"info") and istio's Go console encoder (also tab-separated).
_LEVEL = re.compile(rb'^\S+\t(error|warn|info|debug|trace)\t|"level":"(error|warn|warning|info|debug|trace)"')
DROPPABLE = {b"info", b"debug", b"trace"}
LOG_KINDS = (layout.KIND_ZTUNNEL_LOG, layout.KIND_ISTIOD_LOG, layout.KIND_CNI_LOG)


def _levels(path: Path) -> list[tuple[int, bool, int]]:
    """(offset, droppable, length) for each line; a line without a level goes with the line before it."""
    out = []
    droppable = False
    offset = 0
    with open(path, "rb") as fh:
        for line in fh:
            match = _LEVEL.search(line[:200])
            if match:
                level = match.group(1) or match.group(2)
                droppable = level in DROPPABLE
            out.append((offset, droppable, len(line)))
            offset += len(line)
    return out


def droppable_bytes(outcomes: list[Outcome]) -> int:
    return sum(length for o in _logs(outcomes) for _, drop, length in _levels(o.spool) if drop)  # type: ignore[arg-type]


def _logs(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.task.kind in LOG_KINDS and o.status in ("ok", "truncated") and o.spool]


def trim_logs(outcomes: list[Outcome], drop_bytes: int) -> int:
    """Drop about ``drop_bytes`` of droppable lines, oldest first within each log, spread over the logs in
    proportion to what each can give. Returns the bytes dropped."""
    logs = _logs(outcomes)
    plans = []
    total = 0
    for o in logs:
        lines = _levels(o.spool)  # type: ignore[arg-type]
        available = sum(length for _, drop, length in lines if drop)
        plans.append((o, lines, available))
        total += available
    if total == 0:
        return 0
    dropped_total = 0
    for o, lines, available in plans:
        share = min(available, -(-drop_bytes * available // total))
        if share <= 0:
            continue
        dropped = dropped_lines = 0
        tmp = o.spool.with_suffix(".trim")  # type: ignore[union-attr]
        with open(o.spool, "rb") as src, open(tmp, "wb") as dst:  # type: ignore[arg-type]
            for offset, drop, length in lines:
                src.seek(offset)
                data = src.read(length)
                if drop and dropped < share:
                    dropped += length
                    dropped_lines += 1
                    continue
                dst.write(data)
        os.replace(tmp, o.spool)  # type: ignore[arg-type]
        dropped_total += dropped
        o.status = "truncated"
        note = o.extra.setdefault("truncation", {})
        note["budgetDroppedLines"] = note.get("budgetDroppedLines", 0) + dropped_lines
        note["budgetDroppedBytes"] = note.get("budgetDroppedBytes", 0) + dropped
        note["dropped"] = "oldest info, debug and trace lines (size budget)"
        o.reason = "size budget: dropped the oldest info-level lines" + (f"; {o.reason}" if o.reason else "")
        o.size = o.spool.stat().st_size  # type: ignore[union-attr]
    return dropped_total


def drop_metrics(outcomes: list[Outcome]) -> bool:
    dropped = False
    for o in outcomes:
        if o.task.kind == layout.KIND_ZTUNNEL_METRICS and o.status == "ok" and o.spool:
            o.status, o.reason, o.size = "skipped", "size budget: dropped after every droppable log line", 0
            o.spool = None
            dropped = True
    return dropped
