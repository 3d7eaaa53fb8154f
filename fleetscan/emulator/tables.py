"""`as=Table` responses, so `kubectl get` prints the usual columns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .clock import Clock

Obj = dict[str, Any]


def _col(name: str, kind: str = "string", priority: int = 0, fmt: str = "") -> Obj:
    return {"name": name, "type": kind, "format": fmt, "description": name, "priority": priority}


def age(clock: Clock, timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").timestamp()
    seconds = max(0, int(clock.now() - then))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _pod_status(pod: Obj) -> str:
    for st in pod.get("status", {}).get("containerStatuses") or []:
        waiting = (st.get("state") or {}).get("waiting")
        if waiting:
            return str(waiting.get("reason") or "Waiting")
    return str(pod.get("status", {}).get("phase", "Unknown"))


def _cells(kind: str, obj: Obj, clock: Clock) -> tuple[list[Obj], list[Any]]:
    meta = obj["metadata"]
    status = obj.get("status") or {}
    created = age(clock, meta.get("creationTimestamp"))
    if kind == "Pod":
        statuses = status.get("containerStatuses") or []
        ready = sum(1 for s in statuses if s.get("ready"))
        return (
            [
                _col("Name", fmt="name"),
                _col("Ready"),
                _col("Status"),
                _col("Restarts", "string"),
                _col("Age"),
                _col("IP", priority=1),
                _col("Node", priority=1),
            ],
            [
                meta["name"],
                f"{ready}/{len(obj['spec'].get('containers') or [])}",
                _pod_status(obj),
                str(sum(int(s.get("restartCount", 0)) for s in statuses)),
                created,
                status.get("podIP", "<none>"),
                obj["spec"].get("nodeName", "<none>"),
            ],
        )
    if kind in ("Deployment", "StatefulSet", "ReplicaSet"):
        want = obj.get("spec", {}).get("replicas", 1)
        return (
            [_col("Name", fmt="name"), _col("Ready"), _col("Up-to-date"), _col("Available"), _col("Age")],
            [
                meta["name"],
                f"{status.get('readyReplicas', 0)}/{want}",
                status.get("updatedReplicas", 0),
                status.get("availableReplicas", 0),
                created,
            ],
        )
    if kind == "Node":
        condition: Obj = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
        roles = sorted(k.split("/", 1)[1] for k in meta.get("labels") or {} if k.startswith("node-role.kubernetes.io/"))
        info = status.get("nodeInfo") or {}
        return (
            [
                _col("Name", fmt="name"),
                _col("Status"),
                _col("Roles"),
                _col("Age"),
                _col("Version"),
                _col("Internal-IP", priority=1),
                _col("External-IP", priority=1),
                _col("OS-Image", priority=1),
                _col("Kernel-Version", priority=1),
                _col("Container-Runtime", priority=1),
            ],
            [
                meta["name"],
                "Ready" if condition.get("status") == "True" else "NotReady",
                ",".join(roles) or "<none>",
                created,
                info.get("kubeletVersion", ""),
                addresses.get("InternalIP", "<none>"),
                addresses.get("ExternalIP", "<none>"),
                info.get("osImage", ""),
                info.get("kernelVersion", ""),
                info.get("containerRuntimeVersion", ""),
            ],
        )
    if kind == "Event":
        involved = obj.get("involvedObject") or obj.get("regarding") or {}
        return (
            [_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message")],
            [
                age(
                    clock,
                    obj.get("lastTimestamp") or obj.get("deprecatedLastTimestamp") or meta.get("creationTimestamp"),
                ),
                obj.get("type", ""),
                obj.get("reason", ""),
                f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
                obj.get("message") or obj.get("note") or "",
            ],
        )
    if kind == "Namespace":
        return (
            [_col("Name", fmt="name"), _col("Status"), _col("Age")],
            [meta["name"], status.get("phase", ""), created],
        )
    return [_col("Name", fmt="name"), _col("Age")], [meta["name"], created]


def _field(obj: Any, path: str) -> Any:
    """A simple JSONPath (`.summary.pass`) of printer columns; None when absent."""
    for part in path.strip().lstrip(".").split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _printer_cells(printer: tuple[Obj, ...], obj: Obj, clock: Clock) -> tuple[list[Obj], list[Any]]:
    """Name, then a CRD's additionalPrinterColumns, as the API server builds them."""
    columns = [_col("Name", fmt="name")]
    cells: list[Any] = [obj["metadata"]["name"]]
    for c in printer:
        kind = "string" if c.get("type") == "date" else c.get("type", "string")
        columns.append(_col(c["name"], kind, int(c.get("priority", 0))))
        value = _field(obj, c.get("jsonPath", ""))
        cells.append(age(clock, value) if c.get("type") == "date" else value)
    return columns, cells


def table(
    kind: str, items: list[Obj], clock: Clock, list_meta: Obj, include_object: str, printer: tuple[Obj, ...] = ()
) -> Obj:
    def cells(obj: Obj) -> tuple[list[Obj], list[Any]]:
        return _printer_cells(printer, obj, clock) if printer else _cells(kind, obj, clock)

    columns: list[Obj] = cells({"metadata": {"name": ""}, "spec": {}})[0]
    rows = []
    for obj in items:
        row: Obj = {"cells": cells(obj)[1]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": rows,
    }
