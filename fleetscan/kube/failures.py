"""Turn what the Kubernetes client raises into fleetscan errors that say what failed and whether to retry."""

from __future__ import annotations

import json
import re
import socket
import ssl

import urllib3
from kubernetes.client.exceptions import ApiException
from websocket import WebSocketException

from ..errors import FleetscanError, KubeError, StreamDropped

_HANDSHAKE = re.compile(r"Handshake status (\d{3})")
# 429 and 5xx are the server asking us to come back; everything else in 4xx is a decision.
_RETRYABLE_STATUS = {429, 500, 502, 503, 504}


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


def _hint(status: int) -> str:
    return {
        401: "the credential is expired or revoked",
        403: "the identity lacks this permission",
        404: "it does not exist (any more)",
        409: "it changed meanwhile or already exists",
        422: "the server rejected the request as invalid",
        429: "the API server is throttling; retry after the delay it asked for",
    }.get(status, "the API server failed; retry later" if status >= 500 else "")


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
        retry_after = None
        headers = exc.headers or {}
        if headers.get("Retry-After", "").isdigit():
            retry_after = float(headers["Retry-After"])
        text = f"{action}: {status} {message or exc.reason}".rstrip()
        hint = _hint(status)
        if hint:
            text += f" ({hint})"
        return KubeError(
            text, status=status, retryable=status in _RETRYABLE_STATUS or status == 0, retry_after=retry_after
        )
    if isinstance(exc, WebSocketException):
        return StreamDropped(f"{action}: the exec stream broke: {exc}")
    if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, socket.timeout, ssl.SSLError, OSError)):
        return KubeError(f"{action}: cannot reach the API server: {exc}", retryable=True)
    return FleetscanError(f"{action}: {type(exc).__name__}: {exc}")
