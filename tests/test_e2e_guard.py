"""`make e2e` refuses a cluster whose context the allow-list does not name, before touching it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.kubectl


def test_e2e_refuses_a_context_not_allow_listed(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "production",
                "clusters": [{"name": "prod", "cluster": {"server": "https://192.0.2.1:6443"}}],
                "users": [{"name": "me", "user": {"token": "x"}}],
                "contexts": [{"name": "production", "context": {"cluster": "prod", "user": "me"}}],
            }
        )
    )
    env = {**os.environ, "FLEETSCAN_E2E_KUBECONFIG": str(kubeconfig), "FLEETSCAN_E2E_CONTEXTS": "kind-fleetscan"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-m",
            "e2e",
            "-p",
            "no:cacheprovider",
            str(Path(__file__).parent / "test_e2e.py"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 4, done.stdout + done.stderr
    assert "refusing to run end-to-end tests against context 'production'" in done.stdout + done.stderr
    assert "passed" not in done.stdout
