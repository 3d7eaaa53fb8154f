"""Native profile resources as plug-ins: each one parses its checks, names the facts the scan script
gathers for them and evaluates the expectations, all in one module.

An expectation is accepted by the profile parser exactly when the resource has an `expect_<name>`
evaluator for it (or lists it in `modifiers`), so nothing can parse and then never be evaluated.
Adding a resource is one module here plus one `register()` line at the bottom.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from ....kube.targets import Target
from ..facts import Fact
from ..script import Section

VALID_ID = 4294967294  # the largest uid or gid; (uid_t)-1 means "no id"


def valid_id(text: str) -> int | None:
    """A uid or gid as the kernel and libc read it, or None (`*`, negative, huge, non-numeric)."""
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        return None
    value = int(text)
    return value if value <= VALID_ID else None


SHOWN = 20  # items listed in a message before "and N more"


@dataclass(frozen=True)
class Check:
    resource: str
    target: Any  # the file path(s) for `file`, the search spec for `search`, else None
    expect: dict[str, Any]
    line: int


@dataclass(frozen=True)
class Outcome:
    status: str  # passed, failed, skipped, error
    code_desc: str
    message: str | None = None
    resource: str | None = None


@dataclass(frozen=True)
class Env:
    """What evaluation sees: the gathered sections, the root prefix and the pod spec facts."""

    section: Callable[[Fact], Section | None]
    root: str
    target: Target | None


@dataclass(frozen=True)
class Missing:
    """A resource's facts are missing or unreadable: these outcomes stand for every expectation."""

    outcomes: list[Outcome]


def listing(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def ok(cond: bool, desc: str, why: str, resource: str) -> Outcome:
    return Outcome("passed", desc, None, resource) if cond else Outcome("failed", desc, why, resource)


def not_gathered(desc: str, resource: str) -> Outcome:
    return Outcome("error", desc, "the fact was not gathered: the scan script did not finish", resource)


# Why the script could not read a file (its state letter), and whether that is a plain "cannot
# tell" (skipped, as InSpec's Not Reviewed) or a sign of a broken or hostile container (error).
STATES = {
    "M": ("skipped", "it does not exist"),
    "U": ("skipped", "it cannot be read by the scanning identity"),
    "N": ("error", "it is not a regular file"),
    "T": ("error", "it is larger than the scan reads"),
    "V": ("error", "it resolves into /proc, /sys or /dev"),
    "X": ("error", "its path cannot be resolved inside the container (a link loop or an unreadable link)"),
}


def cut(section: Section) -> str | None:
    """Why a section cannot be trusted whole, or None."""
    if section.status is None:
        return "its part of the scan did not finish"
    if section.truncated:
        return "its part of the scan was cut at its size limit"
    return None


def state_outcome(state: str, what: str, desc: str, resource: str) -> Outcome:
    status, why = STATES.get(state[:1], ("error", f"the scan answered {state[:20]!r}"))
    return Outcome(status, desc, f"{what}: {why}", resource)


class Resource:
    name: ClassVar[str] = ""
    parameters: ClassVar[tuple[str, ...]] = ()  # keys of a mapping target (search)
    modifiers: ClassVar[tuple[str, ...]] = ()  # expect keys that change others, not evaluated alone

    @classmethod
    def expectations(cls) -> tuple[str, ...]:
        return tuple(sorted(n.removeprefix("expect_") for n in dir(cls) if n.startswith("expect_")))

    def problems(self, target: Any, expect: dict[str, Any], where: str) -> list[str]:
        """Problems with a check beyond unknown expectations (which the parser reports)."""
        return []

    def facts(self, check: Check) -> list[Fact]:
        return []

    def state(self, check: Check, env: Env) -> Any:
        """The parsed facts the evaluators read, or Missing."""
        return None

    def evaluate(self, check: Check, env: Env) -> list[Outcome]:
        state = self.state(check, env)
        if isinstance(state, Missing):
            return state.outcomes
        return [
            getattr(self, f"expect_{key}")(state, want, check)
            for key, want in check.expect.items()
            if key not in self.modifiers
        ]


REGISTRY: dict[str, Resource] = {}


def register(resource: Resource) -> None:
    REGISTRY[resource.name] = resource


from .accounts import GroupsResource, LoginResource, UsersResource  # noqa: E402
from .file import FileResource  # noqa: E402
from .os_release import OsReleaseResource  # noqa: E402
from .packages import PackagesResource  # noqa: E402
from .pod import PodResource  # noqa: E402
from .processes import ProcessesResource  # noqa: E402
from .search import SearchResource  # noqa: E402

for _resource in (
    FileResource(),
    UsersResource(),
    GroupsResource(),
    LoginResource(),
    OsReleaseResource(),
    PackagesResource(),
    SearchResource(),
    ProcessesResource(),
    PodResource(),
):
    register(_resource)
