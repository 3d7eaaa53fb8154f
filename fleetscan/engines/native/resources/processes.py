"""processes: what runs in the target container (same mount namespace as its main process)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..facts import Fact
from . import Check, Env, Missing, Outcome, Resource, cut, listing, not_gathered, ok


@dataclass(frozen=True)
class ProcessesFact(Fact):
    """Processes of the target container (same mount namespace as the process whose root is $R),
    one NUL-terminated record each: pid, ppid and uid (digits, checked) and the name of argv[0]
    only, so no argument (a password on a command line) leaves the container and no command line
    can forge a record."""

    def key(self) -> str:
        return "processes"

    def script(self) -> str:
        # Builtins where they exist (a scan lists many processes): `-ef` compares the namespaces and
        # `read` takes PPid and Uid from status; the scan's own processes are not looked at. The
        # namespace's link is read only where `-ef` is missing (or cannot stat it: then nor can it
        # be read, and the list is unknown).
        return r"""case "$R" in /proc/*/root) ref="${R%/root}/ns/mnt";; *) ref=/proc/self/ns/mnt;; esac
if [ "$ref" -ef "$ref" ] 2>/dev/null; then same() { [ "$1" -ef "$ref" ]; }
else want=$(readlink "$ref" 2>/dev/null | head -c 256); [ -n "$want" ] || { echo X; exit 0; }
  same() { [ "$(readlink "$1" 2>/dev/null | head -c 256)" = "$want" ]; }; fi
echo "OK $$"
ours=" $$ "
for d in /proc/[0-9]*; do
  same "$d/ns/mnt" 2>/dev/null || continue
  p=${d#/proc/} pp= u=
  { while read -r k v _; do case $k in PPid:) pp=$v;; Uid:) u=$v; break;; esac; done < "$d/status"; } 2>/dev/null
  case "$pp$u" in ''|*[!0-9]*) continue;; esac
  case "$ours" in *" $pp "*) ours="$ours$p "; continue;; esac
  a=$(head -c 256 "$d/cmdline" 2>/dev/null | tr '\0\n' '\n '); a=${a%%"$NL"*}
  printf '%s %s %s %s\0' "$p" "$pp" "$u" "${a##*/}"
done"""


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    uid: int
    name: str


def parse_processes(payload: bytes) -> list[Process] | None:
    text = payload.decode(errors="replace")
    first, _, rest = text.partition("\n")
    if not first.startswith("OK"):
        return None
    me = int(first.split()[1]) if len(first.split()) > 1 and first.split()[1].isdigit() else -1
    procs = []
    for record in rest.split("\0"):
        parts = record.split(" ", 3)
        if len(parts) >= 3 and all(p.isascii() and p.isdigit() for p in parts[:3]):
            procs.append(Process(int(parts[0]), int(parts[1]), int(parts[2]), parts[3] if len(parts) > 3 else ""))
    # drop the script itself and what it started (exec approach: it runs inside the target)
    ours = {me}
    changed = True
    while changed:
        changed = False
        for p in procs:
            if p.ppid in ours and p.pid not in ours:
                ours.add(p.pid)
                changed = True
    return [p for p in procs if p.pid not in ours]


class ProcessesResource(Resource):
    name = "processes"

    def facts(self, check: Check) -> list[Fact]:
        return [ProcessesFact()]

    def state(self, check: Check, env: Env) -> Any:
        section = env.section(ProcessesFact())
        if section is None:
            return Missing([not_gathered("processes are examined", "processes")])
        if why := cut(section):
            return Missing([Outcome("error", "processes are examined", f"the process list: {why}", "processes")])
        procs = parse_processes(section.payload)
        if procs is None:
            why = "/proc cannot be read where the scan runs"
            return Missing([Outcome("skipped", "processes are examined", why, "processes")])
        return procs

    def expect_not_root(self, procs: list[Process], want: Any, check: Check) -> Outcome:
        root = [f"{p.name} ({p.pid})" for p in procs if p.uid == 0]
        return ok(
            not root or not want,
            "no process is expected to run as root",
            f"running as root: {listing(root)}",
            "processes",
        )

    def expect_absent(self, procs: list[Process], want: Any, check: Check) -> Outcome:
        found = [f"{p.name} ({p.pid})" for p in procs if p.name in want]
        return ok(
            not found,
            f"processes {listing(list(want))} are expected not to run",
            f"running: {listing(found)}",
            "processes",
        )

    def expect_max(self, procs: list[Process], want: Any, check: Check) -> Outcome:
        return ok(
            len(procs) <= int(want), f"at most {want} processes are expected", f"{len(procs)} are running", "processes"
        )
