"""Find the containers to scan: namespaces, Running pods, their containers and owning workloads.

API calls per namespace do not grow with its pods: one LIST of pods, plus one LIST of ReplicaSets
and one of Jobs when some pod is owned by one (to name the Deployment or CronJob above it).
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import FleetscanError, UsageError
from .client import Kube
from .failures import classify
from .names import check_label
from .targets import DEFAULT_SIDECAR, SIDECAR, SKIP, SecurityFacts, Skipped, Target, Workload

log = logging.getLogger(__name__)

DEFAULT_EXCLUDES = ("kube-system", "kube-public", "kube-node-lease")


@dataclass(frozen=True)
class Selection:
    namespaces: tuple[str, ...] = ()  # names or globs; empty means every namespace
    namespace_selector: str = ""  # label selector on namespaces
    exclude: tuple[str, ...] = DEFAULT_EXCLUDES  # names or globs
    own_namespace: str | None = None  # where fleetscan runs: never scanned
    pod_selector: str = ""
    one_per_workload: bool = False

    def __post_init__(self) -> None:
        for pattern in (*self.namespaces, *self.exclude):
            if not any(c in pattern for c in "*?["):
                check_label(pattern, "namespace")


@dataclass
class Discovery:
    namespaces: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    missing_namespaces: list[str] = field(default_factory=list)  # asked for by name, not found


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def select_namespaces(kube: Kube, selection: Selection) -> tuple[list[str], list[str]]:
    """(namespaces to scan, explicitly named namespaces that do not exist) with one LIST call."""
    try:
        listed = kube.core.list_namespace(label_selector=selection.namespace_selector or None)
    except Exception as exc:
        raise classify(exc, "list namespaces") from exc
    names = sorted(ns.metadata.name for ns in listed.items)
    chosen = [n for n in names if not selection.namespaces or _matches(n, selection.namespaces)]
    excluded = set(selection.exclude) | ({selection.own_namespace} if selection.own_namespace else set())
    chosen = [n for n in chosen if not _matches(n, excluded)]
    literal = [p for p in selection.namespaces if not any(c in p for c in "*?[")]
    return chosen, [n for n in literal if n not in names]


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
        self._cache: dict[str, dict[str, tuple[str, str] | None]] = {}

    def _parents(self, kind: str) -> dict[str, tuple[str, str] | None]:
        if kind not in self._cache:
            try:
                if kind == "ReplicaSet":
                    items = self._kube.apps.list_namespaced_replica_set(self._ns).items
                else:
                    items = self._kube.batch.list_namespaced_job(self._ns).items
            except Exception as exc:
                raise classify(exc, f'list {kind.lower()}s in namespace "{self._ns}"') from exc
            self._cache[kind] = {o.metadata.name: _owner(o.metadata) for o in items}
        return self._cache[kind]

    def workload(self, pod: Any) -> Workload:
        owner = _owner(pod.metadata)
        if owner is None:
            return Workload("Pod", pod.metadata.name)
        kind, name = owner
        if kind in ("ReplicaSet", "Job"):
            parent = self._parents(kind).get(name)
            if parent is not None:
                return Workload(*parent)
        return Workload(kind, name)


def _revision(labels: dict[str, str]) -> str:
    return labels.get("pod-template-hash") or labels.get("controller-revision-hash") or ""


def _targets_of(pod: Any, workload: Workload) -> tuple[list[Target], list[Skipped]]:
    meta, spec = pod.metadata, pod.spec
    annotations = dict(meta.annotations or {})
    sidecar_name = annotations.get(SIDECAR, DEFAULT_SIDECAR)
    names = [c.name for c in spec.containers]
    sidecar = sidecar_name if sidecar_name in names and spec.share_process_namespace else None
    running = {s.name for s in (pod.status.container_statuses or []) if s.state and s.state.running}
    targets: list[Target] = []
    skipped: list[Skipped] = []
    for ctr in spec.containers:
        if ctr.name == sidecar_name:
            continue  # the scanner is never a target itself
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


def discover(kube: Kube, selection: Selection) -> Discovery:
    namespaces, missing = select_namespaces(kube, selection)
    result = Discovery(namespaces=namespaces, missing_namespaces=missing)
    for ns in namespaces:
        try:
            pods = kube.core.list_namespaced_pod(
                ns, label_selector=selection.pod_selector or None, field_selector="status.phase=Running"
            ).items
        except Exception as exc:
            err = classify(exc, f'list pods in namespace "{ns}"')
            if isinstance(err, FleetscanError) and getattr(err, "status", 0) == 404:
                result.missing_namespaces.append(ns)  # deleted since the namespace list
                continue
            raise err from exc
        owners = _Owners(kube, ns)
        for pod in sorted(pods, key=lambda p: p.metadata.name):
            targets, skipped = _targets_of(pod, owners.workload(pod))
            result.targets.extend(targets)
            result.skipped.extend(skipped)
    if selection.one_per_workload:
        result.targets = _one_per_workload(result.targets)
    if not result.targets and not result.skipped and selection.namespaces and missing == list(selection.namespaces):
        raise UsageError(f"none of the namespaces {', '.join(missing)} exists")
    return result
