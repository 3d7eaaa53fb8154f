"""Pick the way into each container, and open it.

auto: `exec` when the container has a shell; else `sidecar` when the pod carries a scanner sidecar
(its owners put it there on purpose, and it changes nothing in the pod); else `debug` when the
server supports ephemeral containers and the run allows it (they stay in the pod for its whole
life, so this is the last resort); else the target is skipped with the reason. A run parameter
(other than auto) or the pod annotation `fleetscan.io/approach` forces one; a forced approach that
cannot work is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ApproachUnavailable, UsageError
from .client import Kube
from .failures import classify
from .targets import APPROACHES, Target
from .transports import DEFAULT_DEBUG_IMAGE, DebugTransport, ExecTransport, SidecarTransport, Transport, has_shell


@dataclass(frozen=True)
class ApproachSettings:
    approach: str = "auto"  # auto | exec | debug | sidecar
    allow_debug: bool = True  # may auto fall back to ephemeral containers?
    debug_image: str = DEFAULT_DEBUG_IMAGE
    debug_wait_seconds: float = 120.0

    def __post_init__(self) -> None:
        if self.approach not in APPROACHES:
            raise UsageError(f"approach {self.approach!r}: choose one of {', '.join(APPROACHES)}")


@dataclass(frozen=True)
class Decision:
    approach: str | None  # None: skip the target
    forced: bool
    reason: str = ""


def decide(
    target: Target, settings: ApproachSettings, shell: Callable[[], bool], ephemeral_supported: bool
) -> Decision:
    forced = settings.approach if settings.approach != "auto" else target.forced_approach
    if forced != "auto":
        return Decision(forced, True)
    if shell():
        return Decision("exec", False)
    if target.sidecar:
        return Decision("sidecar", False)
    if not settings.allow_debug:
        return Decision(None, False, "no shell, no scanner sidecar, and debug containers are not allowed in this run")
    if not ephemeral_supported:
        return Decision(None, False, "no shell, no scanner sidecar, and the cluster has no ephemeral containers")
    return Decision("debug", False)


def ephemeral_containers_supported(kube: Kube) -> bool:
    """Whether the API server serves pods/ephemeralcontainers (Kubernetes 1.23+)."""
    try:
        resources = kube.core.get_api_resources().resources
    except Exception as exc:
        raise classify(exc, f"read the API server's resources at {kube.server}") from exc
    return any(r.name == "pods/ephemeralcontainers" for r in resources)


def connect(
    kube: Kube, target: Target, approach: str, settings: ApproachSettings, *, shell_known: bool = False
) -> Transport:
    """An opened transport for `approach`; raises ApproachUnavailable when it cannot work here.
    `shell_known`: the caller already saw a shell in the container (no second probe)."""
    if approach == "exec":
        if not shell_known and not has_shell(kube, target):
            raise ApproachUnavailable(f"{target.key}: exec needs a shell in the container, and it has none")
        return ExecTransport(kube, target)
    if approach == "sidecar":
        sidecar = SidecarTransport(kube, target)
        sidecar.prepare()
        return sidecar
    debug = DebugTransport(kube, target, settings.debug_image, settings.debug_wait_seconds)
    debug.prepare()
    return debug
