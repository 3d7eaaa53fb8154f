"""A run as two pandas tables: one row per container, one row per container and control.

HDF files are read one at a time and reduced to a few categorical columns at once, so memory stays
bounded by the size of the result tables (a 10,000-container run is a few hundred thousand rows).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..results.hdf import counted_controls

CONTAINER_COLUMNS = [
    "namespace",
    "pod",
    "container",
    "image",
    "workload",
    "approach",
    "engine",
    "outcome",
    "compliance",
    "reason",
    "hdf",
    "exec_calls",
    "duration_s",
]
CONTROL_COLUMNS = [
    "namespace",
    "pod",
    "container",
    "image",
    "workload",
    "approach",
    "control",
    "title",
    "severity",
    "impact",
    "status",
    "message",
]
CATEGORIES = [
    "namespace",
    "image",
    "workload",
    "approach",
    "engine",
    "outcome",
    "control",
    "title",
    "severity",
    "status",
]


@dataclass
class RunFrames:
    run_id: str
    finished_at: str
    containers: pd.DataFrame
    controls: pd.DataFrame


def _categorize(df: pd.DataFrame) -> pd.DataFrame:
    for column in CATEGORIES:
        if column in df:
            df[column] = df[column].astype("category")
    return df


def _message(control: dict[str, Any]) -> str:
    """What a person reads first: the first result that did not pass."""
    for result in control.get("results") or []:
        if result.get("status") != "passed":
            return str(result.get("message") or result.get("skip_message") or "")
    return ""


def _control_rows(path: Path, target: dict[str, Any], workload: str) -> dict[str, list[Any]]:
    doc = json.loads(path.read_text())
    raw = {c["id"]: c for c in doc["profiles"][0]["controls"]}
    columns: dict[str, list[Any]] = {c: [] for c in CONTROL_COLUMNS}
    for c in counted_controls(doc):
        meta = raw.get(c.id, {})
        for key, value in (
            ("namespace", target["namespace"]),
            ("pod", target["pod"]),
            ("container", target["container"]),
            ("image", target.get("image", "")),
            ("workload", workload),
            ("approach", target.get("approach", "")),
            ("control", c.id),
            ("title", meta.get("title") or c.id),
            ("severity", c.severity),
            ("impact", float(meta.get("impact", 0.0))),
            ("status", c.status),
            ("message", _message(meta)),
        ):
            columns[key].append(value)
    return columns


def load_run(run_dir: Path) -> RunFrames:
    """The tables of a finished run, from its summary.json and HDF files (`fleetscan report`)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    return from_targets(run_dir, summary["run_id"], summary.get("finished_at", ""), summary["targets"])


def from_targets(run_dir: Path, run_id: str, finished_at: str, targets: list[dict[str, Any]]) -> RunFrames:
    """The run's two tables, reading each container's HDF once."""
    rows = []
    control_columns: dict[str, list[Any]] = {c: [] for c in CONTROL_COLUMNS}
    for t in targets:
        workload = f"{t.get('workload_kind') or 'Pod'}/{t.get('workload_name') or t['pod']}"
        rows.append({**{k: t.get(k) for k in CONTAINER_COLUMNS}, "workload": workload})
        if t.get("hdf") and (run_dir / t["hdf"]).exists():
            for key, values in _control_rows(run_dir / t["hdf"], t, workload).items():
                control_columns[key].extend(values)
    containers = _categorize(pd.DataFrame(rows, columns=CONTAINER_COLUMNS))
    controls = _categorize(pd.DataFrame(control_columns, columns=CONTROL_COLUMNS))
    return RunFrames(run_id, finished_at, containers, controls)
