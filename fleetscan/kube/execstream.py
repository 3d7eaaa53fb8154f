"""One command in one container over the exec WebSocket, with the status parsed from channel 3 here."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from kubernetes.stream import stream
from websocket import WebSocketConnectionClosedException, WebSocketException

from ..errors import BinaryNotFound, ExecTimeout, StreamDropped, TransportError
from .client import Kube
from .failures import classify

STDOUT, STDERR, STATUS = 1, 2, 3
STDIN_CHUNK = 1 << 20


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


def parse_status(raw: bytes, argv: list[str], where: str) -> int:
    """The exit code from the kubelet's status frame; a missing binary or runtime failure raises."""
    try:
        status: dict[str, Any] = json.loads(raw)
    except ValueError as exc:
        raise StreamDropped(f"{where}: unreadable exec status {raw[:200]!r}") from exc
    if status.get("status") == "Success":
        return 0
    if status.get("reason") == "NonZeroExitCode":
        for cause in (status.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode" and str(cause.get("message", "")).isdigit():
                return int(cause["message"])
    message = str(status.get("message", "")).strip()
    if "executable file not found" in message or "no such file or directory" in message:
        raise BinaryNotFound(f"{where}: {argv[0]!r} does not exist in the container")
    raise TransportError(f"{where}: the container runtime failed to run {argv[0]!r}: {message or status}")


def run_in(
    kube: Kube,
    namespace: str,
    pod: str,
    container: str,
    argv: list[str],
    *,
    stdin: bytes | None = None,
    timeout: float = 60.0,
) -> ExecResult:
    """Run argv to completion (or `timeout` seconds, enforced on the stream itself)."""
    where = f'exec in pod "{namespace}/{pod}" container "{container}"'
    kube.limiter.acquire()
    deadline = time.monotonic() + timeout
    try:
        ws = stream(
            kube.exec_api().connect_get_namespaced_pod_exec,
            pod,
            namespace,
            command=argv,
            container=container,
            stdin=stdin is not None,
            stdout=True,
            stderr=True,
            tty=False,
            _preload_content=False,
            binary=True,
            _request_timeout=timeout,
        )
    except Exception as exc:
        raise classify(exc, where) from exc
    out, err, status = bytearray(), bytearray(), bytearray()

    def drain() -> None:
        out.extend(ws.read_channel(STDOUT) or b"")
        err.extend(ws.read_channel(STDERR) or b"")
        status.extend(ws.read_channel(STATUS) or b"")

    try:
        if stdin is not None:
            for start in range(0, len(stdin), STDIN_CHUNK):
                ws.write_stdin(stdin[start : start + STDIN_CHUNK])
            ws.close_channel(0)
        while ws.is_open():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ExecTimeout(f"{where}: {argv[0]!r} did not finish within {timeout:.0f} s")
            ws.update(timeout=min(remaining, 1.0))
            drain()
        drain()
    except WebSocketConnectionClosedException:
        drain()
    except WebSocketException as exc:
        raise StreamDropped(f"{where}: the exec stream broke: {exc}") from exc
    finally:
        ws.close()
    if not status:
        raise StreamDropped(f"{where}: the stream closed before the command's exit status arrived")
    return ExecResult(parse_status(bytes(status), argv, where), bytes(out), bytes(err))
