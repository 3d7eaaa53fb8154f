"""Find the containers to scan: namespaces, Running pods, their containers and owning workloads.

API calls per namespace do not grow with its pods: one paginated LIST of pods, plus one LIST of
ReplicaSets and one of Jobs when some pod is owned by one (to name the Deployment or CronJob above
it). A workload selection reads that one workload first, so a scan right after a deploy sees exactly
its current pods.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import Forbidden, NotFound, UsageError
from .client import Kube
from .names import check_label, check_subdomain
from .targets import DEFAULT_SIDECAR, SIDECAR, SKIP, SecurityFacts, Skipped, Target, Workload

log = logging.getLogger(__name__)

DEFAULT_EXCLUDES = ("kube-system", "kube-public", "kube-node-lease")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "Pod")
REVISION = "deployment.kubernetes.io/revision"


def workload_ref(text: str) -> tuple[str, str]:
    """'deployment/web' (kind case-insensitive) -> ('Deployment', 'web')."""
    kind, sep, name = text.partition("/")
    canonical = {k.lower(): k for k in WORKLOAD_KINDS}.get(kind.strip().lower())
    if not sep or canonical is None or not name:
        raise UsageError(f"workload {text!r}: write KIND/NAME with KIND one of {', '.join(WORKLOAD_KINDS)}")
    return canonical, check_subdomain(name.strip(), f"{canonical} name")


@dataclass(frozen=True)
class Selection:
    """What a run scans, however it started (CLI, schedule, UI, deploy event, shard, resume)."""

    namespaces: tuple[str, ...] = ()  # names or globs; empty means every namespace
    namespace_selector: str = ""  # label selector on namespaces
    exclude: tuple[str, ...] = DEFAULT_EXCLUDES  # names or globs
    own_namespace: str | None = None  # where fleetscan runs: never scanned
    pod_selector: str = ""
    one_per_workload: bool = False
    workload: tuple[str, str] | None = None  # (kind, name) in the one namespace named

    def __post_init__(self) -> None:
        for pattern in (*self.namespaces, *self.exclude):
            if not any(c in pattern for c in "*?["):
                check_label(pattern, "namespace")
        if self.workload is not None and (len(self.namespaces) != 1 or any(c in self.namespaces[0] for c in "*?[")):
            raise UsageError("a workload scan names exactly one namespace (--namespaces NS), without globs")


@dataclass
class Discovery:
    namespaces: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    missing_namespaces: list[str] = field(default_factory=list)  # asked for by name, not found


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _literal(pattern: str) -> bool:
    return not any(c in pattern for c in "*?[")


def select_namespaces(kube: Kube, selection: Selection) -> tuple[list[str], list[str]]:
    """(namespaces to scan, explicitly named namespaces that do not exist). Namespaces named one by
    one are read one by one, so an orchestrator whose RBAC is namespaced (it cannot list them) can
    scan them too."""
    if selection.namespaces and all(map(_literal, selection.namespaces)) and not selection.namespace_selector:
        try:
            return _read_namespaces(kube, selection)
        except Forbidden:
            pass  # may list them all, not get them one by one (an older ClusterRole)
    listed = kube.list_all(kube.core.list_namespace, label_selector=selection.namespace_selector or None)
    names = sorted(ns.metadata.name for ns in listed)
    chosen = [n for n in names if not selection.namespaces or _matches(n, selection.namespaces)]
    excluded = set(selection.exclude) | ({selection.own_namespace} if selection.own_namespace else set())
    chosen = [n for n in chosen if not _matches(n, excluded)]
    literal = [p for p in selection.namespaces if _literal(p)]
    return chosen, [n for n in literal if n not in names]


def _read_namespaces(kube: Kube, selection: Selection) -> tuple[list[str], list[str]]:
    excluded = set(selection.exclude) | ({selection.own_namespace} if selection.own_namespace else set())
    present, missing = [], []
    for name in dict.fromkeys(selection.namespaces):
        try:
            kube.core.read_namespace(name)
        except NotFound:
            missing.append(name)
            continue
        if not _matches(name, excluded):
            present.append(name)
    return sorted(present), missing


def _owner(meta: Any) -> tuple[str, str] | None:
    for ref in meta.owner_references or []:
        if ref.controller:
            return ref.kind, ref.name
    refs = meta.owner_references or []
    return (refs[0].kind, refs[0].name) if refs else None


class _Owners:
    """Resolve a pod's controller to the workload people know (Deployment, CronJob, ...), listing
    ReplicaSets and Jobs of the namespace at most once each."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self._kube = kube
        self._ns = namespace
        self._cache: dict[str, list[Any]] = {}

    def objects(self, kind: str) -> list[Any]:
        if kind not in self._cache:
            lister = (
                self._kube.apps.list_namespaced_replica_set
                if kind == "ReplicaSet"
                else self._kube.batch.list_namespaced_job
            )
            self._cache[kind] = self._kube.list_all(lister, self._ns)
        return self._cache[kind]

    def workload(self, pod: Any) -> Workload:
        owner = _owner(pod.metadata)
        if owner is None:
            return Workload("Pod", pod.metadata.name)
        kind, name = owner
        if kind in ("ReplicaSet", "Job"):
            parents = {o.metadata.name: _owner(o.metadata) for o in self.objects(kind)}
            parent = parents.get(name)
            if parent is not None:
                return Workload(*parent)
        return Workload(kind, name)

    def current_replica_set(self, deployment: str) -> str | None:
        """The newest ReplicaSet of a Deployment: the pods a rollout has just made."""
        owned = [rs for rs in self.objects("ReplicaSet") if _owner(rs.metadata) == ("Deployment", deployment)]
        if not owned:
            return None
        newest = max(owned, key=lambda rs: int((rs.metadata.annotations or {}).get(REVISION, "0") or 0))
        return str(newest.metadata.name)


def _revision(labels: dict[str, str]) -> str:
    return labels.get("pod-template-hash") or labels.get("controller-revision-hash") or ""


def _targets_of(pod: Any, workload: Workload) -> tuple[list[Target], list[Skipped]]:
    meta, spec = pod.metadata, pod.spec
    annotations = dict(meta.annotations or {})
    sidecar_name = annotations.get(SIDECAR, DEFAULT_SIDECAR)
    names = [c.name for c in spec.containers]
    sidecar = sidecar_name if sidecar_name in names and spec.share_process_namespace else None
    statuses = pod.status.container_statuses or []
    running = {s.name for s in statuses if s.state and s.state.running}
    ids = {s.name: str(s.container_id or "").split("://")[-1] for s in statuses}
    images = {s.name: str(s.image_id or "") for s in statuses}
    targets: list[Target] = []
    skipped: list[Skipped] = []
    for ctr in spec.containers:
        if ctr.name == sidecar_name:  # the scanner is never a target itself, and says so
            why = (
                "the pod's scanner sidecar: it scans the other containers"
                if sidecar
                else f"named as the pod's scanner ({SIDECAR}) but the pod does not share its process namespace"
            )
            skipped.append(Skipped(meta.namespace, meta.name, ctr.name, why))
            continue
        if annotations.get(SKIP, "").strip().lower() == "true":
            skipped.append(Skipped(meta.namespace, meta.name, ctr.name, f"pod annotation {SKIP}=true"))
            continue
        if ctr.name not in running:
            skipped.append(Skipped(meta.namespace, meta.name, ctr.name, "container is not running"))
            continue
        targets.append(
            Target(
                namespace=meta.namespace,
                pod=meta.name,
                container=ctr.name,
                image=ctr.image,
                workload=workload,
                revision=_revision(meta.labels or {}),
                annotations=annotations,
                security=SecurityFacts.of(spec.security_context, ctr.security_context),
                share_process_namespace=bool(spec.share_process_namespace),
                sidecar=sidecar,
                ephemeral_containers=tuple(e.name for e in spec.ephemeral_containers or []),
                host_path_volumes=tuple(v.host_path.path for v in spec.volumes or [] if v.host_path),
                node=str(spec.node_name or ""),
                container_id=ids.get(ctr.name, ""),
                image_id=images.get(ctr.name, ""),
            )
        )
    return targets, skipped


def _one_per_workload(targets: list[Target]) -> list[Target]:
    """Keep one pod per workload revision; the kept targets name the pods they stand for."""
    groups: dict[tuple[str, str, str, str], list[Target]] = {}
    singles: list[Target] = []
    for t in targets:
        if t.workload.kind == "Pod" or not t.revision:
            singles.append(t)
        else:
            groups.setdefault((t.namespace, t.workload.kind, t.workload.name, t.revision), []).append(t)
    kept = list(singles)
    for members in groups.values():
        pods = sorted({t.pod for t in members})
        representative = pods[0]
        others = tuple(pods[1:])
        kept.extend(replace(t, represents=others) for t in members if t.pod == representative)
    return sorted(kept, key=lambda t: (t.namespace, t.pod, t.container))


def _read_workload(kube: Kube, namespace: str, kind: str, name: str) -> Any:
    readers = {
        "Deployment": kube.apps.read_namespaced_deployment,
        "StatefulSet": kube.apps.read_namespaced_stateful_set,
        "DaemonSet": kube.apps.read_namespaced_daemon_set,
        "Job": kube.batch.read_namespaced_job,
        "Pod": kube.core.read_namespaced_pod,
    }
    try:
        return readers[kind](name, namespace)
    except NotFound as exc:
        raise NotFound(f'{kind} "{namespace}/{name}" does not exist: nothing to scan') from exc


def _of_workload(kube: Kube, owners: _Owners, pods: list[Any], kind: str, name: str, obj: Any) -> list[Any]:
    """The workload's current pods: not terminating, and of its newest revision."""
    if kind == "Pod":
        return [p for p in pods if p.metadata.name == name]
    mine = [p for p in pods if owners.workload(p) == Workload(kind, name) and not p.metadata.deletion_timestamp]
    if kind == "Deployment":
        current = owners.current_replica_set(name)
        return [p for p in mine if current is None or _owner(p.metadata) == ("ReplicaSet", current)]
    if kind == "StatefulSet":
        update = getattr(obj.status, "update_revision", None) if obj.status else None
        return [p for p in mine if (p.metadata.labels or {}).get("controller-revision-hash", update) == update]
    return mine


def discover(kube: Kube, selection: Selection) -> Discovery:
    if selection.workload is not None:
        kind, name = selection.workload
        namespace = selection.namespaces[0]
        workload = _read_workload(kube, namespace, kind, name)
        namespaces, missing = [namespace], list[str]()
    else:
        namespaces, missing = select_namespaces(kube, selection)
    result = Discovery(namespaces=namespaces, missing_namespaces=missing)
    for ns in namespaces:
        try:
            pods = kube.list_all(
                kube.core.list_namespaced_pod,
                ns,
                label_selector=selection.pod_selector or None,
                field_selector="status.phase=Running",
            )
        except NotFound:
            result.missing_namespaces.append(ns)  # deleted since the namespace list
            continue
        owners = _Owners(kube, ns)
        if selection.workload is not None:
            pods = _of_workload(kube, owners, pods, *selection.workload, workload)
        for pod in sorted(pods, key=lambda p: p.metadata.name):
            targets, skipped = _targets_of(pod, owners.workload(pod))
            result.targets.extend(targets)
            result.skipped.extend(skipped)
    if selection.one_per_workload:
        result.targets = _one_per_workload(result.targets)
    if not result.targets and not result.skipped and selection.namespaces and missing == list(selection.namespaces):
        raise UsageError(f"none of the namespaces {', '.join(missing)} exists")
    return result
