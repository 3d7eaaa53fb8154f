"""packages: what the package databases list (dpkg `status`, distroless `status.d/`, apk)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..facts import Fact, q
from . import Check, Env, Missing, Outcome, Resource, listing, not_gathered, ok

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
    """One "db name version" line per installed package."""

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


class PackagesResource(Resource):
    name = "packages"

    def facts(self, check: Check) -> list[Fact]:
        return [PackagesFact()]

    def state(self, check: Check, env: Env) -> Any:
        section = env.section(PackagesFact())
        if section is None:
            return Missing([not_gathered("packages are examined", "packages")])
        return parse_packages(section.payload)

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
