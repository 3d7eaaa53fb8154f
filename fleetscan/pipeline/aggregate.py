"""Roll a run up: summary.json, results.csv (one row per container and control), report.md and a
plain self-contained report.html."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..hdf import write_atomic
from ..threshold import CountedControl, counted_controls
from .records import OUTCOMES, TargetRecord
from .rundir import RunDir


@dataclass
class RunSummary:
    run_id: str
    started_at: str
    finished_at: str
    profile: str
    threshold: str
    totals: dict[str, int]
    targets: list[dict[str, Any]]
    namespaces: list[dict[str, Any]] = field(default_factory=list)
    worst_controls: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "profile": self.profile,
            "threshold": self.threshold,
            "totals": self.totals,
            "namespaces": self.namespaces,
            "worst_controls": self.worst_controls,
            "targets": self.targets,
        }

    @property
    def exit_code(self) -> int:
        """0 all met their threshold, 1 some failed it, 2 some could not be scanned."""
        if self.totals.get("error"):
            return 2
        return 1 if self.totals.get("failed") else 0


def _controls(run: RunDir, record: TargetRecord) -> tuple[list[CountedControl], dict[str, dict[str, Any]]]:
    path = run.hdf_path(record)
    if path is None or not path.exists():
        return [], {}
    doc = json.loads(path.read_text())
    raw = {c["id"]: c for c in doc["profiles"][0]["controls"]}
    return counted_controls(doc), raw


def aggregate(run: RunDir, *, started_at: str, profile: str, threshold: str, history: Path | None = None) -> RunSummary:
    records = sorted(run.records(), key=lambda r: r.key)
    totals: dict[str, int] = {"targets": len(records), **dict.fromkeys(OUTCOMES, 0)}
    per_ns: dict[str, Counter[str]] = defaultdict(Counter)
    failing: Counter[str] = Counter()
    titles: dict[str, tuple[str, str]] = {}
    rows: list[dict[str, Any]] = []
    for r in records:
        totals[r.outcome] += 1
        per_ns[r.namespace][r.outcome] += 1
        controls, raw = _controls(run, r)
        for c in controls:
            meta = raw.get(c.id, {})
            titles.setdefault(c.id, (str(meta.get("title", "")), c.severity))
            if c.status == "failed":
                failing[c.id] += 1
            rows.append(
                {
                    "namespace": r.namespace,
                    "pod": r.pod,
                    "container": r.container,
                    "image": r.image,
                    "workload": f"{r.workload_kind}/{r.workload_name}",
                    "approach": r.approach,
                    "control": c.id,
                    "title": meta.get("title", ""),
                    "severity": c.severity,
                    "impact": meta.get("impact", ""),
                    "status": c.status,
                    "message": next(
                        (
                            x.get("message") or x.get("skip_message")
                            for x in meta.get("results", [])
                            if x.get("status") != "passed"
                        ),
                        "",
                    )
                    or "",
                }
            )
    run_dir = run.path
    with io.StringIO() as buf:
        fields = [
            "namespace",
            "pod",
            "container",
            "image",
            "workload",
            "approach",
            "control",
            "title",
            "severity",
            "impact",
            "status",
            "message",
        ]
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        _write_text(run_dir / "results.csv", buf.getvalue())
    namespaces: list[dict[str, Any]] = [
        {"namespace": ns, "targets": sum(c.values()), **{o: c.get(o, 0) for o in OUTCOMES}}
        for ns, c in sorted(per_ns.items())
    ]
    namespaces.sort(key=lambda n: (-(n["failed"] + n["error"]), n["namespace"]))
    worst = [
        {"control": cid, "title": titles[cid][0], "severity": titles[cid][1], "failing_containers": n}
        for cid, n in failing.most_common(10)
    ]
    summary = RunSummary(
        run.run_id,
        started_at,
        datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        profile,
        threshold,
        totals,
        [r.to_dict() for r in records],
        namespaces,
        worst,
    )
    write_atomic(run_dir / "summary.json", summary.to_dict())
    from ..report.build import build_reports  # pandas: imported when a run ends, not at start

    build_reports(run_dir, history)
    return summary


def _write_text(path: Any, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
