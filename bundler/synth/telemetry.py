"""Logs and metrics of the synthetic mesh: what each ztunnel, istiod and istio-cni pod would have written
during the scenario's window, given its traffic and faults.

Each connection leaves an ``outbound`` access line in the source node's ztunnel and an ``inbound`` one in
the destination node's ztunnel (unless a fault stops it on the way), and the matching ``istio_tcp_*``
counters with ``reporter="source"`` / ``"destination"``.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bundler.formats import istio_log, openmetrics, ztunnel_log
from bundler.synth.cluster import HBONE_PORT, Cluster, Flow
from bundler.synth.dumps import ADDRESS_TYPE, git_revision
from bundler.synth.faults import Effects
from bundler.synth.mesh import MeshView

XDS_ADDRESS = "https://istiod.istio-system.svc:15012"


@dataclass
class NodeTelemetry:
    current: list[ztunnel_log.ZtunnelLogRecord] = field(default_factory=list)
    previous: list[ztunnel_log.ZtunnelLogRecord] = field(default_factory=list)
    counters: dict[tuple[str, tuple[tuple[str, str], ...]], int] = field(default_factory=lambda: defaultdict(int))


@dataclass
class Telemetry:
    ztunnel: dict[str, NodeTelemetry]
    istiod: dict[str, list[istio_log.IstioLogRecord]]
    cni: dict[str, list[istio_log.IstioLogRecord]]


def _rec(time: datetime, level: str, target: str, message: str, fields: tuple = (), spans: tuple = ()):
    return ztunnel_log.ZtunnelLogRecord(time=time, level=level, target=target, spans=spans, message=message,
                                        fields=tuple(fields))


class TelemetryBuilder:
    def __init__(self, cluster: Cluster, mesh: MeshView, effects: Effects) -> None:
        self.cluster = cluster
        self.mesh = mesh
        self.fx = effects
        self.sc = cluster.scenario
        self.rng = random.Random(f"{self.sc.seed}/telemetry")
        self.start = cluster.start
        self.now = self.sc.now
        self.restart_at = {node: self.now - timedelta(minutes=20) for node in effects.oom_nodes}

    def build(self) -> Telemetry:
        nodes = {n.name: NodeTelemetry() for n in self.cluster.nodes}
        for node, zt in self.cluster.ztunnels.items():
            if node in self.restart_at:
                self._startup(nodes[node].previous, node, self.now - timedelta(minutes=50))
                self._startup(nodes[node].current, node, self.restart_at[node])
        for flow in self.cluster.flows:
            self._flow(flow, nodes)
        for node in nodes:
            self._faults(node, nodes[node])
            self._gauges(node, nodes[node])
        for tel in nodes.values():
            tel.current.sort(key=lambda r: r.time)
            tel.previous.sort(key=lambda r: r.time)
        return Telemetry(nodes, self._istiod(), self._cni())

    def _log_for(self, tel: NodeTelemetry, node: str, when: datetime) -> list:
        restart = self.restart_at.get(node)
        return tel.previous if restart is not None and when < restart else tel.current

    # --- ztunnel ---------------------------------------------------------------------------------------------

    def _startup(self, out: list, node: str, at: datetime) -> None:
        version = self.cluster.ztunnel_versions[node]
        build = (f'version.BuildInfo{{Version:"{version}", GitRevision:"{git_revision(version)}", '
                 f'RustVersion:"1.88.0", BuildProfile:"release", BuildStatus:"Clean", IstioVersion:"{version}"}}')
        t = at
        out.append(_rec(t, "info", "ztunnel", f"version: {build}"))
        for component, port in (("admin", "[::1]:15000"), ("stats", "[::]:15020"), ("readiness", "[::]:15021")):
            t += timedelta(microseconds=850)
            out.append(_rec(t, "info", "hyper_util", "listener established",
                            (("address", port), ("component", component))))
        t += timedelta(milliseconds=40)
        out.append(_rec(t, "info", "xds::client", "Stream established", spans=(("xds", (("id", "1"),)),)))
        t += timedelta(milliseconds=12)
        out.append(_rec(t, "info", "readiness", "Task 'state manager' complete (52.1ms), still awaiting 1 tasks"))
        t += timedelta(milliseconds=30)
        out.append(_rec(t, "info", "readiness", "Task 'proxy' complete (82.4ms), marking server ready"))

    def _labels(self, reporter: str, flow: Flow, flags: str, mtls: bool) -> tuple[tuple[str, str], ...]:
        src, dst, svc = flow.source, flow.destination, flow.service
        cluster_id = self.sc.cluster_id
        return (
            ("reporter", reporter),
            ("source_workload", src.workload_name), ("source_canonical_service", src.app),
            ("source_canonical_revision", src.version), ("source_workload_namespace", src.namespace),
            ("source_principal", self.mesh.identity(src) if mtls else "unknown"), ("source_app", src.app),
            ("source_version", src.version), ("source_cluster", cluster_id),
            ("destination_service", svc.hostname), ("destination_service_namespace", svc.namespace),
            ("destination_service_name", svc.name), ("destination_workload", dst.workload_name),
            ("destination_canonical_service", dst.app), ("destination_canonical_revision", dst.version),
            ("destination_workload_namespace", dst.namespace),
            ("destination_principal", self.mesh.identity(dst) if mtls else "unknown"), ("destination_app", dst.app),
            ("destination_version", dst.version), ("destination_cluster", cluster_id),
            ("request_protocol", "tcp"), ("response_flags", flags),
            ("connection_security_policy", "mutual_tls" if mtls else "unknown"),
        )

    def _count(self, tel: NodeTelemetry, labels, sent: int, recv: int, failed: bool) -> None:
        tel.counters[("istio_tcp_connections_opened", labels)] += 1
        tel.counters[("istio_tcp_connections_closed", labels)] += 1
        tel.counters[("istio_tcp_sent_bytes", labels)] += sent
        tel.counters[("istio_tcp_received_bytes", labels)] += recv
        if failed and self.sc.at_least(1, 29):
            tel.counters[("istio_tcp_connections_failed", labels)] += 1

    def _outcome(self, flow: Flow) -> str:
        src, dst = flow.source, flow.destination
        if dst.namespace in self.fx.hbone_blocked and self.cluster.enrolled(dst) and self.cluster.enrolled(src):
            return "hbone-blocked"
        if dst.key in self.fx.denied:
            return "denied"
        foreign = self.fx.foreign_root
        if (src.node in foreign) != (dst.node in foreign) and self.cluster.enrolled(src) and self.cluster.enrolled(dst):
            return "unknown-issuer"
        return "ok"

    def _flow(self, flow: Flow, nodes: dict[str, NodeTelemetry]) -> None:
        src, dst, svc = flow.source, flow.destination, flow.service
        # A ztunnel that lost its xDS stream keeps proxying with the config it has: traffic still flows.
        src_captured = self.cluster.enrolled(src)
        dst_captured = self.cluster.enrolled(dst)
        outcome = self._outcome(flow)
        window = (self.now - self.start).total_seconds()
        rng = random.Random(f"{self.sc.seed}/flow/{src.key}/{dst.key}/{svc.key}")
        hbone = src_captured and dst_captured
        for _ in range(flow.connections):
            end = self.start + timedelta(seconds=rng.uniform(1, window - 1))
            port = rng.randrange(32768, 60999)
            sent, recv = rng.randrange(200, 4000), rng.randrange(300, 40000)
            duration = rng.randrange(1, 900)
            if outcome == "hbone-blocked":
                self._outbound(nodes, flow, end, port, 0, 0, "10002ms", "error",
                               "connection timed out, maybe a NetworkPolicy is blocking HBONE port 15008: "
                               "deadline has elapsed", "NETWORK_POLICY" if self.sc.at_least(1, 29) else "CONNECT")
                continue
            if outcome == "unknown-issuer":
                self._outbound(nodes, flow, end, port, 0, 0, f"{duration}ms", "error",
                               "tls error: invalid peer certificate: UnknownIssuer",
                               "TLS_FAILURE" if self.sc.at_least(1, 29) else "CONNECT")
                continue
            if outcome == "denied":
                policy = self.fx.denied[dst.key]
                self._outbound(nodes, flow, end, port, 0, 0, f"{duration}ms", "error", "http status: 401 Unauthorized",
                               "CONNECT")
                self._inbound(nodes, flow, end - timedelta(milliseconds=1), port, 0, 0, "0ms", "error",
                              "connection closed due to policy rejection: allow policies exist, but none allowed",
                              "DENY", policy_hint=policy)
                continue
            if src_captured:
                self._outbound(nodes, flow, end, port, sent, recv, f"{duration}ms", "info", None, "-", hbone=hbone)
            if dst_captured:
                self._inbound(nodes, flow, end - timedelta(milliseconds=1), port, recv, sent,
                              f"{max(duration - 1, 0)}ms", "info", None, "-", mtls=hbone)

    def _outbound(self, nodes, flow: Flow, end, port, sent, recv, duration, level, error, flags, hbone=True) -> None:
        src, dst, svc = flow.source, flow.destination, flow.service
        fields: list[tuple[str, object]] = [
            ("src.addr", f"{src.ip}:{port}"), ("src.workload", src.name), ("src.namespace", src.namespace),
            ("src.identity", self.mesh.identity(src)),
        ]
        if hbone:
            fields += [("dst.addr", f"{dst.ip}:{HBONE_PORT}"), ("dst.hbone_addr", f"{dst.ip}:{flow.target_port}")]
        else:
            fields += [("dst.addr", f"{dst.ip}:{flow.target_port}")]
        fields += [("dst.service", svc.hostname), ("dst.workload", dst.name), ("dst.namespace", dst.namespace)]
        if hbone:
            fields.append(("dst.identity", self.mesh.identity(dst)))
        fields += [("direction", "outbound"), ("bytes_sent", sent), ("bytes_recv", recv), ("duration", duration)]
        if error:
            fields.append(("error", error))
        tel = nodes[src.node]
        self._log_for(tel, src.node, end).append(_rec(end, level, "access", "connection complete", fields))
        self._count(tel, self._labels("source", flow, flags, hbone), sent, recv, error is not None)

    def _inbound(self, nodes, flow: Flow, end, port, sent, recv, duration, level, error, flags, mtls=True,
                 policy_hint: str | None = None) -> None:
        src, dst, svc = flow.source, flow.destination, flow.service
        fields: list[tuple[str, object]] = [("src.addr", f"{src.ip}:{port}"), ("src.workload", src.name),
                                            ("src.namespace", src.namespace)]
        if mtls:
            fields.append(("src.identity", self.mesh.identity(src)))
            fields += [("dst.addr", f"{dst.ip}:{HBONE_PORT}"), ("dst.hbone_addr", f"{dst.ip}:{flow.target_port}")]
        else:
            fields.append(("dst.addr", f"{dst.ip}:{flow.target_port}"))
        fields += [("dst.service", svc.hostname), ("dst.workload", dst.name), ("dst.namespace", dst.namespace)]
        if mtls:
            fields.append(("dst.identity", self.mesh.identity(dst)))
        fields += [("direction", "inbound"), ("bytes_sent", sent), ("bytes_recv", recv), ("duration", duration)]
        if error:
            fields.append(("error", error))
        tel = nodes[dst.node]
        self._log_for(tel, dst.node, end).append(_rec(end, level, "access", "connection complete", fields))
        self._count(tel, self._labels("destination", flow, flags, mtls), recv, sent, error is not None)

    def _every(self, step: timedelta, jitter_seed: str):
        rng = random.Random(f"{self.sc.seed}/{jitter_seed}")
        t = self.start + timedelta(seconds=rng.uniform(0, step.total_seconds()))
        while t < self.now:
            yield t
            t += step + timedelta(milliseconds=rng.randrange(0, 900))

    def _faults(self, node: str, tel: NodeTelemetry) -> None:
        xds_span = (("xds", (("id", "2"),)),)
        if node in self.fx.xds_disconnected:
            for t in self._every(timedelta(seconds=60), f"xds/{node}"):
                tel.current.append(_rec(t, "warn", "xds::client",
                                        f"XDS client connection error: gRPC connection error connecting to {XDS_ADDRESS}: "
                                        'status: Unknown, message: "client error (Connect)", source: tcp connect error: '
                                        "Connection refused (os error 111), retrying in 15s", spans=xds_span))
                tel.counters[("istio_xds_connection_terminations", (("reason", "ConnectionError"),))] += 1
        if node in self.fx.xds_nack:
            rejected = self._rejected_resource()
            nonce = str(uuid.UUID(bytes=hashlib.sha256(f"{self.sc.seed}/nonce/{node}".encode()).digest()[:16]))
            for t in self._every(timedelta(minutes=5), f"nack/{node}"):
                tel.current.append(_rec(t, "error", "xds::client", "sending response",
                                        (("type_url", ADDRESS_TYPE), ("nonce", nonce), ("type", "Nack"),
                                         ("error", f"{rejected}: unknown enum: invalid target")),
                                        spans=xds_span))
        for (cert_node, identity), state in sorted(self.fx.cert_state.items()):
            if cert_node != node or state not in ("unavailable", "initializing"):
                continue
            for t in self._every(timedelta(minutes=2), f"cert/{node}/{identity}"):
                tel.current.append(_rec(t, "warn", "identity::manager",
                                        "certificate fetch failed (signing gRPC error (The service is currently "
                                        "unavailable): error trying to connect: tcp connect error: Connection refused "
                                        "(os error 111)) and no valid existing certificate; will retry in 10s",
                                        (("id", identity),)))
        for key in sorted(self.fx.missing_workloads.get(node, ())):
            pod = self.cluster.pod_by_key(key)
            if pod is None or pod.node != node:
                continue
            for t in self._every(timedelta(minutes=3), f"missing/{node}/{key}"):
                tel.current.append(_rec(t, "warn", "state", f"timed out waiting for workload '{pod.ip}' from xds"))

    def _rejected_resource(self) -> str:
        """The workload a NACK names: the scenario's first app workload (what istiod sent and ztunnel refused)."""
        pods = sorted((p for p in self.mesh.workload_pods if p.component == "app"), key=lambda p: p.key)
        return pods[0].istio_uid(self.sc.cluster_id) if pods else f"{self.sc.cluster_id}//Pod/istio-system/istiod"

    def _gauges(self, node: str, tel: NodeTelemetry) -> None:
        version = self.cluster.ztunnel_versions[node]
        tel.counters[("istio_build", (("component", "ztunnel"), ("tag", version)))] = 1
        if node not in self.fx.xds_disconnected:
            tel.counters[("istio_xds_connection_terminations", (("reason", "Reconnect"),))] += 1
            if self.sc.at_least(1, 24):
                tel.counters[("istio_xds_message", (("url", ADDRESS_TYPE),))] += 3 + len(self.cluster.pods) // 50
        local = [p for p in self.cluster.pods_on(node) if p.component == "app" and self.cluster.enrolled(p)]
        tel.counters[("workload_manager_active_proxy_count", ())] = len(local)
        tel.counters[("workload_manager_pending_proxy_count", ())] = 0
        tel.counters[("workload_manager_proxies_started", ())] = len(local)
        tel.counters[("workload_manager_proxies_stopped", ())] = 0

    # --- istiod and istio-cni --------------------------------------------------------------------------------

    def _istiod(self) -> dict[str, list[istio_log.IstioLogRecord]]:
        out: dict[str, list[istio_log.IstioLogRecord]] = {p.name: [] for p in self.cluster.istiods}
        counter = 10
        for node, zt in sorted(self.cluster.ztunnels.items()):
            replica = self.cluster.xds_replica[zt.name]
            if node in self.fx.xds_disconnected:
                continue
            if node in self.restart_at:
                counter += 1
                out[replica].append(istio_log.IstioLogRecord(
                    self.restart_at[node] + timedelta(milliseconds=35), "info", "ads",
                    f"ADS: new connection for node:{zt.name}.{zt.namespace}-{counter}"))
            if node in self.fx.xds_nack:
                counter += 1
                for t in self._every(timedelta(minutes=5), f"istiod-nack/{node}"):
                    out[replica].append(istio_log.IstioLogRecord(
                        t, "warn", "ads", f"ADS:WDS: ACK ERROR {zt.name}.{zt.namespace}-{counter} "
                        "Internal:rejected: unknown enum: invalid target"))
        namespace = next((p.namespace for p in self.mesh.workload_pods if p.component == "app"), "istio-system")
        for replica in out:
            for t in self._every(timedelta(minutes=10), f"push/{replica}"):
                out[replica].append(istio_log.IstioLogRecord(
                    t, "info", "ads", f"Push debounce stable[12] 1 for config Pod/{namespace}: 100.2ms since last "
                    "change, 100.3ms since last push, full=false"))
            out[replica].sort(key=lambda r: r.time)
        return out

    def _cni(self) -> dict[str, list[istio_log.IstioLogRecord]]:
        out: dict[str, list[istio_log.IstioLogRecord]] = {n.name: [] for n in self.cluster.nodes}
        scope = "cni-agent" if self.sc.at_least(1, 24) else "ambient"
        for node, at in self.restart_at.items():
            out[node].append(istio_log.IstioLogRecord(at - timedelta(seconds=1), "info", scope,
                                                      "ztunnel disconnected, total connected: 0"))
            out[node].append(istio_log.IstioLogRecord(at + timedelta(milliseconds=20), "info", scope,
                                                      "new ztunnel connected, total connected: 1"))
            for pod in self.cluster.pods_on(node):
                if pod.component == "app" and self.cluster.enrolled(pod):
                    out[node].append(istio_log.IstioLogRecord(at + timedelta(milliseconds=25), "info", scope,
                                                              "sending pod to ztunnel as part of snapshot",
                                                              (("uid", pod.uid),)))
        for key, state in sorted(self.fx.cni_failed.items()):
            pod = self.cluster.pod_by_key(key)
            assert pod is not None
            labels = (("ns", pod.namespace), ("name", pod.name))
            for t in self._every(timedelta(minutes=4), f"cni/{key}"):
                if state == "pending":
                    out[pod.node].append(istio_log.IstioLogRecord(
                        t, "error", scope, "failed to add pod to ztunnel: pod partially added, annotating with "
                        "pending status", labels))
                    out[pod.node].append(istio_log.IstioLogRecord(
                        t + timedelta(milliseconds=2), "warn", scope, "Unable to send pod to ztunnel. Will retry. "
                        "AddPodToMesh returned: no ztunnel connection", labels))
                else:
                    out[pod.node].append(istio_log.IstioLogRecord(
                        t, "error", scope, "Failed capturing pod, will not retry. AddPodToMesh returned: failed to "
                        f"update POD inpod: {pod.namespace}/{pod.name} failed to create inpod rules: netns not found",
                        labels))
        for records in out.values():
            records.sort(key=lambda r: r.time)
        return out


def render_ztunnel_log(records: list, fmt: str) -> bytes:
    render = ztunnel_log.render_json if fmt == "json" else ztunnel_log.render_plain
    return "".join(render(r) + "\n" for r in records).encode()


def render_istio_log(records: list, fmt: str) -> bytes:
    render = istio_log.render_json if fmt == "json" else istio_log.render_plain
    return "".join(render(r) + "\n" for r in records).encode()


def render_metrics(tel: NodeTelemetry) -> bytes:
    """ztunnel's /stats/prometheus: one family per metric, in catalog order."""
    by_family: dict[str, list[openmetrics.Sample]] = defaultdict(list)
    for (name, labels), value in sorted(tel.counters.items()):
        by_family[name].append(openmetrics.Sample(labels, value))
    order = list(openmetrics.ZTUNNEL_METRICS)
    families = [openmetrics.ztunnel_family(name, by_family[name]) for name in sorted(by_family, key=order.index)]
    return openmetrics.render(families).encode()
