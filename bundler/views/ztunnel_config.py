"""``istioctl ztunnel-config`` tables, rendered from a RAW ztunnel ``/config_dump`` document (pure functions).

The layout follows docs formats.md section 4: Go ``text/tabwriter`` (minwidth 0, tabwidth 8, padding 1, blank padding;
padding 5 for certificates), columns, sorting and the WAYPOINT / ENDPOINTS / certificate rules.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from bundler.views import printable

__all__ = [
    "WorkloadFilter", "ConnectionsFilter", "tabwrite", "list_or_map", "workloads", "services", "policies",
    "certificates", "connections", "workload_table", "service_table", "policy_table", "certificate_table",
    "connections_table", "all_tables",
]


# --- Go text/tabwriter ----------------------------------------------------------------------------------------------

def tabwrite(text: str, padding: int = 1, minwidth: int = 0) -> str:
    """Go ``tabwriter.NewWriter(w, minwidth, 8, padding, ' ', 0)`` followed by Flush, for text whose cells end with
    tabs. A line's last cell (the text after its last tab) is not part of a column and is never padded; columns are
    formed by blocks of consecutive lines that have a cell in that column (Go's recursive ``format``)."""
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []
    widths: list[int] = []

    def write_lines(line0: int, line1: int) -> None:
        for i in range(line0, line1):
            cells = lines[i]
            parts = []
            for j, cell in enumerate(cells):
                if j < len(widths):
                    parts.append(cell + " " * (widths[j] - len(cell)))
                else:
                    parts.append(cell)
            out.append("".join(parts))

    def fmt(line0: int, line1: int) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write_lines(line0, this)
            line0 = this
            width = minwidth
            while this < line1:
                cells = lines[this]
                if column >= len(cells) - 1:
                    break
                width = max(width, len(cells[column]) + padding)
                this += 1
            widths.append(width)
            fmt(line0, this)
            widths.pop()
            line0 = this
        write_lines(line0, line1)

    fmt(0, len(lines))
    return "\n".join(out)


def _cell(text: str) -> str:
    """A cell that cannot break the table or the terminal: a tab or line break from the dump would start a new cell
    or row (thousands of tabs would nest the tabwriter's recursion that deep), and an escape sequence from a
    stranger's dump must not reach the terminal, so control characters are shown escaped (\\t, \\n, \\x1b)."""
    return printable(text)


def _table(rows: list[list[str]], padding: int = 1) -> str:
    return tabwrite("".join("\t".join(map(_cell, row)) + "\n" for row in rows), padding=padding)


# --- reading the raw dump ---------------------------------------------------------------------------------------

def list_or_map(value: Any) -> list[dict[str, Any]]:
    """``workloads``/``services``/``policies``: a list (>= 1.23) or a map whose values are the items (1.22)."""
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def _s(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        return str(value)
    except RecursionError:  # a hostile value nested ~1000 levels deep
        return "[...]"


def _items(value: Any) -> list[Any]:
    """``value`` when it is a JSON array, else nothing (a hostile dump may hold any type anywhere)."""
    return value if isinstance(value, list) else []


def _ip_part(address: str) -> str:
    """``network/ip`` -> ``ip`` (the part after the first ``/``)."""
    return address.split("/", 1)[1] if "/" in address else address


@dataclass
class WorkloadFilter:
    namespace: str = ""
    node: str = ""
    address: str = ""
    name: str = ""  # one workload (istioctl's non-ztunnel pod argument): name, optionally with namespace
    name_namespace: str = ""

    def matches(self, wl: dict[str, Any]) -> bool:
        if self.namespace and _s(wl.get("namespace")) != self.namespace:
            return False
        if self.node and _s(wl.get("node")) != self.node:
            return False
        if self.address and self.address not in [_s(ip) for ip in _items(wl.get("workloadIps"))]:
            return False
        if self.name and _s(wl.get("name")) != self.name:
            return False
        if self.name_namespace and _s(wl.get("namespace")) != self.name_namespace:
            return False
        return True


@dataclass
class ConnectionsFilter:
    namespace: str = ""
    direction: str = ""  # "", "inbound" or "outbound"
    raw: bool = False
    name: str = ""
    name_namespace: str = ""


def workloads(doc: dict[str, Any], flt: WorkloadFilter | None = None) -> list[dict[str, Any]]:
    """The dump's workloads, filtered, sorted by ``ns.name`` then node (as istioctl)."""
    flt = flt or WorkloadFilter()
    items = [wl for wl in list_or_map(doc.get("workloads")) if flt.matches(wl)]
    return sorted(items, key=lambda wl: (f"{_s(wl.get('namespace'))}.{_s(wl.get('name'))}", _s(wl.get("node"))))


def services(doc: dict[str, Any], namespace: str = "") -> list[dict[str, Any]]:
    items = [svc for svc in list_or_map(doc.get("services"))
             if not namespace or _s(svc.get("namespace")) == namespace]
    return sorted(items, key=lambda s: (_s(s.get("namespace")), _s(s.get("name")), _s(s.get("hostname"))))


def policies(doc: dict[str, Any], namespace: str = "") -> list[dict[str, Any]]:
    items = [pol for pol in list_or_map(doc.get("policies"))
             if not namespace or _s(pol.get("namespace")) == namespace]
    return sorted(items, key=lambda p: (_s(p.get("namespace")), _s(p.get("name"))))


def certificates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    certs = doc.get("certificates")
    return [c for c in certs if isinstance(c, dict)] if isinstance(certs, list) else []


def _workload_states(doc: dict[str, Any]) -> list[dict[str, Any]]:
    # the istioctl JSON tag is "workloadstate"; Go matches keys case-insensitively
    for key, value in doc.items():
        if key.lower() == "workloadstate" and isinstance(value, dict):
            return [v for v in value.values() if isinstance(v, dict)]
    return []


def _info(state: dict[str, Any]) -> dict[str, Any]:
    info = state.get("info")
    return info if isinstance(info, dict) else {}


def connections(doc: dict[str, Any], flt: ConnectionsFilter | None = None) -> list[dict[str, Any]]:
    """``workloadState`` values sorted by namespace/name, filtered by namespace and workload (``-o json``)."""
    flt = flt or ConnectionsFilter()
    out = []
    for state in _workload_states(doc):
        info = _info(state)
        if flt.namespace and _s(info.get("namespace")) != flt.namespace:
            continue
        if flt.name and _s(info.get("name")) != flt.name:
            continue
        if flt.name_namespace and _s(info.get("namespace")) != flt.name_namespace:
            continue
        out.append(state)
    return sorted(out, key=lambda st: (_s(_info(st).get("namespace")), _s(_info(st).get("name"))))


# --- tables ------------------------------------------------------------------------------------------------------

def _waypoint_name(waypoint: Any, all_services: list[dict[str, Any]]) -> str:
    """``None`` without a waypoint; the name of the Service whose ``ns/hostname`` or a VIP equals the destination;
    ``NA`` if no such Service is known."""
    if not isinstance(waypoint, dict):
        return "None"
    destination = _s(waypoint.get("destination"))
    for svc in all_services:
        if f"{_s(svc.get('namespace'))}/{_s(svc.get('hostname'))}" == destination:
            return _s(svc.get("name"))
        if destination in [_s(v) for v in _items(svc.get("vips"))]:
            return _s(svc.get("name"))
    return "NA"


def workload_table(doc: dict[str, Any], flt: WorkloadFilter | None = None) -> str:
    all_services = list_or_map(doc.get("services"))
    rows = [["NAMESPACE", "POD NAME", "ADDRESS", "NODE", "WAYPOINT", "PROTOCOL"]]
    for wl in workloads(doc, flt):
        ips = [_s(ip) for ip in _items(wl.get("workloadIps"))]
        address = ",".join(ips) if ips else _s(wl.get("hostname"))
        rows.append([_s(wl.get("namespace")), _s(wl.get("name")), address, _s(wl.get("node")),
                     _waypoint_name(wl.get("waypoint"), all_services), _s(wl.get("protocol"))])
    return _table(rows)


def _endpoints(svc: dict[str, Any], status_by_uid: dict[str, str]) -> str:
    endpoints = svc.get("endpoints")
    values = list(endpoints.values()) if isinstance(endpoints, dict) else []
    healthy = 0
    for ep in values:
        if not isinstance(ep, dict):
            continue
        uid = _s(ep.get("workloadUid"))
        status = status_by_uid.get(uid, _s(ep.get("status")))
        if status == "Healthy":
            healthy += 1
    return f"{healthy}/{len(values)}"


def service_table(doc: dict[str, Any], namespace: str = "") -> str:
    all_services = list_or_map(doc.get("services"))
    status_by_uid = {_s(wl.get("uid")): _s(wl.get("status")) for wl in list_or_map(doc.get("workloads"))}
    rows = [["NAMESPACE", "SERVICE NAME", "SERVICE VIP", "WAYPOINT", "ENDPOINTS"]]
    for svc in services(doc, namespace):
        vips = ",".join(_ip_part(_s(v)) for v in _items(svc.get("vips")))
        rows.append([_s(svc.get("namespace")), _s(svc.get("name")), vips,
                     _waypoint_name(svc.get("waypoint"), all_services), _endpoints(svc, status_by_uid)])
    return _table(rows)


def policy_table(doc: dict[str, Any], namespace: str = "") -> str:
    rows = [["NAMESPACE", "POLICY NAME", "ACTION", "SCOPE"]]
    for pol in policies(doc, namespace):
        rows.append([_s(pol.get("namespace")), _s(pol.get("name")), _s(pol.get("action")), _s(pol.get("scope"))])
    return _table(rows)


def _parse_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _serial_hex(value: Any) -> str:
    try:
        return "%x" % int(_s(value))
    except ValueError:
        return _s(value)


def certificate_table(doc: dict[str, Any], now: datetime | None = None) -> str:
    """One row per certificate of each identity's chain: Leaf (first), Intermediate, Root (``rootCerts``, or the last
    of ``certChain`` in the pre-1.26 layout without ``rootCerts``); one ``NA`` row for an identity without a chain."""
    now = now or datetime.now(timezone.utc)
    rows = [["CERTIFICATE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE"]]
    for cert in certificates(doc):
        identity = _s(cert.get("identity"))
        state = _s(cert.get("state"))
        if state.startswith("Unavailable"):
            state = "Unavailable"
        chain = [c for c in _items(cert.get("certChain") or cert.get("cert_chain")) if isinstance(c, dict)]
        roots = [c for c in _items(cert.get("rootCerts")) if isinstance(c, dict)]
        typed: list[tuple[str, dict[str, Any]]] = []
        if "rootCerts" in cert:
            typed = [("Leaf" if i == 0 else "Intermediate", c) for i, c in enumerate(chain)]
            typed += [("Root", c) for c in roots]
        else:
            for i, c in enumerate(chain):
                kind = "Leaf" if i == 0 else ("Root" if i == len(chain) - 1 else "Intermediate")
                typed.append((kind, c))
        if not typed:
            rows.append([identity, "NA", state, "false", "NA", "NA", "NA"])
            continue
        for kind, c in typed:
            not_after, not_before = _s(c.get("expirationTime")), _s(c.get("validFrom"))
            start, end = _parse_time(not_before), _parse_time(not_after)
            valid = start is not None and end is not None and start <= now <= end
            rows.append([identity, kind, state, "true" if valid else "false", _serial_hex(c.get("serialNumber")),
                         not_after, not_before])
    return _table(rows, padding=5)


def _address_lookup(doc: dict[str, Any]) -> Callable[[str], str]:
    by_vip: dict[str, str] = {}
    for svc in list_or_map(doc.get("services")):
        for vip in _items(svc.get("vips")):
            by_vip.setdefault(_ip_part(_s(vip)), _s(svc.get("hostname")))
    by_ip: dict[str, str] = {}
    for wl in list_or_map(doc.get("workloads")):
        for ip in _items(wl.get("workloadIps")):
            by_ip.setdefault(_s(ip), f"{_s(wl.get('name'))}.{_s(wl.get('namespace'))}")

    def lookup(address: str) -> str:
        host, sep, port = address.rpartition(":")
        if not sep:
            return address
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return address
        if host in by_vip:
            return f"{by_vip[host]}:{port}"
        if host in by_ip:
            return f"{by_ip[host]}:{port}"
        return address

    return lookup


def connections_table(doc: dict[str, Any], flt: ConnectionsFilter | None = None) -> str:
    """``WORKLOAD DIRECTION LOCAL REMOTE REMOTE TARGET PROTOCOL``: inbound (local = actualDst, remote = src) then
    outbound (local = src, remote = actualDst) per workload; addresses of known workloads/services are replaced by
    ``pod.ns:port`` / ``hostname:port`` unless ``raw``."""
    flt = flt or ConnectionsFilter()
    lookup = (lambda a: a) if flt.raw else _address_lookup(doc)
    rows = [["WORKLOAD", "DIRECTION", "LOCAL", "REMOTE", "REMOTE TARGET", "PROTOCOL"]]
    for state in connections(doc, flt):
        info = _info(state)
        name = f"{_s(info.get('name'))}.{_s(info.get('namespace'))}"
        conns = state.get("connections") if isinstance(state.get("connections"), dict) else {}
        for direction in ("inbound", "outbound"):
            if flt.direction and flt.direction != direction:
                continue
            for c in _items(conns.get(direction)):
                if not isinstance(c, dict):
                    continue
                src, dst = lookup(_s(c.get("src"))), lookup(_s(c.get("actualDst")))
                local, remote = (dst, src) if direction == "inbound" else (src, dst)
                rows.append([name, direction.capitalize(), local, remote, lookup(_s(c.get("originalDst"))),
                             _s(c.get("protocol"))])
    return _table(rows)


def all_tables(doc: dict[str, Any], with_headers: bool = False) -> str:
    """``zc all``: each summary preceded by a blank line (and ``------ X INFO ------`` + blank line with headers)."""
    sections = [("WORKLOAD", workload_table(doc)), ("SERVICE", service_table(doc)), ("POLICY", policy_table(doc)),
                ("SECRET", certificate_table(doc)), ("CONNECTIONS", connections_table(doc))]
    out = []
    for title, table in sections:
        out.append("\n")
        if with_headers:
            out.append(f"------ {title} INFO ------\n\n")
        out.append(table)
    return "".join(out)
