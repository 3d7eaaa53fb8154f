"""The exec WebSocket (RFC 6455, Kubernetes' v5/v4.channel.k8s.io), written for the scan's needs.

The official client's handshake reads the HTTP answer one byte per system call and builds a new
TLS context (loading the CA file) for every exec: most of the scanner's CPU per container. Here the
TLS context is built once per identity and the socket is read in blocks; the request is
authenticated exactly as the REST calls are (`ApiClient.update_params_for_auth`). Frames are read
one at a time, each bounded in size, so the caller can check its deadline and byte cap between
them; a read that times out keeps what it already received.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import socket
import ssl
import struct
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from kubernetes.client.rest import should_bypass_proxies

from ..errors import StreamDropped
from .errors import error_for_status

PROTOCOLS = "v5.channel.k8s.io, v4.channel.k8s.io"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_HEAD = 64 << 10  # bytes of the HTTP answer's status line and headers (and of an error body)
MAX_MESSAGE = 16 << 20  # bytes of one message: the API server sends container output in small ones
READ_BLOCK = 256 << 10


class Closed(Exception):
    """The server closed the connection (with or without a close frame)."""


@functools.lru_cache(maxsize=32)
def tls_context(
    ca_file: str | None, cert_file: str | None, key_file: str | None, verify: bool, check_hostname: bool
) -> ssl.SSLContext:
    """One context per trust and client identity, shared by every exec of the run (as the REST
    calls' urllib3 pool does: verify_ssl, assert_hostname, client certificates)."""
    ctx = ssl.create_default_context(cafile=ca_file) if verify else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = verify and check_hostname
    if not verify:
        ctx.verify_mode = ssl.CERT_NONE
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


def exec_path(namespace: str, pod: str, container: str, argv: list[str], stdin: bool) -> str:
    query = urlencode(
        [("command", a) for a in argv]
        + [("container", container), ("stdin", str(stdin).lower()), ("stdout", "true"), ("stderr", "true")]
        + [("tty", "false")]
    )
    return f"/api/v1/namespaces/{namespace}/pods/{pod}/exec?{query}"


@dataclass(frozen=True)
class Endpoint:
    """Where and how an identity's execs connect, worked out once from its client configuration
    (its `host` property alone costs more than a frame)."""

    host: str
    port: int
    netloc: str
    prefix: str  # the server URL's path, if any
    tls: ssl.SSLContext | None
    sni: str
    proxy: tuple[str, int, dict[str, str]] | None  # an HTTP proxy to tunnel through (CONNECT)
    # The TLS session to resume: it skips the certificate exchange and its signatures (most of a
    # connection's CPU on both sides). Shared by every identity that connects the same way (each
    # namespace's scan client), so a new client does not start with full handshakes.
    sessions: list[ssl.SSLSession] = field(default_factory=list, compare=False)

    @classmethod
    def of(cls, cfg: Any) -> Endpoint:
        url = urlsplit(str(cfg.host))
        secure = url.scheme == "https"
        host = url.hostname or "localhost"
        tls = None
        if secure:
            verify, check = bool(cfg.verify_ssl), cfg.assert_hostname is not False
            tls = tls_context(cfg.ssl_ca_cert, cfg.cert_file, cfg.key_file, verify, check)
        proxy = None
        if cfg.proxy and not should_bypass_proxies(str(cfg.host), cfg.no_proxy or ""):
            p = urlsplit(str(cfg.proxy))
            if p.scheme not in ("http", "https"):
                raise StreamDropped(f"exec through a {p.scheme} proxy is not supported; use an HTTP proxy")
            proxy = (p.hostname or "localhost", p.port or 80, dict(cfg.proxy_headers or {}))
        port, sni = url.port or (443 if secure else 80), getattr(cfg, "tls_server_name", None) or host
        sessions = _sessions(tls, host, port, sni) if tls is not None else []
        return cls(host, port, url.netloc or host, url.path.rstrip("/"), tls, sni, proxy, sessions)


@functools.lru_cache(maxsize=32)
def _sessions(tls: ssl.SSLContext, host: str, port: int, sni: str) -> list[ssl.SSLSession]:
    """The session store of one server reached through one TLS context (one trust and client
    certificate: `tls_context`), whichever bearer token rides on the connection."""
    return []


class ExecSocket:
    """One exec session: `open()`, then `send()` / `recv()` messages, then `close()`."""

    def __init__(self, api_client: Any, endpoint: Endpoint, path: str, timeout: float) -> None:
        self._client = api_client
        self._endpoint = endpoint
        self._path = path
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._parts: list[bytes] = []  # a fragmented message so far
        self._part_type = OP_BINARY
        self._offered: ssl.SSLSession | None = None  # the session this connection tried to resume
        self.protocol = ""

    # -- connection ---------------------------------------------------------------------------------
    def open(self) -> None:
        end = self._endpoint
        sock = self._connect(end)
        try:
            if end.tls is not None:
                self._offered = end.sessions[-1] if end.sessions else None
                sock = end.tls.wrap_socket(sock, server_hostname=end.sni, session=self._offered)
            self._sock = sock
            self._handshake(f"{end.prefix}{self._path}", end.netloc)
        except BaseException:
            sock.close()
            self._sock = None
            raise

    def _connect(self, end: Endpoint) -> socket.socket:
        if end.proxy is None:
            return socket.create_connection((end.host, end.port), timeout=self._timeout)
        proxy_host, proxy_port, proxy_headers = end.proxy
        sock = socket.create_connection((proxy_host, proxy_port), timeout=self._timeout)
        target = f"{end.host}:{end.port}"
        headers = "".join(f"{k}: {v}\r\n" for k, v in proxy_headers.items())
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{headers}\r\n".encode())
        self._sock = sock
        status, _, _ = self._read_head()
        if status != 200:
            sock.close()
            raise StreamDropped(f"the proxy {proxy_host}:{proxy_port} refused to connect to {target} ({status})")
        return sock

    def _handshake(self, target: str, host: str) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        headers: dict[str, str] = {}
        self._client.update_params_for_auth(headers, [], ["BearerToken"], target, "GET", None)
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            f"Sec-WebSocket-Protocol: {PROTOCOLS}",
            f"User-Agent: {self._client.user_agent}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        assert self._sock is not None
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status, reason, answer = self._read_head()
        if status != 101:
            body = self._read_body(answer)
            retry = answer.get("retry-after", "")
            text = f"exec handshake: {status} {_message(body) or reason}"
            raise error_for_status(status, text, float(retry) if retry.isdigit() else None)
        expected = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        if answer.get("sec-websocket-accept") != expected:
            raise StreamDropped("exec handshake: the server's WebSocket accept key is wrong")
        self.protocol = answer.get("sec-websocket-protocol", "")

    def _read_head(self) -> tuple[int, str, dict[str, str]]:
        while b"\r\n\r\n" not in self._buf:
            if len(self._buf) > MAX_HEAD:
                raise StreamDropped("exec handshake: the HTTP answer's headers are too long")
            self._fill()
        head, _, rest = bytes(self._buf).partition(b"\r\n\r\n")
        self._buf = bytearray(rest)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise StreamDropped(f"exec handshake: not an HTTP answer: {status_line[:100]!r}")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(parts[1]), parts[2] if len(parts) > 2 else "", headers

    def _read_body(self, headers: dict[str, str]) -> bytes:
        length = headers.get("content-length", "")
        want = min(int(length), MAX_HEAD) if length.isdigit() else MAX_HEAD
        try:
            while len(self._buf) < want:
                self._fill()
        except (Closed, OSError):
            pass  # no length given, or cut: what arrived is the body
        return bytes(self._buf[:want])

    def _fill(self) -> None:
        assert self._sock is not None
        data = self._sock.recv(READ_BLOCK)
        if not data:
            raise Closed("the server closed the connection")
        self._buf += data

    # -- messages -----------------------------------------------------------------------------------
    def settimeout(self, seconds: float) -> None:
        assert self._sock is not None
        self._sock.settimeout(seconds)

    def send(self, payload: bytes, opcode: int = OP_BINARY) -> None:
        """One masked frame (clients must mask)."""
        assert self._sock is not None
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        self._sock.sendall(head + mask + _masked(payload, mask))

    def recv(self) -> tuple[int, bytes]:
        """The next data message (opcode, payload); answers pings; raises Closed at the end and
        TimeoutError when nothing complete arrived within the socket's timeout."""
        while True:
            frame = self._frame()
            if frame is None:
                self._fill()  # socket.timeout (TimeoutError) propagates; the buffer keeps what came
                continue
            fin, opcode, payload = frame
            if opcode == OP_PING:
                self.send(payload, OP_PONG)
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                raise Closed("the server closed the stream")
            if opcode != OP_CONTINUATION:
                self._parts, self._part_type = [], opcode
            self._parts.append(payload)
            if sum(map(len, self._parts)) > MAX_MESSAGE:
                raise StreamDropped(f"exec stream: a message over {MAX_MESSAGE} bytes")
            if fin:
                message, self._parts = b"".join(self._parts), []
                return self._part_type, message

    def _frame(self) -> tuple[bool, int, bytes] | None:
        """One whole frame from the buffer, or None while it is incomplete."""
        buf = self._buf
        if len(buf) < 2:
            return None
        fin, opcode = bool(buf[0] & 0x80), buf[0] & 0x0F
        masked, length = bool(buf[1] & 0x80), buf[1] & 0x7F
        offset = 2
        if length == 126:
            if len(buf) < 4:
                return None
            (length,) = struct.unpack_from("!H", buf, 2)
            offset = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            (length,) = struct.unpack_from("!Q", buf, 2)
            offset = 10
        if length > MAX_MESSAGE:
            raise StreamDropped(f"exec stream: a frame of {length} bytes (at most {MAX_MESSAGE})")
        mask = b""
        if masked:  # servers do not mask; accept it anyway
            mask = bytes(buf[offset : offset + 4])
            offset += 4
        if len(buf) < offset + length:
            return None
        payload = bytes(buf[offset : offset + length])
        del buf[: offset + length]
        return fin, opcode, _masked(payload, mask) if mask else payload

    def close(self) -> None:
        if self._sock is None:
            return
        # A session is read only when the store has none or the server refused the one offered:
        # each read of `SSLSocket.session` keeps about 5 KB that is never freed (CPython 3.11,
        # measured: RSS grew with every exec), and a ticket the server accepted once it accepts
        # again until it expires.
        sock, store = self._sock, self._endpoint.sessions
        held = store[-1] if store else None
        if isinstance(sock, ssl.SSLSocket) and not sock.session_reused and held is self._offered:
            session = sock.session
            if session is not None and session.has_ticket:
                store[:] = [session]
        try:
            self._sock.settimeout(1.0)
            self.send(struct.pack("!H", 1000), OP_CLOSE)
        except OSError:
            pass
        finally:
            self._sock.close()
            self._sock = None


def _masked(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


def _message(body: bytes) -> str:
    import json

    try:
        return str(json.loads(body).get("message") or "")
    except (ValueError, AttributeError):
        return body.decode(errors="replace").strip()[:300]
