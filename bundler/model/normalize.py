"""Normalisation: ztunnel ``/config_dump`` (every shape from 1.22 on) and istiod proto-JSON (per-proxy dump, WADS
dump, ``/debug/ambientz``) into the canonical dataclasses of :mod:`bundler.model.types`. formats.md 3.5 is the spec.

Pure functions over parsed JSON. They never raise on a bad entry: an entry that cannot be normalised is left out
and reported in the view's ``issues`` as ``(JSON pointer, message)``. Only a document that is not a dump at all
raises: :class:`UnsupportedDump` (the <=1.21 layout) or :class:`NormalizeError` (not a JSON object).

Entry points: :func:`ztunnel_view`, :func:`istiod_view_from_config_dump`, :func:`istiod_view_from_ambientz`, and
per object :func:`ztunnel_workload`, :func:`ztunnel_service`, :func:`ztunnel_policy`, :func:`ztunnel_certificate`,
:func:`ztunnel_workload_state`, :func:`istiod_workload`, :func:`istiod_service`, :func:`istiod_policy`.

``intern``: an optional dict shared across views; equal Workload/Service/Policy objects of different dumps are
then the same object (cheap ``is`` comparisons, one copy in memory).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import reprlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from bundler.model.types import (
    CertInfo,
    Certificate,
    Connection,
    Endpoint,
    IstiodView,
    Policy,
    Service,
    Workload,
    WorkloadState,
    ZtunnelView,
)
from bundler.validation import legacy_layout

__all__ = [
    "ADDRESS_TYPE",
    "AUTHORIZATION_TYPE",
    "WORKLOAD_TYPE",
    "NormalizeError",
    "UnsupportedDump",
    "canonical_rules",
    "decode_ip",
    "escape_pointer_token",
    "istiod_policy",
    "istiod_service",
    "istiod_view",
    "istiod_view_from_ambientz",
    "istiod_view_from_config_dump",
    "istiod_workload",
    "json_pointer",
    "ztunnel_certificate",
    "ztunnel_policy",
    "ztunnel_service",
    "ztunnel_view",
    "ztunnel_workload",
    "ztunnel_workload_state",
]

ADDRESS_TYPE = "type.googleapis.com/istio.workload.Address"
WORKLOAD_TYPE = "type.googleapis.com/istio.workload.Workload"
AUTHORIZATION_TYPE = "type.googleapis.com/istio.security.Authorization"

# ztunnel's defaults for values istiod leaves empty (formats.md 2.3, 3.5)
DEFAULT_TRUST_DOMAIN = "cluster.local"
DEFAULT_SERVICE_ACCOUNT = "default"
DEFAULT_CLUSTER_ID = "Kubernetes"

_T = TypeVar("_T")


class NormalizeError(ValueError):
    """The document is not a config dump / istiod view at all (not a JSON object...)."""


class UnsupportedDump(NormalizeError):
    """A ztunnel config dump in the <=1.21 layout (by_addr/by_uid...), which is not supported."""


# --- JSON pointers -----------------------------------------------------------------------------------------------


def escape_pointer_token(token: object) -> str:
    """One RFC 6901 reference token: ``~`` -> ``~0``, ``/`` -> ``~1``."""
    return str(token).replace("~", "~0").replace("/", "~1")


def json_pointer(*tokens: object) -> str:
    return "".join("/" + escape_pointer_token(t) for t in tokens)


# --- small value helpers -----------------------------------------------------------------------------------------


def _str(obj: dict[str, Any], key: str, default: str = "") -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else default


def _bool(obj: dict[str, Any], key: str) -> bool:
    return obj.get(key) is True


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return default
    return default


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, dict):
        value = list(value)
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not an object")
    return value


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 3
_MAX_REASON = 300


def _short(value: Any) -> str:
    """A bounded repr for messages: a hostile value (a 1 MB string, nesting 1000 deep) stays a few dozen
    characters long."""
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a repr that fails must not hide the real problem
        return f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _reason(exc: BaseException) -> str:
    """An exception as a one-line reason of bounded length: ValueErrors say what is wrong; anything else means a
    value of the wrong type somewhere inside the entry."""
    text = str(exc) if isinstance(exc, ValueError) else f"unexpected value inside ({type(exc).__name__}: {exc})"
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def _intern(intern: dict[Any, Any] | None, obj: _T) -> _T:
    if intern is None:
        return obj
    try:
        return intern.setdefault(obj, obj)
    except TypeError:  # an unhashable value slipped into a field: not interned, still correct
        return obj


def decode_ip(value: Any, prefer_text: bool = False) -> str:
    """A proto ``bytes`` address in jsonpb (base64) as IP text.

    4 or 16 decoded bytes are a raw address; anything else is the ASCII text of an IP (istiod's
    ``/debug/ambientz`` quirk, formats.md 3.3). ``prefer_text`` (for ambientz) tries the text reading first, since
    some IPv6 texts ("1::2") are 4 or 16 characters long. Raises ValueError when it is neither.
    """
    if not isinstance(value, str):
        raise ValueError(f"address {_short(value)} is not a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            raise ValueError(f"address {_short(value)} is not base64") from None

    def as_text() -> str | None:
        try:
            return str(ipaddress.ip_address(raw.decode("ascii")))
        except (UnicodeDecodeError, ValueError):
            return None

    if prefer_text:
        text = as_text()
        if text is not None:
            return text
    if len(raw) in (4, 16):
        return str(ipaddress.ip_address(raw))
    text = as_text()
    if text is None:
        raise ValueError(f"address {_short(value)} decodes to {len(raw)} bytes: neither an IP nor its text")
    return text


def _network_address(obj: Any, prefer_text: bool) -> tuple[str, str, int | None]:
    """(network, ip, length) of a proto NetworkAddress ``{network, address, length?}``."""
    obj = _dict(obj, "address")
    return _str(obj, "network"), decode_ip(obj.get("address"), prefer_text), (
        obj["length"] if isinstance(obj.get("length"), int) and not isinstance(obj.get("length"), bool) else None
    )


def proto_gateway(obj: Any, prefer_text: bool = False) -> str | None:
    """istiod's GatewayAddress -> ztunnel's destination string: ``<net>/<ip>`` or ``<ns>/<hostname>``."""
    if not isinstance(obj, dict) or not obj:
        return None
    if isinstance(obj.get("address"), dict):
        network, ip, _length = _network_address(obj["address"], prefer_text)
        return f"{network}/{ip}"
    if isinstance(obj.get("hostname"), dict):
        host = obj["hostname"]
        return f"{_str(host, 'namespace')}/{_str(host, 'hostname')}"
    raise ValueError("gateway address without address or hostname")


def ztunnel_gateway(obj: Any) -> str | None:
    """ztunnel's GatewayAddress ``{destination, hboneMtlsPort}`` -> the destination string (other keys, such as
    the hand-made fixture's ``port``, are ignored)."""
    if not isinstance(obj, dict):
        return obj if isinstance(obj, str) else None
    dest = obj.get("destination")
    if isinstance(dest, str):
        return dest
    if isinstance(dest, dict):  # defensive: an externally tagged form {"Address": "..."} / {"Hostname": {...}}
        for value in dest.values():
            if isinstance(value, str):
                return value
            if isinstance(value, dict):
                return f"{_str(value, 'namespace')}/{_str(value, 'hostname')}"
    return None


def _port_map(obj: Any) -> tuple[tuple[int, int], ...]:
    """ztunnel's ``{"80": 8080}`` -> ((80, 8080),), sorted."""
    if obj is None:
        return ()
    obj = _dict(obj, "port map")
    out = []
    for key, value in obj.items():
        try:
            out.append((int(key), _int(value)))
        except (TypeError, ValueError):
            raise ValueError(f"port map key {_short(key)} is not a number") from None
    return tuple(sorted(out))


def _proto_ports(value: Any) -> tuple[tuple[int, int], ...]:
    """istiod's ``[{servicePort, targetPort}]`` -> ((servicePort, targetPort),), sorted (appProtocol dropped)."""
    if not isinstance(value, list):
        return ()
    return tuple(sorted((_int(p.get("servicePort")), _int(p.get("targetPort"))) for p in value if isinstance(p, dict)))


def _locality(obj: Any) -> tuple[str, str, str]:
    if not isinstance(obj, dict):
        return ("", "", "")
    return (_str(obj, "region"), _str(obj, "zone"), _str(obj, "subzone"))


# --- ztunnel /config_dump ----------------------------------------------------------------------------------------


def ztunnel_workload(raw: Any) -> Workload:
    """One item of ztunnel's ``workloads`` (any version from 1.22) with ztunnel's defaults filled in."""
    raw = _dict(raw, "workload")
    uid = _str(raw, "uid")
    name, namespace = _str(raw, "name"), _str(raw, "namespace")
    if not uid and not name:
        raise ValueError("workload without uid or name")
    app = raw.get("applicationTunnel")
    application_tunnel = None
    if isinstance(app, dict):
        port = app.get("port")
        numeric = isinstance(port, int) and not isinstance(port, bool)  # true is not port 1
        application_tunnel = (_str(app, "protocol", "NONE"), port if numeric and port else None)
    capacity = raw.get("capacity")
    return Workload(
        uid=uid or f"{namespace}/{name}",
        name=name,
        namespace=namespace,
        ips=_strings(raw.get("workloadIps")),
        protocol=_str(raw, "protocol", "TCP") or "TCP",
        node=_str(raw, "node"),
        service_account=_str(raw, "serviceAccount") or DEFAULT_SERVICE_ACCOUNT,
        trust_domain=_str(raw, "trustDomain") or DEFAULT_TRUST_DOMAIN,
        waypoint=ztunnel_gateway(raw.get("waypoint")),
        network_gateway=ztunnel_gateway(raw.get("networkGateway")),
        status=_str(raw, "status") or "Healthy",
        services=tuple(sorted(set(_strings(raw.get("services"))))),
        authorization_policies=tuple(sorted(set(_strings(raw.get("authorizationPolicies"))))),
        network=_str(raw, "network"),
        cluster_id=_str(raw, "clusterId") or DEFAULT_CLUSTER_ID,
        workload_type=(_str(raw, "workloadType") or "deployment").lower(),
        workload_name=_str(raw, "workloadName"),
        canonical_name=_str(raw, "canonicalName"),
        canonical_revision=_str(raw, "canonicalRevision"),
        native_tunnel=_bool(raw, "nativeTunnel"),
        network_mode=_str(raw, "networkMode") or "Standard",
        hostname=_str(raw, "hostname"),
        locality=_locality(raw.get("locality")),
        capacity=capacity if isinstance(capacity, int) and not isinstance(capacity, bool) else 1,
        application_tunnel=application_tunnel,
    )


def _ztunnel_endpoints(raw: Any, status_of: dict[str, str]) -> tuple[Endpoint, ...]:
    """Both endpoint shapes: >=1.24 ``{uid: {port, status, workloadUid}}`` and <=1.23
    ``{"uid:net/ip": {workloadUid, service, address, port}}`` (no status: the workload's, from ``status_of``)."""
    if raw is None:
        return ()
    raw = _dict(raw, "endpoints")
    by_uid: dict[str, Endpoint] = {}
    for key, ep in raw.items():
        if not isinstance(ep, dict):
            raise ValueError(f"endpoint {_short(key)} is not an object")
        uid = _str(ep, "workloadUid") or key
        ports = _port_map(ep.get("port"))
        status = _str(ep, "status") or status_of.get(uid, "Healthy")
        previous = by_uid.get(uid)
        if previous is not None:  # the old shape has one entry per address of the workload
            ports = tuple(sorted(set(previous.ports) | set(ports)))
        by_uid[uid] = Endpoint(uid, ports, status)
    return tuple(by_uid[uid] for uid in sorted(by_uid))


def ztunnel_service(raw: Any, status_of: dict[str, str] | None = None) -> Service:
    """One item of ztunnel's ``services``. ``status_of`` (workload uid -> status) fills the endpoint status of the
    <=1.23 endpoint shape, which has none."""
    raw = _dict(raw, "service")
    hostname = _str(raw, "hostname")
    if not hostname:
        raise ValueError("service without hostname")
    cidrs = []
    for item in raw.get("cidrVips") or ():
        if isinstance(item, dict):
            cidrs.append(f"{_str(item, 'network')}/{_str(item, 'cidr')}")
        elif isinstance(item, str):
            cidrs.append(item)
    lb = raw.get("loadBalancer")
    load_balancer = None
    if isinstance(lb, dict):
        load_balancer = (_str(lb, "mode") or "Standard", _str(lb, "healthPolicy") or "OnlyHealthy",
                         _strings(lb.get("routingPreferences")))
    return Service(
        namespace=_str(raw, "namespace"),
        name=_str(raw, "name"),
        hostname=hostname,
        vips=tuple(sorted(set(_strings(raw.get("vips"))))),
        ports=_port_map(raw.get("ports")),
        endpoints=_ztunnel_endpoints(raw.get("endpoints"), status_of or {}),
        waypoint=ztunnel_gateway(raw.get("waypoint")),
        subject_alt_names=tuple(sorted(_strings(raw.get("subjectAltNames")))),
        cidr_vips=tuple(sorted(set(cidrs))),
        ip_families=_str(raw, "ipFamilies") or None,
        load_balancer=load_balancer,
    )


def _canon(value: Any) -> Any:
    """A JSON value as a hashable canonical form: objects -> sorted (key, value) tuples, lists -> tuples."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _canon(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_canon(v) for v in value)
    return value


def _sorted(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(sorted(items, key=repr))


def canonical_rules(rules: Any) -> tuple[Any, ...]:
    """ztunnel's ``rules[rule][clause][match]`` as the canonical, hashable ``Policy.rules``: each match is a
    tuple of sorted ``(key, values)``; values, matches, clauses and rules are sorted (all are sets: OR/AND)."""
    if rules is None:
        return ()
    if not isinstance(rules, list):
        raise ValueError("rules is not a list")
    out = []
    for rule in rules:
        if not isinstance(rule, list):
            raise ValueError("a rule is not a list of clauses")
        clauses = []
        for clause in rule:
            if not isinstance(clause, list):
                raise ValueError("a clause is not a list of matches")
            matches = []
            for match in clause:
                if not isinstance(match, dict):
                    raise ValueError("a match is not an object")
                items = []
                for key, values in match.items():
                    if not isinstance(values, list):
                        values = [values]
                    if not values:
                        continue  # ztunnel omits empty keys
                    items.append((key, _sorted(_canon(v) for v in values)))
                matches.append(tuple(sorted(items)))
            clauses.append(_sorted(matches))
        out.append(_sorted(clauses))
    return _sorted(out)


def ztunnel_policy(raw: Any) -> Policy:
    raw = _dict(raw, "policy")
    name = _str(raw, "name")
    if not name:
        raise ValueError("policy without name")
    return Policy(
        namespace=_str(raw, "namespace"),
        name=name,
        scope=_str(raw, "scope") or "Global",
        action=_str(raw, "action") or "Allow",
        rules=canonical_rules(raw.get("rules")),
        dry_run=_bool(raw, "dryRun"),
    )


def _pem(value: Any) -> str:
    """``pem`` is base64 of the PEM text (>= 1.21), or the raw PEM text (older data, the istioctl fixture)."""
    if not isinstance(value, str) or not value:
        return ""
    if value.lstrip().startswith("-----BEGIN"):
        return value
    try:
        return base64.b64decode(value, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return value


def _cert_info(raw: Any) -> CertInfo:
    raw = _dict(raw, "certificate")
    serial_text = raw.get("serialNumber")
    serial = -1
    if isinstance(serial_text, int) and not isinstance(serial_text, bool):
        serial = serial_text
    elif isinstance(serial_text, str):
        try:
            serial = int(serial_text, 10)
        except ValueError:
            try:
                serial = int(serial_text.replace(":", ""), 16)
            except ValueError:
                serial = -1
    return CertInfo(serial=serial, valid_from=_str(raw, "validFrom"), expiration=_str(raw, "expirationTime"),
                    pem=_pem(raw.get("pem")))


def _self_signed(info: CertInfo) -> bool:
    if not info.pem:
        return False
    try:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(info.pem.encode())
        return cert.issuer == cert.subject
    except Exception:  # noqa: BLE001 - not a certificate we can read: not known to be self-signed
        return False


def ztunnel_certificate(raw: Any) -> Certificate:
    """One item of ``certificates``. >= 1.26: ``certChain`` (leaf + intermediates) and ``rootCerts``. 1.22-1.25:
    ``certChain`` holds the root last and there is no ``rootCerts``: the last element becomes ``roots`` when there
    is more than one certificate or when it is self-signed."""
    raw = _dict(raw, "certificate")
    identity = _str(raw, "identity")
    if not identity:
        raise ValueError("certificate without identity")
    chain_raw = raw.get("certChain")
    chain = tuple(_cert_info(c) for c in chain_raw) if isinstance(chain_raw, list) else ()
    if "rootCerts" in raw:
        roots_raw = raw.get("rootCerts")
        roots = tuple(_cert_info(c) for c in roots_raw) if isinstance(roots_raw, list) else ()
    elif chain and (len(chain) > 1 or _self_signed(chain[-1])):
        chain, roots = chain[:-1], chain[-1:]
    else:
        roots = ()
    return Certificate(identity=identity, state=_str(raw, "state"), chain=chain, roots=roots)


def _connections(raw: Any) -> tuple[Connection, ...]:
    if not isinstance(raw, dict):
        return ()
    out = []
    for direction in ("inbound", "outbound"):
        for conn in raw.get(direction) or ():
            if not isinstance(conn, dict):
                continue
            original = conn.get("originalDst")
            protocol = conn.get("protocol")
            out.append(Connection(direction, _str(conn, "src"), _str(conn, "actualDst"),
                                  original if isinstance(original, str) else None,
                                  protocol if isinstance(protocol, str) else None))
    return tuple(out)


def ztunnel_workload_state(pod_uid: str, raw: Any) -> WorkloadState:
    """One entry of ``workloadState`` (keyed by pod UID); ``connections`` is absent while Pending and has no
    ``protocol`` before 1.26."""
    raw = _dict(raw, "workload state")
    info = raw.get("info") if isinstance(raw.get("info"), dict) else {}
    return WorkloadState(
        pod_uid=pod_uid,
        name=_str(info, "name"),
        namespace=_str(info, "namespace"),
        service_account=_str(info, "serviceAccount"),
        state=_str(raw, "state"),
        connections=_connections(raw.get("connections")),
    )


def _entries(value: Any, kind: str) -> Iterator[tuple[str, Any]]:
    """(pointer, item) of a list or of a map's values (formats.md 2.10: the 1.22 maps)."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield json_pointer(kind, i), item
    elif isinstance(value, dict):
        for key, item in value.items():
            yield json_pointer(kind, key), item


def _version_text(doc: dict[str, Any]) -> str:
    version = doc.get("version")
    if isinstance(version, dict):
        return _str(version, "istioVersion") or _str(version, "version")
    return ""


def ztunnel_view(
    doc: Any,
    *,
    node: str = "",
    pod: str = "",
    namespace: str = "",
    path: str = "",
    intern: dict[Any, Any] | None = None,
) -> ZtunnelView:
    """Normalise a parsed ztunnel ``/config_dump``: lists (>= 1.23) or maps (1.22).

    Raises UnsupportedDump for the <=1.21 layout and NormalizeError for a document that is not an object; any
    entry that cannot be normalised is left out and listed in ``issues``.
    """
    legacy = legacy_layout(doc)
    if legacy is not None:
        raise UnsupportedDump(legacy)
    if not isinstance(doc, dict):
        raise NormalizeError(f"a ztunnel config dump is a JSON object, not {type(doc).__name__}")
    shape = "map" if any(isinstance(doc.get(k), dict) for k in ("workloads", "services", "policies")) else "list"
    view = ZtunnelView(node=node, pod=pod, namespace=namespace, path=path, shape=shape,
                       istio_version=_version_text(doc))
    issues, pointers = view.issues, view.pointers
    for key in ("workloads", "services", "policies", "certificates"):
        value = doc.get(key)
        if value is not None and not isinstance(value, (list, dict)):
            issues.append((json_pointer(key), f"{key} is neither a list nor an object"))

    raw_services_seen = False
    workloads: dict[str, Workload] = {}
    for pointer, raw, wl in _converted(_entries(doc.get("workloads"), "workloads"), ztunnel_workload, "workload",
                                       issues):
        if wl.uid in workloads:
            continue  # 1.22 map: one entry per address of the same workload
        raw_services_seen = raw_services_seen or (isinstance(raw, dict) and "services" in raw)
        workloads[wl.uid] = wl
        pointers[("workloads", wl.uid)] = pointer
    status_of = {uid: wl.status for uid, wl in workloads.items()}

    services: dict[str, Service] = {}
    for pointer, _, svc in _converted(_entries(doc.get("services"), "services"),
                                      lambda raw: ztunnel_service(raw, status_of), "service", issues):
        if svc.key in services:
            continue  # 1.22 map: one entry per VIP of the same service
        services[svc.key] = _intern(intern, svc)
        pointers[("services", svc.key)] = pointer

    if not raw_services_seen and services:
        # ztunnel <= 1.23 has no workload `services` list: derive it from the services' endpoints (ztunnel built
        # those from the same xDS field), so that it compares with istiod's services map.
        member_of: dict[str, set[str]] = {}
        for svc in services.values():
            for ep in svc.endpoints:
                member_of.setdefault(ep.workload_uid, set()).add(svc.key)
        for uid, keys in member_of.items():
            wl = workloads.get(uid)
            if wl is not None:
                workloads[uid] = dataclasses.replace(wl, services=tuple(sorted(keys)))
    view.workloads = {uid: _intern(intern, wl) for uid, wl in workloads.items()}
    view.services = services

    for pointer, _, pol in _converted(_entries(doc.get("policies"), "policies"), ztunnel_policy, "policy", issues):
        if pol.key in view.policies:
            continue
        view.policies[pol.key] = _intern(intern, pol)
        pointers[("policies", pol.key)] = pointer

    for pointer, _, cert in _converted(_entries(doc.get("certificates"), "certificates"), ztunnel_certificate,
                                       "certificate", issues):
        view.certificates.append(cert)
        pointers.setdefault(("certificates", cert.identity), pointer)

    state = doc.get("workloadState")
    if isinstance(state, dict):
        for uid, raw in state.items():
            pointer = json_pointer("workloadState", uid)
            try:
                view.workload_state[uid] = ztunnel_workload_state(uid, raw)
            except Exception as exc:  # noqa: BLE001 - a bad entry is left out, never fatal
                issues.append((pointer, f"workload state left out: {_reason(exc)}"))
                continue
            pointers[("workloadState", uid)] = pointer
    elif state is not None:
        issues.append(("/workloadState", "workloadState is not an object"))

    staged = doc.get("stagedServices")
    view.staged_services = staged if isinstance(staged, dict) else {}
    config = doc.get("config")
    view.config = config if isinstance(config, dict) else {}
    version = doc.get("version")
    view.version = version if isinstance(version, dict) else {}
    return view


# --- istiod proto-JSON -------------------------------------------------------------------------------------------

# Each table lists every value of its proto enum in proto order (index = number, for EnumsAsInts).
_STATUS = {"HEALTHY": "Healthy", "UNHEALTHY": "Unhealthy"}
_PROTOCOL = {"NONE": "TCP", "HBONE": "HBONE", "LEGACY_ISTIO_MTLS": "LEGACY_ISTIO_MTLS"}
_WORKLOAD_TYPE = {"DEPLOYMENT": "deployment", "CRONJOB": "cronjob", "POD": "pod", "JOB": "job"}
_APP_TUNNEL = {"NONE": "NONE", "PROXY": "PROXY"}
_NETWORK_MODE = {"STANDARD": "Standard", "HOST_NETWORK": "HostNetwork"}
_SCOPE = {"GLOBAL": "Global", "NAMESPACE": "Namespace", "WORKLOAD_SELECTOR": "WorkloadSelector"}
_ACTION = {"ALLOW": "Allow", "DENY": "Deny"}
_IP_FAMILIES = {"AUTOMATIC": "", "IPV4_ONLY": "IPv4", "IPV6_ONLY": "IPv6", "DUAL": "Dual"}
_LB_MODE = {"UNSPECIFIED_MODE": "Standard", "STRICT": "Strict", "FAILOVER": "Failover", "PASSTHROUGH": "Passthrough"}
_LB_HEALTH = {"ONLY_HEALTHY": "OnlyHealthy", "ALLOW_ALL": "AllowAll"}
_LB_SCOPE = {"UNSPECIFIED_SCOPE": "UNSPECIFIED_SCOPE", "REGION": "Region", "ZONE": "Zone", "SUBZONE": "Subzone",
             "NODE": "Node", "CLUSTER": "Cluster", "NETWORK": "Network"}
_STRING_MATCH_KEYS = ("namespaces", "notNamespaces", "principals", "notPrincipals")
_ADDRESS_MATCH_KEYS = ("sourceIps", "notSourceIps", "destinationIps", "notDestinationIps")


def _enum(raw: dict[str, Any], key: str, table: dict[str, str], default: str) -> str:
    """A jsonpb enum: absent (the zero value) -> ``default``; a name in ``table`` -> ztunnel's rendering; another
    name is kept as-is (so that an unknown value shows up as a difference, not as a default)."""
    return _enum_value(raw.get(key), table, default)


def _enum_value(value: Any, table: dict[str, str], default: str) -> str:
    if value is None or value == "":
        return default
    if isinstance(value, int) and not isinstance(value, bool):  # jsonpb with EnumsAsInts: position in the table
        names = list(table)
        return table[names[value]] if 0 <= value < len(names) else str(value)
    return table.get(str(value), str(value))


def istiod_workload(raw: Any, prefer_text: bool = False) -> tuple[Workload, dict[str, tuple[tuple[int, int], ...]]]:
    """An istiod ``Workload`` (proto-JSON) with ztunnel's rendering and defaults, plus its services map
    ``{"ns/host": ((servicePort, targetPort), ...)}`` (the ports become the services' endpoints)."""
    raw = _dict(raw, "workload")
    uid = _str(raw, "uid")
    name, namespace = _str(raw, "name"), _str(raw, "namespace")
    if not uid and not name:
        raise ValueError("workload without uid or name")
    ips = []
    for address in raw.get("addresses") or ():
        ips.append(decode_ip(address, prefer_text))
    services: dict[str, tuple[tuple[int, int], ...]] = {}
    raw_services = raw.get("services")
    if isinstance(raw_services, dict):
        for key, value in raw_services.items():
            services[key] = _proto_ports(value.get("ports")) if isinstance(value, dict) else ()
    app = raw.get("applicationTunnel")
    application_tunnel = None
    if isinstance(app, dict):
        port = _int(app.get("port"))
        application_tunnel = (_enum(app, "protocol", _APP_TUNNEL, "NONE"), port or None)
    capacity = raw.get("capacity")
    if isinstance(capacity, dict):  # UInt32Value written as an object by some encoders
        capacity = capacity.get("value")
    workload = Workload(
        uid=uid or f"{namespace}/{name}",
        name=name,
        namespace=namespace,
        ips=tuple(ips),
        protocol=_enum(raw, "tunnelProtocol", _PROTOCOL, "TCP"),
        node=_str(raw, "node"),
        service_account=_str(raw, "serviceAccount") or DEFAULT_SERVICE_ACCOUNT,
        trust_domain=_str(raw, "trustDomain") or DEFAULT_TRUST_DOMAIN,
        waypoint=proto_gateway(raw.get("waypoint"), prefer_text),
        network_gateway=proto_gateway(raw.get("networkGateway"), prefer_text),
        status=_enum(raw, "status", _STATUS, "Healthy"),
        services=tuple(sorted(services)),
        authorization_policies=tuple(sorted(set(_strings(raw.get("authorizationPolicies"))))),
        network=_str(raw, "network"),
        cluster_id=_str(raw, "clusterId") or DEFAULT_CLUSTER_ID,
        workload_type=_enum(raw, "workloadType", _WORKLOAD_TYPE, "deployment").lower(),
        workload_name=_str(raw, "workloadName"),
        canonical_name=_str(raw, "canonicalName"),
        canonical_revision=_str(raw, "canonicalRevision"),
        native_tunnel=_bool(raw, "nativeTunnel"),
        network_mode=_enum(raw, "networkMode", _NETWORK_MODE, "Standard"),
        hostname=_str(raw, "hostname"),
        locality=_locality(raw.get("locality")),
        capacity=_int(capacity, 1) if capacity is not None else 1,
        application_tunnel=application_tunnel,
    )
    return workload, services


def istiod_service(raw: Any, endpoints: Iterable[Endpoint] = (), prefer_text: bool = False) -> Service:
    """An istiod ``Service`` (proto-JSON). ``endpoints`` come from istiod's workloads (see :func:`istiod_view`)."""
    raw = _dict(raw, "service")
    hostname = _str(raw, "hostname")
    if not hostname:
        raise ValueError("service without hostname")
    vips, cidrs = [], []
    for address in raw.get("addresses") or ():
        network, ip, length = _network_address(address, prefer_text)
        full = 32 if ipaddress.ip_address(ip).version == 4 else 128
        if length is None or length == full:
            vips.append(f"{network}/{ip}")
        else:
            cidrs.append(f"{network}/{ip}/{length}")
    lb = raw.get("loadBalancing")
    load_balancer = None
    if isinstance(lb, dict):
        prefs = lb.get("routingPreference")
        load_balancer = (
            _enum(lb, "mode", _LB_MODE, "Standard"),
            _enum(lb, "healthPolicy", _LB_HEALTH, "OnlyHealthy"),
            tuple(_enum_value(p, _LB_SCOPE, "") for p in (prefs if isinstance(prefs, list) else ())),
        )
    return Service(
        namespace=_str(raw, "namespace"),
        name=_str(raw, "name"),
        hostname=hostname,
        vips=tuple(sorted(set(vips))),
        ports=_proto_ports(raw.get("ports")),
        endpoints=tuple(sorted(endpoints, key=lambda e: e.workload_uid)),
        waypoint=proto_gateway(raw.get("waypoint"), prefer_text),
        subject_alt_names=tuple(sorted(_strings(raw.get("subjectAltNames")))),
        cidr_vips=tuple(sorted(set(cidrs))),
        ip_families=_enum(raw, "ipFamilies", _IP_FAMILIES, "") or None,
        load_balancer=load_balancer,
    )


def _proto_string_match(value: Any) -> dict[str, Any] | None:
    """``{exact|prefix|suffix: v}`` -> ``{"Exact": v}``; ``{presence: {}}`` -> ``{"Presence": []}``; none -> None
    (ztunnel drops a StringMatch without a match type)."""
    if not isinstance(value, dict):
        return None
    for key in ("exact", "prefix", "suffix"):
        if key in value and isinstance(value[key], str):
            return {key.capitalize(): value[key]}
    if "presence" in value:
        return {"Presence": []}
    return None


def _proto_match(raw: Any) -> dict[str, Any]:
    """An istiod ``Match`` -> ztunnel's RbacMatch (empty keys left out, invalid IPs dropped as ztunnel does)."""
    raw = _dict(raw, "match")
    out: dict[str, Any] = {}
    for key, values in raw.items():
        if not isinstance(values, list) or not values:
            continue
        if key in _STRING_MATCH_KEYS:
            converted = [m for m in (_proto_string_match(v) for v in values) if m is not None]
        elif key in _ADDRESS_MATCH_KEYS:
            converted = []
            for v in values:
                if not isinstance(v, dict):
                    continue
                try:
                    ip = decode_ip(v.get("address"))
                except ValueError:
                    continue
                converted.append(f"{ip}/{_int(v.get('length'))}")
        elif key in ("destinationPorts", "notDestinationPorts"):
            converted = [_int(v) for v in values]
        elif key in ("serviceAccounts", "notServiceAccounts"):
            converted = [{"namespace": _str(v, "namespace"), "serviceAccount": _str(v, "serviceAccount")}
                         for v in values if isinstance(v, dict)]
        else:
            converted = list(values)
        if converted:
            out[key] = converted
    return out


def istiod_policy(raw: Any) -> Policy:
    """An istiod ``Authorization`` (proto-JSON): ``groups[].rules[].matches[]`` -> ztunnel's rule nesting."""
    raw = _dict(raw, "policy")
    name = _str(raw, "name")
    if not name:
        raise ValueError("policy without name")
    rules = []
    for group in raw.get("groups") or ():
        if not isinstance(group, dict):
            raise ValueError("a group is not an object")
        clauses = []
        for rule in group.get("rules") or ():
            if not isinstance(rule, dict):
                raise ValueError("a rule is not an object")
            clauses.append([_proto_match(m) for m in rule.get("matches") or ()])
        rules.append(clauses)
    return Policy(
        namespace=_str(raw, "namespace"),
        name=name,
        scope=_enum(raw, "scope", _SCOPE, "Global"),
        action=_enum(raw, "action", _ACTION, "Allow"),
        rules=canonical_rules(rules),
        dry_run=_bool(raw, "dryRun"),
    )


def istiod_view(
    workloads: Iterable[tuple[str, Any]],
    services: Iterable[tuple[str, Any]],
    policies: Iterable[tuple[str, Any]],
    *,
    ztunnel_pod: str = "",
    source: str,
    path: str = "",
    replica: str | None = None,
    policies_path: str | None = None,
    prefer_text: bool = False,
    intern: dict[Any, Any] | None = None,
) -> IstiodView:
    """Build an IstiodView from ``(pointer, proto-JSON object)`` pairs. Service endpoints are derived from the
    workloads' services maps (ports from the map, status from the workload), as ztunnel does."""
    view = IstiodView(ztunnel_pod=ztunnel_pod, source=source, path=path, replica=replica,
                      policies_path=policies_path)
    issues, pointers = view.issues, view.pointers
    endpoints: dict[str, list[Endpoint]] = {}
    for pointer, _, (wl, service_ports) in _converted(workloads, lambda raw: istiod_workload(raw, prefer_text),
                                                      "workload", issues):
        if wl.uid in view.workloads:
            continue
        view.workloads[wl.uid] = _intern(intern, wl)
        pointers[("workloads", wl.uid)] = pointer
        for key, ports in service_ports.items():
            endpoints.setdefault(key, []).append(Endpoint(wl.uid, ports, wl.status))
    def service(raw: Any) -> Service:
        key = f"{_str(raw, 'namespace')}/{_str(raw, 'hostname')}" if isinstance(raw, dict) else ""
        return istiod_service(raw, endpoints.get(key, ()), prefer_text)

    for pointer, _, svc in _converted(services, service, "service", issues):
        if svc.key in view.services:
            continue
        view.services[svc.key] = _intern(intern, svc)
        pointers[("services", svc.key)] = pointer
    for key, eps in endpoints.items():
        if key not in view.services:
            view.staged_services[key] = tuple(sorted(eps, key=lambda e: e.workload_uid))
    for pointer, _, pol in _converted(policies, istiod_policy, "policy", issues):
        if pol.key in view.policies:
            continue
        view.policies[pol.key] = _intern(intern, pol)
        pointers[("policies", pol.key)] = pointer
    return view


def _converted(entries: Iterable[tuple[str, Any]], convert: Callable[[Any], Any], what: str,
               issues: list[tuple[str, str]]) -> Iterator[tuple[str, Any, Any]]:
    """(pointer, raw, converted) for each entry that converts; a bad entry is left out with an issue, never fatal."""
    for pointer, raw in entries:
        try:
            converted = convert(raw)
        except Exception as exc:  # noqa: BLE001 - a bad entry is left out, never fatal
            issues.append((pointer, f"{what} left out: {_reason(exc)}"))
            continue
        yield pointer, raw, converted


def _configs(doc: Any, what: str) -> list[Any]:
    if not isinstance(doc, dict):
        raise NormalizeError(f"{what} is a JSON object, not {type(doc).__name__}")
    configs = doc.get("configs")
    if configs is None:
        return []
    if not isinstance(configs, list):
        raise NormalizeError(f"{what}: configs is not a list")
    return configs


def config_dump_addresses(doc: Any) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """The (pointer, workload) and (pointer, service) entries of istiod's per-proxy dump
    ``{"configs":[{"@type": ...Address, "workload"|"service": {...}}]}`` (also bare ...Workload entries)."""
    workloads, services = [], []
    for i, entry in enumerate(_configs(doc, "istiod's config dump")):
        if not isinstance(entry, dict):
            continue
        kind = entry.get("@type")
        if kind == ADDRESS_TYPE or (kind is None and ("workload" in entry or "service" in entry)):
            if isinstance(entry.get("workload"), dict):
                workloads.append((json_pointer("configs", i, "workload"), entry["workload"]))
            elif isinstance(entry.get("service"), dict):
                services.append((json_pointer("configs", i, "service"), entry["service"]))
        elif kind == WORKLOAD_TYPE:
            workloads.append((json_pointer("configs", i), {k: v for k, v in entry.items() if k != "@type"}))
    return workloads, services


def wads_policies(doc: Any) -> list[tuple[str, Any]]:
    """The (pointer, Authorization) entries of a WADS dump ``{"configs":[{"@type": ...Authorization, ...}]}``."""
    out = []
    for i, entry in enumerate(_configs(doc, "istiod's WADS dump")):
        if isinstance(entry, dict) and entry.get("@type", AUTHORIZATION_TYPE) == AUTHORIZATION_TYPE:
            out.append((json_pointer("configs", i), {k: v for k, v in entry.items() if k != "@type"}))
    return out


def _ambientz_entries(doc: dict[str, Any], key: str) -> list[tuple[str, Any]]:
    value = doc.get(key)
    if not isinstance(value, list):  # null when empty (Go nil slice)
        return []
    return [(json_pointer(key, i), item) for i, item in enumerate(value)]


def ambientz_policies(doc: Any) -> list[tuple[str, Any]]:
    if not isinstance(doc, dict):
        raise NormalizeError(f"ambientz is a JSON object, not {type(doc).__name__}")
    return _ambientz_entries(doc, "policies")


def istiod_view_from_config_dump(
    doc: Any,
    wads: Any = None,
    *,
    ztunnel_pod: str = "",
    path: str = "",
    wads_path: str | None = None,
    replica: str | None = None,
    intern: dict[Any, Any] | None = None,
) -> IstiodView:
    """istiod's per-proxy view: the Address dump plus (if given) the WADS dump's policies."""
    workloads, services = config_dump_addresses(doc)
    policies = wads_policies(wads) if wads is not None else []
    return istiod_view(workloads, services, policies, ztunnel_pod=ztunnel_pod, source="per-proxy", path=path,
                       replica=replica, policies_path=wads_path if wads is not None else None, intern=intern)


def istiod_view_from_ambientz(
    doc: Any,
    *,
    ztunnel_pod: str = "",
    path: str = "",
    replica: str | None = None,
    intern: dict[Any, Any] | None = None,
) -> IstiodView:
    """istiod's global view ``/debug/ambientz`` (lists may be null; IPs are base64 of their ASCII text)."""
    if not isinstance(doc, dict):
        raise NormalizeError(f"ambientz is a JSON object, not {type(doc).__name__}")
    return istiod_view(_ambientz_entries(doc, "workloads"), _ambientz_entries(doc, "services"),
                       _ambientz_entries(doc, "policies"), ztunnel_pod=ztunnel_pod, source="ambientz", path=path,
                       replica=replica, policies_path=path, prefer_text=True, intern=intern)
