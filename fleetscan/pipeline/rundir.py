"""The run directory: every container's HDF and outcome written atomically as soon as it is known,
so a crash loses nothing finished and a rerun with the same run id resumes.

    run.json                          run id and parameters (resume checks them)
    records/<ns>/<pod>/<ctr>.json     one outcome per container (the source of summary.json)
    hdf/<ns>/<pod>/<ctr>.json         the container's HDF results
    summary.json, results.csv, report.md, report.html   written when the run ends
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..hdf import write_atomic
from .params import ScanParams
from .records import TargetRecord


class RunDir:
    def __init__(self, path: Path, run_id: str) -> None:
        self.path = path
        self.run_id = run_id

    @classmethod
    def open(cls, params: ScanParams) -> RunDir:
        """Create the run directory, or reopen it to resume the same run."""
        path = Path(params.out)
        meta_file = path / "run.json"
        if meta_file.exists():
            meta = json.loads(meta_file.read_text())
            if meta.get("run_id") != params.run_id:
                raise UsageError(
                    f"{path} holds run {meta.get('run_id')!r}, not {params.run_id!r}: pass "
                    f"--run-id {meta.get('run_id')} to resume it, or another --out"
                )
        else:
            path.mkdir(parents=True, exist_ok=True)
            write_atomic(meta_file, {"run_id": params.run_id, "params": params.model_dump(mode="json")})
        return cls(path, params.run_id)

    @staticmethod
    def _parts(namespace: str, pod: str, container: str) -> Path:
        return Path(namespace) / pod / f"{container}.json"  # validated Kubernetes names: safe path parts

    def record(self, record: TargetRecord, hdf_doc: dict[str, Any] | None = None) -> None:
        rel = self._parts(record.namespace, record.pod, record.container)
        if hdf_doc is not None:
            write_atomic(self.path / "hdf" / rel, hdf_doc)
            record.hdf = str(Path("hdf") / rel)
        write_atomic(self.path / "records" / rel, record.to_dict())  # last: the record vouches for the HDF

    def records(self) -> list[TargetRecord]:
        out = []
        for path in sorted((self.path / "records").rglob("*.json")):
            try:
                out.append(TargetRecord.from_dict(json.loads(path.read_text())))
            except (OSError, ValueError, TypeError):
                continue  # a record being replaced right now, or damaged: it will be redone
        return out

    def finished(self) -> dict[str, TargetRecord]:
        """Containers a resumed run need not scan again (errors are retried)."""
        return {r.key: r for r in self.records() if r.outcome != "error"}

    def hdf_path(self, record: TargetRecord) -> Path | None:
        return self.path / record.hdf if record.hdf else None
