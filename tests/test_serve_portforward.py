"""pods/portforward over WebSocket: the official client (kubernetes.stream.portforward) against the handler, plus
the wire protocol seen from a raw WebSocket, and hostile bytes on the data channel."""

from __future__ import annotations

import asyncio
import base64
import http.client
import logging
import random
import socket
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import websocket
from aiohttp import web
from kubernetes.client import ApiClient, Configuration, CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import portforward

from bundler import layout
from bundler.serve import portforward as pfmod
from bundler.serve.portforward import STATS_KEY, handle_portforward
from bundler.serve.state import NOT_CONNECTED, ServedCluster, load_served_cluster

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "bookinfo-incident.tar.zst"
ROUTE = "/api/v1/namespaces/{ns}/pods/{name}/portforward"
NS = "istio-system"
ZT = "ztunnel-g8gvh"
ZT_DUMP = "ztunnel/ambient-worker/ztunnel-g8gvh/config_dump.json"
REFUSED = "connect: connection refused"

pytestmark = [
    pytest.mark.timeout(30),
    # A protocol slip makes the client's proxy thread raise: fail the test instead of printing a warning.
    pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning"),
]


# --- the server under test -------------------------------------------------------------------------------------


class StubFaults:
    """The two questions the handler asks a FaultInjector."""

    def __init__(self, refused: tuple[str, ...] = (), deleted: tuple[str, ...] = ()) -> None:
        self.refused = set(refused)
        self.deleted = set(deleted)

    def portforward_refused(self, namespace: str, pod: str, port: int | None = None) -> bool:
        return f"{namespace}/{pod}" in self.refused or f"{namespace}/{pod}:{port}" in self.refused

    def pod_deleted(self, namespace: str, pod: str) -> bool:
        return f"{namespace}/{pod}" in self.deleted


class FakeApiServer:
    """An aiohttp server on 127.0.0.1 in a background thread with just the port-forward route."""

    def __init__(self, cluster: ServedCluster, faults: StubFaults | None = None) -> None:
        self.cluster = cluster
        self.faults = faults
        self.stats: list[pfmod.PortForwardStats] = []
        self.active = 0
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner, self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.url = f"http://127.0.0.1:{self.port}"

    async def _start(self) -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_get(ROUTE, self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, runner.addresses[0][1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._cond:
            self.active += 1
        try:
            return await handle_portforward(request, self.cluster, request.match_info["ns"],
                                            request.match_info["name"], self.faults)
        finally:
            with self._cond:
                stats = request.get(STATS_KEY)
                if stats is not None:
                    self.stats.append(stats)
                self.active -= 1
                self._cond.notify_all()

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Every port-forward handler has returned."""
        with self._cond:
            assert self._cond.wait_for(lambda: self.active == 0, timeout), f"{self.active} handlers still running"

    def handler_tasks(self) -> list[str]:
        """The handler's own tasks still alive in the server's loop."""
        async def probe() -> list[str]:
            names = [t.get_coro().__qualname__ for t in asyncio.all_tasks()]
            return [n for n in names if n.startswith(("_Session.", "_Connection."))]

        return asyncio.run_coroutine_threadsafe(probe(), self._loop).result(5)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(scope="module")
def cluster():
    c = load_served_cluster(SAMPLE)
    yield c
    c.close()


@pytest.fixture(scope="module")
def server(cluster):
    s = FakeApiServer(cluster)
    yield s
    s.close()


@pytest.fixture(autouse=True)
def no_errors_logged(caplog):
    caplog.set_level(logging.WARNING)
    yield
    bad = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith(("aiohttp", "bundler"))]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]


# --- the official client ---------------------------------------------------------------------------------------


def open_forward(url: str, pod: str, ports: str, namespace: str = NS):
    """``kubernetes.stream.portforward`` with an ApiClient of its own (stream() patches the client it is given)."""
    api = CoreV1Api(ApiClient(Configuration(host=url, api_key={"authorization": "Bearer x"})))
    return portforward(api.connect_get_namespaced_pod_portforward, pod, namespace, ports=ports)


def http_over(pf, port: int) -> http.client.HTTPConnection:
    sock = pf.socket(port)
    sock.settimeout(5)
    conn = http.client.HTTPConnection("localhost", port, timeout=5)
    conn.sock = sock
    return conn


def fetch(conn: http.client.HTTPConnection, target: str) -> tuple[int, str, bytes]:
    conn.request("GET", target)
    resp = conn.getresponse()
    return resp.status, resp.getheader("Content-Type", ""), resp.read()


class Reader:
    """HTTP responses off a byte stream, one at a time (pipelining keeps several in the buffer)."""

    def __init__(self, recv) -> None:
        self._recv = recv
        self.buf = bytearray()

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
                n = 0 if head_only else int(headers.get("content-length", "0"))
                if len(self.buf) >= end + 4 + n:
                    body = bytes(self.buf[end + 4:end + 4 + n])
                    del self.buf[:end + 4 + n]
                    return int(lines[0].split(" ", 2)[1]), headers, body
            data = self._recv()
            if not data:
                raise EOFError(bytes(self.buf))
            self.buf += data

    def at_eof(self) -> bool:
        return not self.buf and not self._recv()


def sock_reader(pf, port: int) -> tuple[socket.socket, Reader]:
    sock = pf.socket(port)
    sock.settimeout(5)
    return sock, Reader(lambda: sock.recv(1 << 20))


def test_config_dump_and_keepalive(server, cluster):
    pf = open_forward(server.url, ZT, "15000")
    # The kubelet's port-forward speaks v4.channel.k8s.io; the client offers v5 first and must not get it.
    assert pf.websocket.getheaders()["sec-websocket-protocol"] == "v4.channel.k8s.io"
    conn = http_over(pf, 15000)
    status, ctype, body = fetch(conn, "/config_dump")
    assert (status, ctype) == (200, "application/json")
    assert body == cluster.read(ZT_DUMP)
    assert fetch(conn, "/config_dump")[2] == body  # keep-alive: same socket, second request
    assert fetch(conn, "/not-an-endpoint")[:2] == (404, "application/json")
    assert fetch(conn, "/config_dump")[2] == body
    assert pf.error(15000) is None
    pf.close()
    server.wait_idle()
    assert server.handler_tasks() == []
    assert server.stats[-1].requests == 4 and server.stats[-1].protocol == "v4.channel.k8s.io"


def test_two_ports_one_refused(server, cluster):
    pf = open_forward(server.url, ZT, "15000,15001")
    dead = pf.socket(15001)
    dead.settimeout(5)
    assert dead.recv(1) == b""  # the client closes the local socket of a port that reported an error
    error = pf.error(15001)
    assert error.startswith("error forwarding port 15001 to pod ") and error.endswith(REFUSED), error
    # The other port of the same WebSocket carries on.
    conn = http_over(pf, 15000)
    assert fetch(conn, "/config_dump") == (200, "application/json", cluster.read(ZT_DUMP))
    assert pf.error(15000) is None
    pf.close()
    server.wait_idle()


def test_only_port_refused_ends_the_forward(server):
    pf = open_forward(server.url, ZT, "15001")
    conn = http_over(pf, 15001)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        fetch(conn, "/config_dump")
    assert REFUSED in pf.error(15001)
    server.wait_idle()  # with no port left the server closes the WebSocket itself, as the kubelet does
    assert server.handler_tasks() == []


def test_istiod_debug_endpoints(server, cluster):
    replicas = sorted(p["metadata"]["name"] for p in cluster.list("", "pods", NS)
                      if p["metadata"]["name"].startswith("istiod-"))
    assert len(replicas) == 2
    views = [a for a in cluster.manifest.artifacts
             if a.kind in (layout.KIND_ISTIOD_CONFIG_DUMP, layout.KIND_ISTIOD_WADS) and a.collected]
    assert views
    for replica in replicas:
        pf = open_forward(server.url, replica, "15014")
        conn = http_over(pf, 15014)
        for art in views:
            status, ctype, body = fetch(conn, art.source["urlPath"])
            if art.source["replica"] == replica:
                assert (status, ctype, body) == (200, "application/json", cluster.read(art.path)), art.path
            else:
                assert (status, body) == (404, NOT_CONNECTED.encode()), art.path
        assert fetch(conn, "/debug/syncz") == (200, "application/json", cluster.read(f"istiod/{replica}/syncz.json"))
        status, ctype, body = fetch(conn, "/version")
        assert (status, body) == (200, cluster.read(f"istiod/{replica}/version.txt"))
        assert ctype.startswith("text/plain")
        pf.close()
    server.wait_idle()


def test_missing_pod_is_a_404_handshake(server):
    # The client does not check the status itself: websocket-client fails the handshake and portforward()
    # wraps that in ApiException(status=0) whose reason holds the status line and the Status body.
    with pytest.raises(ApiException) as info:
        open_forward(server.url, "ztunnel-nope", "15000")
    assert info.value.status == 0
    assert "Handshake status 404 Not Found" in info.value.reason
    assert '"reason":"NotFound"' in info.value.reason and 'pods \\"ztunnel-nope\\" not found' in info.value.reason


@pytest.fixture(scope="module")
def big_server(cluster):
    big = random.Random(7).randbytes(5 * 1024 * 1024 + 123)  # not a multiple of the frame size

    def read(member: str) -> bytes:
        return big if member == ZT_DUMP else cluster.read(member)

    s = FakeApiServer(ServedCluster.build(cluster.manifest, read))
    s.big = big
    yield s
    s.close()


def test_big_body_is_byte_identical(big_server):
    pf = open_forward(big_server.url, ZT, "15000")
    conn = http_over(pf, 15000)
    for _ in range(2):
        status, _, body = fetch(conn, "/config_dump")
        assert status == 200 and len(body) == len(big_server.big) and body == big_server.big
    pf.close()
    big_server.wait_idle()
    assert big_server.stats[-1].bytes_out > 2 * len(big_server.big)


def test_big_body_frames_are_bounded(big_server):
    ws = RawForward(big_server.port, _path(ZT, "ports=15000"))
    assert ws.first_frames() == [(0, b"\x98\x3a"), (1, b"\x98\x3a")]
    ws.send(0, b"GET /config_dump HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    sizes = []
    reader = Reader(lambda: ws.data(0, sizes))
    status, headers, body = reader.response()
    assert status == 200 and headers["connection"] == "close" and body == big_server.big
    assert max(sizes) == 1 + pfmod.FRAME_BYTES and len(sizes) >= len(body) // pfmod.FRAME_BYTES
    assert ws.data(0) == b""  # Connection: close on the only port: the server closes the WebSocket
    big_server.wait_idle()


@pytest.mark.parametrize("abrupt", [False, True])
def test_client_going_away_mid_body(big_server, abrupt):
    # (With the official client this is pf.close() after reading everything: closing its socket with unread
    # bytes in it kills the client's proxy thread with ECONNRESET before it closes the WebSocket.)
    ws = RawForward(big_server.port, _path(ZT, "ports=15000"))
    ws.first_frames()
    ws.send(0, b"GET /config_dump HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ws.data(0).startswith(b"HTTP/1.1 200 OK\r\n")
    if abrupt:
        ws.ws.sock.shutdown(socket.SHUT_RDWR)
        ws.ws.sock.close()
    else:
        ws.close()
    big_server.wait_idle()
    assert big_server.handler_tasks() == []


def test_silent_client_is_dropped_by_heartbeat(server, monkeypatch):
    monkeypatch.setattr(pfmod, "HEARTBEAT_SECONDS", 0.2)
    ws = RawForward(server.port, _path(ZT, "ports=15000"))
    ws.first_frames()
    # The client stops reading (so it answers no ping): the server gives up on it.
    server.wait_idle()
    assert server.handler_tasks() == []
    ws.ws.shutdown()


def test_sixteen_concurrent_forwards(server, cluster):
    zts = {a.source["pod"]: a.path for a in cluster.manifest.artifacts if a.kind == layout.KIND_ZTUNNEL_CONFIG_DUMP}
    assert len(zts) == 3
    jobs = [sorted(zts)[i % 3] for i in range(16)]

    def one(pod: str) -> bool:
        pf = open_forward(server.url, pod, "15000")
        try:
            conn = http_over(pf, 15000)
            return all(fetch(conn, "/config_dump")[2] == cluster.read(zts[pod]) for _ in range(3))
        finally:
            pf.close()

    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(one, jobs))
    server.wait_idle()
    assert server.handler_tasks() == []


# --- HTTP on the data channel ------------------------------------------------------------------------------------


def test_pipelined_requests_bodies_and_http10(server, cluster):
    dump = cluster.read(ZT_DUMP)
    pf = open_forward(server.url, ZT, "15000")
    sock, reader = sock_reader(pf, 15000)
    sock.sendall(b"GET /config_dump HTTP/1.1\r\nHost: x\r\n\r\n"
                 b"HEAD /config_dump HTTP/1.1\r\nHost: x\r\n\r\n"
                 b"POST /config_dump HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world"
                 b"GET /config_dump HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
                 b"\r\nGET /config_dump?b=2&a=1 HTTP/1.1\r\n\r\n"
                 b"GET http://localhost:15000/config_dump HTTP/1.0\r\n\r\n")
    assert reader.response()[::2] == (200, dump)
    status, headers, body = reader.response(head_only=True)
    assert (status, headers["content-length"], body) == (200, str(len(dump)), b"")
    assert reader.response()[::2] == (200, dump)
    assert reader.response()[::2] == (200, dump)
    assert reader.response()[0] == 404  # the query is part of the target
    status, headers, body = reader.response()
    assert (status, headers["connection"], body) == (200, "close", dump)  # HTTP/1.0: answer, then close
    assert reader.at_eof()
    server.wait_idle()
    assert server.stats[-1].requests == 6


def test_expect_continue(server, cluster):
    pf = open_forward(server.url, ZT, "15000")
    sock, reader = sock_reader(pf, 15000)
    sock.sendall(b"POST /config_dump HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert reader.response()[0] == 100
    sock.sendall(b"abc")
    assert reader.response()[::2] == (200, cluster.read(ZT_DUMP))
    pf.close()
    server.wait_idle()


@pytest.mark.parametrize("request_bytes, status", [
    (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", 400),
    (b"GET /config_dump\r\n\r\n", 400),
    (b"GET /config_dump HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET /config_dump HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    (b"GET /config_dump HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n", 400),
    (b"GET /config_dump HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET /config_dump HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"GET /config_dump HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"GET /config_dump HTTP/2.0\r\n\r\n", 505),
])
def test_malformed_request_is_rejected_and_closed(server, request_bytes, status):
    pf = open_forward(server.url, ZT, "15000")
    sock, reader = sock_reader(pf, 15000)
    sock.sendall(request_bytes)
    got, headers, body = reader.response()
    assert (got, headers["connection"]) == (status, "close")
    assert body.startswith(str(status).encode())
    assert reader.at_eof()
    assert pf.error(15000) is None
    server.wait_idle()


def test_huge_header_block_is_capped(server):
    pf = open_forward(server.url, ZT, "15000")
    sock, reader = sock_reader(pf, 15000)
    sent = threading.Event()

    def flood() -> None:
        try:
            sock.sendall(b"GET /config_dump HTTP/1.1\r\nX-Big: " + b"a" * (10 << 20))
        except OSError:
            pass  # the forward ended under us: expected
        sent.set()

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    status, headers, _ = reader.response()
    assert (status, headers["connection"]) == (431, "close")
    try:
        assert reader.at_eof()
    except ConnectionResetError:
        pass  # the client's proxy dropped its socket pair with our unsent flood in it: a reset, as over TCP
    pf.close()
    sender.join(10)
    assert sent.is_set()
    server.wait_idle()
    # The server answered after the cap, not after buffering the flood.
    assert server.stats[-1].peak_buffered <= pfmod.MAX_BUFFERED + (1 << 20) + 1


# --- the wire protocol, seen from a raw WebSocket ------------------------------------------------------------------


class RawForward:
    """A WebSocket to the port-forward route, frame by frame."""

    def __init__(self, port: int, path: str, protocols: tuple[str, ...] | None = ("v4.channel.k8s.io",)) -> None:
        header = [f"Sec-WebSocket-Protocol: {', '.join(protocols)}"] if protocols else []
        self.ws = websocket.WebSocket()
        self.ws.connect(f"ws://127.0.0.1:{port}{path}", header=header, timeout=5)
        self.pending: dict[int, bytearray] = defaultdict(bytearray)
        self.base64 = protocols == ("v4.base64.channel.k8s.io",)
        query = parse_qs(urlsplit(path).query)
        self.ports = [int(p) for v in query.get("ports", []) for p in v.split(",")]

    @property
    def protocol(self) -> str | None:
        return self.ws.getheaders().get("sec-websocket-protocol")

    def frame(self) -> tuple[int, bytes] | None:
        """(channel, payload) of the next data message; None once the server has closed."""
        while True:
            opcode, frame = self.ws.recv_data_frame(True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return None
            if opcode == websocket.ABNF.OPCODE_TEXT and self.base64:
                text = frame.data.decode()
                return ord(text[0]) - ord("0"), base64.b64decode(text[1:])
            if opcode == websocket.ABNF.OPCODE_BINARY:
                assert not self.base64
                return frame.data[0], frame.data[1:]

    def first_frames(self) -> list[tuple[int, bytes] | None]:
        return [self.frame() for _ in range(2 * len(self.ports))]

    def data(self, channel: int, sizes: list[int] | None = None) -> bytes:
        """The next bytes on ``channel`` (b"" once the server has closed)."""
        while not self.pending[channel]:
            got = self.frame()
            if got is None:
                return b""
            ch, payload = got
            if sizes is not None and ch == channel:
                sizes.append(1 + len(payload))
            self.pending[ch] += payload
        out = bytes(self.pending[channel])
        self.pending[channel].clear()
        return out

    def send(self, channel: int, payload: bytes) -> None:
        if self.base64:
            self.ws.send(chr(ord("0") + channel) + base64.b64encode(payload).decode())
        else:
            self.ws.send_binary(bytes((channel,)) + payload)

    def close(self) -> None:
        self.ws.close()


def _path(pod: str, query: str) -> str:
    return f"/api/v1/namespaces/{NS}/pods/{pod}/portforward?{query}"


def test_first_frames_and_channels(server, cluster):
    ws = RawForward(server.port, _path(ZT, "ports=15000&ports=15001,15014"))
    assert ws.protocol == "v4.channel.k8s.io"
    first = [ws.frame() for _ in range(6)]
    assert first == [(0, b"\x98\x3a"), (1, b"\x98\x3a"), (2, b"\x99\x3a"), (3, b"\x99\x3a"),
                     (4, b"\xa6\x3a"), (5, b"\xa6\x3a")]
    errors = {}
    while len(errors) < 2:  # 15001 and 15014 (not istiod) refuse at once, before any data
        ch, payload = ws.frame()
        errors[ch] = payload.decode()
    assert set(errors) == {3, 5} and all(e.endswith(REFUSED) for e in errors.values())
    assert "port 15001" in errors[3] and "port 15014" in errors[5]
    ws.send(1, b"ignored: error channels are the server's")
    ws.send(9, b"ignored: no such channel")
    ws.send(0, b"GET /config_dump HTTP/1.1\r\n\r\n")
    assert Reader(lambda: ws.data(0)).response()[::2] == (200, cluster.read(ZT_DUMP))
    ws.close()
    server.wait_idle()


def test_base64_protocol(server, cluster):
    ws = RawForward(server.port, _path(ZT, "ports=15000"), protocols=("v4.base64.channel.k8s.io",))
    assert ws.protocol == "v4.base64.channel.k8s.io"
    assert [ws.frame(), ws.frame()] == [(0, b"\x98\x3a"), (1, b"\x98\x3a")]
    ws.send(0, b"GET /config_dump HTTP/1.1\r\n\r\n")
    assert Reader(lambda: ws.data(0)).response()[::2] == (200, cluster.read(ZT_DUMP))
    ws.close()
    server.wait_idle()


def test_no_protocol_offered_is_binary(server):
    ws = RawForward(server.port, _path(ZT, "ports=15000"), protocols=None)
    assert ws.protocol is None
    assert [ws.frame(), ws.frame()] == [(0, b"\x98\x3a"), (1, b"\x98\x3a")]
    ws.close()
    server.wait_idle()


def test_unknown_protocols_are_forbidden(server):
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        RawForward(server.port, _path(ZT, "ports=15000"), protocols=("v5.channel.k8s.io", "portforward.k8s.io"))
    assert info.value.status_code == 403


def test_huge_header_on_one_port_leaves_the_other_serving(server, cluster):
    ws = RawForward(server.port, _path(ZT, "ports=15000,15000"))
    assert len(ws.first_frames()) == 4
    ws.send(0, b"GET /config_dump HTTP/1.1\r\nX-Big: ")
    chunk = b"a" * (64 << 10)
    for _ in range(160):  # 10 MiB of header that never ends
        ws.send(0, chunk)
    ws.send(2, b"GET /config_dump HTTP/1.1\r\n\r\n")
    assert Reader(lambda: ws.data(0)).response()[0] == 431
    assert Reader(lambda: ws.data(2)).response()[::2] == (200, cluster.read(ZT_DUMP))
    ws.close()
    server.wait_idle()
    stats = server.stats[-1]
    assert stats.peak_buffered <= pfmod.MAX_BUFFERED + len(chunk) + 64
    assert stats.bytes_in <= pfmod.MAX_BUFFERED + 2 * len(chunk) + 1024  # the rest was dropped, never buffered


# --- refusals before the upgrade ----------------------------------------------------------------------------------


def _plain_get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_refusals_before_upgrade(server):
    status, body = _plain_get(server.port, _path(ZT, "ports=15000"))
    assert status == 400 and b'"message":"Upgrade request required"' in body and b'"kind":"Status"' in body
    status, body = _plain_get(server.port, _path(ZT, "ports=15000,abc"))
    assert status == 400 and b'cannot convert to []int32: strconv.ParseUint: parsing \\"abc\\": invalid syntax' in body
    status, body = _plain_get(server.port, _path(ZT, "ports=70000"))
    assert status == 400 and b"value out of range" in body
    status, body = _plain_get(server.port, _path("nope", "ports=15000"))
    assert status == 404 and b'"reason":"NotFound"' in body
    for query, message in (("", b'query parameter \\"port\\" is required'), ("ports=0", b'port \\"0\\" must be > 0')):
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            RawForward(server.port, _path(ZT, query))
        assert info.value.status_code == 400 and message in info.value.resp_body


def test_faults(cluster):
    faults = StubFaults(refused=(f"{NS}/{ZT}", f"{NS}/ztunnel-2tnmx:15000"), deleted=(f"{NS}/ztunnel-kkb2m",))
    s = FakeApiServer(cluster, faults)
    try:
        with pytest.raises(ApiException) as info:
            open_forward(s.url, ZT, "15000")
        assert "Handshake status 500" in info.value.reason and "error dialing backend" in info.value.reason
        with pytest.raises(ApiException) as info:
            open_forward(s.url, "ztunnel-kkb2m", "15000")
        assert "Handshake status 404" in info.value.reason and '"reason":"NotFound"' in info.value.reason
        # A refusal of one port travels on that port's error channel.
        pf = open_forward(s.url, "ztunnel-2tnmx", "15000")
        conn = http_over(pf, 15000)
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            fetch(conn, "/config_dump")
        assert REFUSED in pf.error(15000)
        s.wait_idle()
    finally:
        s.close()


# --- through the real server -------------------------------------------------------------------------------------


def test_through_bundle_serve(cluster):
    server_mod = pytest.importorskip("bundler.serve.server")
    from kubernetes import config

    with server_mod.serve(cluster) as srv:
        def forward(ports: str):
            api = CoreV1Api(config.new_client_from_config(config_file=str(srv.kubeconfig_path)))
            return portforward(api.connect_get_namespaced_pod_portforward, ZT, NS, ports=ports)

        pf = forward("15000,15001")
        conn = http_over(pf, 15000)
        assert fetch(conn, "/config_dump") == (200, "application/json", cluster.read(ZT_DUMP))
        dead = pf.socket(15001)
        dead.settimeout(5)
        assert dead.recv(1) == b"" and REFUSED in pf.error(15001)
        pf.close()
        proxies = [t for t in threading.enumerate() if t.name == "Kubernetes port forward proxy: 15000, 15001"]
        for thread in proxies:
            thread.join(5)  # it ends once the server has answered its close: then stop() finds nothing running
