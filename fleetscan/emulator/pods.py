"""Pods on the emulator's nodes: defaults, validation, and running their containers."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from .clock import Clock
from .images import DEFAULT_PATH, ImageStore
from .runtime import Container, Credentials, Runtime, RuntimeError_, Sandbox
from .validation import dns_label_problem

log = logging.getLogger(__name__)

# The nodes a pod without spec.nodeName is scheduled to (the least loaded), unless a scenario names others.
DEFAULT_NODES = tuple(f"emulator-node-{i}" for i in range(4))
Obj = dict[str, Any]


def apply_defaults(pod: Obj) -> None:
    spec = pod.setdefault("spec", {})
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    for ctr in spec.get("containers") or []:
        ctr.setdefault("imagePullPolicy", "IfNotPresent")
        ctr.setdefault("terminationMessagePath", "/dev/termination-log")
        ctr.setdefault("terminationMessagePolicy", "File")
        ctr.setdefault("resources", {})


def validate(pod: Obj) -> list[tuple[str, str]]:
    causes: list[tuple[str, str]] = []
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or []
    if not containers:
        causes.append(("spec.containers", "Required value"))
    seen: set[str] = set()
    for field, items in (
        ("containers", containers),
        ("initContainers", spec.get("initContainers") or []),
        ("ephemeralContainers", spec.get("ephemeralContainers") or []),
    ):
        for i, ctr in enumerate(items):
            name = ctr.get("name") or ""
            problem = dns_label_problem(name)
            if problem:
                causes.append((f"spec.{field}[{i}].name", f'Invalid value: "{name}": {problem}'))
            elif name in seen:
                causes.append((f"spec.{field}[{i}].name", f'Duplicate value: "{name}"'))
            seen.add(name)
            if not ctr.get("image"):
                causes.append((f"spec.{field}[{i}].image", "Required value"))
    return causes


def _container_id(pod_uid: str, name: str) -> str:
    return "containerd://" + hashlib.sha256(f"{pod_uid}/{name}".encode()).hexdigest()


def _image_id(ref: str) -> str:
    return f"{ref.split(':')[0].split('@')[0]}@sha256:" + hashlib.sha256(ref.encode()).hexdigest()


class PodRunner:
    """Maps pods to runtime sandboxes and keeps each pod's status in step with its processes."""

    def __init__(self, runtime: Runtime, images: ImageStore, clock: Clock) -> None:
        self.runtime = runtime
        self.images = images
        self.clock = clock
        self.sandboxes: dict[str, Sandbox] = {}
        # Why a container is not running, per pod uid and container name (reason, message).
        self._problems: dict[str, dict[str, tuple[str, str]]] = {}

    def container(self, pod: Obj, name: str) -> Container | None:
        sandbox = self.sandboxes.get(pod["metadata"]["uid"])
        return sandbox.containers.get(name) if sandbox else None

    def _make(self, pod: Obj, spec: Obj) -> tuple[Container | None, str]:
        image = self.images.resolve(spec["image"])
        if image is None:
            return None, f'failed to pull and unpack image "{spec["image"]}": not found'
        env = dict(image.env)
        for var in spec.get("env") or []:
            if "value" in var:
                env[var["name"]] = str(var["value"])
        env.setdefault("PATH", DEFAULT_PATH)
        env["HOSTNAME"] = pod["metadata"]["name"]
        env.setdefault("HOME", "/root")
        creds = Credentials.from_security_context(pod["spec"].get("securityContext"), spec.get("securityContext"))
        container_id = _container_id(pod["metadata"]["uid"], spec["name"]).split("://", 1)[1]
        return Container(spec["name"], image, creds, env, spec.get("workingDir") or "/", container_id=container_id), ""

    def start(self, pod: Obj) -> None:
        """Start every container of a new pod (as the kubelet does), then write its status."""
        spec = pod["spec"]
        sandbox = self.runtime.new_sandbox(bool(spec.get("shareProcessNamespace")))
        self.sandboxes[pod["metadata"]["uid"]] = sandbox
        problems: dict[str, tuple[str, str]] = {}
        launched: list[Container] = []
        for cspec in spec["containers"]:
            ctr, problem = self._make(pod, cspec)
            if ctr is None:
                problems[cspec["name"]] = ("ErrImagePull", problem)
                continue
            self.runtime.launch(sandbox, ctr, command=cspec.get("command"))
            launched.append(ctr)
        for ctr in launched:
            self._await_ready(sandbox, ctr, problems)
        self._write_status(pod, problems)

    def _await_ready(self, sandbox: Sandbox, ctr: Container, problems: dict[str, tuple[str, str]]) -> None:
        try:
            self.runtime.wait_ready(ctr)
        except RuntimeError_ as exc:
            problems[ctr.name] = ("RunContainerError", str(exc))
            return
        ctr.started_at = self.clock.now()
        sandbox.containers[ctr.name] = ctr

    def add_ephemeral(self, pod: Obj, new: list[Obj]) -> None:
        sandbox = self.sandboxes.get(pod["metadata"]["uid"])
        if sandbox is None:
            return
        problems = dict(self._problems.get(pod["metadata"]["uid"], {}))
        for cspec in new:
            ctr, problem = self._make(pod, cspec)
            if ctr is None:
                problems[cspec["name"]] = ("ErrImagePull", problem)
                continue
            target = sandbox.containers.get(cspec.get("targetContainerName") or "")
            self.runtime.launch(sandbox, ctr, target=target, command=cspec.get("command"))
            self._await_ready(sandbox, ctr, problems)
        self._write_status(pod, problems)

    def stop(self, pod: Obj) -> None:
        self._problems.pop(pod["metadata"]["uid"], None)
        sandbox = self.sandboxes.pop(pod["metadata"]["uid"], None)
        if sandbox is not None:
            self.runtime.destroy(sandbox)

    def stop_all(self) -> None:
        for uid in list(self.sandboxes):
            self.runtime.destroy(self.sandboxes.pop(uid))

    def _status_of(self, pod: Obj, cspec: Obj, problems: dict[str, tuple[str, str]]) -> Obj:
        name = cspec["name"]
        ctr = self.container(pod, name)
        status: Obj = {
            "name": name,
            "image": cspec["image"],
            "imageID": "",
            "restartCount": 0,
            "ready": False,
            "started": False,
        }
        if ctr is not None:
            status.update(
                {
                    "state": {"running": {"startedAt": self.clock.iso(ctr.started_at)}},
                    "ready": True,
                    "started": True,
                    "imageID": _image_id(cspec["image"]),
                    "containerID": _container_id(pod["metadata"]["uid"], name),
                }
            )
        else:
            reason, message = problems.get(name, ("ContainerCreating", ""))
            status["state"] = {"waiting": {"reason": reason, "message": message}}
        return status

    def _write_status(self, pod: Obj, problems: dict[str, tuple[str, str]]) -> None:
        spec = pod["spec"]
        statuses = [self._status_of(pod, c, problems) for c in spec["containers"]]
        ephemeral = [self._status_of(pod, c, problems) for c in spec.get("ephemeralContainers") or []]
        for st in ephemeral:
            st["ready"] = False  # ephemeral containers are never "ready"
        running = all("running" in s["state"] for s in statuses)
        now = self.clock.iso()
        started = pod.get("status", {}).get("startTime", now)
        conditions = [
            {
                "type": t,
                "status": "True" if (running or t == "PodScheduled") else "False",
                "lastProbeTime": None,
                "lastTransitionTime": now,
            }
            for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
        ]
        pod["status"] = {
            "phase": "Running" if running else "Pending",
            "conditions": conditions,
            "hostIP": "10.0.0.1",
            "hostIPs": [{"ip": "10.0.0.1"}],
            "podIP": pod.get("status", {}).get("podIP") or self._pod_ip(pod),
            "startTime": started,
            "containerStatuses": statuses,
            "qosClass": "BestEffort",
        }
        pod["status"]["podIPs"] = [{"ip": pod["status"]["podIP"]}]
        if ephemeral:
            pod["status"]["ephemeralContainerStatuses"] = ephemeral
        self._problems[pod["metadata"]["uid"]] = problems

    @staticmethod
    def _pod_ip(pod: Obj) -> str:
        n = int(hashlib.sha256(pod["metadata"]["uid"].encode()).hexdigest()[:6], 16)
        return f"10.244.{(n >> 8) % 256}.{n % 254 + 1}"
