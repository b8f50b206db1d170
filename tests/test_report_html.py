"""The HTML report (bundler.report.html.render) without a browser: structure, counts, self-containment,
the Content-Security-Policy, tolerance of missing views, and escaping of hostile bundle data."""

from __future__ import annotations

import base64
import copy
import hashlib
import html
import re
from html.parser import HTMLParser

import pytest

from bundler.report.html import render

SEVERITIES = ("critical", "error", "warning", "info")

# Strings a bundle could carry (pod names, labels, log lines): each must come out as text, never markup.
XSS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(1)>",
    "</script><script>alert(1)</script>",
    "</pre></details></td></tr></table><script>alert(1)</script>",
    "<!--<script>alert(1)//-->",
    "]]><script>alert(1)</script>",
    "<style>body{display:none}</style>",
]
TEMPLATE_SYNTAX = "{{ 7*7 }}{% raw %}"  # must come out verbatim (data is never a template)
JS_URL = "javascript:alert(1)"


def bundle_view(root: str = "bookinfo-incident", context: str = "synth:bookinfo-incident") -> dict:
    """The shape of `bundle inspect -o json` (bundler.commands.inspect.summarize)."""
    return {
        "bundle": {"source": f"samples/{root}.tar.zst", "root": root, "type": "archive", "archiveBytes": 30281,
                   "members": 43, "memberBytes": 484418},
        "formatVersion": 1,
        "tool": {"name": "ztunnel-bundle", "version": "0.1.0"},
        "generator": "synth",
        "createdAt": "2026-11-25T12:00:00Z",
        "window": {"start": "2026-11-25T11:58:30Z", "end": "2026-11-25T12:00:00Z", "logsSince": "2026-11-25T11:00:00Z"},
        "cluster": {"context": context, "istioVersions": {"cni": ["1.24.3"], "istiod": ["1.24.3"],
                                                          "ztunnel": ["1.24.2", "1.24.3"]},
                    "nodeCount": 3, "serverVersion": "v1.30.8"},
        "nodes": ["ambient-worker", "ambient-worker2", "ambient-worker3"],
        "ztunnels": {"ambient-worker": ["ztunnel-g8gvh"], "ambient-worker2": ["ztunnel-2tnmx"],
                     "ambient-worker3": ["ztunnel-kkb2m"]},
        "artifacts": {"total": 42, "byStatus": {"ok": {"count": 40, "bytes": 460476}, "error": {"count": 1, "bytes": 0},
                                                "truncated": {"count": 1, "bytes": 1000}, "skipped": {"count": 0, "bytes": 0}},
                      "byKind": {}},
        "collectionErrors": [],
    }


CODES = ("workload-drift", "certificate-expiring", "xds-nack-in-log", "endpoint-skew")
ANALYZERS = ("ztunnel-istiod-drift", "certificates", "logs", "load-balancing")


def make_finding(i: int, severity: str, *, title: str | None = None, pod: str | None = None,
                 message: str | None = None, excerpt: str | None = None, references: list[str] | None = None,
                 analyzer: str | None = None) -> dict:
    pod = pod or f"productpage-v1-{i:05d}"
    analyzer = analyzer or ANALYZERS[i % 4]
    finding = {
        "id": f"{analyzer}/{CODES[i % 4]}/{i:012x}",
        "analyzer": analyzer,
        "code": CODES[i % 4],
        "severity": severity,
        "title": title or f"Finding number {i} ({severity})",
        "message": message or f"ztunnel on node ambient-worker{i % 3 or ''} disagrees about pod {pod}.",
        "resources": [{"kind": "Pod", "namespace": "bookinfo", "name": pod, "node": "ambient-worker",
                       "ztunnel": "ztunnel-g8gvh"}] + [{"kind": "Service", "namespace": "bookinfo", "name": f"svc-{k}"}
                                                       for k in range(i % 3)],
        "evidence": [{"path": "ztunnel/ambient-worker/ztunnel-g8gvh/config_dump.json", "pointer": f"/workloads/{i}"},
                     {"path": "ztunnel/ambient-worker/ztunnel-g8gvh/ztunnel.log", "lines": [10 + i, 12 + i],
                      "excerpt": excerpt or f"2026-11-25T11:59:{i % 60:02d}Z error xds NACK for pod {pod}"}],
        "remediation": "Restart the ztunnel pod after checking istiod's logs.",
        "references": references if references is not None else
        ["https://istio.io/latest/docs/ambient/usage/troubleshoot-ztunnel/", "urn:ztunnel-bundle:drift"],
        "docs": "docs/analyzers.md#" + analyzer,
        "count": 1,
    }
    if i % 5 == 2:  # a grouped finding
        finding["count"] = 4
        finding["messages"] = [finding["message"], f"second message of finding {i}", f"third message of finding {i}"]
        finding["messagesOmitted"] = 1
        finding["evidenceOmitted"] = 2
    return finding


def make_report(n_per_severity: int = 3, *, hostile: bool = False) -> dict:
    """A findings document with several findings of every severity and every view filled in."""
    findings = []
    i = 0
    for severity in SEVERITIES:
        for _ in range(n_per_severity):
            findings.append(make_finding(i, severity))
            i += 1
    if hostile:
        for payload in XSS:
            findings.append(make_finding(i, "error", title=f"Hostile title {payload}", pod=f"pod-{payload}",
                                         message=f"message {payload}", excerpt=f"log line {payload}",
                                         references=[JS_URL, f"https://example.com/{payload}", payload],
                                         analyzer=f"an-{payload}"))
            findings[-1]["resources"].append({"kind": payload, "namespace": payload, "name": payload,
                                              "node": payload, "ztunnel": payload})
            findings[-1]["evidence"].append({"path": payload, "pointer": "/" + payload, "excerpt": payload})
            findings[-1]["code"] = payload
            findings[-1]["remediation"] = payload
            findings[-1]["id"] = payload
            i += 1
    summary = {s: sum(1 for f in findings if f["severity"] == s) for s in SEVERITIES}
    summary["total"] = len(findings)
    views = {
        "bundle": bundle_view(),
        "ztunnels": [
            {"node": "ambient-worker", "pod": "ztunnel-g8gvh", "version": "1.24.3", "workloads": 14, "services": 9,
             "policies": 2, "certificates": {"available": 6, "expiring": 1, "expired": 1, "unavailable": 0,
                                             "initializing": 0},
             "sync": "ok", "errors": 0, "findings": 3},
            {"node": "ambient-worker2", "pod": "ztunnel-2tnmx", "version": "1.24.3", "workloads": 14, "services": 9,
             "policies": 2, "certificates": {"available": 5}, "sync": "nack", "errors": 17, "findings": 5},
            {"node": "ambient-worker3", "pod": "ztunnel-kkb2m", "version": "1.24.2", "workloads": 12, "services": 9,
             "policies": 1, "certificates": {"available": 4, "unavailable": 1}, "sync": "disconnected",
             "errors": 230, "findings": 9},
        ],
        "certificates": [
            {"node": "ambient-worker", "ztunnel": "ztunnel-g8gvh", "identity": "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage",
             "state": "Available", "validFrom": "2026-11-24T13:00:00Z", "expiration": "2026-11-25T13:00:00Z"},
            {"node": "ambient-worker", "ztunnel": "ztunnel-g8gvh", "identity": "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews",
             "state": "Available", "validFrom": "2026-11-23T10:00:00Z", "expiration": "2026-11-24T10:00:00Z"},
            {"node": "ambient-worker2", "ztunnel": "ztunnel-2tnmx", "identity": "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings",
             "state": "Available", "validFrom": "2026-11-25T06:00:00.123456789Z", "expiration": "2026-11-27T06:00:00Z"},
            {"node": "ambient-worker3", "ztunnel": "ztunnel-kkb2m", "identity": "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-details",
             "state": "Initializing", "validFrom": None, "expiration": None},
        ],
        "loadBalancing": [
            {"service": "bookinfo/reviews.bookinfo.svc.cluster.local",
             "endpoints": [{"name": "reviews-v1-abc", "node": "ambient-worker", "connections": 92},
                           {"name": "reviews-v2-def", "node": "ambient-worker2", "connections": 4},
                           {"name": "reviews-v3-ghi", "node": "ambient-worker3", "connections": 4}],
             "expected": 33.3, "skewed": True},
            {"service": "bookinfo/ratings.bookinfo.svc.cluster.local",
             "endpoints": [{"name": "ratings-v1-jkl", "node": "ambient-worker", "connections": 20},
                           {"name": "ratings-v1-mno", "node": "ambient-worker3", "connections": 22}],
             "expected": 21.0, "skewed": False},
        ],
        "drift": [
            {"ztunnel": "ztunnel-2tnmx", "node": "ambient-worker2", "kind": "workload",
             "key": "Kubernetes//Pod/bookinfo/reviews-v2-def", "reference": "istiod per-proxy",
             "fields": [{"field": "status", "ztunnel": "Unhealthy", "reference": "Healthy"},
                        {"field": "services", "ztunnel": ["bookinfo/reviews"], "reference": ["bookinfo/reviews", "bookinfo/reviews-canary"]},
                        {"field": "waypoint", "reference": "bookinfo/waypoint"}]},
            {"ztunnel": "ztunnel-kkb2m", "node": "ambient-worker3", "kind": "policy", "key": "bookinfo/deny-all",
             "reference": "majority", "fields": [{"field": "action", "ztunnel": "Allow", "reference": "Deny"}]},
        ],
        "gaps": [
            {"path": "ztunnel/ambient-worker3/ztunnel-kkb2m/metrics.txt", "kind": "ztunnel-metrics", "status": "error",
             "reason": "port-forward: connection refused"},
            {"path": "ztunnel/ambient-worker3/ztunnel-kkb2m/ztunnel.log", "kind": "ztunnel-log", "status": "truncated",
             "reason": "byte budget reached (16 MiB)"},
        ],
    }
    if hostile:
        p = " ".join(XSS + [TEMPLATE_SYNTAX])
        views["bundle"]["bundle"]["root"] = p
        views["bundle"]["cluster"]["context"] = p
        views["bundle"]["cluster"]["serverVersion"] = p
        views["bundle"]["cluster"]["istioVersions"][p] = [p]
        views["ztunnels"].append({"node": p, "pod": p, "version": p, "workloads": p, "certificates": {p: 1},
                                  "sync": p, "errors": 1, "findings": 1})
        views["certificates"].append({"node": p, "ztunnel": p, "identity": p, "state": p, "validFrom": p,
                                      "expiration": "2026-11-25T18:00:00Z"})
        views["loadBalancing"].append({"service": p, "endpoints": [{"name": p, "node": p, "connections": 3}],
                                       "expected": 1.5, "skewed": True})
        views["drift"].append({"ztunnel": p, "node": p, "kind": p, "key": p, "reference": p,
                               "fields": [{"field": p, "ztunnel": p, "reference": {p: [p]}}]})
        views["gaps"].append({"path": p, "kind": p, "status": p, "reason": p})
    analyzers = {
        "run": [{"id": a, "status": "ok", "title": f"checks of {a}", "findings": 3, "docs": f"docs/analyzers.md#{a}"}
                for a in ANALYZERS] + [{"id": "traffic-path", "status": "crashed", "reason": "KeyError: 'workloads'"}],
        "skipped": [{"id": "cni-logs", "status": "skipped", "reason": "no cni-log artifact in the bundle"}],
        "failed": [],
    }
    suppressed = [dict(make_finding(99, "warning", title="A suppressed finding"),
                       suppression={"id": "logs/*", "resource": "Pod/bookinfo/*", "reason": "known flake, JIRA-12",
                                    "expires": "2027-01-31"})]
    if hostile:
        p = " ".join(XSS + [TEMPLATE_SYNTAX])
        analyzers["skipped"].append({"id": p, "status": p, "title": p, "reason": p, "docs": p})
        suppressed.append(dict(make_finding(98, "info", title=p, message=p),
                               suppression={"id": p, "resource": p, "reason": p, "expires": p}))
        findings[-1]["messages"] = [p, p + "2"]
        findings[-1]["docs"] = JS_URL
    return {
        "formatVersion": 1,
        "tool": {"name": "ztunnel-bundle", "version": "0.1.0"},
        "bundle": {"root": "samples/bookinfo-incident.tar.zst", "name": "bookinfo-incident",
                   "createdAt": "2026-11-25T12:00:00Z", "formatVersion": 1, "toolVersion": "0.1.0",
                   "generator": "synth", "cluster": views["bundle"]["cluster"],
                   "artifacts": {"total": 42, "ok": 40, "byStatus": {"ok": 40, "error": 1, "truncated": 1}}},
        "analyzedAt": "2026-11-26T09:30:00Z",
        "summary": summary,
        "analyzers": analyzers,
        "findings": findings,
        "suppressed": suppressed,
        "views": views,
    }


class Page(HTMLParser):
    """What the tests need from the HTML: start tags with attributes, text per tag, scripts, and nesting errors."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
    SVG_EMPTY_OK = {"line", "rect", "circle", "path"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.title = ""
        self._script: tuple[dict[str, str | None], list[str]] | None = None
        self._in_title = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "script":
            self._script = (attributes, [])
        if tag == "title":
            self._in_title = "svg" not in self.stack  # an SVG <title> is a tooltip
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script[0], "".join(self._script[1])))
            self._script = None
        if tag == "title":
            self._in_title = False
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            if tag in self.stack:
                while self.stack and self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()

    def handle_data(self, data):
        if self._script is not None:
            self._script[1].append(data)
        if self._in_title:
            self.title += data


@pytest.fixture(scope="module")
def report() -> dict:
    return make_report()


@pytest.fixture(scope="module")
def page_html(report) -> str:
    return render(report)


def test_renders_well_formed_html_with_title_and_counts(report, page_html):
    assert page_html.startswith("<!DOCTYPE html>")
    page = Page(page_html)
    assert page.errors == []
    assert page.stack == []  # every element closed
    assert "bookinfo-incident" in page.title
    for severity in SEVERITIES:
        badge = re.search(rf'class="badge sev-{severity}[^"]*" data-severity="{severity}"><b>(\d+)</b>', page_html)
        assert badge and int(badge.group(1)) == report["summary"][severity]
    assert f"<b>{len(report['findings'])}</b> findings" in page_html


def test_every_finding_is_a_row_with_its_details(report, page_html):
    rows = re.findall(r'<tr class="finding" data-sev="(\d)" data-severity="(\w+)" data-res="(\d+)">', page_html)
    assert len(rows) == len(report["findings"])
    # Most severe first.
    assert [int(r[0]) for r in rows] == sorted((int(r[0]) for r in rows), reverse=True)
    for finding in report["findings"]:
        assert html.escape(finding["title"], quote=False) in page_html
        assert html.escape(finding["message"], quote=False) in page_html
        for evidence in finding["evidence"]:
            assert html.escape(evidence["path"]) in page_html
    assert "JSON pointer /workloads/0" in page_html
    assert "lines 10\u201312" in page_html
    assert '<a class="ref" href="https://istio.io/latest/docs/ambient/usage/troubleshoot-ztunnel/"' in page_html
    assert "<code>urn:ztunnel-bundle:drift</code>" in page_html  # a reference that is no web URL stays text
    # A grouped finding: its count, its other messages, what was left out.
    assert 'title="4 findings grouped into this one">&times;4</span>' in page_html
    assert "second message of finding 2" in page_html and "and 1 more</li>" in page_html
    assert "and 2 more evidence items" in page_html
    assert "analyzer docs <code>docs/analyzers.md#logs</code>" in page_html


def test_the_static_page_is_complete_and_the_js_only_controls_start_hidden(page_html):
    assert '<div class="controls" id="finding-controls" hidden>' in page_html
    assert "[hidden] { display: none !important; }" in page_html  # author CSS must not show them again
    assert page_html.count("<details>") >= 12  # each finding expands without a script


def test_header_shows_cluster_versions_window_and_completeness(page_html):
    assert "Kubernetes v1.30.8" in page_html
    assert "synth:bookinfo-incident" in page_html
    assert "ztunnel 1.24.2, 1.24.3" in page_html  # mixed versions shown (and flagged)
    assert "2026-11-25 11:58:30 UTC" in page_html and "logs since 2026-11-25 11:00:00 UTC" in page_html
    assert "40 / 42 artifacts ok" in page_html
    assert "2 gaps" in page_html
    assert "5 analyzers run, 1 skipped, 1 crashed" in page_html
    assert "1 suppressed" in page_html


def test_analyzers_and_suppressed_findings_are_listed(report, page_html):
    assert 'id="analyzers"' in page_html and "KeyError: &#39;workloads&#39;" in page_html
    assert "no cni-log artifact in the bundle" in page_html
    assert 'id="suppressed"' in page_html and "known flake, JIRA-12" in page_html and "until 2027-01-31" in page_html
    # Suppressed findings are not rows of the findings table.
    assert page_html.count('<tr class="finding"') == len(report["findings"])


def test_header_falls_back_to_the_findings_document_without_the_bundle_view(report):
    doc = copy.deepcopy(report)
    del doc["views"]["bundle"]
    out = render(doc)
    assert "ztunnel-bundle report: bookinfo-incident</title>" in out
    assert "40 / 42 artifacts ok" in out and "1 truncated" in out
    assert "Kubernetes v1.30.8" in out and "written by synth" in out
    assert "2026-11-25 12:00:00 UTC" in out  # bundle.createdAt is the collection time


def test_views_are_rendered(page_html):
    page = Page(page_html)
    ids = {attrs.get("id") for _, attrs in page.tags}
    assert {"findings", "ztunnels", "drift", "certificates", "load-balancing", "gaps"} <= ids
    # ztunnel table
    assert "ztunnel-kkb2m" in page_html and "sync-disconnected" in page_html and "1 expired" in page_html
    # drift: both sides, highlighted
    assert '<span class="del">Unhealthy</span>' in page_html and '<span class="add">Healthy</span>' in page_html
    assert '<span class="add">  &#34;bookinfo/reviews-canary&#34;</span>' in page_html
    assert "(absent)" in page_html
    # certificate timeline: one bar per dated certificate, expired / expiring / valid, a now marker
    svgs = [attrs for tag, attrs in page.tags if tag == "svg"]
    assert len(svgs) == 1 + 2  # timeline + two load-balancing charts
    assert page_html.count('<g class="row cert-expired">') == 1
    assert page_html.count('<g class="row cert-expiring">') == 1
    assert page_html.count('<g class="row cert-valid">') == 1
    assert "no validity dates (Initializing)" in page_html
    assert '<line class="now"' in page_html and "collected 2026-11-25 12:00 UTC" in page_html
    # load balancing: bars and the expected line
    assert page_html.count('class="expected"') == 2 and "expected 33.3" in page_html
    assert '<g class="row off">' in page_html
    # gaps
    assert "port-forward: connection refused" in page_html


def test_no_resource_is_loaded_from_anywhere(page_html):
    page = Page(page_html)
    for tag, attrs in page.tags:
        for name in ("src", "href", "srcset", "data", "action", "poster", "xlink:href", "background"):
            value = (attrs.get(name) or "").strip()
            if not value:
                continue
            if tag == "a" and name == "href" and (value.startswith("#") or "ref" in (attrs.get("class") or "").split()):
                continue
            if tag == "link" and attrs.get("rel") == "icon" and value == "data:,":
                continue
            raise AssertionError(f"<{tag} {name}={value!r}> would load something")
    # Apart from the references' links, no URL at all (not even an xmlns).
    without_links = re.sub(r'<a class="ref" href="https://[^"]*"[^>]*>[^<]*</a>', "", page_html)
    assert "http://" not in without_links and "https://" not in without_links
    assert "@import" not in page_html and "url(" not in page_html
    assert not any(attrs.get("src") for tag, attrs in page.tags if tag == "script")
    assert "fetch(" not in page_html and "XMLHttpRequest" not in page_html


def test_content_security_policy_allows_only_the_page_own_style_and_script(page_html):
    page = Page(page_html)
    metas = [attrs for tag, attrs in page.tags if tag == "meta" and (attrs.get("http-equiv") or "").lower()
             == "content-security-policy"]
    assert len(metas) == 1
    # It comes before anything that could load or run (right after the charset).
    first_tags = [tag for tag, _ in page.tags[:4]]
    assert first_tags[:3] == ["html", "head", "meta"] and page.tags[3][1] is metas[0]
    policy = {d.split()[0]: d.split()[1:] for d in metas[0]["content"].split(";") if d.strip()}
    assert policy["default-src"] == ["'none'"]
    assert policy["img-src"] == ["data:"]
    assert "'unsafe-inline'" not in policy["script-src"] and "'unsafe-eval'" not in policy["script-src"]
    assert "'unsafe-inline'" not in policy["style-src"]
    executable = [text for attrs, text in page.scripts if attrs.get("type") != "application/json"]
    assert len(executable) == 1
    digest = base64.b64encode(hashlib.sha256(executable[0].encode()).digest()).decode()
    assert policy["script-src"] == [f"'sha256-{digest}'"]
    style = re.search(r"<style>(.*?)</style>", page_html, re.S).group(1)
    assert policy["style-src"] == ["'sha256-" + base64.b64encode(hashlib.sha256(style.encode()).digest()).decode() + "'"]
    assert " style=" not in page_html  # inline style attributes would be blocked by the policy


def test_output_is_deterministic(report, page_html):
    assert render(copy.deepcopy(report)) == page_html


def test_hostile_bundle_data_is_escaped_everywhere():
    report = make_report(1, hostile=True)
    out = render(report)
    page = Page(out)
    assert page.errors == [] and page.stack == []
    for payload in XSS:
        assert payload not in out, payload
    # Only our own two scripts (the JSON block and the page script), no other element from the payloads.
    assert len(page.scripts) == 2
    tags = {tag for tag, _ in page.tags}
    assert "img" not in tags and "style" in tags and sum(1 for t, _ in page.tags if t == "style") == 1
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            if name in ("href", "src") and value:
                assert not value.strip().lower().startswith(("javascript:", "data:text", "vbscript:")), (tag, value)
    # The javascript: reference and the payloads with spaces or quotes are shown as text; links are http(s) only.
    assert f"<code>{JS_URL}</code>" in out
    links = [attrs["href"] for tag, attrs in page.tags if tag == "a" and not attrs["href"].startswith("#")]
    assert links and all(href.startswith("https://") and not re.search(r"[\s<>\"']", href) for href in links)
    # Jinja syntax in data is shown, not evaluated.
    assert TEMPLATE_SYNTAX in out
    # The JSON block cannot be closed early.
    data = [text for attrs, text in page.scripts if attrs.get("type") == "application/json"][0]
    assert "</" not in data and "<!--" not in data


def test_views_may_be_missing_or_empty():
    base = make_report(1)
    minimal = {"formatVersion": 1, "tool": {"name": "ztunnel-bundle", "version": "0.1.0"}, "findings": []}
    out = render(minimal)
    assert "No findings." in out and Page(out).errors == []
    for section in ("ztunnels", "drift", "certificates", "load-balancing", "gaps"):
        assert f'id="{section}"' not in out
    empty = dict(base, views={key: [] for key in ("ztunnels", "certificates", "loadBalancing", "drift", "gaps")})
    out = render(empty)
    assert out.count("Nothing to show") == 5
    for section in ("ztunnels", "drift", "certificates", "load-balancing", "gaps"):
        assert f'id="{section}"' in out
    # Malformed entries are tolerated (shown as text or skipped), never an exception.
    odd = dict(base, summary=None, findings=[{"severity": "bogus"}, "not a finding", {"id": "x", "resources": "nope",
                                                                                          "evidence": [{"lines": [1]}]}],
               views={"bundle": {"cluster": None, "artifacts": {"byStatus": {"ok": {"count": "7"}}}},
                      "ztunnels": [{"certificates": None, "sync": 5}], "certificates": [{"expiration": "not a time"}],
                      "loadBalancing": [{"endpoints": [{"connections": "many"}], "expected": "NaN"}],
                      "drift": [{"fields": [{}]}], "gaps": [None, {"path": 3}]})
    out = render(odd)
    assert Page(out).errors == [] and "(untitled)" in out


def test_gaps_fall_back_to_the_bundle_collection_errors():
    report = make_report(1)
    del report["views"]["gaps"]
    report["views"]["bundle"]["collectionErrors"] = [{"path": "istiod/x/syncz.json", "kind": "istiod-syncz",
                                                      "status": "error", "reason": "timeout"}]
    out = render(report)
    assert 'id="gaps"' in out and "istiod/x/syncz.json" in out and "1 gap<" in out


def test_five_thousand_findings_render_completely():
    report = make_report(1)
    report["findings"] = [make_finding(i, SEVERITIES[i % 4]) for i in range(5000)]
    out = render(report)
    assert out.count('<tr class="finding"') == 5000
    assert len(out) < 25_000_000
