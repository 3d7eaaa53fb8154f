"""What a run keeps per container: the outcome record behind summary.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..kube.targets import Skipped, Target

OUTCOMES = ("passed", "failed", "error", "skipped")


@dataclass
class TargetRecord:
    namespace: str
    pod: str
    container: str
    image: str = ""
    workload_kind: str = ""
    workload_name: str = ""
    approach: str = ""
    engine: str = ""
    outcome: str = "error"  # passed | failed | error | skipped
    compliance: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    hdf: str = ""  # relative to the run directory
    exec_calls: int = 0
    duration_s: float = 0.0
    attempts: int = 0
    represents: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pod}/{self.container}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TargetRecord:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})

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
        )

    @classmethod
    def for_skipped(cls, skipped: Skipped) -> TargetRecord:
        return cls(skipped.namespace, skipped.pod, skipped.container, outcome="skipped", reason=skipped.reason)
