"""The one scan path: per namespace its credentials once, then per container the ways in tried in
order, the engine, the threshold and one record written the moment it is known. Every container
handed in ends with exactly one record, whatever fails, and the credentials are revoked in every
case."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import cancel
from ..access import AccessSettings, chosen
from ..access.transport import Transport
from ..engines import Engine
from ..errors import ApproachUnavailable, FleetscanError, Interrupted, RunDirError
from ..kube.client import Kube
from ..kube.credentials import CredentialSettings, NamespaceCredentials, merge_rules
from ..kube.targets import Target
from ..results.hdf import control_rows, counted_controls, unexamined_controls
from ..results.records import TargetRecord
from ..results.rundir import RunDir
from ..results.threshold import Threshold
from ..results.waivers import NO_WAIVERS, Waivers
from ..settings import ScanParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Access:
    """An opened way in, and the run's narrow credentials for tools that need a kubeconfig."""

    transport: Transport
    creds: NamespaceCredentials

    def kubeconfig(self) -> AbstractContextManager[Path]:
        return self.creds.kubeconfig()


class NodeSlots:
    """At most `limit` scans at once on each node (0: no limit): each exec and debug container is
    work for that node's kubelet and runtime, whatever the run's concurrency."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._nodes: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def slot(self, node: str) -> AbstractContextManager[Any]:
        if not self._limit or not node:
            return contextlib.nullcontext()
        with self._lock:
            return self._nodes.setdefault(node, threading.BoundedSemaphore(self._limit))


def by_node_in_turn(targets: list[Target]) -> list[Target]:
    """The targets with their nodes taken in turn (a, b, c, a, b, ...), so a namespace's workers
    spread over its nodes instead of queueing for one."""
    nodes: dict[str, list[Target]] = {}
    for t in targets:
        nodes.setdefault(t.node, []).append(t)
    queues = list(nodes.values())
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


@dataclass
class Scanner:
    """What every container scan of one run shares."""

    params: ScanParams
    kube: Kube  # the orchestrator's identity: creates credentials, never execs
    engine: Engine
    threshold: Threshold
    run: RunDir
    access: AccessSettings
    waivers: Waivers = NO_WAIVERS
    # A Prefect global concurrency slot per container scan when the server defines the limit.
    slot: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext
    on_done: Callable[[TargetRecord], None] = lambda record: None
    _run_slots: threading.BoundedSemaphore = field(init=False)
    _nodes: NodeSlots = field(init=False)
    # (approach, image digest) -> why it cannot work for that image (e.g. no shell): not tried again
    _of_image: dict[tuple[str, str], str] = field(init=False, default_factory=dict)
    _abort: threading.Event = field(init=False, default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._run_slots = threading.BoundedSemaphore(self.params.concurrency)
        self._nodes = NodeSlots(self.params.max_per_node)

    # -- one namespace ------------------------------------------------------------------------------
    def scan_namespace(self, namespace: str, targets: list[Target]) -> list[TargetRecord]:
        """Scan `targets` (all in `namespace`); every target ends with a record."""
        if not targets:
            return []
        started = time.monotonic()
        first = merge_rules(*(chosen(t, self.access)[0][0].rules([t.pod]) for t in targets))
        settings = CredentialSettings(token_seconds=self.params.token_seconds)
        with contextlib.ExitStack() as stack:
            try:
                creds = stack.enter_context(
                    NamespaceCredentials(self.kube, namespace, self.params.run_id, first, settings)
                )
            except Interrupted:
                raise
            except FleetscanError as exc:
                reason = (
                    f"namespace {namespace} could not be scanned "
                    f"(no scan credentials for namespace {namespace!r}: {exc})"
                )
                return [self._error(TargetRecord.for_target(t, self.engine.name), reason, started) for t in targets]
            kube = creds.scan_client()
            workers = max(1, min(self.params.concurrency, len(targets)))
            with ThreadPoolExecutor(workers, thread_name_prefix=f"scan-{namespace}") as pool:
                jobs = [pool.submit(self.scan_target, creds, kube, t) for t in by_node_in_turn(targets)]
                try:
                    done = [job.result() for job in jobs]
                except BaseException:
                    self._abort.set()  # the run directory failed or the run stops: start nothing more
                    raise
                order = {t.key: i for i, t in enumerate(targets)}
                return sorted(done, key=lambda r: order[r.key])  # in the order handed in
        raise AssertionError("unreachable")  # pragma: no cover

    # -- one container ------------------------------------------------------------------------------
    def scan_target(self, creds: NamespaceCredentials, kube: Kube, target: Target) -> TargetRecord:
        record = TargetRecord.for_target(target, self.engine.name)
        opened: list[Transport] = []
        # The node's slot first: a scan waiting for a busy node holds none of the run's slots.
        with self._nodes.slot(target.node), self._run_slots, self.slot():
            if self._abort.is_set():
                raise Interrupted(f"{target.key}: not scanned, the run is stopping")
            cancel.check(target.key)
            started = time.monotonic()
            try:
                return self._scan(creds, kube, target, record, started, opened)
            except (Interrupted, RunDirError):
                raise
            except FleetscanError as exc:
                return self._error(record, str(exc), started)
            except Exception as exc:  # a bug must not cost the container its record
                log.exception("%s: unexpected failure", target.key)
                return self._error(record, f"unexpected {type(exc).__name__}: {exc}", started)
            finally:
                for transport in opened:  # after the record: e.g. killing what a cut scan left running
                    transport.cleanup()

    def _scan(
        self,
        creds: NamespaceCredentials,
        kube: Kube,
        target: Target,
        record: TargetRecord,
        started: float,
        opened: list[Transport],
    ) -> TargetRecord:
        candidates, forced = chosen(target, self.access)
        reasons: list[str] = []
        for approach in candidates:
            why = approach.unavailable(target, self.access, forced=forced)
            if why is None and approach.name not in self.engine.approaches:
                why = f"the {self.engine.name} engine cannot work through it"
            if why is None and not forced:
                why = self._of_image.get((approach.name, target.image_id))
            if why is not None:
                reasons.append(f"{approach.name}: {why}")
                continue
            record.approach = approach.name
            transport: Transport | None = None
            try:
                creds.grant(approach.rules([target.pod]))
                transport = approach.open(kube, target, self.access)
                opened.append(transport)
                doc = self.engine.scan(target, _Access(transport, creds))
            except ApproachUnavailable as exc:
                reasons.append(f"{approach.name}: {exc}")
                if exc.of_image and target.image_id:
                    self._of_image[(approach.name, target.image_id)] = f"{exc} (known from another container)"
                continue
            finally:
                if transport is not None:  # exec requests sent, and tries of the scan (1 + its retries)
                    record.exec_calls += transport.exec_calls + transport.retried
                    record.attempts = max(record.attempts, 1) + transport.retried
            record.waivers = self.waivers.apply(doc, target)  # before the verdict: SAF counts a waived control N/A
            counted = counted_controls(doc)  # once: the verdict, the completeness check and the rows
            verdict = self.threshold.evaluate(doc, counted)
            record.outcome = "passed" if verdict.passed else "failed"
            record.compliance = verdict.counts.compliance
            record.counts = verdict.counts.overall
            record.reason = "" if verdict.passed else verdict.message
            record.controls = control_rows(doc, counted)
            if unexamined := unexamined_controls(doc, counted):  # an incomplete result is an error, never a verdict
                record.outcome = "error"
                record.reason = f"{len(unexamined)} control(s) could not be examined: {'; '.join(unexamined[:3])}"
            return self._finish(record, started, doc)
        record.approach = ""
        record.outcome = "error" if forced else "skipped"
        record.reason = "; ".join(reasons) or "no way into the container"
        return self._finish(record, started)

    def _error(self, record: TargetRecord, reason: str, started: float) -> TargetRecord:
        record.outcome, record.reason = "error", reason
        return self._finish(record, started)

    def _finish(self, record: TargetRecord, started: float, doc: dict[str, Any] | None = None) -> TargetRecord:
        record.duration_s = round(time.monotonic() - started, 3)
        self.run.record(record, doc)
        record.controls = []  # on disk now: what a run holds per container must not grow with its profile
        self.on_done(record)
        return record
