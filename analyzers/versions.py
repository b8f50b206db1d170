"""versions: istiod / ztunnel / istio-cni version skew (failure-modes.md R23).

Istio's rule for ambient: a ztunnel of 1.x works with a control plane of 1.x and 1.x+1 (upgrade the control plane
first); a ztunnel newer than istiod, or two minors behind it, is unsupported. istio-cni and ztunnel are upgraded
together (istio-cni first) and should run the same minor on a node. Patch-level differences are fine.

Versions come from every source the bundle has and the first that answers wins: istiod's ``/version`` (then its
image tag); each ztunnel's config dump ``version.istioVersion``, then its ``istio_build{tag}`` metric, then its image;
istio-cni's pod image on the node, then the ``istio-cni-config`` ConfigMap's ``CURRENT_AGENT_VERSION``. A ztunnel
fleet on mixed versions (a partial rollout) is a warning.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from analyzers.logs import labels, meta, pod_node
from bundler import layout
from bundler.analysis import Analyzer, Context, Evidence, Finding, Metadata, Resource
from bundler.analysis.dig import dig, dig_list
from bundler.formats import openmetrics

_VERSION_RE = re.compile(r"(?<![\w.])(\d+)\.(\d+)(?:\.(\d+))?")
_REFS = ("https://istio.io/latest/docs/ambient/upgrade/helm/", "https://github.com/istio/istio/issues/58523",
         "https://github.com/istio/ztunnel/issues/1360")
_ORDER = ("Upgrade in this order: istiod, then istio-cni, then ztunnel (node by node, draining each node); keep "
          "ztunnel at most one minor behind istiod and never ahead of it.")


@dataclass(frozen=True)
class Seen:
    """A component's version and where it was read."""

    text: str
    version: tuple[int, int, int]
    evidence: Evidence

    @property
    def minor(self) -> tuple[int, int]:
        return self.version[:2]


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    """``1.24.3``, ``1.24.3-abc-Clean``, ``1.24-dev``, ``1.24.3-distroless`` -> (1, 24, 3); None if no version."""
    if not text:
        return None
    m = _VERSION_RE.search(text)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def image_tag(image: str | None) -> str | None:
    """The tag of an image reference (``docker.io/istio/ztunnel:1.24.3-distroless`` -> ``1.24.3-distroless``)."""
    if not image:
        return None
    name = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return name.split(":", 1)[1] if ":" in name else None


def _fmt(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


class Versions(Analyzer):
    metadata = Metadata(
        id="versions",
        title="istiod, ztunnel and istio-cni versions outside the supported skew",
        severity="error",
        description=("Reads the versions of istiod (/version, image), every ztunnel (config dump istioVersion, "
                     "istio_build metric, image) and istio-cni (image, CURRENT_AGENT_VERSION) and reports a ztunnel "
                     "newer than istiod or more than one minor behind it, istio-cni and ztunnel on different "
                     "minors on a node, and a ztunnel fleet on mixed versions."),
        docs="https://istio.io/latest/docs/ambient/upgrade/helm/",
        inputs=(layout.KIND_ZTUNNEL_CONFIG_DUMP, layout.KIND_ISTIOD_VERSION, layout.KIND_K8S_LIST),
    )

    def analyze(self, ctx: Context) -> Iterable[Finding]:
        model = ctx.model
        istiods = _istiod_versions(model)
        ztunnels = _ztunnel_versions(model)  # (node, pod, namespace) -> Seen
        cnis = _cni_versions(model)  # node -> Seen ("" for the cluster-wide ConfigMap)

        if istiods:
            by_minor = defaultdict(list)
            for pod, seen in istiods.items():
                by_minor[seen.minor].append(pod)
            if len(by_minor) > 1:
                revisions = {labels(model.pod(ns, pod)).get("istio.io/rev") for (pod, ns) in
                             ((p, _namespace_of(model, p)) for p in istiods)}
                canary = len(revisions) > 1
                yield ctx.finding(
                    "istiod-versions-mixed",
                    "istiod replicas run different minors: " + "; ".join(
                        f"{_fmt(m)} on {', '.join(sorted(pods))}" for m, pods in sorted(by_minor.items()))
                    + (" (different istio.io/rev revisions: a canary upgrade)" if canary else ""),
                    title="istiod replicas on different versions", severity="info" if canary else "warning",
                    resources=[Resource("Pod", p, _namespace_of(model, p) or None) for p in sorted(istiods)],
                    evidence=[s.evidence for s in istiods.values()], remediation=_ORDER, references=_REFS,
                )
        control = max(istiods.values(), key=lambda s: s.version) if istiods else None

        for (node, pod, ns), seen in sorted(ztunnels.items()):
            resource = Resource("Pod", pod, ns or None, node=node, ztunnel=pod)
            if control is None or seen.version[0] != control.version[0]:
                continue
            behind = control.version[1] - seen.version[1]
            if behind < 0:
                yield ctx.finding(
                    "ztunnel-newer-than-istiod",
                    f"ztunnel {pod} on node {node} runs {seen.text}, newer than istiod ({control.text}): ztunnel may "
                    "only run the control plane's minor or one minor behind it",
                    title="ztunnel newer than istiod", resources=[resource],
                    evidence=[seen.evidence, control.evidence], remediation=_ORDER, references=_REFS,
                )
            elif behind > 1:
                yield ctx.finding(
                    "ztunnel-skew-unsupported",
                    f"ztunnel {pod} on node {node} runs {seen.text}, {behind} minors behind istiod ({control.text}): "
                    "only one minor of skew is supported",
                    title="ztunnel too far behind istiod", resources=[resource],
                    evidence=[seen.evidence, control.evidence], remediation=_ORDER, references=_REFS,
                )

        fleet: dict[tuple[int, int, int], list[tuple[str, str, str]]] = defaultdict(list)
        for key, seen in ztunnels.items():
            fleet[seen.version].append(key)
        if len(fleet) > 1:
            minors = {v[:2] for v in fleet}
            majority = max(fleet, key=lambda v: (len(fleet[v]), v))
            others = sorted(key for v, keys in fleet.items() if v != majority for key in keys)
            split = "; ".join(f"{_fmt(v)} on {len(keys)} node(s) ({', '.join(sorted(k[0] for k in keys)[:5])}"
                              f"{', ...' if len(keys) > 5 else ''})" for v, keys in sorted(fleet.items()))
            yield ctx.finding(
                "ztunnel-versions-mixed" if len(minors) > 1 else "ztunnel-patch-versions-mixed",
                f"ztunnels run {len(fleet)} versions: {split}: a partial rollout or an interrupted upgrade",
                title="ztunnels on mixed versions" if len(minors) > 1 else "ztunnels on mixed patch versions",
                severity="warning" if len(minors) > 1 else "info",
                resources=[Resource("Pod", pod, ns or None, node=node, ztunnel=pod) for node, pod, ns in others],
                evidence=[ztunnels[k].evidence for k in others[:10]],
                remediation="Finish the ztunnel rollout so that every node runs the same version.", references=_REFS,
            )

        for (node, pod, ns), seen in sorted(ztunnels.items()):
            cni = cnis.get(node) or cnis.get("")
            if cni is None or cni.minor == seen.minor:
                continue
            order = ("istio-cni was upgraded before ztunnel: finish the ztunnel upgrade on this node"
                     if cni.version > seen.version else
                     "ztunnel was upgraded before istio-cni (the wrong order)")
            yield ctx.finding(
                "cni-ztunnel-mismatch",
                f"on node {node}, istio-cni runs {cni.text} and ztunnel {pod} runs {seen.text}: {order}; pods "
                "enrolled during the skew may lose connectivity until both match",
                title="istio-cni and ztunnel on different minors", severity="warning",
                resources=[Resource("Pod", pod, ns or None, node=node, ztunnel=pod)],
                evidence=[seen.evidence, cni.evidence], remediation=_ORDER, references=_REFS,
            )

        if control is not None:
            for node, cni in sorted(cnis.items()):
                if cni.version[0] != control.version[0]:
                    continue
                behind = control.version[1] - cni.version[1]
                if behind < 0 or behind > 1:
                    where = f"on node {node}" if node else "(istio-cni-config CURRENT_AGENT_VERSION)"
                    yield ctx.finding(
                        "cni-skew-unsupported",
                        f"istio-cni {where} runs {cni.text}, "
                        f"{'newer than' if behind < 0 else f'{behind} minors behind'} istiod ({control.text})",
                        title="istio-cni outside the supported skew with istiod",
                        resources=[Resource("Node", node)] if node else [Resource("ConfigMap", "istio-cni-config")],
                        evidence=[cni.evidence, control.evidence], remediation=_ORDER, references=_REFS,
                    )


def _namespace_of(model: Any, pod: str) -> str:
    ref = next((r for r in model.istiod_refs() if r.pod == pod), None)
    return ref.namespace if ref is not None else ""


def _istiod_versions(model: Any) -> dict[str, Seen]:
    out: dict[str, Seen] = {}
    for ref in model.istiod_refs():
        version = parse_version(ref.version)
        if version is not None and ref.version_path:
            out[ref.pod] = Seen(_fmt(version), version, Evidence(ref.version_path, excerpt=ref.version))
    if out:
        return out
    pods_path = layout.k8s_list("pods")
    for i, pod in enumerate(model.pods()):
        if labels(pod).get("app") != "istiod":
            continue
        tag = image_tag(_image(pod, "discovery"))
        version = parse_version(tag)
        if version is not None:
            out[str(meta(pod).get("name"))] = Seen(_fmt(version), version,
                                                   Evidence(pods_path, pointer=f"/items/{i}/spec", excerpt=tag))
    return out


def _ztunnel_versions(model: Any) -> dict[tuple[str, str, str], Seen]:
    out: dict[tuple[str, str, str], Seen] = {}
    from_dumps = {}
    for view in model.ztunnels():
        version = parse_version(view.istio_version)
        if version is not None:
            from_dumps[view.pod] = Seen(_fmt(version), version, Evidence(view.path, pointer="/version/istioVersion",
                                                                         excerpt=view.istio_version))
    for ref in model.ztunnel_refs():
        seen = from_dumps.get(ref.pod) or _from_metrics(model, ref) or _from_pod(model, ref)
        if seen is not None:
            out[(ref.node, ref.pod, ref.namespace)] = seen
    return out


def _from_metrics(model: Any, ref: Any) -> Seen | None:
    if ref.metrics_path is None:
        return None
    for labels_, _ in openmetrics.samples(model.metrics(ref.node), "istio_build"):
        if labels_.get("component") == "ztunnel":
            version = parse_version(labels_.get("tag"))
            if version is not None:
                return Seen(_fmt(version), version, Evidence(
                    ref.metrics_path, excerpt=f'istio_build{{component="ztunnel",tag="{labels_.get("tag")}"}} 1'))
    return None


def _from_pod(model: Any, ref: Any) -> Seen | None:
    pod = model.pod(ref.namespace, ref.pod)
    tag = image_tag(_image(pod, "istio-proxy"))
    version = parse_version(tag)
    if version is None:
        return None
    path = ref.pod_json_path or layout.k8s_list("pods")
    return Seen(_fmt(version), version, Evidence(path, excerpt=_image(pod, "istio-proxy")))


def _cni_versions(model: Any) -> dict[str, Seen]:
    out: dict[str, Seen] = {}
    pods_path = layout.k8s_list("pods")
    for i, pod in enumerate(model.pods()):
        if labels(pod).get("k8s-app") != "istio-cni-node" and labels(pod).get("app") != "istio-cni-node":
            continue
        image = _image(pod, "install-cni")
        version = parse_version(image_tag(image))
        if version is not None and pod_node(pod):
            out[pod_node(pod)] = Seen(_fmt(version), version,
                                      Evidence(pods_path, pointer=f"/items/{i}/spec/containers", excerpt=image))
    if out:
        return out
    cms_path = layout.k8s_list("configmaps")
    for i, cm in enumerate(model.k8s("configmaps")):
        if meta(cm).get("name") != "istio-cni-config":
            continue
        text = dig(cm, "data", "CURRENT_AGENT_VERSION")
        version = parse_version(text)
        if version is not None:
            out[""] = Seen(_fmt(version), version,
                           Evidence(cms_path, pointer=f"/items/{i}/data/CURRENT_AGENT_VERSION", excerpt=text))
    return out


def _image(pod: dict[str, Any] | None, container: str) -> str | None:
    containers = dig_list(pod, "spec", "containers")
    for c in containers:
        if isinstance(c, dict) and c.get("name") == container:
            return c.get("image")
    return containers[0].get("image") if containers and isinstance(containers[0], dict) else None
