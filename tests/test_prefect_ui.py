"""The Prefect UI as a security engineer uses it, in headless Chromium against a real server on
PostgreSQL: the served deployments show their schedule and trigger; Run -> Custom run on
`fleet-scan` with a namespace added in the ScanParams form starts a scan of that namespace, named
after it, which completes and shows its artifacts. Screenshots go to tests/artifacts/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetscan.emulator.scenario import load_scenario
from fleetscan.emulator.server import Emulator

from .test_deployments import client, deployments, server, serving, wait_for

__all__ = ["server"]  # the real server fixture of the deployment tests

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.mark.slow
def test_custom_run_from_the_ui(server: dict[str, str], browser: Any, tmp_path: Path) -> None:
    ui = server["PREFECT_API_URL"].removesuffix("/api")
    ARTIFACTS.mkdir(exist_ok=True)
    with Emulator(load_scenario("demo")) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        with serving(server, kubeconfig, tmp_path, "--debug-image", "fleetscan/debug:1.0"):
            names = {d.name: d for d in deployments(server)}
            page.goto(f"{ui}/deployments/deployment/{names['fleet-scan-nightly'].id}", wait_until="networkidle")
            page.get_by_text("At 02:00 AM every day").wait_for()  # the nightly schedule
            page.goto(f"{ui}/deployments/deployment/{names['workload-scan-on-deploy'].id}", wait_until="networkidle")
            page.get_by_text("workload-scan-on-deploy__automation_1").wait_for()  # the deploy-event trigger
            page.screenshot(path=str(ARTIFACTS / "ui-on-deploy.png"))

            page.goto(f"{ui}/deployments/deployment/{names['fleet-scan'].id}", wait_until="networkidle")
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Custom run").first.click()
            page.wait_for_load_state("networkidle")
            namespaces = page.locator("div", has=page.get_by_text("Namespaces (Optional)", exact=True)).filter(
                has=page.get_by_role("button", name="Add item")
            )
            namespaces.last.get_by_role("button", name="Add item").click()
            namespaces.last.get_by_role("textbox").last.fill("shop")
            page.screenshot(path=str(ARTIFACTS / "ui-custom-run.png"), full_page=True)
            page.get_by_role("button", name="Submit").click()

            def finished() -> Any:
                with client(server) as c:
                    runs = c.read_flow_runs(limit=50)
                return next(
                    (r for r in runs if r.deployment_id == names["fleet-scan"].id and r.state and r.state.is_final()),
                    None,
                )

            run = wait_for(finished, timeout=300, what="the custom run to finish")
    assert run.state.is_completed(), run.state
    assert run.parameters["params"]["namespaces"] == ["shop"]  # the field changed in the form
    assert run.name.startswith("fleet shop p")  # named after what it scanned, then its run id
    page.goto(f"{ui}/runs/flow-run/{run.id}", wait_until="networkidle")
    page.get_by_text(run.name).first.wait_for()
    page.get_by_text("Artifacts", exact=True).click()
    for key in ("fleetscan-namespaces", "fleetscan-summary", "fleetscan-report", "fleetscan-progress"):
        page.get_by_text(key, exact=True).first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "ui-run-artifacts.png"), full_page=True)
    page.close()
