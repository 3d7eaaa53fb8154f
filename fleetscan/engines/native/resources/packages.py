"""packages: what the package databases list (dpkg `status`, distroless `status.d/`, apk)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..facts import Fact, q
from . import STATES, Check, Env, Missing, Outcome, Resource, cut, listing, not_gathered, ok

DB_BYTES = 8 << 20  # the whole of a large Debian image's dpkg status, with room to spare
ENTRY_BYTES = 1 << 20  # one file of a distroless status.d/
MAX_ENTRIES = 10000

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
    """One "db name version" line per installed package; "! db state" for a database that exists
    but cannot be read whole (a link loop, a device, too large)."""

    def key(self) -> str:
        return "packages"

    def limit(self) -> int:
        return 4 << 20

    def script(self) -> str:
        dpkg, apk = q(_DPKG_AWK), q(_APK_AWK)
        return f"""if reg /var/lib/dpkg/status {DB_BYTES}; then head -c {DB_BYTES} "$p" | awk -v F=dpkg {dpkg}
elif [ "$st" != M ]; then echo "! dpkg $st"; fi
if at /var/lib/dpkg/status.d && [ -d "$p" ]; then n=0
  for f in "$p"/*; do
    case $f in *.md5sums|"$p/*") continue;; esac
    n=$((n+1)); [ "$n" -gt {MAX_ENTRIES} ] && {{ echo "! status.d T"; break; }}
    if reg "/var/lib/dpkg/status.d/${{f##*/}}" {ENTRY_BYTES}; then head -c {ENTRY_BYTES} "$p" | awk -v F=status.d {dpkg}
    elif [ "$st" != M ]; then echo "! status.d $st"; fi
  done
elif [ "$p" = X ]; then echo "! status.d X"; fi
if reg /lib/apk/db/installed {DB_BYTES}; then head -c {DB_BYTES} "$p" | awk {apk}
elif [ "$st" != M ]; then echo "! apk $st"; fi"""


def parse_packages(payload: bytes) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """(installed packages as (db, name, version), (database, state) of those not read whole)."""
    out: list[tuple[str, str, str]] = []
    broken: list[tuple[str, str]] = []
    for line in payload.decode(errors="replace").splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "!":
            broken.append((parts[1], parts[2][:1]))
        elif len(parts) == 3:
            out.append((parts[0], parts[1], parts[2]))
    return out, broken


class PackagesResource(Resource):
    name = "packages"

    def facts(self, check: Check) -> list[Fact]:
        return [PackagesFact()]

    def state(self, check: Check, env: Env) -> Any:
        desc = "packages are examined"
        section = env.section(PackagesFact())
        if section is None:
            return Missing([not_gathered(desc, "packages")])
        if why := cut(section):
            return Missing([Outcome("error", desc, f"the package databases: {why}", "packages")])
        packages, broken = parse_packages(section.payload)
        if broken:  # what it would list is unknown: neither absent nor present can be said
            status = "skipped" if all(state == "U" for _, state in broken) else "error"
            why = listing([f"{db}: {STATES.get(state, ('', state))[1]}" for db, state in broken])
            return Missing([Outcome(status, desc, f"cannot read {why}", "packages")])
        return packages

    @staticmethod
    def _names(packages: list[tuple[str, str, str]]) -> dict[str, str]:
        return {name: f"{name} {version} ({db})" for db, name, version in packages}

    def expect_absent(self, packages: list[tuple[str, str, str]], want: Any, check: Check) -> Outcome:
        names = self._names(packages)
        found = [names[n] for n in want if n in names]
        return ok(
            not found,
            f"packages {listing(list(want))} are expected to be absent",
            f"installed: {listing(found)}",
            "packages",
        )

    def expect_present(self, packages: list[tuple[str, str, str]], want: Any, check: Check) -> Outcome:
        names = self._names(packages)
        missing = [n for n in want if n not in names]
        return ok(
            not missing,
            f"packages {listing(list(want))} are expected to be installed",
            f"missing: {listing(missing)}",
            "packages",
        )

    def expect_database(self, packages: list[tuple[str, str, str]], want: Any, check: Check) -> Outcome:
        dbs = sorted({db for db, _, _ in packages})
        return ok(
            bool(dbs) == bool(want),
            "a package database is expected to list the installed software",
            "no dpkg, status.d or apk database was found" if not dbs else f"found: {', '.join(dbs)}",
            "packages",
        )
