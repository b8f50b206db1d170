"""ztunnel-health: ztunnel pods that restart, are OOMKilled, crash-loop or are not Ready (failure-modes.md R24).

A ztunnel restart drops every proxied connection of its node; an OOMKilled one usually keeps coming back under the
same load (many long-lived or short connections, ztunnel#864, ztunnel#2044). Read from the ztunnel pod's
``containerStatuses`` (``restartCount``, ``lastState.terminated``, ``state.waiting``), its Ready condition, the
``BackOff``/``Unhealthy`` events about it, its file descriptors (``process_open_fds`` near ``process_max_fds``), and
the last lines of its previous container's log as evidence of how it ended.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import orjson

from analyzers.logs import meta
from bundler import layout
from bundler.analysis import Analyzer, Context, Evidence, Finding, Metadata, Resource
from bundler.analysis.dig import dig, dig_dict, dig_list
from bundler.formats import openmetrics
from bundler.manifest import timestamp as _ts

TAIL_LINES = 5
FD_RATIO = 0.9
_EVENT_REASONS = ("BackOff", "Unhealthy", "OOMKilling", "Killing", "Failed")
_REFS = ("https://github.com/istio/istio/issues/50209", "https://github.com/istio/ztunnel/issues/864",
         "https://github.com/istio/ztunnel/issues/2044")


class ZtunnelHealth(Analyzer):
    metadata = Metadata(
        id="ztunnel-health",
        title="ztunnel pod unhealthy",
        severity="warning",
        description=("Checks each ztunnel pod for restarts (lastState.terminated reason and exit code, OOMKilled), "
                     "CrashLoopBackOff, NotReady, BackOff/Unhealthy events and file descriptors near the limit, "
                     "with the last lines of the previous container's log as evidence."),
        docs="https://istio.io/latest/docs/ambient/usage/troubleshoot-ztunnel/",
        inputs=(layout.KIND_K8S_OBJECT, layout.KIND_K8S_LIST, layout.KIND_ZTUNNEL_LOG),
    )

    def analyze(self, ctx: Context) -> Iterable[Finding]:
        model = ctx.model
        window_start = _ts(model.manifest.window.logs_since)
        events = _events_by_pod(model)
        pods_index = {(str(meta(p).get("namespace")), str(meta(p).get("name"))): i for i, p in enumerate(model.pods())}
        for ref in model.ztunnel_refs():
            pod, path, base = _pod(model, ref, pods_index)
            if pod is None:
                continue
            resource = Resource("Pod", ref.pod, ref.namespace or meta(pod).get("namespace") or None, node=ref.node,
                                ztunnel=ref.pod)
            ev_events = [Evidence(layout.k8s_list("events"), pointer=f"/items/{i}",
                                  excerpt=f"{e.get('reason')} x{e.get('count', 1)}: {e.get('message')}")
                         for i, e in events.get((resource.namespace, ref.pod), [])]
            statuses = dig_list(pod, "status", "containerStatuses")
            crashloop = False
            for index, status in enumerate(statuses):
                if not isinstance(status, dict):
                    continue
                finding, crashloop = self._restarts(ctx, model, ref, pod, status, f"{base}/status/containerStatuses/"
                                                    f"{index}", path, resource, ev_events, window_start)
                if finding is not None:
                    yield finding
                    ev_events = []  # the events are the restart's evidence
            ready = _ready(pod)
            if ready is False and not crashloop:
                yield ctx.finding(
                    "ztunnel-not-ready",
                    f"ztunnel {ref.pod} on node {ref.node} is not Ready: new pods on this node cannot be enrolled "
                    "and istio-cni may refuse them",
                    title="ztunnel not Ready", severity="error", resources=[resource],
                    evidence=[Evidence(path, pointer=f"{base}/status/conditions")] + ev_events,
                    remediation="Read the ztunnel's log (xDS connection, 'failed to start proxy', readiness tasks) "
                                "and its events.",
                    references=("https://github.com/istio/istio/issues/55794",
                                "https://github.com/istio/ztunnel/issues/1674"),
                )
                ev_events = []
            if ev_events:
                yield ctx.finding(
                    "ztunnel-warning-events",
                    f"ztunnel {ref.pod} on node {ref.node} has warning events: "
                    + "; ".join(e.excerpt or "" for e in ev_events[:3]),
                    title="warning events on a ztunnel pod", severity="warning", resources=[resource],
                    evidence=ev_events, references=_REFS,
                )
            fds = _fds(model, ref)
            if fds is not None:
                yield ctx.finding(
                    "ztunnel-fd-exhaustion",
                    f"ztunnel {ref.pod} on node {ref.node} has {fds[0]} of {fds[1]} file descriptors open",
                    title="ztunnel close to its file descriptor limit", severity="warning", resources=[resource],
                    evidence=[Evidence(ref.metrics_path, excerpt=f"process_open_fds {fds[0]}, process_max_fds "
                                                                 f"{fds[1]}")],
                    remediation="Look for connection leaks (long-lived idle connections); raise the limit.",
                    references=("https://github.com/istio/ztunnel/issues/2044",),
                )

    def _restarts(self, ctx: Context, model: Any, ref: Any, pod: dict[str, Any], status: dict[str, Any],
                  pointer: str, path: str, resource: Resource, ev_events: list[Evidence],
                  window_start: float | None) -> tuple[Finding | None, bool]:
        restarts = status.get("restartCount") or 0
        waiting = dig_dict(status, "state", "waiting")
        crashloop = waiting.get("reason") == "CrashLoopBackOff"
        last = dig_dict(status, "lastState", "terminated")
        if not restarts and not crashloop:
            return None, False
        reason, exit_code, finished = last.get("reason"), last.get("exitCode"), last.get("finishedAt")
        limit = _memory_limit(pod, status.get("name"))
        evidence = [Evidence(path, pointer=f"{pointer}/lastState/terminated" if last else pointer,
                             excerpt=f"restartCount {restarts}, last terminated: {reason} (exit code {exit_code}) "
                                     f"at {finished}" if last else f"restartCount {restarts}")]
        evidence += ev_events
        tail = _previous_tail(model, ref)
        if tail is not None:
            evidence.append(tail)
        when = f" at {finished}" if finished else ""
        previous = (f"; the previous container's log ends at line {tail.lines[1]} of {tail.path}"
                    if tail is not None and tail.lines else "")
        if reason == "OOMKilled":
            return ctx.finding(
                "ztunnel-oomkilled",
                f"ztunnel {ref.pod} on node {ref.node} was OOMKilled{when} (exit code {exit_code}) and has restarted "
                f"{restarts} time(s); memory limit {limit or 'none'}: every restart drops the node's proxied "
                f"connections{previous}",
                title="ztunnel OOMKilled", severity="error", resources=[resource], evidence=evidence,
                remediation="Raise the ztunnel memory limit (resources.limits.memory) for the node's connection "
                            "load, look for connection leaks (process_open_fds), and upgrade (memory fixes in later "
                            "releases).",
                references=_REFS,
            ), crashloop
        if crashloop:
            return ctx.finding(
                "ztunnel-crashloop",
                f"ztunnel {ref.pod} on node {ref.node} is in CrashLoopBackOff after {restarts} restart(s) (last "
                f"exit: {reason or 'unknown'}, code {exit_code}){previous}",
                title="ztunnel crash-looping", severity="error", resources=[resource], evidence=evidence,
                remediation="Read the previous container's log for the fatal error (e.g. 'WorkloadProxyManager run "
                            "error', bind failures) and the events.",
                references=_REFS,
            ), crashloop
        recent = _ts(finished)
        old = recent is not None and window_start is not None and recent < window_start
        return ctx.finding(
            "ztunnel-restarted",
            f"ztunnel {ref.pod} on node {ref.node} has restarted {restarts} time(s); last termination: "
            f"{reason or 'unknown reason'} (exit code {exit_code}){when}"
            f"{' (before the logs window)' if old else ''}{previous}",
            title="ztunnel restarted", severity="info" if old else "warning", resources=[resource],
            evidence=evidence,
            remediation="Check why it stopped (exit code, previous log, node events); drain nodes before ztunnel "
                        "upgrades to avoid dropping connections.",
            references=_REFS,
        ), crashloop


def _pod(model: Any, ref: Any, index: dict) -> tuple[dict[str, Any] | None, str, str]:
    """The ztunnel Pod object, the artifact it was read from and its JSON pointer there."""
    if ref.pod_json_path is not None and model.status(ref.pod_json_path) == "ok" and model.has(ref.pod_json_path):
        try:
            obj = orjson.loads(model.bundle.read(ref.pod_json_path))
        except Exception:  # noqa: BLE001 - a broken pod.json: fall back to the pods list
            obj = None
        if isinstance(obj, dict):
            return obj, ref.pod_json_path, ""
    pod = model.pod(ref.namespace, ref.pod) if ref.namespace else None
    if pod is None:
        pod = next((p for p in model.pods() if meta(p).get("name") == ref.pod), None)
    if pod is None:
        return None, "", ""
    i = index.get((str(meta(pod).get("namespace")), str(meta(pod).get("name"))), 0)
    return pod, layout.k8s_list("pods"), f"/items/{i}"


def _ready(pod: dict[str, Any]) -> bool | None:
    for cond in dig_list(pod, "status", "conditions"):
        if isinstance(cond, dict) and cond.get("type") == "Ready":
            return cond.get("status") == "True"
    statuses = dig_list(pod, "status", "containerStatuses")
    if statuses:
        return all(isinstance(s, dict) and s.get("ready") is True for s in statuses)
    return None


def _events_by_pod(model: Any) -> dict[tuple[str, str], list[tuple[int, dict[str, Any]]]]:
    out: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
    for i, event in enumerate(model.k8s("events")):
        obj = event.get("involvedObject") or event.get("regarding") or {}
        reason = event.get("reason")
        if obj.get("kind") != "Pod" or event.get("type") != "Warning" or reason not in _EVENT_REASONS:
            continue
        out.setdefault((obj.get("namespace"), obj.get("name")), []).append((i, event))
    return out


def _previous_tail(model: Any, ref: Any) -> Evidence | None:
    """The last lines of the previous container's log (how it ended)."""
    if ref.previous_log_path is None:
        return None
    tail: deque = deque(maxlen=TAIL_LINES)
    for item in model.log_records(ref.previous_log_path):
        if item.text.strip():
            tail.append(item)
    if not tail:
        return None
    text = "\n".join(item.text[:300] for item in tail)
    return Evidence(ref.previous_log_path, lines=(tail[0].line, tail[-1].line), excerpt=text)


def _memory_limit(pod: dict[str, Any], container: str | None) -> str | None:
    for c in dig_list(pod, "spec", "containers"):
        if isinstance(c, dict) and (container is None or c.get("name") == container):
            return dig(c, "resources", "limits", "memory")
    return None


def _fds(model: Any, ref: Any) -> tuple[int, int] | None:
    if ref.metrics_path is None:
        return None
    families = model.metrics(ref.node)
    open_ = [v for _, v in openmetrics.samples(families, "process_open_fds")]
    max_ = [v for _, v in openmetrics.samples(families, "process_max_fds")]
    if open_ and max_ and max_[0] > 0 and open_[0] / max_[0] >= FD_RATIO:
        return int(open_[0]), int(max_[0])
    return None

