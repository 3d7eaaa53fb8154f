"""Hand shard results to the dispatching run through an fsspec URL (s3://, gs://, az://, file://),
for workers that share no filesystem with it. A shard uploads the records and HDF of its run
directory under <url>/<run id>/; the parent collects them into its own run directory."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs

from ..errors import UsageError
from ..hdf import write_atomic
from .rundir import RunDir

PARTS = ("records", "hdf")  # what aggregation reads; summary and reports are the parent's to write


def share_root(url: str, run_id: str) -> tuple[AbstractFileSystem, str]:
    try:
        fs, root = url_to_fs(url)
    except (ImportError, ValueError) as exc:  # e.g. s3:// without s3fs installed
        raise UsageError(f"share {url!r}: {exc}") from exc
    return fs, f"{root.rstrip('/')}/{run_id}"


def upload(run: RunDir, url: str) -> int:
    """Copy the shard's records and HDF files to the share; returns how many files."""
    fs, dest = share_root(url, run.run_id)
    count = 0
    for part in PARTS:
        for path in sorted((run.path / part).rglob("*.json")):
            remote = f"{dest}/{path.relative_to(run.path).as_posix()}"
            fs.makedirs(remote.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(path), remote)
            count += 1
    return count


def collect(run: RunDir, url: str) -> int:
    """Copy every shard's files from the share into the run directory (HDF before records, so a
    record never points at a missing HDF), then remove them from the share."""
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
            write_atomic(run.path / Path(*rel.parts), json.loads(fs.cat_file(remote)))
            count += 1
    if fs.exists(src):
        fs.rm(src, recursive=True)
    return count
