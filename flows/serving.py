"""The three deployments of prefect.yaml, served from one process (`fleetscan serve`) for teams without
workers: the nightly schedule and the deploy-event trigger are live while it runs."""

from __future__ import annotations

from typing import Any

from prefect import serve
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron

from fleetscan.deploy_events import EVENT
from fleetscan.settings import ScanParams

from .fleet import fleet_scan, workload_scan


def deployments(params: ScanParams, *, cron: str = "0 2 * * *", timezone: str = "UTC") -> list[Any]:
    defaults = {"params": params.model_dump(mode="json")}
    return [
        fleet_scan.to_deployment(
            name="fleet-scan-nightly",
            schedules=[Cron(cron, timezone=timezone)],
            parameters=defaults,
            tags=["fleetscan", "nightly"],
        ),
        fleet_scan.to_deployment(name="fleet-scan", parameters=defaults, tags=["fleetscan", "adhoc"]),
        workload_scan.to_deployment(
            name="workload-scan-on-deploy",
            parameters=defaults,
            tags=["fleetscan", "deploy"],
            triggers=[
                DeploymentEventTrigger(
                    expect={EVENT},
                    match={"prefect.resource.id": "fleetscan.workload.*"},
                    parameters={
                        "namespace": "{{ event.resource['fleetscan.namespace'] }}",
                        "kind": "{{ event.resource['fleetscan.kind'] }}",
                        "name": "{{ event.resource['fleetscan.name'] }}",
                    },
                )
            ],
        ),
    ]


def serve_all(params: ScanParams, *, limit: int = 4, cron: str = "0 2 * * *", timezone: str = "UTC") -> None:
    serve(*deployments(params, cron=cron, timezone=timezone), limit=limit)
