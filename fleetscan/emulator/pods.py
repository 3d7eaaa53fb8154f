"""Pods on the emulator's nodes: defaults, validation, and running their containers."""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from typing import Any

from .clock import Clock
from .images import DEFAULT_PATH, ImageStore
from .nodes import node_ip
from .runtime import Container, Credentials, Runtime, RuntimeError_, Sandbox
from .validation import dns_label_problem

log = logging.getLogger(__name__)

# The nodes a pod without spec.nodeName is scheduled to (the least loaded), unless a scenario names others.
DEFAULT_NODES = tuple(f"emulator-node-{i}" for i in range(4))
# The memory limit of a container whose spec sets none (a LimitRange's default, in effect), so that
# no container can take this machine's memory; `settings(default_memory_limit=...)` changes it.
DEFAULT_MEMORY_LIMIT = 512 * 2**20
# The kubelet's restart back-off: 10 s, doubling, at most 5 minutes.
BACKOFF_START, BACKOFF_MAX = 10.0, 300.0
Obj = dict[str, Any]
Event = tuple[str, str, str]  # type (Normal, Warning), reason, message
_SUFFIXES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}  # fmt: skip
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([0-9]+)|([kMGTPE]i?|Ki)?)$")


def parse_quantity(text: str | int | float) -> int:
    """A resource quantity ("512Mi", "1G", "1e9", "128974848") in whole units, rounded up."""
    match = _QUANTITY.match(str(text).strip())
    if match is None:
        raise ValueError(f"quantities must match the regular expression '{_QUANTITY.pattern}'")
    number, exponent, suffix = match.groups()
    scale = 10 ** int(exponent) if exponent else _SUFFIXES[suffix or ""]
    return math.ceil(float(number) * scale)


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
            for kind in ("limits", "requests"):
                memory = ((ctr.get("resources") or {}).get(kind) or {}).get("memory")
                if memory is None:
                    continue
                try:
                    parse_quantity(memory)
                except ValueError as exc:
                    causes.append((f"spec.{field}[{i}].resources.{kind}[memory]", f'Invalid value: "{memory}": {exc}'))
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
        self.default_memory_limit = DEFAULT_MEMORY_LIMIT
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
        limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
        ctr = Container(spec["name"], image, creds, env, spec.get("workingDir") or "/", container_id=container_id)
        ctr.memory_limit = parse_quantity(limit) if limit is not None else self.default_memory_limit
        return ctr, ""

    def start(self, pod: Obj) -> None:
        """Start every container of a new pod (as the kubelet does), then write its status."""
        spec = pod["spec"]
        sandbox = self.runtime.new_sandbox(bool(spec.get("shareProcessNamespace")))
        self.sandboxes[pod["metadata"]["uid"]] = sandbox
        sandbox.pod_key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
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
        self.runtime.destroy(*[self.sandboxes.pop(uid) for uid in list(self.sandboxes)])

    # -- restarts ---------------------------------------------------------------------------------
    def restart(self, pod: Obj, name: str) -> list[Event]:
        """Kill an app container and start it afresh at once (the control API's fault): its
        processes and execs in flight end, its writable layer is new, restartCount grows."""
        sandbox = self.sandboxes.get(pod["metadata"]["uid"])
        ctr = sandbox.containers.get(name) if sandbox else None
        cspec = _app_spec(pod, name)
        if sandbox is None or ctr is None or cspec is None:
            raise KeyError(name)
        if ctr.terminated is None:
            ctr.terminated = self._termination(ctr, 137, "Error")
        self._relaunch(sandbox, ctr, cspec)
        self._write_status(pod, self._problems.get(pod["metadata"]["uid"], {}))
        return [("Normal", "Killing", f"Stopping container {name}"), ("Normal", "Started", f"Started container {name}")]

    def needs_sync(self, pod: Obj) -> bool:
        """Whether a container of the pod exited unnoticed, or waits for its restart."""
        sandbox = self.sandboxes.get(pod["metadata"]["uid"])
        return sandbox is not None and any(
            not c.alive and (c.terminated is None or _restarts(pod, name, c.terminated))
            for name, c in sandbox.containers.items()
        )

    def sync(self, pod: Obj) -> list[Event] | None:
        """The kubelet's loop for one pod: notice containers that exited (OOM-killed or not),
        restart them by the pod's restartPolicy with back-off; the events, or None if nothing changed."""
        sandbox = self.sandboxes.get(pod["metadata"]["uid"])
        if sandbox is None:
            return None
        events: list[Event] = []
        changed = False
        for name, ctr in sandbox.containers.items():
            if ctr.alive:
                continue
            cspec = _app_spec(pod, name)  # None: an ephemeral container, never restarted
            if ctr.terminated is None:
                helper = ctr.helper
                code = helper.returncode if helper is not None and helper.returncode is not None else 137
                ooms = ctr.cgroup.oom_kills() if ctr.cgroup is not None else 0
                reason = "OOMKilled" if ooms > ctr.oom_kills else ("Completed" if code == 0 else "Error")
                ctr.oom_kills, changed = ooms, True
                ctr.terminated = self._termination(ctr, code, reason)
                delay = 0.0 if ctr.restarts == 0 else min(BACKOFF_MAX, BACKOFF_START * 2 ** (ctr.restarts - 1))
                ctr.backoff_until = time.monotonic() + delay
                if reason == "OOMKilled":
                    events.append(("Warning", "OOMKilled", f"Container {name} exceeded its memory limit"))
                if delay and cspec is not None:
                    events.append(("Warning", "BackOff", f"Back-off restarting failed container {name}"))
            if _restarts(pod, name, ctr.terminated) and time.monotonic() >= ctr.backoff_until:
                assert cspec is not None
                self._relaunch(sandbox, ctr, cspec)
                events.append(("Normal", "Started", f"Started container {name}"))
                changed = True
        if not changed:
            return None
        self._write_status(pod, self._problems.get(pod["metadata"]["uid"], {}))
        return events

    def _relaunch(self, sandbox: Sandbox, ctr: Container, cspec: Obj) -> None:
        ctr.last_state, ctr.terminated = ctr.terminated, None
        try:
            self.runtime.restart(sandbox, ctr, cspec.get("command"))
        except RuntimeError_ as exc:
            log.warning("restarting %s failed: %s", ctr.name, exc)
        ctr.started_at = self.clock.now()

    def _termination(self, ctr: Container, code: int, reason: str) -> Obj:
        return {
            "exitCode": code,
            "reason": reason,
            "startedAt": self.clock.iso(ctr.started_at),
            "finishedAt": self.clock.iso(),
            "containerID": f"containerd://{ctr.container_id}",
        }

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
                    "restartCount": ctr.restarts,
                }
            )
            if ctr.last_state is not None:
                status["lastState"] = {"terminated": ctr.last_state}
            if ctr.terminated is not None:
                status.update(ready=False, started=False)
                if not _restarts(pod, name, ctr.terminated):
                    status["state"] = {"terminated": ctr.terminated}
                else:
                    pod_ref = f"{pod['metadata']['name']}_{pod['metadata']['namespace']}({pod['metadata']['uid']})"
                    message = f"back-off restarting failed container={name} pod={pod_ref}"
                    status["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
                    status["lastState"] = {"terminated": ctr.terminated}
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
        exits = [s["state"]["terminated"]["exitCode"] for s in statuses if "terminated" in s["state"]]
        phase = "Running" if running or any(s["restartCount"] or s.get("lastState") for s in statuses) else "Pending"
        if statuses and len(exits) == len(statuses):  # every container done, none to restart
            phase = "Succeeded" if not any(exits) else "Failed"
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
            "phase": phase,
            "conditions": conditions,
            "hostIP": node_ip(spec.get("nodeName", "")),
            "hostIPs": [{"ip": node_ip(spec.get("nodeName", ""))}],
            "podIP": pod.get("status", {}).get("podIP") or self._pod_ip(pod),
            "startTime": started,
            "containerStatuses": statuses,
            "qosClass": _qos_class(spec["containers"]),
        }
        pod["status"]["podIPs"] = [{"ip": pod["status"]["podIP"]}]
        if ephemeral:
            pod["status"]["ephemeralContainerStatuses"] = ephemeral
        self._problems[pod["metadata"]["uid"]] = problems

    def sandbox_pods(self) -> list[tuple[str, str]]:
        """(namespace, name) of every pod that has a sandbox here."""
        return [s.pod_key for s in self.sandboxes.values()]

    @staticmethod
    def _pod_ip(pod: Obj) -> str:
        n = int(hashlib.sha256(pod["metadata"]["uid"].encode()).hexdigest()[:6], 16)
        return f"10.244.{(n >> 8) % 256}.{n % 254 + 1}"


def _app_spec(pod: Obj, name: str) -> Obj | None:
    return next((c for c in pod["spec"]["containers"] if c["name"] == name), None)


def _restarts(pod: Obj, name: str, terminated: Obj) -> bool:
    """Whether the kubelet restarts an app container that ended so (never an ephemeral one)."""
    policy = pod["spec"].get("restartPolicy", "Always")
    return _app_spec(pod, name) is not None and (
        policy == "Always" or (policy == "OnFailure" and terminated["exitCode"] != 0)
    )


def _qos_class(containers: list[Obj]) -> str:
    """Guaranteed when every container's requests equal its cpu and memory limits, Burstable when any
    sets one, BestEffort otherwise."""
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("limits") or r.get("requests") for r in resources):
        return "BestEffort"
    for r in resources:
        limits = r.get("limits") or {}
        requests = r.get("requests") or limits
        if not all(k in limits and requests.get(k) == limits[k] for k in ("cpu", "memory")):
            return "Burstable"
    return "Guaranteed"
