"""Reading pods and adding ephemeral containers to them: the API calls the ways in need."""

from __future__ import annotations

import time
from typing import Any

from kubernetes import watch

from ..errors import ApproachUnavailable, Forbidden
from .client import Kube

PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName")


def read_pod(kube: Kube, namespace: str, name: str) -> Any:
    return kube.core.read_namespaced_pod(name, namespace)


def ephemeral_containers_supported(kube: Kube) -> bool:
    """Whether the API server serves pods/ephemeralcontainers (Kubernetes 1.23+)."""
    return any(r.name == "pods/ephemeralcontainers" for r in kube.core.get_api_resources().resources)


def has_ephemeral_container(pod: Any, name: str) -> bool:
    return any(e.name == name for e in pod.spec.ephemeral_containers or [])


def add_ephemeral_container(kube: Kube, namespace: str, pod: str, spec: dict[str, Any]) -> None:
    body = {"spec": {"ephemeralContainers": [spec]}}
    kube.core.patch_namespaced_pod_ephemeralcontainers(pod, namespace, body)


def _ephemeral_state(pod: Any, name: str) -> tuple[str, str]:
    """('running' | 'terminated' | 'pull-failed' | 'waiting', detail)."""
    status = next((s for s in (pod.status.ephemeral_container_statuses or []) if s.name == name), None)
    state = getattr(status, "state", None)
    if state is not None and state.running is not None:
        return "running", ""
    if state is not None and state.terminated is not None:
        return "terminated", str(state.terminated.reason or "")
    waiting = getattr(state, "waiting", None)
    if waiting is not None and waiting.reason in PULL_FAILURES:
        return "pull-failed", str(waiting.reason)
    return "waiting", ""


def wait_ephemeral_running(kube: Kube, namespace: str, pod: str, name: str, timeout: float, image: str) -> None:
    """Until the ephemeral container runs: one watch on the pod (fieldSelector metadata.name, which
    RBAC authorizes by resourceNames), polling only when watch is not granted."""
    where = f'pod "{namespace}/{pod}"'
    deadline = time.monotonic() + timeout

    def verdict(obj: Any) -> bool:
        state, detail = _ephemeral_state(obj, name)
        if state == "running":
            return True
        if state == "terminated":
            raise ApproachUnavailable(
                f"{where}: debug container {name!r} has exited ({detail or 'terminated'}) and cannot be "
                "restarted (ephemeral containers are never removed)"
            )
        if state == "pull-failed":
            raise ApproachUnavailable(f"{where}: debug image {image!r} cannot be pulled: {detail}")
        return False

    current = read_pod(kube, namespace, pod)
    if verdict(current):
        return
    try:
        while time.monotonic() < deadline:
            remaining = max(1, int(deadline - time.monotonic()))
            events = watch.Watch().stream(
                kube.core.list_namespaced_pod,
                namespace,
                field_selector=f"metadata.name={pod}",
                resource_version=current.metadata.resource_version,
                timeout_seconds=remaining,
            )
            for event in events:
                if event["type"] in ("ADDED", "MODIFIED") and verdict(event["object"]):
                    return
                if event["type"] == "DELETED":
                    raise ApproachUnavailable(f"{where}: the pod was deleted while its debug container started")
            current = read_pod(kube, namespace, pod)
            if verdict(current):
                return
    except Forbidden:  # no watch on pods in this Role: poll instead
        while time.monotonic() < deadline:
            if verdict(read_pod(kube, namespace, pod)):
                return
            time.sleep(0.25)
    raise ApproachUnavailable(f"{where}: debug container {name!r} not running after {timeout:.0f} s")
