"""debug: an ephemeral container added to the pod. Last in `auto` order: ephemeral containers stay
in the pod for its whole life (they can never be removed), so each is reused across runs.

In a pod that shares its process namespace, one debug container serves every container of the pod
that runs as the same user: it joins the shared namespace and finds each target's main process by
its cgroup (`locate`), so a scan costs two execs. Otherwise Kubernetes lets a debug container see
only the one container it targets (`targetContainerName`, whose main process is its pid 1): one per
container, and one exec per scan."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from ..errors import ApproachUnavailable
from ..kube.client import Kube
from ..kube.pods import add_ephemeral_container, has_ephemeral_container, read_pod, wait_ephemeral_running
from ..kube.targets import Target
from . import DEFAULT_DEBUG_IMAGE, DEFAULT_DEBUG_WAIT, AccessSettings
from .locate import locate
from .transport import ContainerRunner, Transport, exec_rules

PAUSE_FOREVER = ["sleep", "2147483647"]


def debug_container_name(target: Target, image: str) -> str:
    """Stable per (container, image), or in a shared process namespace per (user, image): later runs
    find and reuse it (ephemeral containers are forever)."""
    sec = target.security
    key = f"pod\0{sec.run_as_user}\0{sec.run_as_group}" if target.share_process_namespace else target.container
    digest = hashlib.sha256(f"{key}\0{image}".encode()).hexdigest()[:10]
    return f"fleetscan-debug-{digest}"


class DebugTransport(ContainerRunner):
    approach = "debug"
    root = "/proc/1/root"

    def __init__(
        self, kube: Kube, target: Target, image: str = DEFAULT_DEBUG_IMAGE, wait_seconds: float = DEFAULT_DEBUG_WAIT
    ) -> None:
        self.name = debug_container_name(target, image)
        super().__init__(kube, target.namespace, target.pod, self.name)
        self._kube = kube
        self._target, self._image, self._wait = target, image, wait_seconds
        self.created = False

    def spec(self) -> dict[str, Any]:
        security: dict[str, Any] = {"capabilities": {"add": ["SYS_PTRACE"]}}
        sec = self._target.security
        # /proc/<pid>/root needs the target's uid (or ptrace rights a non-root user lacks).
        if sec.run_as_non_root or (sec.run_as_user not in (None, 0)):
            if sec.run_as_user is None:
                raise ApproachUnavailable(
                    f"{self._target.key}: runs as non-root with no runAsUser; a debug container cannot match its uid"
                )
            security.update(runAsUser=sec.run_as_user, runAsNonRoot=True)
            if sec.run_as_group is not None:
                security["runAsGroup"] = sec.run_as_group
        return {
            "name": self.name,
            "image": self._image,
            "command": PAUSE_FOREVER,
            **({} if self._target.share_process_namespace else {"targetContainerName": self._target.container}),
            "securityContext": security,
            "stdin": False,
            "tty": False,
        }

    def prepare(self) -> None:
        t = self._target
        if not has_ephemeral_container(read_pod(self._kube, t.namespace, t.pod), self.name):
            add_ephemeral_container(self._kube, t.namespace, t.pod, self.spec())
            self.created = True
        wait_ephemeral_running(self._kube, t.namespace, t.pod, self.name, self._wait, self._image)
        if t.share_process_namespace:
            self.root = f"/proc/{locate(self, t, f'the debug container {self.name!r}')}/root"


class DebugApproach:
    name = "debug"

    def rules(self, pods: Sequence[str]) -> list[dict[str, Any]]:
        names = sorted(set(pods))
        return [
            *exec_rules(names),  # exec into the debug container
            # read and watch the pod until the debug container runs
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"], "resourceNames": names},
            {
                "apiGroups": [""],
                "resources": ["pods/ephemeralcontainers"],
                "verbs": ["get", "patch"],
                "resourceNames": list(names),
            },
        ]

    def unavailable(self, target: Target, settings: AccessSettings, *, forced: bool) -> str | None:
        if not settings.ephemeral_supported:
            return "the cluster has no ephemeral containers"
        if not settings.allow_debug and not forced:
            return "debug containers are not allowed in this run"
        return None

    def open(self, kube: Kube, target: Target, settings: AccessSettings) -> Transport:
        debug = DebugTransport(kube, target, settings.debug_image, settings.debug_wait_seconds)
        debug.prepare()
        return debug
