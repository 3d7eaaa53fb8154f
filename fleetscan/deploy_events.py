"""The `fleetscan.workload.deployed` event, posted to a Prefect server's events API over HTTP.

A self-hosted Prefect server accepts a JSON list of events at `POST <api>/events` (HTTP 204); a
deployment trigger turns each into a `workload_scan` run. CI jobs (`fleetscan notify-deploy`) and
the rollout watcher (`fleetscan watch`) send the same event.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from typing import Any

from .errors import FleetscanError, UsageError
from .kube.discovery import WORKLOAD_KINDS, workload_ref
from .kube.names import check_label
from .retry import RetryPolicy

EVENT = "fleetscan.workload.deployed"
KINDS = WORKLOAD_KINDS


def deploy_event(namespace: str, kind: str, name: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    check_label(namespace, "namespace")
    kind, name = workload_ref(f"{kind}/{name}")
    return {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "event": EVENT,
        "resource": {
            "prefect.resource.id": f"fleetscan.workload.{namespace}.{kind.lower()}.{name}",
            "prefect.resource.name": f"{kind} {namespace}/{name}",
            "fleetscan.namespace": namespace,
            "fleetscan.kind": kind,
            "fleetscan.name": name,
        },
        "payload": payload or {},
    }


def post_events(api_url: str, events: list[dict[str, Any]], *, auth: str | None = None, timeout: float = 30) -> None:
    """POST events to `<api_url>/events` (PREFECT_API_URL already ends in /api)."""
    if not api_url:
        raise UsageError("no Prefect API: set PREFECT_API_URL (e.g. http://prefect:4200/api)")
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    request = urllib.request.Request(
        f"{api_url.rstrip('/')}/events", data=json.dumps(events).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.status not in (200, 201, 202, 204):
                raise FleetscanError(f"the Prefect events API answered {response.status}")
    except urllib.error.HTTPError as exc:
        raise FleetscanError(
            f"the Prefect events API refused the event: {exc.code} {exc.read().decode(errors='replace')[:300]}"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise FleetscanError(f"cannot reach the Prefect API at {api_url}: {exc}", retryable=True) from exc


# A Prefect server restart takes seconds: 2, 4, 8 and 16 s apart (jittered) rides it out.
EVENT_RETRY = RetryPolicy(retries=4, base_seconds=2.0)


def post_with_retries(
    api_url: str, events: list[dict[str, Any]], *, auth: str | None = None, policy: RetryPolicy = EVENT_RETRY
) -> None:
    """Like post_events, but rides out a Prefect server restart: a rollout seen by the watcher has
    no second chance to be reported."""
    policy.run(lambda: post_events(api_url, events, auth=auth), what="post the deploy event")
