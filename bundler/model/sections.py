"""Many ztunnel dumps that are mostly the same: each distinct section and entry is parsed and normalised once.

Every ztunnel holds every workload of the mesh, so a mesh of 1,000 nodes and 20,000 pods has the same 20,000
workloads a thousand times over. ztunnel pretty-prints its dump with sorted keys and sorts ``workloads`` by uid
(formats.md 2.1), so ztunnels that agree write byte-identical sections, and two equal entries are byte-identical
whatever surrounds them. JSON strings cannot hold a raw line break, so in pretty-printed text the line structure is
the document's structure: the big top-level arrays and their entries can be cut out of the text without parsing it.

:class:`SectionCache` does that: a section byte-identical to one seen before reuses its normalised result (the
same dict objects, shared between views: read-only); otherwise each entry's bytes are looked up in a per-entry
cache and only new entries are parsed. The result equals ``normalize.ztunnel_view`` of the whole document (the
tests check it). Text without that shape (hand-made, compact, the 1.22 maps) returns None: the caller parses the
whole document the ordinary way.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import ChainMap
from dataclasses import dataclass, field
from typing import Any

import orjson

from bundler.model import normalize
from bundler.model.types import Workload, ZtunnelView

__all__ = ["Body", "Cut", "SectionCache", "entry_texts", "locate_arrays", "split_dump"]

ARRAYS = ("workloads", "services", "policies")
_OPEN = b"    {\n"
_CLOSE = b"\n    }"
_SEPARATOR = b"\n    },\n    {\n"  # between two entries of a top-level array, and nowhere else in the text
_RECENT = 4  # distinct array texts remembered per array: in-sync ztunnels repeat the last one
_MAX_ENTRIES = 500_000  # entries remembered; past that the cache starts again (bounded memory on odd bundles)
_serials = itertools.count()
_NOT_AN_OBJECT = object()


class _NotPretty(Exception):
    """The text does not have ztunnel's pretty-printed shape after all."""


def locate_arrays(data: bytes, tails: list[bytes] = ()) -> list[tuple[int, int, int, str]] | None:
    """``(label, body, end, key)`` of each non-empty top-level ``workloads``, ``services`` and ``policies`` array:
    where its line starts, where its entries start, where its closing line starts. None when the text is not
    pretty-printed as ztunnel does. ``tails``: earlier dumps' text from their last array's label to their end;
    a dump that ends the same way has that array there (found by one comparison instead of a search through
    megabytes of text, which is slow on indentation)."""
    if not data.startswith(b'{\n  "'):
        return None
    starts = []
    since = 0
    for key in sorted(ARRAYS):  # the dump's order: ztunnel sorts keys
        label = b'\n  "' + key.encode() + b'": '
        start = next((len(data) - len(t) for t in tails if t.startswith(label) and data.endswith(t)), -1)
        if start < 0:
            # "key": is found whatever its value ("[]" when empty), so no search runs through the whole text;
            # keys are sorted, so each search starts where the previous key was found
            start = data.find(label, since)
            if start < 0 and since:
                start = data.find(label)
        if start < 0:
            continue
        since = start
        if data.startswith(b"[\n", start + len(label)):
            starts.append((start, start + len(label) + 2, key))
    if not starts:
        return None
    starts.sort()
    spans, pos = [], 0
    for i, (start, body, key) in enumerate(starts):
        # the array ends at the last "\n  ]" before the next array (searched backwards: a forward search through
        # megabytes of indentation is slow); another top-level array in between makes an entry unparseable
        limit = starts[i + 1][0] if i + 1 < len(starts) else len(data)
        end = data.rfind(b"\n  ]", body, limit)
        if end < 0 or body < pos or not data.startswith(_OPEN, body) or data[end - len(_CLOSE):end] != _CLOSE:
            return None
        spans.append((start, body, end, key))
        pos = end
    return spans


def split_dump(data: bytes) -> tuple[bytes, dict[str, bytes]] | None:
    """``(rest, bodies)``: the dump with its non-empty top-level ``workloads``, ``services`` and ``policies`` arrays
    emptied, and each array's entries as one text (without the outer ``{``/``}`` of its first and last entry,
    entries separated by ``_SEPARATOR``). None when the text is not pretty-printed as ztunnel does."""
    spans = locate_arrays(data)
    if spans is None:
        return None
    return _rest(data, spans), {key: data[body + len(_OPEN):end - len(_CLOSE)] for _, body, end, key in spans}


def _rest(data: bytes, spans: list[tuple[int, int, int, str]]) -> bytes:
    rest, pos = [], 0
    for _, body, end, _key in spans:
        rest.append(data[pos:body])
        pos = end
    rest.append(data[pos:])
    return b"".join(rest)


def entry_texts(body: bytes) -> list[bytes]:
    """The entries of a body of :func:`split_dump`, each without its outer braces."""
    return body.split(_SEPARATOR)


def _parse_entry(piece: bytes) -> Any:
    try:
        value = orjson.loads(b"{\n" + piece + b"\n}")
    except orjson.JSONDecodeError:
        raise _NotPretty from None
    if not isinstance(value, dict):
        raise _NotPretty
    return value


@dataclass
class _Section:
    """The normalised result of one array section (shared by every view whose section had the same bytes)."""

    objects: dict[str, Any] = field(default_factory=dict)  # key -> Workload | Service | Policy
    pointers: dict[tuple[str, str], str] = field(default_factory=dict)
    issues: list[tuple[str, str]] = field(default_factory=list)
    raw_services_seen: bool = False  # workloads only: an entry had a "services" field (ztunnel >= 1.24)
    serial: int = field(default_factory=lambda: next(_serials))  # a key that, unlike id(), is never reused
    _status_of: dict[str, str] | None = None

    def status_of(self) -> dict[str, str]:
        """Workload uid -> status (for the <=1.23 endpoints, which have none)."""
        if self._status_of is None:
            self._status_of = {uid: wl.status for uid, wl in self.objects.items()}
        return self._status_of


@dataclass
class Body:
    """The text of one array of a dump; dumps whose array has the same text share one Body and its ``memo`` (the
    normalised section, validation issues), so that each distinct text is worked on once."""

    text: bytes
    memo: dict[Any, Any] = field(default_factory=dict)


@dataclass
class Cut:
    """A dump cut by :meth:`SectionCache.cut`: the rest parsed, the arrays as shared Bodies."""

    rest: dict[str, Any]
    bodies: dict[str, Body]


class SectionCache:
    """Builds ZtunnelViews of pretty-printed dumps from shared, cached sections. One per BundleModel."""

    def __init__(self, intern: dict[Any, Any]) -> None:
        self._intern = intern
        self._recent: dict[str, list[Body]] = {}
        self._entries: dict[Any, Any] = {}
        self._derived: dict[tuple[int, int], dict[str, Workload]] = {}  # by (workloads, services) serial
        self._empty = _Section()
        self._tails: list[bytes] = []  # see locate_arrays

    def cut(self, data: bytes) -> Cut | None:
        """``data`` cut into its parsed rest and its arrays' Bodies, or None when it does not have ztunnel's
        pretty-printed shape. A Body equal to one of the last few of its array is that one (compared, not
        hashed: in-sync ztunnels repeat the same 20 MB, and a comparison stops at the first difference)."""
        spans = locate_arrays(data, self._tails)
        if spans is None:
            return None
        try:
            rest = orjson.loads(_rest(data, spans))
        except orjson.JSONDecodeError:
            return None
        if not isinstance(rest, dict) or any(rest.get(key) for key in ARRAYS):
            return None  # an array the split did not find is not empty: not the shape assumed here
        bodies = {}
        for label, start, end, key in spans:
            start, end = start + len(_OPEN), end - len(_CLOSE)
            recent = self._recent.setdefault(key, [])
            # compared in place, without copying the text out first
            body = next((b for b in recent if len(b.text) == end - start and data.startswith(b.text, start)), None)
            if body is None:
                body = Body(data[start:end])
                recent.insert(0, body)
                del recent[_RECENT:]
            bodies[key] = body
        label = spans[-1][0]
        if not any(len(t) == len(data) - label and data.endswith(t) for t in self._tails):
            self._tails.insert(0, data[label:])
            del self._tails[_RECENT:]
        return Cut(rest, bodies)

    def view(self, data: bytes, *, node: str, pod: str, namespace: str, path: str,
             cut: Cut | None = None) -> ZtunnelView | None:
        """The view of the dump ``data``, or None when ``data`` does not have the pretty-printed shape (or its rest
        is not JSON): parse it whole then. Raises what ``normalize.ztunnel_view`` raises for the rest.
        ``cut``: the dump cut already (:meth:`cut`)."""
        cut = cut if cut is not None else self.cut(data)
        if cut is None:
            return None
        view = normalize.ztunnel_view(cut.rest, node=node, pod=pod, namespace=namespace, path=path,
                                      intern=self._intern)
        try:
            workloads = self._section("workloads", cut.bodies.get("workloads"), self._workload)
            services = self._section(("services", workloads.serial), cut.bodies.get("services"),
                                     lambda raw: normalize.ztunnel_service(raw, workloads.status_of()))
            policies = self._section("policies", cut.bodies.get("policies"), normalize.ztunnel_policy)
        except _NotPretty:
            return None
        view.workloads = self._with_derived_services(workloads, services)
        view.services = services.objects
        view.policies = policies.objects
        view.issues[:0] = workloads.issues + services.issues + policies.issues
        # reads look in every map; the view's own entries (certificates, workloadState) stay its own
        view.pointers = ChainMap(view.pointers, workloads.pointers, services.pointers, policies.pointers)
        return view

    def _workload(self, raw: Any) -> tuple[Workload, bool]:
        return normalize.ztunnel_workload(raw), "services" in raw

    def _section(self, key: Any, body: Body | None, convert: Any) -> _Section:
        if body is None:
            return self._empty  # shared like the others: analyzers memoise on the dicts' identity
        section = body.memo.get(key)
        if section is None:
            section = body.memo[key] = self._build(key, body.text, convert)
        return section

    def _build(self, key: Any, body: bytes, convert: Any) -> _Section:
        kind = key if isinstance(key, str) else key[0]
        what = kind[:-1] if kind != "policies" else "policy"
        section = _Section()
        for index, piece in enumerate(entry_texts(body)):
            cache_key = (key, piece)
            result = self._entries.get(cache_key)
            if result is None:
                try:
                    result = convert(_parse_entry(piece))
                except _NotPretty:
                    raise
                except Exception as exc:  # noqa: BLE001 - a bad entry is left out, never fatal (as normalize does)
                    result = normalize._reason(exc)  # noqa: SLF001 - the same wording as a whole-document parse
                else:
                    result = self._interned(result)
                if len(self._entries) >= _MAX_ENTRIES:
                    self._entries.clear()
                self._entries[cache_key] = result
            pointer = normalize.json_pointer(kind, index)
            if isinstance(result, str):
                section.issues.append((pointer, f"{what} left out: {result}"))
                continue
            if kind == "workloads":
                obj, has_services = result
                name = obj.uid
            else:
                obj, has_services, name = result, False, result.key
            if name in section.objects:
                continue
            section.raw_services_seen = section.raw_services_seen or has_services
            section.objects[name] = obj
            section.pointers[(kind, name)] = pointer
        return section

    def _interned(self, result: Any) -> Any:
        if isinstance(result, tuple):
            return (normalize._intern(self._intern, result[0]), result[1])  # noqa: SLF001
        return normalize._intern(self._intern, result)  # noqa: SLF001

    def _with_derived_services(self, workloads: _Section, services: _Section) -> dict[str, Workload]:
        """ztunnel <= 1.23 has no workload ``services`` list: derived from the services' endpoints, as
        ``normalize.ztunnel_view`` does."""
        if workloads.raw_services_seen or not services.objects:
            return workloads.objects
        key = (workloads.serial, services.serial)
        derived = self._derived.get(key)
        if derived is None:
            member_of: dict[str, set[str]] = {}
            for svc in services.objects.values():
                for ep in svc.endpoints:
                    member_of.setdefault(ep.workload_uid, set()).add(svc.key)
            derived = dict(workloads.objects)
            for uid, keys in member_of.items():
                wl = derived.get(uid)
                if wl is not None:
                    derived[uid] = normalize._intern(  # noqa: SLF001
                        self._intern, dataclasses.replace(wl, services=tuple(sorted(keys))))
            self._derived[key] = derived
        return derived

