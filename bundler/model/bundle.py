"""BundleModel: a bundle (archive, ``.zip`` parts or extracted directory) as the canonical model, read lazily.

Small, shared things are cached (Kubernetes lists, the refs, istiod's ambientz views: one per replica). ztunnel
views are cached too, but compactly: every ztunnel holds every workload of the mesh, and the views of ztunnels
that agree share one dict per section (:mod:`bundler.model.sections` parses each distinct section and entry
once), so a thousand views cost little more than one. Views are read-only. Per-proxy istiod dumps, logs and
metrics are read on demand and not cached.

Nothing raises on bad input: an artifact that is missing, was not collected, is not JSON, has the wrong shape or
the <=1.21 layout becomes a :class:`~bundler.model.types.Problem` in :attr:`BundleModel.problems`, and the model
goes on without it. Only a bundle that cannot be opened at all (``open_bundle`` fails) raises.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from bundler import layout
from bundler.archive import Bundle, open_bundle
from bundler.errors import ArtifactError, BundleError
from bundler.formats import istio_log, openmetrics, ztunnel_log
from bundler.formats.openmetrics import ParsedFamily
from bundler.manifest import STATUSES_WITH_MEMBER, Artifact, Manifest
from bundler.model import normalize
from bundler.model.onepass import read_once
from bundler.model.sections import Cut, SectionCache, entry_texts
from bundler.model.types import (
    IstiodRef,
    IstiodView,
    LogFile,
    LogRecordRef,
    Problem,
    ZtunnelRef,
    ZtunnelView,
)
from bundler.validation import (
    UnsupportedFormatError,
    ValidationIssue,
    kind_from_path,
    legacy_layout,
    load_validator,
    parse_json,
    schema_registry,
    validate_document,
)

try:  # the issue formatting of bundler.validation, reused so that per-item validation gives identical issues
    from bundler.validation import _collect as _collect_issues
    from bundler.validation import _sort_key as _issue_sort_key
except ImportError:  # pragma: no cover - renamed upstream: validate whole documents
    _collect_issues = None
    _issue_sort_key = None

__all__ = ["BundleModel"]

_MISSING = "missing"
_FAILED = object()  # _load_json's "could not load" (None is valid JSON)
_LATER = object()  # a dump left for later in the one pass
_LOG_KINDS = {layout.KIND_ZTUNNEL_LOG: "ztunnel", layout.KIND_ISTIOD_LOG: "istiod", layout.KIND_CNI_LOG: "cni"}
_WHOLE_DOCUMENT = frozenset({"malformed", "unsupported", "missing", "not-collected"})
_GC_THRESHOLD = 1 << 20  # pause the cyclic GC while parsing documents bigger than this (python-stack.md 3)
_VALIDATED_BY_DIGEST_FROM = 64 * 1024  # members this big are validated once per distinct content


@contextlib.contextmanager
def _gc_paused(size: int) -> Iterator[None]:
    if size < _GC_THRESHOLD or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# Keys a property schema may have for its array items to be validated one by one (no cross-item constraint).
_ITEM_LOCAL_KEYS = frozenset({"type", "items", "description", "title", "propertyNames", "additionalProperties"})
_DOCUMENT_COMBINATORS = ("allOf", "anyOf", "oneOf", "not", "if", "unevaluatedProperties", "dependentSchemas",
                         "dependentRequired", "patternProperties")


class _ItemValidator:
    """Schema validation that checks each distinct array item once (design.md: in a big mesh every ztunnel holds
    the same workloads). A document's big arrays (``workloads``, ``services``, ``policies``, ``configs``) are
    emptied and the rest validated whole; each item is validated against the ``$ref`` its array's ``items`` names,
    its issues cached by a digest of the item's canonical bytes and re-based on its index. The result equals
    ``validate_document``; a schema whose shape does not allow this (cross-item keywords) is validated whole."""

    def __init__(self) -> None:
        self._plans: dict[str, dict[str, Any] | None] = {}
        # by (kind/array, digest of the item) or (kind/array, the entry's text as the dump has it)
        self._cache: dict[tuple[str, bytes], tuple[ValidationIssue, ...]] = {}

    def _plan(self, kind: str) -> dict[str, Any] | None:
        if kind in self._plans:
            return self._plans[kind]
        plan: dict[str, Any] | None = None
        try:
            from jsonschema import Draft202012Validator

            schema = load_validator(kind).schema
            base = schema.get("$id", "")
            props = schema.get("properties") if isinstance(schema, dict) else None
            if _collect_issues is not None and isinstance(props, dict) and base and not any(
                    key in schema for key in _DOCUMENT_COMBINATORS):
                plan = {}
                for name, prop in props.items():
                    if not isinstance(prop, dict) or not set(prop) <= _ITEM_LOCAL_KEYS:
                        continue
                    items = prop.get("items")
                    if isinstance(items, dict) and set(items) == {"$ref"} and isinstance(items["$ref"], str):
                        ref = items["$ref"]
                        uri = base + ref if ref.startswith("#") else base.rsplit("/", 1)[0] + "/" + ref
                        plan[name] = Draft202012Validator({"$ref": uri}, registry=schema_registry())
                plan = plan or None
        except Exception:  # noqa: BLE001 - any doubt: validate whole documents
            plan = None
        self._plans[kind] = plan
        return plan

    def validate(self, document: Any, kind: str) -> list[ValidationIssue]:
        plan = self._plan(kind)
        if plan is None or not isinstance(document, dict):
            return validate_document(document, kind)
        if kind == layout.KIND_ZTUNNEL_CONFIG_DUMP and legacy_layout(document) is not None:
            return validate_document(document, kind)  # raises UnsupportedFormatError
        arrays = {name: document[name] for name in plan if isinstance(document.get(name), list)}
        if not arrays:
            return validate_document(document, kind)
        try:
            issues = set(_collect_issues(load_validator(kind), {**document, **{name: [] for name in arrays}}))
            for name, items in arrays.items():
                validator = plan[name]
                prefix = "/" + name.replace("~", "~0").replace("/", "~1") + "/"
                for index, item in enumerate(items):
                    for issue in self._item(kind, name, validator, item):
                        issues.add(ValidationIssue(prefix + str(index) + issue.pointer, issue.message))
        except (RecursionError, TypeError, orjson.JSONEncodeError):
            return validate_document(document, kind)
        return sorted(issues, key=_issue_sort_key)

    def validate_cut(self, cut: Cut, kind: str) -> list[ValidationIssue] | None:
        """:meth:`validate` of a dump cut by ``SectionCache.cut``: the rest whole, then each array text (memoised
        on its shared Body) entry by entry, each distinct entry text parsed and validated once. None when the
        schema's shape does not allow this: validate the whole document then. JSONDecodeError for an entry that
        is not JSON after all."""
        plan = self._plan(kind)
        if plan is None or not set(cut.bodies) <= set(plan):
            return None
        if legacy_layout(cut.rest) is not None:
            return validate_document(cut.rest, kind)  # raises UnsupportedFormatError
        issues = set(_collect_issues(load_validator(kind), cut.rest))
        for name, body in cut.bodies.items():
            found = body.memo.get(("issues", kind))
            if found is None:
                found = body.memo[("issues", kind)] = self._array_issues(kind, name, plan[name], body.text)
            issues.update(found)
        return sorted(issues, key=_issue_sort_key)

    def _array_issues(self, kind: str, name: str, validator: Any, text: bytes) -> tuple[ValidationIssue, ...]:
        prefix = "/" + name.replace("~", "~0").replace("/", "~1") + "/"
        out = []
        for index, piece in enumerate(entry_texts(text)):
            key = (f"{kind}/{name}", piece)
            cached = self._cache.get(key)
            if cached is None:
                cached = tuple(_collect_issues(validator, orjson.loads(b"{\n" + piece + b"\n}"))) or ()
                self._cache[key] = cached
            out.extend(ValidationIssue(prefix + str(index) + issue.pointer, issue.message) for issue in cached)
        return tuple(out)

    def _item(self, kind: str, name: str, validator: Any, item: Any) -> tuple[ValidationIssue, ...]:
        digest = hashlib.blake2b(orjson.dumps(item, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()
        key = (f"{kind}/{name}", digest)
        cached = self._cache.get(key)
        if cached is None:
            cached = tuple(_collect_issues(validator, item)) or ()
            self._cache[key] = cached
        return cached


class BundleModel:
    """The canonical model of one bundle. Use :meth:`open` (a context manager) or wrap an open Bundle."""

    def __init__(self, bundle: Bundle, *, owns_bundle: bool = False) -> None:
        self.bundle = bundle
        self._owns = owns_bundle
        self.problems: list[Problem] = []
        self._problem_keys: set[tuple[str, str, str, int | None]] = set()  # see _problem
        self._artifacts: dict[str, Artifact] | None = None
        self._names: set[str] | None = None
        self._k8s: dict[str, list[dict[str, Any]]] = {}
        self._pods_index: dict[tuple[str, str], dict[str, Any]] | None = None
        self._pods_by_ip: dict[str, dict[str, Any]] | None = None
        self._ztunnel_refs: list[ZtunnelRef] | None = None
        self._istiod_refs: list[IstiodRef] | None = None
        self._ambientz: dict[str, IstiodView | None] = {}
        # equal Workload/Service/Policy objects of different dumps and views are one object (normalize.intern)
        self._intern: dict[Any, Any] = {}
        self._sections = SectionCache(self._intern)
        self._views: dict[str, ZtunnelView | None] = {}  # by dump path
        self._maps: dict[Any, Any] = {}  # equal section dicts of views parsed whole, shared (see _shared)
        self._validator = _ItemValidator()
        self._metrics: dict[str, list[ParsedFamily]] = {}  # parsed once, shared (read-only)
        self._refs_by_node: dict[str, list[ZtunnelRef]] | None = None
        self._dump_issues: dict[str, list[ValidationIssue]] = {}  # schema issues found during the one pass
        self.digests: dict[str, tuple[int, str]] | None = None  # (size, sha256) by path, when read in one pass
        # Istio <= 1.24: istiod sends every ztunnel the same configuration, so its per-proxy dumps repeat byte for
        # byte; each distinct one is converted once and its view shared (by the digests of the dump and WADS dump)
        self._per_proxy_views: dict[tuple[Any, ...], IstiodView] = {}
        self._validated: dict[tuple[str, tuple[int, str]], list[ValidationIssue]] = {}  # big members, by digest

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> BundleModel:
        """Open an archive (``.tar.zst``), ``.zip`` parts or an extracted directory. BundleFormatError when it is
        not a bundle at all.

        An archive is read once (:mod:`bundler.model.onepass`): ztunnel dumps become views during that pass, the
        other members go to a temporary folder, every member is hashed. When that pass fails (a damaged archive,
        no room on the disk), the archive is read in place, slowly, and what can be read is analyzed."""
        bundle = open_bundle(path)
        if not getattr(bundle, "is_archive", False):
            return cls(bundle, owns_bundle=True)
        folder = tempfile.mkdtemp(prefix="ztunnel-bundle-analyze-")
        model = cls(bundle, owns_bundle=True)
        try:
            model.bundle, model.digests = read_once(bundle, Path(folder), model._consumes, model._consume)
        except BundleError:
            shutil.rmtree(folder, ignore_errors=True)
            bundle.close()
            return cls(open_bundle(path), owns_bundle=True)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            bundle.close()
            raise
        model._cleanup = folder
        return model

    @staticmethod
    def _consumes(path: str) -> bool:
        return path.startswith("ztunnel/") and layout.kind_of_path(path) == layout.KIND_ZTUNNEL_CONFIG_DUMP

    def _consume(self, path: str, data: bytes) -> None:
        cut = self._sections.cut(data)
        if cut is not None:
            self._validate_dump(path, cut)
        parts = path.split("/")
        if len(parts) == 4:  # ztunnel/<node>/<pod>/config_dump.json; the namespace comes with the manifest
            view = self._view_of(data, path, {"node": parts[1], "pod": parts[2], "namespace": "", "path": path},
                                 in_pass=True, cut=cut)
            if view is not _LATER:
                self._views[path] = view

    def close(self) -> None:
        if self._owns:
            self.bundle.close()
        folder = getattr(self, "_cleanup", None)
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
            self._cleanup = None

    def __enter__(self) -> BundleModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- manifest, members, problems -----------------------------------------------------------------------------

    @property
    def manifest(self) -> Manifest:
        """The parsed manifest (BundleFormatError if the bundle has none or it is broken)."""
        return self.bundle.manifest

    def _problem(self, path: str, message: str, *, pointer: str = "", reason: str = "malformed",
                 line: int | None = None) -> None:
        key: tuple[str, str, str, int | None] = (path, pointer, message, line)
        if not pointer and line is None and reason in _WHOLE_DOCUMENT:
            key = (path, "", reason, None)  # one "not JSON"/"unsupported" per artifact, whoever finds it first
        if key not in self._problem_keys:
            self._problem_keys.add(key)
            self.problems.append(Problem(path, message, pointer, reason, line))

    def _index(self) -> tuple[dict[str, Artifact], set[str]]:
        if self._artifacts is None:
            try:
                self._artifacts = self.manifest.by_path()
            except BundleError as exc:
                self._artifacts = {}
                self._problem(layout.MANIFEST, f"manifest unreadable, using the members only: {exc}",
                              reason="unreadable")
            try:
                self._names = set(self.bundle.names())
            except BundleError as exc:
                self._names = set()
                self._problem("", f"cannot list the bundle's members: {exc}", reason="unreadable")
        assert self._names is not None
        return self._artifacts, self._names

    def _paths(self) -> list[str]:
        """Every path the manifest lists or the bundle holds, in layout order."""
        artifacts, names = self._index()
        return sorted(set(artifacts) | names, key=layout.order_key)

    def artifact(self, path: str) -> Artifact | None:
        """The manifest entry of ``path``, or None."""
        return self._index()[0].get(path)

    def status(self, path: str) -> str:
        """ok | truncated | error | skipped as the manifest says; ok for a member the manifest does not list;
        "missing" when there is neither."""
        artifacts, names = self._index()
        art = artifacts.get(path)
        if art is not None:
            return art.status
        return "ok" if path in names else _MISSING

    def has(self, path: str) -> bool:
        """True when the bundle holds a member at ``path``."""
        return path in self._index()[1]

    def _source(self, path: str) -> dict[str, Any]:
        art = self.artifact(path)
        return art.source if art is not None else {}

    def _readable(self, path: str, what: str) -> bool:
        """Whether ``path`` can be read; a Problem says why not."""
        artifacts, names = self._index()
        status = self.status(path)
        if status not in STATUSES_WITH_MEMBER and status != _MISSING:
            art = artifacts.get(path)
            reason = f": {art.reason}" if art is not None and art.reason else ""
            self._problem(path, f"{what} was not collected ({status}{reason})", reason="not-collected")
            return False
        if path not in names:
            listed = " though the manifest lists it" if status != _MISSING else ""
            self._problem(path, f"{what} is not in the bundle{listed}", reason=_MISSING)
            return False
        return True

    def _truncated_note(self, path: str) -> str:
        art = self.artifact(path)
        if art is None or art.status != "truncated":
            return ""
        return f" (the collector truncated it{': ' + art.reason if art.reason else ''})"

    def _read(self, path: str, what: str) -> bytes | None:
        if not self._readable(path, what):
            return None
        try:
            return self.bundle.read(path)
        except BundleError as exc:
            self._problem(path, f"cannot read {what}: {exc}", reason="unreadable")
            return None

    def _load_json(self, path: str, what: str) -> Any:
        """The parsed JSON of ``path``, or _FAILED (with a Problem)."""
        data = self._read(path, what)
        if data is None:
            return _FAILED
        try:
            with _gc_paused(len(data)):
                return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            self._problem(path, f"{what} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
                          f"{self._truncated_note(path)}")
            return _FAILED
        finally:
            del data

    # --- Kubernetes ----------------------------------------------------------------------------------------------

    def k8s(self, resource: str, group: str = "") -> list[dict[str, Any]]:
        """The items of ``cluster/<...>.json`` (see ``layout.k8s_list``); [] if absent or unreadable. Cached."""
        path = layout.k8s_list(resource, group)
        cached = self._k8s.get(path)
        if cached is not None:
            return cached
        items: list[dict[str, Any]] = []
        if self.status(path) != _MISSING or self.has(path):
            doc = self._load_json(path, f"the {resource} list")
            if doc is not _FAILED:
                raw = doc.get("items") if isinstance(doc, dict) else None
                if isinstance(raw, list):
                    items = [item for item in raw if isinstance(item, dict)]
                elif isinstance(doc, dict) and raw is None and "items" in doc:
                    items = []  # "items": null, an empty list from some clients
                else:
                    self._problem(path, f"the {resource} list has no items list", pointer="/items")
        self._k8s[path] = items
        return items

    def pods(self) -> list[dict[str, Any]]:
        return self.k8s("pods")

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self._pods_index is None:
            self._pods_index = {}
            for pod in self.pods():
                meta = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
                self._pods_index.setdefault((str(meta.get("namespace", "")), str(meta.get("name", ""))), pod)
        return self._pods_index.get((namespace, name))

    def pods_by_ip(self) -> dict[str, dict[str, Any]]:
        """Pod IP -> pod, for pods that own their IP: host-network pods (which share their node's IP) are left out,
        and a running pod wins over a finished one that held the same IP."""
        if self._pods_by_ip is None:
            out: dict[str, dict[str, Any]] = {}
            rank: dict[str, int] = {}
            for pod in self.pods():
                spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
                status = pod.get("status") if isinstance(pod.get("status"), dict) else {}
                if spec.get("hostNetwork") is True:
                    continue
                phase = status.get("phase")
                score = 2 if phase == "Running" else 0 if phase in ("Succeeded", "Failed") else 1
                ips = [status.get("podIP")]
                pod_ips = status.get("podIPs")
                if isinstance(pod_ips, list):
                    ips += [entry.get("ip") for entry in pod_ips if isinstance(entry, dict)]
                for ip in ips:
                    if isinstance(ip, str) and ip and score > rank.get(ip, -1):
                        out[ip] = pod
                        rank[ip] = score
            self._pods_by_ip = out
        return self._pods_by_ip

    def namespaces(self) -> dict[str, dict[str, str]]:
        """Namespace name -> labels."""
        out = {}
        for ns in self.k8s("namespaces"):
            meta = ns.get("metadata") if isinstance(ns.get("metadata"), dict) else {}
            name = meta.get("name")
            if isinstance(name, str):
                labels = meta.get("labels")
                out[name] = dict(labels) if isinstance(labels, dict) else {}
        return out

    def nodes(self) -> list[dict[str, Any]]:
        return self.k8s("nodes")

    # --- ztunnels ------------------------------------------------------------------------------------------------

    def ztunnel_refs(self) -> list[ZtunnelRef]:
        """Every ztunnel the manifest (or the bundle) has anything of, ordered by node then pod, including those
        whose dump could not be collected."""
        if self._ztunnel_refs is None:
            found: dict[tuple[str, str], list[str]] = {}
            for path in self._paths():
                parts = path.split("/")
                if parts[0] == "ztunnel" and len(parts) in (4, 5) and layout.kind_of_path(path) is not None:
                    found.setdefault((parts[1], parts[2]), []).append(path)
            refs = []
            for (node, pod), paths in sorted(found.items()):
                refs.append(self._ztunnel_ref(node, pod, paths))
            self._ztunnel_refs = refs
        return list(self._ztunnel_refs)

    def _ztunnel_ref(self, node: str, pod: str, paths: list[str]) -> ZtunnelRef:
        present = set(paths)
        dump = layout.ztunnel_file(node, pod, "config_dump.json")
        namespace = ""
        for path in [dump, *paths]:
            ns = self._source(path).get("namespace")
            if isinstance(ns, str) and ns:
                namespace = ns
                break
        if not namespace:  # a hand-made bundle without sources: the ztunnel pod in the pod list
            for candidate in self.pods():
                meta = candidate.get("metadata") if isinstance(candidate.get("metadata"), dict) else {}
                if meta.get("name") == pod and isinstance(meta.get("namespace"), str):
                    namespace = meta["namespace"]
                    break
        logs = sorted(p for p in paths if layout.kind_of_path(p) == layout.KIND_ZTUNNEL_LOG)
        current = next((p for p in logs if not p.endswith(".previous.log")), None)
        previous = next((p for p in logs if p.endswith(".previous.log")), None)
        art = self.artifact(dump)
        istiod_dump, istiod_wads = layout.istiod_proxy_dump(pod), layout.istiod_proxy_wads(pod)
        replica = self._source(istiod_dump).get("replica")

        def known(path: str) -> str | None:
            return path if path in present or self.status(path) != _MISSING else None

        return ZtunnelRef(
            node=node,
            pod=pod,
            namespace=namespace,
            dump_path=dump,
            dump_status=self.status(dump),
            dump_reason=art.reason if art is not None else None,
            metrics_path=known(layout.ztunnel_file(node, pod, "metrics.txt")),
            log_path=current,
            previous_log_path=previous,
            pod_json_path=known(layout.ztunnel_file(node, pod, "pod.json")),
            istiod_dump_path=known(istiod_dump),
            istiod_wads_path=known(istiod_wads),
            xds_replica=replica if isinstance(replica, str) else None,
        )

    def _load_ztunnel(self, ref: ZtunnelRef) -> ZtunnelView | None:
        if ref.dump_path in self._views:  # parsed before, or during the one pass
            if not self._readable(ref.dump_path, "the ztunnel config dump"):
                return None
            view = self._views[ref.dump_path]
            if view is not None and not view.namespace:
                view.namespace = ref.namespace
            return view
        data = self._read(ref.dump_path, "the ztunnel config dump")
        view = None if data is None else self._view_of(data, ref.dump_path, {
            "node": ref.node, "pod": ref.pod, "namespace": ref.namespace, "path": ref.dump_path})
        self._views[ref.dump_path] = view
        return view

    def _validate_dump(self, path: str, cut: Cut) -> None:
        """Schema issues of a dump during the one pass (validation_issues gives them later): the dump is cut
        as for its view, so each distinct array text and entry is validated once."""
        try:
            issues = self._validator.validate_cut(cut, layout.KIND_ZTUNNEL_CONFIG_DUMP)
        except (UnsupportedFormatError, orjson.JSONDecodeError):
            return  # reported the ordinary way later
        if issues is not None:
            self._dump_issues[path] = issues

    def _view_of(self, data: bytes, path: str, where: dict[str, str], in_pass: bool = False,
                 cut: Cut | None = None) -> Any:
        """The view of a dump's bytes, or None (with a Problem); _LATER during the one pass for a dump that is
        not JSON: its problem names the manifest's status, which comes last in the archive."""
        with _gc_paused(len(data)):
            try:
                view = self._sections.view(data, cut=cut, **where)
                if view is None:  # not pretty-printed as ztunnel does: parse it whole
                    view = self._parse_whole(path, data, where, in_pass)
                if view is _LATER:
                    return view
            except normalize.UnsupportedDump as exc:
                self._problem(path, str(exc), reason="unsupported")
                return None
            except normalize.NormalizeError as exc:
                self._problem(path, str(exc))
                return None
            finally:
                del data
        if view is None:
            return None
        for pointer, message in view.issues:
            self._problem(path, message, pointer=pointer, reason="invalid")
        return view

    def _parse_whole(self, path: str, data: bytes, where: dict[str, str], in_pass: bool = False) -> Any:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            if in_pass:
                return _LATER
            self._problem(path, f"the ztunnel config dump is not valid JSON: {exc.msg} at line "
                          f"{exc.lineno}, column {exc.colno}{self._truncated_note(path)}")
            return None
        view = normalize.ztunnel_view(doc, intern=self._intern, **where)
        view.workloads, view.services, view.policies = (
            self._shared(view.workloads), self._shared(view.services), self._shared(view.policies))
        return view

    def _shared(self, mapping: dict[str, Any]) -> dict[str, Any]:
        """``mapping``, or an equal dict of an earlier view (entries are interned, so equal means same objects):
        cached views of ztunnels that agree hold one copy."""
        if len(mapping) < 64:
            return mapping
        key = (tuple(mapping), tuple(map(id, mapping.values())))
        return self._maps.setdefault(key, mapping)

    def ztunnels(self) -> Iterator[ZtunnelView]:
        """Each readable ztunnel dump, parsed and normalised (once: later calls give the cached views), ordered by
        node. Dumps that are missing, not collected, unsupported (<=1.21) or not JSON are skipped and listed in
        :attr:`problems`. Views are shared and read-only."""
        for ref in self.ztunnel_refs():
            view = self._load_ztunnel(ref)
            if view is None:
                continue
            yield view
            view = None  # noqa: F841 - drop the generator's reference before the next dump is parsed

    def ztunnel(self, pod: str) -> ZtunnelView | None:
        """The view of the ztunnel ``pod`` (name); None if absent or unreadable."""
        for ref in self.ztunnel_refs():
            if ref.pod == pod:
                return self._load_ztunnel(ref)
        return None

    def ztunnel_ref(self, pod: str) -> ZtunnelRef | None:
        return next((ref for ref in self.ztunnel_refs() if ref.pod == pod), None)

    def metrics(self, node: str) -> list[ParsedFamily]:
        """The ztunnel metrics of ``node`` parsed; [] if absent or unparseable (a Problem says which)."""
        if self._refs_by_node is None:  # called once per node by several analyzers: no scan of every ref each time
            self._refs_by_node = {}
            for ref in self.ztunnel_refs():
                self._refs_by_node.setdefault(ref.node, []).append(ref)
        for ref in self._refs_by_node.get(node, ()):
            if ref.metrics_path is None:
                continue
            cached = self._metrics.get(ref.metrics_path)
            if cached is not None:
                return cached
            data = self._read(ref.metrics_path, "the ztunnel metrics")
            if data is None:
                continue
            try:
                families = openmetrics.parse(data)
            except ValueError as exc:
                self._problem(ref.metrics_path, str(exc))
                continue
            self._metrics[ref.metrics_path] = families  # several analyzers read each node's metrics
            return families
        return []

    # --- istiod --------------------------------------------------------------------------------------------------

    def istiod_refs(self) -> list[IstiodRef]:
        """The istiod replicas of the bundle (``istiod/<pod>/...``), by pod name."""
        if self._istiod_refs is None:
            found: dict[str, list[str]] = {}
            for path in self._paths():
                parts = path.split("/")
                if parts[0] == "istiod" and len(parts) >= 3 and parts[1] != "proxies":
                    found.setdefault(parts[1], []).append(path)
            refs = []
            for pod, paths in sorted(found.items()):
                present = set(paths)

                def known(path: str, present: set[str] = present) -> str | None:
                    return path if path in present or self.status(path) != _MISSING else None

                version_path = known(layout.istiod_file(pod, "version.txt"))
                version = None
                if version_path is not None:
                    data = self._read(version_path, "istiod's version")
                    if data is not None:
                        version = data.decode("utf-8", "replace").strip() or None
                namespace = ""
                for path in paths:
                    ns = self._source(path).get("namespace")
                    if isinstance(ns, str) and ns:
                        namespace = ns
                        break
                logs = tuple(p for p in paths if layout.kind_of_path(p) == layout.KIND_ISTIOD_LOG)
                refs.append(IstiodRef(pod=pod, namespace=namespace, version=version, version_path=version_path,
                                      ambientz_path=known(layout.istiod_file(pod, "ambientz.json")),
                                      syncz_path=known(layout.istiod_file(pod, "syncz.json")), log_paths=logs))
            self._istiod_refs = refs
        return list(self._istiod_refs)

    def ambientz(self, replica: str | None = None) -> IstiodView | None:
        """istiod's global view (``/debug/ambientz``) of ``replica``, or of the first replica that has a readable
        one. Cached per replica; the returned view is shared, do not modify it."""
        refs = self.istiod_refs()
        candidates = [r for r in refs if r.pod == replica] if replica is not None else refs
        for ref in candidates:
            if ref.ambientz_path is None:
                continue
            view = self._ambientz_view(ref)
            if view is not None:
                return view
        return None

    def _ambientz_view(self, ref: IstiodRef) -> IstiodView | None:
        path = ref.ambientz_path
        assert path is not None
        if path not in self._ambientz:
            view = None
            doc = self._load_json(path, "istiod's ambientz")
            if doc is not _FAILED:
                try:
                    view = normalize.istiod_view_from_ambientz(doc, path=path, replica=ref.pod, intern=self._intern)
                except normalize.NormalizeError as exc:
                    self._problem(path, str(exc))
                if view is not None:
                    for pointer, message in view.issues:
                        self._problem(path, message, pointer=pointer, reason="invalid")
            self._ambientz[path] = view
        return self._ambientz[path]

    def istiod_view(self, ztunnel_pod: str) -> IstiodView | None:
        """istiod's view of one ztunnel: its per-proxy dump when that holds configs (Istio <= 1.24), with the
        policies of its WADS dump; else ``/debug/ambientz`` (the replica serving the ztunnel first). ``source``
        says which. None when neither can be read."""
        dump_path = layout.istiod_proxy_dump(ztunnel_pod)
        replica = self._source(dump_path).get("replica")
        replica = replica if isinstance(replica, str) else None
        if self.status(dump_path) != _MISSING or self.has(dump_path):
            wads_path = layout.istiod_proxy_wads(ztunnel_pod)
            key = (self._digest(dump_path), self._digest(wads_path), replica)
            same = self._per_proxy_views.get(key) if key[0] is not None else None
            if same is not None:
                return self._view_problems(dataclasses.replace(
                    same, ztunnel_pod=ztunnel_pod, path=dump_path,
                    policies_path=wads_path if same.policies_path == layout.istiod_proxy_wads(same.ztunnel_pod)
                    else same.policies_path))
            doc = self._load_json(dump_path, "istiod's per-proxy config dump")
            if doc is not _FAILED:
                view = self._per_proxy_view(ztunnel_pod, dump_path, doc, replica)
                if view is not None:
                    if key[0] is not None:
                        self._per_proxy_views[key] = view
                    return view
        ambient = None
        if replica is not None:
            ambient = self.ambientz(replica)
        if ambient is None:
            ambient = self.ambientz()
        if ambient is None:
            return None
        return IstiodView(
            ztunnel_pod=ztunnel_pod, source="ambientz", path=ambient.path, replica=ambient.replica,
            workloads=ambient.workloads, services=ambient.services, policies=ambient.policies,
            policies_path=ambient.policies_path, staged_services=ambient.staged_services,
            pointers=ambient.pointers, issues=ambient.issues,
        )

    def _per_proxy_view(self, pod: str, path: str, doc: Any, replica: str | None) -> IstiodView | None:
        try:
            workloads, services = normalize.config_dump_addresses(doc)
        except normalize.NormalizeError as exc:
            self._problem(path, str(exc))
            return None
        if not workloads and not services:
            return None  # {} on Istio >= 1.25: "unknown", not "no workloads" (formats.md 3.2)
        policies: list[tuple[str, Any]] = []
        policies_path: str | None = None
        wads_path = layout.istiod_proxy_wads(pod)
        if self.status(wads_path) != _MISSING or self.has(wads_path):
            wads = self._load_json(wads_path, "istiod's WADS dump")
            if wads is not _FAILED:
                try:
                    policies, policies_path = normalize.wads_policies(wads), wads_path
                except normalize.NormalizeError as exc:
                    self._problem(wads_path, str(exc))
        view = normalize.istiod_view(workloads, services, policies, ztunnel_pod=pod, source="per-proxy", path=path,
                                     replica=replica, policies_path=policies_path, intern=self._intern)
        del doc, workloads, services
        if policies_path is None:
            ambient = self.ambientz(replica) if replica is not None else None
            ambient = ambient or self.ambientz()
            if ambient is not None:
                view.policies = dict(ambient.policies)
                view.policies_path = ambient.policies_path
                view.pointers.update({k: v for k, v in ambient.pointers.items() if k[0] == "policies"})
        return self._view_problems(view)

    def _view_problems(self, view: IstiodView) -> IstiodView:
        """Report the entries ``view`` left out as problems of its own files; returns ``view``."""
        for pointer, message in view.issues:
            target = view.policies_path if message.startswith("policy") and view.policies_path else view.path
            self._problem(target, message, pointer=pointer, reason="invalid")
        return view

    def _digest(self, path: str) -> tuple[int, str] | None:
        """(size, sha256) of a member read in the one pass; None when unknown (a folder, or not read)."""
        return self.digests.get(path) if self.digests else None

    def syncz(self) -> list[tuple[str, dict[str, Any]]]:
        """(replica, entry) for every entry of every replica's ``/debug/syncz``."""
        out = []
        for ref in self.istiod_refs():
            if ref.syncz_path is None:
                continue
            doc = self._load_json(ref.syncz_path, "istiod's syncz")
            if doc is _FAILED:
                continue
            if doc is None:
                continue  # Go's nil slice: no proxies
            if not isinstance(doc, list):
                self._problem(ref.syncz_path, "syncz is not a list")
                continue
            out.extend((ref.pod, entry) for entry in doc if isinstance(entry, dict))
        return out

    # --- logs ----------------------------------------------------------------------------------------------------

    def logs(self, component: str | None = None) -> list[LogFile]:
        """The collected log files (members), of one component (ztunnel | istiod | cni) or all, in path order."""
        out = []
        artifacts, names = self._index()
        for path in sorted(names):
            kind = layout.kind_of_path(path)
            comp = _LOG_KINDS.get(kind or "")
            if comp is None or (component is not None and comp != component):
                continue
            parts = path.split("/")
            file = parts[-1].removesuffix(".log")
            previous = file.endswith(".previous")
            container = file.removesuffix(".previous")
            source = artifacts[path].source if path in artifacts else {}
            if comp == "istiod":
                node, pod = "", parts[1]
            else:
                node, pod = parts[1], parts[2]
            namespace = source.get("namespace") if isinstance(source.get("namespace"), str) else ""
            out.append(LogFile(path=path, component=comp, namespace=namespace, pod=pod, container=container,
                               node=node, previous=previous))
        return out

    def log_records(self, log: LogFile | str) -> Iterator[LogRecordRef]:
        """The lines of a log, streamed: each with its 1-based number, its text (without the line break) and its
        parsed record (ztunnel or istio format), or ``record=None`` for a line that is not a record. Invalid UTF-8
        is replaced (U+FFFD) and reported once per file as a Problem."""
        path = log if isinstance(log, str) else log.path
        component = None if isinstance(log, str) else log.component
        if component is None:
            component = _LOG_KINDS.get(layout.kind_of_path(path) or "", "ztunnel")
        parse: Callable[[str], Any] = ztunnel_log.parse_line if component == "ztunnel" else istio_log.parse_line
        if not self._readable(path, "the log"):
            return
        try:
            fh = self.bundle.open(path)
        except BundleError as exc:
            self._problem(path, f"cannot read the log: {exc}", reason="unreadable")
            return
        bad_utf8 = False
        number = 0
        try:
            with fh:
                for raw in fh:
                    number += 1
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        text = raw.decode("utf-8", "replace")
                        if not bad_utf8:
                            bad_utf8 = True
                            self._problem(path, "invalid UTF-8 (replaced with U+FFFD); first at this line",
                                          reason="unreadable", line=number)
                    if text.endswith("\n"):
                        text = text[:-2] if text.endswith("\r\n") else text[:-1]
                    yield LogRecordRef(path, number, parse(text), text)
        except BundleError as exc:
            self._problem(path, f"the log could not be read to the end: {exc}", reason="unreadable",
                          line=number + 1)

    # --- validation ----------------------------------------------------------------------------------------------

    def validation_issues(self) -> Iterator[tuple[str, str, list[ValidationIssue]]]:
        """``(path, kind, issues)`` for every JSON artifact of the bundle, validated against its schema, in stored
        order (one pass, one member in memory); the same issues as ``validation.validate_bytes``, but each distinct
        workload/service/policy object is validated once per bundle. An artifact that is not JSON or is a <=1.21
        dump is not yielded but becomes a Problem; an empty issue list means valid."""

        def wanted(path: str) -> bool:
            return layout.kind_of_path(path) in layout.JSON_KINDS and path not in self._dump_issues

        try:
            paths = [path for path in self.bundle.names() if layout.kind_of_path(path) in layout.JSON_KINDS]
            if not any(path in self._dump_issues for path in paths):
                yield from self._validate_members(self.bundle.iter_members(wanted))
                return
            # dumps validated during the one pass are not read again; the others from the folder, in stored order
            for path in paths:
                if path in self._dump_issues:
                    yield path, layout.KIND_ZTUNNEL_CONFIG_DUMP, list(self._dump_issues[path])
                else:
                    yield from self._validate_members(iter([(path, self.bundle.read(path))]))
        except BundleError as exc:
            self._problem("", f"the bundle could not be read to the end: {exc}", reason="unreadable")

    def _validate_members(self, members: Iterator[tuple[str, bytes]]
                          ) -> Iterator[tuple[str, str, list[ValidationIssue]]]:
        for path, data in members:
            kind = kind_from_path(path)
            assert kind is not None
            digest = self._digest(path) if len(data) >= _VALIDATED_BY_DIGEST_FROM else None
            if digest is not None and (kind, digest) in self._validated:
                yield path, kind, list(self._validated[kind, digest])  # the same bytes: the same issues
                continue
            try:
                with _gc_paused(len(data)):
                    issues = self._validator.validate(parse_json(data), kind)
                if digest is not None:
                    self._validated[kind, digest] = list(issues)
            except UnsupportedFormatError as exc:
                self._problem(path, str(exc), reason="unsupported")
                continue
            except ArtifactError as exc:
                self._problem(path, f"{exc}{self._truncated_note(path)}")
                continue
            finally:
                del data
            yield path, kind, issues
