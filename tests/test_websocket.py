"""fleetscan's exec WebSocket client against a server that sends exactly the bytes a test wants:
fragments, pings, masked frames, oversized frames and headers, refusals. (The emulator's exec, over
HTTPS, is covered by every scan test; these are the cases a well-behaved server never produces.)"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from fleetscan.emulator.server import Emulator
from fleetscan.errors import Forbidden, StreamDropped, Throttled
from fleetscan.kube.websocket import GUID, MAX_MESSAGE, Closed, Endpoint, ExecSocket, exec_path

Script = Callable[[socket.socket, bytes], None]


def frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes = b"") -> bytes:
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    masked = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", first, masked | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, masked | 126, n)
    else:
        head = struct.pack("!BBQ", first, masked | 127, n)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if mask else payload
    return head + mask + body


def accept_key(request: bytes) -> str:
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key")
    )
    return base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()


def upgrade(request: bytes, protocol: str = "v5.channel.k8s.io") -> bytes:
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(request)}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
    ).encode()


@pytest.fixture()
def serve() -> Iterator[Callable[[Script], ExecSocket]]:
    servers: list[socket.socket] = []

    def start(script: Script) -> ExecSocket:
        server = socket.create_server(("127.0.0.1", 0))
        servers.append(server)

        def run() -> None:
            conn, _ = server.accept()
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(4096)
                script(conn, request)

        threading.Thread(target=run, daemon=True).start()
        cfg = k8s.Configuration(host=f"http://127.0.0.1:{server.getsockname()[1]}")
        cfg.api_key = {"BearerToken": "Bearer t0ken"}
        ws = ExecSocket(k8s.ApiClient(cfg), Endpoint.of(cfg), "/api/v1/namespaces/n/pods/p/exec?command=sh", 5)
        ws.open()
        return ws

    yield start
    for s in servers:
        s.close()


def test_fragments_pings_and_masked_frames(serve: Callable[[Script], ExecSocket]) -> None:
    seen: dict[str, bytes] = {}

    def script(conn: socket.socket, request: bytes) -> None:
        seen["request"] = request
        conn.sendall(upgrade(request))
        conn.sendall(frame(0x2, b"\x01hel", fin=False) + frame(0x9, b"are you there") + frame(0x0, b"lo"))
        conn.sendall(frame(0x2, b"\x03{}", mask=b"\x01\x02\x03\x04"))
        seen["pong"] = conn.recv(4096)
        conn.sendall(frame(0x8, struct.pack("!H", 1000)))

    ws = serve(script)
    assert ws.recv() == (0x2, b"\x01hello")  # reassembled around the ping
    assert ws.recv() == (0x2, b"\x03{}")  # unmasked
    with pytest.raises(Closed):
        ws.recv()
    ws.close()
    assert b"authorization: Bearer t0ken" in seen["request"] and b"v5.channel.k8s.io" in seen["request"]
    pong = seen["pong"]
    assert pong[0] == 0x8A and pong[1] & 0x80  # a masked pong, as a client must send
    mask, body = pong[2:6], pong[6 : 6 + (pong[1] & 0x7F)]
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(body)) == b"are you there"


def test_an_oversized_frame_is_refused_before_it_is_read(serve: Callable[[Script], ExecSocket]) -> None:
    def script(conn: socket.socket, request: bytes) -> None:
        conn.sendall(upgrade(request) + struct.pack("!BBQ", 0x82, 127, MAX_MESSAGE + 1))

    ws = serve(script)
    with pytest.raises(StreamDropped, match="a frame of"):
        ws.recv()
    ws.close()


def test_a_message_fragmented_past_the_limit_is_refused(serve: Callable[[Script], ExecSocket]) -> None:
    piece = b"x" * (4 << 20)  # each fragment is allowed; together they are not

    def script(conn: socket.socket, request: bytes) -> None:
        conn.sendall(upgrade(request))
        with contextlib.suppress(OSError):  # the client hangs up once it has seen too much
            for i in range(MAX_MESSAGE // len(piece) + 1):
                conn.sendall(frame(0x0 if i else 0x2, piece, fin=False))

    ws = serve(script)
    with pytest.raises(StreamDropped, match="a message over"):
        ws.recv()
    ws.close()


def test_a_slow_frame_survives_timeouts(serve: Callable[[Script], ExecSocket]) -> None:
    go = threading.Event()

    def script(conn: socket.socket, request: bytes) -> None:
        whole = frame(0x2, b"\x01" + b"x" * 1000)
        conn.sendall(upgrade(request) + whole[:300])
        go.wait(5)
        conn.sendall(whole[300:])
        conn.recv(16)

    ws = serve(script)
    ws.settimeout(0.2)
    with pytest.raises(TimeoutError):
        ws.recv()  # a partial frame: nothing yet, and nothing lost
    go.set()
    ws.settimeout(5)
    assert ws.recv() == (0x2, b"\x01" + b"x" * 1000)
    ws.close()


@pytest.mark.parametrize(
    ("answer", "error", "text"),
    [
        (
            b'HTTP/1.1 403 Forbidden\r\nContent-Length: 28\r\n\r\n{"message":"pods is denied"}',
            Forbidden,
            "pods is denied",
        ),
        (b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n", Throttled, "429"),
        (b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: wrong\r\n\r\n", StreamDropped, "accept key"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * (70 << 10), StreamDropped, "too long"),
    ],
)
def test_refusals_are_typed_errors(answer: bytes, error: type[Exception], text: str) -> None:
    server = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(answer)
            conn.recv(16)

    threading.Thread(target=run, daemon=True).start()
    cfg = k8s.Configuration(host=f"http://127.0.0.1:{server.getsockname()[1]}")
    ws = ExecSocket(k8s.ApiClient(cfg), Endpoint.of(cfg), "/x", 5)
    with pytest.raises(error, match=text) as caught:
        ws.open()
    if isinstance(caught.value, Throttled):
        assert caught.value.retry_after == 3
    server.close()


def test_execs_resume_one_tls_session_read_once(demo_emulator: Emulator, tmp_path: Path) -> None:
    """Over the emulator's HTTPS: the first exec's session is resumed by the next ones, also by
    another client of the same server (each namespace's scan client), and it is read only from a
    connection that did not resume (each read of `SSLSocket.session` leaks)."""
    from .kube_helpers import admin_kube

    kube, other = admin_kube(demo_emulator, tmp_path), admin_kube(demo_emulator, tmp_path)
    pod = kube.core.list_namespaced_pod("shop").items[0]
    path = exec_path("shop", pod.metadata.name, pod.spec.containers[0].name, ["true"], False)
    kube.endpoint().sessions.clear()
    resumed, kept = [], []
    for client in (kube, kube, other):
        ws = ExecSocket(client.api, client.endpoint(), path, 10.0)
        ws.open()
        resumed.append(ws._sock.session_reused)  # type: ignore[union-attr]
        ws.close()
        kept.append(client.endpoint().sessions[0])
    assert resumed == [False, True, True]
    assert kept[0] is kept[1] is kept[2]
