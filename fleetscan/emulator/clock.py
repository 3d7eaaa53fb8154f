"""The emulator's clock: wall time plus an offset tests can advance (token expiry without waiting)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


class Clock:
    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds

    def iso(self, at: float | None = None) -> str:
        """RFC 3339 timestamp in UTC with second precision, as the API server writes them."""
        moment = self.now() if at is None else at
        return datetime.fromtimestamp(moment, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
