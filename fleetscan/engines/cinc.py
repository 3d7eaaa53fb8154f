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
from ..threshold import exec_json_problems

RESULT_CODES = (0, 100, 101)  # passed, some failed, some skipped: all carry results


class CincError(FleetscanError):
    pass


@dataclass(frozen=True)
class CincSettings:
    executable: str = "cinc-auditor"  # or "inspec"
    timeout: float = 1800.0
    extra_args: tuple[str, ...] = ()


def target_uri(target: Target) -> str:
    return f"k8s-container://{target.namespace}/{target.pod}/{target.container}"


class CincEngine:
    def __init__(self, profile: str, settings: CincSettings | None = None) -> None:
        self.profile = profile
        self.settings = settings or CincSettings()

    def scan(self, kubeconfig: Path, target: Target, approach: str = "exec") -> dict[str, Any]:
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
            env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
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
