"""Scanning engines, as plug-ins: each turns a profile and a way into a container into HDF.

An engine says which approaches it can work through (the cinc engine only reaches containers by
exec) and is built from the run's settings by its registered factory, which checks its inputs (a
profile that does not parse, an unknown input) before any cluster call. Adding one is a module with
a class that satisfies `Engine` and one `register()` line below.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..access.transport import Transport
from ..errors import UsageError
from ..kube.targets import Target

if TYPE_CHECKING:
    from ..settings import ScanParams


class Access(Protocol):
    """What an engine gets to reach one container."""

    @property
    def transport(self) -> Transport: ...

    def kubeconfig(self) -> AbstractContextManager[Path]:
        """A 0600 kubeconfig holding only the run's narrow token, for external tools; deleted after."""
        ...


class Engine(Protocol):
    name: str
    approaches: tuple[str, ...]  # the ways in it can work through

    @property
    def profile_id(self) -> str:
        """Names the profile and its content (a resume must use the same)."""
        ...

    def scan(self, target: Target, access: Access) -> dict[str, Any]:
        """The container's HDF (InSpec exec-json); raises FleetscanError when it cannot be examined."""
        ...


Factory = Callable[["ScanParams"], Engine]
REGISTRY: dict[str, Factory] = {}


def register(name: str, factory: Factory) -> None:
    REGISTRY[name] = factory


def build(params: ScanParams) -> Engine:
    if params.engine not in REGISTRY:
        raise UsageError(f"engine {params.engine!r}: choose one of {', '.join(REGISTRY)}")
    return REGISTRY[params.engine](params)


def _native(params: ScanParams) -> Engine:
    from .native.engine import NativeEngine
    from .native.profile import load_profile

    profile = load_profile(params.profile)
    unknown = sorted(set(params.inputs) - set(profile.inputs))
    if unknown:
        raise UsageError(
            f"profile {profile.name} has no input(s) {', '.join(unknown)} "
            f"(it has: {', '.join(profile.inputs) or 'none'})"
        )
    return NativeEngine(profile, script_timeout=params.scan_timeout, inputs=dict(params.inputs))


def _cinc(params: ScanParams) -> Engine:
    from .cinc import CincEngine, CincSettings

    return CincEngine(params.profile, CincSettings(timeout=params.scan_timeout))


register("native", _native)
register("cinc", _cinc)
