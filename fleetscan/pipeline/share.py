"""Hand shard results to the dispatching run through an fsspec URL (s3://, gs://, az://, file://),
for workers that share no filesystem with it. A shard uploads the records and HDF of its run
directory under <url>/<run id>/; the parent collects them into its own run directory.

Resume works through the share too: a parent seeds it with what it already holds for the
namespaces it dispatches again, and a shard starts from what the share holds for its namespaces,
so a resumed run scans only what no attempt finished."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs

from ..errors import UsageError
from ..results.files import write_json_atomic
from ..results.rundir import RunDir

PARTS = ("records", "hdf")  # what aggregation reads; summary and reports are the parent's to write


def share_root(url: str, run_id: str) -> tuple[AbstractFileSystem, str]:
    try:
        fs, root = url_to_fs(url)
    except (ImportError, ValueError) as exc:  # e.g. s3:// without s3fs installed
        raise UsageError(f"share {url!r}: {exc}") from exc
    return fs, f"{root.rstrip('/')}/{run_id}"


def _in(rel: Path, namespaces: set[str] | None) -> bool:
    return namespaces is None or (len(rel.parts) > 1 and rel.parts[1] in namespaces)


def upload(run: RunDir, url: str, namespaces: Iterable[str] | None = None) -> int:
    """Copy the run directory's records and HDF files (of `namespaces`, default all) to the share;
    returns how many files."""
    fs, dest = share_root(url, run.run_id)
    wanted = set(namespaces) if namespaces is not None else None
    count = 0
    for part in PARTS:
        for path in sorted((run.path / part).rglob("*.json")):
            rel = path.relative_to(run.path)
            if not _in(rel, wanted):
                continue
            remote = f"{dest}/{rel.as_posix()}"
            fs.makedirs(remote.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(path), remote)
            count += 1
    return count


def _copy_from(run: RunDir, url: str, namespaces: set[str] | None) -> tuple[AbstractFileSystem, str, int]:
    """HDF before records, so a record never points at a missing HDF."""
    fs, src = share_root(url, run.run_id)
    count = 0
    for part in reversed(PARTS):
        base = f"{src}/{part}"
        if not fs.exists(base):
            continue
        for remote in sorted(fs.find(base)):
            rel = PurePosixPath(remote.split(f"{src}/", 1)[1])
            if ".." in rel.parts or rel.suffix != ".json" or rel.parts[0] != part:
                continue  # not something a shard writes
            if not _in(Path(*rel.parts), namespaces):
                continue
            write_json_atomic(run.path / Path(*rel.parts), json.loads(fs.cat_file(remote)))
            count += 1
    return fs, src, count


def download(run: RunDir, url: str, namespaces: Iterable[str]) -> int:
    """What the share already holds for `namespaces` (a resumed shard's head start)."""
    return _copy_from(run, url, set(namespaces))[2]


def collect(run: RunDir, url: str) -> int:
    """Copy every shard's files from the share into the run directory, then remove them there."""
    fs, src, count = _copy_from(run, url, None)
    if fs.exists(src):
        fs.rm(src, recursive=True)
    return count


REPORTS = ("summary.json", "report.html", "report.md", "results.csv")


def publish_reports(run: RunDir, url: str) -> str:
    """The run's reports copied to the share (where a UI user elsewhere can open them); returns the
    URL of report.html there."""
    fs, dest = share_root(url, run.run_id)
    fs.makedirs(dest, exist_ok=True)
    for name in REPORTS:
        if (run.path / name).exists():
            fs.put_file(str(run.path / name), f"{dest}/{name}")
    return f"{url.rstrip('/')}/{run.run_id}/report.html"
