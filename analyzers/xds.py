"""xds (R07, R23): the ztunnels' xDS streams to istiod.

* ``xds-disconnected`` (R07): no istiod replica lists the ztunnel (``<pod>.<namespace>``) in ``/debug/syncz``
  while every replica's syncz was read; critical when istiod's per-proxy views are recorded as errors too (404
  "Proxy not connected to this Pilot instance" from every replica). The ztunnel keeps proxying with the config
  it last received, which goes stale.
* ``xds-not-acked`` (R23): a syncz entry whose ``acked`` nonce is behind ``sent`` or that has a ``lastError``
  (also the pre-1.23 field set ``<type>_sent``/``<type>_acked``). A push sent less than 30 s before the
  collection may simply not be acknowledged yet: info.
* ``xds-nack`` (R23/R18): ztunnel log lines ``sending response ... type=Nack``: ztunnel rejected config istiod
  sent (a skewed version, an unknown enum). Counted per log file, with the first and last time, the rejected
  resources and an example line.
* ``istiod-ack-error`` (R23): istiod log lines ``ADS:<TYPE>: ACK ERROR <conID> <code>:<message>`` for a ztunnel.
* ``xds-connection-errors`` (R07): ztunnel log lines ``XDS client connection error`` / ``XDS client error``.
  Error when no ``Stream established`` follows the last one (the stream is still down); a short burst followed
  by ``Stream established`` is an istiod rollout (info, warning when it repeats >= 5 times).

:func:`sync_states` (ok | nack | disconnected | unknown per ztunnel pod) is shared with the certificates
analyzer, which owns the ``ztunnels`` view.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from analyzers.ztunnel_istiod_drift import collection_time, parse_time
from bundler import layout
from bundler.analysis import Analyzer, Context, Evidence, Finding, Metadata, Resource

DOCS = "https://istio.io/latest/docs/ambient/usage/troubleshoot-ztunnel/"
R07 = ("https://istio.io/latest/docs/ambient/usage/troubleshoot-ztunnel/",
       "https://github.com/istio/istio/issues/54912", "https://github.com/istio/istio/issues/52487",
       "https://github.com/istio/ztunnel/issues/752")
R23 = ("https://istio.io/latest/docs/ambient/upgrade/helm/", "https://github.com/istio/istio/issues/58523",
       "https://github.com/istio/ztunnel/issues/1360")
TITLES = {
    "xds-disconnected": "ztunnel has no xDS stream to any istiod",
    "xds-not-acked": "istiod's last push to a ztunnel is not acknowledged",
    "xds-nack": "ztunnel rejects configuration from istiod (NACK)",
    "istiod-ack-error": "istiod logs ACK errors from a ztunnel",
    "xds-connection-errors": "ztunnel cannot keep its xDS stream to istiod",
}
REMEDIATION = {
    "xds-disconnected": ("Read the ztunnel's 'XDS client connection error' cause: DNS (istiod's address, cluster "
                         "DNS at boot), 15012 blocked (NetworkPolicy, security group), istiod down, "
                         "PILOT_ENABLE_AMBIENT=true missing, or a CA/root mismatch. The ztunnel runs on stale "
                         "config until it reconnects."),
    "xds-not-acked": ("ztunnel rejected or has not applied istiod's last push: read its 'sending response ... "
                      "type=Nack' errors; keep ztunnel within one minor version of istiod and upgrade in the order "
                      "istiod, istio-cni, ztunnel."),
    "xds-nack": ("The error names the rejected resource and reason (e.g. 'unknown enum': a ztunnel older than "
                 "istiod's config). Align versions (istiod -> istio-cni -> ztunnel, at most one minor apart) or "
                 "fix the object istiod renders badly; rejected resources are missing from the ztunnel."),
    "istiod-ack-error": ("istiod sees the ztunnel reject its pushes: see the ztunnel's NACK lines and align the "
                         "versions of istiod and ztunnel."),
    "xds-connection-errors": ("Read the cause in the error (DNS, connection refused, TLS/CA, authentication) and "
                              "fix the path to istiod:15012; bursts during an istiod rollout are normal."),
}
REFERENCES = {"xds-disconnected": R07, "xds-connection-errors": R07, "xds-not-acked": R23, "xds-nack": R23,
              "istiod-ack-error": R23}
FRESH_PUSH_SECONDS = 30
REPEATED = 5
_ACK_ERROR = re.compile(r"ADS:(?P<type>[A-Za-z]*):? ?ACK ERROR (?P<con>\S+)\s*(?P<error>.*)")
_CONN_SUFFIX = re.compile(r"-\d+$")


# --- syncz (shared with the certificates analyzer) ---------------------------------------------------------------


def _pending(entry: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(type, sent, acked, lastError, sentTime) of every resource type not acknowledged cleanly."""
    out = []
    resources = entry.get("resources")
    if isinstance(resources, dict):
        for type_url, state in sorted(resources.items()):
            if not isinstance(state, dict):
                continue
            sent, acked = str(state.get("sent") or ""), str(state.get("acked") or "")
            error = str(state.get("lastError") or "")
            if error or (sent and acked != sent):
                out.append((str(type_url), sent, acked, error, str(state.get("sentTime") or "")))
    for key, value in sorted(entry.items()):  # pre-1.23: cluster_sent / cluster_acked, listener_..., ...
        if key.endswith("_sent") and isinstance(value, str):
            kind = key[: -len("_sent")]
            acked = entry.get(f"{kind}_acked")
            if value and isinstance(acked, str) and acked != value:
                out.append((kind, value, acked, "", ""))
    return out


def _proxy_pod(proxy: str) -> str:
    return proxy.split(".", 1)[0]


def syncz_read(model: Any) -> tuple[bool, list[tuple[str, dict[str, Any]]]]:
    """(whether every istiod replica's syncz was read, every (replica, entry)). A replica whose syncz is missing,
    not collected or unreadable makes the set incomplete: a ztunnel absent from it may be connected there."""
    entries = model.syncz()
    refs = model.istiod_refs()
    broken = {p.path for p in model.problems}
    complete = bool(refs) and all(
        r.syncz_path is not None and model.status(r.syncz_path) == "ok" and model.has(r.syncz_path)
        and r.syncz_path not in broken for r in refs)
    return complete, entries


def sync_states(model: Any) -> dict[str, str]:
    """ztunnel pod -> ok | nack | disconnected | unknown, from every replica's ``/debug/syncz``."""
    complete, entries = syncz_read(model)
    by_pod: dict[str, list[dict[str, Any]]] = {}
    for _, entry in entries:
        proxy = entry.get("proxy")
        if isinstance(proxy, str):
            by_pod.setdefault(_proxy_pod(proxy), []).append(entry)
    out = {}
    for ref in model.ztunnel_refs():
        found = by_pod.get(ref.pod)
        if found:
            out[ref.pod] = "nack" if any(_pending(e) for e in found) else "ok"
        else:
            out[ref.pod] = "disconnected" if complete else "unknown"
    return out


# --- log statistics ----------------------------------------------------------------------------------------------


@dataclass
class _Lines:
    """Count, first and last time, first and last example of one kind of log line."""

    count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    first_line: tuple[int, str] | None = None
    last_line: tuple[int, str] | None = None
    details: dict[str, int] = field(default_factory=dict)

    def add(self, when: datetime | None, number: int, text: str, detail: str = "") -> None:
        self.count += 1
        if self.first_line is None:
            self.first, self.first_line = when, (number, text)
        self.last, self.last_line = when, (number, text)
        if detail and (detail in self.details or len(self.details) < 20):
            self.details[detail] = self.details.get(detail, 0) + 1

    def evidence(self, path: str) -> list[Evidence]:
        """The first and the last line (once when they are the same)."""
        lines = [item for item in (self.first_line, self.last_line) if item is not None]
        if len(lines) == 2 and lines[0][0] == lines[1][0]:
            lines.pop()
        return [Evidence(path, lines=(number, number), excerpt=text[:300]) for number, text in lines]

    def span(self) -> str:
        if self.first is None or self.last is None:
            return f"{self.count} line(s)"
        return f"{self.count} line(s) from {_time(self.first)} to {_time(self.last)}"


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _ZtunnelLog:
    path: str
    node: str
    pod: str
    namespace: str
    previous: bool
    nacks: _Lines = field(default_factory=_Lines)
    conn_errors: _Lines = field(default_factory=_Lines)
    established_line: int = 0  # the last 'Stream established' line (0: none)


def _scan_ztunnel_log(model: Any, log: Any) -> _ZtunnelLog:
    stats = _ZtunnelLog(log.path, log.node, log.pod, log.namespace, log.previous)
    for ref in model.log_records(log):
        text = ref.text
        if "Nack" not in text and "XDS client" not in text and "Stream established" not in text:
            continue
        rec = ref.record
        message = getattr(rec, "message", "") if rec is not None else text
        when = getattr(rec, "time", None)
        if "sending response" in message and _is_nack(rec, text):
            error = rec.field("error") if rec is not None and hasattr(rec, "field") else None
            stats.nacks.add(when, ref.line, text, str(error)[:160] if error else "")  # "<resource>: <reason>"
        elif "XDS client connection error" in message or "XDS client error" in message:
            stats.conn_errors.add(when, ref.line, text)
        elif "Stream established" in message:
            stats.established_line = ref.line
    return stats


def _is_nack(rec: Any, text: str) -> bool:
    if rec is not None and hasattr(rec, "field"):
        value = rec.field("type")
        if value is not None:
            return str(value) == "Nack"
    return "type=Nack" in text or '"type":"Nack"' in text


# --- the analyzer ------------------------------------------------------------------------------------------------


class Xds(Analyzer):
    metadata = Metadata(
        id="xds",
        title="ztunnel's xDS stream to istiod is not healthy",
        severity="error",
        description=("Checks every ztunnel's xDS stream to istiod: absent from every replica's syncz "
                     "(disconnected), pushes not acknowledged, NACKs in ztunnel logs, ACK ERROR lines in istiod "
                     "logs and XDS client connection errors."),
        docs=DOCS,
        inputs=(layout.KIND_ISTIOD_SYNCZ, layout.KIND_ZTUNNEL_LOG, layout.KIND_ISTIOD_LOG,
                layout.KIND_ISTIOD_CONFIG_DUMP),
    )

    def analyze(self, ctx: Context) -> Iterator[Finding]:
        model = ctx.model
        now = collection_time(model)
        refs = {ref.pod: ref for ref in model.ztunnel_refs()}
        logs = [_scan_ztunnel_log(model, log) for log in model.logs("ztunnel")]
        current = {s.pod: s for s in logs if not s.previous}
        yield from self._syncz(ctx, refs, current, now)
        for stats in logs:
            yield from self._log_findings(ctx, stats)
        yield from self._istiod_logs(ctx, refs)

    # -- syncz ----------------------------------------------------------------------------------------------------

    def _syncz(self, ctx: Context, refs: dict[str, Any], logs: dict[str, _ZtunnelLog],
               now: datetime | None) -> Iterator[Finding]:
        model = ctx.model
        complete, entries = syncz_read(model)
        replicas = [r for r in model.istiod_refs() if r.syncz_path is not None]
        by_pod: dict[str, list[tuple[str, int, dict[str, Any]]]] = {}
        index: dict[str, int] = {}
        for replica, entry in entries:
            position = index[replica] = index.get(replica, -1) + 1  # entries keep their order per replica
            proxy = entry.get("proxy")
            if isinstance(proxy, str):
                by_pod.setdefault(_proxy_pod(proxy), []).append((replica, position, entry))
        syncz_paths = {r.pod: r.syncz_path for r in replicas}
        for pod, ref in sorted(refs.items()):
            found = by_pod.get(pod, [])
            if not found:
                if complete and replicas:
                    yield self._disconnected(ctx, ref, syncz_paths, logs.get(pod))
                continue
            for replica, position, entry in found:
                pending = _pending(entry)
                if pending:
                    yield self._not_acked(ctx, ref, replica, syncz_paths.get(replica), position, entry, pending, now)

    def _disconnected(self, ctx: Context, ref: Any, syncz_paths: dict[str, str | None],
                      log: _ZtunnelLog | None) -> Finding:
        model = ctx.model
        proxy = f"{ref.pod}.{ref.namespace}" if ref.namespace else ref.pod
        evidence = [Evidence(path, "", excerpt=f"no entry for proxy {proxy}")
                    for path in sorted(p for p in syncz_paths.values() if p)]
        why = [f"none of the {len(syncz_paths)} istiod replica(s) lists {proxy} in /debug/syncz"]
        severity = "error"
        view_path = ref.istiod_dump_path
        if view_path is not None and model.status(view_path) == "error":
            art = model.artifact(view_path)
            reason = (art.reason if art is not None and art.reason else "error")
            why.append(f"istiod's per-proxy view was not collected: {reason}")
            evidence.append(Evidence(layout.MANIFEST, _manifest_pointer(model, view_path),
                                     excerpt=f"{view_path}: {reason}"[:300]))
            if "404" in reason or "not connected" in reason.lower():
                severity = "critical"
        if log is not None and log.conn_errors.count:
            why.append(f"its log has {log.conn_errors.span()} of 'XDS client connection error'")
            evidence.extend(log.conn_errors.evidence(log.path))
            if log.conn_errors.last_line is not None and log.established_line < log.conn_errors.last_line[0]:
                severity = "critical"
        message = (f"ztunnel {ref.pod} on node {ref.node} has no xDS stream to istiod: {'; '.join(why)}. It keeps "
                   "proxying with the configuration it last received, which goes stale (new pods, policies and "
                   "certificates do not reach it).")
        return ctx.finding("xds-disconnected", message, title=TITLES["xds-disconnected"], severity=severity,
                           resources=[_zt_resource(ref)], evidence=evidence,
                           remediation=REMEDIATION["xds-disconnected"], references=REFERENCES["xds-disconnected"])

    def _not_acked(self, ctx: Context, ref: Any, replica: str, path: str | None, position: int, entry: dict[str, Any],
                   pending: list[tuple[str, str, str, str, str]], now: datetime | None) -> Finding:
        parts = []
        fresh = True
        for type_url, sent, acked, error, sent_time in pending:
            short_type = type_url.rsplit(".", 1)[-1] if "/" in type_url else type_url
            text = f"{short_type}: sent {sent or '-'}, acked {acked or 'nothing'}"
            if error:
                text += f", lastError {error!r}"
                fresh = False
            sent_at = parse_time(sent_time)
            if error or now is None or sent_at is None or (now - sent_at).total_seconds() >= FRESH_PUSH_SECONDS:
                fresh = False
            parts.append(text)
        message = (f"istiod {replica} has not had its last push to ztunnel {ref.pod} on node {ref.node} "
                   f"acknowledged: {'; '.join(parts)}.")
        if fresh:
            message += f" The push is less than {FRESH_PUSH_SECONDS}s old: it may simply not be acknowledged yet."
        excerpt = f"{entry.get('proxy', ref.pod)}: {'; '.join(parts)}"[:300]
        evidence = [Evidence(path, f"/{position}", excerpt=excerpt)] if path else []
        return ctx.finding("xds-not-acked", message, title=TITLES["xds-not-acked"],
                           severity="info" if fresh else "error", resources=[_zt_resource(ref)], evidence=evidence,
                           remediation=REMEDIATION["xds-not-acked"], references=REFERENCES["xds-not-acked"])

    # -- logs -----------------------------------------------------------------------------------------------------

    def _log_findings(self, ctx: Context, stats: _ZtunnelLog) -> Iterator[Finding]:
        resource = Resource("Pod", stats.pod, stats.namespace or None, node=stats.node or None, ztunnel=stats.pod)
        which = "previous log" if stats.previous else "log"
        if stats.nacks.count:
            rejected = "; ".join(f"{detail} (x{n})" for detail, n in sorted(stats.nacks.details.items()))
            message = (f"ztunnel {stats.pod} on node {stats.node} rejected istiod's configuration: its {which} has "
                       f"{stats.nacks.span()} of 'sending response ... type=Nack'"
                       f"{': ' + rejected if rejected else ''}. Rejected resources are missing from the ztunnel.")
            yield ctx.finding("xds-nack", message, title=TITLES["xds-nack"],
                              severity="warning" if stats.previous else "error", resources=[resource],
                              evidence=stats.nacks.evidence(stats.path), remediation=REMEDIATION["xds-nack"],
                              references=REFERENCES["xds-nack"])
        errors = stats.conn_errors
        if errors.count:
            ongoing = errors.last_line is not None and stats.established_line < errors.last_line[0]
            if ongoing and not stats.previous:
                severity, state = "error", "no 'Stream established' follows the last one: the stream is down"
            elif errors.count >= REPEATED:
                severity, state = "warning", "each was followed by 'Stream established', but they repeat"
            else:
                severity, state = "info", "followed by 'Stream established' (a short burst, e.g. an istiod rollout)"
            message = (f"ztunnel {stats.pod} on node {stats.node}: its {which} has {errors.span()} of 'XDS client "
                       f"connection error' / 'XDS client error'; {state}.")
            yield ctx.finding("xds-connection-errors", message, title=TITLES["xds-connection-errors"],
                              severity=severity, resources=[resource], evidence=errors.evidence(stats.path),
                              remediation=REMEDIATION["xds-connection-errors"],
                              references=REFERENCES["xds-connection-errors"])

    def _istiod_logs(self, ctx: Context, refs: dict[str, Any]) -> Iterator[Finding]:
        model = ctx.model
        for log in model.logs("istiod"):
            per_proxy: dict[str, _Lines] = {}
            for rec_ref in model.log_records(log):
                if "ACK ERROR" not in rec_ref.text:
                    continue
                rec = rec_ref.record
                message = getattr(rec, "message", None) or rec_ref.text
                match = _ACK_ERROR.search(message)
                if match is None:
                    continue
                proxy = _CONN_SUFFIX.sub("", match.group("con"))
                per_proxy.setdefault(proxy, _Lines()).add(
                    getattr(rec, "time", None), rec_ref.line, rec_ref.text,
                    f"{match.group('type') or '?'}: {match.group('error')[:140]}")
            for proxy, lines in sorted(per_proxy.items()):
                ref = refs.get(_proxy_pod(proxy))
                if ref is None:
                    continue  # a sidecar or gateway: not a ztunnel
                errors = "; ".join(f"{d} (x{n})" for d, n in sorted(lines.details.items()))
                message = (f"istiod {log.pod} logged {lines.span()} of 'ACK ERROR' for ztunnel {ref.pod} on node "
                           f"{ref.node} (it rejected pushes): {errors}.")
                yield ctx.finding("istiod-ack-error", message, title=TITLES["istiod-ack-error"], severity="error",
                                  resources=[_zt_resource(ref)], evidence=lines.evidence(log.path),
                                  remediation=REMEDIATION["istiod-ack-error"],
                                  references=REFERENCES["istiod-ack-error"])


def _manifest_pointer(model: Any, path: str) -> str:
    """The JSON pointer of an artifact's entry in manifest.json (``/artifacts/<i>``)."""
    for i, art in enumerate(model.manifest.artifacts):
        if art.path == path:
            return f"/artifacts/{i}"
    return "/artifacts"


def _zt_resource(ref: Any) -> Resource:
    return Resource("Pod", ref.pod, ref.namespace or None, node=ref.node or None, ztunnel=ref.pod)
