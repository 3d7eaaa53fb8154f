"""Events: stored once as core/v1 Events and served also as events.k8s.io/v1, as the API server
does (one storage, two views); and the events the emulator's kubelet and scheduler record."""

from __future__ import annotations

import copy
import itertools
import time
from typing import Any

from .clock import Clock

Obj = dict[str, Any]
EVENTS_GROUP = "events.k8s.io"
# How long an event lives (the API server's --event-ttl default), in the emulator's clock.
EVENT_TTL = 3600.0

# events.k8s.io/v1 field -> core/v1 field, for the fields that only change names.
_RENAMED = {
    "regarding": "involvedObject",
    "note": "message",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
    "reportingController": "reportingComponent",
}
_SERIAL = itertools.count()
_SAME = ("metadata", "reason", "type", "action", "related", "series", "reportingInstance", "eventTime")


def to_events_v1(core: Obj) -> Obj:
    """The events.k8s.io/v1 view of a stored core/v1 Event."""
    out: Obj = {"kind": "Event", "apiVersion": f"{EVENTS_GROUP}/v1"}
    for key in _SAME:
        if core.get(key) is not None:
            out[key] = copy.deepcopy(core[key])
    for new, old in _RENAMED.items():
        if core.get(old) not in (None, "", {}):
            out[new] = copy.deepcopy(core[old])
    if not out.get("eventTime"):
        # A real server leaves it null for core/v1-written events, which the official Python client
        # cannot read; the emulator gives the first timestamp instead (a documented difference).
        stamp = core.get("firstTimestamp") or core.get("metadata", {}).get("creationTimestamp") or ""
        out["eventTime"] = stamp.replace("Z", ".000000Z") if stamp else None
    return out


def to_core(event: Obj) -> Obj:
    """A core/v1 Event from an events.k8s.io/v1 body (to store it)."""
    out: Obj = {"kind": "Event", "apiVersion": "v1"}
    for key in _SAME:
        if event.get(key) is not None:
            out[key] = copy.deepcopy(event[key])
    for new, old in _RENAMED.items():
        if event.get(new) is not None:
            out[old] = copy.deepcopy(event[new])
    out.setdefault("involvedObject", {})
    return out


def validate(event: Obj, from_events_api: bool) -> list[tuple[str, str]]:
    """The checks both APIs make; events.k8s.io/v1 also requires eventTime and a reporting controller."""
    causes = []
    involved = event.get("involvedObject") or {}
    namespace = (event.get("metadata") or {}).get("namespace", "")
    if involved.get("namespace") and involved["namespace"] != namespace:
        causes.append(
            ("involvedObject.namespace", f'Invalid value: "{involved["namespace"]}": does not match event.namespace')
        )
    if from_events_api:
        if not event.get("eventTime"):
            causes.append(("eventTime", "Required value"))
        if not event.get("reportingComponent"):
            causes.append(("reportingController", "Required value"))
        if not event.get("reportingInstance"):
            causes.append(("reportingInstance", "Required value"))
        if not event.get("action"):
            causes.append(("action", "Required value"))
    if event.get("type") not in (None, "", "Normal", "Warning"):
        causes.append(("type", f'Unsupported value: "{event["type"]}": supported values: "Normal", "Warning"'))
    return causes


def record(clock: Clock, involved: Obj, type_: str, reason: str, message: str, component: str, host: str = "") -> Obj:
    """A core/v1 Event about `involved` (a stored object), as a component's event recorder writes it."""
    meta = involved["metadata"]
    now = clock.iso()
    namespace = meta.get("namespace") or "default"
    return {
        "metadata": {"name": f"{meta['name']}.{time.time_ns() + next(_SERIAL):x}", "namespace": namespace},
        "involvedObject": {
            "kind": involved.get("kind", ""),
            "namespace": meta.get("namespace", ""),
            "name": meta["name"],
            "uid": meta.get("uid", ""),
            "apiVersion": involved.get("apiVersion", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": reason,
        "message": message,
        "source": {"component": component, **({"host": host} if host else {})},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": type_,
        "eventTime": None,
        "reportingComponent": component,
        "reportingInstance": host or component,
    }
