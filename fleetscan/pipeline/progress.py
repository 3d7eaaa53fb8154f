"""Who hears about each finished container: the CLI's progress bar, the flow's artifacts and logs."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..results.records import TargetRecord

Listener = Callable[[TargetRecord], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def add_listener(listener: Listener) -> None:
    with _lock:
        _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def announce(record: TargetRecord) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(record)


class Tracker:
    """Counts finished containers and queues them for whoever reports (the flow's own thread)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self._pending: list[TargetRecord] = []
        self._lock = threading.Lock()

    def __call__(self, record: TargetRecord) -> None:
        with self._lock:
            self.done += 1
            self._pending.append(record)
        announce(record)

    def drain(self) -> list[TargetRecord]:
        with self._lock:
            pending, self._pending = self._pending, []
        return pending

    @property
    def percent(self) -> float:
        return 100.0 if not self.total else round(100.0 * self.done / self.total, 1)
