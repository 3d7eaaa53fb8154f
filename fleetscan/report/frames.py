"""A run as two pandas tables: one row per container, one row per container and control.

Each container's control rows come from its record (kept there at scan time), one container at a
time, and go straight into categorical codes, so memory stays a few bytes per row: 100,000
containers of 36 controls each are 3.6 million rows.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..results.hdf import ROW_FIELDS, control_rows
from ..results.rundir import RunDir

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
    "waived",
]
CATEGORIES = [  # of the containers table
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
    "waived",
]


# Control rows held as Python values at once while a run is loaded: each costs a few hundred bytes
# until its batch is factorised, so a smaller batch is a lower peak (20,000: about 8 MB).
BATCH_ROWS = 20_000


@dataclass
class RunFrames:
    run_id: str
    finished_at: str
    containers: pd.DataFrame
    controls: pd.DataFrame


class _Column:
    """Values as categorical codes while rows arrive: a few bytes per row, whatever the run's size."""

    def __init__(self) -> None:
        self.codes = array("i")
        self.index: dict[Any, int] = {}

    def extend(self, value: Any, times: int) -> None:
        self.codes.extend(array("i", [self._code(value)]) * times)

    def add_all(self, values: list[Any]) -> None:
        """Many values at once: factorised in C, then each distinct value looked up once."""
        if not values:
            return
        codes, uniques = pd.factorize(np.array(values, dtype=object), use_na_sentinel=False)
        known = np.array([self._code(u) for u in uniques], dtype=np.int32)
        self.codes.frombytes(known[codes].tobytes())

    def _code(self, value: Any) -> int:
        code = self.index.get(value)
        if code is None:
            code = self.index[value] = len(self.index)
        return code

    def series(self) -> Any:
        return pd.Categorical.from_codes(np.frombuffer(self.codes, dtype=np.int32), categories=list(self.index))


def _rows_of(run_dir: Path, target: dict[str, Any]) -> list[list[Any]]:
    """The target's control rows: kept in its record, or (a run directory written before records
    kept them) computed from its HDF."""
    if "controls" in target:
        return list(target["controls"] or [])
    if target.get("hdf") and (run_dir / target["hdf"]).exists():
        return control_rows(json.loads((run_dir / target["hdf"]).read_text()))
    return []


def load_run(run_dir: Path) -> RunFrames:
    """The tables of a finished run (`fleetscan report`): its records, or its summary.json's targets."""
    summary = json.loads((run_dir / "summary.json").read_text())
    records = RunDir(run_dir, summary["run_id"]).records() if (run_dir / "records").is_dir() else []
    targets = [r.to_dict() for r in records] or summary["targets"]
    return from_targets(run_dir, summary["run_id"], summary.get("finished_at", ""), targets)


def from_targets(run_dir: Path, run_id: str, finished_at: str, targets: Iterable[dict[str, Any]]) -> RunFrames:
    """The run's two tables, one target at a time (each HDF, if any must be read, read once)."""
    per_container: dict[str, list[Any]] = {c: [] for c in CONTAINER_COLUMNS}  # column-wise: no dict a row
    columns = {c: _Column() for c in CONTROL_COLUMNS if c != "impact"}
    impact = array("d")
    row_fields = {name: i for i, name in enumerate(ROW_FIELDS)}
    per_row = ("control", "title", "severity", "status", "message", "waived")
    pending: dict[str, list[Any]] = {name: [] for name in per_row}  # a batch of rows, column-wise

    def flush() -> None:
        for name, values in pending.items():
            columns[name].add_all(values)
            values.clear()

    for t in targets:
        workload = f"{t.get('workload_kind') or 'Pod'}/{t.get('workload_name') or t['pod']}"
        for key, values in per_container.items():
            values.append(workload if key == "workload" else t.get(key))
        controls = _rows_of(run_dir, t)
        if not controls:
            continue
        n = len(controls)
        for key, value in (
            ("namespace", t["namespace"]),
            ("pod", t["pod"]),
            ("container", t["container"]),
            ("image", t.get("image", "")),
            ("workload", workload),
            ("approach", t.get("approach", "")),
        ):
            columns[key].extend(value, n)
        by_field = list(zip(*controls, strict=True))
        for name in per_row:  # rows of a run written before a field existed lack it
            i = row_fields[name]
            pending[name].extend(by_field[i] if i < len(by_field) else ("",) * n)
        impact.extend(map(float, by_field[row_fields["impact"]]))
        if len(pending["control"]) >= BATCH_ROWS:
            flush()
    flush()
    # No targets: object columns, as the empty table always had (empty lists would make them floats).
    containers = pd.DataFrame(per_container if per_container["namespace"] else None, columns=CONTAINER_COLUMNS)
    for column in CATEGORIES:
        if column in containers:
            containers[column] = containers[column].astype("category")
    # Every text column of the control rows categorical, pod, container and message too: as text
    # they were Arrow strings of every row (about 30 MB more at 10,000 containers while converted).
    # Each column's 4-byte codes are let go once pandas has made its narrower copy.
    data = {c: columns.pop(c).series() for c in CONTROL_COLUMNS if c != "impact"}
    data["impact"] = np.frombuffer(impact, dtype=np.float64) if len(impact) else np.array([], dtype=np.float64)
    controls_frame = pd.DataFrame({c: data[c] for c in CONTROL_COLUMNS})
    return RunFrames(run_id, finished_at, containers, controls_frame)
