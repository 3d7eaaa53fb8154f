"""Every request the emulator answered, for tests that assert least privilege and count API calls."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class AuditEntry:
    time: float
    user: str
    groups: tuple[str, ...]
    method: str
    path: str
    verb: str
    api_group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    allowed: bool
    code: int
    started: float = 0.0  # when the request arrived; `time` is when it ended (an exec: its session)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AuditLog:
    def __init__(self, limit: int = 200_000) -> None:
        self._entries: deque[AuditEntry] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def add(self, entry: AuditEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def query(self, **filters: str) -> list[AuditEntry]:
        """Entries whose fields equal every given filter (values compared as strings)."""
        with self._lock:
            entries = list(self._entries)
        return [e for e in entries if all(str(getattr(e, k)) == v for k, v in filters.items() if v is not None)]
