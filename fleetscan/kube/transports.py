"""The three ways into a container, behind one interface.

- exec: commands run in the target container itself (it needs a shell for scripts).
- debug: an ephemeral container targeting the container; its files are at /proc/1/root.
- sidecar: a scanner container in a pod that shares its process namespace; the target's files
  are at /proc/<pid>/root of the target's main process.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Protocol

from ..errors import ApproachUnavailable, BinaryNotFound, TransportError
from .client import Kube
from .execstream import ExecResult, run_in
from .failures import classify
from .targets import Target

DEFAULT_DEBUG_IMAGE = "busybox:1.36"
PAUSE_FOREVER = ["sleep", "2147483647"]


class Transport(Protocol):
    approach: str
    root: str  # prefix for the target's file paths as seen by the commands run
    exec_calls: int

    def run(self, argv: list[str], stdin: bytes | None = None, timeout: float = 60.0) -> ExecResult: ...


class _Runner:
    """Runs commands in one container of one pod, counting calls, with one token refresh on 401."""

    approach = ""
    root = "/"

    def __init__(self, kube: Kube, namespace: str, pod: str, container: str) -> None:
        self._kube = kube
        self._namespace, self._pod, self._container = namespace, pod, container
        self.exec_calls = 0

    def run(self, argv: list[str], stdin: bytes | None = None, timeout: float = 60.0) -> ExecResult:
        self.exec_calls += 1
        return self._kube.retry_unauthorized(
            lambda: run_in(self._kube, self._namespace, self._pod, self._container, argv, stdin=stdin, timeout=timeout)
        )


class ExecTransport(_Runner):
    approach = "exec"

    def __init__(self, kube: Kube, target: Target) -> None:
        super().__init__(kube, target.namespace, target.pod, target.container)


def has_shell(kube: Kube, target: Target) -> bool:
    """Whether the container can run `sh` (distroless and scratch images cannot)."""
    try:
        ExecTransport(kube, target).run(["sh", "-c", "exit 0"], timeout=30)
    except BinaryNotFound:
        return False
    return True


def debug_container_name(target: Target, image: str) -> str:
    """Stable per (container, image): later runs find and reuse it (ephemeral containers are forever)."""
    digest = hashlib.sha256(f"{target.container}\0{image}".encode()).hexdigest()[:10]
    return f"fleetscan-debug-{digest}"


class DebugTransport(_Runner):
    approach = "debug"
    root = "/proc/1/root"

    def __init__(
        self, kube: Kube, target: Target, image: str = DEFAULT_DEBUG_IMAGE, wait_seconds: float = 120.0
    ) -> None:
        self.name = debug_container_name(target, image)
        super().__init__(kube, target.namespace, target.pod, self.name)
        self._target, self._image, self._wait = target, image, wait_seconds
        self.created = False

    def _spec(self) -> dict[str, Any]:
        security: dict[str, Any] = {"capabilities": {"add": ["SYS_PTRACE"]}}
        sec = self._target.security
        # /proc/<pid>/root needs the target's uid (or ptrace rights a non-root user lacks).
        if sec.run_as_non_root or (sec.run_as_user not in (None, 0)):
            if sec.run_as_user is None:
                raise ApproachUnavailable(
                    f"{self._target.key}: runs as non-root with no runAsUser; a debug container cannot match its uid"
                )
            security.update(runAsUser=sec.run_as_user, runAsNonRoot=True)
            if sec.run_as_group is not None:
                security["runAsGroup"] = sec.run_as_group
        return {
            "name": self.name,
            "image": self._image,
            "command": PAUSE_FOREVER,
            "targetContainerName": self._target.container,
            "securityContext": security,
            "stdin": False,
            "tty": False,
        }

    def _status(self, pod: Any) -> Any:
        return next((s for s in (pod.status.ephemeral_container_statuses or []) if s.name == self.name), None)

    def prepare(self) -> None:
        t = self._target
        where = f'pod "{t.namespace}/{t.pod}"'
        pod = self._get()
        if not any(e.name == self.name for e in pod.spec.ephemeral_containers or []):
            body = {"spec": {"ephemeralContainers": [self._spec()]}}
            try:
                self._kube.retry_unauthorized(lambda: self._patch(body))
            except Exception as exc:
                raise classify(exc, f"add debug container {self.name!r} to {where}") from exc
            self.created = True
        deadline = time.monotonic() + self._wait
        while True:
            status = self._status(pod)
            state = getattr(status, "state", None)
            if state is not None and state.running is not None:
                return
            if state is not None and state.terminated is not None:
                raise ApproachUnavailable(
                    f"{where}: debug container {self.name!r} has exited and cannot be "
                    "restarted (ephemeral containers are never removed)"
                )
            waiting = getattr(state, "waiting", None)
            if waiting is not None and waiting.reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
                raise ApproachUnavailable(f"{where}: debug image {self._image!r} cannot be pulled: {waiting.reason}")
            if time.monotonic() > deadline:
                raise ApproachUnavailable(
                    f"{where}: debug container {self.name!r} not running after {self._wait:.0f} s"
                )
            time.sleep(0.25)
            pod = self._get()

    def _get(self) -> Any:
        t = self._target
        try:
            return self._kube.retry_unauthorized(lambda: _read_pod(self._kube, t.namespace, t.pod))
        except Exception as exc:
            raise classify(exc, f'read pod "{t.namespace}/{t.pod}"') from exc

    def _patch(self, body: dict[str, Any]) -> Any:
        t = self._target
        try:
            return self._kube.core.patch_namespaced_pod_ephemeralcontainers(t.pod, t.namespace, body)
        except Exception as exc:
            raise classify(exc, f'patch pods/ephemeralcontainers of "{t.namespace}/{t.pod}"') from exc


def _read_pod(kube: Kube, namespace: str, pod: str) -> Any:
    try:
        return kube.core.read_namespaced_pod(pod, namespace)
    except Exception as exc:
        raise classify(exc, f'read pod "{namespace}/{pod}"') from exc


# Lists every process outside the scanner's own mount namespace as "pid ppid mntns cmdline" (pid 1
# is the pod's pause process). Only fixed text: nothing from the cluster is put into it.
_PROCESS_SCRIPT = r"""self=$(readlink /proc/self/ns/mnt)
for d in /proc/[0-9]*; do
  p=${d#/proc/}
  [ "$p" = 1 ] && continue
  m=$(readlink "$d/ns/mnt" 2>/dev/null) || continue
  [ "$m" = "$self" ] && continue
  pp=$(cut -d' ' -f4 "$d/stat" 2>/dev/null) || continue
  printf '%s %s %s ' "$p" "$pp" "$m"
  tr '\0' ' ' < "$d/cmdline" 2>/dev/null
  echo
done
"""


class SidecarTransport(_Runner):
    approach = "sidecar"

    def __init__(self, kube: Kube, target: Target) -> None:
        if not target.sidecar or not target.share_process_namespace:
            raise ApproachUnavailable(f"{target.key}: the pod has no scanner sidecar in a shared process namespace")
        super().__init__(kube, target.namespace, target.pod, target.sidecar)
        self._target = target
        self.pid = 0

    def prepare(self) -> None:
        """Find the target's main process: one process group per mount namespace (one per container),
        matched to the pod's app containers; ambiguity is an error, never a guess."""
        t = self._target
        listing = self.run(["sh", "-c", _PROCESS_SCRIPT], timeout=30)
        groups: dict[str, list[tuple[int, int, str]]] = {}
        for line in listing.stdout.decode(errors="replace").splitlines():
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[0].isdigit():
                groups.setdefault(parts[2], []).append(
                    (int(parts[0]), int(parts[1] or 0), parts[3].strip() if len(parts) > 3 else "")
                )
        mains = []
        for members in groups.values():
            pids = {p for p, _, _ in members}
            roots = [m for m in members if m[1] not in pids]  # its parent is outside the container
            mains.append(min(roots or members))
        if not mains:
            raise TransportError(
                f"{t.key}: the scanner sidecar {t.sidecar!r} sees no other container's "
                "processes (is SYS_PTRACE missing, or shareProcessNamespace off?)"
            )
        if len(mains) == 1:
            self.pid = mains[0][0]
        else:  # several app containers: match the target's command line from the pod spec
            pod = _read_pod(self._kube, t.namespace, t.pod)
            spec = next(c for c in pod.spec.containers if c.name == t.container)
            argv = " ".join([*(spec.command or []), *(spec.args or [])])
            matches = [m for m in mains if argv and m[2] == argv]
            if len(matches) != 1:
                raise TransportError(
                    f"{t.key}: {len(mains)} app containers share the process namespace and the "
                    "target's main process cannot be told apart; use the debug approach"
                )
            self.pid = matches[0][0]
        self.root = f"/proc/{self.pid}/root"
        probe = self.run(["test", "-d", f"{self.root}/"], timeout=30)
        if probe.exit_code != 0:
            raise ApproachUnavailable(
                f"{t.key}: the scanner sidecar may not read {self.root} (it needs SYS_PTRACE or the target's uid)"
            )
