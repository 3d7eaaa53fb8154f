"""Roll a run up once: its tables are built in one pass over the records (which keep each
container's control rows, so no HDF file is parsed again), and feed summary.json, results.csv,
report.md, report.html, the console table and the Prefect artifacts, so every one of them ranks
namespaces and controls the same way."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..results.files import atomic_text, write_json_atomic
from ..results.records import TargetRecord, exit_code, totals
from ..results.rundir import RunDir

WORST_SHOWN = 10
CSV_CHUNK = 50_000


@dataclass
class RunSummary:
    run_id: str
    started_at: str
    finished_at: str
    profile: str
    threshold: str
    totals: dict[str, int]
    targets: list[dict[str, Any]]
    fleet_compliance: float | None = None
    namespaces: list[dict[str, Any]] = field(default_factory=list)  # worst first
    worst_controls: list[dict[str, Any]] = field(default_factory=list)  # most severe failures first

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "profile": self.profile,
            "threshold": self.threshold,
            "totals": self.totals,
            "fleet_compliance": self.fleet_compliance,
            "namespaces": self.namespaces,
            "worst_controls": self.worst_controls,
            "targets": self.targets,
        }

    @property
    def exit_code(self) -> int:
        return exit_code(self.totals)


def _plain(value: Any) -> Any:
    """numpy scalars and NaN as JSON-friendly values."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _rows(df: Any, columns: list[str], rename: dict[str, str] | None = None) -> list[dict[str, Any]]:
    rename = rename or {}
    return [
        {rename.get(c, c): _plain(v) for c, v in zip(columns, row, strict=True)}
        for row in df[columns].itertuples(index=False)
    ]


def aggregate(run: RunDir, *, started_at: str, profile: str, threshold: str, history: Path | None = None) -> RunSummary:
    from ..report.analysis import analyse  # pandas: imported when a run ends, not at start
    from ..report.build import build_reports
    from ..report.frames import from_targets

    finished_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    targets: list[dict[str, Any]] = []  # as summary.json lists them: without the control rows
    records: list[TargetRecord] = []

    def each() -> Iterator[dict[str, Any]]:  # one record at a time: its control rows are dropped once read
        for record in run.iter_records():
            yield record.to_dict()
            record.controls = []
            records.append(record)
            targets.append(record.summary_dict())

    frames = from_targets(run.path, run.run_id, finished_at, each())
    analysis = analyse(frames)
    summary = RunSummary(
        run.run_id,
        started_at,
        finished_at,
        profile,
        threshold,
        totals(records),
        targets,
        analysis.fleet_compliance,
        _rows(analysis.by_namespace, ["namespace", "containers", "passed", "failed", "error", "skipped", "compliance"]),
        _rows(
            analysis.top_controls.head(WORST_SHOWN),
            ["control", "title", "severity", "failing", "score"],
            {"failing": "failing_containers"},
        ),
    )
    write_json_atomic(run.path / "summary.json", summary.to_dict())
    with atomic_text(run.path / "results.csv") as fh:  # one row per container and control
        writer = csv.writer(fh)
        writer.writerow(frames.controls.columns)
        for start in range(0, len(frames.controls), CSV_CHUNK):  # a slice at a time: memory stays flat
            writer.writerows(frames.controls.iloc[start : start + CSV_CHUNK].astype(object).itertuples(index=False))
    build_reports(run.path, history, frames=frames, analysis=analysis)
    return summary
