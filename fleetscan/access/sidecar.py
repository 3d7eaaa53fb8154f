"""sidecar: a scanner container that the pod's owners put beside the app, in a shared process
namespace; the target's files are at /proc/<pid>/root of the target's main process.

The target is found by identity, never by what a process says of itself: processes are grouped
by mount namespace (one per container), and each group is matched to the target by its cgroup,
which names the container's runtime id as the pod status does. A neighbour can fake its command
line, its name and its output, not its cgroup. Where cgroups name no container, only a pod with a
single app container can be scanned this way; several are an error, never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ApproachUnavailable, TransportError
from ..kube.client import Kube
from ..kube.targets import Target
from . import AccessSettings
from .transport import ContainerRunner, Transport, exec_rules

# Every process outside the scanner's own mount namespace (pid 1 is the pod's pause process), as a
# NUL-terminated record of numbers only: "pid ppid mount-namespace container-id". Fixed text:
# nothing from the cluster is put into it, nothing a process controls comes out of it.
_PROCESS_SCRIPT = r"""self=$(readlink /proc/self/ns/mnt)
for d in /proc/[0-9]*; do
  p=${d#/proc/}
  [ "$p" = 1 ] && continue
  m=$(readlink "$d/ns/mnt" 2>/dev/null) || continue
  [ "$m" = "$self" ] && continue
  pp=$(awk '/^PPid:/{print $2}' "$d/status" 2>/dev/null) || continue
  c=$(head -c 4096 "$d/cgroup" 2>/dev/null | grep -o '[0-9a-f]\{64\}' | tail -n 1)
  m=${m#*[}; printf '%s %s %s %s\0' "$p" "$pp" "${m%]}" "$c"
done
"""
_RECORD = re.compile(rb"^(\d{1,10}) (\d{1,10}) (\d{1,20}) ([0-9a-f]{64})?$")
LISTING_BYTES = 1 << 20


@dataclass(frozen=True)
class _Process:
    pid: int
    ppid: int
    mount_ns: int
    container_id: str


def parse_listing(stdout: bytes) -> list[_Process]:
    out = []
    for record in stdout.split(b"\0"):
        found = _RECORD.match(record)
        if found:
            pid, ppid, mnt, cid = found.groups()
            out.append(_Process(int(pid), int(ppid), int(mnt), (cid or b"").decode()))
    return out


def main_processes(processes: list[_Process]) -> dict[int, _Process]:
    """Per mount namespace (one per container), its first process: the one whose parent is outside."""
    groups: dict[int, list[_Process]] = {}
    for proc in processes:
        groups.setdefault(proc.mount_ns, []).append(proc)
    mains = {}
    for ns, members in groups.items():
        pids = {m.pid for m in members}
        roots = [m for m in members if m.ppid not in pids]
        mains[ns] = min(roots or members, key=lambda m: m.pid)
    return mains


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
        listing = self.run(["sh", "-c", _PROCESS_SCRIPT], timeout=30, max_output=LISTING_BYTES)
        mains = main_processes(parse_listing(listing.stdout))
        if not mains:
            raise TransportError(
                f"{t.key}: the scanner sidecar {t.sidecar!r} sees no other container's "
                "processes (is SYS_PTRACE missing, or shareProcessNamespace off?)"
            )
        named = [m for m in mains.values() if m.container_id]
        if named:  # the runtime names containers in their cgroups: match the target's own id
            matches = [m for m in named if t.container_id and m.container_id == t.container_id]
            if len(matches) != 1:
                raise TransportError(
                    f"{t.key}: no process of the scanner sidecar's pod belongs to container id "
                    f"{t.container_id[:12] or '(unknown)'}; use the debug approach"
                )
            self.pid = matches[0].pid
        elif len(mains) == 1:
            self.pid = next(iter(mains.values())).pid
        else:
            raise TransportError(
                f"{t.key}: {len(mains)} app containers share the process namespace, and their cgroups do "
                "not say which is which; use the debug approach"
            )
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
