"""Finding a target container's main process from a container beside it in the pod's shared
process namespace (a scanner sidecar, or one debug container for the whole pod).

By identity, never by what a process says of itself: processes are grouped by mount namespace (one
per container), and each group is matched to the target by its cgroup, which names the container's
runtime id as the pod status does. A neighbour can fake its command line, its name and its output,
not its cgroup. Where cgroups name no container, only a pod with a single app container can be
scanned this way; several are an error, never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import TransportError
from ..kube.targets import Target
from .transport import ContainerRunner

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


def locate(runner: ContainerRunner, target: Target, beside: str) -> int:
    """The host-side pid (as `runner` sees it) of `target`'s main process; `beside` names the
    container `runner` execs into, for errors."""
    listing = runner.run(["sh", "-c", _PROCESS_SCRIPT], timeout=30, max_output=LISTING_BYTES)
    mains = main_processes(parse_listing(listing.stdout))
    if not mains:
        raise TransportError(
            f"{target.key}: {beside} sees no other container's processes "
            "(is SYS_PTRACE missing, or shareProcessNamespace off?)"
        )
    named = [m for m in mains.values() if m.container_id]
    if named:  # the runtime names containers in their cgroups: match the target's own id
        matches = [m for m in named if target.container_id and m.container_id == target.container_id]
        if len(matches) != 1:
            raise TransportError(
                f"{target.key}: no process seen by {beside} belongs to container id "
                f"{target.container_id[:12] or '(unknown)'}"
            )
        return matches[0].pid
    if len(mains) == 1:
        return next(iter(mains.values())).pid
    raise TransportError(
        f"{target.key}: {len(mains)} app containers share the process namespace, and their cgroups do "
        "not say which is which"
    )
