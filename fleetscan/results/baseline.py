"""The baseline gate: what fails now that did not fail in an earlier run. A finding is namespace +
workload (the owner, or the pod when it has none) + container + control, so replicas replaced
under a new pod name do not count as new. `previous` is the last run recorded in the history."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ResultsError, UsageError
from .hdf import control_rows
from .records import TargetRecord
from .rundir import RunDir

PREVIOUS = "previous"
HISTORY_FOLDER = ".fleetscan-history"
SHOWN = 1000  # findings listed by name in summary.json (the counts are always complete)

Finding = tuple[str, str, str, str]  # namespace, workload, container, control


def default_history(run_dir: Path) -> Path:
    """Beside the run directories: `--out runs/mon` and `--out runs/tue` share `runs/.fleetscan-history`."""
    return run_dir.resolve().parent / HISTORY_FOLDER


def workload_of(record: TargetRecord) -> str:
    return f"{record.workload_kind or 'Pod'}/{record.workload_name or record.pod}"


@dataclass(frozen=True)
class Baseline:
    run_id: str
    source: str  # the run directory or the history file it was read from
    failing: frozenset[Finding]
    judged: frozenset[tuple[str, str, str]]  # containers it has a verdict for: a fix needs one


@dataclass(frozen=True)
class BaselineRef:
    """`--baseline`: a run directory, or `previous` in the run's history folder."""

    spec: str
    history: Path

    def check(self) -> None:
        """Bad input fails before any cluster call."""
        if self.spec == PREVIOUS:
            if not (self.history / "runs.parquet").exists():
                raise UsageError(
                    f"--baseline previous: no earlier run in the history {self.history} "
                    "(run once without --baseline, or name a run directory)"
                )
        elif not (Path(self.spec) / "run.json").exists():
            raise UsageError(f"--baseline {self.spec}: not a fleetscan run directory (it has no run.json)")

    def load(self, current_run: str) -> Baseline:
        return self._previous(current_run) if self.spec == PREVIOUS else from_run_dir(Path(self.spec))

    def _previous(self, current_run: str) -> Baseline:
        import pandas as pd

        runs = pd.read_parquet(self.history / "runs.parquet")
        earlier = runs[runs["run_id"] != current_run].sort_values("finished_at")
        if earlier.empty:
            raise ResultsError(f"--baseline previous: the history {self.history} holds no run before {current_run}")
        run_id = str(earlier.iloc[-1]["run_id"])
        path = self.history / "containers" / f"{run_id}.parquet"
        if not path.exists():
            raise ResultsError(
                f"--baseline previous: run {run_id} in {self.history} was recorded without its findings per "
                "container (an older fleetscan); name its run directory instead"
            )
        table = pd.read_parquet(path)
        failing = table[table["control"] != ""]
        return Baseline(
            run_id,
            str(path),
            frozenset(map(tuple, failing[["namespace", "workload", "container", "control"]].astype(str).values)),
            frozenset(map(tuple, table[["namespace", "workload", "container"]].astype(str).values)),
        )


def from_run_dir(path: Path) -> Baseline:
    try:
        run_id = str(json.loads((path / "run.json").read_text())["run_id"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ResultsError(f"--baseline {path}: unreadable run.json ({exc})") from exc
    failing: set[Finding] = set()
    judged: set[tuple[str, str, str]] = set()
    for record in RunDir(path, run_id).iter_records():
        if record.outcome not in ("passed", "failed"):
            continue
        workload = workload_of(record)
        judged.add((record.namespace, workload, record.container))
        rows = record.controls or (control_rows(json.loads((path / record.hdf).read_text())) if record.hdf else [])
        failing.update((record.namespace, workload, record.container, row[0]) for row in rows if row[4] == "failed")
    return Baseline(run_id, str(path), frozenset(failing), frozenset(judged))


@dataclass(frozen=True)
class Comparison:
    baseline: Baseline
    new: list[Finding]  # failing now, not in the baseline
    fixed: list[Finding]  # failed in the baseline, judged now and not failing
    still_failing: list[Finding]

    def section(self) -> dict[str, Any]:
        def named(findings: list[Finding]) -> list[dict[str, str]]:
            keys = ("namespace", "workload", "container", "control")
            return [dict(zip(keys, f, strict=True)) for f in findings[:SHOWN]]

        return {
            "run_id": self.baseline.run_id,
            "source": self.baseline.source,
            "new": len(self.new),
            "fixed": len(self.fixed),
            "still_failing": len(self.still_failing),
            "new_findings": named(self.new),
            "fixed_findings": named(self.fixed),
        }


def compare(baseline: Baseline, failing_now: set[Finding], judged_now: set[tuple[str, str, str]]) -> Comparison:
    return Comparison(
        baseline,
        sorted(failing_now - baseline.failing),
        sorted(f for f in baseline.failing - failing_now if f[:3] in judged_now),
        sorted(failing_now & baseline.failing),
    )
