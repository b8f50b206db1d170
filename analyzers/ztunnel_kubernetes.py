"""ztunnel-kubernetes (R06, R08, R10, R18): each ztunnel's workloads against the Kubernetes pods.

Pods come from ``cluster/pods.json``; "ambient-expected" is istio-cni's default enablement predicate
(failure-modes.md 0.6) with the ``EXCLUDED_NAMESPACES`` of the ``istio-cni-config`` ConfigMap (default
``kube-system``). Pods without an IP, finished pods and terminating pods are left out (istiod does not send the
first two and keeps the last as Unhealthy). What does not depend on a ztunnel's own node is worked out once
per distinct workload set.

Per ztunnel, for every pod:
  * ``missing-workload``: a pod with an IP has no workload (uid ``<cluster>//Pod/<ns>/<name>``) in this ztunnel.
    Critical when the pod is ambient-expected and on this ztunnel's node (R08), error for other ambient pods,
    info for pods outside the mesh (traffic to them is plain TCP anyway) and for pods created within a minute of
    the collection. On-demand ztunnels (``xdsOnDemand``) are only checked for their own node's pods.
  * ``protocol-mismatch``: the workload's protocol contradicts the pod's redirection annotation (``enabled`` but
    TCP: peers send it plaintext; HBONE without ``enabled``: peers send HBONE to a pod nobody captures, R10).
  * ``ip-mismatch`` / ``node-mismatch``: the workload's IPs or node differ from the pod's (stale, IP reuse).
For the ztunnel's own node:
  * ``pod-not-enrolled`` (R06): an ambient-expected pod whose ``ambient.istio.io/redirection`` annotation is
    ``pending`` or absent; the evidence adds its protocol in the ztunnel and its absence from workloadState.
    Reported once per pod (also when its node's ztunnel dump is missing).
  * ``enrolled-without-proxy`` (R10): annotation ``enabled`` but no ``workloadState`` entry for the pod's UID, or
    one stuck in ``Pending``.
Across the ztunnel's workloads:
  * ``stale-workload`` (R18): a workload of this cluster's pod (uid ``<cluster>//Pod/<ns>/<name>``) whose pod
    does not exist, or has finished.
  * ``duplicate-ip`` (R18): one IP claimed by two workloads in one ztunnel (host-network workloads share their
    node's IP and are left out).

Findings about one pod seen the same way by several ztunnels (stale, mismatches, duplicate IPs) are reported
once, naming the ztunnels; a single ztunnel is named in the resource.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml

from analyzers.ztunnel_istiod_drift import collection_time, dump_time, map_shape_ips, parse_time, workload_resource
from bundler import layout
from bundler.analysis import Analyzer, Context, Evidence, Finding, Metadata, Resource

DOCS = "https://istio.io/latest/docs/ambient/usage/troubleshoot-ztunnel/"
PODS_PATH = layout.k8s_list("pods")
REDIRECTION = "ambient.istio.io/redirection"
DATAPLANE_MODE = "istio.io/dataplane-mode"
SIDECAR_STATUS = "sidecar.istio.io/status"
TUNNEL_LABEL = "networking.istio.io/tunnel"
YOUNG_SECONDS = 60
MAX_ZTUNNELS_NAMED = 5

R06 = ("https://istio.io/latest/docs/ambient/architecture/traffic-redirection/",
       "https://github.com/istio/istio/issues/54630", "https://github.com/istio/istio/issues/61717")
R08 = ("https://github.com/istio/istio/issues/54889", "https://github.com/istio/istio/issues/57674",
       "https://github.com/istio/istio/issues/54969")
R10 = ("https://github.com/istio/istio/issues/61182", "https://github.com/istio/istio/issues/57285",
       "https://github.com/istio/istio/issues/60882")
R18 = ("https://github.com/istio/istio/issues/61249", "https://github.com/istio/ztunnel/issues/1637",
       "https://github.com/istio/istio/issues/58514", "https://github.com/istio/istio/issues/54338")

TITLES = {
    "missing-workload": "ztunnel has no workload for a running pod",
    "protocol-mismatch": "workload protocol contradicts the pod's enrolment",
    "ip-mismatch": "workload IPs differ from the pod's",
    "node-mismatch": "workload node differs from the pod's",
    "pod-not-enrolled": "ambient pod not enrolled by istio-cni",
    "enrolled-without-proxy": "enrolled pod has no in-pod proxy in its node's ztunnel",
    "stale-workload": "ztunnel holds the workload of a deleted pod",
    "duplicate-ip": "one IP claimed by two workloads",
}
REMEDIATION = {
    "missing-workload": ("Check the ztunnel's xDS stream and istiod's push health (xds, ztunnel-istiod-drift); "
                         "check discoverySelectors; restart the ztunnel if it stays out of sync."),
    "protocol-mismatch": ("Compare with istiod's view (ztunnel-istiod-drift): if istiod agrees with the pod, the "
                          "ztunnel is out of sync (restart it); otherwise restart the pod so that istio-cni "
                          "re-enrols it."),
    "ip-mismatch": "The ztunnel holds an old IP of the pod (IP reuse risk): check its xDS stream, restart it.",
    "node-mismatch": "The ztunnel holds an old placement of the pod: check its xDS stream, restart it.",
    "pod-not-enrolled": ("Check the pod's and namespace's istio.io/dataplane-mode labels and the istio-cni agent on "
                         "the pod's node (its log: 'pod partially added', 'no ztunnel connection'); for 'pending', "
                         "fix the ztunnel connection and the agent retries, or restart the pod."),
    "enrolled-without-proxy": ("Restart the pod so that istio-cni hands it to ztunnel again; drain nodes before "
                               "reboots; upgrade (1.29.5+ fixes lost ipsets)."),
    "stale-workload": ("Restart the ztunnel(s) holding it (they re-sync from istiod); if istiod still sends it, "
                       "delete the Node object of a dead node; check istiod's informers."),
    "duplicate-ip": ("One of the workloads is stale: find which pod owns the IP now, then restart the ztunnels "
                     "holding the stale one."),
}
REFERENCES = {"missing-workload": R08, "protocol-mismatch": R10, "ip-mismatch": R18, "node-mismatch": R18,
              "pod-not-enrolled": R06, "enrolled-without-proxy": R10, "stale-workload": R18, "duplicate-ip": R18}
SEVERITY = {"protocol-mismatch": "error", "ip-mismatch": "error", "node-mismatch": "warning",
            "stale-workload": "error", "duplicate-ip": "error"}


# --- Kubernetes helpers (also used by the certificates analyzer) ---------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass
class PodInfo:
    index: int  # position in cluster/pods.json items
    namespace: str
    name: str
    uid: str  # Kubernetes metadata.uid
    node: str
    ips: tuple[str, ...]
    host_network: bool
    phase: str
    terminating: bool
    annotation: str | None  # ambient.istio.io/redirection
    expected: bool  # ambient-expected (failure-modes.md 0.6)
    native_tunnel: bool
    created: datetime | None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def pointer(self) -> str:
        return f"/items/{self.index}"

    def resource(self, ztunnel: Any | None = None) -> Resource:
        return Resource("Pod", self.name, self.namespace, node=self.node or None,
                        ztunnel=ztunnel.pod if ztunnel is not None else None)


def mesh_config(model: Any) -> dict[str, Any]:
    """meshConfig (the ``mesh`` key of the ``istio`` ConfigMap), {} when absent or unreadable."""
    for cm in model.k8s("configmaps"):
        meta, data = _dict(cm.get("metadata")), _dict(cm.get("data"))
        if meta.get("name") == "istio" and isinstance(data.get("mesh"), str):
            try:
                mesh = yaml.safe_load(data["mesh"])
            except yaml.YAMLError:
                return {}
            return mesh if isinstance(mesh, dict) else {}
    return {}


def _selects(selector: Any, labels: dict[str, str]) -> bool | None:
    """A Kubernetes LabelSelector against labels; None when it cannot be evaluated."""
    if not isinstance(selector, dict):
        return None
    for key, value in _dict(selector.get("matchLabels")).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        if not isinstance(expr, dict):
            return None
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return None
    return True


def discovered_namespaces(model: Any) -> set[str] | None:
    """The namespaces istiod watches under meshConfig ``discoverySelectors``; None when every namespace is (no
    selectors) or the selectors cannot be evaluated (then nothing is assumed)."""
    selectors = mesh_config(model).get("discoverySelectors")
    if not isinstance(selectors, list) or not selectors:
        return None
    out = set()
    for name, labels in model.namespaces().items():
        verdicts = [_selects(sel, {**labels, "kubernetes.io/metadata.name": name}) for sel in selectors]
        if any(v is None for v in verdicts):
            return None
        if any(verdicts):
            out.add(name)
    return out


def excluded_namespaces(model: Any) -> set[str]:
    """istio-cni's EXCLUDED_NAMESPACES (``istio-cni-config`` ConfigMap), default ``kube-system``."""
    for cm in model.k8s("configmaps"):
        meta = _dict(cm.get("metadata"))
        if meta.get("name") == "istio-cni-config":
            text = _dict(cm.get("data")).get("EXCLUDED_NAMESPACES")
            if isinstance(text, str):
                return {ns.strip() for ns in text.split(",") if ns.strip()}
    return {"kube-system"}


def pod_infos(model: Any) -> list[PodInfo]:
    namespaces = model.namespaces()
    excluded = excluded_namespaces(model)
    out = []
    for index, pod in enumerate(model.pods()):
        meta, spec, status = _dict(pod.get("metadata")), _dict(pod.get("spec")), _dict(pod.get("status"))
        labels, annotations = _dict(meta.get("labels")), _dict(meta.get("annotations"))
        ips: list[str] = []
        for ip in [status.get("podIP")] + [_dict(e).get("ip") for e in status.get("podIPs") or ()]:
            if isinstance(ip, str) and ip and ip not in ips:
                ips.append(ip)
        ns = str(meta.get("namespace") or "")
        host_network = spec.get("hostNetwork") is True
        phase = str(status.get("phase") or "")
        mode = labels.get(DATAPLANE_MODE)
        ns_mode = namespaces.get(ns, {}).get(DATAPLANE_MODE)
        expected = (not host_network and SIDECAR_STATUS not in annotations and ns not in excluded
                    and phase not in ("Succeeded", "Failed") and bool(ips)
                    and (mode == "ambient" or (ns_mode == "ambient" and mode != "none")))
        annotation = annotations.get(REDIRECTION)
        out.append(PodInfo(
            index=index, namespace=ns, name=str(meta.get("name") or ""), uid=str(meta.get("uid") or ""),
            node=str(spec.get("nodeName") or ""), ips=tuple(ips), host_network=host_network, phase=phase,
            terminating=bool(meta.get("deletionTimestamp")),
            annotation=annotation if isinstance(annotation, str) else None, expected=expected,
            native_tunnel=labels.get(TUNNEL_LABEL) == "http", created=parse_time(meta.get("creationTimestamp"))))
    return out


def node_ips(model: Any) -> set[str]:
    out = set()
    for node in model.nodes():
        for addr in _dict(node.get("status")).get("addresses") or ():
            if isinstance(addr, dict) and isinstance(addr.get("address"), str):
                out.add(addr["address"])
    return out


# --- the analyzer ------------------------------------------------------------------------------------------------


@dataclass
class _Across:
    """One problem seen by one or more ztunnels, reported once."""

    code: str
    subject: Resource
    detail: str
    pod: PodInfo | None = None
    extra: list[Resource] = field(default_factory=list)  # more subjects (the other claimants of an IP)
    extra_pointers: list[str] = field(default_factory=list)
    # ((ztunnel pod, node, namespace, dump path), JSON pointer) of every ztunnel that shows it
    sightings: list[tuple[tuple[str, str, str, str], str]] = field(default_factory=list)


@dataclass
class _Plan:
    """What a workload set says against the pods, whichever ztunnel holds it: pods without a workload, sightings
    (mismatches, stale workloads, duplicate IPs) and, by node, each running pod with its workload (or None)."""

    workloads: Any  # keeps the dict (and so its id, the plan's key) alive
    missing: list[tuple[PodInfo, str]] = field(default_factory=list)
    sightings: list[tuple[Any, Resource, str, PodInfo | None, str, list[str]]] = field(default_factory=list)
    by_node: dict[str, list[tuple[PodInfo, str, Any]]] = field(default_factory=dict)

    @classmethod
    def of(cls, workloads: Any, pods: list[PodInfo], by_name: dict[tuple[str, str], PodInfo], hosts: set[str],
           prefix: str, shadowed: set[str]) -> _Plan:
        plan = cls(workloads)
        for pod in pods:
            if not pod.ips or pod.finished or pod.terminating:
                continue
            uid = f"{prefix}{pod.namespace}/{pod.name}"
            w = workloads.get(uid)
            plan.by_node.setdefault(pod.node, []).append((pod, uid, w))
            if w is None:
                if not shadowed.intersection(pod.ips):  # 1.22 dump: another workload with its IP hides it
                    plan.missing.append((pod, uid))
                continue
            enabled = pod.annotation == "enabled"
            if enabled and w.protocol != "HBONE":
                plan.sightings.append(("protocol-mismatch", pod.resource(), uid, pod,
                                       f"its pod is annotated {REDIRECTION}=enabled but the workload's protocol is "
                                       f"{w.protocol}: peers send it plaintext", []))
            elif w.protocol == "HBONE" and not enabled and not w.native_tunnel and not pod.native_tunnel:
                plan.sightings.append(("protocol-mismatch", pod.resource(), uid, pod,
                                       f"the workload's protocol is HBONE but its pod is not enrolled ({REDIRECTION}="
                                       f"{pod.annotation or 'absent'}): peers send HBONE to a pod no ztunnel proxies",
                                       []))
            if set(w.ips) != set(pod.ips):
                plan.sightings.append(("ip-mismatch", pod.resource(), uid, pod,
                                       f"the workload has IPs {', '.join(w.ips) or 'none'} but the pod has "
                                       f"{', '.join(pod.ips)}", []))
            if w.node and pod.node and w.node != pod.node:
                plan.sightings.append(("node-mismatch", pod.resource(), uid, pod,
                                       f"the workload says node {w.node} but the pod runs on {pod.node}", []))
        # workloads of pods that are gone, and IPs claimed twice
        claims: dict[tuple[str, str], list[str]] = {}
        for uid, w in workloads.items():
            if uid.startswith(prefix):
                ns, _, name = uid[len(prefix):].partition("/")
                pod = by_name.get((ns, name))
                if pod is None or pod.finished:
                    why = "no such pod exists" if pod is None else f"its pod has finished ({pod.phase})"
                    plan.sightings.append(("stale-workload", workload_resource(w), uid, None,
                                           f"{why}; the workload still has IPs {', '.join(w.ips) or 'none'}", []))
            if w.network_mode == "HostNetwork":
                continue
            for ip in w.ips:
                if ip in hosts:
                    continue  # host-network workloads share their node's IP
                claims.setdefault((w.network, ip), []).append(uid)
        for (network, ip), uids in claims.items():
            if len(uids) < 2:
                continue
            uids.sort()
            plan.sightings.append((("duplicate-ip", ip, tuple(uids)), workload_resource(workloads[uids[0]]), uids[0],
                                   None, f"IP {ip}{' on network ' + network if network else ''} is claimed by "
                                   f"{len(uids)} workloads: {', '.join(uids)}", uids[1:]))
        return plan


class ZtunnelKubernetes(Analyzer):
    metadata = Metadata(
        id="ztunnel-kubernetes",
        title="ztunnel's view disagrees with Kubernetes",
        severity="error",
        description=("Compares each ztunnel's workloads and in-pod proxies (workloadState) with the Kubernetes "
                     "pods: ambient pods missing or not enrolled, protocol contradicting the redirection "
                     "annotation, stale workloads of deleted pods, IP/node mismatches and duplicate IPs."),
        docs=DOCS,
        inputs=(layout.KIND_ZTUNNEL_CONFIG_DUMP, layout.KIND_K8S_LIST),
    )

    def analyze(self, ctx: Context) -> Iterator[Finding]:
        model = ctx.model
        if model.status(PODS_PATH) != "ok":
            return  # no (or a partial) Kubernetes truth: unknown, and collection-gaps says why
        pods = pod_infos(model)
        if not pods:
            return
        now = collection_time(model)
        by_name = {(p.namespace, p.name): p for p in pods}
        discovered = discovered_namespaces(model)
        if discovered is not None:  # istiod does not send pods of namespaces outside discoverySelectors
            pods_in_scope = [p for p in pods if p.namespace in discovered]
        else:
            pods_in_scope = pods
        hosts = node_ips(model) | {ip for p in pods if p.host_network for ip in p.ips}
        across: dict[tuple[Any, ...], _Across] = {}
        enrolment_done: set[str] = set()
        self._plans: dict[Any, _Plan] = {}
        for zt in model.ztunnels():
            yield from self._ztunnel(ctx, zt, pods_in_scope, by_name, hosts, now, across, enrolment_done)
        for pod in pods:  # pods whose node's ztunnel dump could not be read: the annotation alone tells
            if pod.expected and pod.annotation != "enabled" and pod.key not in enrolment_done \
                    and not pod.finished and not pod.terminating:
                yield self._not_enrolled(ctx, pod, None, now)
        for item in across.values():
            yield self._across(ctx, item)

    def _ztunnel(self, ctx: Context, zt: Any, pods: list[PodInfo], by_name: dict[tuple[str, str], PodInfo],
                 hosts: set[str], now: datetime | None, across: dict[tuple[Any, ...], _Across],
                 enrolment_done: set[str]) -> Iterator[Finding]:
        now = dump_time(ctx.model, zt.path, now)  # what the ztunnel could know when its dump was taken
        cluster_id = str(zt.config.get("clusterId") or "Kubernetes")
        on_demand = bool(zt.config.get("xdsOnDemand"))
        shadowed = map_shape_ips(zt)
        # ztunnels that agree share their workloads dict (bundler/model/sections.py): what does not depend on the
        # ztunnel's own node is worked out once per distinct workload set, not once per ztunnel
        key = (id(zt.workloads), cluster_id, frozenset(shadowed))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _Plan.of(zt.workloads, pods, by_name, hosts, f"{cluster_id}//Pod/", shadowed)
        for pod, uid, w in plan.by_node.get(zt.node, ()):
            if pod.expected and pod.annotation != "enabled":
                enrolment_done.add(pod.key)
                yield self._not_enrolled(ctx, pod, zt, now, w)
            if w is not None and pod.annotation == "enabled" and not pod.native_tunnel and not w.native_tunnel:
                state = zt.workload_state.get(pod.uid)
                if state is None or state.state != "Up":
                    yield self._no_proxy(ctx, zt, pod, state, now)
        for pod, uid in plan.missing:
            local = pod.node == zt.node
            if on_demand and not local:
                continue  # on-demand: fetched when needed
            yield self._missing(ctx, zt, pod, uid, local, now)
        for code, subject, uid, pod, detail, extra_uids in plan.sightings:
            self._see(across, code, subject, zt, zt.pointer("workloads", uid), pod, detail,
                      extra=[workload_resource(zt.workloads[u]) for u in extra_uids] or None,
                      pointers=[zt.pointer("workloads", u) for u in extra_uids] or None)

    # -- per-pod findings -----------------------------------------------------------------------------------------

    def _missing(self, ctx: Context, zt: Any, pod: PodInfo, uid: str, local: bool, now: datetime | None) -> Finding:
        if not pod.expected:
            severity, impact = "info", "the pod is not in the ambient mesh, so traffic to it is plain TCP anyway"
        elif local:
            severity, impact = "critical", ("it runs on this node: its connections fail with 'timed out waiting "
                                            "for workload' (R08)")
        else:
            severity, impact = "error", "this ztunnel cannot route HBONE traffic to it or apply its policies"
        if now is not None and pod.created is not None and (now - pod.created).total_seconds() < YOUNG_SECONDS:
            severity, impact = "info", "the pod was created less than a minute before the collection"
        message = (f"ztunnel {zt.pod} on node {zt.node} has no workload for pod {pod.key} (IP {', '.join(pod.ips)}, "
                   f"node {pod.node or '?'}): {impact}.")
        return ctx.finding(
            "missing-workload", message, title=TITLES["missing-workload"], severity=severity,
            resources=[pod.resource(zt)],
            evidence=[Evidence(zt.path, zt.pointer("workloads", uid), excerpt=f"no workload {uid}"),
                      Evidence(PODS_PATH, pod.pointer, excerpt=f"pod {pod.key} phase {pod.phase}, IP {pod.ips[0]}")],
            remediation=REMEDIATION["missing-workload"], references=REFERENCES["missing-workload"])

    def _not_enrolled(self, ctx: Context, pod: PodInfo, zt: Any | None, now: datetime | None,
                      w: Any | None = None) -> Finding:
        state = pod.annotation or "absent"
        evidence = [Evidence(PODS_PATH, f"{pod.pointer}/metadata",
                             excerpt=f"{REDIRECTION}: {state}" if pod.annotation else f"no {REDIRECTION} annotation")]
        where = ""
        if zt is not None:
            uid = f"{zt.config.get('clusterId') or 'Kubernetes'}//Pod/{pod.namespace}/{pod.name}"
            if w is not None:
                evidence.append(Evidence(zt.path, zt.pointer("workloads", uid), excerpt=f"protocol: {w.protocol}"))
            if pod.uid not in zt.workload_state:
                evidence.append(Evidence(zt.path, "/workloadState",
                                         excerpt=f"no in-pod proxy for pod UID {pod.uid}"))
            where = (f"; ztunnel {zt.pod} shows it as {w.protocol if w is not None else 'no workload'} and has no "
                     f"in-pod proxy for it" if pod.uid not in zt.workload_state else "")
        young = now is not None and pod.created is not None and (now - pod.created).total_seconds() < YOUNG_SECONDS
        meaning = ("istio-cni set up redirection but could not hand the pod to ztunnel: it has no traffic"
                   if state == "pending" else "istio-cni did not capture it: its traffic bypasses ztunnel "
                   "(no mTLS, no L4 policy)")
        message = (f"pod {pod.key} on node {pod.node or '?'} is expected in the ambient mesh but its {REDIRECTION} "
                   f"annotation is {state}: {meaning}{where}.")
        return ctx.finding(
            "pod-not-enrolled", message, title=TITLES["pod-not-enrolled"],
            severity="info" if young else "error", resources=[pod.resource(zt)], evidence=evidence,
            remediation=REMEDIATION["pod-not-enrolled"], references=REFERENCES["pod-not-enrolled"])

    def _no_proxy(self, ctx: Context, zt: Any, pod: PodInfo, state: Any | None, now: datetime | None) -> Finding:
        young = now is not None and pod.created is not None and (now - pod.created).total_seconds() < YOUNG_SECONDS
        what = "no workloadState entry" if state is None else f"a workloadState entry stuck in {state.state}"
        message = (f"pod {pod.key} is annotated {REDIRECTION}=enabled, so istiod advertises it as HBONE, but "
                   f"ztunnel {zt.pod} on its node {zt.node} has {what} for its UID {pod.uid}: peers' HBONE "
                   f"connections to it are refused and its own traffic bypasses ztunnel (R10).")
        pointer = "/workloadState" if state is None else f"/workloadState/{_escape(pod.uid)}"
        return ctx.finding(
            "enrolled-without-proxy", message, title=TITLES["enrolled-without-proxy"],
            severity="info" if young else "critical" if state is None else "error",
            resources=[pod.resource(zt)],
            evidence=[Evidence(zt.path, pointer, excerpt=what),
                      Evidence(PODS_PATH, f"{pod.pointer}/metadata", excerpt=f"{REDIRECTION}: enabled")],
            remediation=REMEDIATION["enrolled-without-proxy"], references=REFERENCES["enrolled-without-proxy"])

    # -- problems seen by several ztunnels ----------------------------------------------------------------------------

    def _see(self, across: dict[tuple[Any, ...], _Across], code: Any, subject: Resource, zt: Any, pointer: str,
             pod: PodInfo | None, detail: str, extra: list[Resource] | None = None,
             pointers: list[str] | None = None) -> None:
        key = code if isinstance(code, tuple) else (code, subject.kind, subject.namespace, subject.name, detail)
        name = key[0]
        item = across.get(key)
        if item is None:
            item = across[key] = _Across(name, subject, detail, pod=pod, extra=extra or [],
                                         extra_pointers=pointers or [])
        item.sightings.append(((zt.pod, zt.node, zt.namespace, zt.path), pointer))

    def _across(self, ctx: Context, item: _Across) -> Finding:
        sightings = item.sightings
        names = [s[0][0] for s in sightings]
        if len(sightings) == 1:
            (pod_name, node, _, _), _ = sightings[0]
            subject = Resource(item.subject.kind, item.subject.name, item.subject.namespace, node=item.subject.node,
                               ztunnel=pod_name)
            seen = f"ztunnel {pod_name} on node {node}"
        else:
            subject = item.subject
            shown = ", ".join(names[:MAX_ZTUNNELS_NAMED]) + (
                f" and {len(names) - MAX_ZTUNNELS_NAMED} more" if len(names) > MAX_ZTUNNELS_NAMED else "")
            seen = f"{len(names)} ztunnels ({shown})"
        resources = [subject] + [Resource(r.kind, r.name, r.namespace, node=r.node,
                                          ztunnel=subject.ztunnel) for r in item.extra]
        what = f"{item.subject.kind} {item.subject.namespace}/{item.subject.name}"
        message = f"{what}, as seen by {seen}: {item.detail}."
        evidence = []
        for (pod_name, node, _, path), pointer in sightings[:3]:
            evidence.append(Evidence(path, pointer, excerpt=f"ztunnel {pod_name} on {node}: {item.detail}"[:300]))
            for other in item.extra_pointers[:2]:
                evidence.append(Evidence(path, other))
        if item.pod is not None:
            evidence.append(Evidence(PODS_PATH, item.pod.pointer,
                                     excerpt=f"pod {item.pod.key} on {item.pod.node}, IPs {', '.join(item.pod.ips)}"))
        return ctx.finding(item.code, message, title=TITLES[item.code], severity=SEVERITY[item.code],
                           resources=resources, evidence=evidence, remediation=REMEDIATION[item.code],
                           references=REFERENCES[item.code])


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")
