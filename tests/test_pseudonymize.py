"""bundler.pseudonymize: consistent fake IPs and node names across the files of a bundle, structure kept, special
addresses and Istio/Kubernetes names untouched, JSON kept valid, the map reversible, istiod's base64 addresses."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundler.archive import open_bundle
from bundler.pseudonymize import MAPPING_FORMAT, Pseudonymizer, default_mapping_path, restore_text

REPO = Path(__file__).resolve().parents[1]
INCIDENT = REPO / "samples" / "bookinfo-incident.tar.zst"
SAMPLES = sorted((REPO / "samples").glob("*.tar.zst"))
SECRET = b"test-secret"
NODES = ["ambient-worker", "ambient-worker2", "ambient-worker3", "ambient-control-plane"]

LOG_LINE = (
    '2026-11-25T11:00:56.469060Z\terror\taccess\tconnection complete\tsrc.addr=10.128.0.6:57103 '
    'src.workload="reviews-v1-d22811189d-6jg4d" src.namespace="bookinfo" '
    'src.identity="spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews" dst.addr=10.128.4.5:15008 '
    'dst.hbone_addr=10.128.4.5:9080 dst.service="ratings.bookinfo.svc.cluster.local" direction="outbound" '
    'error="http status: 401 Unauthorized"'
)
DUMP = {
    "workloads": [{"uid": "Kubernetes//Pod/bookinfo/ratings-v1-72b1be3ae0-lklp4", "name": "ratings-v1-72b1be3ae0-lklp4",
                   "node": "ambient-worker2", "workloadIps": ["10.128.4.5"], "trustDomain": "cluster.local",
                   "waypoint": {"destination": "/10.96.65.117", "hboneMtlsPort": 15008},
                   "services": ["bookinfo/ratings.bookinfo.svc.cluster.local"]}],
    "services": [{"hostname": "ratings.bookinfo.svc.cluster.local", "vips": ["/10.96.0.13"],
                  "subjectAltNames": ["spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings"]}],
    "workloadState": {"40de130e-8ae9-4cc1-9eda-a6114e0dcb7d": {"connections": {"inbound": [
        {"actualDst": "10.128.0.4:9080", "originalDst": None, "src": "10.128.8.3:40000"}]}}},
    "config": {"adminAddr": {"Localhost": [True, 15000]}, "readinessAddr": {"SocketAddr": "[::]:15021"},
               "localNode": "ambient-worker2", "caAddress": "https://istiod.istio-system.svc:15012"},
}


def _ips(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w]|\.\d)", text))


def _new(secret: bytes = SECRET) -> Pseudonymizer:
    p = Pseudonymizer(secret)
    p.add_hostnames(NODES)
    return p


# --------------------------------------------------------------------------------------------------------------------
# consistency and structure
# --------------------------------------------------------------------------------------------------------------------


def test_same_ip_same_fake_in_a_log_line_and_a_json_dump() -> None:
    p = _new()
    line = p.apply_text(LOG_LINE)
    dump = p.apply_json(DUMP)
    fake = p.mapping()["ips"]["10.128.4.5"]
    assert fake != "10.128.4.5"
    assert f"dst.addr={fake}:15008" in line and f"dst.hbone_addr={fake}:9080" in line
    assert dump["workloads"][0]["workloadIps"] == [fake]
    # the same through the JSON text path
    assert json.loads(p.apply_text(json.dumps(DUMP)))["workloads"][0]["workloadIps"] == [fake]
    assert "10.128" not in line and "10.128" not in json.dumps(dump)


def test_ztunnel_address_forms() -> None:
    p = _new()
    m = lambda ip: p.apply_text(ip)  # noqa: E731
    assert p.apply_text("/10.96.65.117") == "/" + m("10.96.65.117")
    assert p.apply_text("network1/10.96.65.117") == "network1/" + m("10.96.65.117")
    assert p.apply_text("10.128.0.4:9080") == m("10.128.0.4") + ":9080"
    assert p.apply_text('{"cidr":"10.128.0.0/22","network":""}') == '{"cidr":"%s/22","network":""}' % m("10.128.0.0")
    v6 = p.apply_text("fd00:10:244::5")
    assert p.apply_text("[fd00:10:244::5]:80") == f"[{v6}]:80"
    assert p.apply_text("fd00:10:244::/56") == v6.rsplit("::", 1)[0] + "::/56"


def test_subnet_structure_is_kept() -> None:
    p = _new()
    fake = {ip: ipaddress.ip_address(p.apply_text(ip)) for ip in
            ("10.128.0.4", "10.128.0.5", "10.128.0.250", "10.128.1.7", "10.128.4.5", "10.129.0.4", "172.18.0.2",
             "54.12.3.4", "192.168.7.1")}
    net24 = lambda ip: ipaddress.ip_network(f"{ip}/24", strict=False)  # noqa: E731
    # same /24 -> same fake /24, last octet kept
    assert net24(fake["10.128.0.4"]) == net24(fake["10.128.0.5"]) == net24(fake["10.128.0.250"])
    assert str(fake["10.128.0.250"]).endswith(".0.250")
    # different /24 -> different fake /24; a node's /22 podCIDR still holds its pod IPs
    assert net24(fake["10.128.0.4"]) != net24(fake["10.128.1.7"])
    pod_cidr = ipaddress.ip_network(p.apply_text("10.128.0.0/22"))
    assert fake["10.128.0.4"] in pod_cidr and fake["10.128.1.7"] in pod_cidr and fake["10.128.4.5"] not in pod_cidr
    # different /16 -> different fake /16; everything in private space, family kept
    assert fake["10.128.0.4"].packed[:2] != fake["10.129.0.4"].packed[:2]
    for ip in fake.values():
        assert ip.version == 4 and ip.is_private and ip.packed[0] in (10, 172, 100)


def test_short_cidr_stays_a_valid_network() -> None:
    p = _new()
    out = p.apply_text("service CIDR 10.96.0.0/12, pods 10.244.0.0/16, all 0.0.0.0/0")
    cidrs = re.findall(r"\d+\.\d+\.\d+\.\d+/\d+", out)
    assert len(cidrs) == 3
    for c in cidrs:
        ipaddress.ip_network(c)  # strict: no host bits set
    assert cidrs[2] == "0.0.0.0/0"
    assert restore_text(out, p.mapping_document()) == "service CIDR 10.96.0.0/12, pods 10.244.0.0/16, all 0.0.0.0/0"


@pytest.mark.parametrize("addr", [
    "127.0.0.1", "127.0.0.53", "169.254.7.127", "169.254.169.254", "0.0.0.0", "255.255.255.255", "255.255.255.0",
    "224.0.0.251", "192.0.2.10", "8.8.8.8", "1.1.1.1", "::1", "::", "fe80::1ff:fe23:4567:890a", "ff02::1",
    "2001:db8::1",
])
def test_special_addresses_are_kept(addr: str) -> None:
    p = _new()
    for text in (addr, f"[{addr}]:15021" if ":" in addr else f"{addr}:15021", f'"{addr}"'):
        assert p.apply_text(text) == text
    assert p.mapping()["ips"] == {}


def test_ipv6() -> None:
    p = _new()
    a, b = p.apply_text("fd00:10:244:1::5"), p.apply_text("fd00:10:244:2::6")
    fa, fb = ipaddress.IPv6Address(a), ipaddress.IPv6Address(b)
    assert fa in ipaddress.ip_network("fd00::/8") and fa.packed[:6] == fb.packed[:6]  # same /48
    assert fa.packed[6:] == ipaddress.IPv6Address("fd00:10:244:1::5").packed[6:]
    assert p.apply_text("2600:1f14:abcd:12::9") != "2600:1f14:abcd:12::9"
    eui = ipaddress.IPv6Address(p.apply_text("2600:1f14:abcd:12:0211:22ff:fe33:4455"))
    assert b"\x11\x22" not in eui.packed[8:] and eui.packed[8:] != bytes.fromhex("021122fffe334455")  # MAC gone
    mapped = p.apply_text("::ffff:10.128.0.4")
    assert mapped == "::ffff:" + p.apply_text("10.128.0.4")
    assert p.apply_text("fe80::1%eth0") == "fe80::1%eth0"


def test_things_that_are_not_addresses_are_kept() -> None:
    p = _new()
    text = ("2026-11-25T11:00:09.741678Z\tinfo\txds::client:xds{id=1}\tStream established 12:34:56 "
            "aa:bb:cc:dd:ee:ff dead::beef v1.2.3.4 oid 1.3.6.1.4.1.311 istio 1.24.3 kernel 6.12.48 "
            "sha256:232738e3ecb97d6c5ae927eef0985b761665d6796dd4ba204c1c4840a7eaa3e4 10.0.0.1.2")
    assert p.apply_text(text) == text


# --------------------------------------------------------------------------------------------------------------------
# host names
# --------------------------------------------------------------------------------------------------------------------


def test_node_hostnames_replaced_istio_names_untouched() -> None:
    p = _new()
    text = ("node ambient-worker2 and ambient-worker; kind://docker/ambient-worker3 ztunnel/ambient-worker/ztunnel-x "
            "etcd-ambient-control-plane spiffe://cluster.local/ns/ambient-worker/sa/ambient-worker "
            "ambient-worker.default.svc.cluster.local ztunnel-2tnmx.istio-system istiod.istio-system.svc:15012 "
            "docker.io/istio/ztunnel:1.24.3-distroless trustDomain: cluster.local ambient-worker-pool")
    out = p.apply_text(text)
    hosts = p.mapping()["hostnames"]
    for node in NODES:
        assert re.fullmatch(r"node-[0-9a-f]{6,}", hosts[node])
    assert f"node {hosts['ambient-worker2']} and {hosts['ambient-worker']};" in out
    assert f"kind://docker/{hosts['ambient-worker3']} ztunnel/{hosts['ambient-worker']}/ztunnel-x" in out
    assert f"etcd-{hosts['ambient-control-plane']}" in out
    for kept in ("spiffe://cluster.local/ns/ambient-worker/sa/ambient-worker",
                 "ambient-worker.default.svc.cluster.local", "ztunnel-2tnmx.istio-system",
                 "istiod.istio-system.svc:15012", "docker.io/istio/ztunnel:1.24.3-distroless",
                 "trustDomain: cluster.local", "ambient-worker-pool"):
        assert kept in out
    assert len(set(hosts.values())) == len(hosts)


def test_cloud_fqdns_and_embedded_ips() -> None:
    p = Pseudonymizer(SECRET)
    text = ("ip-10-0-1-2.ec2.internal ip-10-0-1-2 10.0.1.2 ip-10-0-1-3.us-west-2.compute.internal "
            "ec2-54-1-2-3.compute-1.amazonaws.com gke-prod-pool-1-abcd-x1y2.c.acme-prod-4411.internal "
            "aks-nodepool1-1234-vmss000000.abcdefgh.bx.internal.cloudapp.net metadata.google.internal "
            "host.docker.internal https://ip-10-0-1-2.ec2.internal:10250/healthz registry.internal/team/app:1 "
            "registry.internal:5000/team/app:1")
    out = p.apply_text(text)
    ip = p.apply_text("10.0.1.2").replace(".", "-")
    assert f"ip-{ip}.ec2.internal ip-{ip} " in out
    assert f"https://ip-{ip}.ec2.internal:10250/healthz" in out
    for gone in ("10-0-1-2", "10-0-1-3", "54-1-2-3", "acme-prod-4411", "gke-prod-pool", "aks-nodepool1", "abcdefgh"):
        assert gone not in out, gone
    for kept in ("metadata.google.internal", "host.docker.internal", "registry.internal/team/app:1",
                 "registry.internal:5000/team/app:1", ".us-west-2.compute.internal", ".compute-1.amazonaws.com"):
        assert kept in out
    assert re.search(r"node-[0-9a-f]{6}\.d-[0-9a-f]{4}\.example", out)


def test_keep_names_and_generic_names() -> None:
    p = Pseudonymizer(SECRET)
    p.keep_names(["mesh.prod.internal"])
    p.add_hostnames(["localhost", "default", "ab", "10.0.0.1", "node1.corp.example.com"])
    out = p.apply_text("spiffe://mesh.prod.internal/ns/a/sa/b trustDomain=mesh.prod.internal localhost default "
                       "node1.corp.example.com node1")
    assert "spiffe://mesh.prod.internal/ns/a/sa/b trustDomain=mesh.prod.internal localhost default" in out
    hosts = p.mapping()["hostnames"]
    assert set(hosts) == {"node1.corp.example.com", "node1"}
    assert out.endswith(f"{hosts['node1.corp.example.com']} {hosts['node1']}")
    assert hosts["node1.corp.example.com"].startswith(hosts["node1"] + ".")


# --------------------------------------------------------------------------------------------------------------------
# istiod proto-JSON: base64 addresses
# --------------------------------------------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_base64_raw_and_ascii_addresses() -> None:
    p = _new()
    real = "10.244.2.54"
    doc = {"workload": {"addresses": [_b64(ipaddress.ip_address(real).packed), _b64(b"fd00:10:244::7")],
                        "waypoint": {"address": {"address": _b64(ipaddress.ip_address("10.96.65.117").packed)}},
                        "networkGateway": {"network": "", "address": _b64(real.encode())}},
           "service": {"addresses": [{"network": "", "address": "CmBBdQ=="}]},
           "policy": {"sourceIps": [{"address": "CgAAAA==", "length": 8}]},
           "node": {"addresses": [{"address": "172.18.0.2", "type": "InternalIP"},
                                  {"address": "ambient-worker", "type": "Hostname"}]},
           "other": {"addresses_note": "CvQCNg==", "token": "abcdefgh"}}
    expect = p.apply_text(real)
    for out in (p.apply_json(doc), json.loads(p.apply_text(json.dumps(doc))),
                json.loads(p.apply_text(json.dumps(doc, indent=2)))):
        w = out["workload"]
        assert str(ipaddress.ip_address(base64.b64decode(w["addresses"][0]))) == expect
        assert base64.b64decode(w["addresses"][1]).decode() == p.apply_text("fd00:10:244::7")
        assert base64.b64decode(w["networkGateway"]["address"]).decode() == expect
        assert str(ipaddress.ip_address(base64.b64decode(w["waypoint"]["address"]["address"]))) == \
            p.apply_text("10.96.65.117")
        assert base64.b64decode(out["service"]["addresses"][0]["address"]) == \
            ipaddress.ip_address(p.apply_text("10.96.65.117")).packed
        assert base64.b64decode(out["policy"]["sourceIps"][0]["address"]) == \
            ipaddress.ip_address(p.apply_text("10.0.0.0")).packed
        assert out["node"]["addresses"] == [{"address": p.apply_text("172.18.0.2"), "type": "InternalIP"},
                                            {"address": p.apply_text("ambient-worker"), "type": "Hostname"}]
        assert out["other"] == {"addresses_note": "CvQCNg==", "token": "abcdefgh"}  # other keys: left alone
    assert doc["workload"]["addresses"][0] == "CvQCNg=="  # apply_json does not modify its input


def test_sample_ambientz_matches_config_dump_addresses() -> None:
    p = _new()
    with open_bundle(INCIDENT) as bundle:
        ambientz = json.loads(p.apply_bytes(bundle.read("istiod/istiod-40b6fe0ec8-b8qsn/ambientz.json")))
        pods = json.loads(p.apply_bytes(bundle.read("cluster/pods.json")))
    pod_ips = {(i["metadata"]["namespace"], i["metadata"]["name"]): i["status"].get("podIP") for i in pods["items"]}
    checked = 0
    for w in ambientz["workloads"]:
        for a in w.get("addresses", []):
            ip = base64.b64decode(a).decode()
            assert ipaddress.ip_address(ip).is_private
            if (w["namespace"], w["name"]) in pod_ips:
                assert ip == pod_ips[(w["namespace"], w["name"])]
                checked += 1
        if "node" in w:
            assert w["node"] in p.mapping()["hostnames"].values()
    assert checked >= 5


# --------------------------------------------------------------------------------------------------------------------
# whole bundles: JSON validity, no real address left, reversible
# --------------------------------------------------------------------------------------------------------------------


def _shape(v: Any) -> Any:
    if isinstance(v, dict):
        return ("dict", len(v), sorted(repr(_shape(x)) for x in v.values()))
    if isinstance(v, list):
        return ("list", [_shape(x) for x in v])
    return type(v).__name__


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_sample_bundle(sample: Path) -> None:
    p = _new()
    with open_bundle(sample) as bundle:
        members = list(bundle.iter_members())
    outputs = {name: p.apply_bytes(data) for name, data in members}  # one instance for the whole bundle
    mapping = p.mapping_document()
    fakes = set(mapping["ips"].values())
    for name, data in members:
        out = outputs[name]
        text = out.decode("utf-8", "surrogateescape")
        if name.endswith(".json"):
            before, after = json.loads(data), json.loads(out)
            assert _shape(before) == _shape(after), name
        for ip in _ips(text):
            addr = ipaddress.ip_address(ip)
            assert ip in fakes or addr.is_loopback or addr.is_link_local or addr.is_unspecified, (name, ip)
        for node in NODES:
            assert not re.search(rf"(?<![\w.-]){re.escape(node)}(?![\w-])", text), (name, node)
        assert "spiffe://cluster.local/ns/" in text or "spiffe" not in data.decode("utf-8", "replace")
        # the map undoes it (for every text file; base64 addresses are not restored)
        if b"MTAu" not in data and b'"addresses"' not in data:
            assert restore_text(text, mapping) == data.decode("utf-8", "surrogateescape"), name
    assert mapping["ips"] and mapping["hostnames"]


def test_service_hostnames_and_spiffe_ids_survive_in_sample() -> None:
    p = _new()
    with open_bundle(INCIDENT) as bundle:
        data = bundle.read("ztunnel/ambient-worker/ztunnel-g8gvh/config_dump.json")
    before, after = json.loads(data), json.loads(p.apply_bytes(data))
    assert [s["hostname"] for s in before["services"]] == [s["hostname"] for s in after["services"]]
    assert [c["identity"] for c in before["certificates"]] == [c["identity"] for c in after["certificates"]]
    assert [c["certChain"] for c in before["certificates"]] == [c["certChain"] for c in after["certificates"]]
    assert after["config"]["localNode"] == p.mapping()["hostnames"]["ambient-worker"]
    assert after["config"]["caAddress"] == before["config"]["caAddress"]


# --------------------------------------------------------------------------------------------------------------------
# determinism, bytes, the mapping file
# --------------------------------------------------------------------------------------------------------------------


def test_deterministic_for_a_secret() -> None:
    text = LOG_LINE + " " + json.dumps(DUMP) + " fd00:10:244::5 ip-10-0-1-2.ec2.internal"
    a, b, c = _new(), _new(), _new(b"another-secret")
    assert a.apply_text(text) == b.apply_text(text)
    assert a.mapping() == b.mapping()
    assert c.apply_text(text) != a.apply_text(text)
    r1, r2 = Pseudonymizer(), Pseudonymizer()  # random secrets
    assert r1.apply_text("10.128.0.4") != r2.apply_text("10.128.0.4") or r1.apply_text("10.1.0.4") != r2.apply_text(
        "10.1.0.4")


def test_order_of_hostnames_does_not_matter() -> None:
    a, b = Pseudonymizer(SECRET), Pseudonymizer(SECRET)
    a.add_hostnames(NODES)
    b.add_hostnames(list(reversed(NODES)))
    assert a.mapping()["hostnames"] == b.mapping()["hostnames"]


def test_apply_bytes() -> None:
    p = _new()
    clean = b"no addresses here \xff\xfe"
    assert p.apply_bytes(clean) is clean
    out = p.apply_bytes(b"\xff src.addr=10.128.0.4:1 \xc3\x28")
    assert out.startswith(b"\xff src.addr=") and out.endswith(b":1 \xc3\x28") and b"10.128" not in out


def test_mapping_file(tmp_path: Path) -> None:
    p = _new()
    p.apply_text(LOG_LINE + " fd00:10:244::5")
    archive = tmp_path / "bundle.tar.zst"
    path = p.write_mapping(default_mapping_path(archive))
    assert path == tmp_path / "bundle.pseudonyms.json" and path.parent == archive.parent
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["format"] == MAPPING_FORMAT and doc["version"] == 1
    assert doc["ips"] == p.mapping()["ips"] and doc["hostnames"] == p.mapping()["hostnames"]
    assert doc["networks"]["10.128.0.0/16"] == p.apply_text("10.128.0.0") + "/16"
    assert SECRET.decode() not in path.read_text()
    assert list(doc["ips"]) == sorted(doc["ips"])
    assert set(p.mapping()) == {"ips", "hostnames"}


def test_mapping_is_injective_and_maps_back() -> None:
    p = _new()
    reals = [f"10.{a}.{b}.{c}" for a in (0, 1, 128, 244) for b in (0, 1, 255) for c in (1, 254)]
    reals += [f"172.{a}.0.1" for a in range(16, 32)] + [f"{a}.2.3.4" for a in range(11, 100)]
    text = " ".join(reals)
    out = p.apply_text(text)
    assert len(set(out.split())) == len(reals)
    assert restore_text(out, p.mapping()) == text
    inverse = {fake: real for real, fake in p.mapping()["ips"].items()}
    assert [inverse[f] for f in out.split()] == reals


# --------------------------------------------------------------------------------------------------------------------
# invariants (hypothesis)
# --------------------------------------------------------------------------------------------------------------------

_octet = st.integers(0, 255)
_v4 = st.tuples(_octet, _octet, _octet, _octet).map(lambda t: ".".join(map(str, t)))
_v6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
_pieces = st.one_of(_v4, _v6, st.sampled_from(NODES + [":", "/", "[", "]", " ", ".", "-", '"', "spiffe://", "::",
                                                      "ip-10-0-1-2", ".internal", "/24", "%eth0"]), st.text(max_size=6))
_texts = st.lists(_pieces, max_size=25).map("".join)


@settings(max_examples=300, deadline=None)
@given(_texts)
def test_apply_text_never_raises(text: str) -> None:
    p = _new()
    out = p.apply_text(text)
    assert isinstance(out, str)
    assert p.apply_text(text) == out  # stable within one instance


_words = st.lists(st.one_of(_v4, _v6, st.sampled_from(NODES), st.sampled_from(["ip-10-0-1-2.ec2.internal",
                                                                             "fd00:10:244::5/64", "10.1.0.0/12",
                                                                             "[::1]:80", "/10.96.0.1"]),
                            st.text(alphabet="abcxyz-=:", max_size=5)), max_size=20)


@settings(max_examples=300, deadline=None)
@given(_words)
def test_restore_text_undoes_apply_text(words: list[str]) -> None:
    p = _new()
    text = " ".join(words)
    assert restore_text(p.apply_text(text), p.mapping_document()) == text


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), _texts),
                    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(
                        st.one_of(_texts, st.sampled_from(["address", "addresses"])), c, max_size=4)),
                    max_leaves=15))
def test_json_text_stays_valid_json_with_the_same_shape(doc: Any) -> None:
    p = _new()
    for text in (json.dumps(doc), json.dumps(doc, indent=1)):
        out = json.loads(p.apply_text(text))
        assert _shape(out) == _shape(doc) or isinstance(doc, dict)  # dict keys may merge only if fakes collide
        if isinstance(doc, dict):
            assert len(out) == len(doc)
    p.apply_json(doc)


@settings(max_examples=300, deadline=None)
@given(st.lists(_v4, min_size=1, max_size=30, unique=True))
def test_ipv4_mapping_is_injective_and_keeps_slash24(addrs: list[str]) -> None:
    p = _new()
    fakes = [p.apply_text(a) for a in addrs]
    assert len(set(fakes)) == len(addrs)
    for a, f in zip(addrs, fakes):
        assert ipaddress.ip_address(f).version == 4
        if f != a:
            assert a.split(".")[2:] == f.split(".")[2:]
    by24: dict[str, set[str]] = {}
    for a, f in zip(addrs, fakes):
        by24.setdefault(a.rsplit(".", 1)[0], set()).add(f.rsplit(".", 1)[0])
    assert all(len(v) == 1 for v in by24.values())
