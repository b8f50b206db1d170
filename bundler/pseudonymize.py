"""Consistent pseudonyms for IP addresses and node hostnames (``bundle collect --pseudonymize``).

One :class:`Pseudonymizer` is used for every file of a bundle, so a real address becomes the same fake address in a
ztunnel log line, a config dump, istiod's proto-JSON and a Kubernetes object: joins and diffs keep working. The map
from real to fake values is written to a separate file *beside* the archive (:meth:`Pseudonymizer.write_mapping`),
never inside it; whoever holds it can undo the replacement (:func:`restore_text`).

IPv4
    Kept as they are: ``0.0.0.0/8``, loopback ``127/8``, link-local ``169.254/16`` (ambient's probe source
    ``169.254.7.127`` included), multicast and reserved ``224/3`` (``255.255.255.255`` and netmasks included), the
    documentation ranges and a few public resolvers (``8.8.8.8``, ``1.1.1.1``...). Every other address keeps its last
    two octets and gets a fake first two: each real ``/16`` maps to one fake ``/16`` inside ``10.0.0.0/8`` (then
    ``172.16.0.0/12``, then ``100.64.0.0/10`` if a bundle ever holds more than 256 ``/16`` s), chosen by HMAC-SHA256 of
    the real prefix under the secret, with linear probing on collision. So each real ``/24`` maps to one fake ``/24``
    and every subnet of prefix length >= 16 stays a subnet: ``10.128.0.0/22`` (a node's podCIDR) still contains the
    node's pod IPs. A CIDR with a shorter prefix (``10.96.0.0/12``) is mapped and masked to its length, which keeps it
    valid but does not keep containment.
IPv6
    Kept: ``::``, ``::1``, link-local ``fe80::/10``, multicast ``ff00::/8``, documentation ``2001:db8::/32``.
    IPv4-mapped (``::ffff:a.b.c.d``) and NAT64 (``64:ff9b::a.b.c.d``) addresses keep their prefix and map the embedded
    IPv4 address as above. Every other address keeps its low 80 bits and gets a fake ``/48`` inside ``fd00::/8``
    (HMAC again); an EUI-64 interface id (``...ff:fe...``, derived from a MAC address) is replaced too.
Where addresses are found
    Anywhere in text: ``10.0.0.1``, ``10.0.0.1:8080``, ``[fd00::1]:80``, ztunnel's NetworkAddress ``/10.244.2.54`` and
    ``network1/10.244.2.54``, CIDRs ``10.0.0.0/24``, zones ``fe80::1%eth0``. In JSON, istiod's proto-JSON carries IP
    bytes base64-encoded under the keys ``address`` / ``addresses`` (formats.md §3.3): raw 4/16 bytes in
    ``/debug/config_dump`` (``"CvQCNg=="``), the ASCII text of the address in ``/debug/ambientz``
    (``"MTAuMjQ0LjIuNTQ="``). Such a value (a string, or a list of strings, under one of those keys) is decoded,
    mapped and re-encoded the same way; other base64 strings are left alone.
Hostnames
    Node names given with :meth:`Pseudonymizer.add_hostnames` (the collector knows them), and cloud node FQDNs found
    in text: ``*.internal`` (``ip-10-0-1-2.ec2.internal``, ``*.compute.internal``, GKE's ``*.c.<project>.internal``),
    ``*.compute.amazonaws.com``, ``*.cloudapp.net``. A first label that embeds an address (``ip-10-0-1-2``,
    ``ec2-54-1-2-3``) becomes the same label around the fake address (``ip-10-37-1-2``); any other label becomes
    ``node-<6 hex>`` (HMAC of the label). The domain of an FQDN stays when it only names a cloud region
    (``ec2.internal``, ``us-west-2.compute.internal``, ``compute-1.amazonaws.com``) and becomes ``d-<4 hex>.example``
    otherwise (a GCP project id is sensitive). Node names are matched as whole tokens; a distinctive name (6+
    characters holding a ``-``, ``.`` or digit) also after a ``-``, so static pods such as ``etcd-<node>`` are covered.
    Never replaced: ``*.svc`` service hostnames, SPIFFE ids (``spiffe://...``), well-known internal names
    (``metadata.google.internal``, ``host.docker.internal``...), names passed to :meth:`Pseudonymizer.keep_names`
    (the trust domain, if it looks like a cloud FQDN), image references (``registry.internal/...``) and the generic
    names refused by :meth:`Pseudonymizer.add_hostnames` (``localhost``, ``default``...).

Replacements contain only ``[0-9a-z.:-]``, so JSON text stays valid JSON (only string contents change). Lengths are
not kept. Determinism: with the same ``secret`` and the same input in the same order, the output is the same, and the
same real address gets the same fake one in different bundles unless two real prefixes compete for one fake prefix
(then the first seen wins; the odds are about n²/512 for n real ``/16`` s, which is why the pool is searched by
probing rather than failing). Without a secret a random one is drawn, so pseudonyms differ between runs.

The mapping file (:meth:`Pseudonymizer.write_mapping`) is JSON::

    {
      "format": "ztunnel-bundle-pseudonyms",
      "version": 1,
      "ips": {"10.128.0.4": "10.37.0.4", "fd00:10:244::5": "fd4e:1a2b:3c4d::5"},
      "hostnames": {"ambient-worker": "node-3f9a1c", "ip-10-0-1-2.ec2.internal": "ip-10-37-1-2.ec2.internal"},
      "networks": {"10.128.0.0/16": "10.37.0.0/16", "fd00:10:244::/48": "fd4e:1a2b:3c4d::/48"}
    }

``ips`` and ``hostnames`` map each real value seen (or registered) to its fake; ``networks`` holds the prefix
mappings (and CIDRs shorter than the mapped prefix, as written in the output). Keys are sorted. The secret is not in
the file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["MAPPING_FORMAT", "Pseudonymizer", "default_mapping_path", "restore_text"]

MAPPING_FORMAT = "ztunnel-bundle-pseudonyms"

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address
IP = ipaddress.IPv4Address | ipaddress.IPv6Address

# ---------------------------------------------------------------------------------------------------------------------
# Addresses kept as they are
# ---------------------------------------------------------------------------------------------------------------------

_KEEP_V4_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network", 0.0.0.0 listeners
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local; ambient's 169.254.7.127 probe source
        "224.0.0.0/3",  # multicast + reserved, 255.255.255.255 and netmasks 255.x
        "192.0.2.0/24",  # documentation (already fake)
        "198.51.100.0/24",
        "203.0.113.0/24",
    )
)
_KEEP_V4 = frozenset(IPv4(a) for a in ("8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "149.112.112.112"))
_KEEP_V6_NETS = tuple(ipaddress.ip_network(n) for n in ("::/128", "::1/128", "fe80::/10", "ff00::/8", "2001:db8::/32"))
_V4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

# Fake /16 prefixes, as the integer of the first two octets: 10/8 first, then 172.16/12, then 100.64/10.
_V4_POOL: tuple[int, ...] = (
    tuple((10 << 8) | x for x in range(256))
    + tuple((172 << 8) | x for x in range(16, 32))
    + tuple((100 << 8) | x for x in range(64, 128))
)

# Cloud-provider names that are not node names.
_KEEP_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "host.docker.internal",
        "gateway.docker.internal",
        "kubernetes.docker.internal",
        "host.minikube.internal",
        "control-plane.minikube.internal",
        "host.containers.internal",
        "host.lima.internal",
    }
)
# Names too generic to be replaced as node names (they are also namespaces, services, words).
_STOP_NAMES = frozenset(
    {"localhost", "kubernetes", "default", "cluster.local", "istio-system", "kube-system", "istiod", "ztunnel",
     "istio-cni", "none", "true", "false", "node", "host", "master", "worker", "control-plane", "local", "internal"}
)
# Domains that only say which cloud region a node is in: kept in fake FQDNs.
_GENERIC_DOMAIN = re.compile(
    r"ec2\.internal|[a-z]{2}(?:-gov)?-[a-z]{2,12}-\d{1,2}\.compute\.internal|compute-\d{1,2}\.amazonaws\.com"
    r"|[a-z]{2}(?:-gov)?-[a-z]{2,12}-\d{1,2}\.compute\.amazonaws\.com(?:\.cn)?"
)

# ---------------------------------------------------------------------------------------------------------------------
# Patterns
# ---------------------------------------------------------------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_V4_TEXT = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
# An IPv4 address not glued to a word or to more dotted numbers (OIDs, 4-part versions after a letter such as
# "v1.2.3.4" are left alone); an optional /prefix-length.
_V4_RE = rf"(?<![\w.])(?P<v4>{_V4_TEXT})(?![\w]|\.[0-9])(?:/(?P<v4len>3[0-2]|[12]?[0-9])(?![\w.]))?"
# IPv6 candidates: 2-8 colon-terminated hex groups then a hex group or dotted IPv4 tail; validated by ipaddress
# (timestamps such as 11:00:09 and MAC addresses fail validation). Not glued to words or colons, so Rust paths
# (xds::client) never start a candidate.
_V6_RE = (
    rf"(?<![\w:.%])(?P<v6>(?:[0-9A-Fa-f]{{0,4}}:){{2,8}}(?:{_V4_TEXT}|[0-9A-Fa-f]{{1,4}})?)(?![\w:])"
    r"(?P<v6zone>%[\w.-]{1,32})?(?:/(?P<v6len>12[0-8]|1[01][0-9]|[1-9]?[0-9])(?![\w.]))?"
)
# istiod proto-JSON: base64 IP bytes under "address" / "addresses" (a string, or a list of plain strings).
_B64_RE = (
    r'"(?:addresses|address)"[ \t\r\n]{0,16}:[ \t\r\n]{0,16}'
    r'(?:"(?P<b64one>[A-Za-z0-9+/]{4,64}={0,2})"|\[(?P<b64list>[^\[\]{}]{0,65536})\])'
)
# Cloud node FQDNs, recognised by their suffix.
_FQDN_RE = (
    r"(?<![\w.-])(?P<fqdn>(?:[A-Za-z0-9-]{1,63}\.){1,8}"
    r"(?:internal|compute(?:-[0-9]{1,2})?\.amazonaws\.com(?:\.cn)?|cloudapp\.net))(?![\w-]|\.[A-Za-z0-9])"
)
# A bare label embedding an address: ip-10-0-1-2 (EKS node names), ec2-54-1-2-3 (public EC2 names).
_DASH_RE = rf"(?<![\w.-])(?P<dash>(?:ip|ec2)-{_OCTET}(?:-{_OCTET}){{3}})(?![\w-])"
_DASHED_LABEL = re.compile(rf"(?P<prefix>ip|ec2)-(?P<ip>{_OCTET}(?:-{_OCTET}){{3}})")
_LIST_ITEM = re.compile(r'"(?P<str>(?:[^"\\]|\\.){0,4096})"|[^"]{1,65536}')
_TOKEN_STOP = frozenset(" \t\r\n\"'<>,;=()[]{}|`")


def _fmt(ip: IP) -> str:
    """Text of an address; IPv4-mapped and NAT64 IPv6 addresses keep their dotted tail (Python < 3.13 prints
    ``::ffff:a00:1``)."""
    if isinstance(ip, IPv6):
        for net, prefix in ((_V4_MAPPED, "::ffff:"), (_NAT64, "64:ff9b::")):
            if ip in net:
                return prefix + str(IPv4(int(ip) & 0xFFFFFFFF))
    return str(ip)


def _trie_regex(words: Iterable[str]) -> str:
    """A regex matching any of ``words``, longest first, built as a trie so that each position costs one walk."""
    trie: dict[str, Any] = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        end = "" in node
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if end else body

    return build(trie)


def _hexdigest(secret: bytes, label: str) -> str:
    return hmac.new(secret, label.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def _token_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    """The whitespace/quote-delimited token around ``text[start:end]`` (at most 512 characters each way)."""
    lo = start
    while lo > 0 and start - lo < 512 and text[lo - 1] not in _TOKEN_STOP:
        lo -= 1
    hi = end
    while hi < len(text) and hi - end < 512 and text[hi] not in _TOKEN_STOP:
        hi += 1
    return lo, hi


def _protected(text: str, start: int, end: int) -> bool:
    """Inside a SPIFFE id or a Kubernetes service hostname (``*.svc``, ``*.svc.cluster.local``)."""
    lo, hi = _token_bounds(text, start, end)
    token = text[lo:hi]
    if "spiffe://" in text[lo:start]:
        return True
    tail = text[start:hi]
    return ".svc." in tail or tail.endswith(".svc") or ".svc:" in tail or token.startswith("spiffe://")


def _image_reference(text: str, start: int, end: int) -> bool:
    """``registry.internal/ns/image:tag`` or ``registry.internal:5000/...`` (and not ``https://host/...``)."""
    rest = text[end : end + 8]
    if not (rest.startswith("/") or re.match(r":[0-9]{1,5}/", rest)):
        return False
    return not text[max(0, start - 3) : start] == "://"


def _distinctive(name: str) -> bool:
    return len(name) >= 6 and any(c in name for c in "-.0123456789")


class Pseudonymizer:
    """Replace IP addresses and node hostnames consistently across the files of one bundle.

    Args:
        secret: HMAC key that decides the fake values. Pass the same secret to get the same pseudonyms in several
            bundles (e.g. a healthy and a broken capture of one cluster); ``None`` draws a random one.
    """

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else os.urandom(32)
        self._v4_prefix: dict[int, int] = {}  # real /16 -> fake /16 (first two octets as an int)
        self._v4_prefix_owner: dict[int, int] = {}
        self._v6_prefix: dict[bytes, bytes] = {}  # real /48 (6 bytes) -> fake /48
        self._v6_prefix_owner: dict[bytes, bytes] = {}
        self._ips: dict[str, str] = {}
        self._hosts: dict[str, str] = {}
        self._host_owner: dict[str, str] = {}
        self._labels: dict[str, str] = {}
        self._label_owner: dict[str, str] = {}
        self._domains: dict[str, str] = {}
        self._networks: dict[str, str] = {}
        self._names: set[str] = set()
        self._keep: set[str] = set()
        self._regex: re.Pattern[str] | None = None

    # -- configuration -----------------------------------------------------------------------------------------

    def add_hostnames(self, names: Iterable[str]) -> None:
        """Register node names (or other host names) to replace wherever they appear as a whole token.

        Too-short or generic names (``localhost``, ``default``, ``kubernetes``...), IP literals and names given to
        :meth:`keep_names` are ignored. An FQDN also registers its first label.
        """
        if isinstance(names, str):
            names = [names]
        changed = False
        for raw in sorted(set(names)):
            name = raw.strip().rstrip(".")
            if len(name) < 3 or name in _STOP_NAMES or name in self._keep or name in _KEEP_HOSTS:
                continue
            if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", name):
                continue
            try:
                ipaddress.ip_address(name)
                continue
            except ValueError:
                pass
            for n in (name, name.split(".", 1)[0]):
                if len(n) >= 3 and n not in _STOP_NAMES and n not in self._names:
                    self._names.add(n)
                    self._fake_host(n)
                    changed = True
        if changed:
            self._regex = None

    def keep_names(self, names: Iterable[str]) -> None:
        """Names never to replace, e.g. the mesh's trust domain when it looks like a cloud FQDN."""
        if isinstance(names, str):
            names = [names]
        self._keep.update(n.strip() for n in names if n.strip())
        self._names.difference_update(self._keep)
        self._regex = None

    # -- the map ---------------------------------------------------------------------------------------------------

    def mapping(self) -> dict[str, dict[str, str]]:
        """``{"ips": {real: fake}, "hostnames": {real: fake}}`` for every value replaced (or registered) so far."""
        return {"ips": dict(sorted(self._ips.items())), "hostnames": dict(sorted(self._hosts.items()))}

    def mapping_document(self) -> dict[str, Any]:
        """The content of the mapping file (see the module docstring)."""
        return {
            "format": MAPPING_FORMAT,
            "version": 1,
            **self.mapping(),
            "networks": dict(sorted(self._networks.items())),
        }

    def write_mapping(self, path: str | os.PathLike[str]) -> Path:
        """Write the mapping file (mode 0600: it undoes the pseudonymization). Keep it out of the archive."""
        p = Path(path)
        data = json.dumps(self.mapping_document(), indent=2, sort_keys=False) + "\n"
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # also when the file existed with a wider mode
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
        return p

    # -- applying ----------------------------------------------------------------------------------------------

    def apply_text(self, text: str) -> str:
        """Replace addresses and host names in ``text``. Apply it once per artifact: fake values are addresses and
        names too, so a second pass would map them again."""
        return self._pattern().sub(self._replace, text)

    def apply_bytes(self, data: bytes) -> bytes:
        """Replace in UTF-8 bytes (invalid UTF-8 survives via ``surrogateescape``); returns ``data`` itself if nothing
        changed."""
        text = data.decode("utf-8", "surrogateescape")
        new = self.apply_text(text)
        if new == text:
            return data
        return new.encode("utf-8", "surrogateescape")

    def apply_json(self, obj: Any) -> Any:
        """A new JSON value with every string (object keys included) replaced; base64 IP bytes under ``address`` /
        ``addresses`` keys are decoded, mapped and re-encoded. The input is not modified."""
        return self._json(obj, None)

    # -- internals: mapping values -----------------------------------------------------------------------------

    def _map_ip(self, ip: IP) -> IP:
        if isinstance(ip, IPv4):
            fake: IP = self._map_v4(ip)
        else:
            fake = self._map_v6(ip)
        if fake != ip:
            self._ips[_fmt(ip)] = _fmt(fake)
        return fake

    def _map_v4(self, ip: IPv4) -> IPv4:
        if ip in _KEEP_V4 or any(ip in n for n in _KEEP_V4_NETS):
            return ip
        value = int(ip)
        real16 = value >> 16
        fake16 = self._v4_prefix.get(real16)
        if fake16 is None:
            start = int(_hexdigest(self._secret, f"ipv4/16:{real16}"), 16) % 256
            order = [_V4_POOL[(start + i) % 256] for i in range(256)] + list(_V4_POOL[256:])
            for cand in order:
                if cand not in self._v4_prefix_owner:
                    fake16 = cand
                    break
            else:  # more than 336 distinct /16s: reuse (documented as a collision)
                fake16 = order[0]
            self._v4_prefix[real16] = fake16
            self._v4_prefix_owner.setdefault(fake16, real16)
            self._networks[f"{IPv4(real16 << 16)}/16"] = f"{IPv4(fake16 << 16)}/16"
        return IPv4((fake16 << 16) | (value & 0xFFFF))

    def _map_v6(self, ip: IPv6) -> IPv6:
        if any(ip in n for n in _KEEP_V6_NETS):
            return ip
        for net in (_V4_MAPPED, _NAT64):
            if ip in net:
                v4 = IPv4(int(ip) & 0xFFFFFFFF)
                fake4 = self._map_v4(v4)
                if fake4 != v4:
                    self._ips[str(v4)] = str(fake4)
                return IPv6(int(net.network_address) | int(fake4))
        packed = ip.packed
        real48 = packed[:6]
        fake48 = self._v6_prefix.get(real48)
        if fake48 is None:
            counter = 0
            while True:
                digest = bytes.fromhex(_hexdigest(self._secret, f"ipv6/48:{real48.hex()}:{counter}"))
                cand = b"\xfd" + digest[:5]
                if cand not in self._v6_prefix_owner:
                    break
                counter += 1
            fake48 = cand
            self._v6_prefix[real48] = fake48
            self._v6_prefix_owner[fake48] = real48
            self._networks[f"{IPv6(real48 + bytes(10))}/48"] = f"{IPv6(fake48 + bytes(10))}/48"
        low = packed[6:]
        if low[5:7] == b"\xff\xfe":  # EUI-64 interface id: embeds a MAC address
            iid = bytes.fromhex(_hexdigest(self._secret, f"ipv6/iid:{low[2:].hex()}"))[:8]
            low = low[:2] + iid
        return IPv6(fake48 + low)

    def _fake_label(self, label: str) -> str:
        fake = self._labels.get(label)
        if fake is not None:
            return fake
        m = _DASHED_LABEL.fullmatch(label)
        if m:
            fake4 = self._map_ip(IPv4(m.group("ip").replace("-", ".")))
            fake = f"{m.group('prefix')}-{str(fake4).replace('.', '-')}"
        else:
            digest = _hexdigest(self._secret, f"host:{label}")
            width = 6
            fake = f"node-{digest[:width]}"
            while self._label_owner.get(fake, label) != label:
                width += 2
                fake = f"node-{digest[:width]}"
        self._labels[label] = fake
        self._label_owner[fake] = label
        return fake

    def _fake_domain(self, domain: str) -> str:
        if _GENERIC_DOMAIN.fullmatch(domain):
            return domain
        fake = self._domains.get(domain)
        if fake is None:
            digest = _hexdigest(self._secret, f"domain:{domain}")
            width = 4
            fake = f"d-{digest[:width]}.example"
            while fake in self._domains.values():
                width += 2
                fake = f"d-{digest[:width]}.example"
            self._domains[domain] = fake
        return fake

    def _fake_host(self, name: str) -> str:
        fake = self._hosts.get(name)
        if fake is not None:
            return fake
        first, dot, domain = name.partition(".")
        fake = self._fake_label(first) + ("." + self._fake_domain(domain) if dot else "")
        if self._host_owner.get(fake, name) != name:  # distinct real names with one fake: disambiguate
            label = f"node-{_hexdigest(self._secret, f'fqdn:{name}')[:10]}"
            fake = label + ("." + self._fake_domain(domain) if dot else "")
        self._hosts[name] = fake
        self._host_owner[fake] = name
        return fake

    def _b64_ip(self, value: str) -> str | None:
        """The base64 of the fake address if ``value`` is base64 of an address (ASCII text or raw 4/16 bytes)."""
        if len(value) < 8 or len(value) % 4:
            return None
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        try:
            text_ip = ipaddress.ip_address(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            text_ip = None
        if text_ip is not None:
            return base64.b64encode(_fmt(self._map_ip(text_ip)).encode("ascii")).decode("ascii")
        if len(raw) in (4, 16):
            return base64.b64encode(self._map_ip(ipaddress.ip_address(raw)).packed).decode("ascii")
        return None

    # -- internals: text ---------------------------------------------------------------------------------------

    def _pattern(self) -> re.Pattern[str]:
        if self._regex is None:
            parts = [_B64_RE, _V6_RE, _V4_RE, _FQDN_RE]
            if self._names:
                parts.append(rf"(?<![\w.])(?P<name>{_trie_regex(self._names)})(?![\w-])")
            parts.append(_DASH_RE)
            self._regex = re.compile("|".join(parts))
        return self._regex

    def _replace(self, m: re.Match[str]) -> str:
        group = m.lastgroup
        text = m.string
        if m.group("v4") is not None:
            return self._replace_v4(m)
        if m.group("v6") is not None:
            return self._replace_v6(m)
        if m.group("b64one") is not None or m.group("b64list") is not None:
            return self._replace_b64(m)
        if m.group("fqdn") is not None:
            name = m.group("fqdn")
            if (
                name.lower() in _KEEP_HOSTS
                or name in self._keep
                or ".svc." in name
                or _protected(text, m.start(), m.end())
                or _image_reference(text, m.start(), m.end())
            ):
                return m.group()
            return self._fake_host(name)
        if group == "name":
            name = m.group("name")
            start = m.start()
            if start > 0 and text[start - 1] == "-" and not _distinctive(name):
                return name
            if _protected(text, start, m.end()):
                return name
            return self._fake_host(name)
        if m.group("dash") is not None:
            if _protected(text, m.start(), m.end()):
                return m.group()
            return self._fake_host(m.group("dash"))
        return m.group()  # pragma: no cover

    def _replace_v4(self, m: re.Match[str]) -> str:
        ip = IPv4(m.group("v4"))
        fake = self._map_ip(ip)
        plen = m.group("v4len")
        if plen is None:
            return str(fake)
        n = int(plen)
        if n >= 16 or fake == ip:
            return f"{fake}/{n}"
        net = ipaddress.ip_network(f"{fake}/{n}", strict=False)
        self._networks[f"{ip}/{n}"] = str(net)  # as written, so that restore_text gives back the same text
        return f"{net.network_address}/{n}"

    def _replace_v6(self, m: re.Match[str]) -> str:
        cand = m.group("v6")
        if cand != "::" and not any(c.isdigit() for c in cand):
            return m.group()  # "dead::beef": a real address almost always has a digit; words do not
        try:
            ip = IPv6(cand)
        except ValueError:
            return m.group()
        fake = self._map_ip(ip)
        out = _fmt(fake) if fake != ip else cand
        out += m.group("v6zone") or ""
        plen = m.group("v6len")
        if plen is not None:
            n = int(plen)
            if n < 48 and fake != ip and not (ip in _V4_MAPPED or ip in _NAT64):
                net = ipaddress.ip_network(f"{fake}/{n}", strict=False)
                self._networks[f"{_fmt(ip)}/{n}"] = str(net)
                out = f"{net.network_address}{m.group('v6zone') or ''}"
            out += f"/{n}"
        return out

    def _replace_b64(self, m: re.Match[str]) -> str:
        one = m.group("b64one")
        if one is not None:
            fake = self._b64_ip(one)
            if fake is None:
                fake = self.apply_text(one)  # not an address: still a string that may hold names
            return m.group()[: m.start("b64one") - m.start()] + fake + '"'
        body = m.group("b64list")

        def element(sm: re.Match[str]) -> str:
            if sm.group("str") is None:
                return self.apply_text(sm.group())
            b = self._b64_ip(sm.group("str"))
            return f'"{b}"' if b is not None else f'"{self.apply_text(sm.group("str"))}"'

        new_body = _LIST_ITEM.sub(element, body)
        return m.group()[: m.start("b64list") - m.start()] + new_body + "]"

    def _json(self, node: Any, key: str | None) -> Any:
        if isinstance(node, str):
            if key in ("address", "addresses"):
                fake = self._b64_ip(node)
                if fake is not None:
                    return fake
            return self.apply_text(node)
        if isinstance(node, dict):
            return {(self.apply_text(k) if isinstance(k, str) else k): self._json(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [self._json(v, key) for v in node]
        return node


# ---------------------------------------------------------------------------------------------------------------------
# Undoing it (for whoever holds the mapping file)
# ---------------------------------------------------------------------------------------------------------------------


def restore_text(text: str, mapping: Mapping[str, Any]) -> str:
    """Put the real addresses and host names back into pseudonymized ``text``, given :meth:`Pseudonymizer.mapping`
    or the mapping file's content. Base64-encoded addresses are not restored."""
    ips = {fake: real for real, fake in (mapping.get("ips") or {}).items()}
    hosts = {fake: real for real, fake in (mapping.get("hostnames") or {}).items()}
    nets = {fake: real for real, fake in (mapping.get("networks") or {}).items()}
    parts = [_V6_RE, _V4_RE]
    if hosts:
        parts.append(rf"(?<![\w.])(?P<name>{_trie_regex(hosts)})(?![\w-])")
    pattern = re.compile("|".join(parts))

    def repl(m: re.Match[str]) -> str:
        if m.group("v4") is not None:
            addr, plen = m.group("v4"), m.group("v4len")
            if plen is not None and f"{addr}/{plen}" in nets:
                return nets[f"{addr}/{plen}"]
            return ips.get(addr, addr) + (f"/{plen}" if plen is not None else "")
        if m.group("v6") is not None:
            cand = m.group("v6")
            try:
                norm = _fmt(IPv6(cand))
            except ValueError:
                return m.group()
            plen = m.group("v6len")
            zone = m.group("v6zone") or ""
            if plen is not None and f"{norm}/{plen}" in nets:
                return nets[f"{norm}/{plen}"]
            return ips.get(norm, cand) + zone + (f"/{plen}" if plen is not None else "")
        name = m.group("name")
        return hosts.get(name, name)

    return pattern.sub(repl, text)


def default_mapping_path(archive: str | os.PathLike[str]) -> Path:
    """Where the mapping of ``archive`` goes: beside it, ``<name>.pseudonyms.json`` (``x.tar.zst`` ->
    ``x.pseudonyms.json``, as docs/collect.md says)."""
    p = Path(archive)
    return p.with_name(p.name.removesuffix(".tar.zst") + ".pseudonyms.json")
