"""Roll a run up once: its tables are built from the run directory in one pass over the records and
HDF files, and feed summary.json, results.csv, report.md, report.html, the console table and the
Prefect artifacts, so every one of them ranks namespaces and controls the same way."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..results.files import write_json_atomic, write_text_atomic
from ..results.records import exit_code, totals
from ..results.rundir import RunDir

WORST_SHOWN = 10


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

    records = sorted(run.records(), key=lambda r: r.key)
    finished_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    targets = [r.to_dict() for r in records]
    frames = from_targets(run.path, run.run_id, finished_at, targets)
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
    with io.StringIO() as buf:
        writer = csv.writer(buf)
        writer.writerow(frames.controls.columns)  # one row per container and control
        writer.writerows(frames.controls.astype(object).itertuples(index=False))
        write_text_atomic(run.path / "results.csv", buf.getvalue())
    build_reports(run.path, history, frames=frames, analysis=analysis)
    return summary
