"""Scan the containers of one namespace: its credentials once, approaches decided, containers
scanned by a bounded pool, each outcome written as soon as it is known, credentials revoked in
every case."""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from ..engines.cinc import CincEngine
from ..engines.native.engine import NativeEngine
from ..errors import ApproachUnavailable, FleetscanError
from ..kube.approach import ApproachSettings, Decision, connect, decide
from ..kube.client import Kube
from ..kube.credentials import CredentialSettings, NamespaceCredentials
from ..kube.targets import Target
from ..kube.transports import has_shell
from ..threshold import evaluate
from .params import ScanParams
from .records import TargetRecord
from .rundir import RunDir

log = logging.getLogger(__name__)


@dataclass
class ScanContext:
    """What every container scan of one run shares."""

    params: ScanParams
    kube: Kube  # the orchestrator's identity: creates credentials, never execs
    engine: NativeEngine | CincEngine
    rules: Any  # the parsed threshold
    run: RunDir
    ephemeral_supported: bool
    # The run-wide cap on concurrent scans, plus a Prefect global limit when the server has one.
    slot: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext
    on_done: Callable[[TargetRecord], None] = lambda record: None
    sleep: Callable[[float], None] = time.sleep
    _run_slots: threading.BoundedSemaphore = field(init=False)

    def __post_init__(self) -> None:
        self._run_slots = threading.BoundedSemaphore(self.params.concurrency)

    @contextlib.contextmanager
    def scanning(self) -> Iterator[None]:
        with self._run_slots, self.slot():
            yield

    @property
    def approach_settings(self) -> ApproachSettings:
        p = self.params
        return ApproachSettings(p.approach, p.allow_debug, p.debug_image)

    @property
    def engine_name(self) -> str:
        return self.params.engine


def backoff(attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with jitter, never shorter than what the server asked for."""
    delay: float = min(30.0, 0.5 * 2**attempt) * (0.5 + random.random())  # jitter, not a secret
    return max(delay, retry_after or 0.0)


def _finish(ctx: ScanContext, record: TargetRecord, started: float, doc: dict[str, Any] | None = None) -> TargetRecord:
    record.duration_s = round(time.monotonic() - started, 3)
    ctx.run.record(record, doc)
    ctx.on_done(record)
    return record


def decide_approach(ctx: ScanContext, kube: Kube, target: Target) -> tuple[Decision, int]:
    """The approach for a target and how many execs deciding it took."""
    probes = 0

    def shell() -> bool:
        nonlocal probes
        probes += 1
        return has_shell(kube, target)

    return decide(target, ctx.approach_settings, shell, ctx.ephemeral_supported), probes


def scan_target(
    ctx: ScanContext, kube: Kube, creds: NamespaceCredentials, target: Target, decision: Decision, probe_execs: int
) -> TargetRecord:
    started = time.monotonic()
    record = TargetRecord.for_target(target, ctx.engine_name)
    record.exec_calls = probe_execs
    if decision.approach is None:
        record.outcome, record.reason = "skipped", decision.reason
        return _finish(ctx, record, started)
    record.approach = decision.approach
    for attempt in range(ctx.params.retries + 1):
        record.attempts = attempt + 1
        try:
            with ctx.scanning():
                shell_known = probe_execs > 0 and decision.approach == "exec" and not decision.forced
                transport = connect(kube, target, decision.approach, ctx.approach_settings, shell_known=shell_known)
                try:
                    if isinstance(ctx.engine, NativeEngine):
                        doc = ctx.engine.scan(transport, target, failures_as_results=False).document
                    else:
                        with creds.kubeconfig() as kubeconfig:
                            doc = ctx.engine.scan(kubeconfig, target, decision.approach)
                finally:
                    record.exec_calls += transport.exec_calls
            verdict = evaluate(doc, ctx.rules)
            record.outcome = "passed" if verdict.passed else "failed"
            record.compliance = verdict.counts.compliance
            record.counts = verdict.counts.overall
            record.reason = "" if verdict.passed else verdict.message
            return _finish(ctx, record, started, doc)
        except ApproachUnavailable as exc:
            record.outcome = "error" if decision.forced else "skipped"
            record.reason = str(exc)
            return _finish(ctx, record, started)
        except FleetscanError as exc:
            if exc.retryable and attempt < ctx.params.retries:
                log.info("%s: attempt %d failed (%s); retrying", target.key, attempt + 1, exc)
                ctx.sleep(backoff(attempt, exc.retry_after))
                continue
            record.outcome, record.reason = "error", str(exc)
            return _finish(ctx, record, started)
    raise AssertionError("unreachable")  # pragma: no cover


def scan_namespace(ctx: ScanContext, namespace: str, targets: list[Target]) -> list[TargetRecord]:
    """Scan `targets` (all in `namespace`); every target ends with a record, whatever happens."""
    if not targets:
        return []
    p = ctx.params
    started = time.monotonic()
    settings = CredentialSettings(token_seconds=p.token_seconds)
    try:
        creds = NamespaceCredentials(ctx.kube, namespace, p.run_id, [t.pod for t in targets], settings=settings)
        creds.__enter__()
    except FleetscanError as exc:
        if exc.retryable:
            raise  # throttled or a server error: the namespace task is retried as a whole
        reason = f"no scan credentials for namespace {namespace!r}: {exc}"
        records = []
        for target in targets:
            record = TargetRecord.for_target(target, ctx.engine_name)
            record.outcome, record.reason = "error", reason
            records.append(_finish(ctx, record, started))
        return records
    try:
        kube = creds.scan_client()
        workers = max(1, min(p.concurrency, len(targets)))
        with ThreadPoolExecutor(workers, thread_name_prefix=f"scan-{namespace}") as pool:
            decided = list(pool.map(lambda t: _safe_decide(ctx, kube, t), targets))
            debug_pods = sorted({t.pod for t, (d, _) in zip(targets, decided, strict=True) if d.approach == "debug"})
            if debug_pods:
                creds.grant_debug(debug_pods)
            jobs = [
                pool.submit(scan_target, ctx, kube, creds, t, d, n) for t, (d, n) in zip(targets, decided, strict=True)
            ]
            return [job.result() for job in jobs]
    finally:
        creds.revoke()


def _safe_decide(ctx: ScanContext, kube: Kube, target: Target) -> tuple[Decision, int]:
    for attempt in range(ctx.params.retries + 1):
        try:
            return decide_approach(ctx, kube, target)
        except FleetscanError as exc:
            if exc.retryable and attempt < ctx.params.retries:
                ctx.sleep(backoff(attempt, exc.retry_after))
                continue
            # Scanning will meet the same failure and record it with its reason.
            return Decision(ctx.params.approach if ctx.params.approach != "auto" else "exec", False), 1
    return Decision("exec", False), 1  # pragma: no cover
