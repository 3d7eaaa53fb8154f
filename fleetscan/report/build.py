"""Build a run's reports (and record it in the history) from its tables."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..results.files import atomic_text, write_text_atomic
from .analysis import Analysis, analyse
from .frames import RunFrames, load_run
from .history import Changes, changes, default_history, record_run, trends
from .render import report_html, report_markdown


@dataclass
class Report:
    frames: RunFrames
    analysis: Analysis
    changes: Changes
    html: Path
    markdown: Path


def build_reports(
    run_dir: Path,
    history: Path | None = None,
    *,
    record: bool = True,
    frames: RunFrames | None = None,
    analysis: Analysis | None = None,
    names: tuple[str, str] | None = None,
    waivers: dict[str, Any] | None = None,
    baseline: dict[str, Any] | None = None,
) -> Report:
    """report.html and report.md; the tables (and the profile and threshold `names`, the waivers
    section) are read from the run directory unless the caller (the run's one aggregation) has them."""
    if names is None or waivers is None or baseline is None:
        summary = json.loads((run_dir / "summary.json").read_text())
        names = names or (summary.get("profile", ""), summary.get("threshold", ""))
        waivers = summary.get("waivers") or {} if waivers is None else waivers
        baseline = summary.get("baseline") or {} if baseline is None else baseline
    profile, threshold = names
    frames = frames if frames is not None else load_run(run_dir)
    analysis = analysis if analysis is not None else analyse(frames)
    history = history or default_history(run_dir)
    if record:
        record_run(history, frames, analysis)
    diff = changes(history, frames)
    html_path, md_path = run_dir / "report.html", run_dir / "report.md"
    parts: dict[str, Any] = {
        "profile": profile,
        "threshold": threshold,
        "changes": diff,
        "waivers": waivers,
        "baseline": baseline,
    }
    with atomic_text(html_path) as fh:
        fh.writelines(report_html(frames, analysis, trends=trends(history), **parts))
    write_text_atomic(md_path, report_markdown(frames, analysis, **parts))
    return Report(frames, analysis, diff, html_path, md_path)
