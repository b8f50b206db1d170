"""The plug-in API of ``bundle analyze``: what an analyzer declares, what it reads and what it reports.

An analyzer is a class with a :class:`Metadata` and one method, ``analyze(ctx) -> Iterable[Finding]``. It
reads the bundle only through ``ctx.model`` (a :class:`bundler.model.BundleModel`) and builds each finding
with :meth:`Context.finding`, which fills in the analyzer id and the default title and severity::

    class PortNames(Analyzer):
        metadata = Metadata(id="port-names", title="Service port has no protocol prefix", severity="info",
                            description="...", docs="https://...", inputs=(layout.KIND_K8S_LIST,))

        def analyze(self, ctx: Context) -> Iterable[Finding]:
            for svc in ...:
                yield ctx.finding("unnamed-port", f"port {port} has no name", resources=[Resource(...)])

The engine (:mod:`bundler.analysis.engine`) loads analyzers, skips those whose inputs are absent, turns a
crash into an ``internal-error`` finding, groups identical findings and gives each a stable id.
docs/writing-analyzers.md is the guide.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "SEVERITIES",
    "Analyzer",
    "Context",
    "Evidence",
    "Finding",
    "Metadata",
    "Resource",
    "artifact_resource",
    "severity_rank",
]

SEVERITIES: tuple[str, ...] = ("info", "warning", "error", "critical")

# Analyzer ids and finding codes: they are joined with "/" into finding ids and suppression patterns.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# RFC 6901, as schemas/findings.schema.json checks it
POINTER_PATTERN = re.compile(r"^(/([^~/]|~[01])*)*$")


def severity_rank(severity: str) -> int:
    """0 for info up to 3 for critical; ValueError for anything else."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, not {severity!r}") from None


def _check_id(value: object, what: str) -> None:
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise ValueError(f"{what} must match {ID_PATTERN.pattern} (letters, digits, '.', '_', '-'), got {value!r}")


@dataclass(frozen=True)
class Metadata:
    """What an analyzer is, read by the engine without running it.

    ``id`` is stable (it prefixes every finding id and is what ``--only``/``--skip``/suppressions name);
    ``severity`` is the default of its findings; ``inputs`` are artifact kinds of :mod:`bundler.layout`
    (``layout.KIND_ZTUNNEL_CONFIG_DUMP``, ...): when none of them is in the bundle, the analyzer is skipped.
    An empty ``inputs`` means "always run" (the analyzer reads only the manifest, or decides itself).
    """

    id: str
    title: str
    severity: str
    description: str
    docs: str
    inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_id(self.id, "Metadata.id")
        severity_rank(self.severity)
        if not isinstance(self.title, str) or not self.title.strip():
            raise ValueError(f"{self.id}: Metadata.title must be a non-empty string")
        if isinstance(self.inputs, str) or not all(isinstance(kind, str) and kind for kind in self.inputs):
            raise ValueError(f"{self.id}: Metadata.inputs must be a tuple of artifact kinds")
        object.__setattr__(self, "inputs", tuple(self.inputs))


@dataclass(frozen=True)
class Resource:
    """What a finding is about: a Kubernetes object (``kind``/``namespace``/``name``), optionally the node it
    runs on and the ztunnel pod whose view shows the problem. Non-Kubernetes subjects use their own kind
    (``Artifact`` with the bundle path as name, ``Analyzer``, ``Suppression``)."""

    kind: str
    name: str
    namespace: str | None = None
    node: str | None = None
    ztunnel: str | None = None

    def sort_key(self) -> tuple[str, str, str, str, str]:
        return (self.kind, self.namespace or "", self.name, self.node or "", self.ztunnel or "")

    def to_dict(self) -> dict[str, str]:
        out = {"kind": self.kind}
        if self.namespace is not None:
            out["namespace"] = self.namespace
        out["name"] = self.name
        if self.node is not None:
            out["node"] = self.node
        if self.ztunnel is not None:
            out["ztunnel"] = self.ztunnel
        return out

    def display(self) -> str:
        """``Pod bookinfo/ratings-v1 (node n1, ztunnel ztunnel-x)``."""
        text = f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"
        where = [f"node {self.node}"] if self.node else []
        if self.ztunnel and self.ztunnel != self.name:
            where.append(f"ztunnel {self.ztunnel}")
        return f"{text} ({', '.join(where)})" if where else text


@dataclass(frozen=True)
class Evidence:
    """Where in the bundle a finding can be checked: an artifact path (relative to the bundle root) plus a
    JSON pointer (RFC 6901, ``""`` is the whole document) or a 1-based inclusive line range, and an excerpt."""

    path: str
    pointer: str | None = None
    lines: tuple[int, int] | None = None
    excerpt: str | None = None

    def check(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ValueError("Evidence.path must be a non-empty bundle path")
        if self.pointer is not None and (not isinstance(self.pointer, str) or not POINTER_PATTERN.match(self.pointer)):
            raise ValueError(f"Evidence.pointer {self.pointer!r} is not an RFC 6901 JSON pointer ('' or '/a/0')")
        if self.lines is not None:
            start, end = self.lines
            if not (isinstance(start, int) and isinstance(end, int) and 1 <= start <= end):
                raise ValueError(f"Evidence.lines {self.lines!r} must be (start, end), 1-based, start <= end")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path}
        if self.pointer is not None:
            out["pointer"] = self.pointer
        if self.lines is not None:
            out["lines"] = [self.lines[0], self.lines[1]]
        if self.excerpt is not None:
            out["excerpt"] = self.excerpt
        return out

    def display(self) -> str:
        """``path#/pointer`` or ``path:10-12``."""
        if self.pointer:
            return f"{self.path}#{self.pointer}"
        if self.lines is not None:
            start, end = self.lines
            return f"{self.path}:{start}" if start == end else f"{self.path}:{start}-{end}"
        return self.path


@dataclass
class Finding:
    """One problem (or observation) found in a bundle.

    Analyzers create findings with :meth:`Context.finding`. The engine groups findings that share analyzer,
    code, severity and title into one (all resources, ``count`` = how many were grouped, at most
    ``MAX_EVIDENCE`` evidence items), then sets ``id`` (``<analyzer>/<code>/<hash of the resources>``,
    stable across runs) and ``docs`` (the analyzer's docs link). ``messages`` holds the distinct messages
    of a group when they differ (``message`` is the first).
    """

    analyzer: str
    code: str
    severity: str
    title: str
    message: str
    resources: list[Resource] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    remediation: str = ""
    references: list[str] = field(default_factory=list)
    count: int = 1
    id: str = ""
    # filled by the engine when grouping
    docs: str = ""
    messages: list[str] = field(default_factory=list)
    messages_omitted: int = 0
    evidence_omitted: int = 0

    def check(self) -> None:
        """Raise ValueError when a field would make an invalid findings document."""
        _check_id(self.analyzer, "Finding.analyzer")
        _check_id(self.code, "Finding.code")
        severity_rank(self.severity)
        for name in ("title", "message", "remediation"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"Finding.{name} must be a string")
        if not self.title:
            raise ValueError("Finding.title must not be empty")
        if not all(isinstance(r, Resource) for r in self.resources):
            raise ValueError("Finding.resources must hold Resource objects")
        for r in self.resources:
            if not (isinstance(r.kind, str) and r.kind and isinstance(r.name, str) and r.name):
                raise ValueError(f"Resource {r!r} needs a kind and a name")
        if not all(isinstance(e, Evidence) for e in self.evidence):
            raise ValueError("Finding.evidence must hold Evidence objects")
        for e in self.evidence:
            e.check()
        for ref in self.references:
            if not isinstance(ref, str) or not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", ref):
                raise ValueError(f"Finding.references must be URLs, got {ref!r}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"Finding.count must be a positive integer, got {self.count!r}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "analyzer": self.analyzer,
            "code": self.code,
            "severity": self.severity,
            "title": self.title,
            "message": self.message,
        }
        if self.messages:
            out["messages"] = list(self.messages)
        if self.messages_omitted:
            out["messagesOmitted"] = self.messages_omitted
        out["count"] = self.count
        out["resources"] = [r.to_dict() for r in self.resources]
        out["evidence"] = [e.to_dict() for e in self.evidence]
        if self.evidence_omitted:
            out["evidenceOmitted"] = self.evidence_omitted
        out["remediation"] = self.remediation
        out["references"] = list(self.references)
        if self.docs:
            out["docs"] = self.docs
        return out


class Context:
    """What an analyzer sees: the bundle's canonical model and two ways to report.

    * ``ctx.model``: the :class:`bundler.model.BundleModel` (manifest, Kubernetes objects, streamed ztunnel
      views, istiod views, logs, metrics). Analyzers never open files themselves.
    * ``ctx.finding(code, message, ...)``: a :class:`Finding` of this analyzer, to ``yield``.
    * ``ctx.view(name, data)``: data for the HTML report's tables (``ztunnels``, ``certificates``,
      ``loadBalancing``, ``drift``, ``gaps``; shapes in :mod:`bundler.report`). A list extends what other
      analyzers put under the same name, a dict is merged key by key; anything else replaces it.
    * ``ctx.has_input(kind)``: whether the bundle holds an artifact of that kind (status ok or truncated).
    """

    def __init__(self, model: Any, metadata: Metadata, present_kinds: Iterable[str] = ()) -> None:
        self.model = model
        self.metadata = metadata
        self._present = frozenset(present_kinds)
        self._views: dict[str, Any] = {}

    def finding(
        self,
        code: str,
        message: str,
        *,
        title: str | None = None,
        severity: str | None = None,
        resources: Iterable[Resource] = (),
        evidence: Iterable[Evidence] = (),
        remediation: str = "",
        references: Iterable[str] = (),
    ) -> Finding:
        """A finding of this analyzer; title and severity default to the analyzer's metadata."""
        if severity is not None:
            severity_rank(severity)
        return Finding(
            analyzer=self.metadata.id,
            code=code,
            severity=severity if severity is not None else self.metadata.severity,
            title=title if title is not None else self.metadata.title,
            message=message,
            resources=list(resources),
            evidence=list(evidence),
            remediation=remediation,
            references=list(references),
        )

    def view(self, name: str, data: Any) -> None:
        """Attach view data for the report (see the class docstring for how repeated names combine)."""
        if not isinstance(name, str) or not name:
            raise ValueError("a view name must be a non-empty string")
        self._views[name] = merge_view(self._views.get(name), data)

    def has_input(self, kind: str) -> bool:
        return kind in self._present

    @property
    def views(self) -> Mapping[str, Any]:
        """The views this analyzer attached (read by the engine)."""
        return self._views


def merge_view(old: Any, new: Any) -> Any:
    if isinstance(old, list) and isinstance(new, list):
        return old + new
    if isinstance(old, dict) and isinstance(new, dict):
        return {**old, **new}
    return list(new) if isinstance(new, tuple) else new


class Analyzer:
    """Base class of analyzers: set ``metadata`` and implement ``analyze``. One analyzer per file
    (``analyzers/<name>.py``), registered in the ``ztunnel_bundle.analyzers`` entry-point group under its id."""

    metadata: ClassVar[Metadata]

    def analyze(self, ctx: Context) -> Iterable[Finding]:
        raise NotImplementedError(f"{type(self).__name__}.analyze")


def artifact_resource(path: str, source: Mapping[str, Any] | None = None,
                      ztunnels: Mapping[str, tuple[str, str | None]] | None = None) -> Resource:
    """The resource an artifact is about, from its layout path: the ztunnel, istiod or istio-cni Pod for
    their files (namespace from the manifest entry's ``source`` when it says), else ``Artifact <path>``.
    ``ztunnels`` (pod -> (node, namespace)) completes a ztunnel named by istiod's per-proxy paths."""
    namespace = source.get("namespace") if source else None
    namespace = namespace if isinstance(namespace, str) and namespace else None
    parts = path.split("/")
    if parts[0] in ("ztunnel", "cni") and len(parts) >= 4:
        node, pod = parts[1], parts[2]
        return Resource("Pod", pod, namespace, node=node, ztunnel=pod if parts[0] == "ztunnel" else None)
    if parts[0] == "istiod" and len(parts) >= 4 and parts[1] == "proxies":
        pod = parts[2]
        # the source names the istiod replica asked, not the ztunnel: its node and namespace come from its files
        node, zt_namespace = (ztunnels or {}).get(pod, (None, None))
        return Resource("Pod", pod, zt_namespace, node=node, ztunnel=pod)
    if parts[0] == "istiod" and len(parts) >= 3:
        return Resource("Pod", parts[1], namespace)
    return Resource("Artifact", path)
