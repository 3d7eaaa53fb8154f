"""The one retry policy: calls that fail with a retryable FleetscanError are tried again with
exponential backoff and jitter, never sooner than the server asked (Retry-After).

It is applied in exactly one layer: each Kubernetes API call and each exec (fleetscan.kube), and
each event posted to Prefect. Nothing above retries again, so a failure costs at most
`attempts` tries, never attempts x attempts.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import FleetscanError

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_RETRIES = 2


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = DEFAULT_RETRIES  # tries after the first
    base_seconds: float = 0.5
    max_seconds: float = 30.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Before try `attempt + 2`: exponential with jitter (jitter is not a secret)."""
        delay: float = min(self.max_seconds, self.base_seconds * 2**attempt) * (0.5 + random.random())
        return max(delay, min(retry_after or 0.0, self.max_seconds))

    def run(self, call: Callable[[], T], *, what: str = "", on_retry: Callable[[int], None] | None = None) -> T:
        for attempt in range(self.retries + 1):
            try:
                return call()
            except FleetscanError as exc:
                if not exc.retryable or attempt >= self.retries:
                    raise
                log.info("%s failed (%s); trying again (%d of %d)", what or "call", exc, attempt + 2, self.retries + 1)
                if on_retry is not None:
                    on_retry(attempt + 1)
                self.sleep(self.delay(attempt, exc.retry_after))
        raise AssertionError("unreachable")  # pragma: no cover


NO_RETRIES = RetryPolicy(retries=0)
