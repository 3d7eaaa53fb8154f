"""The ways into a container, as plug-ins: each Approach says which RBAC rules it needs, whether it
can apply to a target, and opens a Transport. `auto` tries the registered approaches in order.

Adding one is a new module with a class that satisfies `Approach` and one `register()` call below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import UsageError
from ..kube.client import Kube
from ..kube.targets import Target
from .transport import Transport

DEFAULT_DEBUG_IMAGE = "busybox:1.36"
DEFAULT_DEBUG_WAIT = 120.0


@dataclass(frozen=True)
class AccessSettings:
    approach: str = "auto"  # auto, or one registered approach forced for every target
    allow_debug: bool = True  # may auto fall back to ephemeral debug containers?
    debug_image: str = DEFAULT_DEBUG_IMAGE
    debug_wait_seconds: float = DEFAULT_DEBUG_WAIT
    ephemeral_supported: bool = True  # does the API server serve pods/ephemeralcontainers?

    def __post_init__(self) -> None:
        if self.approach != "auto" and self.approach not in REGISTRY:
            raise UsageError(f"approach {self.approach!r}: choose one of auto, {', '.join(REGISTRY)}")


class Approach(Protocol):
    name: str

    def rules(self, pods: Sequence[str]) -> list[dict[str, Any]]:
        """The Role rules the scan token needs to use this approach on `pods`."""
        ...

    def unavailable(self, target: Target, settings: AccessSettings, *, forced: bool) -> str | None:
        """Why it cannot apply to `target` (known before any exec), or None."""
        ...

    def open(self, kube: Kube, target: Target, settings: AccessSettings) -> Transport:
        """A ready transport; raises ApproachUnavailable when it turns out not to work here."""
        ...


REGISTRY: dict[str, Approach] = {}


def register(approach: Approach) -> None:
    """Add an approach; `auto` tries them in registration order."""
    REGISTRY[approach.name] = approach


def chosen(target: Target, settings: AccessSettings) -> tuple[list[Approach], bool]:
    """The approaches to try for `target`, and whether one was forced (by the run or the pod's
    `fleetscan.io/approach` annotation); a forced approach that cannot work is an error."""
    forced = settings.approach if settings.approach != "auto" else target.forced_approach
    if forced != "auto" and forced in REGISTRY:
        return [REGISTRY[forced]], True
    return list(REGISTRY.values()), False


def names() -> tuple[str, ...]:
    return ("auto", *REGISTRY)


from .debug import DebugApproach  # noqa: E402  (the registry above is what they register into)
from .exec import ExecApproach  # noqa: E402
from .sidecar import SidecarApproach  # noqa: E402

register(ExecApproach())
register(SidecarApproach())
register(DebugApproach())
