"""The pipeline's Prefect tasks: one step each, thin wrappers over fleetscan.pipeline.

Granularity follows what was measured: one task per namespace, whose containers a bounded pool
scans inside it (one task per container drowns the API server in task-run records at fleet scale).
No task retries: fleetscan retries each API call and exec itself, in one layer, so a failure costs a
bounded number of tries. Timeouts live in the exec and API calls, because a task's
`timeout_seconds` cannot interrupt blocking I/O in a worker thread. No tags: a tagged task run acquires
its tag limits on the server before it starts, limit or not; on a SQLite server (the CLI's
temporary one) that acquisition fails ("database is locked") when another write lands between its
read and its write, Prefect's client tries again 2 s later, and every namespace starting then
waits. Runs share limits through `fleetscan-scans` (flows/fleet.py).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from fleetscan.pipeline.aggregate import RunSummary, aggregate
from fleetscan.pipeline.events import cluster_name, run_events
from fleetscan.pipeline.run import Plan, RunSetup, Target, make_plan, publish_policy_reports
from fleetscan.pipeline.scan import Scanner
from fleetscan.results.baseline import BaselineRef
from fleetscan.results.records import totals
from fleetscan.results.rundir import RunDir
from fleetscan.results.waivers import NO_WAIVERS, Waivers
from fleetscan.settings import ScanParams

# Nothing a task returns is cached or persisted: results hold no secret, but they are big and
# worthless once the run is summarised.
_COMMON: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}


@task(name="plan", **_COMMON)
def plan_task(setup: RunSetup) -> Plan:
    found = make_plan(setup)
    get_run_logger().info(
        "selected %d containers in %d namespaces (%d not scanned: skipped)",
        len(found.targets),
        len(found.namespaces),
        len(found.skipped),
    )
    return found


@task(name="scan-namespace", task_run_name="scan-{namespace}", **_COMMON)
def scan_namespace_task(scanner: Scanner, namespace: str, targets: list[Target]) -> dict[str, int]:
    """Scan a namespace's containers; their records are in the run directory, so only the counts
    come back (a future keeps its result until the flow ends: records would grow with the fleet)."""
    counts = totals(scanner.scan_namespace(namespace, targets))
    get_run_logger().info(
        "namespace %s: %s", namespace, ", ".join(f"{v} {k}" for k, v in counts.items() if v and k != "targets")
    )
    return counts


@task(name="aggregate-run", **_COMMON)
def aggregate_task(
    run: RunDir,
    started_at: str,
    profile: str,
    threshold: str,
    history: str = "",
    waivers: Waivers = NO_WAIVERS,
    baseline: BaselineRef | None = None,
    policy_reports: str = "",
) -> RunSummary:
    return aggregate(
        run,
        started_at=started_at,
        profile=profile,
        threshold=threshold,
        history=Path(history) if history else None,
        waivers=waivers,
        baseline=baseline,
        policy_reports=Path(policy_reports) if policy_reports else None,
    )


@task(name="export-metrics", **_COMMON)
def export_metrics_task(summary: RunSummary, params: ScanParams) -> str:
    """The run's Prometheus metrics to a file and/or a Pushgateway; returns a problem, or ""."""
    from fleetscan.report.metrics import export

    problem = export(
        summary.to_dict(), path=params.metrics, pushgateway=params.pushgateway, per_workload=params.metrics_per_workload
    )
    if problem:
        get_run_logger().warning("%s", problem)
    return problem


@task(name="publish-policy-reports", **_COMMON)
def publish_policy_reports_task(setup: RunSetup, folder: str) -> list[str]:
    """The run's PolicyReports (written by the aggregation) created or replaced in the cluster."""
    written, problems = publish_policy_reports(setup, Path(folder))
    get_run_logger().info("PolicyReports of %d namespace(s) written to the cluster", written)
    for problem in problems:
        get_run_logger().warning("%s", problem)
    return problems


@task(name="emit-events", **_COMMON)
def emit_events_task(summary: RunSummary, setup: RunSetup, report: str) -> int:
    """fleetscan.run.completed and one fleetscan.namespace.scanned per namespace, for automations."""
    cluster = cluster_name(setup.params.context, setup.kube.server)
    specs = run_events(summary.to_dict(), cluster=cluster, report=report)
    for spec in specs:
        emit_event(event=spec.event, resource=spec.resource, payload=spec.payload, related=spec.related)
    get_run_logger().info("emitted %d event(s) for run %s", len(specs), summary.run_id)
    return len(specs)


@task(name="publish-artifacts", **_COMMON)
def publish_artifacts(summary: RunSummary, run: RunDir, report: str) -> None:
    """Per-namespace table, the Markdown report (worst namespaces and controls, changes) and a link
    to the HTML report: the same tables and rankings as summary.json and report.md."""
    create_table_artifact(
        key="fleetscan-namespaces",
        table=summary.namespaces or [{"namespace": "-"}],
        description=f"run {summary.run_id}: results per namespace, worst first",
    )
    text = (run.path / "report.md").read_text()
    create_markdown_artifact(key="fleetscan-summary", markdown=text, description=f"run {summary.run_id}")
    if "://" in report:  # on the share: opens from wherever the UI user is
        link, text = report, f"report of run {summary.run_id}"
    else:  # only on the machine that ran it: say where
        link, text = Path(report).as_uri(), f"report of run {summary.run_id} (on {socket.gethostname()}: {report})"
    create_link_artifact(key="fleetscan-report", link=link, link_text=text)
