"""Fleet reports: pandas roll-ups, trends and changes across hand-built runs, and the HTML in a real
headless Chromium (network blocked), as a person opens it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fleetscan.pipeline.aggregate import _write_csv
from fleetscan.report.analysis import analyse
from fleetscan.report.build import build_reports
from fleetscan.report.frames import load_run
from fleetscan.report.history import FOLDER

from .report_helpers import Box, make_run

ARTIFACTS = Path(__file__).parent / "artifacts"


def monday(folder: Path) -> Path:
    return make_run(
        folder,
        "mon",
        "2026-11-23T02:00:00Z",
        [
            Box(
                "shop",
                "web-1",
                "Deployment/web",
                {"A": "failed", "B": "passed", "C": "failed"},
                "failed",
                severities={"A": "critical", "C": "low"},
            ),
            Box(
                "shop",
                "web-2",
                "Deployment/web",
                {"A": "failed", "B": "passed", "C": "passed"},
                "failed",
                severities={"A": "critical"},
            ),
            Box(
                "pay",
                "api-0",
                "StatefulSet/api",
                {"A": "passed", "B": "failed", "C": "passed"},
                "failed",
                image="acme/api:1",
                approach="debug",
            ),
            Box("pay", "old-0", "StatefulSet/old", {"A": "passed", "B": "passed", "C": "passed"}),
        ],
    )


def tuesday(folder: Path) -> Path:
    return make_run(
        folder,
        "tue",
        "2026-11-24T02:00:00Z",
        [
            Box(
                "shop",
                "web-1",
                "Deployment/web",
                {"A": "passed", "B": "passed", "C": "failed"},
                "failed",
                severities={"A": "critical", "C": "low"},
            ),
            Box(
                "shop",
                "web-2",
                "Deployment/web",
                {"A": "passed", "B": "passed", "C": "passed"},
                severities={"A": "critical"},
            ),
            Box(
                "pay",
                "api-0",
                "StatefulSet/api",
                {"A": "failed", "B": "failed", "C": "passed"},
                "failed",
                image="acme/api:1",
                approach="debug",
            ),
            Box("pay", "new-0", "Deployment/new", {"A": "passed", "B": "passed", "C": "skipped"}),
        ],
    )


def test_rollups(tmp_path: Path) -> None:
    a = analyse(load_run(monday(tmp_path)))
    ns = a.by_namespace.set_index("namespace")
    assert ns.loc["shop", "containers"] == 2 and ns.loc["shop", "failed"] == 2
    assert ns.loc["shop", "compliance"] == pytest.approx((33 + 67) / 2, abs=0.1)
    top = a.top_controls.set_index("control")
    assert top.loc["A", "failing"] == 2 and top.loc["A", "score"] == 20  # critical weighs 10
    assert list(a.top_controls["control"]) == ["A", "B", "C"]  # by severity-weighted count
    assert a.heatmap.loc["shop", "critical"] == 2 and a.heatmap.loc["pay", "high"] == 1
    assert a.by_approach.loc["debug", "failed"] == 1
    assert set(a.by_image["image"]) == {"busybox", "acme/api:1"}
    assert a.fleet_compliance == pytest.approx((33 + 67 + 67 + 100) / 4, abs=0.1)


def test_results_csv_is_the_same_written_in_slices(tmp_path: Path) -> None:
    """results.csv is converted and written a slice at a time: slices of 2 rows (a slice boundary
    inside a container's rows) give the file one slice gives, every categorical as its text."""
    controls = load_run(monday(tmp_path)).controls
    _write_csv(tmp_path / "whole.csv", controls)
    _write_csv(tmp_path / "sliced.csv", controls, chunk=2)
    whole = (tmp_path / "whole.csv").read_bytes()
    assert whole == (tmp_path / "sliced.csv").read_bytes()
    rows = list(csv.reader(whole.decode().splitlines()))
    assert rows[0] == list(controls.columns) and len(rows) == 1 + 4 * 3  # header, containers x controls
    assert rows[1][rows[0].index("namespace")] in {"shop", "pay"} and rows[1][rows[0].index("status")] in {
        "passed",
        "failed",
    }
    _write_csv(tmp_path / "empty.csv", controls.iloc[:0])
    assert (tmp_path / "empty.csv").read_text() == whole.decode().splitlines(keepends=True)[0]


def test_trends_and_changes_across_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    build_reports(monday(runs))
    report = build_reports(tuesday(runs))
    assert (runs / FOLDER / "runs.parquet").exists()  # the history lives beside the run directories
    ch = report.changes
    assert ch.previous_run == "mon"
    assert ch.new_failures == [("pay", "StatefulSet/api", "A")]
    assert ch.fixed == [("shop", "Deployment/web", "A")]
    assert ch.new_workloads == [("pay", "Deployment/new")]
    assert ch.vanished_workloads == [("pay", "StatefulSet/old")]
    from fleetscan.report.history import trends

    t = trends(runs / FOLDER)
    assert list(t.runs["run_id"]) == ["mon", "tue"]
    assert list(t.namespaces.columns) == ["mon", "tue"] and set(t.namespaces.index) == {"pay", "shop"}
    # rebuilding a report does not duplicate its run in the history
    build_reports(runs / "tue")
    assert list(trends(runs / FOLDER).runs["run_id"]) == ["mon", "tue"]


def test_history_can_live_elsewhere(tmp_path: Path) -> None:
    history = tmp_path / "elsewhere"
    build_reports(monday(tmp_path / "a"), history)
    assert (history / "runs.parquet").exists() and not (tmp_path / "a" / FOLDER).exists()


def offline_page(browser, allowed_prefix: str):  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    blocked: list[str] = []

    def route(r) -> None:  # type: ignore[no-untyped-def]
        if r.request.url.startswith(allowed_prefix):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return page, blocked


def test_report_in_a_real_browser(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runs = tmp_path / "runs"
    build_reports(monday(runs))
    report = build_reports(tuesday(runs))
    page, blocked = offline_page(browser, "file://")
    page.goto(report.html.as_uri())
    assert blocked == []  # nothing but the file itself was asked for
    for chart in ("heatmap", "namespace-compliance", "top-controls", "approach", "trend"):
        assert page.locator(f'svg[data-chart="{chart}"]').count() == 1, chart
    assert page.locator('svg[data-chart="heatmap"] rect.cell').count() == 2 * 5
    assert page.locator('svg[data-chart="trend"] circle.point').count() == 2
    rows = page.locator("#containers tbody tr")
    assert rows.count() == 4
    page.fill('input[data-for="containers"]', "api-0")
    assert sum(1 for i in range(rows.count()) if rows.nth(i).is_visible()) == 1
    page.fill('input[data-for="containers"]', "")
    page.click("#namespaces th:nth-child(2)")  # sort by containers
    assert page.locator("#namespaces tbody tr").count() == 2
    link = page.locator("#containers a").first.get_attribute("href")
    assert link is not None and (report.html.parent / link).exists()
    assert "New failures (1)" in page.inner_text("body")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    page.close()


def test_heimdall_shows_a_runs_results(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from fleetscan.errors import UsageError
    from fleetscan.report.heimdall import HeimdallServer

    run = monday(tmp_path)
    try:
        server = HeimdallServer(run).start()
    except UsageError as exc:
        pytest.skip(str(exc))
    try:
        page, blocked = offline_page(browser, server.url.split("/?")[0])
        page.goto(server.url)
        page.wait_for_selector("text=Result View (4 results", timeout=60_000)
        page.wait_for_selector("text=66.66%", timeout=60_000)  # 8 of 12 controls passed, as Heimdall scores it
        body = page.inner_text("body")
        assert "Total\n12" in body
        assert all(not url.startswith("http://127.0.0.1") for url in blocked)  # only its update check was cut
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "heimdall.png"))
        page.close()
    finally:
        server.stop()
