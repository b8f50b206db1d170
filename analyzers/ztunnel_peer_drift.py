"""ztunnel-peer-drift (R18 point 4): ztunnels whose view differs from the majority of their peers.

istiod sends every ztunnel the same workloads, services and policies (failure-modes.md 0.1), so a ztunnel that
disagrees with most of the others is out of sync, whatever istiod says (this also works when istiod's views were
not collected). ztunnels are streamed: the first dump is the baseline, and every other one is kept only as its
difference from the baseline (entries compared with ``comparable()``); ztunnels with the same difference share
one group. Memory is one dump plus the differences, not nodes x workloads.

After the stream, each differing entry takes the value most ztunnels hold (a strict majority; with no majority,
e.g. one ztunnel against one, nothing is reported), and every ztunnel holding another value is reported:
``missing-*`` (the majority has the entry, this ztunnel does not), ``extra-*`` (only a minority holds it) and
``field-drift`` / ``service-drift`` / ``policy-drift`` (different fields, listed). A service that differs only in
the endpoints of workloads already reported for the same ztunnel is left out (one cause, one finding).

View: ``drift`` rows with ``reference: "majority"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from analyzers.ztunnel_istiod_drift import (
    COSMETIC_FIELDS,
    MAX_VIEW_ROWS,
    differing_fields,
    entry_resource,
    fields_view,
    map_shape_ips,
    present_fields,
    short,
)
from bundler import layout
from bundler.analysis import Analyzer, Context, Evidence, Finding, Metadata, Resource

DOCS = "https://istio.io/latest/docs/ambient/usage/troubleshoot-ztunnel/"
REFERENCES = (
    "https://istio.io/latest/docs/ambient/usage/troubleshoot-ztunnel/",
    "https://github.com/istio/istio/issues/61249",
    "https://github.com/istio/ztunnel/issues/1637",
    "https://github.com/istio/istio/issues/58514",
)
REMEDIATION = (
    "Compare this ztunnel's xDS stream with its peers' (xds analyzer: NACKs, connection errors, syncz). Restarting "
    "it makes it re-sync from istiod; if several ztunnels disagree, check istiod's push health."
)
MAX_PER_CODE = 100
_KINDS = ("workloads", "services", "policies")
_SINGULAR = {"workloads": "workload", "services": "service", "policies": "policy"}
_DRIFT_CODE = {"workloads": "field-drift", "services": "service-drift", "policies": "policy-drift"}
_TITLES = {
    "missing-workload": "ztunnel lacks a workload its peers hold",
    "extra-workload": "ztunnel holds a workload its peers do not",
    "field-drift": "ztunnel's copy of a workload differs from its peers'",
    "missing-service": "ztunnel lacks a service its peers hold",
    "extra-service": "ztunnel holds a service its peers do not",
    "service-drift": "ztunnel's copy of a service differs from its peers'",
    "missing-policy": "ztunnel lacks an authorization policy its peers hold",
    "extra-policy": "ztunnel holds an authorization policy its peers do not",
    "policy-drift": "ztunnel's copy of an authorization policy differs from its peers'",
}

Key = tuple[str, str]  # (kind, key)


@dataclass(frozen=True)
class _Member:
    pod: str
    node: str
    namespace: str
    path: str


@dataclass
class _Group:
    """ztunnels with the same difference from the baseline."""

    diff: dict[Key, Any]  # entry object, or None when absent
    pointers: dict[Key, str]  # where the group's first member holds each differing entry
    members: list[_Member] = field(default_factory=list)
    # 1.22 (map-shaped) dumps key workloads by IP: a workload sharing an IP with another cannot appear there
    shadowed: set[str] = field(default_factory=set)

    def hides(self, obj: Any) -> bool:
        return bool(self.shadowed) and obj is not None and bool(self.shadowed.intersection(obj.ips))


def _digest(obj: Any) -> Any:
    if obj is None:
        return None
    items = tuple(sorted(obj.comparable().items()))
    try:
        hash(items)
    except TypeError:
        return repr(items)
    return items


class ZtunnelPeerDrift(Analyzer):
    metadata = Metadata(
        id="ztunnel-peer-drift",
        title="ztunnel's configuration differs from its peers'",
        severity="error",
        description=("Compares the ztunnels with each other: a ztunnel whose workloads, services or policies "
                     "differ from what the majority of ztunnels hold is reported with the differing entries."),
        docs=DOCS,
        inputs=(layout.KIND_ZTUNNEL_CONFIG_DUMP,),
    )

    def analyze(self, ctx: Context) -> Iterator[Finding]:
        baseline: Any = None
        base: dict[Key, Any] = {}
        groups: dict[Any, _Group] = {}
        total = 0
        seen: dict[tuple[int, ...], Any] = {}  # ztunnels that agree share their dicts: compared once
        for zt in ctx.model.ztunnels():
            total += 1
            member = _Member(zt.pod, zt.node, zt.namespace, zt.path)
            if baseline is None:
                baseline = zt
                base = {(kind, key): obj for kind in _KINDS for key, obj in getattr(zt, kind).items()}
                groups[()] = _Group({}, {}, [member], map_shape_ips(zt))
                seen[tuple(id(getattr(zt, kind)) for kind in _KINDS)] = ((), baseline)
                continue
            shared = tuple(id(getattr(zt, kind)) for kind in _KINDS)
            known = seen.get(shared) if zt.shape != "map" else None
            if known is not None:
                groups[known[0]].members.append(member)
                continue
            items = {(kind, key): obj for kind in _KINDS for key, obj in getattr(zt, kind).items()}
            diff: dict[Key, Any] = {}
            for k, obj in items.items():
                b = base.get(k)
                if b is None or (b is not obj and b.comparable() != obj.comparable()):
                    diff[k] = obj
            for k in base.keys() - items.keys():
                diff[k] = None
            signature = tuple(sorted((k, _digest(v)) for k, v in diff.items()))
            group = groups.get(signature)
            if group is None:
                group = groups[signature] = _Group(
                    diff, {k: zt.pointer(k[0], k[1]) for k, v in diff.items() if v is not None},
                    shadowed=map_shape_ips(zt))
            group.members.append(member)
            seen[shared] = (signature, zt)  # keeps the dicts alive, so their ids stay theirs
            del items, zt
        if total < 3 or len(groups) < 2:
            return  # nothing to compare, or everyone agrees; two ztunnels have no majority
        yield from self._report(ctx, baseline, base, list(groups.values()), total)

    def _report(self, ctx: Context, baseline: Any, base: dict[Key, Any], groups: list[_Group],
                total: int) -> Iterator[Finding]:
        keys = sorted({k for g in groups for k in g.diff})
        rows: list[dict[str, Any]] = []
        counts: dict[tuple[str, str], int] = {}
        # per group: the keys where it departs from the majority, with (its value, majority value, majority pointer)
        departures: list[tuple[_Group, Key, Any, Any, tuple[str, str] | None]] = []
        for k in keys:
            votes: dict[Any, list[_Group]] = {}
            for g in groups:
                value = g.diff[k] if k in g.diff else base.get(k)
                votes.setdefault(_digest(value), []).append(g)
            winner = next((d for d, gs in votes.items() if sum(len(g.members) for g in gs) * 2 > total), _NONE)
            if winner is _NONE:
                continue
            holders = votes[winner]
            holder = holders[0]
            majority_value = holder.diff[k] if k in holder.diff else base.get(k)
            if majority_value is None:
                where = None
            elif k in holder.diff:
                where = (holder.members[0].path, holder.pointers.get(k, f"/{k[0]}"))
            else:
                where = (baseline.path, baseline.pointer(k[0], k[1]))
            for d, gs in votes.items():
                if d == winner:
                    continue
                for g in gs:
                    value = g.diff[k] if k in g.diff else base.get(k)
                    if k[0] == "workloads" and (
                            (value is None and g.hides(majority_value))
                            or (majority_value is None and any(h.hides(value) for h in holders))):
                        continue  # a 1.22 dump cannot show it: not a difference
                    departures.append((g, k, value, majority_value, where))
        # per group, the workloads it departs on: their endpoints are not a second service difference
        skips: dict[int, set[str]] = {}
        for g, (kind, key), *_ in departures:
            if kind == "workloads":
                skips.setdefault(id(g), set()).add(key)
        for g, k, value, majority_value, where in departures:
            skip = skips.get(id(g), set())
            for member in g.members:
                finding = self._finding(ctx, g, member, k, value, majority_value, where, skip, total, rows)
                if finding is None:
                    continue
                n = counts[(member.pod, finding.code)] = counts.get((member.pod, finding.code), 0) + 1
                if n <= MAX_PER_CODE:
                    yield finding
        for (pod, code), n in sorted(counts.items()):
            if n > MAX_PER_CODE:
                member = next(m for g in groups for m in g.members if m.pod == pod)
                yield ctx.finding(
                    code, f"ztunnel {pod} on node {member.node}: {n - MAX_PER_CODE} more '{code}' differences from "
                    f"the majority of ztunnels than the {MAX_PER_CODE} reported one by one.", title=_TITLES[code],
                    severity="error", resources=[Resource("Pod", pod, member.namespace or None, node=member.node,
                                                          ztunnel=pod)],
                    evidence=[Evidence(member.path, "")], remediation=REMEDIATION, references=REFERENCES)
        ctx.view("drift", rows[:MAX_VIEW_ROWS])

    def _finding(self, ctx: Context, g: _Group, member: _Member, k: Key, value: Any, majority: Any,
                 where: tuple[str, str] | None, skip: set[str], total: int,
                 rows: list[dict[str, Any]]) -> Finding | None:
        kind, key = k
        what = _SINGULAR[kind]
        ours = value.comparable() if value is not None else {}
        theirs = majority.comparable() if majority is not None else {}
        mine = Evidence(member.path, g.pointers.get(k, f"/{kind}") if value is not None else f"/{kind}",
                        excerpt=short(ours) if value is not None else f"no {what} {key}")
        theirs_ev = (Evidence(where[0], where[1], excerpt=f"the majority's {what} {key}: {short(theirs, 80)}")
                     if where is not None else None)
        if value is None:
            code = f"missing-{what}"
            local = kind == "workloads" and majority.node == member.node
            hbone = kind != "workloads" or majority.protocol == "HBONE" or majority.native_tunnel
            severity = "critical" if local and hbone else "error" if hbone else "warning"
            message = (f"ztunnel {member.pod} on node {member.node} has no {what} {key}, which the majority of the "
                       f"{total} ztunnels hold.")
            subject = majority
            names = present_fields(theirs)
        elif majority is None:
            code = f"extra-{what}"
            severity = "warning"
            message = (f"ztunnel {member.pod} on node {member.node} holds {what} {key}, which the majority of the "
                       f"{total} ztunnels do not (a stale entry?).")
            subject = value
            names = present_fields(ours)
        else:
            if kind == "services" and skip:
                ours = {**ours, "endpoints": tuple(e for e in ours["endpoints"] if e[0] not in skip)}
                theirs = {**theirs, "endpoints": tuple(e for e in theirs["endpoints"] if e[0] not in skip)}
            names = differing_fields(ours, theirs)
            if not names:
                return None
            code = _DRIFT_CODE[kind]
            severity = "warning" if all(n in COSMETIC_FIELDS for n in names) else "error"
            details = "; ".join(f"{n}: this ztunnel {short(ours.get(n), 60)}, majority {short(theirs.get(n), 60)}"
                                for n in names)
            message = (f"ztunnel {member.pod} on node {member.node}: {what} {key} differs from the copy the majority "
                       f"of the {total} ztunnels hold, in {', '.join(names)} ({details}).")
            subject = value
        rows.append({"ztunnel": member.pod, "node": member.node, "kind": what, "key": key, "reference": "majority",
                     "status": code.split("-")[0] if code.startswith(("missing", "extra")) else "different",
                     "fields": fields_view(ours, theirs, names)})
        resource = entry_resource(kind, subject, member)
        return ctx.finding(code, message, title=_TITLES[code], severity=severity, resources=[resource],
                           evidence=[mine] + ([theirs_ev] if theirs_ev is not None else []),
                           remediation=REMEDIATION, references=REFERENCES)


_NONE = object()
