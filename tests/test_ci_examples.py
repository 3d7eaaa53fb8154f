"""The CI examples call fleetscan as it is: every option they pass exists on that command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CI = Path(__file__).resolve().parent.parent / "deployments" / "ci"
FLEETSCAN = Path(sys.executable).parent / "fleetscan"


def commands(node: object) -> list[str]:
    """Every `fleetscan ...` command line in a CI file's strings."""
    if isinstance(node, dict):
        return [c for v in node.values() for c in commands(v)]
    if isinstance(node, list):
        return [c for v in node for c in commands(v)]
    if isinstance(node, str):
        return re.findall(r"\bfleetscan (?:scan|notify-deploy)\b[^\n]*(?:\n[^\n]*--[^\n]*)*", node)
    return []


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_ci_example_uses_real_options(name: str) -> None:
    found = commands(yaml.safe_load((CI / name).read_text()))
    subcommands = {line.split()[1] for line in found}
    assert subcommands == {"scan", "notify-deploy"}, found  # a gate and an event in each example
    for line in found:
        sub = line.split()[1]
        helptext = subprocess.run(
            [str(FLEETSCAN), sub, "--help"], capture_output=True, text=True, check=True, env={"COLUMNS": "200"}
        ).stdout
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line):
            assert option in helptext, f"{name}: fleetscan {sub} has no {option}"
