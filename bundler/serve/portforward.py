"""``pods/portforward`` over WebSocket, as the API server and kubelet serve it to the official Python client.

The wire protocol (kubelet ``pkg/kubelet/cri/streaming/portforward/websocket.go``, client
``kubernetes/stream/ws_client.py`` ``PortForward``):

* The client offers ``Sec-WebSocket-Protocol: v5.channel.k8s.io,v4.channel.k8s.io``. The kubelet's port-forward
  knows ``v4.channel.k8s.io`` (binary frames), ``v4.base64.channel.k8s.io`` (text frames, base64) and no
  protocol at all (binary); it takes the first one the client offers that it knows, so the Python client gets
  ``v4.channel.k8s.io``. An offer with none of them is refused with ``403 Forbidden`` (golang.org/x/net/websocket).
* Every message starts with its channel byte (``'0' + channel`` in base64 mode). Port ``i`` of the ``ports``
  query owns channel ``2*i`` (data, both ways) and ``2*i+1`` (error, server to client only).
* Right after the upgrade the server writes, on both channels of every port, the port number as two bytes,
  little-endian: ``[channel, port & 0xff, port >> 8]``. The client checks it before it takes any data.
* Bytes the client writes to its local socket arrive as data messages; what the pod answers goes back the same
  way. If the pod's port refuses the connection, the kubelet writes the reason on the error channel, and the
  client closes that local socket and keeps the text in ``pf.error(port)``. There is no per-channel close in
  v4: the kubelet closes the WebSocket once every port's forward has ended.

Behind each data channel runs a small HTTP/1.1 server that answers from ``ServedCluster.forward``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import logging
import re
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from bundler.serve.state import Response, ServedCluster

log = logging.getLogger(__name__)

PROTOCOL_BINARY = "v4.channel.k8s.io"
PROTOCOL_BASE64 = "v4.base64.channel.k8s.io"
PROTOCOLS = (PROTOCOL_BINARY, PROTOCOL_BASE64)

FRAME_BYTES = 256 * 1024  # response bytes per WebSocket message
MAX_HEADER_BYTES = 64 * 1024  # request line + headers; more is 431
MAX_LINE_BYTES = 4096  # a chunk-size or trailer line of a chunked request body
MAX_BUFFERED = 256 * 1024  # unread bytes per port before the reader stops taking messages
MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # golang.org/x/net/websocket DefaultMaxPayloadBytes
# Ping the client this often and drop the connection when no pong comes within half of it: a client whose proxy
# thread died (the Python client's does when its local socket is reset) would otherwise hold the handler forever.
HEARTBEAT_SECONDS = 60.0
CHUNKED = -1  # the body length of a chunked request

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


@dataclass
class PortForwardStats:
    """What one port-forward connection did; left on the request under ``STATS_KEY`` for logging and tests."""

    ports: list[int] = field(default_factory=list)
    protocol: str = ""
    requests: int = 0
    bytes_in: int = 0  # data-channel payload received from the client
    bytes_out: int = 0  # data-channel payload sent to the client
    peak_buffered: int = 0  # the most unread bytes one port ever held
    errors: list[str] = field(default_factory=list)  # messages written on error channels


STATS_KEY: Any = (web.RequestKey("portforward_stats", PortForwardStats) if hasattr(web, "RequestKey")
                  else "portforward_stats")  # aiohttp < 3.12


async def handle_portforward(request: web.Request, cluster: ServedCluster, namespace: str, pod: str,
                             faults: Any = None) -> web.StreamResponse:
    """Serve ``GET /api/v1/namespaces/{namespace}/pods/{pod}/portforward?ports=...`` with a WebSocket upgrade.

    The checks come in the order the API server and then the kubelet make them: the ``ports`` query decodes
    (400), the pod exists (404; also ``faults.pod_deleted``), it has a node (400), the request is an upgrade
    (400), the kubelet can be dialled (500 ``error dialing backend`` when ``faults.portforward_refused(namespace,
    pod)``), ports are present and non-zero (400), a sub-protocol is acceptable (403). After the upgrade a port
    that nothing listens on (``cluster.forward`` gives None) or that ``faults.portforward_refused(namespace, pod,
    port)`` refuses gets the kubelet's ``connection refused`` text on its error channel at once.
    """
    try:
        ports = _parse_ports(request.query.getall("ports", []))
    except ValueError as exc:
        return _status(400, "BadRequest", f"cannot convert to []int32: {exc}")
    obj = cluster.pod(namespace, pod)
    if obj is None or (faults is not None and faults.pod_deleted(namespace, pod)):
        return _status(404, "NotFound", f'pods "{pod}" not found', {"name": pod, "kind": "pods"})
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if not spec.get("nodeName"):
        return _status(400, "BadRequest", f"pod {pod} does not have a host assigned")
    if not _is_websocket(request):
        return _status(400, "BadRequest", "Upgrade request required")
    if faults is not None and faults.portforward_refused(namespace, pod):
        host = status.get("hostIP") or "10.0.0.1"
        return _status(500, "", f"error dialing backend: dial tcp {host}:10250: connect: connection refused")
    if not ports:
        return _status(400, "BadRequest", 'query parameter "port" is required')
    if 0 in ports:
        return _status(400, "BadRequest", 'port "0" must be > 0')
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    if offered and not any(p in PROTOCOLS for p in offered):
        return web.Response(status=403)

    ws = web.WebSocketResponse(protocols=PROTOCOLS, compress=False, max_msg_size=MAX_MESSAGE_BYTES,
                               heartbeat=HEARTBEAT_SECONDS)
    await ws.prepare(request)
    stats = PortForwardStats(ports=list(ports), protocol=ws.ws_protocol or "")
    request[STATS_KEY] = stats
    meta = obj.get("metadata") or {}
    conn = _Connection(ws, cluster, namespace, pod, meta.get("uid") or f"{namespace}/{pod}", stats, faults)
    await conn.run(ports)
    return ws


def _parse_ports(values: list[str]) -> list[int]:
    """The ports of repeated ``ports=`` and comma lists, as the API server converts them (strconv.ParseUint)."""
    ports = []
    for value in values:
        for item in value.split(","):
            if not _DIGITS.fullmatch(item):
                raise ValueError(f'strconv.ParseUint: parsing "{item}": invalid syntax')
            port = int(item)
            if port > 65535:
                raise ValueError(f'strconv.ParseUint: parsing "{item}": value out of range')
            ports.append(port)
    return ports


def _is_websocket(request: web.Request) -> bool:
    connection = [t.strip().lower() for t in request.headers.get("Connection", "").split(",")]
    return "upgrade" in connection and request.headers.get("Upgrade", "").lower() == "websocket"


def _status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message}
    if reason:
        body["reason"] = reason
    if details:
        body["details"] = details
    body["code"] = code
    return web.Response(status=code, body=orjson.dumps(body), content_type="application/json")


def refused_message(pod_uid: str, port: int) -> str:
    """The kubelet's error-channel text when the container refuses the connection (kubelet ``portForward`` around
    containerd's ``portForward``); the sandbox ID and network namespace are derived from the pod UID."""
    sandbox = hashlib.sha256(pod_uid.encode()).hexdigest()
    netns = f"/var/run/netns/cni-{uuid.UUID(sandbox[:32])}"
    return (f"error forwarding port {port} to pod {sandbox}, uid : failed to execute portforward in network "
            f'namespace "{netns}": failed to connect to localhost:{port} inside namespace {sandbox}: '
            f"dial tcp 127.0.0.1:{port}: connect: connection refused")


class _Connection:
    """One WebSocket: the reader that spreads data messages over the ports, and the ports' HTTP servers."""

    def __init__(self, ws: web.WebSocketResponse, cluster: ServedCluster, namespace: str, pod: str, pod_uid: str,
                 stats: PortForwardStats, faults: Any = None) -> None:
        self.ws = ws
        self.cluster = cluster
        self.namespace = namespace
        self.pod = pod
        self.pod_uid = pod_uid
        self.stats = stats
        self.faults = faults
        self.base64 = ws.ws_protocol == PROTOCOL_BASE64
        self._send_lock = asyncio.Lock()

    async def run(self, ports: list[int]) -> None:
        sessions = [_Session(self, i, port) for i, port in enumerate(ports)]
        tasks: list[asyncio.Task[None]] = []
        try:
            for s in sessions:
                first = s.port.to_bytes(2, "little")
                await self.send(s.data_channel, first)
                await self.send(s.error_channel, first)
            tasks = [asyncio.create_task(s.serve()) for s in sessions]
            tasks.append(asyncio.create_task(self._read(sessions)))
            # Until the client closes (the reader ends) or every port's forward has ended.
            await asyncio.wait([tasks[-1], asyncio.gather(*tasks[:-1], return_exceptions=True)],
                               return_when=asyncio.FIRST_COMPLETED)
        except ConnectionError:
            pass  # the client went away while the first messages were written
        finally:
            for task in tasks:
                task.cancel()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, Exception) and not isinstance(result, ConnectionError):
                    log.error("port-forward %s/%s failed", self.namespace, self.pod, exc_info=result)
        # The reader is stopped, so close() itself waits for the client's close reply before it drops the TCP
        # connection: the client keeps every byte sent before the close frame.
        if not self.ws.closed:
            await self.ws.close()

    async def _read(self, sessions: list[_Session]) -> None:
        """Data messages to their port, until the WebSocket closes. Error channels are the server's to write and
        unknown channels are ignored, as the kubelet does."""
        async for msg in self.ws:
            if msg.type is WSMsgType.BINARY:
                data = msg.data
            elif msg.type is WSMsgType.TEXT:
                data = msg.data.encode("utf-8")
            elif msg.type is WSMsgType.ERROR:
                break
            else:
                continue
            if not data:
                continue
            channel = data[0]
            if self.base64:
                channel -= ord("0")
                try:
                    payload: bytes | memoryview = base64.b64decode(data[1:], validate=True)
                except (binascii.Error, ValueError):
                    continue
            else:
                payload = memoryview(data)[1:]
            if channel < 0 or channel % 2 or channel // 2 >= len(sessions) or not payload:
                continue
            await sessions[channel // 2].feed(payload)

    async def send(self, channel: int, *parts: bytes | memoryview) -> None:
        """One message on ``channel``."""
        async with self._send_lock:
            if self.base64:
                await self.ws.send_str(chr(ord("0") + channel) + base64.b64encode(b"".join(parts)).decode("ascii"))
            else:
                await self.ws.send_bytes(b"".join((bytes((channel,)), *parts)))

    async def send_stream(self, channel: int, head: bytes, body: bytes) -> None:
        """``head`` then ``body`` on ``channel``, in messages of at most FRAME_BYTES (the first holds the head)."""
        view = memoryview(body)
        first = max(FRAME_BYTES - len(head), 0)
        await self.send(channel, head, view[:first])
        for offset in range(first, len(view), FRAME_BYTES):
            await self.send(channel, view[offset:offset + FRAME_BYTES])
        self.stats.bytes_out += len(head) + len(body)


@dataclass
class _Request:
    method: str
    target: str
    version: tuple[int, int]
    headers: dict[str, list[str]]

    def header(self, name: str) -> list[str]:
        return self.headers.get(name, [])

    def tokens(self, name: str) -> set[str]:
        return {t.strip().lower() for v in self.header(name) for t in v.split(",") if t.strip()}


class _Session:
    """One forwarded port: the byte stream on its data channel, read by an HTTP/1.1 server."""

    def __init__(self, conn: _Connection, index: int, port: int) -> None:
        self.conn = conn
        self.port = port
        self.data_channel = 2 * index
        self.error_channel = 2 * index + 1
        self.buf = bytearray()
        self.done = False
        self._more = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    # --- the reader's side --------------------------------------------------------------------------------------

    async def feed(self, data: bytes | memoryview) -> None:
        """Take bytes the client wrote; wait while this port holds more than MAX_BUFFERED unread bytes."""
        if self.done:
            return  # the pod's side of this port is closed: the bytes go nowhere, as in a cluster
        self.buf += data
        stats = self.conn.stats
        stats.bytes_in += len(data)
        stats.peak_buffered = max(stats.peak_buffered, len(self.buf))
        self._more.set()
        if len(self.buf) > MAX_BUFFERED:
            self._room.clear()
            await self._room.wait()

    # --- the HTTP server's side -----------------------------------------------------------------------------

    async def serve(self) -> None:
        try:
            # The kubelet dials the pod's port as soon as the stream opens, before any data.
            faults = self.conn.faults
            refused = faults is not None and faults.portforward_refused(self.conn.namespace, self.conn.pod, self.port)
            if refused or await self._forward("GET", "/") is None:
                await self._refuse()
                return
            while await self._one_request():
                pass
        except ConnectionError:
            pass  # the WebSocket is gone
        finally:
            self.done = True
            self.buf = bytearray()
            self._room.set()

    async def _one_request(self) -> bool:
        """Read, answer; True to keep the connection for the next request."""
        head = await self._read_head()
        if isinstance(head, int):
            await self._reject(head)
            return False
        req = _parse_head(head)
        if isinstance(req, int):
            await self._reject(req)
            return False
        error, length = _body_framing(req)
        if error:
            await self._reject(error)
            return False
        if length and "100-continue" in req.tokens("expect") and req.version >= (1, 1):
            await self.conn.send(self.data_channel, b"HTTP/1.1 100 Continue\r\n\r\n")
        if not await (self._skip_chunked() if length == CHUNKED else self._skip(length)):
            await self._reject(400)
            return False
        self.conn.stats.requests += 1
        answer = await self._forward(req.method, _origin_form(req.target))
        if answer is None:
            await self._refuse()
            return False
        connection = req.tokens("connection")
        if req.version >= (1, 1):
            keep, extra = "close" not in connection, b""
        else:
            keep, extra = "keep-alive" in connection, b"Connection: keep-alive\r\n"
        if not keep:
            extra = b"Connection: close\r\n"
        await self._respond(answer.status, answer.body, answer.content_type, extra, head_only=req.method == "HEAD")
        return keep

    async def _forward(self, method: str, target: str) -> Response | None:
        c = self.conn
        call = functools.partial(c.cluster.forward, c.namespace, c.pod, self.port, method, target)
        try:
            return await asyncio.get_running_loop().run_in_executor(None, call)
        except Exception:  # a broken bundle member: the pod's server fails, the forward does not
            log.exception("port-forward %s/%s:%d %s %s", c.namespace, c.pod, self.port, method, target)
            return Response(500, b"Internal Server Error\n", "text/plain; charset=utf-8")

    async def _refuse(self) -> None:
        message = refused_message(self.conn.pod_uid, self.port)
        self.conn.stats.errors.append(message)
        await self.conn.send(self.error_channel, message.encode())

    async def _reject(self, status: int) -> None:
        """A request this server cannot read: answer the status and close, as Go's net/http does."""
        text = f"{status} {_reason(status)}".encode()
        await self._respond(status, text, "text/plain; charset=utf-8", b"Connection: close\r\n")

    async def _respond(self, status: int, body: bytes, content_type: str, extra: bytes = b"", *,
                       head_only: bool = False) -> None:
        head = (f"HTTP/1.1 {status} {_reason(status)}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nDate: {formatdate(usegmt=True)}\r\n").encode("latin-1")
        await self.conn.send_stream(self.data_channel, head + extra + b"\r\n", b"" if head_only else body)

    # --- reading the byte stream ----------------------------------------------------------------------------

    def _consume(self, n: int) -> None:
        del self.buf[:n]
        if len(self.buf) <= MAX_BUFFERED:
            self._room.set()

    async def _wait(self) -> None:
        self._more.clear()
        await self._more.wait()

    async def _read_head(self) -> bytes | int:
        """The next request line and headers (without the blank line), or 431 when they outgrow the cap."""
        scan = 0
        while True:
            blank = 0  # empty lines before a request line are ignored (RFC 9112 section 2.2)
            while blank < len(self.buf) and self.buf[blank] in b"\r\n":
                blank += 1
            if blank:
                self._consume(blank)
                scan = 0
            end = _HEAD_END.search(self.buf, max(scan - 3, 0))
            if end is not None:
                if end.start() > MAX_HEADER_BYTES:
                    return 431
                head = bytes(self.buf[:end.start()])
                self._consume(end.end())
                return head
            if len(self.buf) > MAX_HEADER_BYTES:
                return 431
            scan = len(self.buf)
            await self._wait()

    async def _read_line(self, limit: int) -> bytes | None:
        while True:
            end = self.buf.find(b"\n", 0, limit + 2)
            if end >= 0:
                line = bytes(self.buf[:end])
                self._consume(end + 1)
                return line[:-1] if line.endswith(b"\r") else line
            if len(self.buf) > limit + 1:
                return None
            await self._wait()

    async def _skip(self, n: int) -> bool:
        """Drop an ``n``-byte body as it arrives (the endpoints served take none)."""
        while n:
            take = min(n, len(self.buf))
            if take:
                self._consume(take)
                n -= take
            else:
                await self._wait()
        return True

    async def _skip_chunked(self) -> bool:
        while True:
            line = await self._read_line(MAX_LINE_BYTES)
            size = None if line is None else line.split(b";", 1)[0].strip(b" \t")
            if size is None or not _HEX.fullmatch(size):
                return False
            if int(size, 16) == 0:
                while True:  # trailer fields, then the empty line
                    line = await self._read_line(MAX_LINE_BYTES)
                    if line is None:
                        return False
                    if not line:
                        return True
            await self._skip(int(size, 16))
            if await self._read_line(0) != b"":
                return False


def _parse_head(head: bytes) -> _Request | int:
    lines = [line[:-1] if line.endswith(b"\r") else line for line in head.split(b"\n")]
    m = _REQUEST_LINE.fullmatch(lines[0])
    if m is None:
        return 400
    if m.group(3) != b"1":
        return 505
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            return 400  # also obsolete line folding and whitespace before the colon
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            return 400
        headers.setdefault(name.decode("ascii").lower(), []).append(value.decode("latin-1"))
    return _Request(m.group(1).decode("ascii"), m.group(2).decode("ascii"), (1, int(m.group(4))), headers)


def _body_framing(req: _Request) -> tuple[int, int]:
    """(error status or 0, body length or CHUNKED)."""
    if req.header("transfer-encoding"):
        codings = [t.strip().lower() for v in req.header("transfer-encoding") for t in v.split(",") if t.strip()]
        return (0, CHUNKED) if codings == ["chunked"] else (501, 0)
    lengths = {t.strip() for v in req.header("content-length") for t in v.split(",")}
    if not lengths:
        return 0, 0
    if len(lengths) != 1 or not _DIGITS.fullmatch(next(iter(lengths))):
        return 400, 0
    return 0, int(next(iter(lengths)))


def _origin_form(target: str) -> str:
    """The path and query the pod's server sees; an absolute-form target loses its scheme and authority."""
    if "://" in target and not target.startswith("/"):
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        query = rest.find("?")
        if slash < 0 or (0 <= query < slash):
            return "/" + (rest[query:] if query >= 0 else "")
        return rest[slash:]
    return target


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
