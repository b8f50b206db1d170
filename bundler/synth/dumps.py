"""ztunnel's ``/config_dump`` and istiod's debug views of the synthetic mesh, in the shapes of the Istio
version the scenario names (formats.md sections 2 and 3)."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta
from typing import Any

from bundler.synth.certs import CertificateAuthority, IssuedCert
from bundler.synth.cluster import Cluster, Pod
from bundler.synth.faults import Effects
from bundler.synth.mesh import MeshView

ADDRESS_TYPE = "type.googleapis.com/istio.workload.Address"
AUTHORIZATION_TYPE = "type.googleapis.com/istio.security.Authorization"
RUST_VERSIONS = {22: "1.77.2", 23: "1.79.0", 24: "1.81.0", 25: "1.83.0", 26: "1.85.0", 27: "1.86.0",
                 28: "1.88.0", 29: "1.89.0", 30: "1.90.0", 31: "1.91.0"}


def rfc3339(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def git_revision(version: str) -> str:
    return hashlib.sha1(f"istio-{version}".encode()).hexdigest()


def _minor(version: str) -> int:
    return int(version.split(".")[1])


class DumpRenderer:
    def __init__(self, cluster: Cluster, mesh: MeshView, effects: Effects) -> None:
        self.cluster = cluster
        self.mesh = mesh
        self.fx = effects
        sc = cluster.scenario
        root_start = sc.now - timedelta(days=400)
        self.ca = CertificateAuthority(sc.seed, sc.trust_domain, root_start, root_start + timedelta(days=3650))
        self.foreign_ca = CertificateAuthority(f"{sc.seed}-foreign", sc.trust_domain, root_start,
                                               root_start + timedelta(days=3650))
        self._views: dict[int, tuple[dict[str, Any], list, list, list]] = {}
        self._flows_in: dict[str, list] = {}
        self._flows_out: dict[str, list] = {}
        for f in cluster.flows:
            self._flows_out.setdefault(f.source.key, []).append(f)
            self._flows_in.setdefault(f.destination.key, []).append(f)

    def _view(self, minor: int) -> tuple[dict[str, Any], list, list, list]:
        """Workloads, stale workloads, services and policies as a ztunnel of that minor version shows them;
        computed once and shared by every node's dump (each ztunnel holds the whole mesh)."""
        if minor not in self._views:
            mesh = self.mesh if minor == self.mesh.minor else MeshView(self.cluster, minor)
            workloads = sorted(((p.key, mesh.ztunnel_workload(p)) for p in mesh.workload_pods),
                               key=lambda item: item[1]["uid"])
            self._views[minor] = (
                dict(workloads),
                [mesh.ztunnel_workload(p) for p in self.fx.stale_workloads],
                [mesh.ztunnel_service(s) for s in sorted(self.cluster.services, key=lambda s: s.hostname)],
                mesh.ztunnel_policies(),
            )
        return self._views[minor]

    # --- ztunnel ---------------------------------------------------------------------------------------------

    def ztunnel_dump(self, node: str) -> dict[str, Any]:
        version = self.cluster.ztunnel_versions[node]
        minor = _minor(version)
        missing = self.fx.missing_workloads.get(node, set())
        drift = self.fx.field_drift.get(node, {})
        all_workloads, stale, services, policies = self._view(minor)
        workloads = []
        for key, wl in all_workloads.items():
            if key in missing:
                continue
            if key in drift:
                wl = {**wl, **drift[key]}
            workloads.append(wl)
        if stale:
            workloads = sorted(workloads + stale, key=lambda w: w["uid"])
        if missing:
            services = [self._without_endpoints(s, missing) for s in services]
        dump: dict[str, Any] = {
            "certificates": self.certificates(node, minor),
            "config": self.config(node, version),
            "stagedServices": {},
            "staticConfig": {"policies": [], "services": [], "workloads": []},
            "version": self.version(version),
            "workloadState": self.workload_state(node, minor),
        }
        if minor >= 23:
            dump["workloads"] = workloads
            dump["services"] = services
            dump["policies"] = policies
        else:  # 1.22: maps keyed by network/address and namespace/name
            dump["workloads"] = {f"/{w['workloadIps'][0]}": w for w in workloads}
            dump["services"] = {s["vips"][0]: s for s in services}
            dump["policies"] = {f"{p['namespace']}/{p['name']}": p for p in policies}
        return dump

    def _without_endpoints(self, service: dict[str, Any], missing: set[str]) -> dict[str, Any]:
        uids = {f"{self.cluster.scenario.cluster_id}//Pod/{key}" for key in missing}
        endpoints = {k: v for k, v in service["endpoints"].items() if v["workloadUid"] not in uids}
        return service if len(endpoints) == len(service["endpoints"]) else {**service, "endpoints": endpoints}

    def local_hbone_pods(self, node: str) -> list[Pod]:
        return [p for p in self.cluster.pods_on(node) if self.mesh.protocol(p) == "HBONE" and p.component != "ztunnel"]

    def certificates(self, node: str, minor: int) -> list[dict[str, Any]]:
        sc = self.cluster.scenario
        ca = self.foreign_ca if node in self.fx.foreign_root else self.ca
        out = []
        identities = sorted({self.mesh.identity(p) for p in self.local_hbone_pods(node)})
        for identity in identities:
            fault = self.fx.cert_state.get((node, identity))
            if fault == "missing":
                continue
            if fault in ("unavailable", "initializing"):
                state = ("Initializing" if fault == "initializing" else
                         "Unavailable: signing gRPC error (The service is currently unavailable): "
                         "error trying to connect: tcp connect error: Connection refused (os error 111)")
                out.append({"certChain": [], "identity": identity, "rootCerts": [], "state": state}
                           if minor >= 26 else {"certChain": [], "identity": identity, "state": state})
                continue
            # Certificates rotate at half their 24h life; spread the issue times deterministically.
            offset = int(hashlib.sha256(f"{node}{identity}".encode()).hexdigest()[:6], 16) % (11 * 3600)
            issued = sc.now - timedelta(seconds=offset + 600)
            if fault == "expired":
                issued = sc.now - timedelta(hours=30)
            leaf = ca.issue(identity, issued, issued + timedelta(hours=24), node)
            entry: dict[str, Any] = {"identity": identity, "state": "Available"}
            if minor >= 26:
                entry["certChain"] = [self._cert(leaf)]
                entry["rootCerts"] = [self._cert(ca.root)]
            else:
                entry["certChain"] = [self._cert(leaf), self._cert(ca.root)]
            out.append(entry)
        return out

    @staticmethod
    def _cert(cert: IssuedCert) -> dict[str, str]:
        return {
            "expirationTime": rfc3339(cert.expiration),
            "pem": base64.b64encode(cert.pem.encode()).decode(),
            "serialNumber": str(cert.serial),
            "validFrom": rfc3339(cert.valid_from),
        }

    def config(self, node: str, version: str) -> dict[str, Any]:
        sc = self.cluster.scenario
        return {
            "adminAddr": {"Localhost": [True, 15000]},
            "caAddress": "https://istiod.istio-system.svc:15012",
            "clusterDomain": "cluster.local",
            "clusterId": sc.cluster_id,
            "dnsProxy": _minor(version) >= 25,
            "fakeCa": False,
            "inpodUds": "/var/run/ztunnel/ztunnel.sock",
            "localNode": node,
            "network": "",
            "numWorkerThreads": 2,
            "packetMark": 1337,
            "proxyMetadata": {"ISTIO_VERSION": version, "CLUSTER_ID": sc.cluster_id},
            "proxyMode": "Shared",
            "readinessAddr": {"SocketAddr": "[::]:15021"},
            "statsAddr": {"SocketAddr": "[::]:15020"},
            "xdsAddress": "https://istiod.istio-system.svc:15012",
            "xdsOnDemand": False,
        }

    @staticmethod
    def version(version: str) -> dict[str, Any]:
        out = {
            "buildProfile": "release",
            "buildStatus": "Clean",
            "gitRevision": git_revision(version),
            "istioVersion": version,
            "rustVersion": RUST_VERSIONS.get(_minor(version), "1.90.0"),
            "version": version,
        }
        if _minor(version) >= 27:
            out["cryptoProvider"] = "aws-lc"
        return out

    def workload_state(self, node: str, minor: int) -> dict[str, Any]:
        state: dict[str, Any] = {}
        flows_in, flows_out = self._flows_in, self._flows_out
        for pod in self.cluster.pods_on(node):
            if pod.component != "app" or not self.cluster.enrolled(pod):
                continue
            entry: dict[str, Any] = {
                "info": {"name": pod.name, "namespace": pod.namespace, "serviceAccount": pod.service_account},
                "state": "Up",
            }
            inbound, outbound = [], []
            for i, f in enumerate(flows_in.get(pod.key, [])[:2]):
                conn = {"actualDst": f"{pod.ip}:{f.target_port}", "originalDst": None,
                        "src": f"{f.source.ip}:{40000 + i}"}
                if minor >= 26:
                    conn["protocol"] = "HBONE"
                inbound.append(conn)
            for i, f in enumerate(flows_out.get(pod.key, [])[:2]):
                conn = {"actualDst": f"{f.destination.ip}:15008", "originalDst": f"{f.service.cluster_ip}:{f.port}",
                        "src": f"{pod.ip}:{50000 + i}"}
                if minor >= 26:
                    conn["protocol"] = "HBONE"
                outbound.append(conn)
            entry["connections"] = {"inbound": inbound, "outbound": outbound}
            state[pod.uid] = entry
        return state

    # --- istiod ----------------------------------------------------------------------------------------------

    def ambientz(self) -> dict[str, Any]:
        return {
            "workloads": [self.mesh.proto_workload(p, ascii_ips=True) for p in self.mesh.workload_pods],
            "services": [self.mesh.proto_service(s, ascii_ips=True) for s in self.cluster.services],
            "policies": self.mesh.proto_policies(),
        }

    def per_proxy_full(self) -> bool:
        mode = self.cluster.scenario.per_proxy_dump
        if mode == "auto":
            return not self.cluster.scenario.at_least(1, 25)
        return mode == "full"

    def proxy_config_dump(self) -> dict[str, Any]:
        if not self.per_proxy_full():
            return {}
        configs = [{"@type": ADDRESS_TYPE, "workload": self.mesh.proto_workload(p)} for p in self.mesh.workload_pods]
        configs += [{"@type": ADDRESS_TYPE, "service": self.mesh.proto_service(s)} for s in self.cluster.services]
        return {"configs": configs}

    def proxy_wads(self) -> dict[str, Any]:
        return {"configs": [{"@type": AUTHORIZATION_TYPE, **p} for p in self.mesh.proto_policies()]}

    def syncz(self, replica: str) -> list[dict[str, Any]]:
        sc = self.cluster.scenario
        out = []
        for node in sorted(self.cluster.ztunnels):
            zt = self.cluster.ztunnels[node]
            if self.cluster.xds_replica[zt.name] != replica or node in self.fx.xds_disconnected:
                continue
            nonce = hashlib.sha256(f"{sc.seed}{replica}".encode()).hexdigest()[:12]
            acked = "" if node in self.fx.xds_nack else nonce
            sent_time = rfc3339(sc.now - timedelta(minutes=3))
            resources = {
                ADDRESS_TYPE: {"sent": nonce, "acked": acked, "sentTime": sent_time},
                AUTHORIZATION_TYPE: {"sent": nonce, "acked": nonce, "sentTime": sent_time},
            }
            if node in self.fx.xds_nack:
                resources[ADDRESS_TYPE]["lastError"] = "rejected: unknown enum: invalid target"
            out.append({
                "cluster_id": sc.cluster_id,
                "proxy": f"{zt.name}.{zt.namespace}",
                "proxy_type": "ztunnel",
                "istio_version": self.cluster.ztunnel_versions[node],
                "resources": resources,
            })
        return out

    def istiod_version_text(self) -> str:
        version = self.cluster.istiod_version
        return f"{version}-{git_revision(version)}-Clean\n"
