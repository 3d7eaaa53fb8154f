"""Prometheus metrics of a run, from its summary alone: a text file for node_exporter's textfile
collector (written atomically) and/or a push to a Pushgateway. Cardinality is bounded by the
namespaces: no pod or container labels, and per-workload series only when asked for."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest, push_to_gateway

from ..results.files import write_bytes_atomic
from ..results.hdf import CANONICAL_SEVERITIES
from ..results.records import OUTCOMES

log = logging.getLogger(__name__)

JOB = "fleetscan"


def _seconds(started: str, finished: str) -> float:
    try:
        return max(0.0, (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds())
    except ValueError:
        return 0.0


def registry_of(summary: dict[str, Any], *, per_workload: bool = False) -> CollectorRegistry:
    """The run's metrics: per namespace its compliance, whether it met its threshold, containers by
    outcome and failed controls by severity; for the run its compliance, duration and errors."""
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(f"fleetscan_{name}", doc, labels, registry=registry)

    by_ns = ("namespace",)
    compliance = gauge("namespace_compliance_percent", "Mean SAF compliance of the namespace's containers", by_ns)
    met = gauge(
        "namespace_threshold_met",
        "1 if every container of the namespace met its threshold (none failed, none in error)",
        by_ns,
    )
    containers = gauge("containers", "Containers of the last run by outcome", ("namespace", "outcome"))
    failed = gauge("failed_controls", "Failed control results by severity", ("namespace", "severity"))
    for ns in summary.get("namespaces") or []:
        name = ns["namespace"]
        if ns.get("compliance") is not None:
            compliance.labels(name).set(ns["compliance"])
        met.labels(name).set(1 if not ns.get("failed") and not ns.get("error") else 0)
        for outcome in OUTCOMES:
            containers.labels(name, outcome).set(ns.get(outcome, 0))
        for severity in CANONICAL_SEVERITIES:
            failed.labels(name, severity).set((ns.get("failed_controls") or {}).get(severity, 0))
    totals = summary.get("totals") or {}
    fleet = gauge("fleet_compliance_percent", "Mean SAF compliance of the fleet's scanned containers")
    if summary.get("fleet_compliance") is not None:
        fleet.set(summary["fleet_compliance"])
    gauge("scan_errors", "Containers that could not be scanned in the last run").set(totals.get("error", 0))
    gauge("scan_duration_seconds", "Wall time of the last run").set(
        _seconds(summary.get("started_at", ""), summary.get("finished_at", ""))
    )
    gauge("last_run_timestamp_seconds", "When the last run finished (Unix time)").set(
        datetime.fromisoformat(summary["finished_at"]).timestamp() if summary.get("finished_at") else 0
    )
    if baseline := summary.get("baseline"):
        gauge("new_findings", "Findings failing now that did not fail in the baseline run").set(baseline["new"])
    waivers = summary.get("waivers") or {}
    if waivers.get("file"):
        gauge("waived_controls", "Control results a waiver in force covered").set(waivers.get("waived_controls", 0))
        gauge("expired_waivers", "Waivers of the file past their expiry").set(len(waivers.get("expired") or []))
    if per_workload:
        _workloads(summary, gauge)
    return registry


def _workloads(summary: dict[str, Any], gauge: Any) -> None:
    """Opt-in: one series per workload (as many as the fleet has workloads)."""
    labels = ("namespace", "workload")
    compliance = gauge("workload_compliance_percent", "Mean SAF compliance of the workload's containers", labels)
    failed = gauge("workload_failed_controls", "Failed control results of the workload's containers", labels)
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    failures: Counter[tuple[str, str]] = Counter()
    for t in summary.get("targets") or []:
        key = (t["namespace"], f"{t.get('workload_kind') or 'Pod'}/{t.get('workload_name') or t['pod']}")
        failures[key] += int((t.get("counts") or {}).get("failed", 0))
        if t.get("compliance") is not None:
            scores[key].append(float(t["compliance"]))
    for key in sorted(set(scores) | set(failures)):
        if scores.get(key):
            compliance.labels(*key).set(round(sum(scores[key]) / len(scores[key]), 1))
        failed.labels(*key).set(failures[key])


def export(summary: dict[str, Any], *, path: str = "", pushgateway: str = "", per_workload: bool = False) -> str:
    """Write and/or push the run's metrics; a Pushgateway that cannot be reached is reported, not
    fatal (the run's results are on disk): returns the problem, or ""."""
    registry = registry_of(summary, per_workload=per_workload)
    if path:
        write_bytes_atomic(Path(path), generate_latest(registry))
    if pushgateway:
        try:
            push_to_gateway(pushgateway, job=JOB, registry=registry, timeout=30)
        except OSError as exc:
            problem = f"could not push the metrics to {pushgateway}: {exc}"
            log.warning("%s", problem)
            return problem
    return ""
