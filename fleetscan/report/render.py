"""The self-contained report.html (inline CSS, JS and SVG; opens offline from disk) and report.md."""

from __future__ import annotations

from collections.abc import Iterator
from html import escape
from importlib import resources
from typing import Any

import pandas as pd

from . import charts
from .analysis import SEVERITIES, Analysis
from .frames import RunFrames
from .history import Changes, Trends

_ASSETS = resources.files("fleetscan.report").joinpath("assets")


def _asset(name: str) -> str:
    """CSS and JS are inlined into the page: it must open from disk, offline."""
    return _ASSETS.joinpath(name).read_text()


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return '<td data-v="-1">-</td>'
    return f'<td data-v="{escape(str(value))}">{escape(str(value))}</td>'


def table(table_id: str, df: pd.DataFrame) -> str:
    if df.empty:
        return '<p class="empty">nothing to show</p>'
    head = "".join(f"<th>{escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in df.itertuples(index=False))
    return f'<table class="data" id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _containers_table(frames: RunFrames) -> Iterator[str]:
    """The containers table a row at a time: the largest part of the page (7 MB at 10,000)."""
    failed = frames.controls[frames.controls["status"] == "failed"]
    failing: dict[tuple[str, str, str], list[str]] = {}
    # Through each column's categories: a text per distinct value, not one per failed row.
    columns = [failed[c].cat for c in ("namespace", "pod", "container", "control", "title")]
    names = [[str(v) for v in column.categories] for column in columns]
    for ns, pod, container, control, title in zip(*(column.codes.tolist() for column in columns), strict=True):
        key = (names[0][ns], names[1][pod], names[2][container])
        failing.setdefault(key, []).append(f"{names[3][control]} {names[4][title]}")
    yield f'<table class="data" id="containers"><thead><tr>{_CONTAINERS_HEAD}</tr></thead><tbody>'
    for c in frames.containers.itertuples(index=False):
        key = (str(c.namespace), str(c.pod), str(c.container))
        items = failing.get(key, [])
        details = (
            (
                f"<details><summary>{len(items)} failing</summary><ul>"
                + "".join(f"<li>{escape(i)}</li>" for i in items)
                + "</ul></details>"
            )
            if items
            else ""
        )
        link = f'<a href="{escape(str(c.hdf))}">HDF</a>' if c.hdf else ""
        compliance = "" if pd.isna(c.compliance) else f"{c.compliance:g}"
        yield (
            f'<tr class="{escape(str(c.outcome))}"><td>{escape(key[0])}</td><td>{escape(key[1])}</td>'
            f"<td>{escape(key[2])}</td><td>{escape(str(c.workload))}</td><td>{escape(str(c.image))}</td>"
            f"<td>{escape(str(c.approach))}</td><td class='outcome'>{escape(str(c.outcome))}</td>"
            f'<td data-v="{compliance or -1}">{compliance}</td><td>{details}</td><td>{link}</td>'
            f"<td>{escape(str(c.reason or ''))[:300]}</td></tr>"
        )
    yield "</tbody></table>"


_CONTAINERS_HEAD = "".join(
    f"<th>{h}</th>"
    for h in (
        "namespace",
        "pod",
        "container",
        "workload",
        "image",
        "approach",
        "outcome",
        "compliance",
        "failing controls",
        "results",
        "reason",
    )
)


def _changes(ch: Changes | None) -> str:
    if ch is None or ch.previous_run is None:
        return '<p class="empty">no earlier run in the history</p>'

    def items(title: str, values: list[Any]) -> str:
        body = "".join(f"<li>{escape(' / '.join(v))}</li>" for v in values[:200]) or "<li>none</li>"
        more = f"<li>and {len(values) - 200} more</li>" if len(values) > 200 else ""
        return f'<div class="change"><h3>{title} ({len(values)})</h3><ul>{body}{more}</ul></div>'

    return (
        f"<p>Compared with run <b>{escape(ch.previous_run)}</b>.</p><div class='grid'>"
        + items("New failures", ch.new_failures)
        + items("Fixed", ch.fixed)
        + items("New workloads", ch.new_workloads)
        + items("Vanished workloads", ch.vanished_workloads)
        + "</div>"
    )


WAIVER_COLUMNS = ["waiver", "controls", "scope", "expires", "approved by", "state", "justification"]
WAIVED_SHOWN = 500  # waived findings listed in the HTML report (summary.json and results.csv have all)


def waived_findings(frames: RunFrames) -> pd.DataFrame:
    """Every container and control a waiver covered, with what the check found under it."""
    k = frames.controls
    rows = k[k["waived"].astype(str) != ""]
    columns = ["namespace", "workload", "container", "control", "severity", "waived", "message"]
    return rows[columns].rename(columns={"waived": "found"}).astype(str).reset_index(drop=True)


def waiver_table(section: dict[str, Any]) -> pd.DataFrame:
    """One row per waiver in the file: applied (to how many containers), matched nothing, expired."""
    rows = []
    for state, entries in (("applied", "applied"), ("matched nothing", "unused"), ("expired", "expired")):
        for w in section.get(entries) or []:
            rows.append(
                [
                    w["id"],
                    " ".join(w["controls"]),
                    ", ".join(f"{k}={v}" for k, v in (w.get("scope") or {}).items()) or "everywhere",
                    w["expires"],
                    w["approved_by"],
                    f"applied to {w['containers']} container(s)" if state == "applied" else state,
                    w["justification"],
                ]
            )
    return pd.DataFrame(rows, columns=WAIVER_COLUMNS)


def _waivers(frames: RunFrames, section: dict[str, Any]) -> str:
    if not section.get("file"):
        return '<p class="empty">no waiver file in this run</p>'
    findings = waived_findings(frames)
    return (
        f"<p>Waiver file <b>{escape(section['file'])}</b> on {escape(section.get('date', ''))}: "
        f"<b>{section.get('waived_controls', 0)}</b> control results waived, "
        f"<b>{section.get('waived_still_failing', 0)}</b> of them still failing.</p>"
        + table("waivers", waiver_table(section))
        + "<h3>Waived findings</h3>"
        + table("waived", findings.head(WAIVED_SHOWN))
        + (f"<p>and {len(findings) - WAIVED_SHOWN} more in results.csv</p>" if len(findings) > WAIVED_SHOWN else "")
    )


def _findings(title: str, values: list[dict[str, str]], total: int) -> str:
    body = "".join(
        f"<li>{escape(' / '.join((f['namespace'], f['workload'], f['container'], f['control'])))}</li>"
        for f in values[:200]
    )
    more = f"<li>and {total - min(len(values), 200)} more</li>" if total > min(len(values), 200) else ""
    return f'<div class="change"><h3>{title} ({total})</h3><ul>{body or "<li>none</li>"}{more}</ul></div>'


def _baseline(section: dict[str, Any]) -> str:
    if not section:
        return '<p class="empty">no baseline (--baseline RUN_DIR or previous)</p>'
    return (
        f"<p id='baseline-counts'>Against run <b>{escape(section['run_id'])}</b>: <b>{section['new']}</b> new, "
        f"<b>{section['fixed']}</b> fixed, <b>{section['still_failing']}</b> still failing "
        "(container and control; replicas of a workload count as one).</p><div class='grid'>"
        + _findings("New failures", section.get("new_findings") or [], section["new"])
        + _findings("Fixed", section.get("fixed_findings") or [], section["fixed"])
        + "</div>"
    )


def report_html(
    frames: RunFrames,
    a: Analysis,
    *,
    profile: str,
    threshold: str,
    trends: Trends | None,
    changes: Changes | None,
    waivers: dict[str, Any] | None = None,
    baseline: dict[str, Any] | None = None,
) -> Iterator[str]:
    """The page in parts, written as they come: whole, it was the run end's largest string (and
    its join and encoding two more of the same size)."""
    c = frames.containers
    counts = c["outcome"].astype(str).value_counts()
    kpis = "".join(
        f'<div class="kpi">{label}<b>{value}</b></div>'
        for label, value in (
            ("containers", len(c)),
            ("fleet compliance", "-" if a.fleet_compliance is None else f"{a.fleet_compliance}%"),
            *((o, int(counts.get(o, 0))) for o in ("passed", "failed", "error", "skipped")),
        )
    )
    heat = {(str(ns), str(sev)): int(a.heatmap.loc[ns, sev]) for ns in a.heatmap.index for sev in a.heatmap.columns}
    ns_bars = [
        (str(r.namespace), float(r.compliance), "#2563eb")
        for r in a.by_namespace.itertuples()
        if not pd.isna(r.compliance)
    ]
    top = [
        (f"{r.control} {r.title}", float(r.failing), charts.SEVERITY_COLORS.get(str(r.severity).lower(), "#999"))
        for r in a.top_controls.head(15).itertuples()
    ]
    by_approach = [(str(idx), {k: int(v) for k, v in row.items()}) for idx, row in a.by_approach.iterrows()]
    trend_points = (
        [
            (str(r.run_id), float(r.fleet_compliance))
            for r in trends.runs.itertuples()
            if not pd.isna(r.fleet_compliance)
        ]
        if trends is not None
        else []
    )
    ns_trend = (
        trends.namespaces.reset_index().round(1)
        if trends is not None and not trends.namespaces.empty
        else pd.DataFrame()
    )
    charts_html = "".join(
        f"<div><h3>{t}</h3>{svg}</div>"
        for t, svg in (
            (
                "Failed controls by namespace and severity",
                charts.heatmap(
                    "heatmap",
                    "failed controls by namespace and severity",
                    list(a.heatmap.index.astype(str)),
                    SEVERITIES,
                    heat,
                ),
            ),
            (
                "Compliance by namespace (mean of containers)",
                charts.hbars("namespace-compliance", "compliance by namespace", ns_bars, 100, "%"),
            ),
            ("Most failed controls (containers failing)", charts.hbars("top-controls", "top failing controls", top)),
            (
                "Outcome by approach",
                charts.stacked("approach", "outcome by approach", by_approach, charts.OUTCOME_COLORS),
            ),
        )
    )
    yield f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>fleetscan run {escape(frames.run_id)}</title><style>{_asset("report.css")}</style></head><body>
<h1>fleetscan run {escape(frames.run_id)}</h1>
<p>Profile <b>{escape(profile)}</b>, threshold <b>{escape(threshold)}</b>, finished {escape(frames.finished_at)}.</p>
<div class="kpis">{kpis}</div>
<section><h2>Where the fleet stands</h2><div class="grid">{charts_html}</div></section>
<section><h2>Trend</h2>{charts.line("trend", "fleet compliance over the last runs", trend_points)}
{table("namespace-trend", ns_trend)}</section>
<section><h2>Changes since the previous run</h2>{_changes(changes)}</section>
<section><h2>Baseline</h2>{_baseline(baseline or {})}</section>
<section><h2>Waivers</h2>{_waivers(frames, waivers or {})}</section>
<section><h2>Namespaces</h2>{table("namespaces", a.by_namespace)}</section>
<section><h2>Failing controls</h2>{table("controls", a.top_controls)}</section>
<section><h2>Workloads</h2>{table("workloads", a.by_workload)}</section>
<section><h2>Images</h2>{table("images", a.by_image)}</section>
<section><h2>Containers</h2>"""
    yield from _containers_table(frames)
    yield f"""</section>
<script>{_asset("report.js")}</script></body></html>
"""


def _md_baseline(section: dict[str, Any]) -> list[str]:
    if not section:
        return []
    lines = [
        "",
        f"## Against baseline run {section['run_id']}",
        "",
        f"{section['new']} new failures, {section['fixed']} fixed, {section['still_failing']} still failing.",
    ]
    for title, key in (("New failures", "new_findings"), ("Fixed", "fixed_findings")):
        if section.get(key):
            lines += ["", f"{title}:", "", "| namespace | workload | container | control |", "|---|---|---|---|"]
            lines += ["| " + " | ".join(f.values()) + " |" for f in section[key][:50]]
    return lines


def _md_waivers(frames: RunFrames, section: dict[str, Any]) -> list[str]:
    if not section.get("file"):
        return []
    lines = [
        "",
        "## Waivers",
        "",
        f"Waiver file `{section['file']}` on {section.get('date', '')}: {section.get('waived_controls', 0)} control "
        f"results waived, {section.get('waived_still_failing', 0)} of them still failing.",
        "",
        "| waiver | controls | scope | expires | approved by | state |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        "| " + " | ".join(str(v).replace("|", "/") for v in row[:6]) + " |"
        for row in waiver_table(section).itertuples(index=False)
    ]
    failing = waived_findings(frames)
    failing = failing[failing["found"] == "failed"]
    if len(failing):
        lines += ["", "Waived but still failing:", "", "| container | control | severity |", "|---|---|---|"]
        lines += [
            f"| {r.namespace}/{r.workload}/{r.container} | {r.control} | {r.severity} |"
            for r in failing.head(50).itertuples()
        ]
    return lines


def report_markdown(
    frames: RunFrames,
    a: Analysis,
    *,
    profile: str,
    threshold: str,
    changes: Changes | None,
    waivers: dict[str, Any] | None = None,
    baseline: dict[str, Any] | None = None,
) -> str:
    c = frames.containers
    counts = c["outcome"].astype(str).value_counts()
    lines = [
        f"# fleetscan run {frames.run_id}",
        "",
        f"Profile `{profile}`, threshold `{threshold}`.",
        "",
        f"**{len(c)}** containers: "
        + ", ".join(f"**{int(counts.get(o, 0))}** {o}" for o in ("passed", "failed", "error", "skipped"))
        + (f"; fleet compliance **{a.fleet_compliance}%**." if a.fleet_compliance is not None else "."),
        "",
        "## Worst namespaces",
        "",
        "| namespace | containers | failed | error | compliance |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.namespace} | {r.containers} | {r.failed} | {r.error} | {r.compliance} |"
        for r in a.by_namespace.head(10).itertuples()
    ]
    if len(a.top_controls):
        lines += [
            "",
            "## Most failed controls",
            "",
            "| control | severity | failing containers | title |",
            "|---|---|---:|---|",
        ]
        lines += [
            f"| {r.control} | {r.severity} | {r.failing} | {r.title} |" for r in a.top_controls.head(10).itertuples()
        ]
    if changes is not None and changes.previous_run is not None:
        lines += [
            "",
            f"## Since run {changes.previous_run}",
            "",
            f"{len(changes.new_failures)} new failures, {len(changes.fixed)} fixed, "
            f"{len(changes.new_workloads)} new and {len(changes.vanished_workloads)} vanished workloads.",
        ]
    lines += _md_baseline(baseline or {})
    lines += _md_waivers(frames, waivers or {})
    problems = c[c["outcome"].astype(str).isin(["error", "skipped"])]
    if len(problems):
        lines += ["", "## Not scanned", "", "| container | outcome | reason |", "|---|---|---|"]
        lines += [
            f"| {r.namespace}/{r.pod}/{r.container} | {r.outcome} | {str(r.reason).replace('|', '/')} |"
            for r in problems.itertuples()
        ]
    return "\n".join(lines) + "\n"
