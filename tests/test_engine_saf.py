"""HDF from the native engine, scanning the demo fleet, judged by the real SAF CLI exactly as by fleetscan."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from fleetscan.emulator.server import Emulator
from fleetscan.results.hdf import load_hdf
from fleetscan.results.saf import SafCli
from fleetscan.results.threshold import evaluate, load_threshold
from fleetscan.settings import ScanParams

from .kube_helpers import admin_kube
from .pipeline_helpers import scan_records

PODS = (
    "web-7d9f-abcde",
    "api-0",
    "payments-6c5b-aaaaa",
    "ledger-0",
    "node-agent-x1y2z",
    "nightly-report-28461230-abcde",
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet_hdfs(demo_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One HDF per demo container, each reached by the approach `auto` picks."""
    folder = tmp_path_factory.mktemp("hdf")
    kube = admin_kube(demo_emulator, folder)
    records = scan_records(kube, folder, ScanParams(debug_image="fleetscan/debug:1.0"), list(PODS))
    paths = [folder / "run" / r.hdf for r in records if r.hdf]
    assert len(paths) == len(PODS)
    return paths


@pytest.mark.parametrize("threshold", ["default.yml", "strict.yml"])
def test_native_hdf_verdicts_equal_the_saf_cli(
    saf: SafCli, fleet_hdfs: list[Path], threshold: str, tmp_path: Path
) -> None:
    rules = tmp_path / threshold
    rules.write_text(resources.files("fleetscan.profiles").joinpath(threshold).read_text())
    verdicts = []
    for path in fleet_hdfs:
        ours = evaluate(load_hdf(path), load_threshold(rules))
        real = saf.validate(path, threshold_file=rules)
        assert (real.stdout, real.stderr) == (ours.stdout, ours.stderr), path.name
        verdicts.append(ours.passed)
    assert not all(verdicts)  # the demo fleet has misconfigured containers


def test_saf_view_summary_reads_native_hdf(saf: SafCli, fleet_hdfs: list[Path]) -> None:
    result = saf.summary(*fleet_hdfs)
    assert result.exit_code == 0, result.stderr
    (summary,) = json.loads(result.stdout)
    assert summary["profileName"] == "container-baseline"
    assert sorted(summary["resultSets"]) == sorted(p.name for p in fleet_hdfs)
    ours = [evaluate(load_hdf(p), {}).counts for p in fleet_hdfs]
    assert summary["compliance"] == pytest.approx(sum(c.compliance for c in ours) / len(ours))
    assert summary["failed"]["critical"] == sum(c.at("critical", "failed") for c in ours)
