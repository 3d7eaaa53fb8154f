"""users, groups and login: the account tables (/etc/passwd, /etc/group) and the password states of
/etc/shadow, reduced to one state per user inside the container (the hashes never leave it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..facts import Fact, q
from . import Check, Env, Missing, Outcome, Resource, listing, not_gathered, ok

NO_LOGIN_SHELLS = {"", "/sbin/nologin", "/usr/sbin/nologin", "/bin/false", "/usr/bin/false", "/bin/sync"}


@dataclass(frozen=True)
class TableFact(Fact):
    """/etc/passwd or /etc/group (no secrets in either)."""

    path: str

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


def id_names(table: list[list[str]] | None, column: int = 2) -> dict[int, str]:
    out: dict[int, str] = {}
    for row in table or []:
        if len(row) > column and row[column].isdigit():
            out.setdefault(int(row[column]), row[0])
    return out


@dataclass(frozen=True)
class ShadowFact(Fact):
    """One state per user (empty, locked, set): the hashes never leave the container."""

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


@dataclass(frozen=True)
class _Table:
    rows: list[list[str]]
    noun: str  # user or group
    resource: str

    @property
    def names(self) -> list[str]:
        return [r[0] for r in self.rows]

    @property
    def ids(self) -> list[tuple[str, int]]:
        return [(r[0], int(r[2])) for r in self.rows if len(r) > 2 and r[2].isdigit()]


class _TableResource(Resource):
    path = ""
    noun = ""

    def facts(self, check: Check) -> list[Fact]:
        return [TableFact(self.path)]

    def state(self, check: Check, env: Env) -> Any:
        section = env.section(TableFact(self.path))
        if section is None:
            return Missing([not_gathered(f"{self.path} is examined", self.name)])
        rows = parse_table(section.payload)
        if rows is None:
            reason = f"{self.path} does not exist or cannot be read"
            return Missing([Outcome("skipped", f"{self.path} is examined", reason, self.name)])
        return _Table(rows, self.noun, self.name)

    def _zero_only(self, t: _Table, want: Any) -> Outcome:
        zero = [n for n, i in t.ids if i == 0 and n not in want]
        return ok(
            not zero,
            f"{t.noun}s with id 0 are expected to be only {listing(list(want))}",
            f"also id 0: {listing(zero)}",
            t.resource,
        )

    def _unique(self, t: _Table, want: Any) -> Outcome:
        seen: dict[int, str] = {}
        dupes = []
        for n, i in t.ids:
            if i in seen:
                dupes.append(f"{n} and {seen[i]} ({i})")
            seen.setdefault(i, n)
        return ok(
            not dupes or not want, f"{t.noun} ids are expected to be unique", f"shared: {listing(dupes)}", t.resource
        )

    def expect_absent(self, t: _Table, want: Any, check: Check) -> Outcome:
        found = [n for n in want if n in t.names]
        return ok(
            not found,
            f"{t.noun}s {listing(list(want))} are expected to be absent",
            f"present: {listing(found)}",
            t.resource,
        )

    def expect_present(self, t: _Table, want: Any, check: Check) -> Outcome:
        missing = [n for n in want if n not in t.names]
        return ok(
            not missing,
            f"{t.noun}s {listing(list(want))} are expected to exist",
            f"missing: {listing(missing)}",
            t.resource,
        )


class UsersResource(_TableResource):
    name = "users"
    path = "/etc/passwd"
    noun = "user"

    def expect_uid_zero_only(self, t: _Table, want: Any, check: Check) -> Outcome:
        return self._zero_only(t, want)

    def expect_unique_uids(self, t: _Table, want: Any, check: Check) -> Outcome:
        return self._unique(t, want)

    def expect_login_shells_only(self, t: _Table, want: Any, check: Check) -> Outcome:
        shells = [f"{r[0]} ({r[6]})" for r in t.rows if len(r) > 6 and r[6] not in NO_LOGIN_SHELLS and r[0] not in want]
        return ok(
            not shells,
            f"only {listing(list(want)) or 'no users'} are expected to have a login shell",
            f"login shells: {listing(shells)}",
            t.resource,
        )


class GroupsResource(_TableResource):
    name = "groups"
    path = "/etc/group"
    noun = "group"

    def expect_gid_zero_only(self, t: _Table, want: Any, check: Check) -> Outcome:
        return self._zero_only(t, want)

    def expect_unique_gids(self, t: _Table, want: Any, check: Check) -> Outcome:
        return self._unique(t, want)


class LoginResource(Resource):
    name = "login"

    def facts(self, check: Check) -> list[Fact]:
        return [ShadowFact(), TableFact("/etc/passwd")]

    def state(self, check: Check, env: Env) -> Any:
        section = env.section(ShadowFact())
        if section is None:
            return Missing([not_gathered("/etc/shadow is examined", "login")])
        states = parse_shadow(section.payload)
        if states is not None:
            return states
        if section.payload.startswith(b"M"):  # no shadow file: no password can be empty or set
            return Missing([Outcome("passed", f"login {key}", None, "login") for key in check.expect])
        reason = "/etc/shadow cannot be read in the container"
        return Missing([Outcome("skipped", f"login {key}", reason, "login") for key in check.expect])

    def expect_no_empty_passwords(self, states: dict[str, str], want: Any, check: Check) -> Outcome:
        empty = sorted(u for u, s in states.items() if s == "empty")
        return ok(
            not empty or not want,
            "no account is expected to have an empty password",
            f"empty password: {listing(empty)}",
            "login",
        )

    def expect_locked(self, states: dict[str, str], want: Any, check: Check) -> Outcome:
        open_ = [u for u in want if u in states and states[u] != "locked"]
        return ok(
            not open_,
            f"accounts {listing(list(want))} are expected to be locked",
            f"not locked: {listing(open_)}",
            "login",
        )
