"""The collection engine: runs the plan's tasks on a bounded pool with retries, a per-request timeout and a
global deadline, spools each artifact to disk, redacts it, and writes the archive in layout order.

It always leaves a usable archive: on the deadline, SIGINT or SIGTERM it stops waiting, records every
artifact not collected with its reason, and finalises what it has.
"""

from __future__ import annotations

import atexit
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
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
# Redaction is pure-Python regex work (a few MB/s): in the threads that download it holds the GIL and starves them
# (at 100 nodes it was nine tenths of collect's time). Artifacts from this size up are redacted in worker processes,
# one per core; smaller ones, and all of them when no process can be started, in the thread that fetched them.
REDACT_IN_PROCESS_BYTES = 256 * 1024


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
    # the error after which this task gave up, and since when its requests failed (see Engine._gave_up)
    gave_up: tuple[FetchError, float] | None = field(default=None, repr=False)


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
                 redact: bool = True, progress=None, sleep=time.sleep, on_outcome=None) -> None:
        self.kube = kube
        self.tasks = tasks
        self.spool_dir = spool_dir
        self.workers = max(1, workers)
        self.deadline_at = time.monotonic() + deadline if deadline else None
        self.deadline = deadline
        self.redact = redact
        self.progress = progress
        self.on_outcome = on_outcome  # called with each final outcome, in the engine's thread
        self.stop = Stop()
        self.sleep = sleep
        self.outcomes: dict[str, Outcome] = {}
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._redactors: _Redactors | None = None  # the worker processes, started at the first big artifact
        self._redactors_lock = threading.Lock()
        self._redactors_broken = False
        self._last_success = float("-inf")  # time.monotonic() of the last request that succeeded

    # --- one task --------------------------------------------------------------------------------------------

    def _remaining(self) -> float | None:
        return None if self.deadline_at is None else self.deadline_at - time.monotonic()

    def _run(self, task: Task, index: int) -> Outcome:
        outcome = Outcome(task, "error", started=_now())
        spool = self.spool_dir / f"{index:06d}"
        last: FetchError | None = None
        failing_since: float | None = None
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
                self._last_success = time.monotonic()
                outcome.extra.update(extra)
                outcome.spool, outcome.size = spool, fetched.size
                outcome.status = "truncated" if fetched.truncated else "ok"
                if fetched.truncated:
                    outcome.reason = f"cut at {task.max_bytes} bytes"
                last = None
                break
            except FetchError as exc:
                last = exc
                failing_since = failing_since if failing_since is not None else time.monotonic()
                if task.missing_ok and exc.status in (400, 404):
                    outcome.status, outcome.reason = "skipped", exc.reason
                    last = None
                    break
                if not exc.retryable or attempt == MAX_ATTEMPTS:
                    outcome.gave_up = (exc, failing_since)
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
            try:
                self._post_process(outcome)
            except _Stopped:  # the engine stopped while this waited for redaction: it no longer counts
                outcome.status, outcome.reason, outcome.spool = "skipped", f"not collected: {self.stop.reason}", None
                spool.unlink(missing_ok=True)
        elif spool.exists():
            spool.unlink()
        outcome.finished = _now()
        return outcome

    def _gave_up(self, exc: FetchError, failing_since: float) -> None:
        """Stop everything when no other request can succeed either: the API server refused the credentials, or
        it stopped accepting connections (this task gave up, retries spent, on a connection that could not be
        made, and no request has succeeded since its first failure). The rest is recorded as not collected."""
        if exc.kind == "unauthorized":
            self.stop.set("authentication failed: the API server answered 401 Unauthorized (the credentials "
                          "expired or were revoked)")
        elif exc.kind == "unreachable" and self._last_success < failing_since:
            self.stop.set(f"the API server became unreachable: {exc.reason}")

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
        self._redact(outcome, json_document=False)

    def _redact_json(self, outcome: Outcome) -> None:
        self._redact(outcome, json_document=True)

    def _redact(self, outcome: Outcome, json_document: bool) -> None:
        spool = outcome.spool
        assert spool is not None
        counts = None
        if spool.stat().st_size >= REDACT_IN_PROCESS_BYTES:
            pool = self._redaction_pool()
            if pool is not None:
                counts = pool.redact(str(spool), json_document)  # None: no worker could do it
        if counts is None:
            if self.stop.event.is_set():
                raise _Stopped  # not worth redacting here now: the archive is being written without it
            counts = redact_file(str(spool), json_document)
        if counts:
            outcome.extra["redactions"] = dict(sorted(counts.items()))

    def _redaction_pool(self) -> _Redactors | None:
        with self._redactors_lock:
            if self._redactors is None and not self._redactors_broken:
                try:
                    self._redactors = _Redactors(_redaction_processes())
                except (OSError, ValueError, subprocess.SubprocessError):  # no interpreter to start, no processes
                    self._redactors_broken = True
            return self._redactors

    def _stop_redaction_pool(self) -> None:
        with self._redactors_lock:
            pool, self._redactors = self._redactors, None
            self._redactors_broken = True  # a late artifact (its thread outlived the deadline) is redacted inline
        if pool is not None:
            pool.close()

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
            if outcome.gave_up is not None:
                # Only now: a stop set before this outcome was queued could record it as "not collected (running)".
                self._gave_up(*outcome.gave_up)

    def run(self) -> dict[str, Outcome]:
        work: queue.Queue = queue.Queue()
        results: queue.Queue = queue.Queue()
        for index, task in enumerate(self.tasks):
            work.put((index, task))
        self._running: set[str] = set()
        for n in range(min(self.workers, len(self.tasks))):
            thread = threading.Thread(target=self._worker, args=(work, results), name=f"collect-{n}", daemon=True)
            thread.start()
            _WORKERS.add(thread)
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
        self._stop_redaction_pool()
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
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        if self.progress:
            self.progress.task_done(outcome)


class _Stopped(Exception):
    """An artifact given up after the engine stopped (deadline, signal): it is not redacted, nor written."""


def redact_file(path: str, json_document: bool) -> dict[str, int]:
    """Redact the spool file ``path`` in place; the redactions per kind. Runs in a redaction process or inline.

    A Kubernetes document is redacted as JSON (only a change is re-serialised: an untouched document keeps the API
    server's bytes); anything else as text. The file is replaced atomically, never left half written."""
    spool = Path(path)
    data = spool.read_bytes()
    if json_document:
        redacted, counts = _redact_kubernetes_document(data)
    else:
        from bundler.redact_blocks import shared_block_redactor

        redacted, counts = shared_block_redactor().redact_bytes(data)
    if counts:
        tmp = spool.with_name(spool.name + ".redacted")
        tmp.write_bytes(redacted)
        os.replace(tmp, spool)
    return dict(counts)


def _redact_kubernetes_document(data: bytes) -> tuple[bytes, Counter[str]]:
    """A list item by item (one item decoded at a time), another object whole (only a change is re-encoded), and
    what is not JSON (a body cut short) as text."""
    from bundler.redact import redact_bytes, redact_kubernetes_list, redact_kubernetes_object
    from bundler.redact_lists import NotAList, redact_list_text

    if b'"items"' in data:  # else it is an object, not a list: no walk that would only find that out
        try:
            return redact_list_text(data)
        except NotAList:
            pass
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return redact_bytes(data)
    if not isinstance(document, dict):
        return redact_bytes(data)
    counts = redact_kubernetes_list(document) if "items" in document else redact_kubernetes_object(document)
    return (orjson.dumps(document) if counts else data), counts


def _redaction_processes() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


class _Redactors:
    """Redaction worker processes: ``python -c`` running :func:`redaction_worker` with this process's ``sys.path``,
    one request at a time each (a spool path on stdin, the counts on stdout). Plain subprocesses, not
    multiprocessing: nothing of the caller's ``__main__`` is re-run, nothing is forked from a threaded process.
    They run in their own session (Ctrl-C is the collector's to handle), end at EOF on stdin, and are killed when
    the engine stops (a half-redacted artifact is never renamed over its spool). The pipes are unbuffered: a
    daemon thread waiting on one must not hold a buffer's lock when the interpreter exits (that aborts it)."""

    def __init__(self, processes: int) -> None:
        if not sys.executable:
            raise ValueError("no Python interpreter to start")
        path = [os.path.abspath(p) for p in sys.path]
        code = (f"import sys; sys.path[:0] = {path!r}; "
                "from bundler.collect.engine import redaction_worker; redaction_worker()")
        self._idle: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._processes: list[subprocess.Popen] = []
        for _ in range(processes):
            process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       bufsize=0, start_new_session=True)
            self._processes.append(process)
            self._idle.put(process)
        self._alive = processes

    def redact(self, path: str, json_document: bool) -> dict[str, int] | None:
        """The counts, or None when no worker could redact it (the caller then does it itself)."""
        while True:
            with self._lock:
                if self._alive <= 0:
                    return None
            try:
                process = self._idle.get(timeout=0.5)
                break
            except queue.Empty:
                continue
        answer = None
        try:
            assert process.stdin is not None and process.stdout is not None
            request = memoryview(orjson.dumps([path, json_document]) + b"\n")
            while request:
                request = request[process.stdin.write(request) or 0:]
            line = b""
            while not line.endswith(b"\n"):  # one answer per request: nothing is read past it
                chunk = process.stdout.read(4096)
                if not chunk:
                    raise EOFError
                line += chunk
            answer = orjson.loads(line)
        except (OSError, ValueError, EOFError):  # it died or was killed (ValueError: orjson's decode error too)
            pass
        if answer is None:
            with self._lock:
                self._alive -= 1
            process.kill()
            return None
        self._idle.put(process)
        return answer.get("counts")  # None with "error": the caller redacts it and sees the error itself

    def close(self) -> None:
        with self._lock:
            self._alive = 0
        for process in self._processes:
            process.kill()  # idle or not: an artifact in hand no longer counts
        for process in self._processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def redaction_worker() -> None:
    """The loop of a redaction process: ``[path, json_document]`` per line on stdin, ``{"counts": {...}}`` (or
    ``{"error": "..."}``) per line on stdout, until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        try:
            path, json_document = orjson.loads(line)
            answer: dict[str, Any] = {"counts": redact_file(path, bool(json_document))}
        except Exception as exc:  # noqa: BLE001 - reported to the collector, which redacts the file itself
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(orjson.dumps(answer) + b"\n")
        out.flush()


_WORKERS: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


@atexit.register
def _settle_workers(grace: float = 3.0) -> None:
    """At exit, give the workers still in a request (the engine stopped early) a moment to return first. A daemon
    thread that wakes up while the interpreter finalises is ended with pthread_exit, which can abort the whole
    process (SIGABRT after the archive was written); one that returns before, or never, is harmless."""
    end = time.monotonic() + grace
    for thread in list(_WORKERS):
        thread.join(max(0.0, end - time.monotonic()))


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
