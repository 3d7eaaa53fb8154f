"""Prometheus metrics through the CLI: the text file (parsed with prometheus_client's own parser)
says what summary.json says, with bounded labels; the same registry is pushed to a Pushgateway (a
local HTTP sink); a Pushgateway that is down is a warning, not a lost run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fleetscan.emulator.scenario import parse_scenario
from fleetscan.emulator.server import Emulator
from fleetscan.pipeline.aggregate import aggregate
from fleetscan.report.metrics import export, registry_of
from fleetscan.results.hdf import now_iso
from fleetscan.results.rundir import RunDir

from .http_sink import http_sink
from .kube_helpers import unreachable_kubeconfig

FLEETSCAN = [sys.executable, "-m", "fleetscan"]
DATA = Path(__file__).parent / "data"


def samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """metric name -> sorted labels -> value."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return out


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    return subprocess.run([*FLEETSCAN, *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, list[Any]]:
    """One run of the small fleet with --metrics, --pushgateway and --metrics-per-workload."""
    folder = tmp_path_factory.mktemp("metrics")
    with http_sink() as gateway, Emulator(parse_scenario((DATA / "small.yaml").read_text(), "small.yaml")) as emu:
        kubeconfig = emu.write_kubeconfig(folder / "kc")
        done = cli(
            "scan", "--kubeconfig", str(kubeconfig), "-q", "--out", str(folder / "run"), "--metrics",
            str(folder / "fleetscan.prom"), "--pushgateway", gateway.url, "--metrics-per-workload",
        )  # fmt: skip
        assert done.returncode in (0, 1), done.stderr
        requests = list(gateway.requests)
    summary = json.loads((folder / "run" / "summary.json").read_text())
    return summary, (folder / "fleetscan.prom").read_text(), requests


@pytest.mark.slow
def test_the_metrics_file_says_what_the_summary_says(scanned: tuple[dict[str, Any], str, list[Any]]) -> None:
    summary, text, _ = scanned
    m = samples(text)
    namespaces = {ns["namespace"]: ns for ns in summary["namespaces"]}
    assert set(namespaces) == {"alpha", "beta"}
    for name, ns in namespaces.items():
        assert m["fleetscan_namespace_compliance_percent"][(("namespace", name),)] == ns["compliance"]
        met = 1.0 if not ns["failed"] and not ns["error"] else 0.0
        assert m["fleetscan_namespace_threshold_met"][(("namespace", name),)] == met
        for outcome in ("passed", "failed", "error", "skipped"):
            assert m["fleetscan_containers"][(("namespace", name), ("outcome", outcome))] == ns[outcome]
        failed_rows = sum(t["counts"].get("failed", 0) for t in summary["targets"] if t["namespace"] == name)
        by_severity = {k: v for k, v in m["fleetscan_failed_controls"].items() if ("namespace", name) in k}
        assert sum(by_severity.values()) == failed_rows > 0
    assert sum(m["fleetscan_containers"].values()) == summary["totals"]["targets"]
    assert m["fleetscan_fleet_compliance_percent"][()] == summary["fleet_compliance"]
    assert m["fleetscan_scan_errors"][()] == summary["totals"]["error"]
    assert m["fleetscan_scan_duration_seconds"][()] > 0
    workloads = m["fleetscan_workload_compliance_percent"]
    assert workloads[(("namespace", "alpha"), ("workload", "Pod/one"))] == next(
        t["compliance"] for t in summary["targets"] if t["pod"] == "one"
    )
    labels = {k for series in m.values() for key in series for k, _ in key}
    assert labels == {"namespace", "outcome", "severity", "workload"}  # never pod or container


def test_a_run_of_under_a_second_has_a_duration(tmp_path: Path) -> None:
    """started_at and finished_at are both kept to the millisecond, so a run that ends within the
    second it started in still ends after it started."""
    (tmp_path / "r").mkdir()
    run = RunDir(tmp_path / "r", "r")
    aggregate(run, started_at=now_iso(), profile="p", threshold="t")  # its imports, once
    started = now_iso()
    summary = aggregate(run, started_at=started, profile="p", threshold="t").to_dict()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", summary["finished_at"])
    assert datetime.fromisoformat(summary["finished_at"]) > datetime.fromisoformat(started)
    assert samples(generate_latest(registry_of(summary)).decode())["fleetscan_scan_duration_seconds"][()] > 0


@pytest.mark.slow
def test_the_pushgateway_gets_the_same_registry(scanned: tuple[dict[str, Any], str, list[Any]]) -> None:
    _, text, requests = scanned
    (push,) = requests
    assert (push.method, push.path) == ("PUT", "/metrics/job/fleetscan")
    assert samples(push.body.decode()) == samples(text)


@pytest.mark.slow
def test_per_workload_series_are_opt_in(scanned: tuple[dict[str, Any], str, list[Any]], tmp_path: Path) -> None:
    summary, _, _ = scanned
    m = samples(generate_latest(registry_of(summary)).decode())
    assert not [name for name in m if "workload" in name]
    # a Pushgateway that is down: the file is still written, the problem is returned, nothing raises
    problem = export(summary, path=str(tmp_path / "x.prom"), pushgateway="http://127.0.0.1:9")
    assert "could not push the metrics to http://127.0.0.1:9" in problem and (tmp_path / "x.prom").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pushgateway", "pushgateway:9091"], "give the Pushgateway's http(s) URL"),
        (["--metrics", "/nonexistent/dir/x.prom"], "the folder /nonexistent/dir does not exist"),
    ],
)
def test_bad_metrics_options_fail_before_any_cluster_call(tmp_path: Path, args: list[str], message: str) -> None:
    kubeconfig = unreachable_kubeconfig(tmp_path / "kc")
    done = cli("scan", "--kubeconfig", str(kubeconfig), "--out", str(tmp_path / "run"), *args)
    assert done.returncode == 64 and message in done.stderr, done.stderr
