"""fleet_scan, namespace_scan and workload_scan: what users run (CLI, UI, schedules, deploy events).

All three build a Selection from their parameters and run the same path, `scan_run`: plan, record
the skipped, scan each namespace (or dispatch shards of namespaces to workers), aggregate once.
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Literal, TypeVar, cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.concurrency.sync import concurrency
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.futures import wait
from prefect.runtime import flow_run as current_run
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from fleetscan import cancel
from fleetscan.errors import FleetscanError, Interrupted, RunDirError
from fleetscan.heap import lean_allocators
from fleetscan.pipeline.progress import Tracker
from fleetscan.pipeline.run import (
    RunResult,
    RunSetup,
    baseline_ref,
    prepare,
    record_skipped,
    revoke_leftovers,
    shards,
    todo,
)
from fleetscan.pipeline.scan import Scanner
from fleetscan.pipeline.share import collect, download, publish_reports, share_root, upload
from fleetscan.results.hdf import now_iso
from fleetscan.settings import ScanParams
from tasks.scan import (
    aggregate_task,
    emit_events_task,
    export_metrics_task,
    plan_task,
    publish_artifacts,
    publish_policy_reports_task,
    scan_namespace_task,
)

GLOBAL_LIMIT = "fleetscan-scans"
SLOT_POLL_SECONDS = 5.0
DEFAULTS = ScanParams()


T = TypeVar("T")


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
        deleted = revoke_leftovers(params, run_id)
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


def _stop_scans_on_sigterm() -> None:
    """SIGTERM (a killed CLI, a cancelled flow run) first tells every scan thread to stop, then
    goes on to Prefect's own handler, so the flow ends within seconds even while a stream is blocked."""
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:
        return

    def handler(signum: int, frame: Any) -> None:
        cancel.STOP.set()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            raise Interrupted("terminated (SIGTERM)")

    with contextlib.suppress(ValueError):  # not the main thread: the caller handles signals
        signal.signal(signal.SIGTERM, handler)


def global_slot(logger: Any) -> Callable[[], AbstractContextManager[Any]] | None:
    """The server's global limit on concurrent container scans, shared by every run. Only "no such
    limit" means unlimited: a failed lookup is logged, and the limit still applies."""
    try:
        with get_client(sync_client=True) as client:
            client.read_global_concurrency_limit_by_name(GLOBAL_LIMIT)
    except ObjectNotFound:
        return None
    except Exception as exc:
        logger.warning(
            "cannot read the global concurrency limit %s (%s); scans still take its slots", GLOBAL_LIMIT, exc
        )
    return _scan_slot


@contextlib.contextmanager
def _scan_slot() -> Iterator[None]:
    """One slot of the global limit for one container scan; waiting for it stops with the run."""
    while True:
        cancel.check(f"waiting for a slot of {GLOBAL_LIMIT}")
        slot = concurrency(GLOBAL_LIMIT, occupy=1, timeout_seconds=SLOT_POLL_SECONDS)
        try:
            slot.__enter__()
        except TimeoutError:
            continue
        break
    try:
        yield
    finally:
        slot.__exit__(None, None, None)


def scan_run(params: ScanParams) -> RunResult | State[Any]:
    """The one path of every flow; its result is the RunResult, in the final state the policy gives."""
    lean_allocators()  # a deployment's flow run is a process of its own
    _stop_scans_on_sigterm()
    if params.share and not params.aggregate and not params.dispatch:
        # A shard handing over through a share: its local run directory is scratch, gone afterwards.
        with tempfile.TemporaryDirectory(prefix=f"fleetscan-{params.run_id}-") as scratch:
            return _scan(params.model_copy(update={"out": scratch}))
    return final_state(params, _scan(params))


def final_state(params: ScanParams, result: RunResult) -> RunResult | State[Any]:
    """The state policy: a run that scanned ends Completed whatever its verdicts (they are in its
    result, artifacts and events); it ends Failed when more than `max_error_ratio` of its containers
    could not be scanned, since then the run as a whole did not do its job. Shards leave it to
    their parent, which judges the whole run."""
    targets, errors = result.totals.get("targets", 0), result.totals.get("error", 0)
    if params.aggregate and targets and errors / targets > params.max_error_ratio:
        message = (
            f"{errors} of {targets} containers could not be scanned (more than {params.max_error_ratio:.0%}); "
            f"run {result.run_id}, report {result.report}"
        )
        return Failed(message=message, data=result)
    return result


def run_to_end(flow_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> RunResult:
    """Run a flow in this process and return its RunResult, whatever final state it took."""
    return result_of(flow_fn(*args, return_state=True, **kwargs))


def result_of(state: State[Any]) -> RunResult:
    """A finished flow run's RunResult, whatever final state the policy gave it (an exception that
    ended the run is raised again)."""
    value = state.result(raise_on_failure=False)
    if isinstance(value, BaseException):
        raise value
    if not isinstance(value, RunResult):
        raise TypeError(f"the flow run ended {state.type.value} without a result: {value!r}")
    return value


def _scan(params: ScanParams) -> RunResult:
    logger = get_run_logger()
    started = now_iso()
    setup = prepare(params)
    run = setup.run
    plan = plan_task(setup)
    if params.share and not params.aggregate:
        logger.info("resuming from %d file(s) in %s", download(run, params.share, plan.namespaces), params.share)
    record_skipped(run, plan)
    pending = todo(run, plan)
    if params.dispatch:
        return _dispatch(setup, pending, started)
    done = len(plan.targets) - sum(len(ts) for ts in pending.values())
    if done:
        logger.info("resuming run %s: %d container(s) already done", params.run_id, done)
    tracker = Tracker(sum(len(ts) for ts in pending.values()))
    scanner = Scanner(
        params,
        setup.kube,
        setup.engine,
        setup.threshold,
        run,
        setup.access,
        setup.waivers,
        slot=global_slot(logger) or contextlib.nullcontext,
    )
    scanner.on_done = tracker
    progress: UUID = create_progress_artifact(  # type: ignore[assignment]  # sync call in a sync flow
        progress=0.0, key="fleetscan-progress", description=f"run {params.run_id}: containers scanned"
    )
    futures = {ns: scan_namespace_task.submit(_quoted(scanner), ns, _quoted(ts)) for ns, ts in pending.items()}
    waiting = set(futures.values())
    while waiting:
        waiting = set(wait(list(waiting), timeout=1).not_done)
        for record in tracker.drain():
            logger.info("%s: %s (%s) %s", record.key, record.outcome, record.approach or "-", record.reason[:200])
        update_progress_artifact(artifact_id=progress, progress=tracker.percent)
    for ns, future in futures.items():
        try:
            future.result()
        except (Interrupted, RunDirError):
            raise
        except Exception as exc:  # a bug in the namespace step: its containers still get records
            run.complete(pending[ns], params.engine, f"namespace {ns} could not be scanned: {exc}")
    update_progress_artifact(artifact_id=progress, progress=100.0)
    if done:  # an interrupted attempt may have left credentials in namespaces with nothing left to do
        _sweep(params, logger)
    if not params.aggregate:  # a shard: the parent that dispatched it writes the summary and reports
        if params.share:
            logger.info("handed %d file(s) to %s", upload(run, params.share), params.share)
        return RunResult(params.run_id, str(run.path), {"targets": tracker.total})
    return _finish(setup, started)


def _quoted(value: T) -> T:
    """Pass value to a task as is: Prefect would otherwise walk it (every target) for futures."""
    return cast(T, quote(value))


def _sweep(params: ScanParams, logger: Any) -> None:
    try:
        taken = revoke_leftovers(params, params.run_id)
    except FleetscanError as exc:
        logger.warning("could not sweep the leftovers of run %s (%s); `fleetscan gc` will", params.run_id, exc)
        return
    if taken:
        logger.info("removed %d object(s) an earlier attempt of run %s left", len(taken), params.run_id)


def _finish(setup: RunSetup, started: str, shard_runs: int = 0) -> RunResult:
    params, run = setup.params, setup.run
    reports = params.policy_reports_dir or (str(run.path / "policy-reports") if params.policy_reports else "")
    summary = aggregate_task(
        run,
        started,
        params.profile,
        setup.threshold.name,
        params.history,
        _quoted(setup.waivers),
        baseline_ref(params),
        reports,
    )
    report = publish_reports(run, params.share) if params.share else str((run.path / "report.html").resolve())
    publish_artifacts(_quoted(summary), run, report)
    emit_events_task(_quoted(summary), _quoted(setup), report)
    warnings = []
    if params.metrics or params.pushgateway:
        warnings.append(export_metrics_task(_quoted(summary), params))
    if params.policy_reports:
        warnings += publish_policy_reports_task(_quoted(setup), reports)
    get_run_logger().info("run %s: %s -> %s", params.run_id, summary.totals, report)
    return RunResult(
        params.run_id,
        str(run.path),
        summary.totals,
        report,
        shard_runs,
        new_failures=summary.baseline.get("new") if summary.baseline else None,
        fail_on_new=params.fail_on_new,
        warnings=[w for w in warnings if w],
    )


def _dispatch(setup: RunSetup, pending: dict[str, list[Any]], started: str) -> RunResult:
    """Scan shards of namespaces as separate flow runs of `params.dispatch` on its work pool (so N
    workers on N machines share one fleet scan), wait for them, then aggregate what they wrote into
    the shared run directory or handed over through `params.share`."""
    logger = get_run_logger()
    params, run = setup.params, setup.run
    namespaces = sorted(pending)
    if params.share:
        share_root(params.share, params.run_id)  # an unusable URL fails now, not after every shard ran
        upload(run, params.share, namespaces)  # what this run already holds: resumed shards skip it
    groups = shards(namespaces, params.shard_size)
    runs: list[Any] = []  # FlowRuns (run_deployment is sync here)
    for i, shard in enumerate(groups):
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
    states: list[Any] = []
    with get_client(sync_client=True) as client:
        while True:
            cancel.check(f"run {params.run_id}")
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
    for i, (shard, flow_run, state) in enumerate(zip(groups, runs, states, strict=True)):
        if state is None or not state.is_completed():
            logger.warning("shard %d (%s) ended %s", i, flow_run.name, state.name if state else "unknown")
            lost = [t for ns in shard for t in pending[ns]]
            run.complete(lost, params.engine, f"shard run {flow_run.name} did not complete")
    return _finish(setup, started, len(runs))


def _current_params() -> ScanParams:
    raw = (current_run.parameters or {}).get("params") or {}
    return raw if isinstance(raw, ScanParams) else ScanParams.model_validate(raw)


def _named(namespaces: list[str]) -> str:
    shown = ",".join(namespaces[:3])
    return f"{shown},+{len(namespaces) - 3}" if len(namespaces) > 3 else shown


def fleet_run_name() -> str:
    """What the UI lists: `fleet <run id>`, or `fleet a,b <run id>` when namespaces are named."""
    params = _current_params()
    scope = f"fleet {_named(params.namespaces)}" if params.namespaces else "fleet"
    return f"{scope} {run_id_of(params, current_run.id)}"


def namespace_run_name() -> str:
    params = _current_params()
    namespace = (current_run.parameters or {}).get("namespace") or _named(params.namespaces) or "all"
    return f"namespace {namespace} {run_id_of(params, current_run.id)}"


def workload_run_name() -> str:
    p = current_run.parameters or {}
    where = f"{p.get('namespace')}/{str(p.get('kind', '')).lower()}/{p.get('name')}"
    return f"workload {where} {run_id_of(_current_params(), current_run.id)}"


@flow(
    name="fleet-scan",
    flow_run_name=fleet_run_name,
    task_runner=_threads(4),
    **REVOKE_ON_EXIT,
)
def fleet_scan(params: ScanParams = DEFAULTS) -> RunResult | State[Any]:
    """Scan every selected container of the fleet: per namespace credentials, scans, revocation."""
    return scan_run(_resolve(params))


@flow(
    name="namespace-scan",
    flow_run_name=namespace_run_name,
    task_runner=_threads(2),
    **REVOKE_ON_EXIT,
)
def namespace_scan(namespace: str = "", params: ScanParams = DEFAULTS) -> RunResult | State[Any]:
    """Scan one namespace, or (namespace empty) the namespaces of `params`: the shards a fleet scan
    dispatches to workers."""
    return scan_run(_resolve(params.model_copy(update={"namespaces": [namespace]}) if namespace else params))


@flow(
    name="workload-scan",
    flow_run_name=workload_run_name,
    task_runner=_threads(2),
    **REVOKE_ON_EXIT,
)
def workload_scan(
    namespace: str,
    kind: Literal["Deployment", "StatefulSet", "DaemonSet", "Job", "Pod"],
    name: str,
    params: ScanParams = DEFAULTS,
) -> RunResult | State[Any]:
    """Scan the containers of one workload, e.g. as soon as it is deployed: the same path as a fleet
    scan, with the selection narrowed to the workload's current pods."""
    return scan_run(_resolve(params.model_copy(update={"namespaces": [namespace], "workload": f"{kind}/{name}"})))
