"""collection-gaps: every artifact the manifest records as error, skipped or truncated, and what it hides.

A missing or truncated artifact means "unknown", never "fine" (docs/archive-format.md): this analyzer says
which checks cannot be trusted for which pods. It reads only the manifest, so it always runs. A skipped
``.previous.log`` is normal (the container never restarted) and is not reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from bundler import layout
from bundler.analysis import Analyzer, Context, Evidence, Finding, Metadata, Resource, artifact_resource
from bundler.manifest import STATUS_ERROR, STATUS_OK, STATUS_SKIPPED, STATUS_TRUNCATED, Artifact

DOCS = "docs/writing-analyzers.md#collection-gaps"


@dataclass(frozen=True)
class Gap:
    """How one kind of gap is reported: code, severity, title and what it hides."""

    code: str
    severity: str
    title: str
    hides: str


_DUMP = Gap("ztunnel-config-dump-missing", "warning", "ztunnel config dumps not collected",
            "The config dumps of these ztunnels were not collected: their workload, service, certificate and "
            "policy checks are unknown, not fine.")
_PROXY_VIEW = Gap("istiod-proxy-view-missing", "warning", "istiod's per-proxy views not collected",
                  "istiod's view of these ztunnels was not collected: their comparison with istiod is unknown.")
_ISTIOD = Gap("istiod-view-missing", "warning", "istiod debug views not collected",
              "The debug views of these istiod replicas were not collected: their state (ambientz), xDS sync "
              "status (syncz) or version is unknown.")
_KUBE = Gap("kubernetes-state-missing", "warning", "Kubernetes objects not collected",
            "These Kubernetes objects were not collected: the checks against them are unknown, not fine.")
_MISSING = {
    layout.KIND_ZTUNNEL_CONFIG_DUMP: _DUMP,
    layout.KIND_ISTIOD_CONFIG_DUMP: _PROXY_VIEW,
    layout.KIND_ISTIOD_WADS: _PROXY_VIEW,
    layout.KIND_ISTIOD_AMBIENTZ: _ISTIOD,
    layout.KIND_ISTIOD_SYNCZ: _ISTIOD,
    layout.KIND_ISTIOD_VERSION: _ISTIOD,
    layout.KIND_K8S_LIST: _KUBE,
    layout.KIND_K8S_VERSION: _KUBE,
    layout.KIND_K8S_OBJECT: _KUBE,
    layout.KIND_ZTUNNEL_METRICS: Gap(
        "metrics-missing", "info", "ztunnel metrics not collected",
        "The metrics of these ztunnels were not collected: metric-based checks (traffic, denials, load "
        "balancing) are unknown for them."),
}
_LOGS_MISSING = Gap("logs-missing", "info", "logs not collected",
                    "The logs of these pods were not collected: log-based checks are unknown for them.")
_OTHER_MISSING = Gap("artifacts-missing", "info", "artifacts not collected",
                     "These artifacts were not collected: the checks that read them are unknown.")
_NO_XDS = Gap("istiod-proxy-view-404", "warning", "no istiod replica knows these ztunnels",
              "Every istiod replica answered 404 for these ztunnels: they had no xDS stream to istiod when the "
              "bundle was collected (a ztunnel keeps serving the config it last received), and their comparison "
              "with istiod is unknown.")
_DUMP_TRUNCATED = Gap("ztunnel-config-dump-truncated", "warning", "ztunnel config dumps truncated",
                      "The config dumps of these ztunnels were cut, and a cut JSON document cannot be read: their "
                      "workload, certificate and policy checks are unknown.")
_LOGS_TRUNCATED = Gap("logs-truncated", "info", "logs truncated",
                      "The logs of these pods were truncated (the size budget or a limit dropped lines): log-based "
                      "checks see a partial window.")
_OTHER_TRUNCATED = Gap("artifacts-truncated", "info", "artifacts truncated",
                       "These artifacts were truncated: the checks that read them see partial data.")

_LOG_KINDS = frozenset({layout.KIND_ZTUNNEL_LOG, layout.KIND_ISTIOD_LOG, layout.KIND_CNI_LOG})


def _is_404(artifact: Artifact) -> bool:
    reason = (artifact.reason or "").lower()
    return "404" in reason or "not connected" in reason or "not found" in reason


def _gap(artifact: Artifact, no_xds: set[str]) -> Gap | None:
    kind = artifact.kind or layout.kind_of_path(artifact.path) or ""
    if artifact.status == STATUS_TRUNCATED:
        if kind == layout.KIND_ZTUNNEL_CONFIG_DUMP:
            return _DUMP_TRUNCATED
        return _LOGS_TRUNCATED if kind in _LOG_KINDS else _OTHER_TRUNCATED
    if kind in _LOG_KINDS:
        normal = artifact.status == STATUS_SKIPPED and artifact.path.endswith(".previous.log")
        return None if normal else _LOGS_MISSING
    if kind in (layout.KIND_ISTIOD_CONFIG_DUMP, layout.KIND_ISTIOD_WADS):
        if artifact.path.split("/")[2] in no_xds:
            return _NO_XDS
    return _MISSING.get(kind, _OTHER_MISSING)


def _ztunnels_without_stream(artifacts: Iterable[Artifact]) -> set[str]:
    """ztunnel pods for which every per-proxy view is an error that reads like a 404 from istiod."""
    views: dict[str, list[Artifact]] = {}
    for art in artifacts:
        if art.kind in (layout.KIND_ISTIOD_CONFIG_DUMP, layout.KIND_ISTIOD_WADS):
            parts = art.path.split("/")
            if len(parts) == 4:
                views.setdefault(parts[2], []).append(art)
    return {pod for pod, arts in views.items()
            if all(a.status == STATUS_ERROR and _is_404(a) for a in arts)}


class CollectionGaps(Analyzer):
    metadata = Metadata(
        id="collection-gaps",
        title="artifacts not collected or truncated",
        severity="warning",
        description=("Lists every artifact the manifest records as error, skipped or truncated, grouped by kind, "
                     "and says which checks that makes unknown."),
        docs=DOCS,
        inputs=(),  # the manifest only
    )

    def analyze(self, ctx: Context) -> Iterator[Finding]:
        artifacts = ctx.model.manifest.artifacts
        # ztunnel pod -> (node, namespace), to name the ztunnel of istiod's per-proxy paths fully
        ztunnels = {ref.pod: (ref.node, ref.namespace or None) for ref in ctx.model.ztunnel_refs()}
        no_xds = _ztunnels_without_stream(artifacts)
        gaps = []
        # one finding per gap and resource, with an evidence item (the manifest entry) per artifact
        found: dict[tuple[Gap, Resource], list[Evidence]] = {}
        for index, art in enumerate(artifacts):
            if art.status == STATUS_OK:
                continue
            gap = _gap(art, no_xds)
            if gap is None:
                continue
            reason = art.reason or "no reason recorded"
            gaps.append({"path": art.path, "kind": art.kind or "", "status": art.status, "reason": reason,
                         "code": gap.code, "severity": gap.severity})
            resource = artifact_resource(art.path, art.source, ztunnels)
            found.setdefault((gap, resource), []).append(
                Evidence(layout.MANIFEST, f"/artifacts/{index}", excerpt=f"{art.path}: {art.status}: {reason}"))
        for (gap, resource), evidence in found.items():
            yield ctx.finding(gap.code, gap.hides, title=gap.title, severity=gap.severity, resources=[resource],
                              evidence=evidence, remediation=_remediation(gap))
        ctx.view("gaps", gaps)


def _remediation(gap: Gap) -> str:
    if gap == _NO_XDS:
        return ("Check the ztunnel's log for 'XDS client connection error' and its connectivity to istiod "
                "(port 15012); 'bundle collect' again once it reconnects.")
    if gap in (_LOGS_TRUNCATED, _OTHER_TRUNCATED, _DUMP_TRUNCATED):
        return "Collect again with a larger size budget or a narrower scope (--namespace, --node, --since)."
    return ("The manifest's reason says why it was not collected (RBAC, timeout, pod not running); fix that "
            "and collect again, or read the affected checks as unknown.")
