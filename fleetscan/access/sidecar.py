"""sidecar: a scanner container that the pod's owners put beside the app, in a shared process
namespace; the target's files are at /proc/<pid>/root of the target's main process, found by its
cgroup (`locate`), never by what a process says of itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ApproachUnavailable, TransportError
from ..kube.client import Kube
from ..kube.targets import Target
from . import AccessSettings
from .locate import locate
from .transport import ContainerRunner, Transport, exec_rules


class SidecarTransport(ContainerRunner):
    approach = "sidecar"

    def __init__(self, kube: Kube, target: Target) -> None:
        if not target.sidecar or not target.share_process_namespace:
            raise ApproachUnavailable(f"{target.key}: the pod has no scanner sidecar in a shared process namespace")
        super().__init__(kube, target.namespace, target.pod, target.sidecar)
        self._target = target
        self.pid = 0

    def prepare(self) -> None:
        t = self._target
        try:
            self.pid = locate(self, t, f"the scanner sidecar {t.sidecar!r}")
        except TransportError as exc:
            raise TransportError(f"{exc}; use the debug approach") from exc
        self.root = f"/proc/{self.pid}/root"  # the scan script checks that it may enter it


class SidecarApproach:
    name = "sidecar"

    def rules(self, pods: Sequence[str]) -> list[dict[str, Any]]:
        return exec_rules(list(pods))  # exec into the pod's scanner container

    def unavailable(self, target: Target, settings: AccessSettings, *, forced: bool) -> str | None:
        if not target.sidecar or not target.share_process_namespace:
            return "the pod has no scanner sidecar in a shared process namespace"
        return None

    def open(self, kube: Kube, target: Target, settings: AccessSettings) -> Transport:
        sidecar = SidecarTransport(kube, target)
        sidecar.prepare()
        return sidecar
