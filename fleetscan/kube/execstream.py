"""One command in one container over the exec WebSocket, bounded in time and bytes: messages are
read one at a time (fleetscan.kube.websocket), with the deadline, the byte cap and the stop signal
checked after each, so a flooding or silent container cannot hold a scan past either."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import cancel
from ..errors import BinaryNotFound, ExecTimeout, OutputLimitExceeded, StreamDropped, TransportError
from .client import Kube
from .errors import classify
from .websocket import Closed, ExecSocket, exec_path

STDIN, STDOUT, STDERR, STATUS = 0, 1, 2, 3
CLOSE_CHANNEL = 255
STDIN_CHUNK = 1 << 20
DEFAULT_EXEC_TIMEOUT = 60.0
DEFAULT_MAX_OUTPUT = 1 << 20  # bytes of stdout and stderr together
MAX_STDERR_KEPT = 64 << 10  # stderr counts toward the cap, but only its start is kept
POLL_SECONDS = 1.0  # how often a quiet stream checks its deadline and the stop signal


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
    raise TransportError(f"{where}: the container runtime failed to run {argv[0]!r}: {message[:300] or status}")


def run_in(
    kube: Kube,
    namespace: str,
    pod: str,
    container: str,
    argv: list[str],
    *,
    stdin: bytes | None = None,
    timeout: float = DEFAULT_EXEC_TIMEOUT,
    max_output: int = DEFAULT_MAX_OUTPUT,
    on_retry: Callable[[int], None] | None = None,
    urgent: bool = False,
) -> ExecResult:
    """Run argv to completion within `timeout` seconds and `max_output` bytes of output; a refused
    handshake (429, 5xx) or a dropped stream is tried again by the client's retry policy, a
    timeout or a flood is not (a container that hangs or floods once does so again). An `urgent`
    exec (cleaning up after a cut stream) is tried once and runs even while the run is stopping."""
    where = f'exec in pod "{namespace}/{pod}" container "{container}"'

    def once() -> ExecResult:
        return _run_once(kube, namespace, pod, container, argv, stdin, timeout, max_output, where, urgent)

    if urgent:
        return kube.reauthenticating(once)
    return kube.settings.retry.run(lambda: kube.reauthenticating(once), what=where, on_retry=on_retry)


def _run_once(
    kube: Kube,
    namespace: str,
    pod: str,
    container: str,
    argv: list[str],
    stdin: bytes | None,
    timeout: float,
    max_output: int,
    where: str,
    urgent: bool = False,
) -> ExecResult:
    if not urgent:
        cancel.check(where)
    kube.limiter.acquire()
    deadline = time.monotonic() + timeout
    path = exec_path(namespace, pod, container, argv, stdin is not None)
    ws = ExecSocket(kube.api, kube.endpoint(), path, min(timeout, kube.settings.request_timeout))
    try:
        ws.open()
    except (Closed, OSError) as exc:
        ws.close()
        raise classify(exc if isinstance(exc, OSError) else ConnectionError(str(exc)), where) from exc
    except Exception as exc:
        ws.close()
        raise classify(exc, where) from exc
    out, err, status = bytearray(), bytearray(), bytearray()
    received = 0
    try:
        if stdin is not None:
            for start in range(0, len(stdin), STDIN_CHUNK):
                ws.send(bytes([STDIN]) + stdin[start : start + STDIN_CHUNK])
            if ws.protocol.startswith("v5"):
                ws.send(bytes([CLOSE_CHANNEL, STDIN]))  # end of input (v4 has no way to say it)
        while True:
            if not urgent:
                cancel.check(where)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ExecTimeout(f"{where}: {argv[0]!r} timed out after {timeout:.0f} s")
            ws.settimeout(min(remaining, POLL_SECONDS))
            try:
                _, data = ws.recv()
            except TimeoutError:
                continue
            except Closed:
                break
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == STDOUT:
                out += payload
            elif channel == STDERR:
                err += payload[: max(0, MAX_STDERR_KEPT - len(err))]
            elif channel == STATUS:
                status += payload[:4096]
                continue
            else:
                continue  # v5 channel close, resize: nothing to keep
            received += len(payload)
            if received > max_output:
                raise OutputLimitExceeded(
                    f"{where}: output limit exceeded ({received} bytes, the most a scan can send is {max_output})"
                )
    except OSError as exc:
        raise StreamDropped(f"{where}: the exec stream broke: {exc}") from exc
    finally:
        ws.close()
    if not status:
        raise StreamDropped(f"{where}: the stream closed before the command's exit status arrived")
    return ExecResult(parse_status(bytes(status), argv, where), bytes(out), bytes(err))
