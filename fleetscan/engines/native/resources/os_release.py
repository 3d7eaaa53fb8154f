"""os_release: which distribution and release the container says it is (/etc/os-release)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..facts import Fact
from . import Check, Env, Missing, Outcome, Resource, cut, listing, not_gathered, ok, state_outcome

RELEASE_BYTES = 64 << 10


@dataclass(frozen=True)
class OsReleaseFact(Fact):
    def key(self) -> str:
        return "os_release"

    def limit(self) -> int:
        return RELEASE_BYTES + 16

    def script(self) -> str:
        limit = RELEASE_BYTES
        return f"""reg /etc/os-release {limit} || {{ [ "$st" = M ] && reg /usr/lib/os-release {limit}; }}
if [ -z "$st" ]; then echo OK; head -c {limit} "$p"; else echo "$st"; fi"""


def release_state(payload: bytes) -> str:
    return payload.split(b"\n", 1)[0].decode(errors="replace").strip() or "?"


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


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text))


_NONE = "there is no /etc/os-release or /usr/lib/os-release"


class OsReleaseResource(Resource):
    name = "os_release"

    def facts(self, check: Check) -> list[Fact]:
        return [OsReleaseFact()]

    def state(self, check: Check, env: Env) -> Any:
        desc = "os-release is examined"
        section = env.section(OsReleaseFact())
        if section is None:
            return Missing([not_gathered(desc, "os_release")])
        if why := cut(section):
            return Missing([Outcome("error", desc, f"os-release: {why}", "os_release")])
        state = release_state(section.payload)
        if state not in ("OK", "M", "U"):  # a link loop, a device, a huge file: not a missing release
            return Missing([state_outcome(state, "/etc/os-release", desc, "os_release")])
        return parse_os_release(section.payload)

    def expect_exists(self, values: dict[str, str] | None, want: Any, check: Check) -> Outcome:
        return ok(
            (values is not None) == bool(want),
            f"os-release is expected {'to' if want else 'not to'} exist",
            "it does not exist" if values is None else "it exists",
            "os_release",
        )

    def expect_id_in(self, values: dict[str, str] | None, want: Any, check: Check) -> Outcome:
        if values is None:
            return Outcome("failed", "os-release id_in", _NONE, "os_release")
        os_id = values.get("ID", "")
        return ok(
            os_id in want, f"the OS is expected to be one of {listing(list(want))}", f"it is {os_id!r}", "os_release"
        )

    def expect_id_not_in(self, values: dict[str, str] | None, want: Any, check: Check) -> Outcome:
        if values is None:
            return Outcome("failed", "os-release id_not_in", _NONE, "os_release")
        os_id = values.get("ID", "")
        return ok(
            os_id not in want, f"the OS is expected not to be {listing(list(want))}", f"it is {os_id!r}", "os_release"
        )

    def expect_min_version(self, values: dict[str, str] | None, want: Any, check: Check) -> Outcome:
        if values is None:
            return Outcome("failed", "os-release min_version", _NONE, "os_release")
        os_id = values.get("ID", "")
        minimum = (want or {}).get(os_id)
        have = values.get("VERSION_ID", "")
        desc = f"the {os_id or 'unknown'} release is expected to be supported (at least {minimum})"
        if minimum is None:
            return Outcome("skipped", desc, f"no minimum release is set for {os_id!r}", "os_release")
        return ok(_version_tuple(have) >= _version_tuple(str(minimum)), desc, f"it is {have!r}", "os_release")
