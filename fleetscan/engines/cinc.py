"""The cinc engine: real InSpec profiles through CINC Auditor (or Chef InSpec) and the
train-k8s-container transport, for users who keep their existing profiles.

The auditor gets a kubeconfig that holds only the run's narrow token (0600, private folder,
deleted afterwards). train-k8s-container reaches containers by `kubectl exec`, so this engine
works with the exec approach only; distroless targets need the native engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ApproachUnavailable, FleetscanError
from ..kube.targets import Target
from ..results.hdf import exec_json_problems
from . import Access

RESULT_CODES = (0, 100, 101)  # passed, some failed, some skipped: all carry results
# What the auditor inherits: enough to run, nothing of the orchestrator's own credentials.
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR", "CHEF_LICENSE")


class CincError(FleetscanError):
    pass


@dataclass(frozen=True)
class CincSettings:
    executable: str = "cinc-auditor"  # or "inspec"
    timeout: float = 1800.0
    extra_args: tuple[str, ...] = ()
    extra_env: tuple[str, ...] = ()  # names of further environment variables the auditor needs


def target_uri(target: Target) -> str:
    return f"k8s-container://{target.namespace}/{target.pod}/{target.container}"


class CincEngine:
    name = "cinc"
    approaches: tuple[str, ...] = ("exec",)  # train-k8s-container runs `kubectl exec`

    def __init__(self, profile: str, settings: CincSettings | None = None) -> None:
        self.profile = profile
        self.settings = settings or CincSettings()

    @property
    def profile_id(self) -> str:
        return self.profile

    def scan(self, target: Target, access: Access) -> dict[str, Any]:
        # train-k8s-container needs a shell in the container: an image without one is for the
        # native engine (the exec transport raises NoShell, so `auto` moves on).
        access.transport.run(["sh", "-c", "exit 0"], timeout=30)
        with access.kubeconfig() as kubeconfig:
            return self.audit(kubeconfig, target, access.transport.approach)

    def audit(self, kubeconfig: Path, target: Target, approach: str = "exec") -> dict[str, Any]:
        if approach != "exec":
            raise ApproachUnavailable(
                f"{target.key}: the cinc engine reaches containers only by exec (train-k8s-container), and this "
                f"target needs {approach}; scan it with the native engine"
            )
        with tempfile.TemporaryDirectory(prefix="fleetscan-cinc-") as folder:
            report = Path(folder) / "report.json"
            args = [
                self.settings.executable,
                "exec",
                self.profile,
                "-t",
                target_uri(target),
                "--reporter",
                f"json:{report}",
                "--no-color",
                *self.settings.extra_args,
            ]
            passed = (*PASSED_ENV, *self.settings.extra_env)
            env = {k: v for k, v in os.environ.items() if k in passed}
            env["KUBECONFIG"] = str(kubeconfig)
            try:
                proc = subprocess.run(
                    args, env=env, capture_output=True, text=True, timeout=self.settings.timeout, check=False
                )
            except FileNotFoundError as exc:
                raise CincError(f"{self.settings.executable!r} is not installed (see the README: cinc engine)") from exc
            except subprocess.TimeoutExpired as exc:
                raise CincError(
                    f"{target.key}: {self.settings.executable} did not finish within {self.settings.timeout:.0f} s"
                ) from exc
            if proc.returncode not in RESULT_CODES:
                tail = (proc.stderr or proc.stdout).strip()[-2000:]
                raise CincError(
                    f"{target.key}: {self.settings.executable} failed with exit code {proc.returncode}: "
                    f"{tail or 'no output'}"
                )
            try:
                doc = json.loads(report.read_text())
            except (OSError, ValueError) as exc:
                raise CincError(
                    f"{target.key}: {self.settings.executable} exited {proc.returncode} but wrote no "
                    f"readable JSON report: {exc}"
                ) from exc
        return normalise(doc, target)


def normalise(doc: Any, target: Target) -> dict[str, Any]:
    """The auditor's report as fleetscan stores it: the target named, one file per container, and
    nothing SAF would reject."""
    problems = exec_json_problems(doc)
    if problems:
        raise CincError(f"{target.key}: the auditor's report is not valid exec-json: {'; '.join(problems[:3])}")
    if not doc["profiles"]:
        raise CincError(f"{target.key}: the auditor's report has no profiles")
    doc["platform"]["target_id"] = target_uri(target)
    return dict(doc)
