"""Facts a profile needs, each with the POSIX sh that gathers it and the parser of what it printed.

Every piece of data that goes into the script is quoted with shlex.quote; nothing read from the
container is ever evaluated. `$R` is the root prefix of the target's files ("" for /, else e.g.
/proc/42/root). Secrets stay inside: /etc/shadow is reduced to one state per user by awk there,
and content checks run grep there and return only whether it matched.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, ClassVar

MAX_LISTING_BYTES = 1 << 20


def q(text: str) -> str:
    return shlex.quote(text)


@dataclass(frozen=True)
class Fact:
    kind: ClassVar[str] = ""

    def key(self) -> str:
        raise NotImplementedError

    def script(self) -> str:
        raise NotImplementedError

    def limit(self) -> int:
        return MAX_LISTING_BYTES


# -- files ----------------------------------------------------------------------------------------------
_STAT = "stat -c '%f %u %g %s'"


@dataclass(frozen=True)
class FileFact(Fact):
    path: str
    kind: ClassVar[str] = "file"

    def key(self) -> str:
        return f"file:{self.path}"

    def script(self) -> str:
        # L/F/M/U: symlink, other file, missing, cannot tell (a parent is unreadable). For a symlink,
        # S is the stat of its target resolved inside the container's root, then T: its raw target.
        return f"""p="$R"{q(self.path)}
if [ -L "$p" ]; then printf 'L '; {_STAT} "$p"
  t=$(readlink "$p"); case "$t" in /*) l="$R$t";; *) l="$(dirname "$p")/$t";; esac
  [ -e "$l" ] && {{ printf 'S '; {_STAT} "$l"; }}
  printf 'T:%s' "$t"
elif [ -e "$p" ]; then printf 'F '; {_STAT} "$p"
elif [ -d "$(dirname "$p")" ] && [ ! -x "$(dirname "$p")" ]; then echo U
else echo M; fi"""


@dataclass(frozen=True)
class FileInfo:
    state: str  # present, missing, unknown
    mode: int = 0  # st_mode (type and permission bits)
    uid: int = -1
    gid: int = -1
    size: int = 0
    link_target: str | None = None
    target_mode: int | None = None  # the symlink's target, when it resolves


def parse_file(payload: bytes) -> FileInfo:
    text = payload.decode(errors="surrogateescape")
    first, _, rest = text.partition("\n")
    if first.startswith("M"):
        return FileInfo("missing")
    if first[:1] not in ("L", "F"):
        return FileInfo("unknown")
    parts = first.split()
    mode, uid, gid, size = int(parts[1], 16), int(parts[2]), int(parts[3]), int(parts[4])
    if first.startswith("F"):
        return FileInfo("present", mode, uid, gid, size)
    target_mode = None
    if rest.startswith("S "):
        stat_line, _, rest = rest.partition("\n")
        target_mode = int(stat_line.split()[1], 16)
    link = rest[2:] if rest.startswith("T:") else None
    return FileInfo("present", mode, uid, gid, size, link, target_mode)


@dataclass(frozen=True)
class GrepFact(Fact):
    path: str
    pattern: str
    kind: ClassVar[str] = "grep"

    def key(self) -> str:
        return f"grep:{self.path}\0{self.pattern}"

    def script(self) -> str:
        return f"""p="$R"{q(self.path)}
if [ -f "$p" ] && [ -r "$p" ]; then grep -Eq -e {q(self.pattern)} -- "$p"; r=$?
  case $r in 0) echo 1;; 1) echo 0;; *) echo U;; esac
elif [ -e "$p" ]; then echo U; else echo M; fi"""


# -- accounts ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableFact(Fact):
    """/etc/passwd or /etc/group (no secrets in either)."""

    path: str
    kind: ClassVar[str] = "table"

    def key(self) -> str:
        return f"table:{self.path}"

    def script(self) -> str:
        return f"""p="$R"{q(self.path)}
if [ -r "$p" ]; then echo OK; cat "$p"; elif [ -e "$p" ]; then echo U; else echo M; fi"""


def parse_table(payload: bytes) -> list[list[str]] | None:
    text = payload.decode(errors="replace")
    if not text.startswith("OK\n"):
        return None
    return [line.split(":") for line in text[3:].splitlines() if line.strip() and not line.startswith("#")]


@dataclass(frozen=True)
class ShadowFact(Fact):
    """One state per user (empty, locked, set): the hashes never leave the container."""

    kind: ClassVar[str] = "shadow"

    def key(self) -> str:
        return "shadow"

    def script(self) -> str:
        return """p="$R/etc/shadow"
if [ -r "$p" ]; then echo OK; awk -F: 'NF>1 {s=$2; st="set"
    if (s=="") st="empty"; else if (substr(s,1,1)=="!" || substr(s,1,1)=="*") st="locked"
    print $1 " " st}' "$p"
elif [ -e "$p" ]; then echo U; else echo M; fi"""


def parse_shadow(payload: bytes) -> dict[str, str] | None:
    text = payload.decode(errors="replace")
    if not text.startswith("OK\n"):
        return None
    return dict(line.split(" ", 1) for line in text[3:].splitlines() if " " in line)


# -- system ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OsReleaseFact(Fact):
    kind: ClassVar[str] = "os_release"

    def key(self) -> str:
        return "os_release"

    def script(self) -> str:
        return """if [ -r "$R/etc/os-release" ]; then echo OK; cat "$R/etc/os-release"
elif [ -r "$R/usr/lib/os-release" ]; then echo OK; cat "$R/usr/lib/os-release"
else echo M; fi"""


def parse_os_release(payload: bytes) -> dict[str, str] | None:
    text = payload.decode(errors="replace")
    if not text.startswith("OK\n"):
        return None
    values = {}
    for line in text[3:].splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("\"'")
    return values


_DPKG_AWK = (
    "/^Package:/{p=$2} /^Version:/{v=$2} /^Status:/{s=$0} "
    '/^$/{if(p!="" && (s=="" || s ~ / installed$/)) print F " " p " " v; p=""; v=""; s=""} '
    'END{if(p!="" && (s=="" || s ~ / installed$/)) print F " " p " " v}'
)
_APK_AWK = (
    '/^P:/{p=substr($0,3)} /^V:/{v=substr($0,3)} /^$/{if(p!="") print "apk " p " " v; p=""; v=""} '
    'END{if(p!="") print "apk " p " " v}'
)


@dataclass(frozen=True)
class PackagesFact(Fact):
    """dpkg `status`, distroless `status.d/`, apk `installed`: one "db name version" line each."""

    kind: ClassVar[str] = "packages"

    def key(self) -> str:
        return "packages"

    def script(self) -> str:
        return f"""d="$R/var/lib/dpkg"
[ -r "$d/status" ] && awk -v F=dpkg {q(_DPKG_AWK)} "$d/status"
if [ -d "$d/status.d" ]; then for f in "$d"/status.d/*; do
  case "$f" in *.md5sums) continue;; esac
  [ -f "$f" ] && awk -v F=status.d {q(_DPKG_AWK)} "$f"; done; fi
[ -r "$R/lib/apk/db/installed" ] && awk {q(_APK_AWK)} "$R/lib/apk/db/installed"
true"""


def parse_packages(payload: bytes) -> list[tuple[str, str, str]]:
    out = []
    for line in payload.decode(errors="replace").splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3:
            out.append((parts[0], parts[1], parts[2]))
    return out


@dataclass(frozen=True)
class SearchFact(Fact):
    """Files under roots, found with `find -xdev` (NUL-separated: any file name survives); content
    searches print names only, never content."""

    roots: tuple[str, ...]
    find: str
    exclude: tuple[str, ...] = ()
    pattern: str = ""
    max_file_kb: int = 1024
    max_bytes: int = 256 * 1024
    kind: ClassVar[str] = "search"

    def key(self) -> str:
        return f"search:{self.find}\0{self.pattern}\0{self.roots}\0{self.exclude}\0{self.max_file_kb}"

    def limit(self) -> int:
        return self.max_bytes

    def _prune(self) -> str:
        paths = ["/proc", "/sys", "/dev", *self.exclude]
        return " -o ".join(f'-path "$R"{q(p.rstrip("/") or "/")}' for p in paths)

    def script(self) -> str:
        cond = {
            "world_writable": r"\( -type f -perm -0002 \) -o \( -type d -perm -0002 ! -perm -1000 \)",
            "setuid": "-type f -perm -4000",
            "setgid": "-type f -perm -2000",
            "unowned": r'-type f \( ! \( "$@" \) -o ! \( $G \) \)',
        }
        lines = ["command -v find >/dev/null 2>&1 || { echo X; exit 0; }", "echo OK", 'NL=$(printf "\\nx"); NL=${NL%x}']
        if self.find == "unowned":
            # known ids as `-user N -o -user M ...`, read from the container's own tables
            lines += [
                'set --; for u in $(cut -d: -f3 "$R/etc/passwd" 2>/dev/null); do '
                '[ $# -gt 0 ] && set -- "$@" -o; set -- "$@" -user "$u"; done; [ $# -eq 0 ] && set -- -user 0',
                'G=""; for g in $(cut -d: -f3 "$R/etc/group" 2>/dev/null); do '
                'G="$G${G:+ -o }-group $g"; done; [ -z "$G" ] && G="-group 0"',
            ]
        for root in self.roots:
            start = f'"$R"{q(root)}'
            if self.find in ("private_keys", "pattern"):
                pattern = self.pattern or r"-----BEGIN ([A-Z]+ )?PRIVATE KEY-----"
                # names with a newline are left out: grep -l prints one name per line
                lines.append(
                    f"find {start} -xdev \\( {self._prune()} \\) -prune -o -type f -size -{self.max_file_kb}k "
                    f'! -name "*$NL*" -exec grep -lE -e {q(pattern)} -- {{}} + 2>/dev/null'
                )
            else:
                lines.append(
                    f"find {start} -xdev \\( {self._prune()} \\) -prune -o \\( {cond[self.find]} \\) "
                    "-print0 2>/dev/null"
                )
        return "\n".join(lines)


def parse_search(payload: bytes, root: str, find: str) -> tuple[list[str], bool] | None:
    """(paths inside the container, complete?) or None when `find` is not available."""
    if not payload.startswith(b"OK\n"):
        return None
    body = payload[3:]
    separator = b"\n" if find in ("private_keys", "pattern") else b"\0"
    items = [p for p in body.split(separator) if p]
    prefix = root.encode() if root else b""
    paths = [
        (p[len(prefix) :] if prefix and p.startswith(prefix) else p).decode(errors="surrogateescape") or "/"
        for p in items
    ]
    return paths, True


@dataclass(frozen=True)
class ProcessesFact(Fact):
    """Processes of the target container: same mount namespace as the process whose root is $R."""

    kind: ClassVar[str] = "processes"

    def key(self) -> str:
        return "processes"

    def script(self) -> str:
        return r"""case "$R" in /proc/*/root) ref="${R%/root}/ns/mnt";; *) ref=/proc/self/ns/mnt;; esac
want=$(readlink "$ref" 2>/dev/null) || { echo X; exit 0; }
echo "OK $$"
for d in /proc/[0-9]*; do
  [ "$(readlink "$d/ns/mnt" 2>/dev/null)" = "$want" ] || continue
  s=$(awk '/^PPid:/{pp=$2} /^Uid:/{u=$2} END{print pp " " u}' "$d/status" 2>/dev/null) || continue
  printf '%s %s ' "${d#/proc/}" "$s"; tr '\0' ' ' < "$d/cmdline" 2>/dev/null; echo
done"""


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    uid: int
    cmdline: str

    @property
    def name(self) -> str:
        first = self.cmdline.split(" ", 1)[0]
        return first.rsplit("/", 1)[-1]


def parse_processes(payload: bytes) -> list[Process] | None:
    text = payload.decode(errors="replace")
    first, _, rest = text.partition("\n")
    if not first.startswith("OK"):
        return None
    me = int(first.split()[1]) if len(first.split()) > 1 else -1
    procs = []
    for line in rest.splitlines():
        parts = line.split(" ", 3)
        if len(parts) >= 3 and all(p.isdigit() for p in parts[:3]):
            command = (parts[3] if len(parts) > 3 else "").strip()
            procs.append(Process(int(parts[0]), int(parts[1]), int(parts[2]), command))
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


def facts_for(resource: str, target: Any, expect: dict[str, Any]) -> list[Fact]:
    """The facts one check needs."""
    if resource == "file":
        paths = target if isinstance(target, list) else [target]
        facts: list[Fact] = [FileFact(p) for p in paths]
        for key, table in (("owner", "/etc/passwd"), ("group", "/etc/group")):
            if key in expect and not str(expect[key]).isdigit():
                facts.append(TableFact(table))  # names are resolved with the container's own tables
        for key in ("content", "content_not"):
            if key in expect:
                facts += [GrepFact(p, str(expect[key])) for p in paths]
        return facts
    if resource == "users":
        return [TableFact("/etc/passwd")]
    if resource == "groups":
        return [TableFact("/etc/group")]
    if resource == "login":
        return [ShadowFact(), TableFact("/etc/passwd")]
    if resource == "os_release":
        return [OsReleaseFact()]
    if resource == "packages":
        return [PackagesFact()]
    if resource == "search":
        spec = target or {}
        return [
            SearchFact(
                tuple(spec.get("roots") or ["/"]),
                spec["find"],
                tuple(spec.get("exclude") or ()),
                str(spec.get("pattern") or ""),
                int(spec.get("max_file_kb") or 1024),
            )
        ]
    if resource == "processes":
        return [ProcessesFact()]
    return []  # pod facts come from the API, not the container
