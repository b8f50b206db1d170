"""The collection engine: runs the plan's tasks on a bounded pool with retries, a per-request timeout and a
global deadline, spools each artifact to disk, redacts it, and writes the archive in layout order.

It always leaves a usable archive: on the deadline, SIGINT or SIGTERM it stops waiting, records every
artifact not collected with its reason, and finalises what it has.
"""

from __future__ import annotations

import os
import queue
import random
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from bundler import layout
from bundler.collect.kube import FetchError, Kube
from bundler.collect.tasks import Task
from bundler.manifest import rfc3339

MAX_ATTEMPTS = 4
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0


@dataclass
class Outcome:
    task: Task
    status: str  # ok | truncated | error | skipped
    reason: str | None = None
    spool: Path | None = None
    size: int = 0
    started: str | None = None
    finished: str | None = None
    attempts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Stop:
    """Why the engine stopped early, if it did: set by the deadline or a signal; read by every worker."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()


def _now() -> str:
    return rfc3339(datetime.now(timezone.utc))


class Engine:
    def __init__(self, kube: Kube, tasks: list[Task], spool_dir: Path, workers: int, deadline: float | None,
                 redact: bool = True, progress=None, sleep=time.sleep) -> None:
        self.kube = kube
        self.tasks = tasks
        self.spool_dir = spool_dir
        self.workers = max(1, workers)
        self.deadline_at = time.monotonic() + deadline if deadline else None
        self.deadline = deadline
        self.redact = redact
        self.progress = progress
        self.stop = Stop()
        self.sleep = sleep
        self.outcomes: dict[str, Outcome] = {}
        self._lock = threading.Lock()
        self._rng = random.Random()

    # --- one task --------------------------------------------------------------------------------------------

    def _remaining(self) -> float | None:
        return None if self.deadline_at is None else self.deadline_at - time.monotonic()

    def _run(self, task: Task, index: int) -> Outcome:
        outcome = Outcome(task, "error", started=_now())
        spool = self.spool_dir / f"{index:06d}"
        last: FetchError | None = None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if self.stop.event.is_set():
                outcome.status, outcome.reason = "skipped", f"not collected: {self.stop.reason}"
                break
            remaining = self._remaining()
            timeout = task.timeout if remaining is None else min(task.timeout, max(0.5, remaining))
            outcome.attempts = attempt
            try:
                with open(spool, "w+b") as sink:
                    fetched, extra = task.run(self.kube, sink, timeout)
                outcome.extra.update(extra)
                outcome.spool, outcome.size = spool, fetched.size
                outcome.status = "truncated" if fetched.truncated else "ok"
                if fetched.truncated:
                    outcome.reason = f"cut at {task.max_bytes} bytes"
                last = None
                break
            except FetchError as exc:
                last = exc
                if task.missing_ok and exc.status in (400, 404):
                    outcome.status, outcome.reason = "skipped", exc.reason
                    last = None
                    break
                if not exc.retryable or attempt == MAX_ATTEMPTS:
                    break
                delay = exc.retry_after if exc.retry_after is not None else min(
                    BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)) * (0.5 + self._rng.random())
                remaining = self._remaining()
                if remaining is not None and delay >= remaining:
                    break
                if self.stop.event.wait(delay):
                    continue
            except Exception as exc:  # a bug or an unexpected client error must not lose the other artifacts
                last = FetchError(f"{type(exc).__name__}: {exc}")
                break
        if last is not None:
            outcome.status = "error"
            outcome.reason = last.reason + (f" (after {outcome.attempts} attempts)" if outcome.attempts > 1 else "")
        if outcome.status in ("ok", "truncated"):
            self._post_process(outcome)
        elif spool.exists():
            spool.unlink()
        outcome.finished = _now()
        return outcome

    def _post_process(self, outcome: Outcome) -> None:
        """Keep the newest bytes of an over-long log, then redact."""
        task, spool = outcome.task, outcome.spool
        assert spool is not None
        kind = task.kind
        if kind in (layout.KIND_ZTUNNEL_LOG, layout.KIND_ISTIOD_LOG, layout.KIND_CNI_LOG):
            limit = task.max_bytes
            if limit is not None and outcome.size > limit:
                _keep_tail(spool, limit)
                outcome.status = "truncated"
                outcome.reason = f"kept the newest {limit} of {outcome.size} bytes"
                outcome.extra["truncation"] = {"originalBytes": outcome.size, "keptBytes": spool.stat().st_size,
                                               "kept": "newest lines"}
            if self.redact:
                self._redact_text(outcome)
        elif self.redact and kind in (layout.KIND_K8S_LIST, layout.KIND_K8S_OBJECT):
            self._redact_json(outcome)
        elif self.redact:
            # Everything else too (dumps, istiod views, metrics): clean input costs one scan and keeps its bytes.
            self._redact_text(outcome)
        outcome.size = spool.stat().st_size

    def _redact_text(self, outcome: Outcome) -> None:
        from bundler.redact import redact_bytes

        spool = outcome.spool
        assert spool is not None
        data = spool.read_bytes()
        redacted, counts = redact_bytes(data)
        if counts:
            spool.write_bytes(redacted)
            outcome.extra["redactions"] = dict(sorted(counts.items()))

    def _redact_json(self, outcome: Outcome) -> None:
        from bundler.redact import redact_kubernetes_list, redact_kubernetes_object

        spool = outcome.spool
        assert spool is not None
        try:
            document = orjson.loads(spool.read_bytes())
        except orjson.JSONDecodeError:
            return
        if not isinstance(document, dict):
            counts: Counter[str] = Counter()
        elif "items" in document:
            counts = redact_kubernetes_list(document)
        else:
            counts = redact_kubernetes_object(document)
        if counts:
            # Only a change is re-serialised: an untouched document keeps the API server's bytes.
            spool.write_bytes(orjson.dumps(document))
            outcome.extra["redactions"] = dict(sorted(counts.items()))

    # --- the pool --------------------------------------------------------------------------------------------
    # Daemon threads, not a ThreadPoolExecutor: a request that hangs past the deadline must not keep the
    # process alive after the archive is written (executor threads are joined at interpreter exit).

    def _worker(self, work: queue.Queue, results: queue.Queue) -> None:
        while True:
            try:
                index, task = work.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                self._running.add(task.path)
            try:
                outcome = self._run(task, index)
            except BaseException as exc:  # noqa: BLE001 - reported as the task's outcome, never lost
                outcome = Outcome(task, "error", f"internal error: {type(exc).__name__}: {exc}")
            with self._lock:
                self._running.discard(task.path)
            results.put(outcome)

    def run(self) -> dict[str, Outcome]:
        work: queue.Queue = queue.Queue()
        results: queue.Queue = queue.Queue()
        for index, task in enumerate(self.tasks):
            work.put((index, task))
        self._running: set[str] = set()
        for n in range(min(self.workers, len(self.tasks))):
            threading.Thread(target=self._worker, args=(work, results), name=f"collect-{n}", daemon=True).start()
        while len(self.outcomes) < len(self.tasks):
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                self.stop.set(f"the deadline ({self.deadline:g}s) was reached")
            if self.stop.event.is_set():
                break
            try:
                outcome = results.get(timeout=0.25 if remaining is None else max(0.01, min(0.25, remaining)))
            except queue.Empty:
                continue
            self._finish(outcome)
        # Stopped early: what finished meanwhile counts; the rest is recorded as not collected.
        while True:
            try:
                self._finish(results.get_nowait())
            except queue.Empty:
                break
        with self._lock:
            running = set(self._running)
        for task in self.tasks:
            if task.path not in self.outcomes:
                state = "running" if task.path in running else "not started"
                self._finish(Outcome(task, "skipped", f"not collected ({state}): {self.stop.reason}"))
        return self.outcomes

    def _finish(self, outcome: Outcome) -> None:
        if outcome.task.path in self.outcomes:
            return
        self.outcomes[outcome.task.path] = outcome
        if self.progress:
            self.progress.task_done(outcome)


def _keep_tail(path: Path, limit: int) -> None:
    """Keep the last ``limit`` bytes of a file, from a line start: the newest log lines matter most."""
    size = path.stat().st_size
    tmp = path.with_suffix(".tail")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        src.seek(size - limit)
        src.readline()  # the first line is cut: drop it
        shutil.copyfileobj(src, dst, 1024 * 1024)
    os.replace(tmp, path)


class SignalStop:
    """SIGINT / SIGTERM stop the engine (the archive is still finalised); a second SIGINT aborts at once."""

    def __init__(self, stop: Stop) -> None:
        self.stop = stop
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> SignalStop:
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.stop.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop.set(f"interrupted by {name}")

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def make_spool(out: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.spool-", dir=out.parent))
