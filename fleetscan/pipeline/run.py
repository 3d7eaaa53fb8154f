"""A run from its settings: every input checked before any cluster call, the run directory opened
(or resumed, if it scans the same thing), and the typed result every flow returns."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import engines
from ..access import AccessSettings
from ..engines import Engine
from ..errors import UsageError
from ..kube.client import ClientSettings, Kube, connect
from ..kube.credentials import revoke_run, sweep_kubeconfigs
from ..kube.discovery import Discovery, discover
from ..kube.pods import ephemeral_containers_supported
from ..kube.targets import Target
from ..results.baseline import BaselineRef, default_history
from ..results.records import EXIT_FAILED, EXIT_PASSED, TargetRecord, exit_code
from ..results.rundir import RunDir
from ..results.threshold import Threshold, load_run_threshold
from ..results.waivers import Waivers, load_waivers
from ..retry import RetryPolicy
from ..settings import ScanParams


@dataclass
class RunResult:
    """What every flow returns and the CLI prints: the outcome counts decide the exit code."""

    run_id: str
    out: str
    totals: dict[str, int] = field(default_factory=dict)
    report: str = ""  # report.html, when the run was aggregated
    shards: int = 0  # dispatched shard runs, when the run dispatched
    new_failures: int | None = None  # against the baseline, when the run has one
    fail_on_new: bool = False
    warnings: list[str] = field(default_factory=list)  # e.g. metrics that could not be pushed

    @property
    def exit_code(self) -> int:
        """From the records; with --fail-on-new, 1 means a finding the baseline did not have."""
        if not self.fail_on_new or self.new_failures is None or self.totals.get("error"):
            return exit_code(self.totals)
        return EXIT_FAILED if self.new_failures else EXIT_PASSED


def check_inputs(params: ScanParams) -> tuple[Engine, Threshold, Waivers]:
    """The engine (its profile and inputs parsed), the threshold, the waivers and the baseline: bad
    ones raise UsageError or ThresholdError, before any cluster call."""
    params.selection()  # names and globs are valid
    if params.fail_on_new and not params.baseline:
        raise UsageError("--fail-on-new needs --baseline RUN_DIR (or --baseline previous)")
    if (ref := baseline_ref(params)) is not None:
        ref.check()
    if params.metrics and not Path(params.metrics).parent.is_dir():
        raise UsageError(f"--metrics {params.metrics}: the folder {Path(params.metrics).parent} does not exist")
    return engines.build(params), load_run_threshold(params.threshold), load_waivers(params.waivers)


def baseline_ref(params: ScanParams) -> BaselineRef | None:
    """The run's baseline, if it has one and aggregates (shards leave the comparison to their parent)."""
    if not params.baseline or not params.aggregate:
        return None
    history = Path(params.history) if params.history else default_history(Path(params.out or "."))
    return BaselineRef(params.baseline, history)


def client_for(params: ScanParams) -> Kube:
    settings = ClientSettings(
        qps=params.qps,
        burst=params.burst,
        request_timeout=params.request_timeout,
        retry=RetryPolicy(retries=params.retries),
    )
    return connect(params.kubeconfig, params.context, settings)


def identity(params: ScanParams, engine: Engine, threshold: Threshold, waivers: Waivers) -> dict[str, Any]:
    """What a run scans and how it judges: a resume must match it."""
    return {
        "profile": engine.profile_id,
        "threshold": f"{threshold.name} sha256:{threshold.sha256[:16]}",
        "waivers": waivers.identity,
        "engine": params.engine,
        "inputs": dict(sorted(params.inputs.items())),
        "approach": params.approach,
        "namespaces": sorted(params.namespaces),
        "namespace_selector": params.namespace_selector,
        "exclude_namespaces": sorted(params.exclude_namespaces),
        "selector": params.selector,
        "workload": params.workload,
        "one_per_workload": params.one_per_workload,
    }


@dataclass
class RunSetup:
    params: ScanParams
    kube: Kube
    engine: Engine
    threshold: Threshold
    waivers: Waivers
    run: RunDir
    access: AccessSettings


def prepare(params: ScanParams) -> RunSetup:
    """Inputs checked, the run directory opened, then the first cluster call."""
    engine, threshold, waivers = check_inputs(params)
    sweep_kubeconfigs()  # what a killed run left on disk goes before this one starts
    kube = client_for(params)
    run = RunDir.open(
        Path(params.out),
        params.run_id,
        identity(params, engine, threshold, waivers),
        params=params.model_dump(mode="json"),
        shard=not params.aggregate,
    )
    return RunSetup(params, kube, engine, threshold, waivers, run, access_settings(params, kube))


def access_settings(params: ScanParams, kube: Kube) -> AccessSettings:
    """How containers are reached in this run; asks the cluster whether it has ephemeral containers."""
    return AccessSettings(
        approach=params.approach,
        allow_debug=params.allow_debug,
        debug_image=params.debug_image,
        ephemeral_supported=ephemeral_containers_supported(kube),
    )


Plan = Discovery  # what a run scans: the selected targets and the containers skipped, with why

__all__ = ["Plan", "RunResult", "RunSetup", "Target"]


def make_plan(setup: RunSetup) -> Plan:
    """The run's Selection resolved against the cluster (one LIST per namespace)."""
    return discover(setup.kube, setup.params.selection())


def record_skipped(run: RunDir, plan: Discovery) -> None:
    """The containers discovery decided not to scan get their `skipped` record (once)."""
    finished = run.finished()
    for skipped in plan.skipped:
        record = TargetRecord.for_skipped(skipped)
        if record.key not in finished:
            run.record(record)


def todo(run: RunDir, plan: Discovery) -> dict[str, list[Target]]:
    """The targets still to scan (a resumed run skips what finished), by namespace."""
    finished = run.finished()
    by_namespace: dict[str, list[Target]] = defaultdict(list)
    for target in plan.targets:
        if target.key not in finished:
            by_namespace[target.namespace].append(target)
    return dict(by_namespace)


def shards(namespaces: list[str], size: int) -> list[list[str]]:
    return [namespaces[i : i + size] for i in range(0, len(namespaces), size)]


def revoke_leftovers(params: ScanParams, run_id: str) -> list[str]:
    """Delete whatever credentials run `run_id` still holds (after a failure, a crash, a cancellation
    or at the end of a resumed run): in the namespaces it names one by one, else in all."""
    named = params.namespaces if params.namespaces and not any(c in "".join(params.namespaces) for c in "*?[") else None
    return revoke_run(client_for(params), run_id, named)


def publish_policy_reports(setup: RunSetup, folder: Path) -> tuple[int, list[str]]:
    """The PolicyReports the aggregation wrote to `folder`, created or replaced in the cluster with
    the orchestrator's identity: (namespaces written, problems)."""
    from ..report.policy_reports import publish, read

    reports = read(folder)
    problems = publish(setup.kube, reports)
    return len(reports) - len(problems), problems
