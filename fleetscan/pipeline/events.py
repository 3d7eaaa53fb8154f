"""The events a run announces (emitted by the flow as Prefect events, so automations can react):
one `fleetscan.run.completed` per run and one `fleetscan.namespace.scanned` per namespace. Their
resources name the run, the namespace and the cluster; resource labels carry what automations
match on (`fleetscan.threshold`, `fleetscan.outcome`), payloads carry the numbers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from ..results.records import EXIT_ERROR, EXIT_FAILED, exit_code

RUN_COMPLETED = "fleetscan.run.completed"
NAMESPACE_SCANNED = "fleetscan.namespace.scanned"
OUTCOME = {0: "passed", EXIT_FAILED: "failed", EXIT_ERROR: "error"}


@dataclass(frozen=True)
class EventSpec:
    event: str
    resource: dict[str, str]
    payload: dict[str, Any]
    related: list[dict[str, str]] = field(default_factory=list)


def cluster_name(context: str | None, server: str) -> str:
    """How events name the cluster: the kubeconfig context when given, else the API server's host."""
    raw = context or urlparse(server).netloc or server or "cluster"
    return re.sub(r"[^A-Za-z0-9_.:-]", "-", raw)[:100]


def run_events(summary: dict[str, Any], *, cluster: str, report: str) -> list[EventSpec]:
    run_id = summary["run_id"]
    totals = summary.get("totals") or {}
    outcome = OUTCOME[exit_code(totals)]
    cluster_ref = {"prefect.resource.id": f"fleetscan.cluster.{cluster}", "prefect.resource.role": "cluster"}
    run_ref = {"prefect.resource.id": f"fleetscan.run.{run_id}", "prefect.resource.role": "run"}
    baseline = summary.get("baseline") or {}
    out = [
        EventSpec(
            RUN_COMPLETED,
            {
                "prefect.resource.id": f"fleetscan.run.{run_id}",
                "prefect.resource.name": run_id,
                "fleetscan.cluster": cluster,
                "fleetscan.outcome": outcome,
            },
            {
                "run_id": run_id,
                "totals": totals,
                "fleet_compliance": summary.get("fleet_compliance"),
                "threshold": outcome,  # passed: every container met it; failed: some missed it; error: unscanned
                "report": report,
                "namespaces": len(summary.get("namespaces") or []),
                **({"new_failures": baseline.get("new")} if baseline else {}),
            },
            [cluster_ref],
        )
    ]
    for ns in summary.get("namespaces") or []:
        met = "passed" if not ns.get("failed") and not ns.get("error") else "failed"
        out.append(
            EventSpec(
                NAMESPACE_SCANNED,
                {
                    "prefect.resource.id": f"fleetscan.namespace.{cluster}.{ns['namespace']}",
                    "prefect.resource.name": ns["namespace"],
                    "fleetscan.namespace": ns["namespace"],
                    "fleetscan.cluster": cluster,
                    "fleetscan.threshold": met,
                },
                {
                    "run_id": run_id,
                    "namespace": ns["namespace"],
                    "compliance": ns.get("compliance"),
                    "containers": ns.get("containers", 0),
                    **{k: ns.get(k, 0) for k in ("passed", "failed", "error", "skipped")},
                    "threshold": met,
                    "failed_controls": ns.get("failed_controls") or {},
                },
                [run_ref, cluster_ref],
            )
        )
    return out
