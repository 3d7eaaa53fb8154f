"""One exception hierarchy for fleetscan: every message names the object and what to do."""

from __future__ import annotations


class FleetscanError(Exception):
    """Base of every error fleetscan raises on purpose. `retryable` tells the pipeline whether
    trying the same step again can help (throttling, server errors, dropped connections)."""

    retryable = False

    def __init__(self, message: str, *, retryable: bool | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable
        self.retry_after = retry_after


class UsageError(FleetscanError):
    """Bad input (arguments, names, files), reported before any cluster call."""


class KubeError(FleetscanError):
    """A Kubernetes API call failed; `status` is the HTTP code (0 when there was no answer)."""

    def __init__(
        self, message: str, *, status: int = 0, retryable: bool | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, retryable=retryable, retry_after=retry_after)
        self.status = status


class TransportError(FleetscanError):
    """Reaching into a container failed (no shell, no such process, stream cut, timeout)."""


class ExecTimeout(TransportError):
    retryable = True


class StreamDropped(TransportError):
    """The exec stream closed before the command's status arrived."""

    retryable = True


class BinaryNotFound(TransportError):
    """The container has no such executable (for `sh`: a distroless image)."""


class ApproachUnavailable(FleetscanError):
    """No way into a container (or not the forced one); the target is skipped or in error."""
