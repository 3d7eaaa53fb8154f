"""The pipeline's Prefect tasks.

Granularity follows what was measured: one task per namespace, whose containers a bounded pool
scans inside it (one task per container drowns the API server in task-run records at fleet scale).
Per-container tasks exist for small runs such as a workload scan. Only errors fleetscan classes as
retryable are retried (never a 403). Timeouts live inside the exec and subprocess calls, because a
task's `timeout_seconds` cannot interrupt blocking I/O in a worker thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from fleetscan.errors import FleetscanError
from fleetscan.kube.client import Kube
from fleetscan.kube.credentials import CredentialSettings, NamespaceCredentials
from fleetscan.kube.discovery import Discovery, Selection, discover
from fleetscan.kube.targets import Target
from fleetscan.pipeline.aggregate import RunSummary, aggregate
from fleetscan.pipeline.records import TargetRecord
from fleetscan.pipeline.rundir import RunDir
from fleetscan.pipeline.scanning import ScanContext, decide_approach, scan_namespace, scan_target


def retryable(task: Any, task_run: Any, state: Any) -> bool:
    """retry_condition_fn: only what fleetscan classes as worth retrying (429, 5xx, dropped streams)."""
    try:
        state.result()
    except FleetscanError as exc:
        return exc.retryable
    except Exception:
        return False
    return False


_COMMON: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "persist_result": False,
    "retry_condition_fn": retryable,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
}


@task(name="discover-targets", retries=3, tags=["fleetscan", "kube-api"], **_COMMON)
def discover_targets(kube: Kube, selection: Selection) -> Discovery:
    found = discover(kube, selection)
    get_run_logger().info(
        "discovered %d containers in %d namespaces (%d skipped)",
        len(found.targets),
        len(found.namespaces),
        len(found.skipped),
    )
    return found


@task(
    name="scan-namespace",
    task_run_name="scan-{namespace}",
    retries=2,
    tags=["fleetscan", "scan"],
    **_COMMON,
)
def scan_namespace_task(ctx: ScanContext, namespace: str, targets: list[Target]) -> list[TargetRecord]:
    records = scan_namespace(ctx, namespace, targets)
    counts = {o: sum(1 for r in records if r.outcome == o) for o in ("passed", "failed", "error", "skipped")}
    get_run_logger().info("namespace %s: %s", namespace, ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    return records


@task(
    name="issue-credentials",
    task_run_name="credentials-{namespace}",
    retries=3,
    tags=["fleetscan", "kube-api"],
    **_COMMON,
)
def issue_credentials(
    kube: Kube, namespace: str, run_id: str, pods: list[str], token_seconds: int = 900
) -> NamespaceCredentials:
    creds = NamespaceCredentials(kube, namespace, run_id, pods, settings=CredentialSettings(token_seconds))
    creds.__enter__()
    get_run_logger().info("issued credentials %s in %s for %d pod(s)", creds.name, namespace, len(pods))
    return creds


@task(
    name="revoke-credentials",
    task_run_name="revoke-{creds.namespace}",
    retries=3,
    tags=["fleetscan", "kube-api"],
    **_COMMON,
)
def revoke_credentials(creds: NamespaceCredentials) -> None:
    creds.revoke()


@task(
    name="scan-target",
    task_run_name="scan-{target.namespace}/{target.pod}/{target.container}",
    tags=["fleetscan", "scan"],
    **_COMMON,
)
def scan_target_task(ctx: ScanContext, creds: NamespaceCredentials, target: Target) -> TargetRecord:
    """Approach, engine and threshold for one container (retries inside, per retryable error)."""
    kube = creds.scan_client()
    decision, probes = decide_approach(ctx, kube, target)
    if decision.approach == "debug":
        creds.grant_debug([target.pod])
    record = scan_target(ctx, kube, creds, target, decision, probes)
    get_run_logger().info("%s: %s %s", record.key, record.outcome, record.reason)
    return record


@task(name="aggregate-run", **_COMMON)
def aggregate_run(run: RunDir, started_at: str, profile: str, threshold: str, history: str = "") -> RunSummary:
    return aggregate(
        run, started_at=started_at, profile=profile, threshold=threshold, history=Path(history) if history else None
    )


@task(name="publish-artifacts", **_COMMON)
def publish_artifacts(summary: RunSummary, run: RunDir) -> None:
    """Per-namespace table, a markdown summary with the worst namespaces and controls, and the report."""
    create_table_artifact(
        key="fleetscan-namespaces",
        table=summary.namespaces or [{"namespace": "-"}],
        description=f"run {summary.run_id}: results per namespace",
    )
    text = (run.path / "report.md").read_text()  # written by aggregate: worst namespaces and controls, changes
    create_markdown_artifact(key="fleetscan-summary", markdown=text, description=f"run {summary.run_id}")
    report = (run.path / "report.html").resolve()
    create_link_artifact(key="fleetscan-report", link=report.as_uri(), link_text=f"report of run {summary.run_id}")
