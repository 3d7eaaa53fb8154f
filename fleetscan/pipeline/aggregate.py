"""Roll a run up once: its tables are built in one pass over the records (which keep each
container's control rows, so no HDF file is parsed again), and feed summary.json, results.csv,
report.md, report.html, the console table and the Prefect artifacts, so every one of them ranks
namespaces and controls the same way."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..heap import give_back
from ..results.baseline import BaselineRef, compare
from ..results.files import atomic_text
from ..results.hdf import now_iso
from ..results.records import Outcome, exit_code, tally
from ..results.rundir import RunDir
from ..results.waivers import NO_WAIVERS, Waivers

WORST_SHOWN = 10
CSV_CHUNK = 10_000  # rows converted and written at a time: Arrow keeps its pool at the largest


@dataclass
class RunSummary:
    run_id: str
    started_at: str
    finished_at: str
    profile: str
    threshold: str
    totals: dict[str, int]
    # Each target as summary.json lists it (without its control rows: results.csv has those), as
    # its JSON line: a run's end holds one string per container, not a record's objects.
    target_lines: list[str]
    fleet_compliance: float | None = None
    namespaces: list[dict[str, Any]] = field(default_factory=list)  # worst first
    worst_controls: list[dict[str, Any]] = field(default_factory=list)  # most severe failures first
    waivers: dict[str, Any] = field(default_factory=dict)  # applied, unused and expired; counts
    baseline: dict[str, Any] = field(default_factory=dict)  # new, fixed and still failing; {} without one

    @property
    def targets(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.target_lines]

    def head(self) -> dict[str, Any]:
        """summary.json without its targets."""
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
            "waivers": self.waivers,
            "baseline": self.baseline,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.head(), "targets": self.targets}

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


def aggregate(
    run: RunDir,
    *,
    started_at: str,
    profile: str,
    threshold: str,
    history: Path | None = None,
    waivers: Waivers = NO_WAIVERS,
    baseline: BaselineRef | None = None,
    policy_reports: Path | None = None,
) -> RunSummary:
    give_back()  # what the scan freed, before the tables are built
    from ..report.analysis import analyse  # pandas: imported when a run ends, not at start
    from ..report.build import build_reports
    from ..report.frames import from_targets

    finished_at = now_iso()  # to the millisecond, as started_at: a small run takes under a second
    lines: list[str] = []
    outcomes: list[Outcome] = []
    applied: dict[str, int] = {}  # waiver id: containers it was applied to

    def each() -> Iterator[dict[str, Any]]:  # one record at a time, let go once read
        for record in run.iter_records():
            yield record.to_dict()
            outcomes.append(record.outcome)
            for waiver_id in record.waivers:
                applied[waiver_id] = applied.get(waiver_id, 0) + 1
            lines.append(json.dumps(record.summary_dict(), separators=(", ", ": ")))

    frames = from_targets(run.path, run.run_id, finished_at, each())
    analysis = analyse(frames)
    waiver_section = _waiver_section(waivers, applied, frames)
    baseline_section = _baseline_section(baseline, frames, run.run_id) if baseline is not None else {}
    namespaces = _namespace_rows(analysis)
    if policy_reports is not None:  # YAML files here; the flow may then write them to the cluster
        from ..report import policy_reports as polr

        polr.write(polr.build(frames, profile=profile), policy_reports)
    summary = RunSummary(
        run.run_id,
        started_at,
        finished_at,
        profile,
        threshold,
        tally(outcomes),
        lines,
        analysis.fleet_compliance,
        namespaces,
        _rows(
            analysis.top_controls.head(WORST_SHOWN),
            ["control", "title", "severity", "failing", "score"],
            {"failing": "failing_containers"},
        ),
        waiver_section,
        baseline_section,
    )
    _write_summary(run.path / "summary.json", summary)
    _write_csv(run.path / "results.csv", frames.controls)
    build_reports(
        run.path,
        history,
        frames=frames,
        analysis=analysis,
        names=(profile, threshold),
        waivers=waiver_section,
        baseline=baseline_section,
    )
    return summary


def _waiver_section(waivers: Waivers, applied: dict[str, int], frames: Any) -> dict[str, Any]:
    """The waivers applied (to how many containers), unused and expired, and what they covered."""
    waived = frames.controls["waived"].astype(str)
    return {
        **waivers.section(applied),
        "waived_controls": int((waived != "").sum()),
        "waived_still_failing": int((waived == "failed").sum()),
    }


def _baseline_section(baseline: BaselineRef, frames: Any, run_id: str) -> dict[str, Any]:
    from ..report.history import container_findings

    table = container_findings(frames)
    judged = {(ns, w, c) for ns, w, c, _ in table.itertuples(index=False)}
    failing = {(ns, w, c, k) for ns, w, c, k in table.itertuples(index=False) if k}
    return compare(baseline.load(run_id), failing, judged).section()


def _namespace_rows(analysis: Any) -> list[dict[str, Any]]:
    """Namespaces worst first, each with its failed control results by severity (e.g. for metrics)."""
    columns = ["namespace", "containers", "passed", "failed", "error", "skipped", "compliance"]
    rows, heat = _rows(analysis.by_namespace, columns), analysis.heatmap
    for row in rows:
        ns = row["namespace"]
        row["failed_controls"] = {str(s): int(heat.loc[ns, s]) if ns in heat.index else 0 for s in heat.columns}
    return rows


def _write_summary(path: Path, summary: RunSummary) -> None:
    """summary.json indented, but its targets one per line: the indenting encoder is pure Python
    and takes seconds on a fleet's targets, which the compact C encoder writes in a fraction."""
    head = json.dumps({**summary.head(), "targets": []}, indent=1)[: -len("[]\n}")]
    with atomic_text(path) as fh:
        fh.write(head + "[")
        for i, line in enumerate(summary.target_lines):
            fh.write(("\n  " if i == 0 else ",\n  ") + line)
        fh.write("\n ]\n}\n" if summary.target_lines else "]\n}\n")


def _write_csv(path: Path, controls: Any, chunk: int = CSV_CHUNK) -> None:
    """results.csv, one row per container and control: Arrow's C++ writer (every string quoted), a
    slice at a time, each converted to Arrow only when written, so memory stays flat (converting
    the whole table first cost 40 MB at 10,000 containers); Python's csv module took half of a
    large run's end."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    options = pacsv.WriteOptions(include_header=False)
    with atomic_text(path) as fh:
        csv.writer(fh, lineterminator="\n").writerow(controls.columns)
        fh.flush()
        for start in range(0, len(controls), chunk):
            part = pa.Table.from_pandas(controls.iloc[start : start + chunk], preserve_index=False)
            plain = [c.cast(pa.string()) if pa.types.is_dictionary(c.type) else c for c in part.columns]
            pacsv.write_csv(pa.table(plain, names=part.column_names), fh.buffer, options)
