"""PolicyReports (wgpolicyk8s.io/v1alpha2, the Kubernetes Policy WG's format that Policy Reporter
and Kyverno read): one per scanned namespace, one result per workload and control. Built from the
run's tables, written as YAML, and created or replaced in the cluster, touching only the reports
fleetscan manages there. A namespace whose results would not fit one object (etcd refuses objects
over 1.5 MiB) gets numbered parts."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..errors import Conflict, FleetscanError, NotFound
from ..kube.client import Kube
from ..results.files import write_text_atomic
from .frames import RunFrames

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "wgpolicyk8s.io", "v1alpha2", "policyreports"
NAME = "fleetscan"
MANAGED = {"app.kubernetes.io/managed-by": "fleetscan"}
PART_BYTES = 900_000  # well under etcd's 1.5 MiB per object
CRD_FILE = "deployments/policy-reports/policyreports.crd.yaml"

_RANK = {"error": 4, "failed": 3, "passed": 2, "skipped": 1, "no_impact": 0}
_RESULT = {4: "error", 3: "fail", 2: "pass", 1: "skip", 0: "skip"}
_SEVERITY = {"critical": "critical", "high": "high", "medium": "medium", "low": "low"}
_API_VERSION = {"Pod": "v1", "Job": "batch/v1", "CronJob": "batch/v1"}  # else apps/v1


def _timestamp(finished_at: str) -> dict[str, int]:
    try:
        return {"seconds": int(datetime.fromisoformat(finished_at).timestamp()), "nanos": 0}
    except ValueError:
        return {"seconds": 0, "nanos": 0}


def build(frames: RunFrames, *, profile: str) -> dict[str, list[dict[str, Any]]]:
    """namespace -> its PolicyReport (parts, when it is too large for one object)."""
    k = frames.controls
    if k.empty:
        return {}
    rows = k[["namespace", "workload", "control", "title", "severity", "status", "message", "waived", "container"]]
    rows = rows.astype(str).assign(rank=lambda df: df["status"].map(_RANK).fillna(4).astype(int))
    stamp = _timestamp(frames.finished_at)
    reports: dict[str, list[dict[str, Any]]] = {}
    for namespace, group in rows.groupby("namespace", sort=True):
        results = [_result(str(namespace), key, g, stamp, profile) for key, g in group.groupby(["workload", "control"])]
        results.sort(key=lambda r: (-_order(r["result"]), r["policy"], r["resources"][0]["name"]))
        reports[str(namespace)] = _parts(str(namespace), results, frames.run_id, profile)
    return reports


def _order(result: str) -> int:
    return {"error": 4, "fail": 3, "warn": 2, "pass": 1, "skip": 0}[result]


def _result(namespace: str, key: Any, g: pd.DataFrame, stamp: dict[str, int], profile: str) -> dict[str, Any]:
    workload, control = str(key[0]), str(key[1])
    kind, _, name = workload.partition("/")
    rank = int(g["rank"].max())
    worst = g[g["rank"] == rank]
    message = next((m for m in worst["message"] if m), "")
    first = g.iloc[0]
    properties = {
        "containers": ",".join(sorted(set(g["container"]))),
        "failing_containers": str(int((g["status"] == "failed").sum())),
    }
    waived = [w for w in g["waived"] if w]
    if waived:
        properties["waived"] = "true"
        properties["found"] = "failed" if "failed" in waived else waived[0]
    out: dict[str, Any] = {
        "source": "fleetscan",
        "policy": control,
        "rule": str(first["title"])[:250],
        "category": profile,
        "severity": _SEVERITY.get(str(first["severity"]).lower(), "info"),
        "result": _RESULT[rank],
        "scored": True,
        "timestamp": stamp,
        "resources": [
            {"apiVersion": _API_VERSION.get(kind, "apps/v1"), "kind": kind, "name": name, "namespace": namespace}
        ],
        "properties": properties,
    }
    if message:
        out["message"] = message[:500]
    return out


def _parts(
    namespace: str, results: list[dict[str, Any]], run_id: str, profile: str, part_bytes: int = PART_BYTES
) -> list[dict[str, Any]]:
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for result in results:
        n = len(json.dumps(result))
        if chunks[-1] and size + n > part_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(result)
        size += n
    parts = []
    for i, chunk in enumerate(chunks):
        summary = dict.fromkeys(("pass", "fail", "warn", "error", "skip"), 0)
        for r in chunk:
            summary[r["result"]] += 1
        parts.append(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "PolicyReport",
                "metadata": {
                    "name": NAME if i == 0 else f"{NAME}-{i + 1}",
                    "namespace": namespace,
                    "labels": {**MANAGED, "fleetscan.io/run-id": run_id},
                    "annotations": {"fleetscan.io/profile": profile},
                },
                "summary": summary,
                "results": chunk,
            }
        )
    return parts


def write(reports: dict[str, list[dict[str, Any]]], folder: Path) -> int:
    """One YAML file per namespace (its parts as documents); returns the number of files."""
    folder.mkdir(parents=True, exist_ok=True)
    for namespace, parts in reports.items():
        write_text_atomic(folder / f"{namespace}.yaml", yaml.safe_dump_all(parts, sort_keys=False))
    return len(reports)


def read(folder: Path) -> dict[str, list[dict[str, Any]]]:
    return {p.stem: list(yaml.safe_load_all(p.read_text())) for p in sorted(folder.glob("*.yaml"))}


def publish(kube: Kube, reports: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Create or replace each namespace's reports, delete parts a smaller run no longer has; never
    touches a PolicyReport fleetscan does not manage. Returns the problems (empty: all written)."""
    problems: list[str] = []
    for namespace, parts in reports.items():
        try:
            _publish_namespace(kube, namespace, parts)
        except NotFound as exc:
            problems.append(
                f"namespace {namespace}: the cluster serves no {GROUP}/{VERSION} PolicyReports ({exc}); "
                f"install {CRD_FILE}"
            )
        except FleetscanError as exc:
            problems.append(f"namespace {namespace}: PolicyReport not written: {exc}")
    for problem in problems:
        log.warning("%s", problem)
    return problems


def _publish_namespace(kube: Kube, namespace: str, parts: list[dict[str, Any]]) -> None:
    api = kube.custom
    selector = ",".join(f"{k}={v}" for k, v in MANAGED.items())
    listed = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, label_selector=selector)
    ours = {item["metadata"]["name"]: item for item in listed.get("items") or []}
    for part in parts:
        name = part["metadata"]["name"]
        if name in ours:
            version = ours[name]["metadata"]["resourceVersion"]
            body = {**part, "metadata": {**part["metadata"], "resourceVersion": version}}
            api.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body)
            continue
        try:
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, part)
        except Conflict as exc:
            where = f"PolicyReport {namespace}/{name}"
            raise Conflict(f"{where} exists and fleetscan does not manage it: left as is") from exc
    wanted = {p["metadata"]["name"] for p in parts}
    for name in sorted(set(ours) - wanted):
        if name == NAME or name.startswith(f"{NAME}-"):
            api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
