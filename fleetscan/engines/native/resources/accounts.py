"""users, groups and login: the account tables (/etc/passwd, /etc/group) and the password states of
/etc/shadow. Only the fields the checks need leave the container (name, id, shell: never the
password field, whatever file a link points at), and /etc/shadow is reduced to one state per user
inside it, so no hash ever leaves."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from ..facts import Fact, q
from . import Check, Env, Missing, Outcome, Resource, cut, listing, not_gathered, ok, state_outcome, valid_id

NO_LOGIN_SHELLS = {"", "/sbin/nologin", "/usr/sbin/nologin", "/bin/false", "/usr/bin/false", "/bin/sync"}
TABLE_BYTES = 1 << 20


@dataclass(frozen=True)
class TableFact(Fact):
    """/etc/passwd or /etc/group as "name:id:shell" lines."""

    path: str

    def key(self) -> str:
        return f"table:{self.path}"

    def limit(self) -> int:
        return TABLE_BYTES + 4096

    def script(self) -> str:
        return f"""if reg {q(self.path)} {TABLE_BYTES}; then echo OK
  head -c {TABLE_BYTES} "$p" | awk -F: '{{print $1 ":" $3 ":" $7}}'
else echo "$st"; fi"""


@dataclass(frozen=True)
class Row:
    name: str
    id_text: str
    shell: str
    id: int | None  # valid_id(id_text)


@dataclass(frozen=True)
class Table:
    state: str  # OK, or why it could not be read (see resources.STATES)
    rows: tuple[Row, ...] = ()


@functools.lru_cache(maxsize=16)  # several checks read each table, and replicas share theirs
def parse_table(payload: bytes) -> Table:
    text = payload.decode(errors="replace")
    first, _, rest = text.partition("\n")
    if first != "OK":
        return Table(first.strip() or "?")
    rows = []
    for line in rest.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, tail = line.partition(":")
        id_text, _, shell = tail.partition(":")
        rows.append(Row(name, id_text, shell, valid_id(id_text)))
    return Table("OK", tuple(rows))


def id_names(table: Table | None) -> dict[int, str]:
    out: dict[int, str] = {}
    for row in table.rows if table else []:
        if row.id is not None:
            out.setdefault(row.id, row.name)
    return out


def table_of(env: Env, path: str) -> Table | None:
    """The parsed table when it was read whole, else None."""
    section = env.section(TableFact(path))
    if section is None or cut(section):
        return None
    return parse_table(section.payload)


@dataclass(frozen=True)
class ShadowFact(Fact):
    """One state per user (empty, locked, set): the hashes never leave the container."""

    def key(self) -> str:
        return "shadow"

    def limit(self) -> int:
        return TABLE_BYTES + 4096

    def script(self) -> str:
        return f"""if reg /etc/shadow {TABLE_BYTES}; then echo OK
  head -c {TABLE_BYTES} "$p" | awk -F: 'NF>1 {{s=$2; st="set"
    if (s=="") st="empty"; else if (substr(s,1,1)=="!" || substr(s,1,1)=="*") st="locked"
    print $1 " " st}}'
else echo "$st"; fi"""


def parse_shadow(payload: bytes) -> tuple[str, dict[str, str]]:
    text = payload.decode(errors="replace")
    first, _, rest = text.partition("\n")
    if first != "OK":
        return first.strip() or "?", {}
    return "OK", dict(line.split(" ", 1) for line in rest.splitlines() if " " in line)


@dataclass(frozen=True)
class _Accounts:
    table: Table
    noun: str  # user or group
    resource: str

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.table.rows]

    @property
    def invalid(self) -> list[str]:
        return [f"{r.name} ({r.id_text!r})" for r in self.table.rows if r.id is None]


class _TableResource(Resource):
    path = ""
    noun = ""

    def facts(self, check: Check) -> list[Fact]:
        return [TableFact(self.path)]

    def state(self, check: Check, env: Env) -> Any:
        desc = f"{self.path} is examined"
        section = env.section(TableFact(self.path))
        if section is None:
            return Missing([not_gathered(desc, self.name)])
        if why := cut(section):
            return Missing([Outcome("error", desc, f"{self.path}: {why}", self.name)])
        table = parse_table(section.payload)
        if table.state != "OK":
            return Missing([state_outcome(table.state, self.path, desc, self.name)])
        return _Accounts(table, self.noun, self.name)

    def _zero_only(self, t: _Accounts, want: Any) -> Outcome:
        zero = [r.name for r in t.table.rows if r.id == 0 and r.name not in want]
        why = f"also id 0: {listing(zero)}" if zero else f"ids that are not valid: {listing(t.invalid)}"
        return ok(
            not zero and not t.invalid,
            f"{t.noun}s with id 0 are expected to be only {listing(list(want))}",
            why,
            t.resource,
        )

    def _unique(self, t: _Accounts, want: Any) -> Outcome:
        seen: dict[int, str] = {}
        dupes = []
        for r in t.table.rows:
            if r.id is None:
                continue
            if r.id in seen:
                dupes.append(f"{r.name} and {seen[r.id]} ({r.id})")
            seen.setdefault(r.id, r.name)
        why = f"shared: {listing(dupes)}" if dupes else f"ids that are not valid: {listing(t.invalid)}"
        return ok(not want or (not dupes and not t.invalid), f"{t.noun} ids are expected to be unique", why, t.resource)

    def expect_absent(self, t: _Accounts, want: Any, check: Check) -> Outcome:
        found = [n for n in want if n in t.names]
        return ok(
            not found,
            f"{t.noun}s {listing(list(want))} are expected to be absent",
            f"present: {listing(found)}",
            t.resource,
        )

    def expect_present(self, t: _Accounts, want: Any, check: Check) -> Outcome:
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

    def expect_uid_zero_only(self, t: _Accounts, want: Any, check: Check) -> Outcome:
        return self._zero_only(t, want)

    def expect_unique_uids(self, t: _Accounts, want: Any, check: Check) -> Outcome:
        return self._unique(t, want)

    def expect_login_shells_only(self, t: _Accounts, want: Any, check: Check) -> Outcome:
        shells = [
            f"{r.name} ({r.shell})" for r in t.table.rows if r.shell not in NO_LOGIN_SHELLS and r.name not in want
        ]
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

    def expect_gid_zero_only(self, t: _Accounts, want: Any, check: Check) -> Outcome:
        return self._zero_only(t, want)

    def expect_unique_gids(self, t: _Accounts, want: Any, check: Check) -> Outcome:
        return self._unique(t, want)


class LoginResource(Resource):
    name = "login"

    def facts(self, check: Check) -> list[Fact]:
        return [ShadowFact()]

    def state(self, check: Check, env: Env) -> Any:
        section = env.section(ShadowFact())
        if section is None:
            return Missing([not_gathered("/etc/shadow is examined", "login")])
        if why := cut(section):
            return Missing([Outcome("error", f"login {key}", f"/etc/shadow: {why}", "login") for key in check.expect])
        state, states = parse_shadow(section.payload)
        if state == "OK":
            return states
        if state == "M":  # no shadow file: no password can be empty or set
            return Missing([Outcome("passed", f"login {key}", None, "login") for key in check.expect])
        return Missing([state_outcome(state, "/etc/shadow", f"login {key}", "login") for key in check.expect])

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
