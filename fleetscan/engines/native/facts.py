"""What the scan script gathers: each fact is a piece of POSIX sh and a key.

Every piece of data that goes into the script is quoted with shlex.quote; nothing read from the
container is ever evaluated. `$R` is the root prefix of the target's files ("" for /, else e.g.
/proc/42/root). Each resource module defines the facts it needs and parses what they print.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

MAX_LISTING_BYTES = 1 << 20


def q(text: str) -> str:
    return shlex.quote(text)


@dataclass(frozen=True)
class Fact:
    def key(self) -> str:
        raise NotImplementedError

    def script(self) -> str:
        raise NotImplementedError

    def limit(self) -> int:
        """The most bytes this fact may print; more is cut in the container and marked truncated."""
        return MAX_LISTING_BYTES

    @property
    def bounded(self) -> bool:
        """Whether the fact's records are small and fixed in shape (a stat line, a verdict), so an
        honest container never prints more than `limit()`: its section is not cut in the container
        (a `head` process per section is a third of a scan's cost), and whatever more a lying
        container prints is cut here and marked truncated, as is any flood (the exec's own limit)."""
        return False
