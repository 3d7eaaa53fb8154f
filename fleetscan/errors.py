"""One exception hierarchy for fleetscan: every message names the object and what to do."""

from __future__ import annotations


class FleetscanError(Exception):
    """Base of every error fleetscan raises on purpose. `retryable` tells the retry policy whether
    trying the same call again can help (throttling, server errors, dropped connections)."""

    retryable = False

    def __init__(self, message: str, *, retryable: bool | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable
        self.retry_after = retry_after


class UsageError(FleetscanError):
    """Bad input (arguments, names, files), reported before any cluster call."""


class Interrupted(FleetscanError):
    """The run was asked to stop (SIGTERM, SIGINT, a cancelled flow run): what finished is kept."""


class ResultsError(FleetscanError):
    """An HDF file or a threshold cannot be evaluated (SAF would crash on it, yet exit 0)."""


class RunDirError(FleetscanError):
    """The run directory cannot be written (read-only, full): the run stops, what is written stays."""


# -- the Kubernetes API --------------------------------------------------------------------------------
class KubeError(FleetscanError):
    """A Kubernetes API call failed; `status` is the HTTP code (0 when there was no answer)."""

    status = 0

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable, retry_after=retry_after)
        if status is not None:
            self.status = status


class Unauthorized(KubeError):
    """401: the credential is expired or revoked."""

    status = 401


class Forbidden(KubeError):
    """403: the identity lacks the permission (a decision, never retried)."""

    status = 403


class NotFound(KubeError):
    status = 404


class Conflict(KubeError):
    """409: it already exists, or changed meanwhile."""

    status = 409


class Gone(KubeError):
    """410: a watch's resourceVersion is too old; list again."""

    status = 410


class Invalid(KubeError):
    """422 (or 400): the server rejected the request as invalid."""

    status = 422


class Throttled(KubeError):
    """429: the API server asks us to slow down."""

    status = 429
    retryable = True


class ServerError(KubeError):
    """5xx: the API server failed."""

    status = 500
    retryable = True


class Unreachable(KubeError):
    """No answer at all: connection refused or reset, TLS failure, request timeout."""

    retryable = True


# -- inside a container ----------------------------------------------------------------------------------
class TransportError(FleetscanError):
    """Reaching into a container failed (no shell, no such process, stream cut, timeout)."""


class ExecTimeout(TransportError):
    """The command did not finish in time. Not retried: a container that hangs once hangs again."""


class OutputLimitExceeded(TransportError):
    """The command sent more than the scan can legitimately produce (a flooding container)."""


class StreamDropped(TransportError):
    """The exec stream closed before the command's status arrived."""

    retryable = True


class BinaryNotFound(TransportError):
    """The container has no such executable (for `sh`: a distroless image)."""


class ApproachUnavailable(FleetscanError):
    """No way into a container (or not the forced one); the target is skipped or in error."""

    of_image = False  # True: it holds for every container of the same image (a run need not try again)
