"""``bundle collect`` from start to finish: connect, preflight, plan, collect, fit the budget, write."""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bundler.archive import BundleWriter
from bundler.collect import budget
from bundler.collect.engine import Engine, Outcome, SignalStop, make_spool
from bundler.collect.kube import ClusterAccessError, FetchError, Kube
from bundler.collect.plan import Options, Plan, build_plan
from bundler.collect.progress import Progress
from bundler.collect.rbac import preflight
from bundler.collect.stream import StreamingArchive, write_outcome
from bundler.collect.tasks import PRIORITY_LOGS, collection_order
from bundler.errors import EXIT_OK, EXIT_PARTIAL, BundleError
from bundler.manifest import rfc3339

MB = 1_000_000


@dataclass
class CollectSettings:
    out: Path
    kubeconfig: str | None = None
    context: str | None = None
    workers: int = 16
    deadline: float | None = 300.0
    max_size: int = 25 * MB
    redact: bool = True
    pseudonymize: bool = False
    quiet: bool = False


class NothingCollected(BundleError):
    pass


def _image_version(pod: dict) -> str | None:
    for container in pod.get("spec", {}).get("containers") or []:
        image = container.get("image", "")
        tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
        if tag:
            return tag.split("-")[0]
    return None


def _describe(writer: BundleWriter, plan: Plan, settings: CollectSettings, options: Options, kube: Kube,
              started: datetime, finished: datetime, warnings: list[str]) -> None:
    m = writer.manifest
    m.generator = "collect"
    m.command_line = ["bundle", *sys.argv[1:]] if sys.argv[1:2] == ["collect"] else ["bundle", "collect"]
    m.created_at = rfc3339(finished)
    m.window.start = rfc3339(started)
    m.window.end = rfc3339(finished)
    if options.since_time:
        m.window.logs_since = options.since_time
    elif options.since_seconds:
        m.window.logs_since = rfc3339(started - timedelta(seconds=options.since_seconds))
    m.scope.mode = plan.scope_mode
    m.scope.namespaces = list(options.namespaces)
    m.scope.pods = list(options.pods)
    m.scope.nodes = list(plan.scope_nodes) if plan.scope_mode != "mesh" else []
    d = plan.discovery
    m.cluster.server_version = d.version.get("gitVersion")
    m.cluster.context = kube.context
    m.cluster.node_count = len(d.nodes)
    m.cluster.istio_versions = {
        "istiod": sorted({v for v in map(_image_version, d.istiods) if v}),
        "ztunnel": sorted({v for v in map(_image_version, d.ztunnels) if v}),
        "cni": sorted({v for v in map(_image_version, d.cnis) if v}),
    }
    if warnings:
        m.extra["warnings"] = warnings


def _write(settings: CollectSettings, outcomes: list[Outcome], describe) -> int:
    """Write the archive in collection order; returns its size."""
    by_path = {o.task.path: o for o in outcomes}
    with BundleWriter(settings.out, mtime=int(time.time())) as writer:
        describe(writer)
        for task in collection_order([o.task for o in outcomes]):
            write_outcome(writer, by_path[task.path])
    return settings.out.stat().st_size


def collect(settings: CollectSettings, options: Options, progress_stream=None) -> int:
    if not settings.out.name.endswith(".tar.zst"):
        raise BundleError(f"{settings.out}: the output must be named *.tar.zst")
    if not settings.out.parent.is_dir():
        raise BundleError(f"{settings.out.parent}: no such directory")
    started = datetime.now(timezone.utc)
    kube = Kube(settings.kubeconfig, settings.context, settings.workers, options.request_timeout)
    kube.warm_up()

    def warn(msg: str) -> None:  # -q silences progress, not what the operator must know (warnings, an early stop)
        print(msg, file=progress_stream or sys.stderr)

    say = (lambda msg: None) if settings.quiet else warn
    warnings: list[str] = []
    try:
        missing, _ = preflight(kube)
        try:
            plan = build_plan(kube, options)
        except FetchError as exc:
            raise ClusterAccessError(_access_error(kube, exc)) from None
        # Only now: when the cluster cannot be reached at all, the error above is the one line to show.
        for message in missing:
            warn(f"warning: {message}")
        warnings += missing
        for message in plan.warnings:
            warn(f"warning: {message}")
        warnings += plan.warnings
        spool = make_spool(settings.out)
        # Pseudonymizing renames artifacts once all are in: then the archive is written afterwards.
        stream = None if settings.pseudonymize else StreamingArchive(settings.out, plan.tasks)
        try:
            configuration = sum(1 for t in plan.tasks if t.priority < PRIORITY_LOGS)
            with Progress(len(plan.tasks), progress_stream, settings.quiet, configuration) as progress:
                engine = Engine(kube, plan.tasks, spool, settings.workers, settings.deadline, settings.redact,
                                progress, on_outcome=stream.put if stream else None)
                with SignalStop(engine.stop):
                    outcomes = list(engine.run().values())
            collected = [o for o in outcomes if o.status in ("ok", "truncated")]
            if engine.stop.event.is_set():
                if collected:  # else the error line says why
                    warn(f"stopped: {engine.stop.reason}; writing what was collected")
                warnings.append(f"collection stopped early: {engine.stop.reason}")
            if not collected:
                reasons = [engine.stop.reason] if engine.stop.event.is_set() else \
                    sorted({o.reason or o.status for o in outcomes})[:3]
                raise NothingCollected("nothing could be collected: " + "; ".join(reasons))
            pseudo = _pseudonymize(settings, plan, outcomes) if settings.pseudonymize else None
            finished = datetime.now(timezone.utc)

            def describe(writer: BundleWriter) -> None:
                _describe(writer, plan, settings, options, kube, started, finished, warnings)
                if pseudo is not None:
                    m = writer.manifest
                    m.scope.nodes = [pseudo.apply_text(n) for n in m.scope.nodes]
                    m.scope.pods = [pseudo.apply_text(p) for p in m.scope.pods]
                    m.cluster.context = "pseudonymized"
                    m.extra["warnings"] = [pseudo.apply_text(w) for w in m.extra.get("warnings", [])]
                    m.extra["pseudonymized"] = True

            if stream is not None:
                size = stream.finish(outcomes, describe)
                stream = None
            else:
                size = _write(settings, outcomes, describe)
            size = _fit(settings, size, outcomes, describe, say, warn)
        finally:
            if stream is not None:
                stream.abort()
            shutil.rmtree(spool, ignore_errors=True)
    finally:
        kube.close()
    failed = [o for o in outcomes if o.status == "error" or (o.status == "skipped" and not o.task.missing_ok)]
    say(f"wrote {settings.out} ({size:,} bytes): {len(collected)} artifacts, {len(failed)} not collected")
    return EXIT_PARTIAL if failed else EXIT_OK


def _access_error(kube: Kube, exc: FetchError) -> str:
    """The one line for a cluster that cannot be used at all (discovery failed)."""
    if exc.kind == "unauthorized":
        return (f"authentication failed: the API server {kube.config.host} answered 401 Unauthorized (the "
                f"kubeconfig's credentials are wrong, expired or revoked)")
    if exc.kind in ("tls", "unreachable"):
        return exc.reason
    return f"cannot discover the mesh: {exc.reason}"


def _fit(settings: CollectSettings, size: int, outcomes: list[Outcome], describe, say, warn) -> int:
    """Rewrite the archive of ``size`` bytes without the oldest log lines, then metrics, until it fits."""
    for _ in range(8):
        if size <= settings.max_size:
            return size
        available = budget.droppable_bytes(outcomes)
        if available == 0:
            break
        log_bytes = sum(o.size for o in outcomes if o.task.kind in budget.LOG_KINDS and o.spool)
        total = sum(o.size for o in outcomes if o.spool) or 1
        # The excess in compressed bytes, scaled to uncompressed log bytes (logs compress about like the rest),
        # with a margin so that one or two rounds are enough.
        excess = (size - settings.max_size) * total / size
        drop = int(min(available, max(excess * 1.2, 64 * 1024) * max(1.0, log_bytes / total)))
        budget.trim_logs(outcomes, drop)
        say(f"size budget: the archive is {size:,} bytes, over --max-size {settings.max_size:,}; "
            f"dropped {drop:,} bytes of the oldest info-level log lines")
        size = _write(settings, outcomes, describe)
    if size > settings.max_size and budget.drop_metrics(outcomes):
        size = _write(settings, outcomes, describe)
    if size > settings.max_size:
        warn(f"warning: the archive is {size:,} bytes, over --max-size {settings.max_size:,}, even without "
            "droppable log lines and metrics: what remains is configuration, which is never cut")
    return size


def _pseudonymize(settings: CollectSettings, plan: Plan, outcomes: list[Outcome]):
    from bundler.pseudonymize import Pseudonymizer, default_mapping_path

    pseudo = Pseudonymizer()
    pseudo.add_hostnames([n.get("metadata", {}).get("name", "") for n in plan.discovery.nodes])
    for o in outcomes:
        if o.spool is not None and o.status in ("ok", "truncated"):
            o.spool.write_bytes(pseudo.apply_bytes(o.spool.read_bytes()))
            o.size = o.spool.stat().st_size
        o.task = _renamed(o.task, pseudo.apply_text(o.task.path))
    # Beside the archive, never inside it, readable by its owner only.
    pseudo.write_mapping(default_mapping_path(settings.out))
    return pseudo


def _renamed(task, path: str):
    from dataclasses import replace

    return task if path == task.path else replace(task, path=path)

