"""Faults set through the control API: latency, injected errors, dropped and stalled exec streams."""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Latency:
    path: re.Pattern[str]
    seconds: float
    method: str = ""


@dataclass(frozen=True)
class InjectedError:
    path: re.Pattern[str]
    code: int
    rate: float = 1.0
    method: str = ""
    retry_after: int = 1
    count: int = -1  # how many times it may fire; -1 = unlimited


@dataclass(frozen=True)
class ExecKill:
    """After an exec matching `path` has run `after` seconds, its container is restarted or its pod
    deleted: a fault in the middle of a command, at a moment a test can choose."""

    path: re.Pattern[str]
    after: float
    action: str  # "restart" or "delete"
    count: int = -1


@dataclass
class Faults:
    latency: list[Latency] = field(default_factory=list)
    errors: list[InjectedError] = field(default_factory=list)
    exec_stalls: list[Latency] = field(default_factory=list)  # upgraded, then silent for `seconds`
    node_latency: list[Latency] = field(default_factory=list)  # `path` matches node names: a slow kubelet
    exec_kills: list[ExecKill] = field(default_factory=list)
    exec_drop_after_bytes: int | None = None
    exec_drop_count: int = -1  # how many exec streams to cut; -1 = every one
    _fired: dict[int, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _random: random.Random = field(default_factory=lambda: random.Random(0))

    def configure(self, spec: dict[str, Any]) -> None:
        """Replace the fault set: {"latency": [...], "errors": [...], "exec_stall": [...],
        "node_latency": [{"node": regex, "seconds": s}], "exec_kill": [{"path": regex, "after": s,
        "action": "restart"|"delete", "count": n}], "exec_drop_after_bytes": N}."""
        latency = [
            Latency(re.compile(x.get("path", ".*")), float(x["seconds"]), x.get("method", "").upper())
            for x in spec.get("latency") or []
        ]
        stalls = [Latency(re.compile(x.get("path", ".*")), float(x["seconds"])) for x in spec.get("exec_stall") or []]
        nodes = [Latency(re.compile(f"^(?:{x['node']})$"), float(x["seconds"])) for x in spec.get("node_latency") or []]
        kills = []
        for x in spec.get("exec_kill") or []:
            if x.get("action") not in ("restart", "delete"):
                raise ValueError(f"exec_kill action {x.get('action')!r}: restart or delete")
            kills.append(
                ExecKill(
                    re.compile(x.get("path", ".*")), float(x.get("after", 0)), x["action"], int(x.get("count", -1))
                )
            )
        errors = []
        for x in spec.get("errors") or []:
            code = int(x["code"])
            if code not in (403, 429, 500, 503):
                raise ValueError(f"error code {code}: the emulator injects 403, 429, 500 or 503")
            errors.append(
                InjectedError(
                    re.compile(x.get("path", ".*")),
                    code,
                    float(x.get("rate", 1.0)),
                    x.get("method", "").upper(),
                    int(x.get("retry_after", 1)),
                    int(x.get("count", -1)),
                )
            )
        with self._lock:
            self.latency, self.errors, self.exec_stalls, self.node_latency = latency, errors, stalls, nodes
            self.exec_kills = kills
            self.exec_drop_after_bytes = spec.get("exec_drop_after_bytes")
            self.exec_drop_count = int(spec.get("exec_drop_count", -1))
            self._fired.clear()
            if "seed" in spec:
                self._random.seed(spec["seed"])

    def clear(self) -> None:
        self.configure({})

    def delay_for(self, method: str, path: str) -> float:
        return sum(x.seconds for x in self.latency if (not x.method or x.method == method) and x.path.search(path))

    def node_delay(self, node: str) -> float:
        """Seconds a request that reaches `node`'s kubelet (exec, log) waits there."""
        return sum(x.seconds for x in self.node_latency if x.path.match(node))

    def stall_for(self, path: str) -> float:
        """Seconds an exec stream on `path` stays silent after its upgrade (a hung command)."""
        return sum(x.seconds for x in self.exec_stalls if x.path.search(path))

    def error_for(self, method: str, path: str) -> InjectedError | None:
        with self._lock:
            for i, x in enumerate(self.errors):
                if (x.method and x.method != method) or not x.path.search(path):
                    continue
                if x.count >= 0 and self._fired.get(i, 0) >= x.count:
                    continue
                if self._random.random() < x.rate:
                    self._fired[i] = self._fired.get(i, 0) + 1
                    return x
        return None

    def take_exec_kill(self, path: str) -> ExecKill | None:
        """The kill planned for an exec on `path`, if any (spending its count)."""
        with self._lock:
            for i, x in enumerate(self.exec_kills):
                if x.count == 0 or not x.path.search(path):
                    continue
                if x.count > 0:
                    self.exec_kills[i] = ExecKill(x.path, x.after, x.action, x.count - 1)
                return x
        return None

    def take_exec_drop(self) -> int | None:
        """The byte limit for the next exec stream, if it is to be cut (counting down the budget)."""
        with self._lock:
            if self.exec_drop_after_bytes is None or self.exec_drop_count == 0:
                return None
            if self.exec_drop_count > 0:
                self.exec_drop_count -= 1
            return int(self.exec_drop_after_bytes)
