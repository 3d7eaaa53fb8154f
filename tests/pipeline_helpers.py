"""The one scan path without Prefect: a Scanner over an emulator, for tests of what it decides."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from fleetscan.kube.client import Kube
from fleetscan.kube.discovery import discover
from fleetscan.kube.targets import Target
from fleetscan.pipeline.run import access_settings, check_inputs, identity
from fleetscan.pipeline.scan import Scanner
from fleetscan.results.records import TargetRecord
from fleetscan.results.rundir import RunDir
from fleetscan.settings import ScanParams


def scanner_for(kube: Kube, tmp_path: Path, params: ScanParams) -> Scanner:
    params = params.model_copy(update={"out": str(tmp_path / "run"), "run_id": params.run_id or "t1"}).resolved()
    engine, threshold, waivers = check_inputs(params)
    run = RunDir.open(Path(params.out), params.run_id, identity(params, engine, threshold, waivers), params={})
    return Scanner(params, kube, engine, threshold, run, access_settings(params, kube), waivers=waivers)


def scan_records(kube: Kube, tmp_path: Path, params: ScanParams, pods: list[str] | None = None) -> list[TargetRecord]:
    """Scan the selected containers (of `pods`, if given) through Scanner.scan_namespace."""
    scanner = scanner_for(kube, tmp_path, params)
    by_namespace: dict[str, list[Target]] = defaultdict(list)
    for target in discover(kube, params.selection()).targets:
        if pods is None or target.pod in pods:
            by_namespace[target.namespace].append(target)
    return [r for ns, ts in by_namespace.items() for r in scanner.scan_namespace(ns, ts)]
