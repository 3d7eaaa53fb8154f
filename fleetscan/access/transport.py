"""What an opened way into a container offers the engines: commands run with the target's files
under `root`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..errors import BinaryNotFound
from ..kube.client import Kube
from ..kube.execstream import DEFAULT_EXEC_TIMEOUT, DEFAULT_MAX_OUTPUT, ExecResult, run_in


class Transport(Protocol):
    approach: str
    root: str  # prefix of the target's file paths as seen by the commands run ("/" for exec)
    exec_calls: int  # exec requests sent
    retried: int  # of which tries again after a retryable failure

    def defer(self, cleanup: Callable[[], None]) -> None:
        """Run `cleanup` once the container's record is written (or the run stops)."""
        ...

    def cleanup(self) -> None:
        """Run what was deferred."""
        ...

    def run(
        self,
        argv: list[str],
        stdin: bytes | None = None,
        timeout: float = DEFAULT_EXEC_TIMEOUT,
        max_output: int = DEFAULT_MAX_OUTPUT,
        urgent: bool = False,
    ) -> ExecResult: ...


class ContainerRunner:
    """Runs commands in one container of one pod, counting the exec calls."""

    approach = ""
    root = "/"

    def __init__(self, kube: Kube, namespace: str, pod: str, container: str) -> None:
        self._kube = kube
        self.namespace, self.pod, self.container = namespace, pod, container
        self.exec_calls = 0
        self.retried = 0
        self._deferred: list[Callable[[], None]] = []

    def defer(self, cleanup: Callable[[], None]) -> None:
        self._deferred.append(cleanup)

    def cleanup(self) -> None:
        while self._deferred:
            self._deferred.pop()()

    def run(
        self,
        argv: list[str],
        stdin: bytes | None = None,
        timeout: float = DEFAULT_EXEC_TIMEOUT,
        max_output: int = DEFAULT_MAX_OUTPUT,
        urgent: bool = False,
    ) -> ExecResult:
        self.exec_calls += 1

        def again(attempt: int) -> None:
            self.retried += 1

        try:
            return run_in(
                self._kube,
                self.namespace,
                self.pod,
                self.container,
                argv,
                stdin=stdin,
                timeout=timeout,
                max_output=max_output,
                on_retry=again,
                urgent=urgent,
            )
        except BinaryNotFound as exc:
            self.missing(argv, exc)
            raise

    def missing(self, argv: list[str], exc: BinaryNotFound) -> None:
        """argv[0] does not exist in the container: a way in may say what that means for it."""


def exec_rules(pods: list[str]) -> list[dict[str, object]]:
    """Read the pods and exec into them. WebSocket exec is a GET; Kubernetes 1.35+ also checks create."""
    names = sorted(set(pods))
    return [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": names},
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"], "resourceNames": list(names)},
    ]
