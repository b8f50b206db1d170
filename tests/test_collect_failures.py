"""`bundle collect` when the cluster fails it: the API server going away mid-run, TLS errors, credentials that
expire (from the start or mid-run), exec credential plugins that fail, and the transient faults collect must ride
out. Each gets one clear line, the documented exit code (4: a valid partial archive, 1: nothing usable), and,
whenever anything was collected, an archive that verifies and whose manifest names each failure. Also: port-forwards
kept between GETs to the same pod, and replaced when the other end closed them.

Everything runs on loopback against `bundle serve` (or, for TLS, a few lines of `http.server`)."""

from __future__ import annotations

import contextlib
import http.server
import io
import socket
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
import yaml

from bundler import layout
from bundler.collect.kube import Kube
from bundler.collect.plan import Options, build_plan
from bundler.collect.rbac import preflight
from bundler.errors import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL
from bundler.serve.faults import FaultInjector
from bundler.serve.server import start_server
from bundler.serve.tls import kubeconfig, make_tls, write_kubeconfig
from tests.test_collect import INCIDENT, manifest, members, run_collect


def bundle(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bundler", *args], capture_output=True, text=True, timeout=120)


def collect_cli(kubeconfig_path: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return bundle("collect", "-o", str(out), "--kubeconfig", str(kubeconfig_path), "--request-timeout", "5s", *args)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The command failed with exactly one line on stderr, an ``error:`` line, and no traceback."""
    assert result.returncode == EXIT_ERROR, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def verified(out: Path) -> None:
    result = bundle("verify", str(out))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def requests_before_tasks() -> int:
    """How many API requests collect makes before its first task (the preflight and discovery): a fault that
    starts after that many requests starts exactly when the collection does."""
    faults = FaultInjector.from_dict({})
    with start_server(INCIDENT, faults=faults) as server:
        kube = Kube(str(server.kubeconfig_path))
        try:
            preflight(kube)
            build_plan(kube, Options())
        finally:
            kube.close()
    return faults.stats["requests"]


# --- the API server goes away mid-run ------------------------------------------------------------------------


def test_served_api_server_goes_away_or_refuses_the_token_after_n_requests(served, tmp_path):
    import io

    from bundler.collect.kube import FetchError
    from bundler.serve.faults import FaultsError

    def outcomes(server) -> list[tuple[str, int, str]]:
        kube = Kube(str(server.kubeconfig_path), request_timeout=5.0)
        seen = []
        try:
            for _ in range(4):
                try:
                    kube.fetch("/version", io.BytesIO())
                    seen.append(("ok", 200, ""))
                except FetchError as exc:
                    seen.append(("error", exc.status, exc.kind))
            try:
                kube.forward_get("istio-system", "istiod-40b6fe0ec8-zdc48", 15014, "/version", io.BytesIO())
                seen.append(("ok", 200, ""))
            except FetchError as exc:
                seen.append(("error", exc.status, exc.kind))
        finally:
            kube.close()
        return seen

    gone = FaultInjector.from_dict({"shutdownAfter": 2})
    # The third request is reset (no kind: the connection was made); then nothing accepts connections.
    assert outcomes(served(faults=gone)) == [("ok", 200, ""), ("ok", 200, ""), ("error", 0, ""),
                                             ("error", 0, "unreachable"), ("error", 0, "unreachable")]
    assert gone.stats["shutdown"] == 1
    revoked = FaultInjector.from_dict({"unauthorizedAfter": 2})
    assert outcomes(served(faults=revoked)) == [("ok", 200, ""), ("ok", 200, "")] + \
        [("error", 401, "unauthorized")] * 3
    assert revoked.stats["unauthorized"] == 3
    for key in ("shutdownAfter", "unauthorizedAfter"):
        with pytest.raises(FaultsError, match=f"^{key}: "):
            FaultInjector.from_dict({key: -1})


@pytest.mark.slow
def test_api_server_going_away_mid_run_keeps_what_was_collected(served, tmp_path, requests_before_tasks):
    # 25 task requests are answered; at most 15 of them (one per other worker) can still be in flight when the
    # 26th makes the server go away, so some artifacts are in whatever the interleaving.
    server = served(faults={"shutdownAfter": requests_before_tasks + 25})
    out = tmp_path / "gone.tar.zst"
    result = collect_cli(server.kubeconfig_path, out)
    assert result.returncode == EXIT_PARTIAL, result.stderr
    assert "Traceback" not in result.stderr
    stopped = [line for line in result.stderr.splitlines() if line.startswith("stopped: ")]
    assert len(stopped) == 1, result.stderr
    assert stopped[0].startswith("stopped: the API server became unreachable: ")
    assert "cannot connect to the API server https://127.0.0.1:" in stopped[0]
    verified(out)
    m = manifest(out)
    assert any("collection stopped early: the API server became unreachable" in w for w in m.extra["warnings"])
    ok = [a for a in m.artifacts if a.status in ("ok", "truncated")]
    lost = [a for a in m.artifacts if a.status in ("error", "skipped")]
    assert ok and lost
    assert set(members(out)) == {layout.MANIFEST} | {a.path for a in ok}
    assert all(a.reason for a in lost)
    assert any("became unreachable" in a.reason or "cannot connect to the API server" in a.reason for a in lost)


@pytest.mark.slow
def test_api_server_gone_before_anything_was_collected_is_exit_1(served, tmp_path, requests_before_tasks):
    server = served(faults={"shutdownAfter": requests_before_tasks})
    out = tmp_path / "nothing.tar.zst"
    line = one_error_line(collect_cli(server.kubeconfig_path, out, "-q"))
    assert line.startswith("error: nothing could be collected: the API server became unreachable: ")
    assert not out.exists()


def test_unreachable_before_discovery_is_not_retried(tmp_path):
    """Connection refused at the start: one line at once (no retries: nothing is listening)."""
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, kubeconfig("x", "https://127.0.0.1:9", make_tls().ca_pem, "t"))
    line = one_error_line(collect_cli(path, tmp_path / "x.tar.zst"))
    assert line == "error: cannot connect to the API server https://127.0.0.1:9: [Errno 111] Connection refused"


# --- TLS ----------------------------------------------------------------------------------------------------


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def loopback_server(tls=None):
    """A tiny HTTP server on 127.0.0.1, over TLS with ``tls`` (a ServerTLS) when given. Yields its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    if tls is not None:
        server.socket = tls.ssl_context().wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


TLS_CASES = {
    "wrong-ca": "certificate verify failed: unable to get local issuer certificate (the API server's certificate "
                "is not signed by the kubeconfig's certificate-authority)",
    "certificate-for-another-host": "certificate verify failed: IP address mismatch, certificate is not valid for "
                                    "'127.0.0.1'. (the API server's certificate is not valid for the kubeconfig's "
                                    "server name (or tls-server-name))",
    "tls-server-name": "Hostname mismatch, certificate is not valid for 'kubernetes.example'.",
    "plain-http": "wrong version number (the server does not speak TLS: plain HTTP behind an https:// URL?)",
}


@pytest.mark.parametrize("case", sorted(TLS_CASES))
def test_tls_errors_are_one_line_and_exit_1(served, tmp_path, case):
    expected = TLS_CASES[case]
    path, out = tmp_path / "kubeconfig", tmp_path / "x.tar.zst"
    with contextlib.ExitStack() as stack:
        if case in ("wrong-ca", "tls-server-name"):
            server = served()
            config = server.kubeconfig()
            if case == "wrong-ca":
                config = kubeconfig("x", server.url, make_tls().ca_pem, server.token)
            else:
                config["clusters"][0]["cluster"]["tls-server-name"] = "kubernetes.example"
            url = server.url
        else:
            tls = make_tls(("kubernetes.example",)) if case == "certificate-for-another-host" else None
            port = stack.enter_context(loopback_server(tls))
            url = f"https://127.0.0.1:{port}"
            config = kubeconfig("x", url, (tls or make_tls()).ca_pem, "t")
        write_kubeconfig(path, config)
        line = one_error_line(collect_cli(path, out))
    assert line.startswith(f"error: TLS handshake with the API server {url} failed: [SSL: ")
    assert expected in line
    assert not out.exists()


# --- credentials ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("quiet", [(), ("-q",)], ids=["progress", "quiet"])
def test_token_revoked_mid_run_keeps_what_was_collected(served, tmp_path, requests_before_tasks, quiet):
    server = served(faults={"unauthorizedAfter": requests_before_tasks + 25})
    out = tmp_path / "revoked.tar.zst"
    result = collect_cli(server.kubeconfig_path, out, *quiet)
    assert result.returncode == EXIT_PARTIAL, result.stderr
    assert "Traceback" not in result.stderr
    reason = ("authentication failed: the API server answered 401 Unauthorized (the credentials expired or were "
              "revoked)")
    # -q silences the progress, not the early stop
    assert f"stopped: {reason}; writing what was collected" in result.stderr.splitlines()
    if quiet:
        assert not any(line.startswith(("collect:", "wrote ")) for line in result.stderr.splitlines())
    verified(out)
    m = manifest(out)
    assert f"collection stopped early: {reason}" in m.extra["warnings"]
    assert any(a.status == "ok" for a in m.artifacts)
    refused = [a for a in m.artifacts if a.status == "error" and "401" in (a.reason or "")]
    assert refused, [a.reason for a in m.artifacts]
    skipped = [a for a in m.artifacts if a.status == "skipped" and not a.path.endswith(".previous.log")]
    assert all(reason in a.reason for a in skipped)


def test_token_expired_from_the_start_is_one_line_and_exit_1(served, tmp_path):
    server = served()
    config = server.kubeconfig()
    config["users"][0]["user"]["token"] = "expired"
    path, out = tmp_path / "expired", tmp_path / "x.tar.zst"
    write_kubeconfig(path, config)
    line = one_error_line(collect_cli(path, out))
    assert line == (f"error: authentication failed: the API server {server.url} answered 401 Unauthorized (the "
                    "kubeconfig's credentials are wrong, expired or revoked)")
    assert not out.exists()


def test_token_revoked_as_the_collection_starts_is_exit_1(served, tmp_path, requests_before_tasks):
    server = served(faults={"unauthorizedAfter": requests_before_tasks})
    out = tmp_path / "x.tar.zst"
    line = one_error_line(collect_cli(server.kubeconfig_path, out, "-q"))
    assert line == ("error: nothing could be collected: authentication failed: the API server answered 401 "
                    "Unauthorized (the credentials expired or were revoked)")
    assert not out.exists()


EXEC_PLUGINS = {
    "not-found": ({"command": "/nonexistent/kubectl-oidc_login"},
                  "[Errno 2] No such file or directory: '/nonexistent/kubectl-oidc_login'"),
    "exits-non-zero": ({"command": sys.executable,
                        "args": ["-c", "import sys; sys.stderr.write('token refresh failed: invalid_grant\\n"
                                       "  (refresh token expired)\\n'); sys.exit(3)"]},
                       "exec: process returned 3. token refresh failed: invalid_grant (refresh token expired)"),
    "garbage-json": ({"command": sys.executable, "args": ["-c", "print('{not json')"]},
                     "exec: failed to decode process output"),
    "no-token": ({"command": sys.executable,
                  "args": ["-c", "print('{\"apiVersion\": \"client.authentication.k8s.io/v1\", "
                                 "\"kind\": \"ExecCredential\", \"status\": {}}')"]},
                 "exec: missing token or clientCertificateData field in plugin output"),
}


@pytest.mark.parametrize("case", sorted(EXEC_PLUGINS))
def test_failing_exec_plugin_is_one_line_naming_the_cause(tmp_path, case):
    plugin, expected = EXEC_PLUGINS[case]
    config = kubeconfig("x", "https://127.0.0.1:9", make_tls().ca_pem, "unused")
    config["users"][0]["user"] = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", **plugin}}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    line = one_error_line(collect_cli(path, tmp_path / "x.tar.zst"))
    assert line.startswith("error: the kubeconfig's exec credential plugin failed: ")
    assert expected in line


# --- transient faults: retried to a complete archive -----------------------------------------------------------


@pytest.mark.slow
def test_transient_faults_are_retried_to_a_complete_archive(served, tmp_path):
    """503 and 504 with Retry-After, resets, answers slower than the request timeout and 429s during discovery
    itself: every one is retried, and the archive is complete and the same as the served one."""
    faults = FaultInjector.from_dict({
        "seed": 3,
        "rules": [
            {"verb": "list", "fault": 503, "retryAfter": 0, "fraction": 0.4},
            {"path": "^/version$", "fault": 429, "retryAfter": 0, "fraction": 0.5},
            {"resource": "pods/proxy", "fault": 504, "retryAfter": 0, "fraction": 0.3},
            {"resource": "pods/proxy", "latency": {"ms": 2500}, "fraction": 0.3},
            {"resource": "pods/log", "fault": "reset", "fraction": 0.4},
        ],
    })
    server = served(faults=faults)
    out = tmp_path / "retried.tar.zst"
    assert run_collect(server, out, Options(request_timeout=1.0), deadline=60.0) == EXIT_OK
    stats = faults.stats
    assert stats["status_503"] and stats["status_429"] and stats["status_504"] and stats["reset"]
    assert stats["latency"]
    arts = manifest(out).artifacts
    assert any(a.extra["attempts"] > 1 for a in arts)
    original, again = members(INCIDENT), members(out)
    assert {p: d for p, d in again.items() if p != layout.MANIFEST} == \
        {p: d for p, d in original.items() if p != layout.MANIFEST}


def test_slow_logs_finish_within_the_request_timeout(served, tmp_path):
    """The request timeout bounds the wait between bytes: a log that takes longer than it to arrive, at a
    steady pace, is collected whole."""
    log = layout.ztunnel_log("ambient-worker", "ztunnel-g8gvh", "istio-proxy", False)
    size = len(members(INCIDENT)[log])
    faults = FaultInjector.from_dict({"slowLogs": {"pods": {"istio-system/ztunnel-g8gvh": size // 2}}})
    out = tmp_path / "slow.tar.zst"
    assert run_collect(served(faults=faults), out, Options(request_timeout=1.0)) == EXIT_OK
    assert manifest(out).artifact(log).status == "ok"
    assert members(out)[log] == members(INCIDENT)[log]


# --- port-forwards kept between GETs ---------------------------------------------------------------------------


@contextlib.contextmanager
def _kube_and_istiod():
    """A served incident bundle, a Kube on it and its (first) istiod pod; the fault injector counts requests."""
    faults = FaultInjector.from_dict({})
    with start_server(INCIDENT, faults=faults) as server:
        pods = orjson.loads(server.cluster.read("cluster/pods.json"))["items"]
        istiod = next(p for p in pods if p["metadata"]["labels"].get("app") == "istiod")
        kube = Kube(str(server.kubeconfig_path))
        try:
            yield kube, faults, istiod["metadata"]["namespace"], istiod["metadata"]["name"]
        finally:
            kube.close()


def test_gets_to_one_pod_share_a_port_forward_and_read_the_same_bodies():
    with _kube_and_istiod() as (kube, faults, namespace, name):
        bodies = []
        before = faults.stats.get("requests", 0)
        for path in ("/debug/syncz", "/version", "/debug/syncz", "/debug/ambientz"):
            sink = io.BytesIO()
            fetched = kube.forward_get(namespace, name, 15014, path, sink)
            assert fetched.status == 200 and fetched.size == len(sink.getvalue()) > 0
            bodies.append(sink.getvalue())
        # one WebSocket upgrade for the four GETs, each body whole and in its place
        assert faults.stats["requests"] - before == 1
        assert bodies[0] == bodies[2] and bodies[0] != bodies[1]
        assert orjson.loads(bodies[3]) is not None


def test_a_kept_port_forward_closed_by_the_other_end_is_replaced():
    with _kube_and_istiod() as (kube, _, namespace, name):
        first = io.BytesIO()
        kube.forward_get(namespace, name, 15014, "/debug/syncz", first)
        ((_, kept),) = kube._idle
        kept._ws.sock.shutdown(socket.SHUT_RDWR)  # the connection dies while the forward is idle
        again = io.BytesIO()
        kube.forward_get(namespace, name, 15014, "/debug/syncz", again)
        assert again.getvalue() == first.getvalue()


def test_kept_port_forwards_are_bounded_by_the_workers():
    with start_server(INCIDENT) as server:
        pods = orjson.loads(server.cluster.read("cluster/pods.json"))["items"]
        ztunnels = [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods
                    if p["metadata"]["labels"].get("app") == "ztunnel"]
        assert len(ztunnels) >= 3
        kube = Kube(str(server.kubeconfig_path), workers=2)
        try:
            opened = []
            for namespace, name in ztunnels:
                kube.forward_get(namespace, name, 15000, "/config_dump", io.BytesIO())
                opened += [t for _, t in kube._idle if t not in opened]
            assert len(kube._idle) == 2
            assert [t.ended for t in opened] == [True] * (len(opened) - 2) + [False, False]  # the oldest closed
        finally:
            kube.close()
        assert all(t.ended for t in opened)


@pytest.mark.parametrize("size", [0, 1, 255, 256, 257, 1024, 5000, 300_000])
def test_a_line_break_is_found_in_a_frame_without_copying_all_of_it(size):
    from bundler.collect.kube import _find_newline

    for data in (b"x" * size, b"x" * size + b"\n" + b"y" * 700, b"\n" + b"x" * size):
        for room in {len(data), len(data) // 2, min(len(data), 65537)}:
            assert _find_newline(memoryview(data), room) == data[:room].find(b"\n")
