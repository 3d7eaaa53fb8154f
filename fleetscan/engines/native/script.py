"""Assemble facts into one POSIX sh script and split its output back into facts.

The script runs in a container that may be hostile, so it is careful and bounded by construction:

- Framing: every section is wrapped in markers carrying a random 128-bit token chosen per scan,
  so no file content, name or binary can forge or break a boundary. Each section ends with its own
  status line and the script with an END marker: a section or a script cut short is incomplete,
  never complete with findings silently missing.
- Reads resolve inside the target's root (`rp`): each path component is looked up under `$R`
  (`/proc/<pid>/root` for debug and sidecar scans, empty for exec), absolute links re-rooted at
  `$R`, `..` clamped at the root, at most 40 links (the kernel's limit). The kernel only ever sees
  paths without links, so a debug or sidecar scan reads what the container itself would, and exec
  scans use the same walk, so every way in gives the same answer.
- Bounds: contents are read only from regular files outside /proc, /sys and /dev, at most a
  fact's byte limit each (`head -c`), and every section's output is cut at its limit. A watchdog
  kills the scan's processes once its time is up: they carry the scan's marker in their
  environment (`FLEETSCAN_SCAN`, set as the script's shell starts), the watchdog spares itself,
  and fleetscan kills the same way from a second exec after a stream was cut (`reap_script`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from .facts import Fact, q

SECTION_SLACK = 128  # bytes of a section beyond its fact's limit: its status line
NO_ROOT = "NOROOT"

# `rp PATH [DIR LINKS]` sets $_r to where a container path is under $R, every link resolved inside
# the container, or fails (loop, unreadable link); $_d is then that path in the container. A
# relative PATH starts at DIR (a $_d; default the root) with LINKS links already followed. It runs
# in the caller's shell (no fork per path: resolution is most of what a fact does), so its own
# variables all start with `_`. What a tool prints into a variable is cut first (`head -c`): a
# lying `readlink` or `stat` in the container must not grow the scan's shell.
# `reg PATH LIMIT` succeeds when PATH is a regular file of at most LIMIT bytes outside the
# virtual filesystems and readable, with its location in $p; otherwise $st says why: M missing,
# U unreadable, N not a regular file, T too large, V virtual (/proc, /sys, /dev), X unresolvable.
PRELUDE = r"""rp() {
  _t=$1 _d=${2-} _n=${3:-0}
  case $_t in /*) _d=;; esac
  while :; do
    while :; do case $_t in /*) _t=${_t#/};; *) break;; esac; done
    [ -z "$_t" ] && break
    _c=${_t%%/*}
    case $_t in */*) _t=${_t#*/};; *) _t=;; esac
    case $_c in .) continue;; ..) _d=${_d%/*}; continue;; esac
    if [ -L "$R$_d/$_c" ]; then
      _n=$((_n+1)); [ "$_n" -gt 40 ] && return 1
      _l=$(readlink "$R$_d/$_c" | head -c 4097; echo .)
      _l=${_l%.}; _l=${_l%"$NL"}
      [ -z "$_l" ] && return 1
      case $_l in /*) _d=;; esac
      _t=$_l/$_t
    else
      _d=$_d/$_c
    fi
  done
  _r=$R${_d:-/}
}
at() {
  rp "$1" || { p=X; return 1; }
  p=$_r
  case ${p#"$R"} in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) p=V; return 1;; esac
}
reg() {
  st=
  at "$1" || { st=$p; return 1; }
  if [ ! -e "$p" ]; then st=M
  elif [ ! -f "$p" ]; then st=N
  elif [ ! -r "$p" ]; then st=U
  else
    s=$(stat -c %s "$p" 2>/dev/null | head -c 24)
    case $s in ''|*[!0-9]*) st=U;; *) [ "$s" -gt "$2" ] && st="T";; esac
  fi
  [ -z "$st" ]
}
"""

# Kills every process of the scan but the caller: they carry the marker in their environment
# (reparented children too, after a cut stream). /proc/self/stat, read by a builtin, is the caller.
REAP = r"""reap() {
  read -r me _ < /proc/self/stat
  for e in /proc/[0-9]*/environ; do
    i=${e#/proc/}; i=${i%/environ}
    [ "$i" = "$me" ] && continue
    case "$(head -c 131072 "$e" 2>/dev/null | tr '\0' '\n')" in
      *"${NL}FLEETSCAN_SCAN=$F${NL}"*|"FLEETSCAN_SCAN=$F${NL}"*) kill -9 "$i" 2>/dev/null;;
    esac
  done
}"""

# Ends the scan after $T seconds. The scan ends it (W) when it is done, and it takes its `sleep`
# along, so nothing of a finished scan stays behind; if the scan's shell dies, it ends within a second.
WATCHDOG = r"""( trap 'kill "$s" 2>/dev/null; exit 0' TERM
  n=0; while kill -0 "$$" 2>/dev/null; do
    [ "$n" -ge "$T" ] && { reap; exit 0; }
    sleep 1 & s=$!; wait "$s"; n=$((n+1))
  done ) </dev/null >/dev/null 2>&1 &
W=$!"""


@dataclass(frozen=True)
class Section:
    payload: bytes
    truncated: bool  # cut at its byte limit, or ended before its status line
    status: int | None = 0  # the fact's exit status; None when it did not finish


def new_token() -> str:
    return secrets.token_hex(16)


def command(kill_token: str) -> list[str]:
    """The exec argv: the shell that reads the script starts with the scan's marker in its own
    environment, so it and all it starts can be found and killed; `sh` missing means no shell."""
    return ["sh", "-c", f"FLEETSCAN_SCAN={kill_token} exec sh -s"]


def build(facts: list[Fact], root: str, token: str, *, timeout: float = 300.0, kill_token: str = "") -> str:
    prefix = "" if root in ("", "/") else root.rstrip("/")
    lines = [
        f"R={q(prefix)}",
        f"K={q(token)}",
        f"T={max(1, int(timeout))}",
        f"F={q(kill_token or new_token())}",
        "NL='\n'",
    ]
    if prefix:  # a root the scan may not enter would make every file look missing
        lines.append(f'[ -d "$R/" ] || {{ printf "\\n%s:{NO_ROOT}\\n" "$K"; exit 3; }}')
    lines += [REAP, WATCHDOG, PRELUDE]
    status = 'printf "\\n%s:S:%s\\n" "$K" "$?"'
    for i, fact in enumerate(facts):
        # The status line says the fact ran to its end; no section reads the script's stdin.
        # Bounded facts run in this shell and are cut here (Fact.bounded). The others run as the
        # first command of a pipeline, which every shell runs in a subshell of its own: an `exit`
        # ends only that fact, its EXIT trap prints the status (the exit's), a fact killed has
        # none, and `head` cuts it in the container (a subshell inside that one cost a process).
        lines.append(f'printf "\\n%s:B:{i}\\n" "$K"')
        if fact.bounded:
            lines.append(f"{{ {fact.script()}\n  }} </dev/null 2>/dev/null; {status}")
        else:
            lines.append(
                f"{{ trap {q(status)} EXIT\n{fact.script()}\n  }} </dev/null 2>/dev/null"
                f" | head -c {fact.limit() + SECTION_SLACK}"
            )
        lines.append(f'printf "\\n%s:E:{i}\\n" "$K"')
    lines.append('printf "\\n%s:END\\n" "$K"')
    lines.append('kill "$W" 2>/dev/null')
    lines.append("exit 0")  # without waiting for the end of stdin, which the v4 exec protocol cannot send
    return "\n".join(lines) + "\n"


def no_root(output: bytes, token: str) -> bool:
    """Whether the script found that it may not enter the target's root."""
    return output.endswith(b"\n" + token.encode() + f":{NO_ROOT}\n".encode())


def reap_script(kill_token: str) -> str:
    """What fleetscan runs in a second exec after a scan's stream was cut, timed out or flooded:
    nothing it started keeps running in the container."""
    return f"NL='\n'\nF={q(kill_token)}\n{REAP}\nreap\n"


def output_limit(facts: list[Fact]) -> int:
    """The most bytes the script can legitimately send: more is a flood, not a scan."""
    return sum(f.limit() + SECTION_SLACK + 64 for f in facts) + 4096


def split(output: bytes, token: str, count: int) -> dict[int, Section]:
    """Section payloads by index; a section cut off (timeout, dropped stream) is absent. Plain
    searches for the markers (a regex holding the per-scan token would be compiled per scan)."""
    found: dict[int, Section] = {}
    begin, tok = b"\n" + token.encode() + b":B:", token.encode()
    status_mark = b"\n" + tok + b":S:"
    pos = 0
    while (at := output.find(begin, pos)) >= 0:
        number_at = at + len(begin)
        line_end = output.find(b"\n", number_at)
        if line_end < 0:
            break
        number = output[number_at:line_end]
        if not (number.isdigit() and number.isascii()):
            pos = number_at
            continue
        end_mark = b"\n" + tok + b":E:" + number + b"\n"
        body_end = output.find(end_mark, line_end + 1)
        if body_end < 0:  # never ended: cut off
            pos = number_at
            continue
        pos = body_end + len(end_mark)
        index = int(number)
        if index >= count:
            continue
        body = output[line_end + 1 : body_end]
        found[index] = _section(body, status_mark)
    return found


def _section(body: bytes, status_mark: bytes) -> Section:
    """A section's payload and status; without its status line at its very end it did not finish."""
    at = body.rfind(status_mark)
    code = body[at + len(status_mark) : -1] if at >= 0 and body.endswith(b"\n") else b""
    if 1 <= len(code) <= 3 and code.isdigit() and code.isascii():
        return Section(body[:at], False, int(code))
    return Section(body, True, None)


def complete(output: bytes, token: str) -> bool:
    """Whether the script reached its end (its last line is the END marker)."""
    return output.endswith(b"\n" + token.encode() + b":END\n")


def mark_truncation(sections: dict[int, Section], facts: list[Fact]) -> dict[int, Section]:
    out = {}
    for i, section in sections.items():
        limit = facts[i].limit()
        out[i] = Section(section.payload[:limit], section.truncated or len(section.payload) > limit, section.status)
    return out
