"""sidecar: a scanner container that the pod's owners put beside the app, in a shared process
namespace; the target's files are at /proc/<pid>/root of the target's main process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ApproachUnavailable, TransportError
from ..kube.client import Kube
from ..kube.pods import read_pod
from ..kube.targets import Target
from . import AccessSettings
from .transport import ContainerRunner, Transport, exec_rules

# Lists every process outside the scanner's own mount namespace as "pid ppid mntns cmdline" (pid 1
# is the pod's pause process). Only fixed text: nothing from the cluster is put into it.
_PROCESS_SCRIPT = r"""self=$(readlink /proc/self/ns/mnt)
for d in /proc/[0-9]*; do
  p=${d#/proc/}
  [ "$p" = 1 ] && continue
  m=$(readlink "$d/ns/mnt" 2>/dev/null) || continue
  [ "$m" = "$self" ] && continue
  pp=$(cut -d' ' -f4 "$d/stat" 2>/dev/null) || continue
  printf '%s %s %s ' "$p" "$pp" "$m"
  tr '\0' ' ' < "$d/cmdline" 2>/dev/null
  echo
done
"""


class SidecarTransport(ContainerRunner):
    approach = "sidecar"

    def __init__(self, kube: Kube, target: Target) -> None:
        if not target.sidecar or not target.share_process_namespace:
            raise ApproachUnavailable(f"{target.key}: the pod has no scanner sidecar in a shared process namespace")
        super().__init__(kube, target.namespace, target.pod, target.sidecar)
        self._kube = kube
        self._target = target
        self.pid = 0

    def prepare(self) -> None:
        """Find the target's main process: one process group per mount namespace (one per container),
        matched to the pod's app containers; ambiguity is an error, never a guess."""
        t = self._target
        listing = self.run(["sh", "-c", _PROCESS_SCRIPT], timeout=30)
        groups: dict[str, list[tuple[int, int, str]]] = {}
        for line in listing.stdout.decode(errors="replace").splitlines():
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[0].isdigit():
                groups.setdefault(parts[2], []).append(
                    (int(parts[0]), int(parts[1] or 0), parts[3].strip() if len(parts) > 3 else "")
                )
        mains = []
        for members in groups.values():
            pids = {p for p, _, _ in members}
            roots = [m for m in members if m[1] not in pids]  # its parent is outside the container
            mains.append(min(roots or members))
        if not mains:
            raise TransportError(
                f"{t.key}: the scanner sidecar {t.sidecar!r} sees no other container's "
                "processes (is SYS_PTRACE missing, or shareProcessNamespace off?)"
            )
        if len(mains) == 1:
            self.pid = mains[0][0]
        else:  # several app containers: match the target's command line from the pod spec
            pod = read_pod(self._kube, t.namespace, t.pod)
            spec = next(c for c in pod.spec.containers if c.name == t.container)
            argv = " ".join([*(spec.command or []), *(spec.args or [])])
            matches = [m for m in mains if argv and m[2] == argv]
            if len(matches) != 1:
                raise TransportError(
                    f"{t.key}: {len(mains)} app containers share the process namespace and the "
                    "target's main process cannot be told apart; use the debug approach"
                )
            self.pid = matches[0][0]
        self.root = f"/proc/{self.pid}/root"
        probe = self.run(["test", "-d", f"{self.root}/"], timeout=30)
        if probe.exit_code != 0:
            raise ApproachUnavailable(
                f"{t.key}: the scanner sidecar may not read {self.root} (it needs SYS_PTRACE or the target's uid)"
            )


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
