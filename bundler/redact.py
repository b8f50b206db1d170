"""Secret redaction for every artifact that goes into a bundle.

Bundles are attached to public GitHub issues, so nothing secret may leak; but the analyzers read the same logs and
dumps, so over-redaction destroys evidence. Each pattern below is therefore anchored on something specific (a PEM
armour line, the ``eyJ`` of a JSON header, an ``AKIA`` prefix, a key *named* like a secret...) and checked before it
is replaced. The comments say why each pattern exists and what it deliberately leaves alone.

Public API:

* :func:`redact_text` ``(text) -> (text, Counter)``: redact a string; the counter says how many of each kind.
* :func:`redact_bytes` ``(data) -> (data, Counter)``: the same for bytes. Decodes UTF-8 with ``surrogateescape`` so
  invalid UTF-8 survives byte for byte; returns the *same object* when nothing was redacted.
* :func:`redact_json` ``(obj) -> Counter``: in place, for any decoded JSON: a string under a key named like a secret
  is replaced, every other string goes through :func:`redact_text`.
* :func:`redact_kubernetes_object` / :func:`redact_kubernetes_list` ``(obj) -> Counter``: in place, for Kubernetes
  objects: container ``env`` values by name, ConfigMap ``data``/``binaryData``, Secret ``data`` dropped, plus
  :func:`redact_json` for everything else.

A redacted span is replaced by a marker ``[REDACTED:<kind>]`` (:data:`MARKER`). The kinds are :data:`KINDS`:

* ``private-key``: PEM private keys (RSA, EC, PKCS#8, OpenSSH, encrypted, PGP), also base64-wrapped once (a ``pem``
  field holding base64 of a key PEM), and bare base64 DER keys (``MII...``).
* ``jwt``: JSON Web Tokens (service-account tokens, istio-token).
* ``bearer-token``: ``Authorization: Bearer <opaque token>`` and ``Bearer <token>`` elsewhere.
* ``auth-header``: other ``Authorization`` / ``Proxy-Authorization`` credentials (Basic, Digest...).
* ``cookie``: ``Cookie`` / ``Set-Cookie`` header values.
* ``api-key``: ``X-Api-Key`` / ``X-Auth-Token`` headers; GitHub, GitLab, Slack and Stripe tokens.
* ``aws-access-key``: AWS access key ids ``AKIA...`` / ``ASIA...``.
* ``aws-secret``: AWS secret access keys (``aws_secret_access_key=...``, ``SecretAccessKey``, a 40-character key on
  the line of a key id) and ``AWS_SESSION_TOKEN``.
* ``gcp-service-account``: the ``private_key_id`` of a service-account JSON (its ``private_key`` counts as
  ``private-key``), Google API keys ``AIza...``.
* ``basic-auth-url``: the password of ``scheme://user:password@host`` (the user is kept).
* ``password-assignment``: the value of ``password=...``, ``"token": "..."``, ``DB_PASSWORD: ...`` and friends.
* ``secret-data``: entries of a Kubernetes Secret's ``data`` / ``stringData`` (dropped).

What is deliberately kept: certificate PEMs and their base64 (ztunnel's ``certificates[].pem``), SPIFFE ids, hex
digests, UIDs, resourceVersions, xDS nonces, version strings, ztunnel/istio log lines, the word "token" in prose,
``serviceAccountToken`` projected-volume declarations, file paths in secret-named settings
(``*_KEY=/etc/certs/key.pem``).

Performance: every regular expression has bounded quantifiers and no nested ambiguous quantifiers; patterns start at a
run boundary (a look-behind) or at a literal, so each input position is examined a bounded number of times. Long
values (5 MB lines) are handled in linear time. The case-insensitive anchors of ASCII text are found in its lowered
copy (see ``_CANDIDATE_SEARCH``), and strings of Kubernetes lists are memoised; big ztunnel dumps are redacted block by
block by :mod:`bundler.redact_blocks`, with the same result.

Known gaps (documented so nobody relies on them):

* a password holding a delimiter in an unquoted ``key=value`` (``password=a b``, ``password=a,b``) leaks its tail, and
  so does one holding an escaped quote inside JSON-in-JSON; a logfmt ``password="x"`` glued to the next word
  (``"x"y``) is not taken (that shape is how a JSON string closes, and redacting it could break the document);
* ``--password value`` as two words in free text (handled in Kubernetes ``args``); ``key: value`` with a space after
  the colon in the middle of a line (taken only at the start of a line, right after ``{``, or as a quoted JSON key,
  so ``{user: a, password: b}`` keeps ``b``);
* secrets in free text without a recognisable key name, prefix or structure (a bare random string);
* private keys base64-wrapped twice, or whose base64 does not start at the PEM armour; encrypted PKCS#8 as bare DER;
* opaque ``https://<token>@host`` URLs (no ``:password`` part) unless the token has a known prefix;
* over-redaction, by design: any non-empty value under a secret-named key goes, even a harmless one
  (``"max_token": 5``, ``nextPageToken``), except booleans, placeholders, references and file paths.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "KINDS",
    "MARKER",
    "marker",
    "redact_bytes",
    "redact_json",
    "redact_kubernetes_list",
    "redact_kubernetes_object",
    "redact_list_item",
    "redact_text",
]

MARKER = "[REDACTED:{kind}]"
"""Format of the text that replaces a secret: ``MARKER.format(kind="jwt")`` is ``[REDACTED:jwt]``."""

KINDS: tuple[str, ...] = (
    "private-key",
    "jwt",
    "bearer-token",
    "auth-header",
    "cookie",
    "api-key",
    "aws-access-key",
    "aws-secret",
    "gcp-service-account",
    "basic-auth-url",
    "password-assignment",
    "secret-data",
)

_MARKER_PREFIX = "[REDACTED:"

# Upper bounds. A value longer than these is still redacted up to the bound where that is safe (PEM bodies, base64
# runs); the bounds exist so that no single match can scan more than a fixed window.
_MAX_PEM = 64 * 1024  # an 8192-bit RSA key PEM is ~6.5 KB; JSON escaping and chains stay far below
_MAX_B64_RUN = 1024 * 1024  # base64 of a PEM bundle
_MAX_VALUE = 1024 * 1024  # a value under a secret-named key; longer ones are not recognised as values
_MAX_LINE_VALUE = 1024 * 1024  # rest-of-line values (YAML ``password: ...``)


def marker(kind: str) -> str:
    """The marker that replaces a secret of ``kind``."""
    return MARKER.format(kind=kind)


# --------------------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------------------

_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_B64_RUN = re.compile(r"[A-Za-z0-9+/]{0,65536}")
_B64_LINE = re.compile(r"[A-Za-z0-9+/]{1,65536}+={0,2}(?=[\r\n\"']|\\[nr]|$)")

Edit = tuple[int, int, str, str]  # start, end, replacement, kind


def _apply_edits(text: str, edits: list[Edit], counts: Counter[str]) -> str:
    """Apply non-overlapping edits (sorted by start; overlapping later ones are dropped)."""
    if not edits:
        return text
    edits.sort(key=lambda e: (e[0], -e[1]))
    out: list[str] = []
    pos = 0
    for start, end, repl, kind in edits:
        if start < pos:
            continue
        out.append(text[pos:start])
        out.append(repl)
        counts[kind] += 1
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _scan_b64_run(text: str, pos: int, limit: int = _MAX_B64_RUN) -> int:
    """End of a base64 run starting at ``pos``.

    The run may be wrapped (``base64`` wraps at 76 columns, YAML indents continuation lines, JSON holds ``\\n``
    escapes), so a line break followed by more base64 continues it. ``=`` padding ends it.
    """
    n = min(len(text), pos + limit)
    i = pos
    while i < n:
        m = _B64_RUN.match(text, i, n)
        assert m is not None  # {0,...} always matches
        i = m.end()
        if i >= n:
            break
        c = text[i]
        if c == "=":
            j = i
            while j < n and j - i < 2 and text[j] == "=":
                j += 1
            return j
        # a line break (real or JSON-escaped), then indentation, then more base64: the run continues
        if c == "\n":
            j = i + 1
        elif c == "\r" and i + 1 < n and text[i + 1] == "\n":
            j = i + 2
        elif c == "\\" and text.startswith("\\n", i):
            j = i + 2
        elif c == "\\" and text.startswith("\\r\\n", i):
            j = i + 4
        else:
            break
        while j < n and text[j] in " \t":
            j += 1
        # a continuation line holds nothing but base64 (so "  ca.crt: ..." after the last line is not swallowed)
        cm = _B64_LINE.match(text, j, n)
        if cm is not None:
            i = j
            continue
        break
    return i


def _b64_decode_loose(chunk: str) -> bytes:
    """Decode a base64 run that may contain line breaks / ``\\n`` escapes and lack padding. Never raises."""
    s = re.sub(r"\\[nr]|[\s=]", "", chunk)
    s = s[: len(s) - len(s) % 4] if len(s) % 4 == 1 else s + "=" * (-len(s) % 4)
    try:
        return binascii.a2b_base64(s)
    except (binascii.Error, ValueError):
        return b""


def _b64url_decode(seg: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))
    except (binascii.Error, ValueError):
        return b""


def _looks_credential(value: str) -> bool:
    """Stricter, for a value with no scheme or key to vouch for it: long and holding digits, or very long."""
    return (len(value) >= 16 and any(c.isdigit() for c in value)) or len(value) >= 32


def _looks_random(value: str) -> bool:
    """A credential-looking token rather than a word of prose: long, or mixing in digits/punctuation."""
    if len(value) >= 24:
        return True
    return len(value) >= 8 and any(not c.isalpha() for c in value)


# Why: a case-insensitive alternation cannot use the regex engine's fast scan for a first character, so
# ``(?i:token|key|...)`` crawled through every position at about 25 MB/s and the redactor was most of collect's CPU.
# On ASCII text, ``text.lower()`` keeps every position, and a case-sensitive pattern over it finds the same anchors
# ten times faster; the full pattern is then tried only there. Other text takes the plain path (Unicode case folding
# can change lengths, and ``(?i:k)`` matches the Kelvin sign). tests/test_redact.py compares both paths.
_CANDIDATE_SEARCH = True


def _ascii_lower(text: str) -> str | None:
    """``text.lower()`` when its positions line up with ``text``'s (ASCII text), else None."""
    return text.lower() if _CANDIDATE_SEARCH and text.isascii() else None


def _next_match(pattern: re.Pattern[str], text: str, pos: int, anchor: re.Pattern[str],
                low: str | None) -> re.Match[str] | None:
    """``pattern.search(text, pos)``, where ``pattern`` can only match where ``anchor`` matches ``low``."""
    if low is None:
        return pattern.search(text, pos)
    while True:
        c = anchor.search(low, pos)
        if c is None:
            return None
        m = pattern.match(text, c.start())  # look-behinds still see the text before the anchor
        if m is not None:
            return m
        pos = c.start() + 1


# --------------------------------------------------------------------------------------------------------------------
# Rule 1: PEM private keys
# --------------------------------------------------------------------------------------------------------------------

# Why: the one thing that must never leak. Anchored on the armour line, which only private keys carry with the words
# PRIVATE KEY (certificates, public keys and CSRs say CERTIFICATE / PUBLIC KEY / CERTIFICATE REQUEST and are kept).
# The whole block, armour included, becomes one marker. The matching END line is found even when the PEM sits in a
# JSON string with ``\n`` escapes; a block cut off before its END (a truncated log) is redacted up to where the
# base64 body stops.
_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]{1,12} ){0,3}PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END (?:[A-Z0-9]{1,12} ){0,3}PRIVATE KEY(?: BLOCK)?-----")
# A cut-off body: base64 tokens (a prose word is shorter than 16 characters unless padded), and the RFC 1421
# headers of encrypted keys, separated by whitespace, line breaks or ``\n`` escapes.
_PEM_TOKEN = re.compile(r"[A-Za-z0-9+/]{16,65536}+={0,2}|[A-Za-z0-9+/]{1,64}={1,2}")
_PEM_HEADER = re.compile(r"(?:Proc-Type|DEK-Info|Comment|Version|Hash|Charset): ?[^\r\n\\\"]{0,200}")
_PEM_SEP = re.compile(r"(?:[ \t]|\r?\n|\\r\\n|\\n){1,8}")


def _scan_truncated_pem(text: str, pos: int) -> int:
    """End of a PEM body that has no END line (a truncated log): the tokens that look like a body, no further."""
    n = min(len(text), pos + _MAX_PEM)
    end = i = pos
    while i < n:
        sm = _PEM_SEP.match(text, i, n)
        j = sm.end() if sm else i
        if j == i and i != pos:
            break  # tokens are separated
        tm = _PEM_TOKEN.match(text, j, n) or _PEM_HEADER.match(text, j, n)
        if tm is None:
            break
        end = i = tm.end()
    return end


def _rule_pem(text: str) -> Iterator[Edit]:
    if "PRIVATE KEY" not in text:
        return
    pos = 0
    end_match: re.Match[str] | None = None
    end_searched_from = -1
    no_more_ends = False
    while True:
        m = _PEM_BEGIN.search(text, pos)
        if m is None:
            return
        # cache the next END so that many BEGINs without END stay linear
        if not no_more_ends and (end_match is None or end_match.start() < m.end()):
            if end_searched_from < m.end():
                end_match = _PEM_END.search(text, m.end())
                end_searched_from = m.end()
                if end_match is None:
                    no_more_ends = True
        nxt = _PEM_BEGIN.search(text, m.end(), m.end() + _MAX_PEM)
        if (
            end_match is not None
            and end_match.start() >= m.end()
            and end_match.end() - m.start() <= _MAX_PEM
            and (nxt is None or nxt.start() > end_match.start())
            # a PEM body never holds a quote: BEGIN and END in different JSON strings are two truncated blocks
            and text.find('"', m.end(), end_match.start()) < 0
        ):
            stop = end_match.end()
        else:
            stop = _scan_truncated_pem(text, m.end())
        yield (m.start(), stop, marker("private-key"), "private-key")
        pos = stop


# --------------------------------------------------------------------------------------------------------------------
# Rule 2: base64 of a PEM private key, rule 3: base64 DER private keys
# --------------------------------------------------------------------------------------------------------------------

# Why: ztunnel's /config_dump puts base64 of PEM text in ``pem`` fields (certificates: kept), Kubernetes Secrets and
# Helm values carry ``tls.key: LS0t...``. Base64 of "-----BEGIN " always starts with "LS0tLS1CRUdJTi" when it starts
# the blob, so only runs starting with that are decoded; the run is redacted only when the decoded text holds a
# private-key armour line (a certificate chain stays byte-identical). Runs start at a run boundary (look-behind), so
# each run is decoded at most once.
_B64_PEM_ANCHOR = re.compile(r"(?<![A-Za-z0-9+/=])LS0tLS1CRUdJTi")
_DECODED_KEY = re.compile(rb"-----BEGIN (?:[A-Z0-9]{1,12} ){0,3}PRIVATE KEY")


def _rule_b64_pem(text: str) -> Iterator[Edit]:
    if "LS0tLS1CRUdJTi" not in text:
        return
    pos = 0
    while True:
        m = _B64_PEM_ANCHOR.search(text, pos)
        if m is None:
            return
        end = _scan_b64_run(text, m.start())
        if _DECODED_KEY.search(_b64_decode_loose(text[m.start() : end])):
            yield (m.start(), end, marker("private-key"), "private-key")
        pos = end


# Why: keys also travel as bare base64 DER (Java/Go configs, ``"privateKey": "MIIEv..."``). A DER private key is a
# SEQUENCE whose first element is a small INTEGER version (PKCS#1 RSA/DSA 0, SEC1 EC 1, PKCS#8 0/1, PKCS#12 3)
# followed by the right tag; a certificate, CSR or CRL is a SEQUENCE whose first element is another SEQUENCE, a public
# key starts with a big INTEGER or an AlgorithmIdentifier. Decoding 24 bytes of each ``M...`` run tells them apart.
# (the look-behind comes after the M so that the regex engine can skip to each M: 35x faster on text without one)
_DER_ANCHOR = re.compile(r"M(?<![A-Za-z0-9+/=]M)[A-Za-z0-9+/]{31}")
_DER_KEY_SHAPES = {(0, 0x02), (0, 0x30), (1, 0x04), (1, 0x30), (3, 0x30)}


def _der_is_private_key(head: bytes) -> bool:
    if len(head) < 8 or head[0] != 0x30:
        return False
    ln = head[1]
    if ln < 0x80:
        i = 2
    elif 0x81 <= ln <= 0x83:
        i = 2 + (ln - 0x80)
    else:
        return False
    if i + 4 > len(head) or head[i] != 0x02 or head[i + 1] != 0x01:
        return False
    return (head[i + 2], head[i + 3]) in _DER_KEY_SHAPES


def _rule_der_key(text: str) -> Iterator[Edit]:
    pos = 0
    while True:
        m = _DER_ANCHOR.search(text, pos)
        if m is None:
            return
        if _der_is_private_key(_b64_decode_loose(m.group())):
            end = _scan_b64_run(text, m.start())
            if end - m.start() >= 60:  # the shortest key (Ed25519 PKCS#8) is 64 characters
                yield (m.start(), end, marker("private-key"), "private-key")
                pos = end
                continue
        pos = m.end()


# --------------------------------------------------------------------------------------------------------------------
# Rule 4: JWTs
# --------------------------------------------------------------------------------------------------------------------

# Why: projected service-account tokens (istio-token) and OIDC tokens show up in error messages and headers; each one
# is a bearer credential until it expires. Base64url of '{"' is "eyJ", so a JWT header starts with it; the match is
# only redacted when the header decodes to a JSON object naming "alg" or "typ", which no digest, UID or nonce does.
# Five-part JWE compact tokens are covered by the optional tail.
_JWT = re.compile(
    r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{2,8192}+\.[A-Za-z0-9_-]{2,65536}+\.[A-Za-z0-9_-]{0,8192}+"
    r"(?:\.[A-Za-z0-9_-]{0,65536}+\.[A-Za-z0-9_-]{0,8192}+)?(?![A-Za-z0-9_-])"
)


def _rule_jwt(text: str) -> Iterator[Edit]:
    if "eyJ" not in text:
        return
    for m in _JWT.finditer(text):
        header = _b64url_decode(m.group().split(".", 1)[0])
        if header.startswith(b"{") and (b'"alg"' in header or b'"typ"' in header):
            yield (m.start(), m.end(), marker("jwt"), "jwt")


# --------------------------------------------------------------------------------------------------------------------
# Rule 5: well-known token formats (AWS, Google API keys, GitHub/GitLab/Slack/Stripe)
# --------------------------------------------------------------------------------------------------------------------

# Why: these carry a fixed, registered prefix, so a match is a credential with near certainty wherever it appears.
# AWS access key ids alone are not secret, but they identify the account and travel with their secret.
_AWS_KEY_ID = re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])")
# Why: an AWS secret access key has no prefix: 40 characters of base64. Only looked for on the same line as a key id
# (CSV credential exports, ``aws configure list`` output); requiring both letter cases keeps sha1/git hex away.
_AWS_SECRET_NEAR = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_GCP_API_KEY = re.compile(r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])")
_API_TOKEN = re.compile(
    r"(?<![A-Za-z0-9_-])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}|glpat-[A-Za-z0-9_-]{20,64}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,255}|[sr]k_live_[A-Za-z0-9]{16,255})(?![A-Za-z0-9_-])"
)


_API_TOKEN_PREFIX = re.compile("gh[pousr]_|github_pat_|glpat-|xox|k_live_")


def _line_bounds(text: str, start: int, end: int, reach: int = 256) -> tuple[int, int]:
    lo = max(0, start - reach)
    nl = text.rfind("\n", lo, start)
    lo = nl + 1 if nl >= 0 else lo
    hi = min(len(text), end + reach)
    nl = text.find("\n", end, hi)
    hi = nl if nl >= 0 else hi
    return lo, hi


def _rule_tokens(text: str) -> Iterator[Edit]:
    if "AKIA" in text or "ASIA" in text:
        for m in _AWS_KEY_ID.finditer(text):
            yield (m.start(), m.end(), marker("aws-access-key"), "aws-access-key")
            lo, hi = _line_bounds(text, m.start(), m.end())
            for s in _AWS_SECRET_NEAR.finditer(text, lo, hi):
                v = s.group()
                if any(c.isupper() for c in v) and any(c.islower() for c in v):
                    yield (s.start(), s.end(), marker("aws-secret"), "aws-secret")
    if "AIza" in text:
        for m in _GCP_API_KEY.finditer(text):
            yield (m.start(), m.end(), marker("gcp-service-account"), "gcp-service-account")
    if _API_TOKEN_PREFIX.search(text):
        for m in _API_TOKEN.finditer(text):
            yield (m.start(), m.end(), marker("api-key"), "api-key")


# --------------------------------------------------------------------------------------------------------------------
# Rule 6: credentials in URLs
# --------------------------------------------------------------------------------------------------------------------

# Why: database DSNs, registry and proxy URLs (``https://admin:hunter2@host``) end up in env values, args and error
# messages. Only the password goes: the user, host and path are evidence. The password runs to the last '@' before
# the path (passwords may hold an unencoded '@'); URLs without a ``user:password@`` part (ztunnel's
# ``https://istiod.istio-system.svc:15012``, ``spiffe://...``) never match because the port is followed by '/' or
# the end, not '@'.
_URL_CRED = re.compile(
    r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,30}://"
    r"(?P<user>[^\s:/?#\"'<>\[\]\\]{0,256}):(?P<pw>[^\s/?#\"'<>\\]{1,256})@(?=[A-Za-z0-9\[_])"
)
_PLACEHOLDER = re.compile(r"\*+|x{3,}|X{3,}|<[^<>]{0,64}>|\$\{[^{}]{0,128}\}|\$\([^()]{0,128}\)|\{\{[^{}]{0,128}\}\}")


def _url_matches(text: str) -> Iterator[re.Match[str]]:
    """``_URL_CRED.finditer(text)``, trying only the 31 positions before each ``://`` (a scheme holds no colon, so
    a match's ``://`` is the first one after its start)."""
    if not _CANDIDATE_SEARCH:
        yield from _URL_CRED.finditer(text)
        return
    pos = 0
    k = text.find("://")
    while k >= 0:
        for start in range(max(pos, k - 31), k):
            m = _URL_CRED.match(text, start)
            if m is not None:
                yield m
                pos = m.end()
                break
        k = text.find("://", max(k + 1, pos))


def _rule_url(text: str) -> Iterator[Edit]:
    if "://" not in text:
        return
    for m in _url_matches(text):
        pw = m.group("pw")
        if pw.startswith(_MARKER_PREFIX) or _PLACEHOLDER.fullmatch(pw):
            continue
        yield (m.start("pw"), m.end("pw"), marker("basic-auth-url"), "basic-auth-url")


# --------------------------------------------------------------------------------------------------------------------
# Value parsing shared by the header and assignment rules
# --------------------------------------------------------------------------------------------------------------------

_DQ_BODY = re.compile(r'(?:[^"\\\n]|\\.){0,%d}"' % _MAX_VALUE)
_ESC_DQ_BODY = re.compile(r'(?:[^"\\\n]|\\[^"\n]){0,%d}\\"' % _MAX_VALUE)
_SQ_BODY = re.compile(r"[^'\n]{0,%d}'" % _MAX_VALUE)
_UNQUOTED = re.compile(r"[^\s\"'\\&,;(){}\[\]<>]{1,%d}" % _MAX_VALUE)
_REST_OF_LINE = re.compile(r"[^\r\n\"\\]{1,%d}" % _MAX_LINE_VALUE)


_AFTER_QUOTED = frozenset(" \t\r\n,;)}]&")


def _value_span(
    text: str, p: int, *, line_value: bool, bracket: bool = False, key_quoted: bool = False
) -> tuple[int, int, str] | None:
    """Locate the value that starts at ``p``: ``(start, end, quote)`` of its contents, or None.

    ``quote`` is ``'"'``, ``'\\"'``, ``"'"`` or ``""`` (unquoted). With ``line_value`` an unquoted value runs to the
    end of the line (YAML, HTTP headers); otherwise it stops at whitespace and punctuation (``k=v k2=v2``, query
    strings, Go ``%v``).

    After an unquoted key, a ``"`` may open a logfmt value (``password="a b"``) or close the JSON string the key sits
    in (``{"a": "password=", "b": 1}``). Only the first reading is taken, when the quoted text does not start with
    JSON punctuation and is followed by a delimiter; likewise a single-quoted value may not hold a ``"``. Otherwise
    redacting could span JSON structure and break the document.
    """
    if p >= len(text):
        return None
    c = text[p]
    if c == '"':
        m = _DQ_BODY.match(text, p + 1)
        if not m:
            return None
        if not key_quoted:
            inner = text[p + 1 : m.end() - 1]
            after = text[m.end() : m.end() + 1]
            if not inner.strip() or inner.lstrip()[:1] in (",", ":", "]", "}"):
                return None
            if after and after not in _AFTER_QUOTED:
                return None
        return p + 1, m.end() - 1, '"'
    if c == "\\" and text.startswith('\\"', p):
        m = _ESC_DQ_BODY.match(text, p + 2)
        if m:
            return p + 2, m.end() - 2, '\\"'
        return None
    if c == "'":
        m = _SQ_BODY.match(text, p + 1)
        if m and (key_quoted or '"' not in m.group()):
            return p + 1, m.end() - 1, "'"
        return None
    if line_value:
        m = _REST_OF_LINE.match(text, p)
        if not m:
            return None
        end = m.end()
        if bracket:
            close = text.find("]", p, end)
            end = close if close >= 0 else end
        # a YAML comment after the value is not part of it
        hash_at = text.find(" #", p, end)
        end = hash_at if hash_at >= 0 else end
        while end > p and text[end - 1] in " \t":
            end -= 1
        return (p, end, "") if end > p else None
    m = _UNQUOTED.match(text, p)
    return (p, m.end(), "") if m else None


_EXEMPT_WORDS = frozenset(
    {"", "true", "false", "yes", "no", "on", "off", "null", "none", "nil", "enabled", "disabled", "undefined",
     "redacted", "<redacted>", "hidden", "<hidden>", "-"}
)
_PATH = re.compile(r"(?:/[\w.@+-]{1,255}){2,64}/?")
_DIGEST = re.compile(r"(?:sha256|sha512|sha1):[0-9a-f]{40,128}")


def _value_is_exempt(value: str) -> bool:
    """Values that are not secrets even under a secret-looking name: empty, booleans, placeholders, references to
    other variables, file paths (``ISTIO_META_TLS_CLIENT_KEY=/etc/certs/key.pem``), markers."""
    v = value.strip()
    if v.lower() in _EXEMPT_WORDS or v.startswith(_MARKER_PREFIX):
        return True
    if _PLACEHOLDER.fullmatch(v) or _PATH.fullmatch(v) or _DIGEST.fullmatch(v):
        return True
    return False


# --------------------------------------------------------------------------------------------------------------------
# Key-name classification
# --------------------------------------------------------------------------------------------------------------------

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")

# Why the last word: a setting *is* a secret when its name ends in one (DB_PASSWORD, clientSecret, access_token) but
# merely *about* one otherwise (TOKEN_AUDIENCES, SECRET_TTL, tokenPath, secretName, credentialName, password_file).
_SECRET_LAST = frozenset({"password", "passwd", "passphrase", "pwd", "secret", "token", "apikey", "credentials",
                          "credential"})
_SECRET_PAIRS = frozenset(
    {("api", "key"), ("access", "key"), ("secret", "key"), ("private", "key"), ("auth", "key"), ("signing", "key"),
     ("encryption", "key"), ("master", "key"), ("account", "key"), ("shared", "key"), ("session", "key"),
     ("hmac", "key"), ("client", "key"), ("license", "key"), ("app", "key"), ("storage", "key"), ("sas", "key")}
)
# Environment-variable style names are more explicit (KEY alone, PASS, AUTH, PRIVATE as the last word).
_ENV_LAST = _SECRET_LAST | {"key", "pass", "auth", "creds", "private", "cookie"}
_FILE_SUFFIX = re.compile(r"\.(?:json|ya?ml|txt|conf|cfg|ini|env|properties|toml)$", re.I)


def _words(name: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(name)]


def _text_key_is_secret(key: str) -> bool:
    """Strict rule for keys found in free text and JSON: ``password``, ``x-auth-token``, ``apiKey``, ``private_key``,
    ``ENCRYPTION_KEY`` (upper snake case with 2+ words ending in KEY/PASS/AUTH), ``"auth"`` (docker config)."""
    w = _words(key)
    if not w:
        return False
    last = w[-1]
    if last in _SECRET_LAST:
        return True
    if len(w) >= 2 and (w[-2], last) in _SECRET_PAIRS:
        return True
    if key.lstrip("-").lower() == "auth":
        return True
    stripped = key.lstrip("-")
    if len(w) >= 2 and stripped.isupper() and last in ("key", "pass", "auth") and w[-2] != "public":
        return True
    return False


def _env_name_is_secret(name: str) -> bool:
    """Rule for env var names, ConfigMap keys and CLI flags: last word PASSWORD/TOKEN/SECRET/KEY/CREDENTIALS/PRIVATE/
    AUTH/PASS... (``SSH_PUBLIC_KEY`` and ``*_KEY_ID`` are not secret; ``credentials.json`` is)."""
    w = _words(_FILE_SUFFIX.sub("", name))
    if not w:
        return False
    if w[-1] in _ENV_LAST and not (w[-1] == "key" and len(w) >= 2 and w[-2] == "public"):
        return True
    return len(w) >= 2 and (w[-2], w[-1]) in _SECRET_PAIRS


def _assignment_kind(key: str) -> str:
    """``aws_secret_access_key``, ``SecretAccessKey`` (STS JSON) and ``AWS_SESSION_TOKEN`` are AWS secrets."""
    w = _words(key)
    if w[-3:] == ["secret", "access", "key"] or ("aws" in w and ("secret" in w or "session" in w)):
        return "aws-secret"
    return "password-assignment"


# --------------------------------------------------------------------------------------------------------------------
# Rule 7: high-risk HTTP headers
# --------------------------------------------------------------------------------------------------------------------

# Why: request dumps and Go ``http.Header`` prints (``map[Authorization:[Bearer x]]``) carry credentials in a few
# well-known headers. The header name is matched anywhere (JSON keys, ``Name: value`` lines, Go maps), the value is
# parsed by its quoting. Authorization keeps its scheme (Bearer/Basic/...) as evidence; without a known scheme the
# value must look like a credential, so prose such as "authorization: denied by policy" stays.
_HEADER = re.compile(
    r"(?<![A-Za-z0-9_-])(?P<name>(?i:proxy-authorization|authorization|set-cookie|cookie|x-api-key|x-auth-token))"
    r"(?P<q>\\?[\"'])?(?P<sep>[ \t]*[:=][ \t]*)(?P<br>\[(?!REDACTED:))?"
)
_AUTH_SCHEME = re.compile(
    r"(?i:(?P<scheme>bearer|basic|digest|negotiate|ntlm|token|bot|aws4-hmac-sha256|apikey|key|ssws|oauth|googlelogin"
    r"|splunk|hoba|mutual|scram-sha-256|scram-sha-1|vapid))[ \t]+(?=\S)"
)


_HEADER_NAMES = re.compile(r"proxy-authorization|authorization|set-cookie|cookie|x-api-key|x-auth-token")
_HEADER_TOKEN = re.compile(r"[^\s\"'\\,;\]]{1,%d}" % _MAX_VALUE)


def _rule_headers(text: str) -> Iterator[Edit]:
    # A manual scan: after a redaction the search resumes past the value, and a value that is kept is never scanned
    # beyond its first token, so a long line of header names stays linear.
    low = _ascii_lower(text)
    if low is None:
        if not re.search(r"(?i:authorization|cookie|x-api-key|x-auth-token)", text):
            return
    elif not any(name in low for name in ("authorization", "cookie", "x-api-key", "x-auth-token")):
        return
    pos = 0
    while True:
        m = _next_match(_HEADER, text, pos, _HEADER_NAMES, low)
        if m is None:
            return
        pos = m.end()
        q = m.group("q")
        if q and not text.startswith(q, m.start() - len(q)):
            continue  # a closing quote without the opening one: not a key
        p = m.end()
        if text.startswith(_MARKER_PREFIX, p):
            continue
        name = m.group("name").lower()
        c = text[p : p + 1]
        if c in ('"', "'") or text.startswith('\\"', p):
            span = _value_span(text, p, line_value=False, key_quoted=bool(q))
            if span is None:
                continue
            vs, ve, _ = span
        elif q:
            continue  # a JSON key with a number/null/object value: not a header value, and JSON must stay valid
        else:
            vs, ve = p, -1  # unquoted: the end depends on the header
        if text.startswith(_MARKER_PREFIX, vs):
            continue
        if name.endswith("authorization"):
            sm = _AUTH_SCHEME.match(text, vs, ve if ve >= 0 else len(text))
            if sm:
                cs = sm.end()
                if text.startswith(_MARKER_PREFIX, cs):
                    continue
                scheme = sm.group("scheme").lower()
                if ve < 0:
                    if scheme in ("bearer", "basic", "token", "bot", "apikey", "key", "ssws", "oauth"):
                        tm = _HEADER_TOKEN.match(text, cs)
                        if tm is None:
                            continue
                        ve = tm.end()
                    else:  # Digest / Negotiate / AWS4-HMAC-SHA256 parameters run to the end of the line
                        span = _value_span(text, cs, line_value=True, bracket=bool(m.group("br")))
                        if span is None:
                            continue
                        ve = span[1]
                if ve <= cs:
                    continue
                kind = "bearer-token" if scheme == "bearer" else "auth-header"
                yield (cs, ve, marker(kind), kind)
                pos = ve
            else:
                if ve < 0:
                    tm = _HEADER_TOKEN.match(text, vs)
                    if tm is None:
                        continue
                    ve = tm.end()
                value = text[vs:ve]
                if " " not in value and _looks_credential(value):
                    yield (vs, ve, marker("auth-header"), "auth-header")
                    pos = ve
            continue
        if ve < 0:
            span = _value_span(text, vs, line_value=True, bracket=bool(m.group("br")))
            if span is None:
                continue
            ve = span[1]
        if ve <= vs or not text[vs:ve].strip():
            continue
        kind = "cookie" if name.endswith("cookie") else "api-key"
        yield (vs, ve, marker(kind), kind)
        pos = ve


# Why: bearer tokens are also quoted outside a header line ("using Bearer abc123..."). Only the token after the word
# goes, and only when it looks like a credential ("Bearer authentication" and "bearer token expired" stay).
_BEARER = re.compile(r"(?<![A-Za-z0-9_-])(?i:bearer)[ \t]{1,16}(?P<tok>[A-Za-z0-9._~+/-]{8,65536}=*)")


_BEARER_WORD = re.compile("bearer")


def _rule_bearer(text: str) -> Iterator[Edit]:
    low = _ascii_lower(text)
    if low is not None and "bearer" not in low:
        return
    pos = 0
    while True:
        m = _next_match(_BEARER, text, pos, _BEARER_WORD, low)
        if m is None:
            return
        pos = m.end()
        if _looks_random(m.group("tok")):
            yield (m.start("tok"), m.end("tok"), marker("bearer-token"), "bearer-token")


# --------------------------------------------------------------------------------------------------------------------
# Rule 8: assignments to secret-named keys
# --------------------------------------------------------------------------------------------------------------------

# Why: most leaked credentials are a value under a telling name: ``password=...`` in a log line, ``"token": "..."``
# in JSON, ``DB_PASSWORD: ...`` in YAML, ``--api-key=...`` in a command line, ``{Password:...}`` in a Go ``%+v``.
# The regex only anchors on a secret-ish word inside an identifier followed by a separator; the full key is found by
# scanning back, and classified by its *last* word (see _text_key_is_secret), so ``tokenPath``, ``secretName``,
# ``TOKEN_AUDIENCES`` and ``serviceAccountToken: {...}`` (an object, not a value) are kept. ``key: value`` with a space
# after the colon is only taken at the start of a line (YAML, headers) or as a quoted JSON key, so prose like
# "failed to fetch token: connection refused" is kept.
_ASSIGN = re.compile(
    r"(?i:pass|pwd|secret|token|key|cred|auth)"
    r"(?P<tail>[A-Za-z0-9_.-]{0,40}+)"
    r"(?P<kq>\\?[\"'])?"
    r"(?P<sep>[ \t]{0,8}(?::=|[:=])[ \t]{0,8})"
)
_ASSIGN_WORDS = re.compile(r"(?i:pass|pwd|secret|token|key|cred|auth)")
_ASSIGN_WORDS_LOWER = re.compile(r"pass|pwd|secret|token|key|cred|auth")
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_NUMBER = re.compile(r"-?[0-9][0-9.eE+-]{0,63}")


def _line_position(text: str, pos: int) -> str:
    """``"line"`` when only indentation, list dashes or comment hashes stand between the start of the line (a real or
    ``\\n``-escaped line break) and ``pos``; ``"flow"`` when that stretch starts at a ``{`` (a YAML flow mapping,
    ``{password: x}``); ``""`` otherwise."""
    i = pos
    while i > 0:
        c = text[i - 1]
        if c in " \t-#":
            i -= 1
            continue
        if c in "\n\r":
            return "line"
        if c == "{":
            return "flow"
        if c == "n" and i >= 2 and text[i - 2] == "\\":
            return "line"
        return ""
    return "line"


_FLOW_VALUE = re.compile(r"[^,}\r\n\"\\]{1,%d}" % _MAX_VALUE)


def _rule_assign(text: str) -> Iterator[Edit]:
    low = _ascii_lower(text)
    if low is None:
        if not _ASSIGN_WORDS.search(text):
            return
    elif not _ASSIGN_WORDS_LOWER.search(low):
        return
    pos = 0
    n = len(text)
    while pos < n:
        m = _next_match(_ASSIGN, text, pos, _ASSIGN_WORDS_LOWER, low)
        if m is None:
            return
        pos = m.end()
        # the key: scan back from the secret word over identifier characters
        ks = m.start()
        while ks > 0 and m.start() - ks < 64 and text[ks - 1] in _KEY_CHARS:
            ks -= 1
        key_end = m.end("tail")
        key = text[ks:key_end].lstrip("-.")
        if not key or not _text_key_is_secret(key):
            continue
        q = m.group("kq") or ""
        quoted_key = False
        if q:
            if not text.startswith(q, ks - len(q)):
                continue  # a quote after the key but not before it
            quoted_key = True
        sep = m.group("sep")
        colon = ":" in sep and ":=" not in sep
        if sep.rstrip(" \t").endswith("=") and text.startswith("=", m.end()):
            continue  # "token == x" compares, it does not assign
        spaced = sep.rstrip(" \t") != sep
        where = _line_position(text, ks) if colon and not quoted_key and spaced else ""
        if colon and not quoted_key and spaced and not where:
            continue  # "fetch token: refused" in prose
        if colon and not quoted_key and text[m.end() : m.end() + 2] == "//":
            continue  # "token://..." is a URL scheme, not an assignment
        vstart = m.end()
        if text[vstart : vstart + 1] in ("{", "["):
            continue  # an object or list (``serviceAccountToken: {...}``): not a value
        if where == "flow" and text[vstart : vstart + 1] not in ('"', "'", "\\"):
            fm = _FLOW_VALUE.match(text, vstart)
            if fm is None or not fm.group().strip():
                continue
            span: tuple[int, int, str] | None = (vstart, vstart + len(fm.group().rstrip(" \t")), "")
        else:
            # "password: a b c" at the start of a line is YAML (or a header): the value is the rest of the line;
            # "Password:hunter2" (Go %+v) and "password=x" end at the next delimiter
            span = _value_span(text, vstart, line_value=where == "line", key_quoted=quoted_key)
        if span is None:
            continue
        vs, ve, vq = span
        value = text[vs:ve]
        if _value_is_exempt(value):
            pos = max(pos, ve)  # booleans, paths, placeholders hold no further assignment; skipping keeps it linear
            continue
        kind = _assignment_kind(key)
        nm = _NUMBER.match(text, vstart) if quoted_key and not vq else None
        if nm is not None:
            # a JSON number under a quoted key: keep the document valid by quoting the marker
            qq = '\\"' if q == '\\"' else '"'
            yield (vstart, nm.end(), f"{qq}{marker(kind)}{qq}", kind)
            pos = max(pos, nm.end())
            continue
        yield (vs, ve, marker(kind), kind)
        pos = max(pos, ve)


# Why: in a service-account JSON the ``private_key`` itself is caught by the PEM rule; its ``private_key_id`` names
# the key in Google's IAM and is redacted too. Matched in plain and JSON-escaped (``\"private_key_id\"``) form.
_GCP_KEY_ID = re.compile(
    r'(?P<q>\\?")private_key_id(?P=q)[ \t]{0,8}:[ \t\r\n]{0,8}(?P<vq>\\?")(?P<v>[0-9a-fA-F]{16,64})(?P=vq)'
)


def _rule_gcp(text: str) -> Iterator[Edit]:
    if "private_key_id" not in text:
        return
    for m in _GCP_KEY_ID.finditer(text):
        yield (m.start("v"), m.end("v"), marker("gcp-service-account"), "gcp-service-account")


# --------------------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------------------

# Order matters: key material first (so that no later rule sees half a key), then tokens with a recognisable shape,
# then the context-based rules (URLs, headers, assignments), which skip values that already hold a marker.
_RULES: tuple[Callable[[str], Iterator[Edit]], ...] = (
    _rule_pem,
    _rule_b64_pem,
    _rule_der_key,
    _rule_jwt,
    _rule_tokens,
    _rule_gcp,
    _rule_url,
    _rule_headers,
    _rule_bearer,
    _rule_assign,
)


def redact_text(text: str) -> tuple[str, Counter[str]]:
    """Redact secrets in ``text``. Returns the new text and the number of redactions per kind (empty when none).

    Idempotent: redacting the output again changes nothing. Never raises on any ``str`` (lone surrogates included).
    """
    counts: Counter[str] = Counter()
    # A redaction can change the character before a later candidate (a look-behind boundary); a second round makes
    # the result a fixpoint, so redact_text(redact_text(x)) == redact_text(x). In practice the second round finds
    # nothing and costs one scan of text that had secrets in it.
    for _ in range(4):
        before = text
        for rule in _RULES:
            edits = list(rule(text))
            if edits:
                text = _apply_edits(text, edits, counts)
        if text == before:
            break
    return text, counts


def redact_bytes(data: bytes) -> tuple[bytes, Counter[str]]:
    """Redact secrets in ``data``.

    Decodes UTF-8 with ``surrogateescape``, so bytes that are not UTF-8 come back unchanged. Returns ``data`` itself
    (the same object) when nothing was redacted.
    """
    text = data.decode("utf-8", "surrogateescape")
    new, counts = redact_text(text)
    if not counts:
        return data, counts
    return new.encode("utf-8", "surrogateescape"), counts


# --------------------------------------------------------------------------------------------------------------------
# Decoded JSON and Kubernetes objects
# --------------------------------------------------------------------------------------------------------------------


# Why a memo: a Kubernetes list repeats the same strings in every item (images, label values, field managers, probe
# paths); at 10,000 pods the same few thousand strings went through redact_text half a million times. Bounded so that
# a list of unique strings cannot grow it without end; redact_text is a pure function, so a hit is exact.
_STR_MEMO: dict[str, tuple[str, Counter[str]]] = {}
_STR_MEMO_MAX_ENTRIES = 32768
_STR_MEMO_MAX_LEN = 256  # the repeated ones are short; long ones (annotations, env values) would cost memory


def _redact_str(value: str, counts: Counter[str]) -> str:
    hit = _STR_MEMO.get(value)
    if hit is None:
        hit = redact_text(value)
        if len(value) <= _STR_MEMO_MAX_LEN:
            if len(_STR_MEMO) >= _STR_MEMO_MAX_ENTRIES:
                _STR_MEMO.clear()
            _STR_MEMO[value] = hit
    new, c = hit
    if c:
        counts.update(c)
    return new


_ONLY_MARKERS = re.compile(r"\[REDACTED:[a-z-]{1,40}\]")


def _secret_value(key: str, value: str, counts: Counter[str]) -> str:
    """The replacement for a string stored under a secret-named key: what redact_text makes of it when that leaves
    nothing but markers (a PEM under ``private_key`` counts as ``private-key``), else one marker for the whole."""
    new, c = redact_text(value)
    if c and not _ONLY_MARKERS.sub("", new).strip():
        counts.update(c)
        return new
    kind = "gcp-service-account" if key == "private_key_id" else _assignment_kind(key)
    counts[kind] += 1
    return marker(kind)


def _key_is_secret(key: object) -> bool:
    return isinstance(key, str) and _str_key_is_secret(key)


@functools.lru_cache(maxsize=8192)  # object keys repeat in every item of a list
def _str_key_is_secret(key: str) -> bool:
    return (
        not key.startswith("checksum/")  # Helm's checksum/secret annotations hold a sha256, evidence of rollouts
        and (key == "private_key_id" or _text_key_is_secret(key))
    )


def _redact_node(node: Any, counts: Counter[str]) -> Any:
    """Redact one JSON value; returns the (possibly new) value. Containers are changed in place."""
    if isinstance(node, str):
        return _redact_str(node, counts)
    if isinstance(node, dict):
        for k in list(node):
            v = node[k]
            if k == "env" and isinstance(v, list):
                _redact_env(v, counts)
            elif k in ("args", "command") and isinstance(v, list):
                _redact_args(v, counts)
            elif isinstance(v, str) and _key_is_secret(k) and not _value_is_exempt(v):
                node[k] = _secret_value(k, v, counts)
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and _key_is_secret(k) and k != "auth":
                node[k] = _secret_value(k, str(v), counts)
            else:
                node[k] = _redact_node(v, counts)
        return node
    if isinstance(node, list):
        for i, v in enumerate(node):
            node[i] = _redact_node(v, counts)
        return node
    return node


def _redact_env(env: list[Any], counts: Counter[str]) -> None:
    # Why by name: ``{"name": "DB_PASSWORD", "value": "hunter2"}`` has no pattern in the value, the name says it all.
    # ``valueFrom`` only references a Secret/ConfigMap key and is kept as evidence of where the value comes from.
    for item in env:
        if not isinstance(item, dict):
            continue
        name, value = item.get("name"), item.get("value")
        if isinstance(value, str):
            if isinstance(name, str) and _env_name_is_secret(name) and not _value_is_exempt(value):
                item["value"] = marker("password-assignment")
                counts["password-assignment"] += 1
            else:
                item["value"] = _redact_str(value, counts)
        for k in list(item):
            if k not in ("name", "value"):
                item[k] = _redact_node(item[k], counts)


_FLAG = re.compile(r"--?(?P<name>[A-Za-z][A-Za-z0-9_.-]{0,63})")


def _redact_args(args: list[Any], counts: Counter[str]) -> None:
    # ``--password=x`` is handled by redact_text; ``["--password", "x"]`` needs the neighbouring item.
    secret_next = False
    for i, a in enumerate(args):
        if not isinstance(a, str):
            args[i] = _redact_node(a, counts)
            secret_next = False
            continue
        if secret_next and not a.startswith("-") and not _value_is_exempt(a):
            args[i] = marker("password-assignment")
            counts["password-assignment"] += 1
            secret_next = False
            continue
        fm = _FLAG.fullmatch(a)
        secret_next = bool(fm and _env_name_is_secret(fm.group("name")))
        args[i] = _redact_str(a, counts)


def redact_json(obj: Any) -> Counter[str]:
    """Redact a decoded JSON document in place (dicts and lists are modified; a bare string cannot be, use
    :func:`redact_text`). Strings under secret-named keys are replaced whole; all other strings go through
    :func:`redact_text`. Returns the counts per kind."""
    counts: Counter[str] = Counter()
    _redact_node(obj, counts)
    return counts


_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _redact_configmap(obj: dict[str, Any], counts: Counter[str]) -> None:
    data = obj.get("data")
    if isinstance(data, dict):
        for k, v in data.items():
            if not isinstance(v, str):
                continue
            if isinstance(k, str) and _env_name_is_secret(k) and not _value_is_exempt(v):
                data[k] = marker("password-assignment")
                counts["password-assignment"] += 1
            else:
                data[k] = _redact_str(v, counts)
    bdata = obj.get("binaryData")
    if isinstance(bdata, dict):
        # binaryData must stay base64 for whoever decodes it, so the redacted content is re-encoded.
        for k, v in bdata.items():
            if not isinstance(v, str):
                continue
            if isinstance(k, str) and _env_name_is_secret(k):
                bdata[k] = base64.b64encode(marker("password-assignment").encode()).decode()
                counts["password-assignment"] += 1
                continue
            try:
                raw = base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                bdata[k] = _redact_str(v, counts)
                continue
            new, c = redact_bytes(raw)
            if c:
                counts.update(c)
                bdata[k] = base64.b64encode(new).decode()
            else:
                bdata[k] = _redact_str(v, counts)  # base64 of a PEM private key, etc.


def _redact_last_applied(annotations: dict[str, Any], counts: Counter[str]) -> None:
    # Why decode: the annotation is the applied object as JSON text, so ``{"name":"DB_PASSWORD","value":"x"}`` only
    # shows as secret once it is an env entry again. Re-encoded compactly, as kubectl writes it, only if changed.
    raw = annotations[_LAST_APPLIED]
    try:
        decoded = json.loads(raw)
    except ValueError:
        return  # the generic walk runs redact_text on it
    if not isinstance(decoded, dict):
        return
    c = redact_kubernetes_object(decoded)
    if c:
        counts.update(c)
        annotations[_LAST_APPLIED] = json.dumps(decoded, separators=(",", ":")) + ("\n" if raw.endswith("\n") else "")


def redact_kubernetes_object(obj: dict[str, Any]) -> Counter[str]:
    """Redact a Kubernetes object (a decoded JSON dict) in place and return the counts per kind.

    * ``Secret``: ``data`` and ``stringData`` are dropped (counted as ``secret-data``, one per entry), and so is the
      ``last-applied-configuration`` annotation, which repeats them; name, namespace, type and labels are kept.
    * ``ConfigMap``: a ``data``/``binaryData`` entry whose key looks secret (``DB_PASSWORD``, ``api-token``,
      ``credentials.json``) is replaced whole; other values go through :func:`redact_text` (binaryData is decoded
      first and re-encoded).
    * any object: container/initContainer ``env[].value`` whose name looks secret (PASSWORD, TOKEN, SECRET, KEY,
      CREDENTIALS, PRIVATE, AUTH...) is replaced, other env values go through :func:`redact_text`, ``valueFrom`` is
      kept; ``args``/``command`` handle ``["--password", "x"]``; the ``last-applied-configuration`` annotation is
      JSON-decoded, redacted as an object and re-encoded (compact, as kubectl writes it) when something changed;
      other annotations and every other string go through :func:`redact_json`.
    * ``*List`` objects: each of ``items``.
    """
    counts: Counter[str] = Counter()
    if not isinstance(obj, dict):
        return counts
    kind = obj.get("kind")
    if isinstance(obj.get("items"), list) and (not isinstance(kind, str) or kind.endswith("List")):
        counts.update(redact_kubernetes_list(obj))
        for k in obj:
            if k != "items":
                obj[k] = _redact_node(obj[k], counts)
        return counts
    if kind == "Secret":
        for field in ("data", "stringData"):
            if field in obj:
                value = obj.pop(field)
                counts["secret-data"] += len(value) if isinstance(value, dict) and value else 1
        annotations = (obj.get("metadata") or {}).get("annotations")
        if isinstance(annotations, dict) and _LAST_APPLIED in annotations:
            annotations[_LAST_APPLIED] = marker("secret-data")
            counts["secret-data"] += 1
    annotations = (obj.get("metadata") or {}).get("annotations") if isinstance(obj.get("metadata"), dict) else None
    if kind != "Secret" and isinstance(annotations, dict) and isinstance(annotations.get(_LAST_APPLIED), str):
        _redact_last_applied(annotations, counts)
    if kind == "ConfigMap":
        _redact_configmap(obj, counts)
        for k in obj:
            if k not in ("data", "binaryData"):
                obj[k] = _redact_node(obj[k], counts)
        return counts
    counts.update(redact_json(obj))
    return counts


def redact_kubernetes_list(doc: dict[str, Any]) -> Counter[str]:
    """Redact every object of a ``kubectl get -o json`` list (``items``) in place; returns the summed counts."""
    counts: Counter[str] = Counter()
    items = doc.get("items") if isinstance(doc, dict) else None
    kind = doc.get("kind") if isinstance(doc, dict) else None
    item_kind = kind[: -len("List")] if isinstance(kind, str) and kind.endswith("List") and len(kind) > 4 else None
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict):
                counts.update(redact_list_item(item, item_kind))
    return counts


def redact_list_item(item: dict[str, Any], kind: str | None) -> Counter[str]:
    """Redact one item of a list of ``kind`` objects in place. The API server leaves ``kind`` out of a list's items;
    the list's kind says it (ConfigMapList: ConfigMap), so ConfigMaps and Secrets are redacted as what they are."""
    if kind is None or "kind" in item:
        return redact_kubernetes_object(item)
    item["kind"] = kind
    try:
        return redact_kubernetes_object(item)
    finally:
        del item["kind"]
