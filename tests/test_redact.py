"""bundler.redact: the secret corpus (tests/data/secrets), look-alikes kept byte for byte, Kubernetes objects, the
sample bundles, invariants (hypothesis) and 5 MB lines.

Private keys are generated fresh with ``cryptography`` for every run; nothing key-like is committed.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets
import string
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler import redact as redact_module
from bundler.archive import open_bundle
from bundler.redact import (
    KINDS,
    MARKER,
    marker,
    redact_bytes,
    redact_json,
    redact_kubernetes_list,
    redact_kubernetes_object,
    redact_text,
)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data" / "secrets"
SAMPLES = sorted((REPO / "samples").glob("*.tar.zst"))
UPSTREAM = REPO.parent / "shared" / "upstream"

# --------------------------------------------------------------------------------------------------------------------
# Generated key material and tokens (module scope: generated once per run, never written to disk)
# --------------------------------------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _pem_body(pem: str) -> str:
    """The base64 lines of a PEM (what must never survive), newline-joined."""
    return "\n".join(line for line in pem.splitlines() if line and not line.startswith("-----"))


def _make_jwt(key: rsa.RSAPrivateKey) -> str:
    header = _b64url(json.dumps({"alg": "RS256", "kid": "x1", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps({
        "aud": ["istio-ca"], "exp": 1795000000, "iat": 1794956800,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": "system:serviceaccount:bookinfo:bookinfo-ratings",
    }, separators=(",", ":")).encode())
    signature = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64url(signature)}"


def _random(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


@pytest.fixture(scope="module")
def material() -> dict[str, str]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    pem = serialization.Encoding.PEM
    rsa_pem = rsa_key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption()).decode()
    ec_pem = ec_key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()).decode()
    pkcs8_pem = rsa_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    openssh_pem = ed_key.private_bytes(pem, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()).decode()
    encrypted_pem = ec_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"test-only")).decode()
    der = ec_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    pem_b64 = base64.b64encode(rsa_pem.encode()).decode()
    wrapped = [pem_b64[i : i + 76] for i in range(0, len(pem_b64), 76)]
    truncated = "\n".join(rsa_pem.splitlines()[:8])
    alnum = string.ascii_letters + string.digits
    m = {
        "RSA_PEM": rsa_pem.rstrip("\n"),
        "RSA_PEM_BODY": _pem_body(rsa_pem),
        "EC_PEM_INDENTED": "\n".join("    " + line for line in ec_pem.splitlines()),
        "EC_PEM_BODY": _pem_body(ec_pem),
        "PKCS8_PEM_JSON": json.dumps(pkcs8_pem),
        "PKCS8_PEM_BODY": _pem_body(pkcs8_pem),
        "OPENSSH_PEM": openssh_pem,
        "OPENSSH_PEM_BODY": _pem_body(openssh_pem),
        "ENCRYPTED_PEM_ONE_LINE": encrypted_pem.replace("\n", "\\n"),
        "ENCRYPTED_PEM_BODY": _pem_body(encrypted_pem),
        "TRUNCATED_PEM": truncated,
        "TRUNCATED_PEM_BODY": _pem_body(truncated),
        "PEM_B64": pem_b64,
        "PEM_B64_WRAPPED": "\n".join("    " + line for line in wrapped),
        "PEM_B64_WRAPPED_FIRST_LINE": wrapped[0],
        "PEM_B64_WRAPPED_LAST_LINE": wrapped[-1],
        "DER_B64": base64.b64encode(der).decode(),
        "JWT": _make_jwt(rsa_key),
        # assembled here so that no literal token with a scanner-known prefix sits in the repository
        "GCP_API_KEY": "AIza" + "Sy" + _random(alnum + "_-", 33),
        "GITHUB_TOKEN": "gh" + "p_" + _random(alnum, 36),
        "SLACK_TOKEN": "xo" + "xb-" + _random(string.digits, 12) + "-" + _random(string.digits, 13) + "-"
        + _random(alnum, 24),
        "PRIVATE_KEY_JSON": json.dumps(pkcs8_pem),
        "PROPERTIES_B64": base64.b64encode(b"db.user=shop\ndb.password=props-Pa55\n").decode(),
    }
    return m


def _fill(template: str, material: dict[str, str]) -> str:
    return string.Template(template).safe_substitute(material)


def _secret_fragments(secret: str) -> list[str]:
    """A multi-line secret (a PEM body) must vanish line by line."""
    return [line.strip() for line in secret.splitlines() if len(line.strip()) >= 6] or [secret]


CASES: list[dict[str, Any]] = yaml.safe_load((DATA / "cases.yaml").read_text())


# --------------------------------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------------------------------


def test_corpus_ids_are_unique_and_kinds_known() -> None:
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids))
    for case in CASES:
        assert set(case["kinds"]) <= set(KINDS), case["id"]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_corpus_case(case: dict[str, Any], material: dict[str, str]) -> None:
    text = _fill(case["text"], material)
    assert "${" not in text, "unfilled placeholder"
    out, counts = redact_text(text)
    for secret in case["secrets"]:
        for fragment in _secret_fragments(_fill(secret, material)):
            assert fragment not in out, f"secret survived: {fragment!r}\n{out}"
    for kind in case["kinds"]:
        assert marker(kind) in out
    assert counts == Counter(case["kinds"])
    for kept in case.get("keep", []):
        assert kept in out, f"evidence lost: {kept!r}\n{out}"
    assert redact_text(out) == (out, Counter()), "not idempotent"
    data, bcounts = redact_bytes(text.encode())
    assert data == out.encode() and bcounts == counts
    try:
        json.loads(text)
    except ValueError:
        pass
    else:
        json.loads(out)  # JSON text stays JSON


def test_lookalikes_file_is_unchanged_byte_for_byte() -> None:
    data = (DATA / "lookalikes.txt").read_bytes()
    out, counts = redact_bytes(data)
    assert counts == Counter()
    assert out is data


@pytest.mark.parametrize("line", (DATA / "lookalikes.txt").read_text().splitlines())
def test_each_lookalike_line_is_kept(line: str) -> None:
    assert redact_text(line) == (line, Counter())


def test_marker_format() -> None:
    assert MARKER.format(kind="jwt") == "[REDACTED:jwt]" == marker("jwt")


# --------------------------------------------------------------------------------------------------------------------
# Certificates and other public material are kept
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")])
    import datetime as dt

    now = dt.datetime(2026, 11, 25, tzinfo=dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(271676055104741785552467469040731750696653685944 % (1 << 159))
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings")]), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_certificate_pem_and_its_base64_are_kept(cert_pem: str) -> None:
    chain = cert_pem + cert_pem
    public = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    dump = json.dumps({"certificates": [{
        "certChain": [{"expirationTime": "2026-11-26T10:58:17Z", "pem": base64.b64encode(p.encode()).decode(),
                       "serialNumber": "85917546363795268763397212322348253115", "validFrom": "2026-11-25T10:58:17Z"}
                      for p in (cert_pem, chain)],
        "identity": "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings", "state": "Available"}]}, indent=2)
    for text in (cert_pem, chain, public, dump, json.dumps(cert_pem), cert_pem.replace("\n", "\r\n"),
                 base64.encodebytes(chain.encode()).decode()):
        assert redact_text(text) == (text, Counter())
    body = "".join(cert_pem.splitlines()[1:-1])  # the bare base64 DER of a certificate
    assert redact_text(body) == (body, Counter())


def test_base64_pem_bundle_with_a_key_is_redacted(cert_pem: str, material: dict[str, str]) -> None:
    bundle = cert_pem + material["RSA_PEM"] + "\n"
    blob = base64.b64encode(bundle.encode()).decode()
    out, counts = redact_text(f'{{"pem":"{blob}"}}')
    assert out == '{"pem":"[REDACTED:private-key]"}' and counts == Counter({"private-key": 1})


# --------------------------------------------------------------------------------------------------------------------
# GCP service account and structured JSON
# --------------------------------------------------------------------------------------------------------------------


def test_gcp_service_account_json(material: dict[str, str]) -> None:
    text = _fill((DATA / "gcp-service-account.json").read_text(), material)
    out, counts = redact_text(text)
    assert counts == Counter({"private-key": 1, "gcp-service-account": 1})
    assert "3f1c9d0e2b7a4c5d8e6f0a1b2c3d4e5f6a7b8c9d" not in out
    for fragment in _secret_fragments(material["PKCS8_PEM_BODY"]):
        assert fragment not in out
    doc = json.loads(out)
    assert doc["client_email"].startswith("ztunnel-bundle-test@")
    assert doc["token_uri"] == "https://oauth2.googleapis.com/token"
    # the same document, decoded
    decoded = json.loads(text)
    counts = redact_json(decoded)
    assert counts == Counter({"private-key": 1, "gcp-service-account": 1})
    assert decoded["private_key_id"] == "[REDACTED:gcp-service-account]"
    assert decoded["private_key"].startswith("[REDACTED:private-key]")
    assert decoded["auth_uri"] == "https://accounts.google.com/o/oauth2/auth"


def test_redact_json_by_key_and_by_pattern(material: dict[str, str]) -> None:
    doc = {"auth": {"password": "pw-1", "username": "u", "apiKey": "k-2", "tokenPath": "/var/run/x/token"},
           "list": [{"clientSecret": "cs-3"}, "Bearer abcdefgh12345678", 7, None, True],
           "note": f"token {material['JWT']}", "pin": {"access_token": 12345}, "serviceAccountToken": {"path": "t"},
           "automountServiceAccountToken": False, "secretName": "tls", "checksum/secret": "ab" * 32}
    counts = redact_json(doc)
    assert doc["auth"] == {"password": "[REDACTED:password-assignment]", "username": "u",
                           "apiKey": "[REDACTED:password-assignment]", "tokenPath": "/var/run/x/token"}
    assert doc["list"][0] == {"clientSecret": "[REDACTED:password-assignment]"}
    assert doc["list"][1:] == ["Bearer [REDACTED:bearer-token]", 7, None, True]
    assert doc["note"] == "token [REDACTED:jwt]"
    assert doc["pin"] == {"access_token": "[REDACTED:password-assignment]"}
    assert doc["serviceAccountToken"] == {"path": "t"} and doc["secretName"] == "tls"
    assert doc["checksum/secret"] == "ab" * 32 and doc["automountServiceAccountToken"] is False
    assert counts == Counter({"password-assignment": 4, "bearer-token": 1, "jwt": 1})


# --------------------------------------------------------------------------------------------------------------------
# Kubernetes objects
# --------------------------------------------------------------------------------------------------------------------


def _load(name: str, material: dict[str, str]) -> Any:
    return json.loads(_fill((DATA / name).read_text(), material))


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_pod_env_args_and_annotations(material: dict[str, str]) -> None:
    pod = _load("pod-with-secrets.json", material)
    original = copy.deepcopy(pod)
    counts = redact_kubernetes_object(pod)
    dumped = json.dumps(pod)
    for secret in ("lastApplied-S3cret", "Wh00kP4ss", "M1gr4te-pw", "init-Pa55", "mtok-3c2b1a", "ak-live-5f4e3d2c1b",
                   "db-S3cr3t-value", "stripe-k3y-value", "sess-9a8b7c", "gcreds-1234", "ssh-priv-5678", "xauth-0a0b",
                   "Url-P4ss", material["JWT"], "AKIAIOSFODNN7EXAMPLE"):
        assert secret not in dumped, secret
    env = _env(pod["spec"]["containers"][0])
    pw = "[REDACTED:password-assignment]"
    assert env["DB_PASSWORD"] == env["STRIPE_API_KEY"] == env["SESSION_SECRET"] == pw
    assert env["GOOGLE_CREDENTIALS"] == env["SSH_PRIVATE"] == env["XDS_AUTH"] == pw
    assert env["DATABASE_URL"] == "postgres://payments:[REDACTED:basic-auth-url]@db.shop.svc:5432/payments"
    assert env["UPSTREAM_JWT_HEADER"] == "[REDACTED:jwt]"
    assert env["AWS_ACCESS_KEY_ID"] == "[REDACTED:aws-access-key]"
    # kept: references, paths, booleans, settings *about* secrets, public keys, istio metadata
    for name in ("DB_PASSWORD_FILE", "ENABLE_AUTH", "SECRET_TTL", "TOKEN_AUDIENCES", "SSH_PUBLIC_KEY",
                 "ISTIO_META_CLUSTER_ID", "API_TOKEN_FROM_SECRET", "NODE_NAME"):
        assert env[name] == _env(original["spec"]["containers"][0])[name], name
    init = pod["spec"]["initContainers"][0]
    assert init["args"] == ["--db-url=postgres://migrator:[REDACTED:basic-auth-url]@db.shop.svc:5432/shop",
                            "--password", pw, "--verbose"]
    assert init["env"][0]["value"] == pw
    assert pod["spec"]["containers"][0]["command"] == ["/app/payments", f"--api-key={pw}"]
    assert pod["spec"]["volumes"] == original["spec"]["volumes"]
    assert pod["spec"]["initContainers"][0]["image"] == original["spec"]["initContainers"][0]["image"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["example.com/webhook"] == "https://hooks:[REDACTED:basic-auth-url]@hooks.example.com/notify"
    last = json.loads(annotations["kubectl.kubernetes.io/last-applied-configuration"])
    assert last["spec"]["containers"][0]["env"][0] == {"name": "DB_PASSWORD", "value": pw}
    assert annotations["kubectl.kubernetes.io/last-applied-configuration"].endswith("\n")
    assert pod["metadata"]["uid"] == original["metadata"]["uid"] and pod["status"] == original["status"]
    assert counts == Counter({"password-assignment": 10, "basic-auth-url": 3, "jwt": 1, "aws-access-key": 1})
    assert redact_kubernetes_object(pod) == Counter()  # idempotent


def test_istio_proxy_pod_is_unchanged(material: dict[str, str]) -> None:
    pod = _load("pod-istio-proxy.json", material)
    original = copy.deepcopy(pod)
    assert redact_kubernetes_object(pod) == Counter()
    assert pod == original


def test_configmap(material: dict[str, str]) -> None:
    cm = _load("configmap-with-secrets.json", material)
    original = copy.deepcopy(cm)
    counts = redact_kubernetes_object(cm)
    pw = "[REDACTED:password-assignment]"
    data = cm["data"]
    assert data["DB_PASSWORD"] == data["api-token"] == data["credentials.json"] == pw
    assert "yaml-Pa55" not in data["application.yaml"] and f"password: {pw}" in data["application.yaml"]
    assert "username: shop" in data["application.yaml"]
    assert data["LOG_LEVEL"] == "info" and data["mesh"] == original["data"]["mesh"]
    binary = cm["binaryData"]
    assert base64.b64decode(binary["app.properties"]) == f"db.user=shop\ndb.password={pw}\n".encode()
    assert base64.b64decode(binary["signing.pem"]) == b"[REDACTED:private-key]\n"
    assert binary["logo.png"] == original["binaryData"]["logo.png"]
    assert cm["metadata"] == original["metadata"]  # checksum/secret is a digest, kept
    assert counts == Counter({"password-assignment": 5, "private-key": 1})


def test_secret_data_is_dropped() -> None:
    secret = json.loads((DATA / "secret.json").read_text())
    counts = redact_kubernetes_object(secret)
    assert "data" not in secret and "stringData" not in secret
    assert secret["metadata"]["name"] == "bookinfo-gateway-tls" and secret["metadata"]["namespace"] == "istio-system"
    assert secret["type"] == "kubernetes.io/tls" and secret["metadata"]["labels"] == {"app": "gateway"}
    dumped = json.dumps(secret)
    for value in ("c2VjcmV0LWtleS1ieXRlcw==", "Y2VydGlmaWNhdGUtYnl0ZXM=", "string-data-Pa55", "Y3J0"):
        assert value not in dumped
    assert counts == Counter({"secret-data": 4})


def test_list_of_objects() -> None:
    doc = json.loads((DATA / "list-with-secrets.json").read_text())
    counts = redact_kubernetes_list(doc)
    dumped = json.dumps(doc)
    for value in ("bGlzdC1zZWNyZXQ=", "list-redis-pw", "list-s3-secret"):
        assert value not in dumped
    assert counts == Counter({"secret-data": 1, "password-assignment": 2})
    assert redact_kubernetes_object(json.loads((DATA / "list-with-secrets.json").read_text())) == counts


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_sample_kubernetes_objects_unchanged(sample: Path) -> None:
    with open_bundle(sample) as bundle:
        for name, data in bundle.iter_members(lambda n: n.startswith("cluster/") or n.endswith("pod.json")):
            doc = json.loads(data)
            original = copy.deepcopy(doc)
            assert redact_kubernetes_object(doc) == Counter(), name
            assert doc == original, name


# --------------------------------------------------------------------------------------------------------------------
# Real bundles and upstream fixtures: byte-identical
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_sample_bundle_members_are_identical_objects(sample: Path) -> None:
    seen = set()
    with open_bundle(sample) as bundle:
        for name, data in bundle.iter_members():
            out, counts = redact_bytes(data)
            assert counts == Counter(), name
            assert out is data, name
            seen.add(name.rsplit("/", 1)[-1])
    # the interesting members were there: config dumps with base64 certificate PEMs, ztunnel and istiod logs
    assert {"config_dump.json", "istio-proxy.log", "discovery.log"} <= seen


def test_sample_config_dump_holds_certificates() -> None:
    with open_bundle(REPO / "samples" / "bookinfo-incident.tar.zst") as bundle:
        dumps = [d for _, d in bundle.iter_members(lambda n: n.startswith("ztunnel/") and n.endswith("_dump.json"))]
    pems = [c["pem"] for d in dumps for cert in json.loads(d)["certificates"] for c in cert["certChain"]]
    assert pems and all(base64.b64decode(p).startswith(b"-----BEGIN CERTIFICATE-----") for p in pems)
    for dump in dumps:
        assert redact_bytes(dump)[0] is dump


@pytest.mark.skipif(not UPSTREAM.is_dir(), reason="upstream fixtures not checked out beside the repository")
def test_upstream_fixtures_are_identical() -> None:
    files = [p for p in UPSTREAM.rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        out, counts = redact_bytes(data)
        assert counts == Counter(), path
        assert out is data


# --------------------------------------------------------------------------------------------------------------------
# bytes, invalid UTF-8, long lines
# --------------------------------------------------------------------------------------------------------------------


def test_redact_bytes_returns_same_object_when_clean() -> None:
    data = b"2026-11-25T11:00:00Z\tinfo\taccess\tconnection complete\tsrc.addr=10.0.0.1:1 \xff\xfe not utf-8"
    out, counts = redact_bytes(data)
    assert out is data and counts == Counter()


def test_invalid_utf8_survives_around_a_redaction() -> None:
    data = b"\xff\xfe\x80 password=hunter2 \xc3\x28 \xed\xa0\x80 end\xf0"
    out, counts = redact_bytes(data)
    assert out == b"\xff\xfe\x80 password=[REDACTED:password-assignment] \xc3\x28 \xed\xa0\x80 end\xf0"
    assert counts == Counter({"password-assignment": 1})


def test_five_megabyte_line_with_a_secret_at_the_end(material: dict[str, str]) -> None:
    with open_bundle(REPO / "samples" / "bookinfo-incident.tar.zst") as bundle:
        log = next(d for n, d in bundle.iter_members(lambda n: n.endswith("istio-proxy.log")))
    line = log.replace(b"\n", b" ")
    big = (line * (5 * 1024 * 1024 // len(line) + 1))[: 5 * 1024 * 1024] + b" token=" + material["JWT"].encode()
    out, counts = redact_bytes(big)
    assert counts == Counter({"jwt": 1})
    assert out.endswith(b" token=[REDACTED:jwt]") and out[:1000] == big[:1000]


_PATHOLOGICAL = {
    "letters": "a" * 5_000_000,
    "base64": ("LS0tLS1CRUdJTi" + "QUJD" * 1000) * 1200,
    "jwt-heads": "eyJab." * 850_000,
    "pem-begins": "-----BEGIN PRIVATE KEY-----" * 185_000,
    "header-names": "Authorization: " * 340_000,
    "assignments": 'password="' * 500_000,
    "unterminated-quote": 'password="' + "a" * 5_000_000,
    "url-schemes": "a://b:" * 850_000,
    "key-words": "keykeypass" * 500_000,
    "der-anchors": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC " * 150_000,
    "flow-objects": "{token: {" * 560_000,
    "bearer-headers": "Authorization: Bearer " * 230_000,
    "json-keys": '"password":' * 450_000,
    "escaped-quotes": 'password=\\"' * 420_000,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_PATHOLOGICAL))
def test_five_megabyte_pathological_lines_complete(name: str) -> None:
    text = _PATHOLOGICAL[name]
    out, _ = redact_text(text)  # no timing assertion: the test timeout catches catastrophic backtracking
    assert isinstance(out, str)


# --------------------------------------------------------------------------------------------------------------------
# Invariants (hypothesis)
# --------------------------------------------------------------------------------------------------------------------

_FRAGMENTS = [
    "password", "passwd", "token", "secret", "key", "api_key", "DB_PASSWORD", "Authorization", "cookie", "Bearer",
    "Basic", "=", ":", ": ", '"', "'", "\\", '\\"', "\n", "\\n", " ", "\t", "[", "]", "{", "}", ",", ";", "&", "@",
    "://", "https", "user", "eyJ", "eyJhbGciOiJub25lIn0", ".", "-", "-----BEGIN PRIVATE KEY-----",
    "-----END PRIVATE KEY-----", "-----BEGIN CERTIFICATE-----", "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0t", "MIIEvQIBADAN",
    "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AIza", "[REDACTED:jwt]", "[REDACTED:",
    "abc123", "hunter2", "x" * 40, "=" * 2, "spiffe://cluster.local/ns/a/sa/b", "10.0.0.1:15008", "#", "- ", "\r\n",
]

_mixed = st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=8)), max_size=40).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), _mixed))
def test_redact_text_never_raises_and_is_idempotent(text: str) -> None:
    once, counts = redact_text(text)
    assert redact_text(once) == (once, Counter())
    assert set(counts) <= set(KINDS)
    assert (once == text) == (not counts)


_CASE_FRAGMENTS = ["PaSsWoRd", "ToKeN", "AUTHORIZATION", "Proxy-Authorization", "X-Api-Key", "x-AUTH-token",
                   "set-COOKIE", "BEARER", "bearer ", "ghp_", "xoxb-", "sk_live_", "glpat-", "github_pat_", "Https",
                   "HTTPS://", "ftp+ssh://", "a1B2c3D4e5F6g7H8i9J0", "_", "passecret", "authkey",
                   "postgresql://admin:hunter2@db", "HTTPS://u:p4ss@h", "Authorization: Bearer abcdefgh12345678",
                   "password=hunter2", "X-Api-Key: 0123456789abcdef0123", "Cookie: a=b", "DB_Token: x1y2z3"]
_ascii_mixed = st.lists(
    st.one_of(st.sampled_from([f for f in _FRAGMENTS if f.isascii()] + _CASE_FRAGMENTS),
              st.text(alphabet=st.characters(max_codepoint=127), max_size=8)),
    max_size=60,
).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ascii_mixed)
def test_candidate_search_finds_what_the_plain_patterns_find(text: str) -> None:
    # bundler.redact looks for the case-insensitive anchors of ASCII text in its lowered copy; that must change
    # nothing, in any case mix, next to any neighbour
    fast = redact_text(text)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(redact_module, "_CANDIDATE_SEARCH", False)
        plain = redact_text(text)
    assert fast == plain


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_redact_bytes_of_arbitrary_bytes(data: bytes) -> None:
    out, counts = redact_bytes(data)
    if not counts:
        assert out is data
    assert redact_bytes(out)[1] == Counter()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60).map(lambda b: bytes(x | 0x80 for x in b)),
       st.binary(max_size=60).map(lambda b: bytes(x | 0x80 for x in b)))
def test_invalid_utf8_bytes_survive(prefix: bytes, suffix: bytes) -> None:
    data = prefix + b"\npassword=hunter2\n" + suffix
    out, counts = redact_bytes(data)
    assert out == prefix + b"\npassword=[REDACTED:password-assignment]\n" + suffix
    assert counts == Counter({"password-assignment": 1})


@settings(max_examples=100, deadline=None)
@given(st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20), st.sampled_from(_FRAGMENTS)),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=10), st.sampled_from(["password", "token", "apiKey", "env"])),
                        children, max_size=4)),
    max_leaves=20))
def test_json_text_stays_json(doc: Any) -> None:
    for text in (json.dumps(doc), json.dumps(doc, indent=2), json.dumps(doc, ensure_ascii=False)):
        out, _ = redact_text(text)
        json.loads(out)
    redact_json(doc)  # never raises


def test_markers_use_only_safe_characters() -> None:
    for kind in KINDS:
        assert re.fullmatch(r"\[REDACTED:[a-z-]+\]", marker(kind))
