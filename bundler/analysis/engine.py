"""The analysis engine: load analyzers, run them on a bundle model, and make one deterministic report.

* **Loading.** Every entry point of the ``ztunnel_bundle.analyzers`` group (built-ins and plug-ins alike) is
  loaded and instantiated; one that fails to import, is not an analyzer, or whose name differs from its
  ``metadata.id`` becomes an ``internal-error`` finding under the entry point's name. Tests pass an
  explicit list instead (``run_analyzers(model, [MyAnalyzer()])``).
* **Running**, sorted by id. An analyzer whose declared ``inputs`` are all absent from the bundle (no
  artifact of those kinds with status ok or truncated) is skipped: not a finding, a note in the report's
  ``analyzers.skipped`` (collection-gaps already reports what is missing). A crash, or a malformed finding,
  becomes an ``internal-error`` finding (analyzer id, exception type and message, no traceback); the
  findings yielded before it are kept and the other analyzers run.
* **Suppressions** (:mod:`bundler.analysis.suppress`) are applied to each finding before grouping; an expired
  suppression suppresses nothing and is reported as a ``suppression-expired`` warning.
* **Grouping.** Findings with the same analyzer, code, severity and title become one: every resource
  (sorted, deduplicated), ``count`` = how many were grouped, the first ``MAX_EVIDENCE`` evidence items
  (``evidence_omitted`` says how many more), the distinct messages.
* **Ids and order.** A finding's id is ``<analyzer>/<code>/<12 hex of sha256 of its sorted resources>``, the
  same for the same input on every run. Findings are ordered by severity (critical first), analyzer, code,
  first resource and id.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any

from bundler import __version__
from bundler.analysis.api import SEVERITIES, Analyzer, Context, Finding, Metadata, Resource, merge_view, severity_rank
from bundler.analysis.suppress import Suppression, first_match
from bundler.manifest import STATUS_OK, STATUSES, STATUSES_WITH_MEMBER, TOOL_NAME, rfc3339

__all__ = [
    "ENTRY_POINT_GROUP",
    "AnalyzerRun",
    "LoadError",
    "Registry",
    "Report",
    "SuppressedFinding",
    "UnknownAnalyzerError",
    "group_findings",
    "load_analyzers",
    "run_analyzers",
]

ENTRY_POINT_GROUP = "ztunnel_bundle.analyzers"
FORMAT_VERSION = 1
MAX_EVIDENCE = 20
MAX_MESSAGES = 20
INTERNAL_ERROR = "internal-error"
SUPPRESSIONS_ID = "suppressions"  # the analyzer id of suppression-expired findings
_MAX_ERROR_TEXT = 300


class UnknownAnalyzerError(ValueError):
    """``only``/``skip`` name an analyzer that is not registered."""


@dataclass(frozen=True)
class LoadError:
    """An entry point that could not be turned into an analyzer."""

    id: str
    message: str


@dataclass
class Registry:
    analyzers: list[Analyzer]
    errors: list[LoadError]

    def ids(self) -> list[str]:
        return sorted({a.metadata.id for a in self.analyzers} | {e.id for e in self.errors})


@dataclass
class AnalyzerRun:
    """What happened to one analyzer: status ``ok``, ``crashed``, ``skipped`` or ``load-error``."""

    id: str
    status: str
    title: str = ""
    severity: str = ""
    docs: str = ""
    inputs: tuple[str, ...] = ()
    reason: str = ""
    findings: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "status": self.status}
        for key in ("title", "severity", "docs", "reason"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        out["inputs"] = list(self.inputs)
        if self.status in ("ok", "crashed"):
            out["findings"] = self.findings
        return out


@dataclass
class SuppressedFinding:
    finding: Finding
    suppression: Suppression

    def to_dict(self) -> dict[str, Any]:
        return {**self.finding.to_dict(), "suppression": self.suppression.to_dict()}


@dataclass
class Report:
    """The result of a run; :mod:`bundler.analysis.output` renders it as JSON, text or (via
    bundler.report.html) HTML."""

    bundle: dict[str, Any]
    analyzed_at: str
    findings: list[Finding]
    suppressed: list[SuppressedFinding] = field(default_factory=list)
    analyzers: list[AnalyzerRun] = field(default_factory=list)
    views: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        counts = {severity: 0 for severity in SEVERITIES}
        for finding in self.findings:
            counts[finding.severity] += 1
        counts["total"] = len(self.findings)
        return counts

    def worst(self) -> str | None:
        """The highest severity among the findings, or None when there are none."""
        return max((f.severity for f in self.findings), key=severity_rank, default=None)

    def has_at_or_above(self, severity: str) -> bool:
        threshold = severity_rank(severity)
        return any(severity_rank(f.severity) >= threshold for f in self.findings)

    def to_dict(self, *, views: bool = False) -> dict[str, Any]:
        """The findings document (schemas/findings.schema.json); ``views=True`` adds the report views."""
        out: dict[str, Any] = {
            "formatVersion": FORMAT_VERSION,
            "tool": {"name": TOOL_NAME, "version": __version__},
            "bundle": self.bundle,
            "analyzedAt": self.analyzed_at,
            "summary": self.summary(),
            "analyzers": {
                "run": [run.to_dict() for run in self.analyzers if run.status in ("ok", "crashed")],
                "skipped": [run.to_dict() for run in self.analyzers if run.status == "skipped"],
                "failed": [run.to_dict() for run in self.analyzers if run.status == "load-error"],
            },
            "findings": [finding.to_dict() for finding in self.findings],
            "suppressed": [item.to_dict() for item in self.suppressed],
        }
        if views:
            out["views"] = self.views
        return out


# --- loading ---------------------------------------------------------------------------------------------


def _one_line(text: str, limit: int = _MAX_ERROR_TEXT) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_exception(exc: BaseException) -> str:
    message = _one_line(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _instantiate(name: str, obj: Any) -> Analyzer:
    analyzer = obj() if isinstance(obj, type) else obj
    meta = getattr(analyzer, "metadata", None)
    if not isinstance(meta, Metadata) or not callable(getattr(analyzer, "analyze", None)):
        raise TypeError(f"{name}: not an analyzer (needs a Metadata 'metadata' and an analyze(ctx) method)")
    if meta.id != name:
        raise ValueError(f"entry point name {name!r} differs from the analyzer's metadata.id {meta.id!r}")
    return analyzer


def load_analyzers(group: str = ENTRY_POINT_GROUP) -> Registry:
    """Every analyzer registered in the entry-point ``group``, sorted by id, and the ones that failed.

    Entry points are read from the installed package metadata: after editing ``pyproject.toml``, run
    ``pip install -e .`` again.
    """
    analyzers: dict[str, Analyzer] = {}
    errors: dict[str, LoadError] = {}
    for ep in sorted(_entry_points(group), key=lambda e: (e.name, e.value)):
        if ep.name in analyzers or ep.name in errors:
            if ep.name in analyzers and ep.value == _target(analyzers[ep.name]):
                continue  # the same distribution seen twice on sys.path
            errors[ep.name] = LoadError(ep.name, f"analyzer id {ep.name!r} is registered more than once ({ep.value})")
            analyzers.pop(ep.name, None)
            continue
        try:
            analyzers[ep.name] = _instantiate(ep.name, ep.load())
        except Exception as exc:  # an analyzer that cannot load must not stop the others
            errors[ep.name] = LoadError(ep.name, f"cannot load {ep.value}: {_describe_exception(exc)}")
    return Registry([analyzers[k] for k in sorted(analyzers)], [errors[k] for k in sorted(errors)])


def _entry_points(group: str) -> Iterable[importlib_metadata.EntryPoint]:
    return importlib_metadata.entry_points(group=group)


def _target(analyzer: Analyzer) -> str:
    cls = type(analyzer)
    return f"{cls.__module__}:{cls.__qualname__}"


# --- running ---------------------------------------------------------------------------------------------


def present_kinds(manifest: Any) -> set[str]:
    """Artifact kinds the bundle holds data for (status ok or truncated)."""
    return {art.kind for art in manifest.artifacts if art.kind and art.status in STATUSES_WITH_MEMBER}


def bundle_identity(model: Any, source: str | None = None) -> dict[str, Any]:
    """The ``bundle`` object of the findings document: what was analyzed, from the manifest."""
    manifest = model.manifest
    bundle = getattr(model, "bundle", None)
    by_status = {status: 0 for status in STATUSES}
    for art in manifest.artifacts:
        by_status[art.status] = by_status.get(art.status, 0) + 1
    out: dict[str, Any] = {"root": str(source if source is not None else getattr(bundle, "source", "") or "")}
    name = getattr(bundle, "root", None)
    if isinstance(name, str) and name:
        out["name"] = name
    out.update({
        "createdAt": manifest.created_at or None,
        "formatVersion": manifest.format_version,
        "toolVersion": manifest.tool.version,
        "generator": manifest.generator,
        "cluster": manifest.cluster.to_dict(),
        "artifacts": {"total": len(manifest.artifacts), "ok": by_status.get(STATUS_OK, 0), "byStatus": by_status},
    })
    return out


def _internal_error(analyzer_id: str, message: str) -> Finding:
    return Finding(
        analyzer=analyzer_id,
        code=INTERNAL_ERROR,
        severity="error",
        title="analyzer failed",
        message=message,
        resources=[Resource("Analyzer", analyzer_id)],
        remediation=("The checks of this analyzer did not run (or ran partly): treat what it covers as unknown. "
                     "This is a bug in the analyzer or an input it does not expect; report it with the "
                     "output of 'bundle inspect -o json' for this bundle."),
    )


def _run_one(analyzer: Analyzer, model: Any, present: set[str]) -> tuple[AnalyzerRun, list[Finding], dict[str, Any]]:
    meta = analyzer.metadata
    run = AnalyzerRun(meta.id, "ok", meta.title, meta.severity, meta.docs, meta.inputs)
    if meta.inputs and not any(kind in present for kind in meta.inputs):
        run.status = "skipped"
        run.reason = f"none of its inputs is in the bundle ({', '.join(meta.inputs)})"
        return run, [], {}
    ctx = Context(model, meta, present)
    findings: list[Finding] = []
    try:
        produced = analyzer.analyze(ctx)
        for finding in produced if produced is not None else ():
            if not isinstance(finding, Finding):
                raise TypeError(f"analyze() yielded a {type(finding).__name__}, not a Finding")
            if finding.analyzer != meta.id:
                raise ValueError(f"a finding names analyzer {finding.analyzer!r}, not {meta.id!r}")
            try:
                finding.check()
            except ValueError as exc:
                raise ValueError(f"invalid finding {finding.code!r}: {exc}") from None
            findings.append(finding)
    except Exception as exc:  # a crash is a finding, never a lost check (style.md: troubleshoot's mistake)
        run.status = "crashed"
        run.reason = _describe_exception(exc)
        partial = f"; the {len(findings)} finding(s) it reported before are kept" if findings else ""
        findings.append(_internal_error(meta.id, f"analyzer {meta.id} failed: {run.reason}{partial}"))
        run.findings = len(findings)
        return run, findings, {}
    run.findings = len(findings)
    return run, findings, dict(ctx.views)


def _check_unique(analyzers: Sequence[Analyzer]) -> None:
    seen: set[str] = set()
    for analyzer in analyzers:
        meta = getattr(analyzer, "metadata", None)
        if not isinstance(meta, Metadata):
            raise TypeError(f"{analyzer!r} has no Metadata")
        if meta.id in seen:
            raise ValueError(f"analyzer id {meta.id!r} given twice")
        seen.add(meta.id)


def run_analyzers(
    model: Any,
    analyzers: Iterable[Analyzer] | None = None,
    *,
    only: Iterable[str] = (),
    skip: Iterable[str] = (),
    suppressions: Iterable[Suppression] = (),
    source: str | None = None,
    now: dt.datetime | None = None,
) -> Report:
    """Run ``analyzers`` (default: every registered one) on ``model`` and return the report.

    ``only``/``skip`` select by id (UnknownAnalyzerError for an id that is not registered); ``source`` is the
    path shown as the bundle's root; ``now`` (UTC) is the analysis time, which also decides which
    suppressions have expired.
    """
    if analyzers is None:
        registry = load_analyzers()
    else:
        listed = list(analyzers)
        _check_unique(listed)
        registry = Registry(sorted(listed, key=lambda a: a.metadata.id), [])
    only, skip = set(only), set(skip)
    unknown = sorted((only | skip) - set(registry.ids()))
    if unknown:
        raise UnknownAnalyzerError(
            f"unknown analyzer id(s): {', '.join(unknown)} (known: {', '.join(registry.ids()) or 'none'})")

    def selected(analyzer_id: str) -> bool:
        return (not only or analyzer_id in only) and analyzer_id not in skip

    now = now or dt.datetime.now(dt.timezone.utc)
    present = present_kinds(model.manifest)
    runs: list[AnalyzerRun] = []
    raw: list[Finding] = []
    views: dict[str, Any] = {}
    for analyzer in registry.analyzers:
        if not selected(analyzer.metadata.id):
            continue
        run, findings, attached = _run_one(analyzer, model, present)
        runs.append(run)
        raw.extend(findings)
        for name, data in attached.items():
            views[name] = merge_view(views.get(name), data)
    for error in registry.errors:
        if selected(error.id):
            runs.append(AnalyzerRun(error.id, "load-error", reason=error.message))
            raw.append(_internal_error(error.id, f"analyzer {error.id} {error.message}"))
    runs.sort(key=lambda r: r.id)

    today = now.astimezone(dt.timezone.utc).date()
    active: list[Suppression] = []
    for suppression in suppressions:
        if suppression.expired(today):
            raw.append(_expired(suppression))
        else:
            active.append(suppression)
    kept: list[Finding] = []
    hidden: dict[int, list[Finding]] = defaultdict(list)
    for finding in raw:
        match = None if finding.analyzer == SUPPRESSIONS_ID else first_match(active, finding)
        if match is None:
            kept.append(finding)
        else:
            hidden[active.index(match)].append(finding)
    docs = {a.metadata.id: a.metadata.docs for a in registry.analyzers}
    suppressed = [
        SuppressedFinding(finding, active[index])
        for index in sorted(hidden)
        for finding in group_findings(hidden[index], docs)
    ]
    suppressed.sort(key=lambda s: _order_key(s.finding))
    return Report(
        bundle=bundle_identity(model, source),
        analyzed_at=rfc3339(now),
        findings=group_findings(kept, docs),
        suppressed=suppressed,
        analyzers=runs,
        views=views,
    )


def _expired(suppression: Suppression) -> Finding:
    target = f" on {suppression.resource!r}" if suppression.resource else ""
    assert suppression.expires is not None
    return Finding(
        analyzer=SUPPRESSIONS_ID,
        code="suppression-expired",
        severity="warning",
        title="suppression expired",
        message=(f"the suppression of {suppression.id!r}{target} ({suppression.where}) expired on "
                 f"{suppression.expires.isoformat()}: the findings it matched are reported again "
                 f"(reason given: {_one_line(suppression.reason, 200)})"),
        resources=[Resource("Suppression", suppression.id if not suppression.resource
                            else f"{suppression.id} {suppression.resource}")],
        remediation="Fix what the suppression hid, or renew its expires date if it is still accepted.",
    )


# --- grouping, ids and order -----------------------------------------------------------------------------


def _raw_key(finding: Finding) -> tuple[Any, ...]:
    return (
        tuple(r.sort_key() for r in sorted(finding.resources, key=Resource.sort_key)),
        finding.message,
        tuple((e.path, e.pointer or "", e.lines or (0, 0)) for e in finding.evidence),
    )


def _unique(items: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def _hash_resources(resources: Sequence[Resource]) -> str:
    payload = json.dumps([r.to_dict() for r in resources], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


def _order_key(finding: Finding) -> tuple[Any, ...]:
    first = finding.resources[0].sort_key() if finding.resources else ("",) * 5
    return (-severity_rank(finding.severity), finding.analyzer, finding.code, first, finding.id)


def group_findings(findings: Iterable[Finding], docs: dict[str, str] | None = None) -> list[Finding]:
    """Group, give stable ids and sort (see the module docstring)."""
    groups: dict[tuple[str, str, str, str], list[Finding]] = defaultdict(list)
    for finding in findings:
        groups[(finding.analyzer, finding.code, finding.severity, finding.title)].append(finding)
    out: list[Finding] = []
    for (analyzer, code, severity, title), members in groups.items():
        members.sort(key=_raw_key)
        resources = sorted(set(r for m in members for r in m.resources), key=Resource.sort_key)
        evidence = _unique(e for m in members for e in m.evidence)
        messages = _unique(m.message for m in members)
        out.append(Finding(
            analyzer=analyzer,
            code=code,
            severity=severity,
            title=title,
            message=messages[0],
            resources=resources,
            evidence=evidence[:MAX_EVIDENCE],
            remediation=next((m.remediation for m in members if m.remediation), ""),
            references=_unique(ref for m in members for ref in m.references),
            count=sum(m.count for m in members),
            docs=(docs or {}).get(analyzer, ""),
            messages=messages[:MAX_MESSAGES] if len(messages) > 1 else [],
            messages_omitted=max(0, len(messages) - MAX_MESSAGES),
            evidence_omitted=max(0, len(evidence) - MAX_EVIDENCE),
        ))
    # stable ids: a hash of the resources; the rare groups that share one are told apart by their order
    by_base: dict[str, list[Finding]] = defaultdict(list)
    for finding in out:
        by_base[f"{finding.analyzer}/{finding.code}/{_hash_resources(finding.resources)}"].append(finding)
    for base, same in by_base.items():
        same.sort(key=lambda f: (-severity_rank(f.severity), f.title))
        for i, finding in enumerate(same):
            finding.id = base if i == 0 else f"{base}-{i + 1}"
    out.sort(key=_order_key)
    return out
