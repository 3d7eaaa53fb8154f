"""Shard hand-over through an fsspec URL: what a shard uploads, the parent collects intact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetscan.errors import UsageError
from fleetscan.pipeline.share import collect, upload
from fleetscan.results.records import TargetRecord
from fleetscan.results.rundir import RunDir


def _shard(tmp_path: Path, name: str, pods: list[str]) -> RunDir:
    run = RunDir.open(tmp_path / name, "r1", {}, params={})
    for pod in pods:
        record = TargetRecord("ns1", pod, "app", outcome="passed", compliance=100)
        run.record(record, {"profiles": [], "pod": pod})
    return run


def test_shards_hand_over_through_a_share(tmp_path: Path) -> None:
    share = (tmp_path / "bucket").as_uri()  # file:// through fsspec, as s3:// would go
    assert upload(_shard(tmp_path, "a", ["p1", "p2"]), share) == 4
    assert upload(_shard(tmp_path, "b", ["p3"]), share) == 2
    (tmp_path / "bucket" / "r1" / "records" / "stray.txt").write_text("not a shard file")
    parent = RunDir.open(tmp_path / "parent", "r1", {}, params={})
    assert collect(parent, share) == 6
    records = {r.pod: r for r in parent.records()}
    assert sorted(records) == ["p1", "p2", "p3"] and records["p3"].compliance == 100
    hdf = parent.hdf_path(records["p2"])
    assert hdf is not None and json.loads(hdf.read_text())["pod"] == "p2"
    assert not (tmp_path / "bucket" / "r1").exists()  # nothing left in the share
    assert not (tmp_path / "parent" / "records" / "stray.txt").exists()


def test_collect_from_an_empty_share_is_nothing(tmp_path: Path) -> None:
    parent = RunDir.open(tmp_path / "parent", "r1", {}, params={})
    assert collect(parent, (tmp_path / "none").as_uri()) == 0


def test_unknown_share_protocol_is_a_usage_error(tmp_path: Path) -> None:
    run = _shard(tmp_path, "a", ["p1"])
    with pytest.raises(UsageError, match="share 'nosuch://x'"):
        upload(run, "nosuch://x")
