"""The run directory: every container's HDF and outcome written atomically as soon as it is known,
so a crash loses nothing finished and a rerun with the same run id resumes.

    run.json                          run id, parameters and what the run scans (resume checks it)
    records/<ns>/<pod>/<ctr>.json     one outcome per container (the source of summary.json)
    hdf/<ns>/<pod>/<ctr>.json         the container's HDF results
    summary.json, results.csv, report.md, report.html   written when the run ends
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import RunDirError, UsageError
from ..kube.targets import Target
from .files import write_json_atomic
from .records import TargetRecord

# Parts of a run's identity a shard may differ in: it scans a subset of the parent's namespaces.
SHARD_MAY_DIFFER = ("namespaces",)


class RunDir:
    def __init__(self, path: Path, run_id: str) -> None:
        self.path = path
        self.run_id = run_id

    @classmethod
    def open(
        cls, path: Path, run_id: str, identity: dict[str, Any], *, params: dict[str, Any], shard: bool = False
    ) -> RunDir:
        """Create the run directory, or reopen it to resume the same run: the same run id, and the
        same profile, threshold, engine and selection (a resume that scans something else would mix
        two runs' results in one report)."""
        meta_file = path / "run.json"
        try:
            meta = json.loads(meta_file.read_text()) if meta_file.exists() else None
        except (OSError, ValueError) as exc:
            raise RunDirError(f"{meta_file}: unreadable ({exc}); use another --out") from exc
        if meta is None:
            write_json_atomic(meta_file, {"run_id": run_id, "identity": identity, "params": params})
            return cls(path, run_id)
        if meta.get("run_id") != run_id:
            raise UsageError(
                f"{path} holds run {meta.get('run_id')!r}, not {run_id!r}: pass "
                f"--run-id {meta.get('run_id')} to resume it, or another --out"
            )
        before = meta.get("identity") or {}
        differ = [
            k
            for k in sorted(set(before) | set(identity))
            if before.get(k) != identity.get(k) and not (shard and k in SHARD_MAY_DIFFER)
        ]
        if differ:
            shown = "; ".join(f"{k}: {before.get(k)!r} then, {identity.get(k)!r} now" for k in differ)
            raise UsageError(
                f"run {run_id} in {path} cannot be resumed with other settings ({shown}); "
                "resume it with the settings it started with, or start a new run (another --run-id and --out)"
            )
        return cls(path, run_id)

    @staticmethod
    def _parts(namespace: str, pod: str, container: str) -> Path:
        return Path(namespace) / pod / f"{container}.json"  # validated Kubernetes names: safe path parts

    def record(self, record: TargetRecord, hdf_doc: dict[str, Any] | None = None) -> None:
        rel = self._parts(record.namespace, record.pod, record.container)
        if hdf_doc is not None:
            write_json_atomic(self.path / "hdf" / rel, hdf_doc, compact=True)
            record.hdf = str(Path("hdf") / rel)
        write_json_atomic(self.path / "records" / rel, record.to_dict(), compact=True)  # last: it vouches for the HDF

    def records(self) -> list[TargetRecord]:
        return list(self.iter_records())

    def iter_records(self) -> Iterator[TargetRecord]:
        """Every record in key order (namespace/pod/container), read one at a time."""
        root = self.path / "records"
        for _, path in sorted(_record_files(str(root))):
            try:
                with open(path, "rb") as fh:
                    yield TargetRecord.from_dict(json.loads(fh.read()))
            except (OSError, ValueError, TypeError):
                continue  # damaged (only a crash mid-rename could do it): scanned again on resume

    def finished(self) -> dict[str, TargetRecord]:
        """Containers a resumed run need not scan again (errors are retried)."""
        return {r.key: r for r in self.records() if r.outcome != "error"}

    def complete(self, targets: Iterable[Target], engine: str, reason: str) -> int:
        """Give each target that has no record an error record with `reason` (finished ones keep
        theirs): every selected container ends with exactly one record, whatever failed."""
        recorded = {r.key for r in self.records()}
        added = 0
        for target in targets:
            if target.key not in recorded:
                record = TargetRecord.for_target(target, engine)
                record.reason = reason
                self.record(record)
                added += 1
        return added

    def hdf_path(self, record: TargetRecord) -> Path | None:
        return self.path / record.hdf if record.hdf else None


def _record_files(root: str) -> Iterator[tuple[str, str]]:
    """(namespace/pod/container, path) of every records/<ns>/<pod>/<container>.json."""
    with contextlib.suppress(FileNotFoundError):
        for ns in os.scandir(root):
            if not ns.is_dir(follow_symlinks=False):
                continue
            for pod in os.scandir(ns.path):
                if not pod.is_dir(follow_symlinks=False):
                    continue
                for entry in os.scandir(pod.path):
                    if entry.name.endswith(".json") and entry.is_file(follow_symlinks=False):
                        yield f"{ns.name}/{pod.name}/{entry.name.removesuffix('.json')}", entry.path
