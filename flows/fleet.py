"""fleet_scan, namespace_scan and workload_scan: what users run (CLI, UI, schedules, deploy events)."""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from typing import Any, Literal
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.deployments import run_deployment
from prefect.futures import wait
from prefect.runtime import flow_run as current_run
from prefect.task_runners import ThreadPoolTaskRunner

from fleetscan.errors import FleetscanError
from fleetscan.hdf import now_iso
from fleetscan.kube.approach import ephemeral_containers_supported
from fleetscan.kube.credentials import revoke_run
from fleetscan.kube.targets import Target
from fleetscan.pipeline.params import ScanParams
from fleetscan.pipeline.progress import Tracker
from fleetscan.pipeline.records import TargetRecord
from fleetscan.pipeline.rundir import RunDir
from fleetscan.pipeline.scanning import ScanContext
from fleetscan.pipeline.setup import engine_for, kube_for, rules_for, selection_for
from fleetscan.pipeline.share import collect, share_root, upload
from tasks.scan import (
    aggregate_run,
    discover_targets,
    issue_credentials,
    publish_artifacts,
    revoke_credentials,
    scan_namespace_task,
    scan_target_task,
)

GLOBAL_LIMIT = "fleetscan-scans"
DEFAULTS = ScanParams()


def _threads(workers: int) -> Any:
    """A bounded thread pool for a flow's tasks (Prefect's default is one thread per task)."""
    return ThreadPoolTaskRunner(max_workers=workers)


def run_id_of(params: ScanParams, flow_run_id: str | None) -> str:
    """The run id, derived from the flow run when not given, so the state hooks can find it too."""
    return params.run_id or f"p{(flow_run_id or '').replace('-', '')[:12] or 'local'}"


def _resolve(params: ScanParams) -> ScanParams:
    return params.model_copy(update={"run_id": run_id_of(params, current_run.id)}).resolved()


def revoke_on_exit(flow: Any, flow_run: Any, state: Any) -> None:
    """State hook (failure, crash, cancellation): delete whatever credentials the run still holds."""
    raw = flow_run.parameters.get("params") or {}
    params = raw if isinstance(raw, ScanParams) else ScanParams.model_validate(raw)
    run_id = run_id_of(params, str(flow_run.id))
    try:
        deleted = revoke_run(kube_for(params), run_id)
    except FleetscanError as exc:
        print(f"fleetscan: revoking the credentials of run {run_id} failed ({exc}); `fleetscan gc` will do it")
        return
    if deleted:
        print(f"fleetscan: revoked {len(deleted)} leftover object(s) of run {run_id}")


# Failure, crash or cancellation: the run's credentials are deleted whatever happened.
REVOKE_ON_EXIT: dict[str, Any] = {
    "on_failure": [revoke_on_exit],
    "on_crashed": [revoke_on_exit],
    "on_cancellation": [revoke_on_exit],
}


def _global_slot() -> Any:
    """Honour the server's global concurrency limit when it defines one (a missing limit would only
    log a warning on every acquisition, so it is looked up once)."""
    try:
        with get_client(sync_client=True) as client:
            client.read_global_concurrency_limit_by_name(GLOBAL_LIMIT)
    except Exception:
        return None
    return lambda: concurrency(GLOBAL_LIMIT, occupy=1)


def _context(params: ScanParams, run: RunDir, tracker: Tracker) -> ScanContext:
    rules, _ = rules_for(params)
    kube = kube_for(params)
    ctx = ScanContext(
        params=params,
        kube=kube,
        engine=engine_for(params),
        rules=rules,
        run=run,
        ephemeral_supported=ephemeral_containers_supported(kube),
        on_done=tracker,
    )
    slot = _global_slot()
    if slot is not None:
        ctx.slot = slot
    return ctx


def _scan_fleet(params: ScanParams) -> dict[str, Any]:
    logger = get_run_logger()
    started = now_iso()
    run = RunDir.open(params)
    rules_name = rules_for(params)[1]
    tracker = Tracker(0)
    ctx = _context(params, run, tracker)
    found = discover_targets(ctx.kube, selection_for(params))
    finished = run.finished()
    for skipped in found.skipped:
        record = TargetRecord.for_skipped(skipped)
        if record.key not in finished:
            run.record(record)
    if params.dispatch:
        return _dispatch(params, run, found.namespaces, found.targets, started, rules_name)
    todo = [t for t in found.targets if t.key not in finished]
    if finished:
        logger.info("resuming run %s: %d container(s) already done", params.run_id, len(finished))
    tracker.total = len(todo)
    by_namespace: dict[str, list[Target]] = defaultdict(list)
    for target in todo:
        by_namespace[target.namespace].append(target)
    progress: UUID = create_progress_artifact(  # type: ignore[assignment]  # sync call in a sync flow
        progress=0.0, key="fleetscan-progress", description=f"run {params.run_id}: containers scanned"
    )
    futures = {ns: scan_namespace_task.submit(ctx, ns, ts) for ns, ts in by_namespace.items()}
    pending = set(futures.values())
    while pending:
        pending = set(wait(list(pending), timeout=1).not_done)
        for record in tracker.drain():
            logger.info("%s: %s (%s) %s", record.key, record.outcome, record.approach or "-", record.reason[:200])
        update_progress_artifact(artifact_id=progress, progress=tracker.percent)
    for ns, future in futures.items():
        try:
            future.result()
            continue
        except Exception as exc:  # the namespace task failed for good, after its retries
            _record_missing(run, by_namespace[ns], params.engine, f"namespace {ns} could not be scanned: {exc}")
    update_progress_artifact(artifact_id=progress, progress=100.0)
    if not params.aggregate:  # a shard: the parent that dispatched it writes the summary and reports
        if params.share:
            logger.info("handed %d file(s) to %s", upload(run, params.share), params.share)
        return {"run_id": params.run_id, "out": str(run.path), "containers": tracker.total}
    return _finish(params, run, started, rules_name)


def _record_missing(run: RunDir, targets: list[Target], engine: str, reason: str) -> None:
    """Give each container without a record an error record with the reason (finished ones keep theirs)."""
    recorded = {r.key for r in run.records()}
    for target in targets:
        if target.key not in recorded:
            record = TargetRecord.for_target(target, engine)
            record.reason = reason
            run.record(record)


def _scan(params: ScanParams) -> dict[str, Any]:
    if params.share and not params.aggregate and not params.dispatch:
        # A shard handing over through a share: its local run directory is scratch, gone afterwards.
        with tempfile.TemporaryDirectory(prefix=f"fleetscan-{params.run_id}-") as scratch:
            return _scan_fleet(params.model_copy(update={"out": scratch}))
    return _scan_fleet(params)


def _finish(params: ScanParams, run: RunDir, started: str, rules_name: str) -> dict[str, Any]:
    summary = aggregate_run(run, started, params.profile, rules_name, params.history)
    publish_artifacts(summary, run)
    get_run_logger().info("run %s: %s -> %s", params.run_id, summary.totals, run.path / "report.html")
    return {"run_id": params.run_id, "out": str(run.path), "totals": summary.totals, "exit_code": summary.exit_code}


def _dispatch(
    params: ScanParams, run: RunDir, namespaces: list[str], targets: list[Target], started: str, rules_name: str
) -> dict[str, Any]:
    """Scan shards of namespaces as separate flow runs of `params.dispatch` on its work pool (so N
    workers on N machines share one fleet scan), wait for them, then aggregate what they wrote into
    the shared run directory or handed over through `params.share`."""
    logger = get_run_logger()
    if params.share:
        share_root(params.share, params.run_id)  # an unusable URL fails now, not after every shard ran
    shards = [namespaces[i : i + params.shard_size] for i in range(0, len(namespaces), params.shard_size)]
    runs: list[Any] = []  # FlowRuns (run_deployment is sync here)
    for i, shard in enumerate(shards):
        # Without a share, the run directory must be a path every worker sees (shared filesystem).
        out = "" if params.share else str(run.path.resolve())
        child = params.model_copy(update={"namespaces": shard, "dispatch": "", "aggregate": False, "out": out})
        runs.append(
            run_deployment(
                params.dispatch,
                parameters={"params": child.model_dump(mode="json")},
                timeout=0,
                flow_run_name=f"{params.run_id}-shard-{i:03d}",
                # one child per shard of this flow run; a resumed run (new flow run) dispatches afresh
                idempotency_key=f"{current_run.id or params.run_id}-shard-{i}",
            )
        )
    logger.info("dispatched %d shard(s) of run %s to %s", len(runs), params.run_id, params.dispatch)
    progress: UUID = create_progress_artifact(  # type: ignore[assignment]  # sync call in a sync flow
        progress=0.0, key="fleetscan-progress", description=f"run {params.run_id}: shards finished"
    )
    reported = -1
    with get_client(sync_client=True) as client:
        while True:
            states = [client.read_flow_run(r.id).state for r in runs]
            finished = sum(1 for s in states if s is not None and s.is_final())
            if finished != reported:
                reported = finished
                logger.info("%d of %d shard(s) finished", finished, len(runs))
                update_progress_artifact(artifact_id=progress, progress=100.0 * finished / max(len(runs), 1))
            if finished == len(runs):
                break
            time.sleep(2)
    if params.share:
        logger.info("collected %d file(s) from %s", collect(run, params.share), params.share)
    for i, (shard, flow_run, state) in enumerate(zip(shards, runs, states, strict=True)):
        if state is None or not state.is_completed():
            logger.warning("shard %d (%s) ended %s", i, flow_run.name, state.name if state else "unknown")
            lost = [t for t in targets if t.namespace in shard]
            _record_missing(run, lost, params.engine, f"shard run {flow_run.name} did not complete")
    return _finish(params, run, started, rules_name)


@flow(
    name="fleet-scan",
    flow_run_name="fleet-scan-{params.run_id}",
    task_runner=_threads(4),
    **REVOKE_ON_EXIT,
)
def fleet_scan(params: ScanParams = DEFAULTS) -> dict[str, Any]:
    """Scan every selected container of the fleet: per namespace credentials, scans, revocation."""
    return _scan(_resolve(params))


@flow(
    name="namespace-scan",
    flow_run_name="namespace-scan-{namespace}",  # dispatched shards are named by the parent
    task_runner=_threads(2),
    **REVOKE_ON_EXIT,
)
def namespace_scan(namespace: str = "", params: ScanParams = DEFAULTS) -> dict[str, Any]:
    """Scan one namespace, or (namespace empty) the namespaces of `params`: the shards a fleet scan
    dispatches to workers."""
    return _scan(_resolve(params.model_copy(update={"namespaces": [namespace]}) if namespace else params))


@flow(
    name="workload-scan",
    flow_run_name="workload-scan-{namespace}-{kind}-{name}",
    task_runner=_threads(8),
    **REVOKE_ON_EXIT,
)
def workload_scan(
    namespace: str,
    kind: Literal["Deployment", "StatefulSet", "DaemonSet", "Pod"],
    name: str,
    params: ScanParams = DEFAULTS,
) -> dict[str, Any]:
    """Scan the containers of one workload, e.g. as soon as it is deployed."""
    params = _resolve(params.model_copy(update={"namespaces": [namespace]}))
    logger = get_run_logger()
    started = now_iso()
    run = RunDir.open(params)
    tracker = Tracker(0)
    ctx = _context(params, run, tracker)
    found = discover_targets(ctx.kube, selection_for(params))
    targets = [
        t
        for t in found.targets
        if (t.workload.kind, t.workload.name) == (kind, name) or (kind == "Pod" and t.pod == name)
    ]
    if not targets:
        raise FleetscanError(f"{kind} {namespace}/{name}: no running container found to scan")
    tracker.total = len(targets)
    creds = issue_credentials(
        ctx.kube, namespace, params.run_id, sorted({t.pod for t in targets}), params.token_seconds
    )
    try:
        futures = [scan_target_task.submit(ctx, creds, t) for t in targets]
        wait(futures)
    finally:
        revoke_credentials(creds)
    for record in tracker.drain():
        logger.info("%s: %s %s", record.key, record.outcome, record.reason[:200])
    summary = aggregate_run(run, started, params.profile, rules_for(params)[1], params.history)
    publish_artifacts(summary, run)
    return {"run_id": params.run_id, "out": str(run.path), "totals": summary.totals, "exit_code": summary.exit_code}
