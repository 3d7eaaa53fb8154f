"""Watch Deployments, StatefulSets and DaemonSets and report each rollout once it has completed.

Each kind is watched from the resourceVersion of its last list, resumed after a dropped watch and
listed afresh after 410 Gone. Workloads already rolled out when watching starts are not reported;
a rollout is reported once per (uid, generation).
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from ..errors import FleetscanError, Gone
from .client import Kube

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rollout:
    namespace: str
    kind: str
    name: str
    generation: int
    images: tuple[str, ...]


def rolled_out(kind: str, obj: Any) -> bool:
    """The condition `kubectl rollout status` waits for."""
    meta, spec, status = obj.metadata, obj.spec, obj.status
    if status is None or (status.observed_generation or 0) < (meta.generation or 0):
        return False
    if kind == "Deployment":
        want = spec.replicas if spec.replicas is not None else 1
        return (
            (status.updated_replicas or 0) >= want
            and (status.replicas or 0) == (status.updated_replicas or 0)
            and (status.available_replicas or 0) >= want
        )
    if kind == "StatefulSet":
        want = spec.replicas if spec.replicas is not None else 1
        return (status.updated_replicas or 0) >= want and (status.ready_replicas or 0) >= want
    desired = status.desired_number_scheduled or 0
    return (status.updated_number_scheduled or 0) >= desired and (status.number_available or 0) >= desired


class RolloutWatcher:
    def __init__(
        self,
        kube: Kube,
        on_rollout: Callable[[Rollout], None],
        *,
        namespaces: tuple[str, ...] = (),
        timeout_seconds: int = 300,
    ) -> None:
        self._kube = kube
        self._on_rollout = on_rollout
        self._namespaces = namespaces  # names or globs; empty: all
        self._timeout = timeout_seconds
        self._seen: dict[str, int] = {}  # uid -> generation reported (or found rolled out at start)
        self._lock = threading.Lock()
        self.stop = threading.Event()

    def _listers(self) -> dict[str, Callable[..., Any]]:
        apps = self._kube.apps
        return {
            "Deployment": apps.list_deployment_for_all_namespaces,
            "StatefulSet": apps.list_stateful_set_for_all_namespaces,
            "DaemonSet": apps.list_daemon_set_for_all_namespaces,
        }

    def _wanted(self, namespace: str) -> bool:
        return not self._namespaces or any(fnmatch.fnmatchcase(namespace, p) for p in self._namespaces)

    def _consider(self, kind: str, obj: Any, *, report: bool) -> None:
        meta = obj.metadata
        if not self._wanted(meta.namespace) or not rolled_out(kind, obj):
            return
        with self._lock:
            if self._seen.get(meta.uid) == meta.generation:
                return
            self._seen[meta.uid] = meta.generation
        if report:
            images = tuple(c.image for c in obj.spec.template.spec.containers)
            self._on_rollout(Rollout(meta.namespace, kind, meta.name, meta.generation or 0, images))

    def _list(self, kind: str, lister: Callable[..., Any], *, report: bool) -> str:
        items, version = self._kube.list_versioned(lister)
        for obj in items:
            self._consider(kind, obj, report=report)
        return version

    def watch_kind(self, kind: str, *, ready: threading.Event | None = None) -> None:
        lister = self._listers()[kind]
        version = self._list(kind, lister, report=False)  # what is rolled out already is not news
        if ready is not None:
            ready.set()
        while not self.stop.is_set():
            try:
                for event in watch.Watch().stream(lister, resource_version=version, timeout_seconds=self._timeout):
                    obj = event["object"]
                    version = obj.metadata.resource_version or version
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._consider(kind, obj, report=True)
                    if self.stop.is_set():
                        return
            except (ApiException, FleetscanError) as exc:
                if isinstance(exc, Gone) or getattr(exc, "status", 0) == 410:
                    # history compacted: list again, report what completed meanwhile
                    log.info("%s watch expired; listing again", kind)
                    version = self._list(kind, lister, report=True)
                else:
                    log.warning("%s watch failed (%s); retrying", kind, exc)
                    self.stop.wait(2)

    def run(self) -> None:
        """Watch every kind until `stop` is set (the CLI sets it on SIGINT/SIGTERM)."""
        ready = [threading.Event() for _ in range(3)]
        threads = [
            threading.Thread(
                target=self.watch_kind, args=(kind,), kwargs={"ready": r}, daemon=True, name=f"watch-{kind}"
            )
            for kind, r in zip(self._listers(), ready, strict=True)
        ]
        for t in threads:
            t.start()
        self.stop.wait()
