"""Progress on stderr: a rich display on a terminal, plain lines otherwise (CI logs, pipes)."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from bundler.collect.tasks import PRIORITY_LOGS


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


class Progress:
    def __init__(self, total: int, stream: Any = None, quiet: bool = False, configuration: int = 0) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        # Tasks before the logs (istiod's views, dumps, objects): when they are all in, the bundle already
        # holds what matters most, and the operator is told.
        self.configuration_left = configuration
        self.done = self.failed = self.bytes = 0
        self.quiet = quiet
        self._lock = threading.Lock()
        self._rich = None
        self._last_plain = 0.0
        if not quiet and self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

            self._rich = RichProgress(TextColumn("[bold]collect[/]"), BarColumn(),
                                      TextColumn("{task.completed}/{task.total}"),
                                      TextColumn("[red]{task.fields[failed]} failed[/]"),
                                      TextColumn("{task.fields[size]}"), TimeElapsedColumn(),
                                      console=Console(file=self.stream), transient=False)
            self._task = self._rich.add_task("collect", total=total, failed=0, size="0 B")

    def __enter__(self) -> Progress:
        if self._rich:
            self._rich.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._rich:
            self._rich.stop()

    def say(self, message: str) -> None:
        if self.quiet:
            return
        if self._rich:
            self._rich.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stream, flush=True)

    def task_done(self, outcome: Any) -> None:
        with self._lock:
            self.done += 1
            self.bytes += outcome.size
            if outcome.task.priority < PRIORITY_LOGS and self.configuration_left > 0:
                self.configuration_left -= 1
                if self.configuration_left == 0 and self.done < self.total:
                    self.say(f"collect: configuration collected; {self.total - self.done} logs remaining")
            if outcome.status in ("error",) or (outcome.status == "skipped" and not outcome.task.missing_ok):
                self.failed += 1
                self.say(f"  {outcome.status}: {outcome.task.path}: {outcome.reason}")
            if self._rich:
                self._rich.update(self._task, completed=self.done, failed=self.failed, size=_size(self.bytes))
            elif not self.quiet:
                now = time.monotonic()
                if self.done == self.total or now - self._last_plain >= 2.0:
                    self._last_plain = now
                    print(f"collect: {self.done}/{self.total} done, {self.failed} failed, "
                          f"{self.total - self.done} remaining, {_size(self.bytes)}", file=self.stream, flush=True)
