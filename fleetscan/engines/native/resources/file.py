"""file: existence, type, mode, owner, group, size, link target and content of files, each path
examined inside the container's root; content is matched there and only the verdict comes back."""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from typing import Any

from ..facts import Fact, q
from . import Check, Env, Outcome, Resource, cut, not_gathered, ok, state_outcome
from .accounts import Table, TableFact, id_names, table_of

MODE = re.compile(r"^0?[0-7]{3,4}$")
CONTENT_BYTES = 1 << 20
_STAT = "stat -c '%f %u %g %s'"
# Two stat lines and a link target (at most PATH_MAX): what an honest FileFact prints.
FILE_RECORD_BYTES = 2 * 64 + 4096 + 16
_STAT_LINE = re.compile(r"^([LF]) ([0-9a-f]{1,8}) (\d{1,10}) (\d{1,10}) (\d{1,20})$")


@dataclass(frozen=True)
class FileFact(Fact):
    path: str

    def key(self) -> str:
        return f"file:{self.path}"

    bounded = True

    def limit(self) -> int:
        return FILE_RECORD_BYTES

    def script(self) -> str:
        # The parent directory is resolved inside the container's root, the last component is
        # examined as it is: L (a symlink: its own lstat; S, the stat of what it resolves to inside
        # the root; T:, its raw target), F (anything else), M (missing), U (a parent is not
        # searchable), X (the path cannot be resolved: a link loop). A link's target is resolved
        # from the parent already resolved, its first link already read (each read costs forks).
        return f"""x={q(self.path)}
b=${{x##*/}}; u=${{x%/*}}
if ! rp "${{u:-/}}"; then echo X
else d=$_r pd=$_d
if [ -z "$b" ]; then f=$d; else f=${{d%/}}/$b; fi
if [ -L "$f" ]; then printf 'L '; {_STAT} "$f"
  l=$(readlink "$f" | head -c 4097; echo .); l=${{l%.}}; l=${{l%"$NL"}}
  [ -n "$l" ] && rp "$l" "$pd" 1 && {{ r=$_r; [ -e "$r" ] && {{ printf 'S '; {_STAT} "$r"; }}; }}
  printf 'T:%s' "$l"
elif [ -e "$f" ]; then printf 'F '; {_STAT} "$f"
elif [ -d "$d" ] && [ ! -x "$d" ]; then echo U
else echo M; fi
fi"""


@dataclass(frozen=True)
class FileInfo:
    state: str  # present, missing, unknown (U), unresolvable (X), malformed
    mode: int = 0  # st_mode (type and permission bits)
    uid: int = -1
    gid: int = -1
    size: int = 0
    link_target: str | None = None
    target_mode: int | None = None  # the symlink's target, when it resolves


def parse_file(payload: bytes) -> FileInfo:
    """What the script printed; anything that is not exactly that is `malformed` (an error)."""
    text = payload.decode(errors="surrogateescape")
    first, _, rest = text.partition("\n")
    if first in ("M", "U", "X") and not rest:
        return FileInfo({"M": "missing", "U": "unknown", "X": "unresolvable"}[first])
    found = _STAT_LINE.match(first)
    if found is None:
        return FileInfo("malformed")
    kind, mode, uid, gid, size = found.groups()
    if kind == "F":
        return FileInfo("present", int(mode, 16), int(uid), int(gid), int(size)) if not rest else FileInfo("malformed")
    target_mode = None
    if rest.startswith("S "):
        stat_line, _, rest = rest.partition("\n")
        target = _STAT_LINE.match(f"F {stat_line[2:]}")
        if target is None:
            return FileInfo("malformed")
        target_mode = int(target.group(2), 16)
    if not rest.startswith("T:"):
        return FileInfo("malformed")
    return FileInfo("present", int(mode, 16), int(uid), int(gid), int(size), rest[2:], target_mode)


@dataclass(frozen=True)
class GrepFact(Fact):
    path: str
    pattern: str

    def key(self) -> str:
        return f"grep:{self.path}\0{self.pattern}"

    bounded = True  # 1, 0, E or why the file was not read

    def limit(self) -> int:
        return 64

    def script(self) -> str:
        # Only a regular file's first bytes are matched, inside the container: 1 or 0 comes back.
        return f"""if reg {q(self.path)} {CONTENT_BYTES}; then
  head -c {CONTENT_BYTES} "$p" | grep -Eq -e {q(self.pattern)}
  case $? in 0) echo 1;; 1) echo 0;; *) echo E;; esac
else echo "$st"; fi"""


def _mode(value: int) -> str:
    return format(stat.S_IMODE(value), "04o")


def _paths(target: Any) -> list[Any]:
    return target if isinstance(target, list) else [target]


def _valid_path(path: Any) -> bool:
    return isinstance(path, str) and path.startswith("/") and "\n" not in path and "\0" not in path


@dataclass(frozen=True)
class _File:
    path: str
    info: FileInfo
    env: Env
    users: Table | None
    groups: Table | None

    @property
    def res(self) -> str:
        return f"File {self.path}"

    @property
    def kind(self) -> str:
        m = self.info.mode
        if stat.S_ISLNK(m):
            return "symlink"
        return "directory" if stat.S_ISDIR(m) else "file" if stat.S_ISREG(m) else "other"

    @property
    def effective_mode(self) -> int | None:
        return self.info.target_mode if self.kind == "symlink" else self.info.mode


class FileResource(Resource):
    name = "file"
    modifiers = ("when_missing",)

    def problems(self, target: Any, expect: dict[str, Any], where: str) -> list[str]:
        problems = []
        for key in ("mode", "mode_max"):
            if key in expect and not (isinstance(expect[key], str) and MODE.match(expect[key])):
                problems.append(
                    f'{where}: expect.{key} must be a quoted octal mode such as "0644", not {expect[key]!r}'
                )
        for key in ("content", "content_not"):
            if key in expect:
                try:
                    re.compile(str(expect[key]))
                except re.error as exc:
                    problems.append(f"{where}: expect.{key} is not a valid regular expression: {exc}")
        paths = _paths(target)
        if not paths or not all(_valid_path(p) for p in paths):
            problems.append(f"{where}: file needs an absolute path (or a list of them)")
        if expect.get("when_missing", "fail") not in ("pass", "fail", "skip"):
            problems.append(f"{where}: expect.when_missing must be pass, fail or skip")
        return problems

    def facts(self, check: Check) -> list[Fact]:
        paths = _paths(check.target)
        facts: list[Fact] = [FileFact(p) for p in paths]
        for key, table in (("owner", "/etc/passwd"), ("group", "/etc/group")):
            if key in check.expect and not str(check.expect[key]).isdigit():
                facts.append(TableFact(table))  # names are resolved with the container's own tables
        for key in ("content", "content_not"):
            if key in check.expect:
                facts += [GrepFact(p, str(check.expect[key])) for p in paths]
        return facts

    def evaluate(self, check: Check, env: Env) -> list[Outcome]:
        e = check.expect
        users, groups = table_of(env, "/etc/passwd"), table_of(env, "/etc/group")
        out: list[Outcome] = []
        for path in _paths(check.target):
            res = f"File {path}"
            section = env.section(FileFact(path))
            if section is None:
                out.append(not_gathered(f"{res} is examined", "file"))
                continue
            info = parse_file(section.payload)
            if why := cut(section) or {
                "unresolvable": "its path cannot be resolved inside the container (a link loop)",
                "malformed": "the scan's answer about it is malformed",
            }.get(info.state):
                out.append(Outcome("error", f"{res} is examined", why, "file"))
                continue
            if info.state == "unknown":
                why = "cannot examine it: a parent directory is not readable in the container"
                out.append(Outcome("skipped", f"{res} is examined", why, "file"))
                continue
            if info.state == "missing":
                out += self._missing(res, e)
                continue
            f = _File(path, info, env, users, groups)
            out += [
                getattr(self, f"expect_{key}")(f, want, check) for key, want in e.items() if key not in self.modifiers
            ]
        return out

    def _missing(self, res: str, e: dict[str, Any]) -> list[Outcome]:
        out = []
        if "exists" in e:
            desc = f"{res} is expected {'to' if e['exists'] else 'not to'} exist"
            out.append(ok(not e["exists"], desc, "it does not exist", "file"))
        others = [k for k in e if k not in ("exists", *self.modifiers)]
        if others:
            policy = e.get("when_missing", "fail")
            desc = f"{res} {', '.join(others)}"
            if policy == "pass":
                out.append(Outcome("passed", desc, None, "file"))
            elif policy == "skip":
                out.append(Outcome("skipped", desc, "the file does not exist", "file"))
            else:
                out.append(Outcome("failed", desc, "the file does not exist", "file"))
        return out

    def expect_exists(self, f: _File, want: Any, check: Check) -> Outcome:
        return ok(bool(want), f"{f.res} is expected {'to' if want else 'not to'} exist", "it exists", "file")

    def expect_type(self, f: _File, want: Any, check: Check) -> Outcome:
        return ok(f.kind == want, f"{f.res} type is expected to be {want}", f"it is a {f.kind}", "file")

    def _mode_check(self, f: _File, want: Any, exact: bool) -> Outcome:
        if f.effective_mode is None:
            return Outcome("failed", f"{f.res} mode", "the symlink's target does not exist", "file")
        wanted = int(str(want), 8)
        have = stat.S_IMODE(f.effective_mode)
        if exact:
            return ok(have == wanted, f"{f.res} mode is expected to be {want}", f"mode is {_mode(have)}", "file")
        extra = have & ~wanted
        return ok(
            extra == 0,
            f"{f.res} mode is expected to be no more permissive than {want}",
            f"mode is {_mode(have)} (extra bits {format(extra, '04o')})",
            "file",
        )

    def expect_mode(self, f: _File, want: Any, check: Check) -> Outcome:
        return self._mode_check(f, want, exact=True)

    def expect_mode_max(self, f: _File, want: Any, check: Check) -> Outcome:
        return self._mode_check(f, want, exact=False)

    def _id_check(self, f: _File, want: Any, key: str) -> Outcome:
        table = f.users if key == "owner" else f.groups
        number = f.info.uid if key == "owner" else f.info.gid
        desc = f"{f.res} {key} is expected to be {want}"
        if not str(want).isdigit() and (table is None or table.state != "OK"):
            why = "the account table that names its owner could not be read whole"
            return Outcome("error", desc, why, "file")
        name = id_names(table).get(number, str(number))
        match = str(want) == str(number) if str(want).isdigit() else str(want) == name
        return ok(match, desc, f"{key} is {name} ({number})", "file")

    def expect_owner(self, f: _File, want: Any, check: Check) -> Outcome:
        return self._id_check(f, want, "owner")

    def expect_group(self, f: _File, want: Any, check: Check) -> Outcome:
        return self._id_check(f, want, "group")

    def expect_size_max(self, f: _File, want: Any, check: Check) -> Outcome:
        return ok(
            f.info.size <= int(want),
            f"{f.res} size is expected to be at most {want} bytes",
            f"size is {f.info.size} bytes",
            "file",
        )

    def expect_link_target(self, f: _File, want: Any, check: Check) -> Outcome:
        return ok(
            f.info.link_target == want,
            f"{f.res} is expected to link to {want}",
            f"it links to {f.info.link_target!r}" if f.info.link_target else "it is not a symlink",
            "file",
        )

    def _content(self, f: _File, want: Any, negate: bool) -> Outcome:
        grep = f.env.section(GrepFact(f.path, str(want)))
        desc = f"{f.res} content is expected to {'not match' if negate else 'match'} /{want}/"
        if grep is None:
            return not_gathered(desc, "file")
        answer = grep.payload.strip()
        if why := cut(grep):
            return Outcome("error", desc, why, "file")
        if answer not in (b"0", b"1"):
            if answer == b"U":
                return Outcome("skipped", desc, "the content could not be read in the container", "file")
            return state_outcome(answer.decode(errors="replace") or "?", "its content", desc, "file")
        matched = answer == b"1"
        return ok(matched != negate, desc, "it matches" if matched else "it does not match", "file")

    def expect_content(self, f: _File, want: Any, check: Check) -> Outcome:
        return self._content(f, want, negate=False)

    def expect_content_not(self, f: _File, want: Any, check: Check) -> Outcome:
        return self._content(f, want, negate=True)
