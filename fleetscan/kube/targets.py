"""What discovery finds: one target per container to scan, with what the later steps need to know."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SKIP = "fleetscan.io/skip"
APPROACH = "fleetscan.io/approach"
PROFILE = "fleetscan.io/profile"
SIDECAR = "fleetscan.io/sidecar"
DEFAULT_SIDECAR = "fleetscan-scanner"


@dataclass(frozen=True)
class Workload:
    kind: str  # Deployment, StatefulSet, DaemonSet, Job, CronJob, ReplicaSet, or Pod for bare pods
    name: str


@dataclass(frozen=True)
class SecurityFacts:
    """The securityContext a container effectively runs with (pod values, container overrides)."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool = False
    privileged: bool = False
    allow_privilege_escalation: bool | None = None
    read_only_root_filesystem: bool = False
    added_capabilities: tuple[str, ...] = ()
    dropped_capabilities: tuple[str, ...] = ()

    @classmethod
    def of(cls, pod_sc: Any, ctr_sc: Any) -> SecurityFacts:
        """From the client's V1PodSecurityContext and V1SecurityContext (either may be None)."""

        def pick(attr: str) -> Any:
            value = getattr(ctr_sc, attr, None)
            return value if value is not None else getattr(pod_sc, attr, None)

        caps = getattr(ctr_sc, "capabilities", None)
        return cls(
            run_as_user=pick("run_as_user"),
            run_as_group=pick("run_as_group"),
            run_as_non_root=bool(pick("run_as_non_root")),
            privileged=bool(getattr(ctr_sc, "privileged", None)),
            allow_privilege_escalation=getattr(ctr_sc, "allow_privilege_escalation", None),
            read_only_root_filesystem=bool(getattr(ctr_sc, "read_only_root_filesystem", None)),
            added_capabilities=tuple(getattr(caps, "add", None) or ()),
            dropped_capabilities=tuple(getattr(caps, "drop", None) or ()),
        )


@dataclass(frozen=True)
class Target:
    namespace: str
    pod: str
    container: str
    image: str
    workload: Workload
    revision: str = ""  # pod-template-hash or controller-revision-hash: replicas share it
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    security: SecurityFacts = field(default_factory=SecurityFacts)
    share_process_namespace: bool = False
    sidecar: str | None = None  # the pod's scanner container, if any
    ephemeral_containers: tuple[str, ...] = ()
    host_path_volumes: tuple[str, ...] = ()
    represents: tuple[str, ...] = ()  # other pods of the same workload revision (--one-per-workload)
    node: str = ""  # spec.nodeName: scans per node are bounded
    container_id: str = ""  # the runtime's id of the container (status.containerStatuses[].containerID)
    image_id: str = ""  # the image the container runs, by digest (status.containerStatuses[].imageID)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pod}/{self.container}"

    @property
    def forced_approach(self) -> str:
        """The pod's `fleetscan.io/approach` annotation, or auto."""
        return self.annotations.get(APPROACH, "auto").strip().lower() or "auto"

    @property
    def profile(self) -> str | None:
        return self.annotations.get(PROFILE) or None


@dataclass(frozen=True)
class Skipped:
    """A container discovery decided not to scan, and why (never a silent pass)."""

    namespace: str
    pod: str
    container: str
    reason: str
