"""A deterministic certificate authority for synthetic meshes.

Real X.509 chains (a self-signed root, SPIFFE workload leaves) so that analyzers and tools that decode
the ``pem`` fields of a config dump see what they would see in a cluster. Keys are ECDSA P-256 derived
from the scenario seed and signatures are RFC 6979 deterministic, so the same scenario gives the same
bytes every time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _derive_key(*parts: object) -> ec.EllipticCurvePrivateKey:
    digest = hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()
    return ec.derive_private_key(int.from_bytes(digest, "big") % (_P256_ORDER - 1) + 1, ec.SECP256R1())


def _serial(*parts: object) -> int:
    # Istio's CA uses random 128-bit serials; keep the top bit clear so the DER integer stays positive.
    return int.from_bytes(hashlib.sha256("\x01".join(map(str, parts)).encode()).digest()[:16], "big") >> 1


@dataclass(frozen=True)
class IssuedCert:
    pem: str
    serial: int
    valid_from: datetime
    expiration: datetime


class CertificateAuthority:
    """A root CA named like istiod's self-signed one (O=<trust domain>)."""

    def __init__(self, seed: object, trust_domain: str, not_before: datetime, not_after: datetime) -> None:
        self.seed = seed
        self.trust_domain = trust_domain
        self._key = _derive_key(seed, "root", trust_domain)
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
        self._name = name
        public = self._key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(_serial(seed, "root", trust_domain))
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256(), ecdsa_deterministic=True)
        )
        self.root = IssuedCert(cert.public_bytes(serialization.Encoding.PEM).decode(), cert.serial_number,
                               not_before, not_after)
        self._leaf_key = _derive_key(seed, "leaf", trust_domain)
        self._ski = x509.SubjectKeyIdentifier.from_public_key(public)

    def issue(self, spiffe_id: str, not_before: datetime, not_after: datetime, *salt: object) -> IssuedCert:
        """A workload certificate for ``spiffe_id`` (URI SAN), as istiod's CA signs for ztunnel."""
        # One leaf key for all leaves: signing is the cost that matters at scale, key generation is not needed
        # for realism (ztunnel never shows keys).
        public = self._leaf_key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self._name)
            .public_key(public)
            .serial_number(_serial(self.seed, spiffe_id, not_before.isoformat(), *salt))
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH,
                                                  x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self._ski), critical=False)
            .sign(self._key, hashes.SHA256(), ecdsa_deterministic=True)
        )
        return IssuedCert(cert.public_bytes(serialization.Encoding.PEM).decode(), cert.serial_number,
                          not_before, not_after)
