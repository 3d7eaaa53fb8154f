"""One process-wide stop signal. SIGTERM or a cancelled flow run sets it; every exec loop and every
scan about to start checks it, so a run stops within about a second even while a container's
stream is blocked or flooding, and what already finished stays recorded."""

from __future__ import annotations

import threading

from .errors import Interrupted

STOP = threading.Event()


def check(what: str = "the run") -> None:
    if STOP.is_set():
        raise Interrupted(f"{what}: interrupted (the run was asked to stop)")
