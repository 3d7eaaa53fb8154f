"""search: files under given roots that are world-writable, setuid, setgid, unowned, hold a private
key or match a pattern; names only ever come back, never content."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from ..facts import Fact, q
from ..script import Section
from . import Check, Env, Missing, Outcome, Resource, cut, listing, not_gathered, ok
from .accounts import TABLE_BYTES

KINDS = ("world_writable", "setuid", "setgid", "unowned", "private_keys", "pattern")
WHAT = {
    "world_writable": "world-writable files",
    "setuid": "setuid files",
    "setgid": "setgid files",
    "unowned": "files without a known owner or group",
    "private_keys": "files holding a private key",
}


ERRORS_KEPT = 2048  # bytes of find's complaints kept to tell "permission denied" from worse


@dataclass(frozen=True)
class SearchFact(Fact):
    """Files under roots, found with `find -P -xdev` (never following a link, never leaving a
    filesystem), NUL-separated so any file name survives; content searches print names only, never
    content. After each root, a record `F:ok|denied|error` says whether find read everything."""

    roots: tuple[str, ...]
    find: str
    exclude: tuple[str, ...] = ()
    pattern: str = ""
    max_file_kb: int = 1024
    max_bytes: int = 256 * 1024

    @classmethod
    def of(cls, spec: dict[str, Any]) -> SearchFact:
        return cls(
            tuple(spec.get("roots") or ["/"]),
            spec["find"],
            tuple(spec.get("exclude") or ()),
            str(spec.get("pattern") or ""),
            int(spec.get("max_file_kb") or 1024),
        )

    def key(self) -> str:
        return f"search:{self.find}\0{self.pattern}\0{self.roots}\0{self.exclude}\0{self.max_file_kb}"

    def limit(self) -> int:
        return self.max_bytes

    @property
    def by_line(self) -> bool:
        return self.find in ("private_keys", "pattern")  # grep -l prints one name a line

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
        sep = r"\n" if self.by_line else r"\0"
        lines = [
            "command -v find >/dev/null 2>&1 || { echo X; exit 0; }",
            "echo OK",
            "exec 3>&1",
            f"done_() {{ printf 'F:%s{sep}' \"$1\"; }}",
        ]
        if self.find == "unowned":
            # the known ids, read from the container's own tables: digits only, validated, so
            # nothing of the container is ever expanded or globbed into the command line
            valid = "$3 ~ /^[0-9]+$/ && length($3) <= 10 && $3 + 0 <= 4294967294 {print $3}"
            lines += [
                f'ids() {{ head -c {TABLE_BYTES} "$1" | awk -F: {q(valid)}; }}',
                "P= Q=",  # where each table is, checked once (one that cannot be read is an error)
                f'reg /etc/passwd {TABLE_BYTES} && P=$p || [ "$st" = M ] || done_ error',
                f'reg /etc/group {TABLE_BYTES} && Q=$p || [ "$st" = M ] || done_ error',
                'set --; [ -n "$P" ] && for u in $(ids "$P"); do',
                '  [ $# -gt 0 ] && set -- "$@" -o; set -- "$@" -user "$u"; done',
                "[ $# -eq 0 ] && set -- -user 0",
                'G=""; [ -n "$Q" ] && for g in $(ids "$Q"); do G="$G${G:+ -o }-group $g"; done',
                '[ -z "$G" ] && G="-group 0"',
            ]
        if self.by_line:
            pattern = self.pattern or r"-----BEGIN ([A-Z]+ )?PRIVATE KEY-----"
            what = f'-type f -size -{self.max_file_kb}k ! -name "*$NL*" -exec grep -lE -e {q(pattern)} -- {{}} +'
        else:
            what = f"\\( {cond[self.find]} \\) -print0"
        for root in self.roots:
            lines.append(
                f"""if at {q(root)}; then
  if [ -d "$p" ]; then
    e=$(find -P "$p" -xdev \\( {self._prune()} \\) -prune -o {what} 2>&1 >&3 3>&- | head -c {ERRORS_KEPT})
    if [ -z "$e" ]; then done_ ok
    elif [ "${{#e}}" -ge {ERRORS_KEPT} ] || printf '%s\\n' "$e" | grep -qv 'Permission denied'; then done_ error
    else done_ denied; fi
  fi
elif [ "$p" = X ]; then done_ error; fi"""
            )
        return "\n".join(lines)


def parse_search(payload: bytes, root: str, find: str) -> tuple[list[str], set[str]] | None:
    """(paths inside the container, how complete: {ok, denied, error}) or None when `find` is not
    available. Paths always start with "/": a record that does not is one of the script's own."""
    if not payload.startswith(b"OK\n"):
        return None
    separator = b"\n" if find in ("private_keys", "pattern") else b"\0"
    prefix = root.encode() if root else b""
    paths, kinds = [], set()
    for item in payload[3:].split(separator):
        if not item:
            continue
        if not item.startswith(b"/"):
            kinds.add(item.removeprefix(b"F:").decode(errors="replace") if item.startswith(b"F:") else "error")
            continue
        path = item[len(prefix) :] if prefix and item.startswith(prefix) else item
        paths.append(path.decode(errors="surrogateescape") or "/")
    return paths, kinds


def _valid_path(path: Any) -> bool:
    return isinstance(path, str) and path.startswith("/") and "\n" not in path and "\0" not in path


@dataclass(frozen=True)
class _Found:
    desc: str
    paths: list[str]
    notes: list[str]
    kinds: set[str]

    @property
    def note(self) -> str:
        return f" ({'; '.join(self.notes)})" if self.notes else ""

    def incomplete(self, desc: str) -> Outcome | None:
        """An empty or short listing proves nothing when the search did not see everything."""
        if self.notes and "the listing was cut" not in self.notes[0]:
            status = "skipped" if self.kinds <= {"ok", "denied"} and "denied" in self.kinds else "error"
            return Outcome(status, desc, f"found {len(self.paths)}: {listing(self.paths)}{self.note}", "search")
        return None


class SearchResource(Resource):
    name = "search"
    parameters = ("roots", "find", "pattern", "exclude", "max_results", "max_file_kb")

    def problems(self, target: Any, expect: dict[str, Any], where: str) -> list[str]:
        problems = []
        spec = target if isinstance(target, dict) else {}
        for key in spec:
            if key not in self.parameters:
                problems.append(f"{where}: search does not understand {key} (known: {', '.join(self.parameters)})")
        if spec.get("find") not in KINDS:
            problems.append(f"{where}: search.find must be one of {', '.join(KINDS)}")
        if spec.get("find") == "pattern" and not spec.get("pattern"):
            problems.append(f"{where}: search.find pattern needs search.pattern")
        for root in [*spec.get("roots", ["/"]), *spec.get("exclude", [])]:
            if not _valid_path(root):
                problems.append(f"{where}: search roots and excludes must be absolute paths, not {root!r}")
        return problems

    def facts(self, check: Check) -> list[Fact]:
        return [SearchFact.of(check.target or {})]

    def state(self, check: Check, env: Env) -> Any:
        spec = check.target or {}
        fact = SearchFact.of(spec)
        what = WHAT.get(fact.find, f"files matching /{fact.pattern}/")
        desc = f"{what} under {', '.join(fact.roots)}"
        section: Section | None = env.section(fact)
        if section is None:
            return Missing([not_gathered(desc, "search")])
        parsed = parse_search(section.payload, "" if env.root in ("", "/") else env.root.rstrip("/"), fact.find)
        if parsed is None:
            return Missing([Outcome("skipped", desc, "`find` is not available where the scan runs", "search")])
        paths = sorted(set(parsed[0]))
        limit = int(spec.get("max_results") or 1000)
        notes = []
        if paths and (section.truncated or len(paths) > limit):  # only findings fill a listing: they stand
            notes.append("the listing was cut at its size limit")
        elif why := cut(section):
            notes.append(why)
        if "error" in parsed[1]:
            notes.append("find could not read everything")
        elif "denied" in parsed[1]:
            notes.append("the scanning identity may not read some files or directories")
        return _Found(desc, paths[:limit], notes, parsed[1])

    def expect_none(self, f: _Found, want: Any, check: Check) -> Outcome:
        desc = f"no {f.desc} are expected"
        why = f"found {len(f.paths)}: {listing(f.paths)}{f.note}"
        if not want or f.paths:  # what was found stands, however much was missed
            return ok(not f.paths if want else True, desc, why, "search")
        return f.incomplete(desc) or ok(True, desc, why, "search")

    def expect_max(self, f: _Found, want: Any, check: Check) -> Outcome:
        desc = f"at most {want} {f.desc} are expected"
        why = f"found {len(f.paths)}: {listing(f.paths)}{f.note}"
        if len(f.paths) > int(want):
            return ok(False, desc, why, "search")
        return f.incomplete(desc) or ok(True, desc, why, "search")

    def expect_only(self, f: _Found, want: Any, check: Check) -> Outcome:
        desc = f"{f.desc} are expected to be only {listing(list(want))}"
        extra = [p for p in f.paths if not any(fnmatch.fnmatchcase(p, g) for g in want)]
        if extra:
            return ok(False, desc, f"also: {listing(extra)}{f.note}", "search")
        return f.incomplete(desc) or ok(True, desc, f"also: {listing(extra)}{f.note}", "search")
