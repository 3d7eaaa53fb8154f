"""Build a run's reports (and record it in the history) from its run directory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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


def build_reports(run_dir: Path, history: Path | None = None, *, record: bool = True) -> Report:
    summary = json.loads((run_dir / "summary.json").read_text())
    frames = load_run(run_dir)
    analysis = analyse(frames)
    history = history or default_history(run_dir)
    if record:
        record_run(history, frames, analysis)
    diff = changes(history, frames)
    profile, threshold = summary.get("profile", ""), summary.get("threshold", "")
    html_path, md_path = run_dir / "report.html", run_dir / "report.md"
    for path, text in (
        (
            html_path,
            report_html(frames, analysis, profile=profile, threshold=threshold, trends=trends(history), changes=diff),
        ),
        (md_path, report_markdown(frames, analysis, profile=profile, threshold=threshold, changes=diff)),
    ):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return Report(frames, analysis, diff, html_path, md_path)
