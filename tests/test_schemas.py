"""The JSON Schemas (schemas/*.schema.json) and bundler.validation, against upstream fixtures and hand-built
documents of every artifact kind."""

from __future__ import annotations

import base64
import copy
import ipaddress
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from jsonschema import Draft202012Validator

from bundler import layout
from bundler.errors import ArtifactError, BundleError
from bundler.resources import schemas_dir
from bundler.validation import (
    SCHEMA_BASE_URI,
    TEXT_KINDS,
    UnsupportedFormatError,
    ValidationIssue,
    detect_kind,
    kind_from_path,
    legacy_layout,
    load_validator,
    parse_json,
    schema_kinds,
    schema_registry,
    validate_bytes,
    validate_document,
)

UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "upstream"
ISTIOCTL_TESTDATA = "istioctl/pkg/writer/ztunnel/configdump/testdata"
FIXTURE_122 = UPSTREAM / "istio" / ISTIOCTL_TESTDATA / "dump.json"
FIXTURE_LEGACY = UPSTREAM / "istio" / "@6e34ef5a88c" / ISTIOCTL_TESTDATA / "dump.json"
LOCALHOST_YAML = UPSTREAM / "ztunnel" / "examples" / "localhost.yaml"

SCHEMA_FILES = sorted(schemas_dir().glob("*.schema.json"))
# Schema files that hold shared $defs only and are not artifact kinds.
LIBRARY_SCHEMAS = {"istio-proto", "kubernetes"}
# The manifest schema is written separately; the tests here cover every other JSON kind.
MY_KINDS = sorted(layout.JSON_KINDS - {layout.KIND_MANIFEST})

ADDRESS = "type.googleapis.com/istio.workload.Address"
AUTHORIZATION = "type.googleapis.com/istio.security.Authorization"


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def ip_bytes(ip: str) -> str:
    """An IP as jsonpb renders proto bytes: base64 of the raw 4/16 bytes."""
    return b64(ipaddress.ip_address(ip).packed)


def pointers(document: object, kind: str) -> list[str]:
    return [issue.pointer for issue in validate_document(document, kind)]


def set_at(document: Any, pointer: str, value: object) -> Any:
    """A deep copy of ``document`` with the value at the JSON pointer ``pointer`` replaced (or added)."""
    document = copy.deepcopy(document)
    *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in pointer.split("/")[1:]]
    target = document
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return document


# Properties whose value is a map (keys are data, not field names): an unknown key there is a real error.
MAP_PROPERTIES = frozenset(
    {
        "workloads", "services", "policies", "ports", "port", "endpoints", "stagedServices", "workloadState",
        "resources", "labels", "annotations", "selector", "matchLabels", "nodeSelector", "data", "binaryData",
        "capacity", "allocatable",
    }
)
# Properties whose value is a map of maps.
MAP_OF_MAPS_PROPERTIES = frozenset({"stagedServices"})


def with_unknown_keys(value: Any, is_map: bool = False, values_are_maps: bool = False) -> Any:
    """A deep copy with an unknown key added to every object that is not a map (future Istio versions add
    fields)."""
    if isinstance(value, dict):
        copied = {
            key: with_unknown_keys(
                item,
                is_map=values_are_maps or (not is_map and key in MAP_PROPERTIES),
                values_are_maps=not is_map and key in MAP_OF_MAPS_PROPERTIES,
            )
            for key, item in value.items()
        }
        if not is_map:
            copied["zzFutureField"] = {"added": "in a newer release"}
        return copied
    if isinstance(value, list):
        return [with_unknown_keys(item) for item in value]
    return value


# --- hand-built documents ----------------------------------------------------------------------------------


def pem_b64() -> str:
    return b64("-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n")


def sorted_keys(value: Any) -> Any:
    """Keys in alphabetical order at every depth, as ztunnel >= 1.22 writes them (serde_json without
    preserve_order)."""
    if isinstance(value, dict):
        return {key: sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [sorted_keys(item) for item in value]
    return value


def ztunnel_dump_123() -> dict[str, Any]:
    """A 1.23+ (list-layout) ztunnel dump with the fields of formats.md 2.3-2.9, keys alphabetical as ztunnel
    writes them, base64 PEM certificates with rootCerts (1.26+) and the >=1.24 endpoint shape."""
    return sorted_keys(_ztunnel_dump_123())


def _ztunnel_dump_123() -> dict[str, Any]:
    uid = "Kubernetes//Pod/bookinfo/ratings-v1-6484c4d9bb-mdxm5"
    cert = {
        "expirationTime": "2026-03-11T12:57:26Z",
        "pem": pem_b64(),
        "serialNumber": "271676055104741785552467469040731750696653685944",
        "validFrom": "2026-03-10T12:57:26Z",
    }
    return {
        "certificates": [
            {
                "certChain": [cert],
                "identity": "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings",
                "rootCerts": [dict(cert, serialNumber="1")],
                "state": "Available",
            },
            {"certChain": [], "identity": "spiffe://cluster.local/ns/a/sa/b", "state": "Initializing"},
            {
                "certChain": [],
                "identity": "spiffe://cluster.local/ns/a/sa/c",
                "state": "Unavailable: signing gRPC error (The service is currently unavailable): error trying to connect",
            },
        ],
        "config": {"adminAddr": {"Localhost": [True, 15000]}, "proxyMode": "Shared", "xdsHeaders": [["a", "b"]]},
        "policies": [
            {
                "action": "Allow",
                "dryRun": False,
                "name": "allow-waypoint",
                "namespace": "bookinfo",
                "rules": [
                    [
                        [
                            {
                                "namespaces": [{"Exact": "bookinfo"}, {"Prefix": "team-"}, {"Suffix": "-prod"}],
                                "notPrincipals": [{"Presence": []}],
                                "serviceAccounts": [{"namespace": "bookinfo", "serviceAccount": "waypoint"}],
                                "sourceIps": ["10.0.0.0/8", "fd00::/64"],
                                "destinationPorts": [9080],
                            }
                        ]
                    ]
                ],
                "scope": "WorkloadSelector",
            },
            {"action": "Deny", "dryRun": True, "name": "deny-all", "namespace": "default", "rules": [], "scope": "Namespace"},
        ],
        "services": [
            {
                "canonical": True,
                "cidrVips": [{"cidr": "10.0.0.0/24", "network": ""}],
                "endpoints": {uid: {"port": {"9080": 9080}, "status": "Healthy", "workloadUid": uid}},
                "hostname": "ratings.bookinfo.svc.cluster.local",
                "ipFamilies": "IPv4",
                "loadBalancer": {"healthPolicy": "OnlyHealthy", "mode": "Failover", "routingPreferences": ["Network", "Zone"]},
                "name": "ratings",
                "namespace": "bookinfo",
                "ports": {"15008": 15008, "9080": 0},
                "subjectAltNames": [],
                "visibility": "Public",
                "vips": ["/10.96.95.231", "net2/fd00::1"],
                "waypoint": {"destination": "bookinfo/waypoint.bookinfo.svc.cluster.local", "hboneMtlsPort": 15008},
                "weightedWaypoints": [{"destination": {"destination": "/10.96.65.117", "hboneMtlsPort": 15008}, "weight": 50}],
            }
        ],
        "stagedServices": {"bookinfo/gone.bookinfo.svc.cluster.local": {uid: {"port": {"80": 8080}, "status": "Unhealthy", "workloadUid": uid}}},
        "staticConfig": {"policies": [], "services": [], "workloads": []},
        "version": {
            "buildProfile": "release",
            "buildStatus": "Clean",
            "cryptoProvider": "aws-lc",
            "gitRevision": "62d826530e5ce85764e309170205b293efcbc80b",
            "istioVersion": "1.30.0",
            "rustVersion": "1.88.0",
            "version": "1.30.0",
        },
        "workloadState": {
            "54ce2023-7c77-4bb8-b6c3-eccf619cd6f2": {
                "connections": {
                    "inbound": [{"actualDst": "10.233.97.129:9080", "originalDst": None, "protocol": "HBONE", "src": "10.233.97.150:35078"}],
                    "outbound": [{"actualDst": "[fd00::1]:15008", "originalDst": "ratings.am.svc.cluster.local", "protocol": "DOUBLEHBONE", "src": "10.233.97.129:35380"}],
                },
                "info": {"name": "productpage-v1-796f87b58-97bjk", "namespace": "bookinfo", "serviceAccount": "bookinfo-productpage"},
                "state": "Up",
            },
            "uid1": {"info": {"name": "name", "namespace": "ns", "serviceAccount": "sa"}, "state": "Pending"},
        },
        "workloads": [
            {
                "applicationTunnel": {"port": None, "protocol": "PROXY"},
                "authorizationPolicies": ["bookinfo/allow-waypoint"],
                "canonicalName": "ratings",
                "canonicalRevision": "v1",
                "capacity": 1,
                "clusterId": "Kubernetes",
                "locality": {"region": "eu", "subzone": "", "zone": "eu-1"},
                "name": "ratings-v1-6484c4d9bb-mdxm5",
                "namespace": "bookinfo",
                "nativeTunnel": True,
                "network": "network1",
                "networkMode": "Standard",
                "node": "ambient-worker2",
                "protocol": "HBONE",
                "serviceAccount": "bookinfo-ratings",
                "services": ["bookinfo/ratings.bookinfo.svc.cluster.local"],
                "status": "Healthy",
                "trustDomain": "cluster.local",
                "uid": uid,
                "waypoint": {"destination": "/10.96.65.117", "hboneMtlsPort": 15008},
                "workloadIps": ["10.244.2.54", "fd00::54"],
                "workloadName": "ratings-v1",
                "workloadType": "pod",
            },
            {
                "capacity": 1,
                "clusterId": "Kubernetes",
                "name": "external",
                "namespace": "default",
                "networkMode": "HostNetwork",
                "protocol": "TCP",
                "hostname": "example.com",
                "networkGateway": {"destination": "net2/192.0.2.1", "hboneMtlsPort": 15008},
                "serviceAccount": "default",
                "status": "Unhealthy",
                "trustDomain": "cluster.local",
                "uid": "Kubernetes/networking.istio.io/ServiceEntry/default/external/example.com",
                "workloadIps": [],
                "workloadType": "deployment",
            },
        ],
    }


def ztunnel_dump_122() -> dict[str, Any]:
    """The same state in the 1.22 map layout, with the <=1.23 endpoint shape and hboneSingleTlsPort."""
    dump = ztunnel_dump_123()
    uid = dump["workloads"][0]["uid"]
    workload = dump["workloads"][0]
    workload["waypoint"]["hboneSingleTlsPort"] = None
    service = dump["services"][0]
    service["endpoints"] = {
        f"{uid}:network1/10.244.2.54": {
            "address": "network1/10.244.2.54",
            "port": {"9080": 9080},
            "service": "bookinfo/ratings.bookinfo.svc.cluster.local",
            "workloadUid": uid,
        }
    }
    dump["workloads"] = {"network1/10.244.2.54": workload}
    dump["services"] = {"/10.96.95.231": service}
    dump["policies"] = {f"{p['namespace']}/{p['name']}": p for p in dump["policies"]}
    return dump


def istiod_workload(addresses: list[str]) -> dict[str, Any]:
    return {
        "uid": "Kubernetes//Pod/bookinfo/ratings-v1-6484c4d9bb-mdxm5",
        "name": "ratings-v1-6484c4d9bb-mdxm5",
        "namespace": "bookinfo",
        "addresses": addresses,
        "network": "network1",
        "tunnelProtocol": "HBONE",
        "trustDomain": "cluster.local",
        "serviceAccount": "bookinfo-ratings",
        "waypoint": {"address": {"address": ip_bytes("10.96.65.117")}, "hboneMtlsPort": 15008},
        "node": "ambient-worker2",
        "canonicalName": "ratings",
        "canonicalRevision": "v1",
        "workloadType": "POD",
        "workloadName": "ratings-v1",
        "nativeTunnel": True,
        "services": {"bookinfo/ratings.bookinfo.svc.cluster.local": {"ports": [{"servicePort": 9080, "targetPort": 9080}]}},
        "clusterId": "Kubernetes",
        "locality": {"region": "eu", "zone": "eu-1"},
        "capacity": 2,
        "applicationTunnel": {"protocol": "PROXY", "port": 15088},
    }


def istiod_service(address: str) -> dict[str, Any]:
    return {
        "name": "ratings",
        "namespace": "bookinfo",
        "hostname": "ratings.bookinfo.svc.cluster.local",
        "addresses": [{"network": "network1", "address": address}, {"address": ip_bytes("10.0.0.0"), "length": 24}],
        "ports": [{"servicePort": 9080, "targetPort": 9080, "appProtocol": "HTTP11"}],
        "waypoint": {"hostname": {"namespace": "bookinfo", "hostname": "waypoint.bookinfo.svc.cluster.local"}, "hboneMtlsPort": 15008},
        "loadBalancing": {"routingPreference": ["NETWORK", "ZONE"], "mode": "FAILOVER", "healthPolicy": "ALLOW_ALL"},
        "ipFamilies": "IPV4_ONLY",
        "canonical": True,
        "visibility": "NAMESPACE",
    }


def istiod_authorization() -> dict[str, Any]:
    return {
        "name": "allow-waypoint",
        "namespace": "bookinfo",
        "scope": "WORKLOAD_SELECTOR",
        "groups": [
            {
                "rules": [
                    {
                        "matches": [
                            {
                                "namespaces": [{"exact": "bookinfo"}, {"prefix": "team-"}],
                                "notPrincipals": [{"presence": {}}, {"suffix": "/sa/bad"}],
                                "serviceAccounts": [{"namespace": "bookinfo", "serviceAccount": "waypoint"}],
                                "sourceIps": [{"address": ip_bytes("10.0.0.0"), "length": 8}],
                                "destinationPorts": [9080],
                            }
                        ]
                    }
                ]
            }
        ],
    }


def istiod_config_dump() -> dict[str, Any]:
    """/debug/config_dump?proxyID= on istio <= 1.24: Address Anys, raw IP bytes in base64."""
    return {
        "configs": [
            {"@type": ADDRESS, "workload": istiod_workload([ip_bytes("10.244.2.54")])},
            {"@type": ADDRESS, "service": istiod_service(ip_bytes("10.96.95.231"))},
        ]
    }


def istiod_wads() -> dict[str, Any]:
    return {
        "configs": [
            dict(istiod_authorization(), **{"@type": AUTHORIZATION}),
            {"@type": AUTHORIZATION, "name": "deny-all", "namespace": "default", "scope": "NAMESPACE", "action": "DENY", "dryRun": True},
        ]
    }


def istiod_ambientz() -> dict[str, Any]:
    """/debug/ambientz: IP bytes replaced by the ASCII text of the IP, then base64'd; no policies gives null."""
    return {
        "workloads": [istiod_workload([b64("10.244.2.54")])],
        "services": [istiod_service(b64("10.96.95.231"))],
        "policies": None,
    }


def syncz_new() -> list[dict[str, Any]]:
    return [
        {
            "cluster_id": "Kubernetes",
            "proxy": "ztunnel-8xkq2.istio-system",
            "proxy_type": "ztunnel",
            "istio_version": "1.30.0",
            "resources": {
                ADDRESS: {"sent": "abc", "acked": "abc", "sentTime": "2026-08-22T10:00:00.123456789Z"},
                AUTHORIZATION: {"sent": "def", "acked": "xyz", "sentTime": "2026-08-22T10:00:00Z", "lastError": "NACK: bad policy"},
            },
        }
    ]


def syncz_old() -> list[dict[str, Any]]:
    return [
        {
            "cluster_id": "Kubernetes",
            "proxy": "productpage-v1-1.bookinfo",
            "proxy_version": "1.22.0",
            "istio_version": "1.22.0",
            "cluster_sent": "n1",
            "cluster_acked": "n1",
            "listener_sent": "n2",
            "listener_acked": "n2",
            "route_sent": "n3",
            "route_acked": "n3",
            "endpoint_sent": "n4",
            "endpoint_acked": "n4",
            "extensionconfig_sent": "",
        }
    ]


def pod(name: str = "ztunnel-8xkq2") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "istio-system",
            "uid": "54ce2023-7c77-4bb8-b6c3-eccf619cd6f2",
            "labels": {"app": "ztunnel"},
            "annotations": {"ambient.istio.io/redirection": "enabled"},
            "creationTimestamp": "2026-08-22T10:00:00Z",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ztunnel", "uid": "u", "controller": True}],
        },
        "spec": {
            "nodeName": "ambient-worker",
            "hostNetwork": False,
            "serviceAccountName": "ztunnel",
            "containers": [
                {
                    "name": "istio-proxy",
                    "image": "docker.io/istio/ztunnel:1.30.0",
                    "env": [{"name": "LOG_FORMAT", "value": "json"}, {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    "ports": [{"containerPort": 15020, "name": "ztunnel-stats", "protocol": "TCP"}],
                }
            ],
        },
        "status": {
            "phase": "Running",
            "podIP": "10.244.1.5",
            "podIPs": [{"ip": "10.244.1.5"}],
            "hostIP": "172.18.0.3",
            "startTime": "2026-08-22T10:00:00Z",
            "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": None, "lastTransitionTime": "2026-08-22T10:00:05Z"}],
            "containerStatuses": [
                {
                    "name": "istio-proxy",
                    "ready": True,
                    "started": True,
                    "restartCount": 3,
                    "image": "docker.io/istio/ztunnel:1.30.0",
                    "state": {"running": {"startedAt": "2026-08-22T10:00:01Z"}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": None, "finishedAt": "2026-08-22T09:59:59Z"}},
                }
            ],
        },
    }


def pod_object() -> dict[str, Any]:
    return dict(pod(), apiVersion="v1", kind="Pod")


def pod_list() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1234"}, "items": [pod("a"), pod("b")]}


def k8s_lists() -> dict[str, dict[str, Any]]:
    """One list per typed kind, plus custom-resource lists and a kubectl 'List'."""
    meta = {"name": "x", "namespace": "ns"}
    return {
        "PodList": pod_list(),
        "ServiceList": {
            "apiVersion": "v1",
            "kind": "ServiceList",
            "metadata": {},
            "items": [
                {
                    "metadata": meta,
                    "spec": {
                        "type": "ClusterIP",
                        "clusterIP": "10.96.0.10",
                        "clusterIPs": ["10.96.0.10"],
                        "ports": [{"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"}, {"name": "http", "port": 80, "targetPort": "http"}],
                        "selector": {"k8s-app": "kube-dns"},
                    },
                    "status": {"loadBalancer": {}},
                }
            ],
        },
        "EndpointSliceList": {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSliceList",
            "metadata": {},
            "items": [
                {
                    "metadata": dict(meta, labels={"kubernetes.io/service-name": "kube-dns"}),
                    "addressType": "IPv4",
                    "endpoints": [
                        {
                            "addresses": ["10.244.0.2"],
                            "conditions": {"ready": True, "serving": True, "terminating": False},
                            "nodeName": "control-plane",
                            "targetRef": {"kind": "Pod", "namespace": "kube-system", "name": "coredns-1", "uid": "u"},
                        }
                    ],
                    "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}],
                },
                {"metadata": meta, "addressType": "IPv6", "endpoints": None, "ports": None},
            ],
        },
        "NamespaceList": {
            "apiVersion": "v1",
            "kind": "NamespaceList",
            "metadata": {},
            "items": [{"metadata": {"name": "bookinfo", "labels": {"istio.io/dataplane-mode": "ambient"}}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}],
        },
        "NodeList": {
            "apiVersion": "v1",
            "kind": "NodeList",
            "metadata": {},
            "items": [
                {
                    "metadata": {"name": "ambient-worker"},
                    "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
                    "status": {
                        "addresses": [{"type": "InternalIP", "address": "172.18.0.3"}, {"type": "Hostname", "address": "ambient-worker"}],
                        "nodeInfo": {"kubeletVersion": "v1.33.1", "containerRuntimeVersion": "containerd://2.1.1"},
                        "capacity": {"cpu": "8", "memory": "32Gi"},
                        "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-08-22T10:00:00Z"}],
                    },
                }
            ],
        },
        "EventList": {
            "apiVersion": "v1",
            "kind": "EventList",
            "metadata": {},
            "items": [
                {
                    "metadata": meta,
                    "involvedObject": {"kind": "Pod", "namespace": "istio-system", "name": "ztunnel-8xkq2", "uid": "u", "fieldPath": "spec.containers{istio-proxy}"},
                    "reason": "BackOff",
                    "message": "Back-off restarting failed container",
                    "type": "Warning",
                    "count": 12,
                    "firstTimestamp": "2026-08-22T09:00:00Z",
                    "lastTimestamp": "2026-08-22T10:00:00Z",
                    "eventTime": None,
                    "source": {"component": "kubelet", "host": "ambient-worker"},
                    "series": None,
                },
                {
                    "metadata": meta,
                    "involvedObject": {"kind": "Pod", "name": "p"},
                    "reason": "Scheduled",
                    "firstTimestamp": None,
                    "lastTimestamp": None,
                    "eventTime": "2026-08-22T10:00:00.123456Z",
                    "reportingComponent": "default-scheduler",
                },
            ],
        },
        "ConfigMapList": {
            "apiVersion": "v1",
            "kind": "ConfigMapList",
            "metadata": {},
            "items": [{"metadata": {"name": "istio", "namespace": "istio-system"}, "data": {"mesh": "defaultConfig: {}\n"}}],
        },
        "NetworkPolicyList": {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicyList",
            "metadata": {},
            "items": [{"metadata": meta, "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"ports": [{"port": 15008}]}]}}],
        },
        "AuthorizationPolicyList": {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicyList",
            "metadata": {"continue": "", "resourceVersion": "99"},
            "items": [
                {
                    "apiVersion": "security.istio.io/v1",
                    "kind": "AuthorizationPolicy",
                    "metadata": meta,
                    "spec": {"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["x"]}}]}]},
                }
            ],
        },
        "GatewayList": {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayList",
            "metadata": {},
            "items": [{"metadata": dict(meta, labels={"istio.io/waypoint-for": "service"}), "spec": {"gatewayClassName": "istio-waypoint"}}],
        },
        "List": {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": [pod_object()]},
    }


def k8s_version() -> dict[str, Any]:
    return {
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.1",
        "gitCommit": "8adc0f041b8e7ad1d30e29cc59c6ae7a15e19828",
        "gitTreeState": "clean",
        "buildDate": "2025-05-15T08:27:33Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def findings() -> dict[str, Any]:
    return {
        "formatVersion": 1,
        "tool": {"name": "ztunnel-bundle", "version": "0.1.0"},
        "bundle": {"root": "bundle-20260822.tar.zst", "createdAt": "2026-08-22T10:00:00Z"},
        "summary": {"info": 0, "warning": 1, "error": 1, "critical": 0},
        "findings": [
            {
                "id": "ZTB0108/istio-system/ztunnel-8xkq2/bookinfo/ratings-v1",
                "analyzer": "ztunnel.LocalWorkloadUnknown",
                "severity": "error",
                "title": "ztunnel has no workload entry for an enrolled pod",
                "message": "ztunnel ztunnel-8xkq2 on node ambient-worker has no workload entry for this pod",
                "resources": [
                    {"kind": "Pod", "namespace": "bookinfo", "name": "ratings-v1", "node": "ambient-worker", "ztunnel": "ztunnel-8xkq2"}
                ],
                "evidence": [
                    {"path": "ztunnel/ambient-worker/ztunnel-8xkq2/config_dump.json", "pointer": "/workloads"},
                    {"path": "ztunnel/ambient-worker/ztunnel-8xkq2/logs/istio-proxy.log", "lines": [10, 12], "excerpt": "error ..."},
                ],
                "remediation": "Check istiod push latency, discoverySelectors and the ztunnel xDS stream.",
                "references": ["https://github.com/istio/istio/issues/54889"],
            },
            {
                "id": "ZTB0201",
                "analyzer": "ztunnel.CertificateExpiry",
                "severity": "warning",
                "title": "certificates expire soon",
                "message": "3 identities",
                "count": 3,
            },
        ],
    }


VALID_DOCUMENTS: dict[str, list[tuple[str, Any]]] = {
    layout.KIND_ZTUNNEL_CONFIG_DUMP: [("1.23+ lists", ztunnel_dump_123()), ("1.22 maps", ztunnel_dump_122())],
    layout.KIND_ISTIOD_CONFIG_DUMP: [("addresses", istiod_config_dump()), ("empty (istio >= 1.25)", {}), ("empty configs", {"configs": []})],
    layout.KIND_ISTIOD_WADS: [("policies", istiod_wads()), ("none", {})],
    layout.KIND_ISTIOD_AMBIENTZ: [("state", istiod_ambientz()), ("all null", {"workloads": None, "services": None, "policies": None})],
    layout.KIND_ISTIOD_SYNCZ: [("resources", syncz_new()), ("old fields", syncz_old()), ("no proxies", [])],
    layout.KIND_K8S_LIST: [(name, document) for name, document in k8s_lists().items()],
    layout.KIND_K8S_OBJECT: [
        ("pod", pod_object()),
        ("custom resource", {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "a"}, "spec": {}}),
    ],
    layout.KIND_K8S_VERSION: [("kind cluster", k8s_version()), ("managed", {"major": "1", "minor": "29+", "gitVersion": "v1.29.3-gke.1093000"})],
    layout.KIND_FINDINGS: [("findings", findings()), ("none", {"formatVersion": 1, "tool": {"name": "t", "version": "1"}, "findings": []})],
}

VALID_CASES = [(kind, name, document) for kind, documents in VALID_DOCUMENTS.items() for name, document in documents]

# (kind, valid document, JSON pointer, wrong value, pointer of the expected issue)
INVALID_CASES: list[tuple[str, Any, str, object, str]] = [
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_123(), "/workloads/1/protocol", 5, "/workloads/1/protocol"),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_123(), "/workloads/0/protocol", "LEGACY_ISTIO_MTLS", "/workloads/0/protocol"),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_123(), "/workloads/0/workloadIps", "10.244.2.54", "/workloads/0/workloadIps"),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_123(), "/workloads/0/capacity", "1", "/workloads/0/capacity"),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_123(), "/workloads/0/waypoint/hboneMtlsPort", 70000, "/workloads/0/waypoint/hboneMtlsPort"),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_123(), "/workloads/0/services", {"ns/h": {"80": 80}}, "/workloads/0/services"),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_123(), "/services/0/ports/9080", "9080", "/services/0/ports/9080"),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_123(), "/services/0/vips/0", "10.96.95.231", "/services/0/vips/0"),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_123(), "/services/0/loadBalancer/mode", "STRICT", "/services/0/loadBalancer/mode"),
    (
        layout.KIND_ZTUNNEL_CONFIG_DUMP,
        ztunnel_dump_123(),
        "/services/0/endpoints/Kubernetes~1~1Pod~1bookinfo~1ratings-v1-6484c4d9bb-mdxm5/status",
        True,
        "/services/0/endpoints/Kubernetes~1~1Pod~1bookinfo~1ratings-v1-6484c4d9bb-mdxm5/status",
    ),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_123(), "/policies/0/rules/0/0/0/namespaces/1", {"Prefix": 1}, "/policies/0/rules/0/0/0/namespaces/1/Prefix"),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_123(), "/policies/0/rules/0/0/0/sourceIps/0", "10.0.0.1", "/policies/0/rules/0/0/0/sourceIps/0"),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_123(), "/policies/0/rules/0", [{"namespaces": []}], "/policies/0/rules/0/0"),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_123(), "/policies/1/dryRun", "false", "/policies/1/dryRun"),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_123(), "/certificates/0/certChain/0/serialNumber", "0x1f", "/certificates/0/certChain/0/serialNumber"),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_123(), "/certificates/0/rootCerts/0/validFrom", "yesterday", "/certificates/0/rootCerts/0/validFrom"),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_123(), "/certificates/1/state", "Unavailable because", "/certificates/1/state"),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_123(), "/workloadState/uid1/state", "Down", "/workloadState/uid1/state"),
    (
        layout.KIND_ZTUNNEL_CONFIG_DUMP,
        ztunnel_dump_123(),
        "/workloadState/54ce2023-7c77-4bb8-b6c3-eccf619cd6f2/connections/inbound/0/originalDst",
        7,
        "/workloadState/54ce2023-7c77-4bb8-b6c3-eccf619cd6f2/connections/inbound/0/originalDst",
    ),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_123(), "/version/istioVersion", 1.3, "/version/istioVersion"),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_123(), "/config", [], "/config"),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_123(), "/workloads", "none", "/workloads"),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_122(), "/workloads/network1~110.244.2.54/status", "OK", "/workloads/network1~110.244.2.54/status"),
    (layout.KIND_ZTUNNEL_CONFIG_DUMP, ztunnel_dump_122(), "/services/~110.96.95.231/subjectAltNames", "x", "/services/~110.96.95.231/subjectAltNames"),
    (layout.KIND_ISTIOD_CONFIG_DUMP, istiod_config_dump(), "/configs/0/workload/addresses/0", "10.244.2.54", "/configs/0/workload/addresses/0"),
    (layout.KIND_ISTIOD_CONFIG_DUMP, istiod_config_dump(), "/configs/0/workload/tunnelProtocol", 1, "/configs/0/workload/tunnelProtocol"),
    (layout.KIND_ISTIOD_CONFIG_DUMP, istiod_config_dump(), "/configs/0/workload/status", "Healthy", "/configs/0/workload/status"),
    (layout.KIND_ISTIOD_CONFIG_DUMP, istiod_config_dump(), "/configs/0/workload/capacity", {"value": 2}, "/configs/0/workload/capacity"),
    (layout.KIND_ISTIOD_CONFIG_DUMP, istiod_config_dump(), "/configs/1/service/ports/0/servicePort", "9080", "/configs/1/service/ports/0/servicePort"),
    (layout.KIND_ISTIOD_CONFIG_DUMP, istiod_config_dump(), "/configs/1/@type", AUTHORIZATION, "/configs/1/@type"),
    (layout.KIND_ISTIOD_CONFIG_DUMP, istiod_config_dump(), "/configs", {}, "/configs"),
    (layout.KIND_ISTIOD_WADS, istiod_wads(), "/configs/1/action", "Deny", "/configs/1/action"),
    (
        layout.KIND_ISTIOD_WADS,
        istiod_wads(),
        "/configs/0/groups/0/rules/0/matches/0/sourceIps/0/length",
        "8",
        "/configs/0/groups/0/rules/0/matches/0/sourceIps/0/length",
    ),
    (layout.KIND_ISTIOD_WADS, istiod_wads(), "/configs/0/groups/0/rules/0/matches/0/namespaces/0/exact", ["x"], "/configs/0/groups/0/rules/0/matches/0/namespaces/0/exact"),
    (layout.KIND_ISTIOD_WADS, istiod_wads(), "/configs/1/@type", ADDRESS, "/configs/1/@type"),
    (layout.KIND_ISTIOD_AMBIENTZ, istiod_ambientz(), "/workloads/0/addresses", "MTAuMjQ0LjIuNTQ=", "/workloads/0/addresses"),
    (layout.KIND_ISTIOD_AMBIENTZ, istiod_ambientz(), "/services/0/loadBalancing/routingPreference/0", "Zone", "/services/0/loadBalancing/routingPreference/0"),
    (layout.KIND_ISTIOD_AMBIENTZ, istiod_ambientz(), "/policies", {}, "/policies"),
    (layout.KIND_ISTIOD_SYNCZ, syncz_new(), "/0/resources/type.googleapis.com~1istio.workload.Address/acked", 1, "/0/resources/type.googleapis.com~1istio.workload.Address/acked"),
    (layout.KIND_ISTIOD_SYNCZ, syncz_old(), "/0/cluster_acked", None, "/0/cluster_acked"),
    (layout.KIND_ISTIOD_SYNCZ, syncz_old(), "/0", "proxy", "/0"),
    (layout.KIND_K8S_LIST, pod_list(), "/items/1/spec/hostNetwork", "false", "/items/1/spec/hostNetwork"),
    (layout.KIND_K8S_LIST, pod_list(), "/items/0/status/containerStatuses/0/restartCount", "3", "/items/0/status/containerStatuses/0/restartCount"),
    (
        layout.KIND_K8S_LIST,
        pod_list(),
        "/items/0/status/containerStatuses/0/lastState/terminated/reason",
        137,
        "/items/0/status/containerStatuses/0/lastState/terminated/reason",
    ),
    (layout.KIND_K8S_LIST, pod_list(), "/items/0/metadata/labels/app", 1, "/items/0/metadata/labels/app"),
    (layout.KIND_K8S_LIST, pod_list(), "/items/0/spec/containers/0/env/0/value", 1, "/items/0/spec/containers/0/env/0/value"),
    (layout.KIND_K8S_LIST, pod_list(), "/kind", "Pods", "/kind"),
    (layout.KIND_K8S_LIST, k8s_lists()["ServiceList"], "/items/0/spec/ports/0/port", "53", "/items/0/spec/ports/0/port"),
    (layout.KIND_K8S_LIST, k8s_lists()["EndpointSliceList"], "/items/0/endpoints/0/conditions/ready", "true", "/items/0/endpoints/0/conditions/ready"),
    (layout.KIND_K8S_LIST, k8s_lists()["NodeList"], "/items/0/status/addresses", {}, "/items/0/status/addresses"),
    (layout.KIND_K8S_LIST, k8s_lists()["EventList"], "/items/0/count", "12", "/items/0/count"),
    (layout.KIND_K8S_LIST, k8s_lists()["AuthorizationPolicyList"], "/items/0/metadata/annotations", [], "/items/0/metadata/annotations"),
    (layout.KIND_K8S_LIST, k8s_lists()["List"], "/items/0/status/phase", "Up", "/items/0/status/phase"),
    (layout.KIND_K8S_OBJECT, pod_object(), "/spec/nodeName", None, "/spec/nodeName"),
    (layout.KIND_K8S_OBJECT, pod_object(), "/status/podIPs/0", "10.244.1.5", "/status/podIPs/0"),
    (layout.KIND_K8S_VERSION, k8s_version(), "/minor", 33, "/minor"),
    (layout.KIND_FINDINGS, findings(), "/findings/0/severity", "fatal", "/findings/0/severity"),
    (layout.KIND_FINDINGS, findings(), "/findings/0/evidence/0/pointer", "workloads", "/findings/0/evidence/0/pointer"),
    (layout.KIND_FINDINGS, findings(), "/findings/0/evidence/1/lines", [0, 2], "/findings/0/evidence/1/lines/0"),
    (layout.KIND_FINDINGS, findings(), "/findings/1/count", 0, "/findings/1/count"),
    (layout.KIND_FINDINGS, findings(), "/summary/error", -1, "/summary/error"),
]


# --- the schema files themselves ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda path: path.name)
def test_schema_file_is_a_valid_2020_12_schema(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    if path.name != "manifest.schema.json":
        assert schema["$id"] == f"{SCHEMA_BASE_URI}{path.name}"
        assert schema["title"] and schema["description"]


@pytest.mark.parametrize("kind", MY_KINDS)
def test_every_json_kind_has_a_schema(kind: str) -> None:
    assert (schemas_dir() / f"{kind}.schema.json").is_file()
    assert kind in schema_kinds()


def test_library_schemas_are_not_kinds() -> None:
    assert not LIBRARY_SCHEMAS & set(schema_kinds())
    assert not LIBRARY_SCHEMAS & layout.JSON_KINDS


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


@pytest.mark.parametrize("path", [p for p in SCHEMA_FILES if p.name != "manifest.schema.json"], ids=lambda path: path.name)
def test_every_ref_resolves_locally(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    resolver = schema_registry().resolver(base_uri=schema["$id"])
    refs = _refs(schema)
    for ref in refs:
        assert resolver.lookup(ref).contents is not None, ref


def test_load_validator_is_cached_per_kind() -> None:
    assert load_validator(layout.KIND_ZTUNNEL_CONFIG_DUMP) is load_validator(layout.KIND_ZTUNNEL_CONFIG_DUMP)
    assert load_validator(layout.KIND_K8S_LIST) is not load_validator(layout.KIND_K8S_OBJECT)
    assert isinstance(load_validator(layout.KIND_FINDINGS), Draft202012Validator)


@pytest.mark.parametrize("kind", ["istio-proto", "kubernetes", "ztunnel-log", "nonsense"])
def test_load_validator_rejects_non_kinds(kind: str) -> None:
    with pytest.raises(ArtifactError):
        load_validator(kind)


# --- upstream fixtures -------------------------------------------------------------------------------------


def test_istioctl_fixture_122_map_layout_validates() -> None:
    """istioctl's hand-assembled dump.json validates as a ztunnel config dump. It is a 1.22-style mix that the
    schema must tolerate: workloads/services as maps keyed by 'network/ip' (with empty networks: '/10.244.2.58'),
    the old endpoint shape (workloadUid, service, address) keyed 'uid:network/ip', certificates with raw PEM text
    and no rootCerts (Initializing/Unavailable states with empty chains), a waypoint with a 'port' key that no
    ztunnel ever wrote (unknown keys are allowed), policies as a list, workloadState with connections, keys not
    in alphabetical order, and no config/version/staticConfig at all."""
    dump = json.loads(FIXTURE_122.read_text(encoding="utf-8"))
    # What the fixture contains, so this test fails loudly if the fixture changes.
    assert isinstance(dump["workloads"], dict) and isinstance(dump["services"], dict)
    assert isinstance(dump["policies"], list)
    assert "/10.244.2.58" in dump["workloads"]
    waypoints = [w["waypoint"] for w in dump["workloads"].values() if "waypoint" in w]
    assert waypoints and all("port" in w and "hboneMtlsPort" not in w for w in waypoints)
    endpoint_keys = [key for service in dump["services"].values() for key in service["endpoints"]]
    assert endpoint_keys and all(":" in key for key in endpoint_keys)
    chain = dump["certificates"][0]["certChain"]
    assert chain[0]["pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert not any("rootCerts" in cert for cert in dump["certificates"])
    assert {cert["state"].split(":")[0] for cert in dump["certificates"]} == {"Available", "Initializing", "Unavailable"}
    assert not {"config", "version", "staticConfig"} & set(dump)

    assert detect_kind(None, dump) == layout.KIND_ZTUNNEL_CONFIG_DUMP
    assert validate_document(dump, layout.KIND_ZTUNNEL_CONFIG_DUMP) == []
    assert validate_bytes(FIXTURE_122.read_bytes(), path="ztunnel/n1/zt-1/config_dump.json") == (layout.KIND_ZTUNNEL_CONFIG_DUMP, [])


def test_istioctl_fixture_wrong_type_is_reported_at_its_map_key() -> None:
    dump = json.loads(FIXTURE_122.read_text(encoding="utf-8"))
    dump["workloads"]["/10.244.2.58"]["nativeTunnel"] = "yes"
    issues = validate_document(dump, layout.KIND_ZTUNNEL_CONFIG_DUMP)
    assert [issue.pointer for issue in issues] == ["/workloads/~110.244.2.58/nativeTunnel"]
    assert "expected boolean" in issues[0].message


def test_legacy_121_fixture_is_recognised_and_unsupported() -> None:
    """The historical fixture (by_addr, by_uid, workload_to_services, by_vip, snake_case cert_chain) is
    detected as a ztunnel dump and rejected with one clear message, not a crash and not a pass."""
    dump = json.loads(FIXTURE_LEGACY.read_text(encoding="utf-8"))
    assert {"by_addr", "by_uid", "workload_to_services", "by_vip"} <= set(dump)
    assert detect_kind(None, dump) == layout.KIND_ZTUNNEL_CONFIG_DUMP
    message = legacy_layout(dump)
    assert message is not None and "<=1.21 layout (by_addr/by_uid) is not supported" in message
    with pytest.raises(UnsupportedFormatError, match=r"<=1\.21 layout \(by_addr/by_uid\) is not supported"):
        validate_document(dump, layout.KIND_ZTUNNEL_CONFIG_DUMP)
    with pytest.raises(UnsupportedFormatError):
        validate_bytes(FIXTURE_LEGACY.read_bytes())
    assert issubclass(UnsupportedFormatError, BundleError)
    # The schema itself rejects the <=1.21 store keys too, with the same wording.
    store_key_errors = [e for e in load_validator(layout.KIND_ZTUNNEL_CONFIG_DUMP).iter_errors(dump) if e.validator == "not"]
    assert sorted(e.path[0] for e in store_key_errors) == ["by_addr", "by_uid", "by_vip", "workload_to_services"]
    assert all("<=1.21 layout (by_addr/by_uid) is not supported" in e.schema["description"] for e in store_key_errors)


@pytest.mark.parametrize(
    "document",
    [
        {"by_uid": {}, "certificates": []},
        {"workloads": [], "services": [], "policies": [], "certificates": [{"identity": "x", "state": "Available", "cert_chain": []}]},
        {"by_vip": {}},
    ],
)
def test_legacy_shapes_are_unsupported(document: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedFormatError):
        validate_document(document, layout.KIND_ZTUNNEL_CONFIG_DUMP)


@pytest.mark.parametrize(
    "path", sorted(UPSTREAM.rglob("*.json")), ids=lambda path: str(path.relative_to(UPSTREAM))
)
def test_every_upstream_json_file(path: Path) -> None:
    """Every ztunnel config dump under shared/upstream validates, except the <=1.21 one, which is reported
    as unsupported; the other JSON files there (istioctl's re-marshalled connections, a Grafana dashboard)
    are not mistaken for any artifact kind."""
    data = path.read_bytes()
    kind = detect_kind(None, orjson.loads(data))
    if path == FIXTURE_LEGACY:
        assert kind == layout.KIND_ZTUNNEL_CONFIG_DUMP
        with pytest.raises(UnsupportedFormatError):
            validate_bytes(data)
    elif kind == layout.KIND_ZTUNNEL_CONFIG_DUMP:
        assert validate_bytes(data) == (layout.KIND_ZTUNNEL_CONFIG_DUMP, [])
    else:
        assert kind is None
        with pytest.raises(ArtifactError, match="cannot detect the kind"):
            validate_bytes(data)


def test_istioctl_connections_dump_entries_match_workload_state() -> None:
    """istioctl's connectionsdump.json re-marshals workloadState entries (adding an empty trustDomain): each
    entry still fits the WorkloadState definition."""
    entries = json.loads((UPSTREAM / "istio" / ISTIOCTL_TESTDATA / "connectionsdump.json").read_text(encoding="utf-8"))
    validator = Draft202012Validator(
        {"$ref": f"{SCHEMA_BASE_URI}ztunnel-config-dump.schema.json#/$defs/WorkloadState"}, registry=schema_registry()
    )
    assert entries
    assert [error.message for entry in entries for error in validator.iter_errors(entry)] == []


def _local_config() -> Any:
    # YAML gives integer port keys; a round trip through JSON makes them strings, as ztunnel's JSON has them.
    return json.loads(json.dumps(yaml.safe_load(LOCALHOST_YAML.read_text(encoding="utf-8"))))


def test_ztunnel_localhost_yaml_validates_as_static_config() -> None:
    local = _local_config()
    assert isinstance(local["workloads"][0]["services"], dict)  # LocalConfig workloads map services to ports
    validator = Draft202012Validator(
        {"$ref": f"{SCHEMA_BASE_URI}ztunnel-config-dump.schema.json#/$defs/LocalConfig"}, registry=schema_registry()
    )
    assert [error.message for error in validator.iter_errors(local)] == []
    dump = ztunnel_dump_123()
    dump["staticConfig"] = local
    assert validate_document(dump, layout.KIND_ZTUNNEL_CONFIG_DUMP) == []
    broken = set_at(dump, "/staticConfig/workloads/0/services/default~1example.com/80", "8080")
    assert pointers(broken, layout.KIND_ZTUNNEL_CONFIG_DUMP) == ["/staticConfig/workloads/0/services/default~1example.com/80"]


# --- hand-built documents ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "name", "document"), VALID_CASES, ids=[f"{k}-{n}" for k, n, _ in VALID_CASES])
def test_valid_documents(kind: str, name: str, document: Any) -> None:
    assert validate_document(document, kind) == []


@pytest.mark.parametrize(("kind", "name", "document"), VALID_CASES, ids=[f"{k}-{n}" for k, n, _ in VALID_CASES])
def test_unknown_keys_are_not_errors(kind: str, name: str, document: Any) -> None:
    assert validate_document(with_unknown_keys(document), kind) == []


@pytest.mark.parametrize(
    ("kind", "document", "pointer", "value", "expected"),
    INVALID_CASES,
    ids=[f"{case[0]}{case[2]}={case[3]!r}"[:90] for case in INVALID_CASES],
)
def test_wrong_values_are_errors_at_their_pointer(kind: str, document: Any, pointer: str, value: object, expected: str) -> None:
    assert validate_document(document, kind) == []
    issues = validate_document(set_at(document, pointer, value), kind)
    assert [issue.pointer for issue in issues] == [expected], issues
    assert all(issue.message and "\n" not in issue.message for issue in issues)


def test_every_kind_has_valid_and_invalid_cases() -> None:
    assert set(VALID_DOCUMENTS) == set(MY_KINDS)
    assert {case[0] for case in INVALID_CASES} == set(MY_KINDS)


@pytest.mark.parametrize(
    ("kind", "document", "missing"),
    [
        (layout.KIND_ZTUNNEL_CONFIG_DUMP, {"workloads": [], "services": []}, "policies"),
        (layout.KIND_K8S_OBJECT, {"kind": "Pod", "metadata": {}}, "apiVersion"),
        (layout.KIND_K8S_LIST, {"apiVersion": "v1", "kind": "PodList"}, "items"),
        (layout.KIND_K8S_VERSION, {"major": "1", "minor": "2"}, "gitVersion"),
        (layout.KIND_FINDINGS, {"formatVersion": 1, "findings": []}, "tool"),
    ],
)
def test_missing_required_properties(kind: str, document: Any, missing: str) -> None:
    issues = validate_document(document, kind)
    assert [(issue.pointer, issue.display_pointer) for issue in issues] == [("", "/")]
    assert missing in issues[0].message


def test_messages_are_short_and_issues_sorted_numerically() -> None:
    dump = ztunnel_dump_123()
    dump["workloads"] = [copy.deepcopy(dump["workloads"][0]) for _ in range(12)]
    for index in (11, 2, 10):
        dump["workloads"][index]["status"] = {"huge": "x" * 5000}
    dump["services"][0]["ipFamilies"] = "y" * 5000
    issues = validate_document(dump, layout.KIND_ZTUNNEL_CONFIG_DUMP)
    assert [issue.pointer for issue in issues] == ["/services/0/ipFamilies", "/workloads/2/status", "/workloads/10/status", "/workloads/11/status"]
    assert all(len(issue.message) < 200 for issue in issues)
    assert str(issues[1]) == f"/workloads/2/status: {issues[1].message}"
    assert all(isinstance(issue, ValidationIssue) for issue in issues)


def test_the_same_error_is_reported_once() -> None:
    document = dict(pod_object(), metadata={"name": 5})
    assert pointers(document, layout.KIND_K8S_OBJECT) == ["/metadata/name"]


# --- kind detection ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("manifest.json", layout.KIND_MANIFEST),
        ("cluster/version.json", layout.KIND_K8S_VERSION),
        ("cluster/pods.json", layout.KIND_K8S_LIST),
        ("cluster/istio/authorizationpolicies.security.istio.io.json", layout.KIND_K8S_LIST),
        ("istiod/istiod-7d4f/ambientz.json", layout.KIND_ISTIOD_AMBIENTZ),
        ("istiod/istiod-7d4f/syncz.json", layout.KIND_ISTIOD_SYNCZ),
        ("istiod/istiod-7d4f/version.txt", layout.KIND_ISTIOD_VERSION),
        ("istiod/proxies/ztunnel-8xkq2/config_dump.json", layout.KIND_ISTIOD_CONFIG_DUMP),
        ("istiod/proxies/ztunnel-8xkq2/wads.json", layout.KIND_ISTIOD_WADS),
        ("ztunnel/node-1/ztunnel-8xkq2/config_dump.json", layout.KIND_ZTUNNEL_CONFIG_DUMP),
        ("ztunnel/node-1/ztunnel-8xkq2/pod.json", layout.KIND_K8S_OBJECT),
        ("ztunnel/node-1/ztunnel-8xkq2/metrics.txt", layout.KIND_ZTUNNEL_METRICS),
        ("/tmp/x/bundle/ztunnel/node-1/ztunnel-8xkq2/config_dump.json", layout.KIND_ZTUNNEL_CONFIG_DUMP),
        ("/tmp/x/bundle/ztunnel/node-1/ztunnel-8xkq2/logs/istio-proxy.previous.log", layout.KIND_ZTUNNEL_LOG),
        ("./bundle/istiod/proxies/ztunnel-8xkq2/wads.json", layout.KIND_ISTIOD_WADS),
        ("C:\\bundle\\istiod\\proxies\\zt\\config_dump.json", layout.KIND_ISTIOD_CONFIG_DUMP),
        ("config_dump.json", None),
        ("/tmp/whatever/dump.json", None),
    ],
)
def test_kind_from_path(path: str, kind: str | None) -> None:
    assert kind_from_path(path) == kind


# Documents whose content tells their kind (an empty object or list, or all-null lists, do not).
DETECTABLE_CASES = [case for case in VALID_CASES if case[2] not in ({}, []) and case[1] != "all null"]


@pytest.mark.parametrize(("kind", "name", "document"), DETECTABLE_CASES, ids=[f"{k}-{n}" for k, n, _ in DETECTABLE_CASES])
def test_detect_kind_from_content(kind: str, name: str, document: Any) -> None:
    assert detect_kind(None, document) == kind


@pytest.mark.parametrize(
    ("document", "kind"),
    [
        ({"configs": []}, layout.KIND_ISTIOD_CONFIG_DUMP),
        ({"configs": [{"@type": AUTHORIZATION}]}, layout.KIND_ISTIOD_WADS),
        ({"formatVersion": 1, "artifacts": []}, layout.KIND_MANIFEST),
        ({"workloads": [], "services": [], "policies": [], "config": {}}, layout.KIND_ZTUNNEL_CONFIG_DUMP),
        ({"workloads": [], "services": [], "policies": []}, layout.KIND_ISTIOD_AMBIENTZ),
        ({"by_addr": {}, "by_uid": {}}, layout.KIND_ZTUNNEL_CONFIG_DUMP),
        ({}, None),
        ([], None),
        ({"hello": "world"}, None),
        ("text", None),
        (42, None),
        ([1, 2], None),
    ],
)
def test_detect_kind_edge_cases(document: Any, kind: str | None) -> None:
    assert detect_kind(None, document) == kind


def test_empty_object_is_a_config_dump_only_by_path() -> None:
    assert detect_kind("istiod/proxies/zt-1/config_dump.json", {}) == layout.KIND_ISTIOD_CONFIG_DUMP
    assert detect_kind(None, {}) is None
    assert validate_bytes(b"{}", path="bundle/istiod/proxies/zt-1/config_dump.json") == (layout.KIND_ISTIOD_CONFIG_DUMP, [])
    with pytest.raises(ArtifactError, match="cannot detect the kind; use --kind"):
        validate_bytes(b"{}")
    assert validate_bytes(b"{}", kind=layout.KIND_ISTIOD_WADS) == (layout.KIND_ISTIOD_WADS, [])


def test_path_wins_over_content() -> None:
    kind, issues = validate_bytes(orjson.dumps(k8s_version()), path="ztunnel/n/zt/config_dump.json")
    assert kind == layout.KIND_ZTUNNEL_CONFIG_DUMP
    assert issues and issues[0].pointer == ""


# --- parsing -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "line 1, column 1"),
        (b"   \n", "line 1"),
        (b'{"a": 1,\n  "b": }', "line 2, column 8"),
        (b"[1, 2", "malformed JSON"),
        (b"\xff\xfe{}", "malformed JSON"),
        (b"{} trailing", "malformed JSON"),
        (b"[" * 5000, "nested deeper than 1024 levels"),
        (b"[" * 5000 + b"]" * 5000, "nested deeper than 1024 levels"),
    ],
)
def test_malformed_json_is_a_one_line_artifact_error(data: bytes, fragment: str) -> None:
    with pytest.raises(ArtifactError) as caught:
        validate_bytes(data, kind=layout.KIND_ZTUNNEL_CONFIG_DUMP)
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)
    with pytest.raises(ArtifactError):
        parse_json(data)


def test_deep_but_allowed_nesting_validates_without_recursion_errors() -> None:
    """1000 levels (orjson accepts up to 1024) in free-form and unknown places, and where the schema expects a
    string: validation neither recurses out nor renders the value in full."""
    deep = b"[" * 1000 + b'"leaf"' + b"]" * 1000
    dump = ztunnel_dump_123()
    dump["config"]["deep"] = "@DEEP@"
    dump["workloads"][0]["zzUnknown"] = "@DEEP@"
    data = orjson.dumps(dump).replace(b'"@DEEP@"', deep)
    assert validate_bytes(data) == (layout.KIND_ZTUNNEL_CONFIG_DUMP, [])
    dump["workloads"][0]["services"] = "@DEEP@"
    kind, issues = validate_bytes(orjson.dumps(dump).replace(b'"@DEEP@"', deep))
    assert [issue.pointer for issue in issues] == ["/workloads/0/services/0"]
    assert len(issues[0].message) < 100


@pytest.mark.parametrize("kind", sorted(TEXT_KINDS))
def test_text_kinds_are_not_schema_validated(kind: str) -> None:
    assert validate_bytes(b"\xff not json at all", kind=kind) == (kind, [])
    assert validate_document("anything", kind) == []


def test_text_kind_from_path_is_not_parsed() -> None:
    assert validate_bytes(b"# EOF\n", path="ztunnel/n/zt/metrics.txt") == (layout.KIND_ZTUNNEL_METRICS, [])


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ArtifactError, match="unknown artifact kind"):
        validate_bytes(b"{}", kind="bogus")
