"""What a run keeps per container: the outcome record behind summary.json, and the exit code the
records imply."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from ..kube.targets import Skipped, Target

Outcome = Literal["passed", "failed", "error", "skipped"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)

EXIT_PASSED, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


@dataclass(slots=True)  # listed one per container (resume, completion): without a __dict__, a fifth the size
class TargetRecord:
    namespace: str
    pod: str
    container: str
    image: str = ""
    workload_kind: str = ""
    workload_name: str = ""
    approach: str = ""
    engine: str = ""
    outcome: Outcome = "error"
    compliance: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    hdf: str = ""  # relative to the run directory
    exec_calls: int = 0
    duration_s: float = 0.0
    attempts: int = 0
    represents: list[str] = field(default_factory=list)
    node: str = ""
    waivers: list[str] = field(default_factory=list)  # ids of the waivers applied to its controls
    # One row per counted control (hdf.ROW_FIELDS), so reports never parse the HDF files again.
    controls: list[list[Any]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pod}/{self.container}"

    def to_dict(self) -> dict[str, Any]:
        """Its fields as they are (asdict's deep copy of every control row costs more than the write)."""
        return {name: getattr(self, name) for name in _FIELDS}

    def summary_dict(self) -> dict[str, Any]:
        """As summary.json lists it: without the per-control rows (results.csv has those)."""
        out = self.to_dict()
        del out["controls"]
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TargetRecord:
        known = set(cls.__dataclass_fields__)
        record = cls(**{k: v for k, v in raw.items() if k in known})
        if record.outcome not in OUTCOMES:
            raise ValueError(f"record {record.key}: unknown outcome {record.outcome!r}")
        return record

    @classmethod
    def for_target(cls, target: Target, engine: str) -> TargetRecord:
        return cls(
            target.namespace,
            target.pod,
            target.container,
            target.image,
            target.workload.kind,
            target.workload.name,
            engine=engine,
            represents=list(target.represents),
            node=target.node,
        )

    @classmethod
    def for_skipped(cls, skipped: Skipped) -> TargetRecord:
        return cls(skipped.namespace, skipped.pod, skipped.container, outcome="skipped", reason=skipped.reason)


def totals(records: Iterable[TargetRecord]) -> dict[str, int]:
    return tally(record.outcome for record in records)


def tally(outcomes: Iterable[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {"targets": 0, **dict.fromkeys(OUTCOMES, 0)}
    for outcome in outcomes:
        counts["targets"] += 1
        counts[outcome] += 1
    return counts


def exit_code(counts: dict[str, int]) -> int:
    """2 if any container could not be scanned, else 1 if any failed its threshold, else 0."""
    if counts.get("error"):
        return EXIT_ERROR
    return EXIT_FAILED if counts.get("failed") else EXIT_PASSED


_FIELDS = tuple(f.name for f in fields(TargetRecord))
