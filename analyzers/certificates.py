"""certificates (R12, R15, R16, R17): the workload certificates each ztunnel holds, and the per-ztunnel table.

The collection time ("now") is the manifest window's end (else createdAt). Per ztunnel (streamed):

* ``cert-expired`` (R16): a certificate of the chain (leaf, intermediates, roots) expired before the collection;
  ``cert-not-yet-valid``: valid only after it (clock skew, > 5 min).
* ``cert-expiring``: a certificate expires within 24 hours **and** ztunnel should already have renewed it. Istio
  workload certificates live 24 h and ztunnel renews them at half their life, so "expires within 24 h" alone is
  true of every healthy leaf: a leaf is reported once three quarters of its life are gone (renewal overdue), a
  longer-lived certificate (root, intermediate, custom CA) as soon as it is within 24 h.
* ``cert-unavailable`` (R12/R15): state ``Unavailable: <error>`` (``the identity is no longer needed`` is normal
  clean-up: not reported); ``cert-initializing`` (R15): state ``Initializing``.
* ``cert-missing`` (R15): a workload on the ztunnel's node with protocol HBONE (or a native tunnel: waypoints)
  whose identity ``spiffe://<td>/ns/<ns>/sa/<sa>`` has no certificate entry (ztunnel prefetches exactly those).
  Pods created within a minute of the collection are only ``info``.
* ``cert-identity-mismatch``: the leaf's SAN (parsed with ``cryptography``) is not the entry's identity.
* ``trust-domain-mismatch`` (R17): a certificate identity, or a local workload, in a trust domain other than the
  mesh's (meshConfig ``trustDomain`` or ``trustDomainAliases``, default ``cluster.local``).
* ``root-mismatch`` (R16): the set of root fingerprints differs between ztunnels: the ztunnels outside the
  majority are reported (critical when they share no root with it: cross-node HBONE fails with UnknownIssuer;
  warning when they overlap, a rotation in progress). With no majority, every group is reported. When the bundle
  has an ``istio-ca-root-cert`` ConfigMap, ztunnels that do not trust its root are reported too.

Views: ``certificates`` (one row per certificate entry: node, ztunnel, identity, state, validFrom, expiration of
the leaf) and **``ztunnels``**: this analyzer owns the per-ztunnel table, since it is the one pass that visits
every dump. Rows: node, pod, version, counts of workloads/services/policies, certificates by state (available,
expiring, expired, unavailable, initializing), ``sync`` from every istiod replica's syncz (ok | nack |
disconnected | unknown), ``errors`` (error-level lines in its current log) and ``findings`` (this analyzer's
findings naming it). A ztunnel whose dump could not be read still gets a row (with its sync state).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from analyzers.xds import sync_states
from analyzers.ztunnel_istiod_drift import collection_time, parse_time, workload_resource
from analyzers.ztunnel_kubernetes import mesh_config
from bundler import layout
from bundler.analysis.dig import dig
from bundler.analysis import Analyzer, Context, Evidence, Finding, Metadata, Resource

DOCS = "https://istio.io/latest/docs/ambient/usage/troubleshoot-ztunnel/"
R12 = ("https://github.com/istio/istio/issues/56550", "https://github.com/istio/istio/issues/52057",
       "https://github.com/istio-ecosystem/sail-operator/issues/2075")
R15 = ("https://github.com/istio/ztunnel/issues/1686", "https://github.com/istio/ztunnel/issues/1805",
       "https://github.com/istio/istio/issues/53696")
R16 = ("https://github.com/istio/ztunnel/issues/1061", "https://github.com/istio/ztunnel/issues/1679",
       "https://github.com/istio/istio/issues/45102", "https://github.com/istio/istio/issues/47427")
R17 = ("https://github.com/istio/istio/issues/61608", "https://github.com/istio/istio/issues/58427",
       "https://github.com/istio/ztunnel/issues/2092")
TITLES = {
    "cert-expired": "ztunnel holds an expired certificate",
    "cert-not-yet-valid": "ztunnel holds a certificate that is not valid yet",
    "cert-expiring": "certificate close to expiry and not renewed",
    "cert-unavailable": "ztunnel could not get a workload certificate",
    "cert-initializing": "workload certificate still initializing",
    "cert-missing": "no certificate for a local HBONE workload",
    "cert-identity-mismatch": "certificate SAN differs from its identity",
    "trust-domain-mismatch": "identity outside the mesh trust domain",
    "root-mismatch": "ztunnels trust different roots",
}
REMEDIATION = {
    "cert-expired": ("ztunnel failed to renew: check its 'certificate fetch failed' / 'renewal failed' log lines "
                     "and istiod's CA (serverca) log; check node clocks; restart the ztunnel to force a fetch."),
    "cert-not-yet-valid": "Fix the clock of the node (NTP) or of the CA that issued it.",
    "cert-expiring": ("ztunnel should have renewed it at half its life: check its certificate log lines and "
                      "istiod's CA; for roots and intermediates, plan the rotation now."),
    "cert-unavailable": ("Read the error: 'request impersonation authentication failure' means istiod does not "
                         "trust the ztunnel's service account (set pilot.trustedZtunnelNamespace / "
                         "CA_TRUSTED_NODE_ACCOUNTS); connection errors mean istiod:15012 is unreachable."),
    "cert-initializing": ("If it persists beyond a few seconds, see istiod's serverca log ('impersonation failed "
                          "... no instances found on node'); restart the pod or the ztunnel as a workaround."),
    "cert-missing": ("ztunnel never asked for this identity: check its log for 'unable to prefetch cert' and "
                     "istiod's serverca log; restart the pod or ztunnel as a workaround (ztunnel#1686)."),
    "cert-identity-mismatch": ("The CA returned a certificate for another identity (istio-csr without "
                               "impersonation support?): fix the CA integration."),
    "trust-domain-mismatch": ("Use one trust domain (meshConfig.trustDomain) everywhere, or list the others in "
                              "trustDomainAliases (ztunnel ignores aliases before ztunnel#2092)."),
    "root-mismatch": ("Distribute one trust bundle to every node (istio-ca-root-cert, cacerts), finish root "
                      "rotations in the documented order and restart ztunnels that kept the old root."),
}
REFERENCES = {"cert-expired": R16, "cert-not-yet-valid": R16, "cert-expiring": R16, "cert-unavailable": R12 + R15,
              "cert-initializing": R15, "cert-missing": R15, "cert-identity-mismatch": R12,
              "trust-domain-mismatch": R17, "root-mismatch": R16}
EXPIRING = timedelta(hours=24)
LEAF_OVERDUE = 0.75  # fraction of a short-lived certificate's life after which renewal is overdue
SKEW = timedelta(minutes=5)
YOUNG = timedelta(seconds=60)
NO_LONGER_NEEDED = "the identity is no longer needed"


def spiffe_trust_domain(identity: str) -> str | None:
    if not identity.startswith("spiffe://"):
        return None
    return identity[len("spiffe://"):].split("/", 1)[0]


def mesh_trust_domains(model: Any) -> tuple[str, set[str]]:
    """meshConfig's trustDomain (default cluster.local) and the trust domains it accepts (with its aliases)."""
    mesh = mesh_config(model)
    td = str(mesh.get("trustDomain") or "cluster.local")
    aliases = mesh.get("trustDomainAliases") or []
    return td, {td} | {str(a) for a in aliases if isinstance(a, str)}


@dataclass
class _Parsed:
    fingerprint: str
    uris: tuple[str, ...]


class _Pem:
    """PEM parsing with a cache: roots are the same on every ztunnel."""

    def __init__(self) -> None:
        self.cache: dict[str, _Parsed | None] = {}

    def parse(self, pem: str) -> _Parsed | None:
        if not pem:
            return None
        if pem not in self.cache:
            try:
                cert = x509.load_pem_x509_certificate(pem.encode())
            except ValueError:
                self.cache[pem] = None
            else:
                try:
                    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                    uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
                except x509.ExtensionNotFound:
                    uris = ()
                der = cert.public_bytes(serialization.Encoding.DER)
                self.cache[pem] = _Parsed(hashlib.sha256(der).hexdigest(), uris)
        return self.cache[pem]

    def root_id(self, info: Any) -> str:
        parsed = self.parse(info.pem)
        return parsed.fingerprint if parsed is not None else f"serial:{info.serial}"


@dataclass
class _Row:
    node: str
    pod: str
    namespace: str
    path: str
    version: str = ""
    workloads: int = 0
    services: int = 0
    policies: int = 0
    certificates: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("available", "expiring", "expired", "unavailable", "initializing"), 0))
    findings: int = 0
    roots: frozenset[str] = frozenset()
    roots_pointer: str = ""

    def to_view(self, sync: str, errors: int) -> dict[str, Any]:
        return {"node": self.node, "pod": self.pod, "version": self.version, "workloads": self.workloads,
                "services": self.services, "policies": self.policies, "certificates": dict(self.certificates),
                "sync": sync, "errors": errors, "findings": self.findings}


class Certificates(Analyzer):
    metadata = Metadata(
        id="certificates",
        title="ztunnel workload certificate problem",
        severity="error",
        description=("Checks the certificates every ztunnel holds: expired, not yet valid, expiring without "
                     "renewal, Unavailable or Initializing, missing for a local HBONE workload, SAN or trust "
                     "domain mismatches, and roots that differ between ztunnels. Also builds the per-ztunnel "
                     "table of the report (the 'ztunnels' view)."),
        docs=DOCS,
        inputs=(layout.KIND_ZTUNNEL_CONFIG_DUMP, layout.KIND_K8S_LIST, layout.KIND_ISTIOD_SYNCZ,
                layout.KIND_ZTUNNEL_LOG),
    )

    def analyze(self, ctx: Context) -> Iterator[Finding]:
        model = ctx.model
        now = collection_time(model)
        mesh_td, accepted_tds = mesh_trust_domains(model)
        pem = _Pem()
        rows: dict[str, _Row] = {}
        cert_rows: list[dict[str, Any]] = []
        for zt in model.ztunnels():
            row = rows[zt.pod] = _Row(zt.node, zt.pod, zt.namespace, zt.path,
                                      version=zt.istio_version or str(zt.version.get("istioVersion", "")),
                                      workloads=len(zt.workloads), services=len(zt.services),
                                      policies=len(zt.policies))
            for finding in self._ztunnel(ctx, zt, now, mesh_td, accepted_tds, pem, row, cert_rows):
                row.findings += 1
                yield finding
        for finding in self._roots(ctx, rows, pem):
            for r in finding.resources:
                if r.ztunnel in rows:
                    rows[r.ztunnel].findings += 1
            yield finding
        ctx.view("certificates", cert_rows)
        ctx.view("ztunnels", self._ztunnels_view(model, rows))

    # -- one ztunnel ----------------------------------------------------------------------------------------------

    def _ztunnel(self, ctx: Context, zt: Any, now: datetime | None, mesh_td: str, accepted: set[str], pem: _Pem,
                 row: _Row, cert_rows: list[dict[str, Any]]) -> Iterator[Finding]:
        model = ctx.model
        node = str(zt.config.get("localNode") or zt.node)
        needed: dict[str, list[Any]] = {}  # identity -> local HBONE workloads
        for w in zt.workloads.values():
            if w.node == node and (w.protocol == "HBONE" or w.native_tunnel):
                needed.setdefault(f"spiffe://{w.trust_domain}/ns/{w.namespace}/sa/{w.service_account}", []).append(w)
                if w.trust_domain not in accepted:
                    yield self._finding(
                        ctx, "trust-domain-mismatch", [workload_resource(w, zt)],
                        f"workload {w.namespace}/{w.name} on node {node} has trust domain {w.trust_domain!r}, but the "
                        f"mesh's is {mesh_td!r}: peers expecting one reject the other's SAN.",
                        [Evidence(zt.path, zt.pointer("workloads", w.uid), excerpt=f"trustDomain: {w.trust_domain}")],
                        "error")
        roots: set[str] = set()
        for cert in zt.certificates:
            pointer = zt.pointer("certificates", cert.identity)
            users = needed.get(cert.identity, [])
            subject = [workload_resource(w, zt) for w in users] or [self._identity_resource(cert.identity, zt)]
            leaf = cert.chain[0] if cert.chain else None
            cert_rows.append({"node": zt.node, "ztunnel": zt.pod, "identity": cert.identity, "state": cert.state,
                              "validFrom": leaf.valid_from if leaf else None,
                              "expiration": leaf.expiration if leaf else None})
            state = cert.state or ""
            if state.startswith("Unavailable"):
                row.certificates["unavailable"] += 1
                if NO_LONGER_NEEDED in state:
                    continue
                yield self._finding(
                    ctx, "cert-unavailable", subject,
                    f"ztunnel {zt.pod} on node {zt.node} has no certificate for {cert.identity}: {state}. "
                    f"{'Local workloads with this identity cannot use mTLS.' if users else ''}".strip(),
                    [Evidence(zt.path, pointer, excerpt=f"state: {state}"[:300])],
                    "critical" if users else "warning")
                continue
            if state == "Initializing":
                row.certificates["initializing"] += 1
                young = users and all(self._young(model, w, now) for w in users)
                yield self._finding(
                    ctx, "cert-initializing", subject,
                    f"ztunnel {zt.pod} on node {zt.node} is still fetching the certificate of {cert.identity} "
                    "(state Initializing): until it has one, connections of its workloads have no identity and "
                    "are rejected by ALLOW policies.",
                    [Evidence(zt.path, pointer, excerpt="state: Initializing")], "info" if young else "error")
                continue
            status = "available"
            if leaf is not None:
                parsed = pem.parse(leaf.pem)
                if parsed is not None and parsed.uris and cert.identity not in parsed.uris:
                    yield self._finding(
                        ctx, "cert-identity-mismatch", subject,
                        f"the certificate ztunnel {zt.pod} holds for {cert.identity} names "
                        f"{', '.join(parsed.uris)} in its SAN: peers reject it.",
                        [Evidence(zt.path, f"{pointer}/certChain/0", excerpt=f"SAN {', '.join(parsed.uris)}")],
                        "error")
            td = spiffe_trust_domain(cert.identity)
            if td is not None and td not in accepted:
                yield self._finding(
                    ctx, "trust-domain-mismatch", subject,
                    f"ztunnel {zt.pod} holds a certificate for {cert.identity} in trust domain {td!r}, but the "
                    f"mesh's trust domain is {mesh_td!r}.",
                    [Evidence(zt.path, pointer, excerpt=f"identity: {cert.identity}")], "error")
            chain = [("certChain", i, c) for i, c in enumerate(cert.chain)]
            chain += [("rootCerts", i, c) for i, c in enumerate(cert.roots)]
            for part, i, info in chain:
                verdict = self._validity(info, now)
                if verdict is None:
                    continue
                code, severity, text = verdict
                if code == "cert-expired":
                    status = "expired"
                elif code == "cert-expiring" and status == "available":
                    status = "expiring"
                which = "leaf" if part == "certChain" and i == 0 else "root" if part == "rootCerts" else "chain"
                yield self._finding(
                    ctx, code, subject,
                    f"ztunnel {zt.pod} on node {zt.node}: the {which} certificate of {cert.identity} {text}.",
                    [Evidence(zt.path, self._cert_pointer(zt, pointer, part, i, len(cert.chain)),
                              excerpt=f"validFrom {info.valid_from}, expirationTime {info.expiration}, "
                                      f"serialNumber {info.serial}")],
                    severity)
            row.certificates[status] += 1
            if cert.roots:
                roots.update(pem.root_id(r) for r in cert.roots)
                if not row.roots_pointer:
                    row.roots_pointer = self._cert_pointer(zt, pointer, "rootCerts", 0, len(cert.chain))
        row.roots = frozenset(roots)
        held = {c.identity for c in zt.certificates}
        for identity, users in sorted(needed.items()):
            if identity in held:
                continue
            young = all(self._young(model, w, now) for w in users)
            names = ", ".join(f"{w.namespace}/{w.name}" for w in users[:5])
            yield self._finding(
                ctx, "cert-missing", [workload_resource(w, zt) for w in users],
                f"ztunnel {zt.pod} on node {node} holds no certificate for {identity}, the identity of its local "
                f"HBONE workload(s) {names}: their connections have no mTLS identity (R15).",
                [Evidence(zt.path, "/certificates", excerpt=f"no entry with identity {identity}")]
                + [Evidence(zt.path, zt.pointer("workloads", w.uid), excerpt=f"{w.namespace}/{w.name}: protocol "
                            f"{w.protocol}, node {w.node}") for w in users[:2]],
                "info" if young else "error")

    @staticmethod
    def _cert_pointer(zt: Any, pointer: str, part: str, i: int, chain_len: int) -> str:
        """JSON pointer of one certificate: 1.22-1.25 dumps keep the root as the last certChain entry."""
        if part == "rootCerts" and not _has_root_certs(zt):
            return f"{pointer}/certChain/{chain_len + i}"
        return f"{pointer}/{part}/{i}"

    @staticmethod
    def _validity(info: Any, now: datetime | None) -> tuple[str, str, str] | None:
        """(code, severity, text) when the certificate is expired, not yet valid or expiring unrenewed."""
        start, end = parse_time(info.valid_from), parse_time(info.expiration)
        if now is None or end is None:
            return None
        if end <= now:
            return "cert-expired", "critical", f"expired at {info.expiration}, before the collection ({_t(now)})"
        if start is not None and start - now > SKEW:
            return "cert-not-yet-valid", "error", f"is valid only from {info.valid_from} (collection {_t(now)})"
        if end - now > EXPIRING:
            return None
        if start is not None and end - start <= 2 * EXPIRING:  # a short-lived (workload) certificate
            if now - start < (end - start) * LEAF_OVERDUE:
                return None  # within 24h of expiry, as every healthy 24h leaf is: renewal is not due yet
            why = "ztunnel renews at half its life, so renewal is overdue"
        else:
            why = "plan its rotation"
        return "cert-expiring", "warning", f"expires at {info.expiration}, within 24h of the collection ({why})"

    @staticmethod
    def _young(model: Any, w: Any, now: datetime | None) -> bool:
        if now is None:
            return False
        pod = model.pod(w.namespace, w.name)
        created = parse_time(dig(pod, "metadata", "creationTimestamp"))
        return created is not None and now - created < YOUNG

    @staticmethod
    def _identity_resource(identity: str, zt: Any) -> Resource:
        parts = identity.split("/")
        if len(parts) >= 7 and parts[3] == "ns" and parts[5] == "sa":
            return Resource("ServiceAccount", parts[6], parts[4], node=zt.node, ztunnel=zt.pod)
        return Resource("Identity", identity, None, node=zt.node, ztunnel=zt.pod)

    def _finding(self, ctx: Context, code: str, resources: list[Resource], message: str,
                 evidence: list[Evidence], severity: str) -> Finding:
        return ctx.finding(code, message, title=TITLES[code], severity=severity, resources=resources,
                           evidence=evidence, remediation=REMEDIATION[code], references=REFERENCES[code])

    # -- across ztunnels ------------------------------------------------------------------------------------------

    def _roots(self, ctx: Context, rows: dict[str, _Row], pem: _Pem) -> Iterator[Finding]:
        groups: dict[frozenset[str], list[_Row]] = {}
        for row in rows.values():
            if row.roots:
                groups.setdefault(row.roots, []).append(row)
        total = sum(len(members) for members in groups.values())
        if len(groups) > 1:
            majority = next((roots for roots, members in groups.items() if len(members) * 2 > total), None)
            for roots, members in sorted(groups.items(), key=lambda item: (-len(item[1]), sorted(item[0]))):
                if roots == majority:
                    continue
                reference = majority if majority is not None else frozenset().union(
                    *(r for r in groups if r != roots))
                overlap = bool(roots & reference)
                for row in members:
                    against = (f"the majority of ztunnels ({len(groups[majority])} of {total})" if majority
                               is not None else "the other ztunnels (there is no majority)")
                    yield self._finding(
                        ctx, "root-mismatch", [Resource("Pod", row.pod, row.namespace or None,
                                                                     node=row.node, ztunnel=row.pod)],
                        f"ztunnel {row.pod} on node {row.node} trusts root(s) {_fps(roots)}, {against} trust "
                        f"{_fps(reference)}: "
                        + ("they overlap (a rotation in progress?)." if overlap else
                           "no common root: HBONE between this node and the others fails with UnknownIssuer."),
                        [Evidence(row.path, row.roots_pointer or "/certificates",
                                  excerpt=f"root fingerprints {_fps(roots)}")],
                        "warning" if overlap else "critical")
        ca_roots = self._ca_roots(ctx, pem)
        if ca_roots:
            for roots, members in groups.items():
                if roots & ca_roots:
                    continue
                for row in members:
                    yield self._finding(
                        ctx, "root-mismatch", [Resource("Pod", row.pod, row.namespace or None,
                                                                     node=row.node, ztunnel=row.pod)],
                        f"ztunnel {row.pod} on node {row.node} trusts root(s) {_fps(roots)}, none of which is the "
                        f"root of the istio-ca-root-cert ConfigMap ({_fps(ca_roots)}).",
                        [Evidence(row.path, row.roots_pointer or "/certificates",
                                  excerpt=f"root fingerprints {_fps(roots)}")], "critical")

    @staticmethod
    def _ca_roots(ctx: Context, pem: _Pem) -> frozenset[str]:
        out = set()
        for cm in ctx.model.k8s("configmaps"):
            meta = cm.get("metadata") if isinstance(cm.get("metadata"), dict) else {}
            data = cm.get("data") if isinstance(cm.get("data"), dict) else {}
            if meta.get("name") == "istio-ca-root-cert" and isinstance(data.get("root-cert.pem"), str):
                text = data["root-cert.pem"]
                for block in text.split("-----END CERTIFICATE-----")[:-1]:
                    parsed = pem.parse(block.strip() + "\n-----END CERTIFICATE-----\n")
                    if parsed is not None:
                        out.add(parsed.fingerprint)
        return frozenset(out)

    # -- the ztunnels view ----------------------------------------------------------------------------------------

    def _ztunnels_view(self, model: Any, rows: dict[str, _Row]) -> list[dict[str, Any]]:
        sync = sync_states(model)
        out = []
        for ref in model.ztunnel_refs():
            row = rows.get(ref.pod) or _Row(ref.node, ref.pod, ref.namespace, ref.dump_path)
            out.append(row.to_view(sync.get(ref.pod, "unknown"), _error_lines(model, ref.log_path)))
        return out


def _error_lines(model: Any, path: str | None) -> int:
    if path is None or model.status(path) not in ("ok", "truncated"):
        return 0
    count = 0
    for ref in model.log_records(path):
        rec = ref.record
        if rec is not None and getattr(rec, "level", "") == "error":
            count += 1
    return count


def _has_root_certs(zt: Any) -> bool:
    minor = _minor(zt.istio_version)
    return minor is None or minor >= 26


def _minor(version: str) -> int | None:
    parts = (version or "").split(".")
    try:
        return int(parts[1])
    except (IndexError, ValueError):
        return None


def _fps(roots: frozenset[str]) -> str:
    return ", ".join(sorted(r[:16] if not r.startswith("serial:") else r for r in roots)) or "none"


def _t(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
