"""Run history for trends: small Parquet tables beside the runs (by default in the folder holding the
run directories, so `--out runs/mon` and `--out runs/tue` share `runs/.fleetscan-history/`).

    runs.parquet        one row per run: fleet compliance and outcome counts
    namespaces.parquet  one row per run and namespace: compliance
    findings/<run>.parquet  one row per workload and control that failed in that run
    workloads/<run>.parquet the workloads a run saw (for new and vanished ones)
    containers/<run>.parquet one row per judged container (control "") and per control failing in
                            it: what `--baseline previous` compares with
"""

from __future__ import annotations

import contextlib
import fcntl
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..results.baseline import HISTORY_FOLDER as FOLDER
from ..results.baseline import default_history
from ..results.files import write_bytes_atomic
from .analysis import Analysis
from .frames import RunFrames

__all__ = ["FOLDER", "default_history"]


@contextlib.contextmanager
def _locked(history: Path) -> Iterator[None]:
    """Runs finishing at the same time must not lose each other's rows."""
    history.mkdir(parents=True, exist_ok=True)
    with open(history / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write(df: pd.DataFrame, path: Path) -> None:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    write_bytes_atomic(path, buf.getvalue())


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    return pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=columns)


RUN_COLUMNS = ["run_id", "finished_at", "fleet_compliance", "targets", "passed", "failed", "error", "skipped"]
NS_COLUMNS = ["run_id", "finished_at", "namespace", "compliance"]
FINDING_COLUMNS = ["namespace", "workload", "control"]


def findings(frames: RunFrames) -> pd.DataFrame:
    """Workload-level failing controls: a control fails a workload when it fails any of its containers."""
    failed = frames.controls[frames.controls["status"] == "failed"]
    out = failed[FINDING_COLUMNS].drop_duplicates().astype(str)  # categorical codes deduplicated: no text a row
    return out.sort_values(FINDING_COLUMNS).reset_index(drop=True)


def container_findings(frames: RunFrames) -> pd.DataFrame:
    """namespace, workload, container, control: a row with control "" for each container the run
    judged (passed or failed), and one per control failing in a container."""
    c = frames.containers
    judged = c[c["outcome"].astype(str).isin(["passed", "failed"])][["namespace", "workload", "container"]]
    k = frames.controls
    failed = k[k["status"] == "failed"][["namespace", "workload", "container", "control"]].drop_duplicates()
    out = pd.concat([judged.astype(str).assign(control=""), failed.astype(str)], ignore_index=True)
    return out.drop_duplicates().reset_index(drop=True)


def record_run(history: Path, frames: RunFrames, analysis: Analysis) -> None:
    c = frames.containers
    outcome = c["outcome"].astype(str).value_counts()
    run_row = {
        "run_id": frames.run_id,
        "finished_at": frames.finished_at,
        "fleet_compliance": analysis.fleet_compliance,
        "targets": len(c),
        **{o: int(outcome.get(o, 0)) for o in ("passed", "failed", "error", "skipped")},
    }
    ns_rows = analysis.by_namespace[["namespace", "compliance"]].assign(
        run_id=frames.run_id, finished_at=frames.finished_at
    )
    with _locked(history):
        runs = _read(history / "runs.parquet", RUN_COLUMNS)
        runs = pd.concat([runs[runs["run_id"] != frames.run_id], pd.DataFrame([run_row])], ignore_index=True)
        _write(runs.sort_values("finished_at").reset_index(drop=True), history / "runs.parquet")
        namespaces = _read(history / "namespaces.parquet", NS_COLUMNS)
        namespaces = pd.concat(
            [namespaces[namespaces["run_id"] != frames.run_id], ns_rows[NS_COLUMNS].astype({"namespace": str})],
            ignore_index=True,
        )
        _write(namespaces, history / "namespaces.parquet")
        (history / "findings").mkdir(exist_ok=True)
        _write(findings(frames), history / "findings" / f"{frames.run_id}.parquet")
        (history / "workloads").mkdir(exist_ok=True)
        workloads = frames.containers[["namespace", "workload"]].astype(str).drop_duplicates().reset_index(drop=True)
        _write(workloads, history / "workloads" / f"{frames.run_id}.parquet")
        (history / "containers").mkdir(exist_ok=True)
        _write(container_findings(frames), history / "containers" / f"{frames.run_id}.parquet")


@dataclass
class Trends:
    runs: pd.DataFrame  # the last runs, oldest first
    namespaces: pd.DataFrame  # namespace x run compliance (columns: run ids, oldest first)


def trends(history: Path, last: int = 10) -> Trends:
    runs = _read(history / "runs.parquet", RUN_COLUMNS).sort_values("finished_at").tail(last)
    namespaces = _read(history / "namespaces.parquet", NS_COLUMNS)
    namespaces = namespaces[namespaces["run_id"].isin(runs["run_id"])]
    table = (
        namespaces.pivot_table(index="namespace", columns="run_id", values="compliance", aggfunc="first").reindex(
            columns=list(runs["run_id"])
        )
        if len(namespaces)
        else pd.DataFrame()
    )
    return Trends(runs.reset_index(drop=True), table)


@dataclass
class Changes:
    previous_run: str | None
    new_failures: list[tuple[str, str, str]] = field(default_factory=list)  # namespace, workload, control
    fixed: list[tuple[str, str, str]] = field(default_factory=list)
    new_workloads: list[tuple[str, str]] = field(default_factory=list)
    vanished_workloads: list[tuple[str, str]] = field(default_factory=list)


def changes(history: Path, frames: RunFrames) -> Changes:
    """What changed since the run before this one in the history."""
    runs = _read(history / "runs.parquet", RUN_COLUMNS)
    earlier = runs[(runs["run_id"] != frames.run_id) & (runs["finished_at"] <= frames.finished_at)]
    if earlier.empty:
        return Changes(None)
    previous = str(earlier.sort_values("finished_at").iloc[-1]["run_id"])
    before = _read(history / "findings" / f"{previous}.parquet", FINDING_COLUMNS)
    now = findings(frames)
    key = ["namespace", "workload", "control"]
    old, new = set(map(tuple, before[key].astype(str).values)), set(map(tuple, now[key].astype(str).values))
    workloads_now = set(map(tuple, frames.containers[["namespace", "workload"]].astype(str).values))
    prev_frames = history / "workloads" / f"{previous}.parquet"
    workloads_before = (
        set(map(tuple, pd.read_parquet(prev_frames)[["namespace", "workload"]].astype(str).values))
        if prev_frames.exists()
        else set()
    )
    still_there = {w for w in workloads_before if w in workloads_now}
    return Changes(
        previous,
        sorted(new - old),
        sorted(f for f in old - new if (f[0], f[1]) in still_there),
        sorted(workloads_now - workloads_before) if workloads_before else [],
        sorted(workloads_before - workloads_now),
    )
