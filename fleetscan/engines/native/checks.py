"""Evaluate checks against gathered facts: each expectation becomes one result, as in InSpec."""

from __future__ import annotations

import fnmatch
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...kube.targets import Target
from .facts import (
    FileFact,
    GrepFact,
    OsReleaseFact,
    PackagesFact,
    ProcessesFact,
    SearchFact,
    ShadowFact,
    TableFact,
    parse_file,
    parse_os_release,
    parse_packages,
    parse_processes,
    parse_search,
    parse_shadow,
    parse_table,
)
from .profile import Check
from .script import Section

NO_LOGIN_SHELLS = {"", "/sbin/nologin", "/usr/sbin/nologin", "/bin/false", "/usr/bin/false", "/bin/sync"}
SHOWN = 20  # items listed in a message before "and N more"


@dataclass(frozen=True)
class Outcome:
    status: str  # passed, failed, skipped, error
    code_desc: str
    message: str | None = None
    resource: str | None = None


Facts = Callable[[Any], Section | None]  # fact -> its gathered section (None: not gathered)


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def _ok(cond: bool, desc: str, why: str, resource: str) -> Outcome:
    return Outcome("passed", desc, None, resource) if cond else Outcome("failed", desc, why, resource)


def _not_gathered(desc: str, resource: str) -> Outcome:
    return Outcome("skipped", desc, "the fact was not gathered (the scan script did not finish)", resource)


def _mode(value: int) -> str:
    return format(stat.S_IMODE(value), "04o")


def _names(table: list[list[str]] | None, column: int = 2) -> dict[int, str]:
    out: dict[int, str] = {}
    for row in table or []:
        if len(row) > column and row[column].isdigit():
            out.setdefault(int(row[column]), row[0])
    return out


# -- file ----------------------------------------------------------------------------------------------
def _file(check: Check, facts: Facts) -> list[Outcome]:
    e = check.expect
    paths = check.target if isinstance(check.target, list) else [check.target]
    users = parse_table(sec.payload) if (sec := facts(TableFact("/etc/passwd"))) else None
    groups = parse_table(sec.payload) if (sec := facts(TableFact("/etc/group"))) else None
    out: list[Outcome] = []
    for path in paths:
        res = f"File {path}"
        section = facts(FileFact(path))
        if section is None:
            out.append(_not_gathered(f"{res} is examined", "file"))
            continue
        info = parse_file(section.payload)
        if info.state == "unknown":
            out.append(
                Outcome(
                    "skipped",
                    f"{res} is examined",
                    "cannot examine it: a parent directory is not readable in the container",
                    "file",
                )
            )
            continue
        if info.state == "missing":
            if "exists" in e:
                out.append(
                    _ok(
                        not e["exists"],
                        f"{res} is expected {'to' if e['exists'] else 'not to'} exist",
                        "it does not exist",
                        "file",
                    )
                )
            others = [k for k in e if k not in ("exists", "when_missing")]
            if others:
                policy = e.get("when_missing", "fail")
                desc = f"{res} {', '.join(others)}"
                if policy == "pass":
                    out.append(Outcome("passed", desc, None, "file"))
                elif policy == "skip":
                    out.append(Outcome("skipped", desc, "the file does not exist", "file"))
                else:
                    out.append(Outcome("failed", desc, "the file does not exist", "file"))
            continue
        kind = (
            "symlink"
            if stat.S_ISLNK(info.mode)
            else "directory"
            if stat.S_ISDIR(info.mode)
            else "file"
            if stat.S_ISREG(info.mode)
            else "other"
        )
        effective = info.target_mode if kind == "symlink" else info.mode
        for key, want in e.items():
            if key == "exists":
                out.append(
                    _ok(bool(want), f"{res} is expected {'to' if want else 'not to'} exist", "it exists", "file")
                )
            elif key == "type":
                out.append(_ok(kind == want, f"{res} type is expected to be {want}", f"it is a {kind}", "file"))
            elif key in ("mode", "mode_max"):
                if effective is None:
                    out.append(Outcome("failed", f"{res} mode", "the symlink's target does not exist", "file"))
                    continue
                wanted = int(str(want), 8)
                have = stat.S_IMODE(effective)
                if key == "mode":
                    out.append(
                        _ok(have == wanted, f"{res} mode is expected to be {want}", f"mode is {_mode(have)}", "file")
                    )
                else:
                    extra = have & ~wanted
                    out.append(
                        _ok(
                            extra == 0,
                            f"{res} mode is expected to be no more permissive than {want}",
                            f"mode is {_mode(have)} (extra bits {format(extra, '04o')})",
                            "file",
                        )
                    )
            elif key in ("owner", "group"):
                table = users if key == "owner" else groups
                number = info.uid if key == "owner" else info.gid
                name = _names(table).get(number, str(number))
                match = str(want) == str(number) if str(want).isdigit() else str(want) == name
                out.append(_ok(match, f"{res} {key} is expected to be {want}", f"{key} is {name} ({number})", "file"))
            elif key == "size_max":
                out.append(
                    _ok(
                        info.size <= int(want),
                        f"{res} size is expected to be at most {want} bytes",
                        f"size is {info.size} bytes",
                        "file",
                    )
                )
            elif key == "link_target":
                out.append(
                    _ok(
                        info.link_target == want,
                        f"{res} is expected to link to {want}",
                        f"it links to {info.link_target!r}" if info.link_target else "it is not a symlink",
                        "file",
                    )
                )
            elif key in ("content", "content_not"):
                grep = facts(GrepFact(path, str(want)))
                verb = "match" if key == "content" else "not match"
                desc = f"{res} content is expected to {verb} /{want}/"
                result = grep.payload.strip() if grep else b""
                if result not in (b"0", b"1"):
                    out.append(Outcome("skipped", desc, "the content could not be read in the container", "file"))
                else:
                    matched = result == b"1"
                    out.append(
                        _ok(
                            matched == (key == "content"),
                            desc,
                            "it matches" if matched else "it does not match",
                            "file",
                        )
                    )
    return out


# -- accounts -------------------------------------------------------------------------------------------
def _users(check: Check, facts: Facts, path: str, noun: str) -> list[Outcome]:
    section = facts(TableFact(path))
    resource = "users" if noun == "user" else "groups"
    if section is None:
        return [_not_gathered(f"{path} is examined", resource)]
    rows = parse_table(section.payload)
    if rows is None:
        return [Outcome("skipped", f"{path} is examined", f"{path} does not exist or cannot be read", resource)]
    names = [r[0] for r in rows]
    ids = [(r[0], int(r[2])) for r in rows if len(r) > 2 and r[2].isdigit()]
    out = []
    for key, want in check.expect.items():
        if key in ("uid_zero_only", "gid_zero_only"):
            zero = [n for n, i in ids if i == 0 and n not in want]
            out.append(
                _ok(
                    not zero,
                    f"{noun}s with id 0 are expected to be only {_listing(list(want))}",
                    f"also id 0: {_listing(zero)}",
                    resource,
                )
            )
        elif key == "absent":
            found = [n for n in want if n in names]
            out.append(
                _ok(
                    not found,
                    f"{noun}s {_listing(list(want))} are expected to be absent",
                    f"present: {_listing(found)}",
                    resource,
                )
            )
        elif key == "present":
            missing = [n for n in want if n not in names]
            out.append(
                _ok(
                    not missing,
                    f"{noun}s {_listing(list(want))} are expected to exist",
                    f"missing: {_listing(missing)}",
                    resource,
                )
            )
        elif key in ("unique_uids", "unique_gids"):
            seen: dict[int, str] = {}
            dupes = []
            for n, i in ids:
                if i in seen:
                    dupes.append(f"{n} and {seen[i]} ({i})")
                seen.setdefault(i, n)
            out.append(_ok(not dupes, f"{noun} ids are expected to be unique", f"shared: {_listing(dupes)}", resource))
        elif key == "login_shells_only":
            shells = [
                f"{r[0]} ({r[6]})" for r in rows if len(r) > 6 and r[6] not in NO_LOGIN_SHELLS and r[0] not in want
            ]
            out.append(
                _ok(
                    not shells,
                    f"only {_listing(list(want)) or 'no users'} are expected to have a login shell",
                    f"login shells: {_listing(shells)}",
                    resource,
                )
            )
    return out


def _login(check: Check, facts: Facts) -> list[Outcome]:
    section = facts(ShadowFact())
    if section is None:
        return [_not_gathered("/etc/shadow is examined", "login")]
    states = parse_shadow(section.payload)
    text = section.payload.decode(errors="replace")
    out = []
    for key, want in check.expect.items():
        if states is None:
            if text.startswith("M"):  # no shadow file: no password can be empty or set
                out.append(Outcome("passed", f"login {key}", None, "login"))
            else:
                out.append(Outcome("skipped", f"login {key}", "/etc/shadow cannot be read in the container", "login"))
            continue
        if key == "no_empty_passwords":
            empty = sorted(u for u, s in states.items() if s == "empty")
            out.append(
                _ok(
                    not empty,
                    "no account is expected to have an empty password",
                    f"empty password: {_listing(empty)}",
                    "login",
                )
            )
        elif key == "locked":
            open_ = [u for u in want if u in states and states[u] != "locked"]
            out.append(
                _ok(
                    not open_,
                    f"accounts {_listing(list(want))} are expected to be locked",
                    f"not locked: {_listing(open_)}",
                    "login",
                )
            )
    return out


# -- system ---------------------------------------------------------------------------------------------
def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text))


def _os_release(check: Check, facts: Facts) -> list[Outcome]:
    section = facts(OsReleaseFact())
    if section is None:
        return [_not_gathered("os-release is examined", "os_release")]
    values = parse_os_release(section.payload)
    os_id = (values or {}).get("ID", "")
    out = []
    for key, want in check.expect.items():
        if key == "exists":
            out.append(
                _ok(
                    (values is not None) == bool(want),
                    f"os-release is expected {'to' if want else 'not to'} exist",
                    "it does not exist" if values is None else "it exists",
                    "os_release",
                )
            )
        elif values is None:
            out.append(
                Outcome(
                    "failed", f"os-release {key}", "there is no /etc/os-release or /usr/lib/os-release", "os_release"
                )
            )
        elif key == "id_in":
            out.append(
                _ok(
                    os_id in want,
                    f"the OS is expected to be one of {_listing(list(want))}",
                    f"it is {os_id!r}",
                    "os_release",
                )
            )
        elif key == "id_not_in":
            out.append(
                _ok(
                    os_id not in want,
                    f"the OS is expected not to be {_listing(list(want))}",
                    f"it is {os_id!r}",
                    "os_release",
                )
            )
        elif key == "min_version":
            minimum = (want or {}).get(os_id)
            have = values.get("VERSION_ID", "")
            desc = f"the {os_id or 'unknown'} release is expected to be supported (at least {minimum})"
            if minimum is None:
                out.append(Outcome("skipped", desc, f"no minimum release is set for {os_id!r}", "os_release"))
            else:
                out.append(
                    _ok(_version_tuple(have) >= _version_tuple(str(minimum)), desc, f"it is {have!r}", "os_release")
                )
    return out


def _packages(check: Check, facts: Facts) -> list[Outcome]:
    section = facts(PackagesFact())
    if section is None:
        return [_not_gathered("packages are examined", "packages")]
    packages = parse_packages(section.payload)
    names = {name: f"{name} {version} ({db})" for db, name, version in packages}
    out = []
    for key, want in check.expect.items():
        if key == "absent":
            found = [names[n] for n in want if n in names]
            out.append(
                _ok(
                    not found,
                    f"packages {_listing(list(want))} are expected to be absent",
                    f"installed: {_listing(found)}",
                    "packages",
                )
            )
        elif key == "present":
            missing = [n for n in want if n not in names]
            out.append(
                _ok(
                    not missing,
                    f"packages {_listing(list(want))} are expected to be installed",
                    f"missing: {_listing(missing)}",
                    "packages",
                )
            )
        elif key == "database":
            dbs = sorted({db for db, _, _ in packages})
            out.append(
                _ok(
                    bool(dbs) == bool(want),
                    "a package database is expected to list the installed software",
                    "no dpkg, status.d or apk database was found" if not dbs else f"found: {', '.join(dbs)}",
                    "packages",
                )
            )
    return out


def _search(check: Check, facts: Facts, root: str) -> list[Outcome]:
    spec = check.target or {}
    fact = SearchFact(
        tuple(spec.get("roots") or ["/"]),
        spec["find"],
        tuple(spec.get("exclude") or ()),
        str(spec.get("pattern") or ""),
        int(spec.get("max_file_kb") or 1024),
    )
    what = {
        "world_writable": "world-writable files",
        "setuid": "setuid files",
        "setgid": "setgid files",
        "unowned": "files without a known owner or group",
        "private_keys": "files holding a private key",
        "pattern": f"files matching /{fact.pattern}/",
    }[fact.find]
    desc = f"{what} under {', '.join(fact.roots)}"
    section = facts(fact)
    if section is None:
        return [_not_gathered(desc, "search")]
    parsed = parse_search(section.payload, "" if root in ("", "/") else root.rstrip("/"), fact.find)
    if parsed is None:
        return [Outcome("skipped", desc, "`find` is not available where the scan runs", "search")]
    paths = sorted(set(parsed[0]))
    limit = int(spec.get("max_results") or 1000)
    note = " (the listing was cut at its size limit)" if section.truncated or len(paths) > limit else ""
    paths = paths[:limit]
    out = []
    for key, want in check.expect.items():
        if key == "none":
            out.append(
                _ok(
                    not paths if want else True,
                    f"no {desc} are expected",
                    f"found {len(paths)}: {_listing(paths)}{note}",
                    "search",
                )
            )
        elif key == "max":
            out.append(
                _ok(
                    len(paths) <= int(want),
                    f"at most {want} {desc} are expected",
                    f"found {len(paths)}: {_listing(paths)}{note}",
                    "search",
                )
            )
        elif key == "only":
            extra = [p for p in paths if not any(fnmatch.fnmatchcase(p, g) for g in want)]
            out.append(
                _ok(
                    not extra,
                    f"{desc} are expected to be only {_listing(list(want))}",
                    f"also: {_listing(extra)}{note}",
                    "search",
                )
            )
    return out


def _processes(check: Check, facts: Facts) -> list[Outcome]:
    section = facts(ProcessesFact())
    if section is None:
        return [_not_gathered("processes are examined", "processes")]
    procs = parse_processes(section.payload)
    if procs is None:
        return [Outcome("skipped", "processes are examined", "/proc cannot be read where the scan runs", "processes")]
    out = []
    for key, want in check.expect.items():
        if key == "not_root":
            root = [f"{p.name} ({p.pid})" for p in procs if p.uid == 0]
            out.append(
                _ok(
                    not root or not want,
                    "no process is expected to run as root",
                    f"running as root: {_listing(root)}",
                    "processes",
                )
            )
        elif key == "absent":
            found = [f"{p.name} ({p.pid})" for p in procs if p.name in want]
            out.append(
                _ok(
                    not found,
                    f"processes {_listing(list(want))} are expected not to run",
                    f"running: {_listing(found)}",
                    "processes",
                )
            )
        elif key == "max":
            out.append(
                _ok(
                    len(procs) <= int(want),
                    f"at most {want} processes are expected",
                    f"{len(procs)} are running",
                    "processes",
                )
            )
    return out


def _pod(check: Check, target: Target | None) -> list[Outcome]:
    if target is None:
        return [
            Outcome("skipped", "the pod spec is examined", "no pod spec: scanned without the Kubernetes API", "pod")
        ]
    sec = target.security
    facts: dict[str, tuple[bool, str]] = {
        "run_as_non_root": (
            sec.run_as_non_root or (sec.run_as_user not in (None, 0)),
            f"runAsNonRoot={sec.run_as_non_root}, runAsUser={sec.run_as_user}",
        ),
        "privileged": (sec.privileged, f"privileged={sec.privileged}"),
        "allow_privilege_escalation": (
            sec.allow_privilege_escalation is not False,
            f"allowPrivilegeEscalation={sec.allow_privilege_escalation}",
        ),
        "read_only_root_filesystem": (
            sec.read_only_root_filesystem,
            f"readOnlyRootFilesystem={sec.read_only_root_filesystem}",
        ),
        "host_path": (bool(target.host_path_volumes), f"hostPath volumes: {_listing(list(target.host_path_volumes))}"),
    }
    out = []
    for key, want in check.expect.items():
        desc = f"container {target.container} securityContext {key}"
        if key in facts:
            have, shown = facts[key]
            out.append(_ok(have == bool(want), f"{desc} is expected to be {str(bool(want)).lower()}", shown, "pod"))
        elif key == "capabilities_added_only":
            extra = [c for c in sec.added_capabilities if c not in want]
            out.append(
                _ok(
                    not extra,
                    f"{desc}: only {_listing(list(want)) or 'no'} capabilities may be added",
                    f"added: {_listing(extra)}",
                    "pod",
                )
            )
        elif key == "capabilities_dropped_include":
            missing = [c for c in want if c not in sec.dropped_capabilities]
            out.append(
                _ok(
                    not missing,
                    f"{desc}: capabilities {_listing(list(want))} are expected to be dropped",
                    f"not dropped: {_listing(missing)}",
                    "pod",
                )
            )
    return out


def evaluate(check: Check, facts: Facts, root: str, target: Target | None) -> list[Outcome]:
    if check.resource == "file":
        return _file(check, facts)
    if check.resource == "users":
        return _users(check, facts, "/etc/passwd", "user")
    if check.resource == "groups":
        return _users(check, facts, "/etc/group", "group")
    if check.resource == "login":
        return _login(check, facts)
    if check.resource == "os_release":
        return _os_release(check, facts)
    if check.resource == "packages":
        return _packages(check, facts)
    if check.resource == "search":
        return _search(check, facts, root)
    if check.resource == "processes":
        return _processes(check, facts)
    return _pod(check, target)
