"""exec: the commands run in the target container itself, which needs a shell for the scan script.

No probe: the scan's own exec tells whether `sh` exists, so an image with a shell costs one exec."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ApproachUnavailable, BinaryNotFound
from ..kube.client import Kube
from ..kube.targets import Target
from . import AccessSettings
from .transport import ContainerRunner, Transport, exec_rules

SHELLS = ("sh", "/bin/sh")


class NoShell(ApproachUnavailable):
    """The container has no shell (distroless, scratch): `auto` tries the next approach, and the
    run's other containers of the image go straight to it."""

    of_image = True


class ExecTransport(ContainerRunner):
    approach = "exec"

    def __init__(self, kube: Kube, target: Target) -> None:
        super().__init__(kube, target.namespace, target.pod, target.container)
        self.key = target.key

    def missing(self, argv: list[str], exc: BinaryNotFound) -> None:
        if argv[0] in SHELLS:
            raise NoShell(f"{self.key}: exec needs a shell in the container, and it has none") from exc


class ExecApproach:
    name = "exec"

    def rules(self, pods: Sequence[str]) -> list[dict[str, Any]]:
        return exec_rules(list(pods))

    def unavailable(self, target: Target, settings: AccessSettings, *, forced: bool) -> str | None:
        return None

    def open(self, kube: Kube, target: Target, settings: AccessSettings) -> Transport:
        return ExecTransport(kube, target)
