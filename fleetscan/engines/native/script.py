"""Assemble facts into one POSIX sh script and split its output back into facts.

Framing: every section is wrapped in markers that carry a random 128-bit token chosen per run, so
no file content, name or binary can forge or break a boundary. Each section's output is cut at its
byte limit; the whole run is bounded by the transport's timeout, enforced on the exec stream (busybox
`timeout` would leave a watchdog process behind in the container for its whole duration).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from .facts import Fact, q


@dataclass(frozen=True)
class Section:
    payload: bytes
    truncated: bool


def build(facts: list[Fact], root: str, token: str) -> str:
    prefix = "" if root in ("", "/") else root.rstrip("/")
    lines = [
        f"R={q(prefix)}",
        f"K={q(token)}",
    ]
    for i, fact in enumerate(facts):
        # A subshell per section: `exit` ends only it, and nothing reads the script's stdin.
        lines.append(f'printf "\\n%s:B:{i}\\n" "$K"')
        lines.append(f"( {fact.script()}\n) </dev/null 2>/dev/null | head -c {fact.limit() + 1}")
        lines.append(f'printf "\\n%s:E:{i}\\n" "$K"')
    return "\n".join(lines) + "\n"


def new_token() -> str:
    return secrets.token_hex(16)


def split(output: bytes, token: str, count: int) -> dict[int, Section]:
    """Section payloads by index; a section cut off (timeout, dropped stream) is simply absent."""
    found: dict[int, Section] = {}
    tok = re.escape(token.encode())
    for match in re.finditer(rb"\n" + tok + rb":B:(\d+)\n(.*?)\n" + tok + rb":E:\1\n", output, re.DOTALL):
        index = int(match.group(1))
        if index < count:
            found[index] = Section(match.group(2), False)
    return found


def mark_truncation(sections: dict[int, Section], facts: list[Fact]) -> dict[int, Section]:
    out = {}
    for i, section in sections.items():
        limit = facts[i].limit()
        out[i] = Section(section.payload[:limit], len(section.payload) > limit)
    return out
