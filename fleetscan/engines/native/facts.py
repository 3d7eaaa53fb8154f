"""What the scan script gathers: each fact is a piece of POSIX sh and a key.

Every piece of data that goes into the script is quoted with shlex.quote; nothing read from the
container is ever evaluated. `$R` is the root prefix of the target's files ("" for /, else e.g.
/proc/42/root). Each resource module defines the facts it needs and parses what they print.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import ClassVar

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

    # Whether the fact prints small records of a fixed shape (a stat line, a verdict) and never
    # calls `exit`: it then runs in the scan's own shell, with neither a subshell nor a `head` to cut
    # it (those two processes per section were most of a scan's cost). What more than `limit()` a
    # lying container prints is cut here and marked truncated; a flood meets the exec's output limit.
    bounded: ClassVar[bool] = False
