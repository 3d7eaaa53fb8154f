"""What a person sees in the terminal during and after a scan: a progress bar and a closing table."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .pipeline import progress
from .pipeline.run import RunResult
from .results.records import TargetRecord

err = Console(stderr=True)
_STYLE = {"passed": "green", "failed": "red", "error": "yellow", "skipped": "dim"}


@contextmanager
def progress_bar(enabled: bool) -> Iterator[None]:
    """A live bar fed by every finished container (the total grows as namespaces are discovered)."""
    if not enabled:
        yield
        return
    bar = Progress(
        TextColumn("[bold]scanning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task("", total=None)
    counts = dict.fromkeys(_STYLE, 0)

    def advance(record: TargetRecord) -> None:
        counts[record.outcome] = counts.get(record.outcome, 0) + 1
        text = " ".join(f"[{_STYLE[k]}]{v} {k}[/]" for k, v in counts.items() if v)
        bar.update(task, advance=1, description=text)

    progress.add_listener(advance)
    try:
        with bar:
            yield
    finally:
        progress.remove_listener(advance)


def closing_summary(result: RunResult, *, as_json: bool, quiet: bool) -> None:
    """The table of summary.json (namespaces worst first, as in report.md) and the errors."""
    out = Path(result.out)
    summary = json.loads((out / "summary.json").read_text())
    for warning in result.warnings:
        err.print(f"[yellow]warning[/] {warning}", highlight=False)
    if as_json:
        sys.stdout.write(
            json.dumps(
                {k: summary.get(k) for k in ("run_id", "totals", "namespaces", "baseline")}
                | {"out": str(out), "exit_code": result.exit_code},
                indent=1,
            )
            + "\n"
        )
        return
    if quiet:
        return
    table = Table(title=f"fleetscan run {summary['run_id']}", title_justify="left")
    for column in ("namespace", "containers", "passed", "failed", "error", "skipped", "compliance"):
        table.add_column(column, justify="left" if column == "namespace" else "right")
    for ns in summary["namespaces"]:
        table.add_row(
            ns["namespace"],
            str(ns["containers"]),
            *(f"[{_STYLE[k]}]{ns[k]}[/]" if ns[k] else "0" for k in ("passed", "failed", "error", "skipped")),
            "-" if ns["compliance"] is None else f"{ns['compliance']}%",
        )
    t = summary["totals"]
    fleet = summary.get("fleet_compliance")
    table.add_row(
        "[bold]total",
        f"[bold]{t['targets']}",
        *(f"[bold]{t[k]}" for k in ("passed", "failed", "error", "skipped")),
        "-" if fleet is None else f"[bold]{fleet}%",
    )
    err.print(table)
    for target in summary["targets"]:
        if target["outcome"] == "error":
            err.print(
                f"[yellow]error[/] {target['namespace']}/{target['pod']}/{target['container']}: {target['reason']}",
                highlight=False,
            )
    if baseline := summary.get("baseline"):
        err.print(
            f"against run {baseline['run_id']}: {baseline['new']} new, {baseline['fixed']} fixed, "
            f"{baseline['still_failing']} still failing",
            highlight=False,
        )
    err.print(f"report: {out / 'report.html'}  (also report.md, results.csv, summary.json, hdf/)", highlight=False)
