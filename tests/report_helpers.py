"""Hand-built runs: run directories whose HDF results are chosen control by control."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fleetscan.results import hdf

SEVERITY = {"critical": 0.9, "high": 0.7, "medium": 0.5, "low": 0.3}


@dataclass
class Box:
    namespace: str
    pod: str
    workload: str  # "Deployment/web"
    statuses: dict[str, str]  # control id -> passed | failed | skipped
    outcome: str = "passed"
    image: str = "busybox"
    approach: str = "exec"
    severities: dict[str, str] = field(default_factory=dict)


def make_run(folder: Path, run_id: str, finished_at: str, boxes: list[Box]) -> Path:
    run = folder / run_id
    targets = []
    for b in boxes:
        controls = []
        for cid, status in b.statuses.items():
            sev = b.severities.get(cid, "high")
            controls.append(
                hdf.Control(
                    cid,
                    f"title of {cid}",
                    "",
                    SEVERITY[sev],
                    {"nist": ["AC-6"], "severity": sev},
                    [],
                    "",
                    "p.yml",
                    1,
                    [hdf.Result(status, f"{cid} check", finished_at)],
                )
            )
        doc = hdf.document(
            hdf.ProfileInfo("p", "P", "1", "0" * 64),
            controls,
            target_id=b.pod,
            platform_name="x",
            platform_release="1",
            duration=0.1,
        )
        rel = f"hdf/{b.namespace}/{b.pod}/c.json"
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(json.dumps(doc))
        passed = sum(1 for s in b.statuses.values() if s == "passed")
        counted = sum(1 for s in b.statuses.values() if s in ("passed", "failed", "skipped"))
        kind, name = b.workload.split("/")
        targets.append(
            {
                "namespace": b.namespace,
                "pod": b.pod,
                "container": "c",
                "image": b.image,
                "workload_kind": kind,
                "workload_name": name,
                "approach": b.approach,
                "engine": "native",
                "outcome": b.outcome,
                "compliance": round(100 * passed / counted) if counted else 0,
                "counts": {},
                "reason": "",
                "hdf": rel,
                "exec_calls": 2,
                "duration_s": 0.1,
                "attempts": 1,
                "represents": [],
            }
        )
    summary = {
        "run_id": run_id,
        "started_at": finished_at,
        "finished_at": finished_at,
        "profile": "p",
        "threshold": "t.yml",
        "totals": {},
        "targets": targets,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    return run
