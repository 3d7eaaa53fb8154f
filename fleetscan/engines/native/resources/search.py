"""search: files under given roots that are world-writable, setuid, setgid, unowned, hold a private
key or match a pattern; names only ever come back, never content."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from ..facts import Fact, q
from ..script import Section
from . import Check, Env, Missing, Outcome, Resource, listing, not_gathered, ok

KINDS = ("world_writable", "setuid", "setgid", "unowned", "private_keys", "pattern")
WHAT = {
    "world_writable": "world-writable files",
    "setuid": "setuid files",
    "setgid": "setgid files",
    "unowned": "files without a known owner or group",
    "private_keys": "files holding a private key",
}


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


def _valid_path(path: Any) -> bool:
    return isinstance(path, str) and path.startswith("/") and "\n" not in path and "\0" not in path


@dataclass(frozen=True)
class _Found:
    desc: str
    paths: list[str]
    note: str


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
        note = " (the listing was cut at its size limit)" if section.truncated or len(paths) > limit else ""
        return _Found(desc, paths[:limit], note)

    def expect_none(self, f: _Found, want: Any, check: Check) -> Outcome:
        why = f"found {len(f.paths)}: {listing(f.paths)}{f.note}"
        return ok(not f.paths if want else True, f"no {f.desc} are expected", why, "search")

    def expect_max(self, f: _Found, want: Any, check: Check) -> Outcome:
        why = f"found {len(f.paths)}: {listing(f.paths)}{f.note}"
        return ok(len(f.paths) <= int(want), f"at most {want} {f.desc} are expected", why, "search")

    def expect_only(self, f: _Found, want: Any, check: Check) -> Outcome:
        extra = [p for p in f.paths if not any(fnmatch.fnmatchcase(p, g) for g in want)]
        return ok(
            not extra,
            f"{f.desc} are expected to be only {listing(list(want))}",
            f"also: {listing(extra)}{f.note}",
            "search",
        )
