"""Waivers: a bad file fails before any cluster call, with its line; a waiver in force makes a
control Not Applicable exactly as SAF counts InSpec's waivers, while what the check found stays in
the HDF, the rows, results.csv and the reports; expired waivers and waivers that matched nothing
are listed."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from datetime import date, timedelta
from importlib import resources
from pathlib import Path

import pytest

from fleetscan.emulator.scenario import load_scenario
from fleetscan.emulator.server import Emulator
from fleetscan.errors import UsageError
from fleetscan.kube.targets import Target, Workload
from fleetscan.results import hdf
from fleetscan.results.hdf import load_hdf, unexamined_controls
from fleetscan.results.saf import SafCli
from fleetscan.results.threshold import evaluate, load_threshold
from fleetscan.results.waivers import load_waivers, parse_waivers
from fleetscan.settings import ScanParams

from .kube_helpers import admin_kube, unreachable_kubeconfig
from .pipeline_helpers import scan_records

TODAY = date.today()
SOON, PAST = (TODAY + timedelta(days=30)).isoformat(), (TODAY - timedelta(days=1)).isoformat()

WAIVERS = f"""\
waivers:
  - controls: [CB-01, CB-08]
    scope: {{namespace: payments, workload: "pay*", container: app}}
    justification: legacy payment app, replaced next quarter
    expires: "{SOON}"
    approved_by: secops@example.com
  - controls: [CB-10]
    scope: {{namespace: shop}}
    justification: accepted until yesterday
    expires: {PAST}
    approved_by: secops@example.com
  - controls: [CB-99]
    justification: matches no control of the profile
    expires: "{SOON}"
    approved_by: secops@example.com
"""

FLEETSCAN = [sys.executable, "-m", "fleetscan"]


def write(tmp_path: Path, text: str, name: str = "waivers.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("waivers:\n  - controls: [A]\n    justification: j\n    approved_by: a\n", ":2: expires is required"),
        (f"waivers:\n  - controls: [A]\n    justification: j\n    expires: '{SOON}'\n", ":2: approved_by is required"),
        ("waivers:\n  - controls: [A]\n    justification: j\n    approved_by: a\n    expires: 31/12/2026\n",
         ":2: expires '31/12/2026' is not a date"),
        ("waivers:\n  - controls: [A]\n    justification: j\n    approved_by: a\n    expires: 2026-02-30\n",
         ":2: expires '2026-02-30' is not a date"),
        (f"waivers:\n  - controls: [A]\n    justification: j\n    approved_by: a\n    expires: {SOON}\n"
         "    scope: {pod: 'web-[abc'}\n", ":2: scope pod: 'web-[abc' has a [ without its ]"),
        (f"waivers:\n  - controls: [A]\n    justification: j\n    approved_by: a\n    expires: {SOON}\n"
         "    scope: {node: x}\n", ":2: unknown scope key 'node'"),
        (f"waivers:\n  - controls: [A]\n    justification: j\n    approved_by: a\n    expires: {SOON}\n"
         "    run: false\n", ":6: unknown key 'run'"),
        ("waiver:\n  - controls: [A]\n", ":1: unknown key 'waiver'"),
        (f"waivers:\n  - controls: []\n    justification: j\n    approved_by: a\n    expires: {SOON}\n",
         ":2: controls must be a non-empty list"),
        ("waivers: [a\n", "not valid YAML"),
    ],
)  # fmt: skip
def test_a_bad_waiver_file_names_its_line(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as err:
        load_waivers(str(path))
    assert f"{path}" in str(err.value) and problem in str(err.value)


def test_a_bad_waiver_file_fails_the_cli_before_any_cluster_call(tmp_path: Path) -> None:
    bad = write(tmp_path, "waivers:\n  - controls: [CB-01]\n    justification: j\n    approved_by: a\n")
    kubeconfig = unreachable_kubeconfig(tmp_path / "kc")  # a call to it would exit 2, not 64
    done = subprocess.run(
        [*FLEETSCAN, "scan", "--kubeconfig", str(kubeconfig), "--waivers", str(bad), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 64, done.stderr
    assert f"{bad}:2: expires is required" in done.stderr
    assert not (tmp_path / "run").exists()


def target(namespace: str, pod: str, container: str, workload: str = "", image: str = "img") -> Target:
    return Target(
        namespace, pod, container, image, Workload("Deployment", workload) if workload else Workload("Pod", pod)
    )


def test_scope_globs_must_all_match() -> None:
    waivers = parse_waivers(WAIVERS, "w.yml", TODAY)
    first = waivers.in_force[0]
    assert first.id == "w.yml:2" and [w.id for w in waivers.expired] == ["w.yml:7"]
    assert first.covers(target("payments", "payments-6c5b-aaaaa", "app", "payments"))
    assert not first.covers(target("payments", "payments-6c5b-aaaaa", "sidecar", "payments"))
    assert not first.covers(target("payments", "ledger-0", "app", "ledger"))
    assert not first.covers(target("payments-eu", "payments-1", "app", "payments"))
    # a waiver expires after its day, not on it
    assert [w.id for w in parse_waivers(WAIVERS, "w.yml", TODAY - timedelta(days=1)).expired] == []


def test_a_waiver_cannot_hide_a_control_that_could_not_be_examined() -> None:
    control = hdf.Control("CB-01", "t", "", 0.7, {"nist": ["AC-6"], "severity": "high"}, [], "", "p", 1)
    control.results = [hdf.Result("error", "cut section", hdf.now_iso(), message="section cut")]
    info = hdf.ProfileInfo("p", "p", "1", "0" * 64)
    doc = hdf.document(info, [control], target_id="t", platform_name="k8s", platform_release="1", duration=0.1)
    waivers = parse_waivers(WAIVERS, "w.yml", TODAY)
    assert waivers.apply(doc, target("payments", "payments-1", "app", "payments")) == ["w.yml:2"]
    assert doc["profiles"][0]["controls"][0]["waiver_data"]["skipped_due_to_waiver"] is True
    assert unexamined_controls(doc) == ["CB-01 (section cut)"]  # an error still, not N/A


PODS = ["payments-6c5b-aaaaa", "web-7d9f-abcde"]


@pytest.mark.slow
def test_waived_controls_count_as_saf_counts_them(demo_emulator: Emulator, saf: SafCli, tmp_path: Path) -> None:
    kube = admin_kube(demo_emulator, tmp_path)
    params = ScanParams(debug_image="fleetscan/debug:1.0", namespaces=["payments", "shop"])
    before = {r.key: r for r in scan_records(kube, tmp_path / "before", params, PODS)}
    waived = params.model_copy(update={"waivers": str(write(tmp_path, WAIVERS))})
    after = {r.key: r for r in scan_records(kube, tmp_path / "after", waived, PODS)}
    pay, web = "payments/payments-6c5b-aaaaa/app", "shop/web-7d9f-abcde/web"
    assert before[pay].outcome == "failed" and after[pay].outcome == "passed"  # CB-01 and CB-08 failed it
    assert after[pay].waivers == ["waivers.yml:2"]
    assert after[pay].counts["no_impact"] == before[pay].counts["no_impact"] + 2
    assert (after[web].outcome, after[web].counts, after[web].waivers) == ("failed", before[web].counts, [])  # expired
    doc = load_hdf(tmp_path / "after" / "run" / after[pay].hdf)
    cb01 = next(c for c in doc["profiles"][0]["controls"] if c["id"] == "CB-01")
    data = cb01["waiver_data"]
    assert data["skipped_due_to_waiver"] is True and data["approved_by"] == "secops@example.com"
    assert data["expiration_date"] == SOON and "the check found: failed" in data["message"]
    assert any(r["status"] == "failed" for r in cb01["results"])  # what the check found stays
    no_impact = tmp_path / "no-impact.yml"
    no_impact.write_text("no_impact:\n  total:\n    max: 0\n")
    for rules in ("default.yml", "strict.yml", no_impact):
        path = rules if isinstance(rules, Path) else write(
            tmp_path, resources.files("fleetscan.profiles").joinpath(rules).read_text(), rules
        )  # fmt: skip
        for key in (pay, web):
            hdf_path = tmp_path / "after" / "run" / after[key].hdf
            ours = evaluate(load_hdf(hdf_path), load_threshold(path))
            real = saf.validate(hdf_path, threshold_file=path)
            assert (real.stdout, real.stderr) == (ours.stdout, ours.stderr), (key, rules)


@pytest.mark.slow
def test_a_run_lists_its_waivers_in_summary_csv_and_reports(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with Emulator(load_scenario("demo")) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        out = tmp_path / "run"
        env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        done = subprocess.run(
            [*FLEETSCAN, "scan", "--kubeconfig", str(kubeconfig), "--namespaces", "payments,shop", "-q",
             "--debug-image", "fleetscan/debug:1.0", "--waivers", str(write(tmp_path, WAIVERS)), "--out", str(out)],
            capture_output=True, text=True, timeout=600, env=env,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr  # shop's web pods still fail: their waiver expired
    summary = json.loads((out / "summary.json").read_text())
    section = summary["waivers"]
    assert [(w["id"], w["containers"]) for w in section["applied"]] == [("waivers.yml:2", 2)]
    assert [w["id"] for w in section["unused"]] == ["waivers.yml:12"]
    assert [w["id"] for w in section["expired"]] == ["waivers.yml:7"]
    assert (section["waived_controls"], section["waived_still_failing"]) == (4, 4)
    outcomes = {f"{t['pod']}/{t['container']}": t["outcome"] for t in summary["targets"]}
    assert outcomes["payments-6c5b-aaaaa/app"] == outcomes["payments-6c5b-bbbbb/app"] == "passed"
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    waived = sorted((r["pod"], r["control"], r["status"], r["waived"]) for r in rows if r["waived"])
    assert waived == [
        (pod, control, "no_impact", "failed")
        for pod in ("payments-6c5b-aaaaa", "payments-6c5b-bbbbb")
        for control in ("CB-01", "CB-08")
    ]
    markdown = (out / "report.md").read_text()
    assert "## Waivers" in markdown
    assert "4 control results waived, 4 of them still failing" in markdown
    assert "| waivers.yml:7 | CB-10 | namespace=shop |" in markdown and "| expired |" in markdown
    page = browser.new_page()
    page.goto((out / "report.html").as_uri())
    states = page.locator("#waivers tbody tr td:nth-child(6)").all_inner_texts()
    assert states == ["applied to 2 container(s)", "matched nothing", "expired"]
    assert page.locator("#waived tbody tr td:nth-child(6)").all_inner_texts() == ["failed"] * 4
    page.close()
