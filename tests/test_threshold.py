"""Threshold verdicts equal the real SAF CLI's: recorded outcomes replayed, and the live CLI when installed."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleetscan.cli import app
from fleetscan.results.hdf import load_hdf
from fleetscan.results.lint import lint
from fleetscan.results.saf import SafCli
from fleetscan.results.threshold import ThresholdError, evaluate, load_threshold, parse_inline

SAMPLES = Path(__file__).parent / "data" / "saf"
ROWS = json.loads((SAMPLES / "expected-threshold-outcomes.json").read_text())


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample tree with HDFs unpacked, laid out as the recorded rows expect."""
    root = tmp_path_factory.mktemp("saf-samples")
    for path in SAMPLES.rglob("*"):
        if path.is_file():
            target = root / path.relative_to(SAMPLES)
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".gz":
                with gzip.open(path) as src, open(target.with_suffix(""), "wb") as dst:
                    shutil.copyfileobj(src, dst)
            else:
                shutil.copy(path, target)
    return root


def row_id(row: dict) -> str:
    return f"{row['id']}-{Path(row['hdf']).stem}"


@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_recorded_saf_outcome(samples: Path, row: dict) -> None:
    """Exit code, stdout and stderr byte for byte; SAF's crashes (exit 0!) are errors here."""
    args = ["validate", "--input", str(samples / row["hdf"])]
    args += (
        ["--threshold", str(samples / row["threshold"])]
        if row["flag"] == "-T"
        else ["--threshold-inline", row["threshold"]]
    )
    result = CliRunner().invoke(app, args)
    if row["crashed"]:
        assert result.exit_code == 2 and result.stdout == "" and result.stderr.startswith("error: ")
    else:
        assert (result.exit_code, result.stdout, result.stderr) == (row["exit_code"], row["stdout"], row["stderr"])


def test_counts_of_the_edge_file(samples: Path) -> None:
    verdict = evaluate(load_hdf(samples / "hdf/synthetic/edge_statuses.json"), {})
    assert verdict.counts.overall == {"passed": 6, "failed": 6, "skipped": 1, "no_impact": 2, "error": 5}
    assert verdict.counts.compliance == 33


def test_inline_quirks_match_saf() -> None:
    assert parse_inline("{compliance.min: 66}, {failed.medium.min: 97}") == {
        "compliance": {"min": 66},
        "failed": {"medium": {"min": 97}},
    }
    assert parse_inline("{compliance.min : 67}") == {"compliance": {"min ": 67}}  # SAF drops this rule too


def test_lint_names_what_saf_ignores(samples: Path) -> None:
    quirks = samples / "thresholds/quirks"
    messages = {
        name: lint(load_threshold(quirks / name), flattened_source=(quirks / name).read_text())
        for name in (
            "q02_flat_min_then_max_same_path.yml",
            "q03_no_impact_total_minmax.yml",
            "q05_compliance_zero.yml",
            "q09_string_values.yml",
            "q16_unknown_keys.yml",
        )
    }
    assert any("keeps the last" in m for m in messages["q02_flat_min_then_max_same_path.yml"])
    assert any("never checked" in m for m in messages["q03_no_impact_total_minmax.yml"])
    assert any("disables the check" in m for m in messages["q05_compliance_zero.yml"])
    assert any("quoted number" in m for m in messages["q09_string_values.yml"])
    assert any("faild: unknown key" in m for m in messages["q16_unknown_keys.yml"])
    assert lint({"compliance": {"min": 80}, "failed": {"critical": {"max": 0}, "total": {"max": 3}}}) == []


def test_errors_are_errors_not_passes(samples: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.yml"
    empty.write_text("# nothing\n")
    with pytest.raises(ThresholdError, match="empty"):
        load_threshold(empty)
    runner = CliRunner()
    both = runner.invoke(app, ["validate", "-i", str(samples / "hdf/minimal_hdf.json"), "-T", str(empty), "-I", "x"])
    assert both.exit_code == 64
    neither = runner.invoke(app, ["validate", "-i", str(samples / "hdf/minimal_hdf.json")])
    assert neither.exit_code == 64


@pytest.fixture(scope="session")
def saf_cli() -> Iterator[SafCli]:
    cli = SafCli.find()
    if cli is None:
        pytest.skip("the SAF CLI is not installed (make setup installs it)")
    yield cli


@pytest.mark.slow
@pytest.mark.parametrize("row_number", [1, 2, 6, 9, 358, 415, 420, 423])
def test_live_saf_cli_agrees(samples: Path, saf_cli: SafCli, row_number: int) -> None:
    row = next(r for r in ROWS if r["id"] == row_number)
    hdf = samples / row["hdf"]
    if row["flag"] == "-T":
        real = saf_cli.validate(hdf, threshold_file=samples / row["threshold"])
        ours = evaluate(load_hdf(hdf), load_threshold(samples / row["threshold"]))
    else:
        real = saf_cli.validate(hdf, inline=row["threshold"])
        ours = evaluate(load_hdf(hdf), parse_inline(row["threshold"]))
    assert (real.stdout, real.stderr) == (ours.stdout, ours.stderr)
    assert real.passed == ours.passed
