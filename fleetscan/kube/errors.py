"""Turn what the Kubernetes client raises into fleetscan's typed errors, once, for every call."""

from __future__ import annotations

import json
import re
import ssl

import urllib3
from kubernetes.client.exceptions import ApiException

from ..errors import (
    Conflict,
    FleetscanError,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    NotFound,
    ServerError,
    Throttled,
    Unauthorized,
    Unreachable,
)

_HANDSHAKE = re.compile(r"Handshake status (\d{3})")
_BY_STATUS: dict[int, type[KubeError]] = {
    400: Invalid,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
    429: Throttled,
}
_HINT = {
    401: "the credential is expired or revoked",
    403: "the identity lacks this permission",
    404: "it does not exist (any more)",
    409: "it changed meanwhile or already exists",
    410: "the resource version is too old; list again",
    422: "the server rejected the request as invalid",
    429: "the API server is throttling; retry after the delay it asked for",
}


def _status_message(body: object) -> str:
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if isinstance(body, str):
        try:
            return str(json.loads(body).get("message") or body)
        except (ValueError, AttributeError):
            return body.strip()
    return ""


def _handshake_body(reason: str) -> str:
    # websocket-client folds the status line, headers and body into one reason string.
    parts = reason.split(" -+-+- ")
    return parts[-1] if len(parts) >= 3 else ""


def error_for_status(status: int, text: str, retry_after: float | None = None) -> KubeError:
    """The typed error for an HTTP status, with a hint that says what it means."""
    hint = _HINT.get(status, "the API server failed; retry later" if status >= 500 else "")
    message = f"{text} ({hint})" if hint else text
    if status >= 500:
        return ServerError(message, status=status, retry_after=retry_after)
    kind = _BY_STATUS.get(status, KubeError)
    return kind(message, status=status, retry_after=retry_after)


def classify(exc: BaseException, action: str) -> FleetscanError:
    """`action` names the object, e.g. 'create role "fleetscan-r1" in namespace "shop"'."""
    if isinstance(exc, FleetscanError):
        return exc
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        message = _status_message(exc.body)
        if status == 0:  # a failed WebSocket handshake: the code hides in the reason
            found = _HANDSHAKE.search(str(exc.reason or ""))
            status = int(found.group(1)) if found else 0
            message = _status_message(_handshake_body(str(exc.reason or ""))) or message
        headers = exc.headers or {}
        raw_retry = str(headers.get("Retry-After", ""))
        retry_after = float(raw_retry) if raw_retry.isdigit() else None
        text = f"{action}: {status} {message or exc.reason}".rstrip()
        if status == 0:
            return Unreachable(f"{action}: no answer from the API server: {message or exc.reason}")
        return error_for_status(status, text, retry_after)
    cause = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
    # urllib3 counts a refused connection as a connect timeout; it is not one
    stalled = isinstance(cause, (urllib3.exceptions.TimeoutError, TimeoutError))
    if stalled and not isinstance(cause, urllib3.exceptions.NewConnectionError):
        return Unreachable(f"{action}: the API server did not answer within the request timeout ({cause})")
    if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, ssl.SSLError, OSError)):
        return Unreachable(f"{action}: cannot reach the API server: {exc}")
    return FleetscanError(f"{action}: {type(exc).__name__}: {exc}")
