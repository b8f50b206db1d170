"""logs: the known error signatures of ztunnel and istio-cni logs (failure-modes.md section 6), counted.

Every ztunnel and istio-cni log (current and previous container) is streamed once, line by line; each line that
matches a known signature is added to a bucket keyed by (signature, subject), where the subject is the pod the
error is about (the destination of an HBONE timeout or a policy rejection, the local workload of a certificate
error, the pod istio-cni could not enrol) or the ztunnel itself (xDS, DNS). A bucket keeps its count per log, the
first and last time, and a few example lines as evidence. Nothing else is kept, so memory does not grow with the
size of the logs.

The helpers at the end of this module (access-log fields, addresses, Kubernetes lookups) are shared by the other
runtime analyzers (traffic-path, load-balancing, metrics).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bundler import layout
from bundler.analysis import Analyzer, Context, Evidence, Finding, Metadata, Resource
from bundler.analysis.dig import dig, dig_list

EXAMPLES_PER_LOG = 3  # example lines kept per bucket and log
MAX_EXCERPT = 600


@dataclass(frozen=True)
class Signature:
    code: str
    title: str
    severity: str
    remediation: str
    references: tuple[str, ...] = ()


_ISTIO = "https://github.com/istio/istio/issues/"
_ZTUNNEL = "https://github.com/istio/ztunnel/issues/"
_TROUBLESHOOT = "https://istio.io/latest/docs/ambient/usage/troubleshoot-ztunnel/"

SIGNATURES: dict[str, Signature] = {s.code: s for s in (
    Signature("hbone-port-blocked", "HBONE connections (port 15008) time out", "critical",
              "Allow ingress TCP 15008 to every ambient pod (and egress 15008 from its clients) in NetworkPolicies, "
              "cloud security groups and other firewalls; use AuthorizationPolicy to restrict application ports.",
              (_ZTUNNEL + "1229", _ISTIO + "52742", _ISTIO + "55937",
               "https://istio.io/latest/docs/ambient/usage/networkpolicy/")),
    Signature("policy-allow-no-match", "connections rejected: ALLOW policies exist but none matched", "error",
              "Add the source principal (cluster.local/ns/<ns>/sa/<sa>) or namespace to an ALLOW rule of the "
              "policies that apply to the destination; plaintext sources have no principal.",
              (_ISTIO + "53696", _ZTUNNEL + "1901", "https://istio.io/latest/docs/ambient/usage/l4-policy/")),
    Signature("policy-waypoint-not-allowed", "connections from a waypoint rejected by an L4 ALLOW policy", "error",
              "Traffic through a waypoint arrives with the waypoint's identity: add the waypoint principal "
              "(cluster.local/ns/<waypoint-ns>/sa/<waypoint-sa>) to the ztunnel-enforced ALLOW policy, move L7 "
              "intent to a targetRefs policy on the Service, or set PILOT_AUTO_ALLOW_WAYPOINT_POLICY=true.",
              ("https://github.com/istio/istio.io/issues/16091", _ISTIO + "50475")),
    Signature("policy-strict-plaintext", "plaintext connections rejected by STRICT mTLS", "error",
              "Enrol the client in the mesh (namespace label istio.io/dataplane-mode=ambient) or use an Istio "
              "gateway; or relax the PeerAuthentication (PERMISSIVE / portLevelMtls) for that port. A client that "
              "is itself an ambient pod means its outbound capture is broken (check its enrolment).",
              (_ISTIO + "51482", _ZTUNNEL + "792")),
    Signature("policy-explicit-deny", "connections rejected by a DENY policy", "info",
              "A DENY AuthorizationPolicy matched these connections; if they should be allowed, narrow its rules.",
              ("https://istio.io/latest/docs/ambient/usage/l4-policy/",)),
    Signature("policy-rejection", "connections rejected by policy", "error",
              "Check the AuthorizationPolicies that apply to the destination workload (its namespace, the root "
              "namespace and selector policies) against the source identity.",
              (_ISTIO + "53723",)),
    Signature("local-workload-unknown", "ztunnel timed out waiting for a local workload from xDS", "error",
              "istiod did not send the pod's workload in time: check istiod health and push latency, "
              "meshConfig.discoverySelectors and the ztunnel's xDS stream; a few lines right after a pod starts "
              "are a known race.",
              (_ISTIO + "54889", _ISTIO + "57674", _ISTIO + "54969")),
    Signature("xds-disconnected", "ztunnel cannot reach istiod (xDS)", "critical",
              "Fix the cause in the error: DNS of istiod's address, port 15012 reachability (NetworkPolicy, "
              "istiod down), PILOT_ENABLE_AMBIENT=true on istiod, token/CA trust. The ztunnel keeps running on "
              "the configuration it had.",
              (_ISTIO + "54912", _ISTIO + "52487", _ISTIO + "52937", _ZTUNNEL + "752")),
    Signature("xds-reconnected", "ztunnel lost its xDS stream and got it back", "info",
              "Short bursts during an istiod rollout are normal; repeated ones point at istiod restarts or "
              "network trouble on port 15012.", (_ZTUNNEL + "752",)),
    Signature("xds-nack", "ztunnel rejected configuration from istiod (NACK)", "error",
              "ztunnel could not apply a resource istiod sent (often version skew): check that ztunnel and "
              "istiod versions are within the supported skew and upgrade istiod first.",
              ("https://istio.io/latest/docs/ambient/upgrade/helm/",)),
    Signature("certificate-fetch-failed", "ztunnel could not get a workload certificate", "error",
              "Check istiod's CA (serverca logs), CA_TRUSTED_NODE_ACCOUNTS / pilot.trustedZtunnelNamespace for "
              "the ztunnel service account, and that the ztunnel namespace is inside discoverySelectors.",
              (_ISTIO + "56550", _ISTIO + "52057", _ZTUNNEL + "1686")),
    Signature("certificate-renewal-failed", "ztunnel could not renew a workload certificate", "warning",
              "The current certificate is still valid; check istiod's CA before it expires.", (_ISTIO + "56452",)),
    Signature("identity-error", "connections failed: no identity for the local workload", "error",
              "The local workload has no usable certificate: check the certificates of its ztunnel and the CA.",
              (_ISTIO + "52057", _ZTUNNEL + "1686")),
    Signature("tls-trust-failure", "mTLS handshakes fail: peer certificate not trusted", "critical",
              "Peers do not chain to a common root (plugged CA, root rotation, expired certificates): distribute "
              "the full trust bundle and restart ztunnels after a root change.",
              (_ZTUNNEL + "1061", _ZTUNNEL + "1613", _ZTUNNEL + "1679", _ISTIO + "45102")),
    Signature("identity-mismatch", "mTLS handshakes fail: peer identity or trust domain mismatch", "error",
              "Use one trust domain (or versions that honour trustDomainAliases); an identity mismatch within one "
              "trust domain points at routing to the wrong endpoint.",
              (_ISTIO + "58427", _ISTIO + "61608", _ISTIO + "58630")),
    Signature("dns-failure", "ztunnel DNS proxy failures", "warning",
              "Check the cluster DNS and ServiceEntry addresses; opt a pod out with the annotation "
              "ambient.istio.io/dns-capture: \"false\" if the DNS proxy breaks its lookups.",
              (_ISTIO + "55979", _ISTIO + "55962", _ZTUNNEL + "1360")),
    Signature("cni-enrollment-failed", "istio-cni could not enrol a pod in the mesh", "error",
              "Make ztunnel run and be Ready on the pod's node (istio-cni retries the pending pod), or restart the "
              "pod; for 'will not retry' errors fix the cause and recreate the pod.",
              (_ISTIO + "53843", _ISTIO + "61717", _ISTIO + "54630")),
    Signature("cni-enrollment-retried", "istio-cni enrolment errors for a pod that is enrolled now", "info",
              "istio-cni failed at first but the pod is enrolled now; repeated failures point at ztunnel restarts.",
              (_ISTIO + "53843",)),
    Signature("cni-link-down", "ztunnel cannot connect to the istio-cni node agent", "warning",
              "Make istio-cni run (and be Ready) on every node where ztunnel runs; install istio-cni before ztunnel.",
              (_ISTIO + "52077", _ZTUNNEL + "1208", _ZTUNNEL + "1674")),
)}


# --- buckets ---------------------------------------------------------------------------------------------------


@dataclass
class _Bucket:
    code: str
    subject: tuple[str, ...]  # ("pod", ns, name) | ("ztunnel", ns, pod, node) | ("sa", ns, sa, node) | ("addr", ip)
    count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    per_log: Counter = field(default_factory=Counter)
    examples: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    details: Counter = field(default_factory=Counter)
    flags: set[str] = field(default_factory=set)

    def add(self, path: str, line: int, text: str, when: datetime | None, details: Iterable[str]) -> None:
        self.count += 1
        self.per_log[path] += 1
        if when is not None:
            self.first = when if self.first is None or when < self.first else self.first
            self.last = when if self.last is None or when > self.last else self.last
        examples = self.examples.setdefault(path, [])
        if len(examples) < EXAMPLES_PER_LOG:
            examples.append((line, text))
        for detail in details:
            if detail:
                self.details[detail] += 1


class _Scan:
    """The state of one pass over the logs."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.buckets: dict[tuple[str, tuple[str, ...]], _Bucket] = {}
        self.waypoint_identities = waypoint_identities(model)
        self.namespaces = model.namespaces()  # name -> labels
        self.node_ips = {a.get("address") for n in model.nodes() for a in dig_list(n, "status", "addresses")
                         if isinstance(a, dict) and a.get("type") == "InternalIP"}
        # xDS state per ztunnel pod: errors, last error time, last "Stream established"
        self.xds: dict[tuple[str, str, str], dict[str, Any]] = {}

    def hit(self, code: str, subject: tuple[str, ...], ref: Any, details: Iterable[str] = (), flag: str = "") -> None:
        bucket = self.buckets.get((code, subject))
        if bucket is None:
            bucket = self.buckets[(code, subject)] = _Bucket(code, subject)
        bucket.add(ref.path, ref.line, ref.text, getattr(ref.record, "time", None), details)
        if flag:
            bucket.flags.add(flag)


# --- the analyzer ----------------------------------------------------------------------------------------------


class LogSignatures(Analyzer):
    metadata = Metadata(
        id="logs",
        title="known error signatures in ztunnel and istio-cni logs",
        severity="warning",
        description=("Streams every ztunnel and istio-cni log and counts the known error signatures of "
                     "failure-modes.md section 6 per signature and affected pod or ztunnel: HBONE port 15008 "
                     "blocked, policy rejections (ALLOW without match, waypoint identity, STRICT mTLS, DENY), "
                     "local workload unknown, xDS errors and NACKs, certificate and identity errors, DNS "
                     "failures and istio-cni enrolment errors, with first/last time and example lines."),
        docs=_TROUBLESHOOT,
        inputs=(layout.KIND_ZTUNNEL_LOG, layout.KIND_CNI_LOG),
    )

    def analyze(self, ctx: Context) -> Iterable[Finding]:
        model = ctx.model
        scan = _Scan(model)
        for log in model.logs("ztunnel"):
            _scan_ztunnel_log(scan, log)
        for log in model.logs("cni"):
            _scan_cni_log(scan, log)
        _finish_xds(scan)
        truncated = {log.path for log in model.logs() if model.status(log.path) == "truncated"}
        for (code, subject), bucket in sorted(scan.buckets.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            finding = _finding(ctx, scan, bucket, truncated)
            if finding is not None:
                yield finding


# --- ztunnel logs ------------------------------------------------------------------------------------------------

_XDS_CAUSES = (
    ("dns error", "istiod's address does not resolve (DNS)"),
    ("Name or service not known", "istiod's address does not resolve (DNS)"),
    ("Connection refused", "connection refused (istiod down or not listening on 15012)"),
    ("No route to host", "no route to istiod (network/CNI)"),
    ("deadline has elapsed", "timeout connecting to istiod (NetworkPolicy/firewall on 15012?)"),
    ("PILOT_ENABLE_AMBIENT", "istiod runs without PILOT_ENABLE_AMBIENT=true"),
    ("Unauthenticated", "istiod refused the ztunnel's credentials"),
    ("CERTIFICATE_VERIFY_FAILED", "ztunnel does not trust istiod's serving certificate"),
)
_WAITING_RE = re.compile(r"timed out waiting for workload '([^']*)'")
_LOCAL_WL_RE = re.compile(r"failed to fetch information about local workload: (.*)$")
_WORKLOAD_TEXT_RE = re.compile(r"^(?P<sa>[^.\s]+)\.(?P<ns>[^\s(]+) \((?P<pod>[^)]+)\)$")


def _scan_ztunnel_log(scan: _Scan, log: Any) -> None:
    ztunnel = ("ztunnel", log.namespace, log.pod, log.node)
    state = scan.xds.setdefault((log.namespace, log.pod, log.node), {"last_error": None, "last_ok": None})
    for ref in scan.model.log_records(log):
        rec = ref.record
        if rec is None or not hasattr(rec, "fields"):
            continue
        target = rec.target
        message = rec.message
        if target == "access":
            if rec.level in ("error", "warn"):
                _access(scan, ref, log)
            continue
        if target.startswith("xds"):
            if message.startswith("XDS client connection error") or message.startswith("XDS client error"):
                cause = next((text for needle, text in _XDS_CAUSES if needle in message), "")
                scan.hit("xds-disconnected", ztunnel, ref, [cause])
                if state["last_error"] is None or rec.time > state["last_error"]:
                    state["last_error"] = rec.time
            elif message == "Stream established":
                if state["last_ok"] is None or rec.time > state["last_ok"]:
                    state["last_ok"] = rec.time
            elif message == "sending response" and str(rec.field("type", "")) == "Nack":
                scan.hit("xds-nack", ztunnel, ref, [_short(str(rec.field("error", "")), 160)])
            elif message == "unknown type":
                scan.hit("xds-nack", ztunnel, ref, [f"unknown type {rec.field('type_url', '')}"])
            continue
        if "timed out waiting for workload" in message:
            m = _WAITING_RE.search(message)
            scan.hit("local-workload-unknown", _workload_subject(scan, m.group(1) if m else "", log), ref)
            continue
        if target.startswith("identity") or target.startswith("cert_fetcher"):
            identity = str(rec.field("id", "") or "")
            if message.startswith("certificate fetch failed") or message.startswith("unable to prefetch cert") \
                    or message.startswith("expected identity"):
                if not identity:
                    found = re.search(r"spiffe://[^\s\"]+", message)
                    identity = found.group(0) if found else ""
                scan.hit("certificate-fetch-failed", _identity_subject(identity, log), ref,
                         [_cert_error(message)])
            elif message.startswith("certificate renewal failed"):
                scan.hit("certificate-renewal-failed", _identity_subject(identity, log), ref, [_cert_error(message)])
            continue
        if target.startswith("dns") or target.startswith("hickory"):
            if rec.level in ("warn", "error") and ("request error" in message or "unimplemented op_code" in message):
                scan.hit("dns-failure", ztunnel, ref, [_short(message, 120)])
            continue
        if message.startswith("dns lookup failed"):
            scan.hit("dns-failure", ztunnel, ref, [f"lookup of {rec.field('hostname', '?')} failed"])
            continue
        if target.startswith("inpod") and ("failed to connect to the Istio CNI node agent" in message
                                           or 'failed to connect to server "/var/run/ztunnel' in message):
            scan.hit("cni-link-down", ztunnel, ref)


def _access(scan: _Scan, ref: Any, log: Any) -> None:
    """An access line at warn/error: classify its ``error``."""
    rec = ref.record
    error = rec.field("error")
    if not isinstance(error, str) or not error:
        return
    direction = str(rec.field("direction", "") or "")
    dst_addr = str(rec.field("dst.addr", "") or "")
    if "maybe a NetworkPolicy is blocking HBONE port 15008" in error or (
            "deadline has elapsed" in error and dst_addr.endswith(":15008") and direction == "outbound"):
        scan.hit("hbone-port-blocked", _peer_subject(scan, rec, "dst"), ref, [f"from {_source_name(rec)}"])
        return
    if error.startswith("connection closed due to policy rejection"):
        reason = error.partition("policy rejection")[2].lstrip(": ").strip()
        code = _policy_code(scan, rec, reason)
        subject = _peer_subject(scan, rec, "dst")
        details = [f"from {_source_name(rec)}"]
        flag = ""
        if reason.startswith("explicitly denied by:"):
            details.append("policy " + reason.partition(":")[2].strip())
        if code == "policy-strict-plaintext":
            flag, text = _plaintext_source(scan, rec)
            details.append(text)
        scan.hit(code, subject, ref, details, flag)
        return
    match = _LOCAL_WL_RE.search(error)
    if match:
        scan.hit("local-workload-unknown", _workload_subject(scan, match.group(1), log), ref)
        return
    if "identity verification error" in error or "expected SAN" in error or "SanTrustDomainError" in error:
        scan.hit("identity-mismatch", _peer_subject(scan, rec, "dst"), ref,
                 [f"from {_source_name(rec)}", _short(error, 200)])
        return
    if ("invalid peer certificate" in error or error.startswith("tls error") or "tls handshake error" in error
            or "InvalidCertificate" in error):
        scan.hit("tls-trust-failure", _peer_subject(scan, rec, "dst"), ref,
                 [f"from {_source_name(rec)} (node {log.node})", _tls_reason(error)])
        return
    if error.startswith("identity error"):
        side = "src" if direction == "outbound" else "dst"
        scan.hit("identity-error", _peer_subject(scan, rec, side), ref, [_short(error, 200)])
        return
    if (error.startswith("no ip addresses were resolved") or error.startswith("dns")
            or "valid dns response had no A/AAAA records" in error):
        scan.hit("dns-failure", ("ztunnel", log.namespace, log.pod, log.node), ref, [_short(error, 120)])


def _plaintext_source(scan: _Scan, rec: Any) -> tuple[str, str]:
    """Who sent plaintext into a STRICT workload (failure-modes.md R05): an ambient pod means its own outbound
    capture is broken (the security-relevant case); anything else is a client outside the mesh."""
    ip = split_addr(str(rec.field("src.addr", "") or ""))[0]
    pod = scan.model.pods_by_ip().get(ip)
    if pod is not None:
        name = f"{meta(pod).get('namespace')}/{meta(pod).get('name')}"
        if annotations(pod).get("ambient.istio.io/redirection") == "enabled" or _ambient_namespace(scan, pod):
            return "ambient-source", f"source {name} is an ambient pod: its outbound traffic bypasses ztunnel"
        return "", f"source {name} is a pod outside the mesh"
    if ip in scan.node_ips:
        return "", f"source {ip} is a node (a host-network pod or a node process)"
    return "", f"source {ip} is outside the cluster's pods (a load balancer or an ingress outside the mesh?)"


def _ambient_namespace(scan: _Scan, pod: dict[str, Any]) -> bool:
    ns_labels = scan.namespaces.get(meta(pod).get("namespace"), {})
    return (ns_labels.get("istio.io/dataplane-mode") == "ambient"
            and labels(pod).get("istio.io/dataplane-mode") != "none")


def _policy_code(scan: _Scan, rec: Any, reason: str) -> str:
    if reason.startswith("explicitly denied by:"):
        policy = reason.partition(":")[2].strip()
        name = policy.rpartition("/")[2]
        if name == "istio_converted_static_strict" or name.startswith("converted_peer_authentication_"):
            return "policy-strict-plaintext"
        return "policy-explicit-deny"
    if reason.startswith("allow policies exist, but none allowed") or not reason:
        identity = rec.field("src.identity")
        parsed = parse_identity(identity) if isinstance(identity, str) else None
        if parsed is not None and parsed in scan.waypoint_identities:
            return "policy-waypoint-not-allowed"
        return "policy-allow-no-match" if reason else "policy-rejection"
    return "policy-rejection"


def _finish_xds(scan: _Scan) -> None:
    """An xDS error followed by ``Stream established`` is a reconnect, not an outage."""
    for (ns, pod, node), state in scan.xds.items():
        subject = ("ztunnel", ns, pod, node)
        bucket = scan.buckets.get(("xds-disconnected", subject))
        if bucket is None:
            continue
        if state["last_ok"] is not None and state["last_error"] is not None and state["last_ok"] >= state["last_error"]:
            del scan.buckets[("xds-disconnected", subject)]
            bucket.code = "xds-reconnected"
            scan.buckets[("xds-reconnected", subject)] = bucket


# --- istio-cni logs ----------------------------------------------------------------------------------------------

_CNI_ERRORS = (
    ("pod partially added", "pod partially added (redirection pending)"),
    ("no ztunnel connection", "no ztunnel connection"),
    ("Failed capturing pod", "failed capturing pod, will not retry"),
    ("failed to add pod to addressSet", "failed to add pod to the host probe ipset"),
    ("has IP collision", "IP collision"),
    ("failed to reconcile inpod rules", "failed to reconcile in-pod rules"),
    ("netns does not contain any IP of pod", "netns does not contain the pod's IP"),
)
_NS_NAME_RE = re.compile(r"pod (?P<ns>[a-z0-9-]+)/(?P<name>[a-z0-9.-]+)")


def _scan_cni_log(scan: _Scan, log: Any) -> None:
    for ref in scan.model.log_records(log):
        rec = ref.record
        if rec is None or not hasattr(rec, "labels") or rec.level not in ("warn", "error"):
            continue
        message = rec.message
        matched = [text for needle, text in _CNI_ERRORS if needle in message]
        if not matched:
            continue
        labels = rec.label_map
        ns, name = labels.get("ns") or labels.get("namespace"), labels.get("name") or labels.get("pod")
        if not (ns and name):
            found = _NS_NAME_RE.search(message)
            ns, name = (found.group("ns"), found.group("name")) if found else (None, None)
        subject = ("pod", ns, name) if ns and name else ("cni", log.namespace, log.pod, log.node)
        pod = scan.model.pod(ns, name) if ns and name else None
        enrolled = pod is not None and annotations(pod).get("ambient.istio.io/redirection") == "enabled"
        scan.hit("cni-enrollment-retried" if enrolled else "cni-enrollment-failed", subject, ref, matched)


# --- findings ----------------------------------------------------------------------------------------------------


def _finding(ctx: Context, scan: _Scan, bucket: _Bucket, truncated: set[str]) -> Finding | None:
    sig = SIGNATURES[bucket.code]
    model = scan.model
    resources, what = _resources(model, bucket)
    where = []
    for path, count in sorted(bucket.per_log.items(), key=lambda kv: (-kv[1], kv[0])):
        where.append(f"{count} in {path}" + (" (truncated log)" if path in truncated else ""))
    span = ""
    if bucket.first is not None and bucket.last is not None:
        span = f", from {iso(bucket.first)} to {iso(bucket.last)}"
    details = "; ".join(f"{text} ({n}x)" if n > 1 else text for text, n in bucket.details.most_common(5))
    extra = len(bucket.details) - 5
    if extra > 0:
        details += f"; and {extra} more"
    message = f"{what}: {bucket.count} line(s){span} ({', '.join(where)})"
    if details:
        message += f". {details}"
    hint = _hint(model, bucket)
    if hint:
        message += f". {hint}"
    evidence = []
    for path in sorted(bucket.examples):
        for line, text in bucket.examples[path]:
            evidence.append(Evidence(path, lines=(line, line), excerpt=_short(text, MAX_EXCERPT)))
    severity = sig.severity
    if bucket.code == "policy-strict-plaintext" and "ambient-source" not in bucket.flags:
        severity = "warning"  # a client outside the mesh: maybe by design
    race = _startup_race(model, bucket)
    if race:
        severity = "info"
        message += f". {race}"
    return ctx.finding(bucket.code, message, title=sig.title, severity=severity, resources=resources,
                       evidence=evidence, remediation=sig.remediation, references=sig.references)


RACE_SECONDS = 120.0
_RACY = ("local-workload-unknown", "certificate-fetch-failed", "identity-error")


def _startup_race(model: Any, bucket: _Bucket) -> str:
    """Errors that stop within two minutes of the pod's start are the known start-up races (failure-modes.md R08,
    R15): "" when they are not."""
    if bucket.code not in _RACY or bucket.first is None or bucket.last is None:
        return ""
    subject = bucket.subject
    if subject[0] == "pod":
        pods = [model.pod(subject[1], subject[2])]
    elif subject[0] == "sa":
        _, ns, sa, node = subject
        pods = [p for p in model.pods() if meta(p).get("namespace") == ns and pod_node(p) == node
                and (dig(p, "spec", "serviceAccountName") or "default") == sa]
    else:
        return ""
    for pod in pods:
        started = _time(dig(pod, "status", "startTime")) if pod else None
        if started is not None and started.timestamp() - 5 <= bucket.first.timestamp() \
                and bucket.last.timestamp() <= started.timestamp() + RACE_SECONDS:
            return (f"All within {int(RACE_SECONDS)}s of the pod's start ({iso(started)}): the known start-up race, "
                    "not an outage")
    return ""


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _resources(model: Any, bucket: _Bucket) -> tuple[list[Resource], str]:
    subject = bucket.subject
    ztunnel = _busiest_ztunnel(bucket)
    kind = subject[0]
    if kind == "pod":
        _, ns, name = subject
        pod = model.pod(ns, name)
        node = pod_node(pod) if pod is not None else None
        return [Resource("Pod", name, ns, node=node or None, ztunnel=ztunnel)], f"pod {ns}/{name}"
    if kind in ("ztunnel", "cni"):
        _, ns, pod, node = subject
        return ([Resource("Pod", pod, ns or None, node=node or None, ztunnel=pod if kind == "ztunnel" else None)],
                f"{'ztunnel' if kind == 'ztunnel' else 'istio-cni'} {pod} on node {node}")
    if kind == "sa":
        _, ns, sa, node = subject
        local = [p for p in model.pods() if meta(p).get("namespace") == ns and pod_node(p) == node
                 and (dig(p, "spec", "serviceAccountName") or "default") == sa]
        resources = [Resource("ServiceAccount", sa, ns, node=node or None, ztunnel=ztunnel)]
        resources += [Resource("Pod", str(meta(p).get("name")), ns, node=node or None, ztunnel=ztunnel)
                      for p in local]
        pods = f" (pods {', '.join(r.name for r in resources[1:])})" if local else ""
        return resources, f"identity {ns}/{sa} on node {node}{pods}"
    _, ip = subject
    return [Resource("Address", ip or "unknown", ztunnel=ztunnel)], f"address {ip or 'unknown'}"


def _busiest_ztunnel(bucket: _Bucket) -> str | None:
    for path, _ in sorted(bucket.per_log.items(), key=lambda kv: (-kv[1], kv[0])):
        parts = path.split("/")
        if parts[0] == "ztunnel" and len(parts) >= 3:
            return parts[2]
    return None


def _hint(model: Any, bucket: _Bucket) -> str:
    """Context from the Kubernetes objects: the NetworkPolicies and ALLOW policies that apply."""
    if bucket.subject[0] != "pod":
        return ""
    _, ns, name = bucket.subject
    pod = model.pod(ns, name)
    if pod is None:
        return ""
    if bucket.code == "hbone-port-blocked":
        blocking = [f"{ns}/{meta(np).get('name')}" for np in model.k8s("networkpolicies", "networking.k8s.io")
                    if meta(np).get("namespace") == ns and _netpol_blocks_hbone(np, pod)]
        if blocking:
            return f"NetworkPolicies selecting the pod without port 15008: {', '.join(blocking)}"
        return "no NetworkPolicy in the bundle explains it: check other firewalls (cloud security groups, CNI policies)"
    if bucket.code in ("policy-allow-no-match", "policy-waypoint-not-allowed", "policy-rejection"):
        allow = [f"{meta(p).get('namespace')}/{meta(p).get('name')}" for p in applicable_policies(model, pod)
                 if str(dig(p, "spec", "action") or "ALLOW").upper() == "ALLOW"]
        if allow:
            return f"ALLOW policies that apply to the pod: {', '.join(allow)}"
    return ""


def _netpol_blocks_hbone(np: dict[str, Any], pod: dict[str, Any]) -> bool:
    spec = np.get("spec") or {}
    if not selector_matches(spec.get("podSelector") or {}, labels(pod)):
        return False
    types = spec.get("policyTypes") or ["Ingress"]
    if "Ingress" not in types:
        return False
    rules = spec.get("ingress") or []
    if not rules:
        return True  # deny all ingress
    for rule in rules:
        ports = rule.get("ports") if isinstance(rule, dict) else None
        if not ports:
            return False  # a rule without ports allows every port (for its peers)
        for port in ports:
            value = port.get("port") if isinstance(port, dict) else None
            end = port.get("endPort") if isinstance(port, dict) else None
            if value is None or value == 15008 or str(value) == "15008":
                return False
            if isinstance(value, int) and isinstance(end, int) and value <= 15008 <= end:
                return False
    return True


# --- subjects ----------------------------------------------------------------------------------------------------


def _peer_subject(scan: _Scan, rec: Any, side: str) -> tuple[str, ...]:
    """The pod on one side of an access line: ``<side>.workload``/``<side>.namespace``, else its IP."""
    name, ns = rec.field(f"{side}.workload"), rec.field(f"{side}.namespace")
    if isinstance(name, str) and isinstance(ns, str) and name and ns and scan.model.pod(ns, name) is not None:
        return ("pod", ns, name)
    addr = rec.field("dst.hbone_addr") if side == "dst" else None
    addr = addr or rec.field(f"{side}.addr")
    ip = split_addr(str(addr or ""))[0]
    pod = scan.model.pods_by_ip().get(ip)
    if pod is not None:
        return ("pod", meta(pod).get("namespace", ""), meta(pod).get("name", ""))
    if isinstance(name, str) and isinstance(ns, str) and name and ns:
        return ("pod", ns, name)
    return ("addr", ip)


def _workload_subject(scan: _Scan, text: str, log: Any) -> tuple[str, ...]:
    """``<sa>.<ns> (<pod>)`` (ztunnel's WorkloadInfo) or an IP."""
    text = text.strip()
    m = _WORKLOAD_TEXT_RE.match(text)
    if m:
        return ("pod", m.group("ns"), m.group("pod"))
    pod = scan.model.pods_by_ip().get(split_addr(text)[0])
    if pod is not None:
        return ("pod", meta(pod).get("namespace", ""), meta(pod).get("name", ""))
    return ("addr", text) if text else ("ztunnel", log.namespace, log.pod, log.node)


def _identity_subject(identity: str, log: Any) -> tuple[str, ...]:
    parsed = parse_identity(identity)
    if parsed is None:
        return ("ztunnel", log.namespace, log.pod, log.node)
    return ("sa", parsed[0], parsed[1], log.node)


def _source_name(rec: Any) -> str:
    ns, name = rec.field("src.namespace"), rec.field("src.workload")
    identity = rec.field("src.identity")
    who = f"{ns}/{name}" if ns and name else split_addr(str(rec.field("src.addr", "") or ""))[0] or "unknown"
    if isinstance(identity, str) and identity:
        return f"{who} ({identity})"
    return f"{who} (no identity: plaintext)"


def _cert_error(message: str) -> str:
    inner = message.partition("(")[2].rpartition(")")[0] if "(" in message else message
    return _short(inner or message, 200)


def _tls_reason(error: str) -> str:
    for needle in ("UnknownIssuer", "BadSignature", "Expired", "NotValidYet", "UnknownCA"):
        if needle in error:
            return needle
    return _short(error, 120)


# --- shared helpers (also used by traffic-path, load-balancing, metrics) -----------------------------------------


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def split_addr(addr: str) -> tuple[str, int | None]:
    """``10.0.0.1:80`` -> (``10.0.0.1``, 80); ``[fd00::1]:80`` -> (``fd00::1``, 80); a bare IP or host -> (it, None)."""
    addr = addr.strip().strip('"')
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return host, int(port) if port.isdigit() else None
    if addr.count(":") == 1:
        host, _, port = addr.partition(":")
        return host, int(port) if port.isdigit() else None
    return addr, None


def parse_identity(identity: str | None) -> tuple[str, str] | None:
    """``spiffe://td/ns/<ns>/sa/<sa>`` -> (ns, sa)."""
    if not identity:
        return None
    parts = identity.removeprefix("spiffe://").split("/")
    if len(parts) >= 5 and parts[1] == "ns" and parts[3] == "sa":
        return parts[2], parts[4]
    return None


def meta(obj: dict[str, Any] | None) -> dict[str, Any]:
    value = obj.get("metadata") if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else {}


def labels(obj: dict[str, Any] | None) -> dict[str, str]:
    value = meta(obj).get("labels")
    return value if isinstance(value, dict) else {}


def annotations(obj: dict[str, Any] | None) -> dict[str, str]:
    value = meta(obj).get("annotations")
    return value if isinstance(value, dict) else {}


def pod_node(pod: dict[str, Any] | None) -> str:
    spec = pod.get("spec") if isinstance(pod, dict) else None
    node = spec.get("nodeName") if isinstance(spec, dict) else None
    return node if isinstance(node, str) else ""


def workload_name(pod: dict[str, Any] | None) -> str:
    """The pod's workload (Deployment, StatefulSet, DaemonSet...) name, as Istio's ``workloadName``."""
    m = meta(pod)
    name = str(m.get("name", ""))
    for owner in m.get("ownerReferences") or ():
        if not isinstance(owner, dict):
            continue
        owner_name = str(owner.get("name", ""))
        if owner.get("kind") == "ReplicaSet":
            hash_ = labels(pod).get("pod-template-hash")
            if hash_ and owner_name.endswith("-" + hash_):
                return owner_name[: -len(hash_) - 1]
            return owner_name.rpartition("-")[0] or owner_name
        if owner.get("kind") == "Job":
            return owner_name
        if owner_name:
            return owner_name
    return name


def is_waypoint_pod(pod: dict[str, Any] | None) -> bool:
    """Waypoints, east-west gateways and HBONE sidecars terminate HBONE themselves (no ztunnel inbound line)."""
    lab = labels(pod)
    return ("gateway.networking.k8s.io/gateway-name" in lab or lab.get("networking.istio.io/tunnel") == "http"
            or "sidecar.istio.io/status" in annotations(pod))


def waypoint_identities(model: Any) -> set[tuple[str, str]]:
    """(namespace, service account) of every waypoint pod."""
    out = set()
    for pod in model.pods():
        if "gateway.networking.k8s.io/gateway-name" in labels(pod):
            spec = pod.get("spec") or {}
            out.add((str(meta(pod).get("namespace", "")), str(spec.get("serviceAccountName") or "default")))
    return out


def selector_matches(selector: dict[str, Any], target: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels and matchExpressions) against labels; {} matches everything."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if target.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and target.get(key) not in values:
            return False
        if op == "NotIn" and target.get(key) in values:
            return False
        if op == "Exists" and key not in target:
            return False
        if op == "DoesNotExist" and key in target:
            return False
    return True


def applicable_policies(model: Any, pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """AuthorizationPolicies (without targetRefs) that ztunnel applies to ``pod``: its namespace's (with a matching
    selector or none) and the root namespace's without selector."""
    ns = meta(pod).get("namespace")
    pod_labels = labels(pod)
    for policy in model.k8s("authorizationpolicies", "security.istio.io"):
        spec = policy.get("spec") or {}
        if spec.get("targetRefs") or spec.get("targetRef"):
            continue
        pns = meta(policy).get("namespace")
        selector = spec.get("selector")
        if pns == ns and (not selector or all(pod_labels.get(k) == v
                                              for k, v in (selector.get("matchLabels") or {}).items())):
            yield policy
        elif pns == "istio-system" and not selector:
            yield policy


def access_record(rec: Any) -> bool:
    """A ztunnel access-log connection event (``connection complete`` or ``connection failed``)."""
    return (rec is not None and getattr(rec, "target", None) == "access"
            and rec.message in ("connection complete", "connection failed"))
