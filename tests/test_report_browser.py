"""The HTML report in a real browser: headless Chromium (Debian package ``chromium``), driven over the
DevTools protocol on a pipe (``--remote-debugging-pipe``: no port, no extra Python package).

Checks that the page renders with its counts, that the column headers sort and the filters hide rows,
that the page makes no request besides its own file, that scripts planted in bundle data do not run (neither
escaped data nor, thanks to the Content-Security-Policy, a script spliced into the HTML), and takes a
screenshot (kept in ``$REPORT_SCREENSHOT_DIR`` when set, else in pytest's tmp dir).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from bundler.report.html import render
from tests.test_report_html import SEVERITIES, make_finding, make_report

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless browser tests need Chromium (/usr/bin/chromium): apt-get install -y chromium (.ci/run does)")

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
    "--remote-debugging-pipe",
]

PWN = "window.__pwned=(window.__pwned||0)+1;document.title='pwned'"
PAYLOADS = [
    f"<script>{PWN}</script>",
    f'"><img src=x onerror="{PWN}">',
    f"'><svg onload=\"{PWN}\">",
    f"</pre></details></td></tr></table><script>{PWN}</script>",
    '<img src="http://127.0.0.1:9/beacon.png">',
]


class DevToolsError(RuntimeError):
    pass


class Browser:
    """A headless Chromium speaking the DevTools protocol over fds 3 (commands in) and 4 (messages out)."""

    def __init__(self, profile: Path, log: Path):
        to_chrome_r, self._to_chrome_w = os.pipe()
        self._from_chrome_r, from_chrome_w = os.pipe()

        def wire_pipes():  # in the child, before exec: the protocol wants exactly fds 3 and 4
            a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
            b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            preexec_fn=wire_pipes, close_fds=False, start_new_session=True)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next_id = 0
        self._lock = threading.Condition()
        self._replies: dict[int, dict] = {}
        self.events: list[dict] = []
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_chrome_r, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._lock:
                    self._closed = True
                    self._lock.notify_all()
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._lock:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._replies[message["id"]] = message
                    else:
                        self.events.append(message)
                self._lock.notify_all()

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 15) -> dict:
        with self._lock:
            self._next_id += 1
            ident = self._next_id
        message = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._lock:
            while ident not in self._replies:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    raise DevToolsError(f"{method}: no reply" + (" (browser exited)" if self._closed else ""))
                self._lock.wait(remaining)
            reply = self._replies.pop(ident)
        if "error" in reply:
            raise DevToolsError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, session: str, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for event in self.events:
                    if event.get("method") == method and event.get("sessionId") == session:
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    raise DevToolsError(f"no {method} event")
                self._lock.wait(remaining)

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except DevToolsError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group of the process started above
            self.proc.wait(timeout=10)
        os.close(self._to_chrome_w)
        self._reader.join(timeout=5)
        os.close(self._from_chrome_r)
        self._log.close()


class Tab:
    """One page target of the browser, attached in flat mode (commands carry its sessionId)."""

    def __init__(self, browser: Browser, width: int = 1280, height: int = 900):
        self.browser = browser
        self.target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.send("Target.attachToTarget", {"targetId": self.target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def send(self, method: str, params: dict | None = None, timeout: float = 15) -> dict:
        return self.browser.send(method, params, session=self.session, timeout=timeout)

    def open(self, path: Path) -> str:
        url = path.resolve().as_uri()
        self.send("Page.navigate", {"url": url})
        self.browser.wait_event("Page.loadEventFired", self.session)
        return url

    def eval(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, expected, timeout: float = 5):
        """Wait, inside the page, until ``expression`` equals ``expected`` (the filter input is debounced): a
        promise re-checks it on each animation frame; returns the last value (the expected one, or what the
        page shows when ``timeout`` runs out, for the assertion message)."""
        script = f"""new Promise(resolve => {{
            const expected = {json.dumps(expected)}, end = performance.now() + {timeout * 1000};
            const check = () => {{
                const value = ({expression});
                if (JSON.stringify(value) === JSON.stringify(expected) || performance.now() > end) resolve(value);
                else requestAnimationFrame(check);
            }};
            check();
        }})"""
        return self.eval(script)

    def events(self, method: str) -> list[dict]:
        with self.browser._lock:
            return [e["params"] for e in self.browser.events
                    if e.get("method") == method and e.get("sessionId") == self.session]

    def requests(self) -> list[str]:
        return [params["request"]["url"] for params in self.events("Network.requestWillBeSent")]

    def close(self):
        self.browser.send("Target.closeTarget", {"targetId": self.target})


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chromium")
    instance = Browser(folder / "profile", folder / "chromium.log")
    try:
        instance.send("Browser.getVersion", timeout=30)
    except DevToolsError:
        instance.close()
        raise
    yield instance
    instance.close()


@pytest.fixture
def tab(browser):
    page = Tab(browser)
    yield page
    page.close()


@pytest.fixture(scope="module")
def report_file(tmp_path_factory) -> tuple[Path, dict]:
    report = make_report(3)
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render(report), encoding="utf-8")
    return path, report


ROW_SEVERITIES = "Array.from(document.querySelectorAll('#findings-table tbody tr')).map(r => r.dataset.severity)"
CENTER_OF = ("(() => { const e = document.querySelector('%s'); e.scrollIntoView({block: 'center'});"
             " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
SET_FILTER = "(() => { const f = document.getElementById('finding-filter'); f.value = '%s'; f.dispatchEvent(new Event('input')); })()"
VISIBLE_ROWS = "Array.from(document.querySelectorAll('#findings-table tbody tr')).filter(r => !r.hidden).length"


def _only_the_file_was_requested(tab: Tab, url: str):
    requests = tab.requests()
    assert requests == [url], requests
    assert tab.events("Network.webSocketCreated") == []


def test_page_renders_with_title_counts_style_and_script(tab, report_file):
    path, report = report_file
    url = tab.open(path)
    assert tab.eval("document.title") == "ztunnel-bundle report: bookinfo-incident"
    counts = tab.eval("Object.fromEntries(Array.from(document.querySelectorAll('#counts .badge'))"
                      ".map(b => [b.dataset.severity, Number(b.querySelector('b').textContent)]))")
    assert counts == {s: report["summary"][s] for s in SEVERITIES}
    # The page's own script ran (its CSP hash matches) and revealed the controls ...
    assert tab.eval("document.documentElement.dataset.reportReady") == "1"
    assert tab.eval("document.getElementById('finding-controls').hidden") is False
    assert tab.eval("document.getElementById('finding-shown').textContent") == "all 12 shown"
    # ... and its stylesheet applied (its hash matches too).
    assert tab.eval("getComputedStyle(document.querySelector('#counts .sev-critical')).backgroundColor") == "rgb(142, 27, 27)"
    assert tab.eval("document.querySelectorAll('svg.chart').length") == 3
    assert not tab.events("Runtime.exceptionThrown")
    assert not [e for e in tab.events("Log.entryAdded") if "Content Security Policy" in e["entry"].get("text", "")]
    _only_the_file_was_requested(tab, url)


def test_without_javascript_the_table_is_complete_and_the_controls_hidden(tab, report_file):
    path, report = report_file
    tab.send("Emulation.setScriptExecutionDisabled", {"value": True})
    tab.open(path)
    tab.send("Emulation.setScriptExecutionDisabled", {"value": False})  # our probes below run; the page's did not
    assert tab.eval("document.documentElement.dataset.reportReady") is None
    assert tab.eval("getComputedStyle(document.getElementById('finding-controls')).display") == "none"
    assert tab.eval(VISIBLE_ROWS) == len(report["findings"])
    # The details still open natively.
    tab.eval("document.querySelector('#findings-table summary').click()")
    assert tab.eval("document.querySelector('#findings-table details').open") is True


def test_column_headers_sort_the_rows(tab, report_file):
    path, _ = report_file
    tab.open(path)
    initial = tab.eval(ROW_SEVERITIES)
    assert initial[0] == "critical" and initial[-1] == "info"
    tab.eval("document.querySelector('th[data-key=sev] button').click()")
    ascending = tab.eval(ROW_SEVERITIES)
    assert ascending[0] == "info" and ascending[-1] == "critical"
    assert ascending == sorted(initial, key=SEVERITIES.index, reverse=True)
    assert tab.eval("document.querySelector('th[data-key=sev]').getAttribute('aria-sort')") == "ascending"
    tab.eval("document.querySelector('th[data-key=sev] button').click()")
    assert tab.eval(ROW_SEVERITIES) == initial
    tab.eval("document.querySelector('th[data-key=res] button').click()")
    resources = tab.eval("Array.from(document.querySelectorAll('#findings-table tbody tr')).map(r => Number(r.dataset.res))")
    assert resources == sorted(resources, reverse=True) and resources[0] > resources[-1]
    tab.eval("document.querySelector('th[data-key=title] button').click()")
    titles = tab.eval("Array.from(document.querySelectorAll('#findings-table tbody .title')).map(t => t.textContent)")
    assert titles == sorted(titles, key=str.lower)
    assert tab.eval("document.querySelector('th[data-key=sev]').getAttribute('aria-sort')") == "none"


def test_filters_hide_rows(tab, report_file):
    path, report = report_file
    url = tab.open(path)
    assert tab.eval(VISIBLE_ROWS) == 12
    # Typing in the text filter (real key input) hides the rows whose title/message/resources do not match.
    tab.eval("document.getElementById('finding-filter').focus()")
    tab.send("Input.insertText", {"text": "productpage-v1-00007"})
    assert tab.wait_for(VISIBLE_ROWS, 1) == 1
    assert tab.eval("document.querySelector('#findings-table tbody tr:not([hidden]) .title').textContent") == \
        report["findings"][7]["title"]
    assert tab.eval("document.getElementById('finding-shown').textContent") == "1 of 12 shown"
    # A text matching nothing says so.
    tab.eval(SET_FILTER % "no such thing")
    assert tab.wait_for(VISIBLE_ROWS, 0) == 0 and tab.eval("document.getElementById('no-match').hidden") is False
    # Clear the text; untick two severities with real clicks on the checkboxes.
    tab.eval(SET_FILTER % "")
    assert tab.wait_for(VISIBLE_ROWS, 12) == 12
    for severity in ("info", "warning"):
        box = tab.eval(CENTER_OF % f"input[name=severity][value={severity}]")
        for kind in ("mousePressed", "mouseReleased"):
            tab.send("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1})
    assert tab.eval(VISIBLE_ROWS) == 6
    visible = tab.eval("Array.from(document.querySelectorAll('#findings-table tbody tr:not([hidden])')).map(r => r.dataset.severity)")
    assert set(visible) == {"critical", "error"}
    _only_the_file_was_requested(tab, url)


def test_planted_scripts_do_not_run(tab, tmp_path):
    report = make_report(1)
    views = report["views"]
    for index, payload in enumerate(PAYLOADS):
        finding = make_finding(100 + index, "critical", pod=f"pod-{payload}", excerpt=f"log line {payload}",
                               message=f"message {payload}", title=f"planted {index} {payload}")
        finding["resources"].append({"kind": "Pod", "name": payload, "namespace": f"label-app={payload}"})
        report["findings"].append(finding)
        views["ztunnels"].append({"node": payload, "pod": f"ztunnel-{payload}", "version": payload, "sync": payload})
        views["certificates"].append({"node": payload, "ztunnel": payload, "identity": f"spiffe://td/ns/{payload}",
                                      "state": payload, "validFrom": "2026-11-25T00:00:00Z",
                                      "expiration": "2026-11-25T20:00:00Z"})
        views["loadBalancing"].append({"service": f"app={payload}", "endpoints": [{"name": payload, "node": payload,
                                                                                 "connections": 3}],
                                       "expected": 3, "skewed": False})
        views["drift"].append({"ztunnel": payload, "node": payload, "kind": "workload", "key": payload,
                               "reference": "majority", "fields": [{"field": "labels", "ztunnel": {"app": payload},
                                                                   "reference": payload}]})
        views["gaps"].append({"path": payload, "kind": payload, "status": "error", "reason": payload})
    views["bundle"]["bundle"]["root"] = PAYLOADS[0]
    path = tmp_path / "hostile.html"
    path.write_text(render(report), encoding="utf-8")
    url = tab.open(path)
    tab.eval("document.getElementById('expand-all').click(); document.querySelectorAll('details').forEach(d => d.open = true)")
    # The load event already waited for images and frames; let the page run one more frame of handlers.
    tab.eval("new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))")
    assert tab.eval("window.__pwned") is None
    assert tab.eval("document.title").startswith("ztunnel-bundle report: ")
    assert "pwned" not in tab.eval("document.title")
    # The payloads are on the page as text.
    body = tab.eval("document.body.innerText")
    assert f"pod-{PAYLOADS[0]}" in body and f"log line {PAYLOADS[0]}" in body and f"label-app={PAYLOADS[0]}" in body
    assert tab.eval("document.querySelectorAll('img').length") == 0
    assert tab.eval("document.documentElement.scrollWidth") <= 1280  # long hostile names wrap, no sideways scroll
    assert tab.eval("document.querySelectorAll('script').length") == 2
    assert tab.eval("document.documentElement.dataset.reportReady") == "1"
    _only_the_file_was_requested(tab, url)


def test_csp_stops_a_script_spliced_into_the_html(tab, report_file, tmp_path):
    """Defense in depth: even markup that bypassed escaping could neither run nor load anything."""
    path, _ = report_file
    planted = (f"<script>{PWN}</script><img src=x onerror=\"{PWN}\">"
               '<img src="http://127.0.0.1:9/beacon.png"><link rel="stylesheet" href="https://example.invalid/x.css">'
               f"<iframe srcdoc=\"<script>parent.{PWN}</script>\"></iframe>")
    page = path.read_text(encoding="utf-8").replace("<main>", "<main>" + planted, 1)
    spliced = tmp_path / "spliced.html"
    spliced.write_text(page, encoding="utf-8")
    url = tab.open(spliced)
    # The load event already waited for images and frames; let the page run one more frame of handlers.
    tab.eval("new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))")
    assert tab.eval("window.__pwned") is None
    assert tab.eval("document.title") == "ztunnel-bundle report: bookinfo-incident"
    assert tab.eval("document.documentElement.dataset.reportReady") == "1"  # the page's own script still runs
    violations = [e["entry"]["text"] for e in tab.events("Log.entryAdded")
                  if "Content Security Policy" in e["entry"].get("text", "")]
    assert violations, "the policy reported nothing"
    # Nothing went out: Chromium announces the planted loads, then fails each of them on the policy before
    # any connection (blockedReason "csp"), and nothing but the file itself got a response.
    outside = {params["requestId"]: params["request"]["url"] for params in tab.events("Network.requestWillBeSent")
               if params["request"]["url"] != url}
    assert {"http://127.0.0.1:9/beacon.png", "https://example.invalid/x.css"} <= set(outside.values())
    blocked = {params["requestId"]: params.get("blockedReason") for params in tab.events("Network.loadingFailed")}
    assert {blocked.get(request) for request in outside} == {"csp"}, blocked
    responded = [params["response"]["url"] for params in tab.events("Network.responseReceived")]
    assert responded in ([], [url]), responded


def test_five_thousand_findings_stay_usable(tab, tmp_path):
    report = make_report(1)
    report["findings"] = [make_finding(i, SEVERITIES[i % 4]) for i in range(5000)]
    report["summary"] = {s: 1250 for s in SEVERITIES} | {"total": 5000}
    path = tmp_path / "big.html"
    path.write_text(render(report), encoding="utf-8")
    tab.open(path)
    assert tab.eval("document.querySelectorAll('#findings-table tbody tr').length") == 5000
    tab.eval("""(() => {
        document.querySelector('th[data-key=sev] button').click();
        const f = document.getElementById('finding-filter');
        f.value = 'productpage-v1-04321'; f.dispatchEvent(new Event('input'));
        return true; })()""")
    assert tab.wait_for(VISIBLE_ROWS, 1) == 1


def test_screenshot(tab, report_file, tmp_path):
    path, _ = report_file
    tab.open(path)
    # Open one finding so that the details (resources, evidence, remediation) are in the picture.
    tab.eval("document.querySelectorAll('#findings-table details')[1].open = true")
    height = tab.eval("Math.ceil(document.documentElement.scrollHeight)")
    shot = tab.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                               "clip": {"x": 0, "y": 0, "width": 1280, "height": min(height, 4000),
                                                        "scale": 1}}, timeout=30)
    png = base64.b64decode(shot["data"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    folder = Path(os.environ.get("REPORT_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.png").write_bytes(png)
