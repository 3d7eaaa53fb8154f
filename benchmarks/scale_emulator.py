"""The emulator with a generated fleet, in its own process as a cluster would be (benchmarks share it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def start(
    tmp: Path, namespaces: int, pods_per_namespace: int, containers_per_pod: int = 1, pods_per_node: int = 100
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start `fleetscan emulator serve` on a scale scenario; the kubeconfig appears once it serves."""
    scenario = tmp / "scale.yaml"
    scenario.write_text(
        f"scale: {{namespaces: {namespaces}, pods_per_namespace: {pods_per_namespace}, "
        f"containers_per_pod: {containers_per_pod}, pods_per_node: {pods_per_node}, image: busybox}}\n"
    )
    kubeconfig = tmp / "kc"
    cmd = [sys.executable, "-m", "fleetscan", "emulator", "serve", "--scenario", str(scenario)]
    proc = subprocess.Popen([*cmd, "--kubeconfig-out", str(kubeconfig)], stderr=subprocess.DEVNULL)
    return proc, kubeconfig
