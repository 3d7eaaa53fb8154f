"""Where fleetscan finds the Node tools it can use (the SAF CLI, Heimdall Lite): `make setup` puts
them into the checkout's .tools/; an installed wheel has no checkout, so $FLEETSCAN_TOOLS (or the
tools' own variables) point at them, and a missing tool says how to install it."""

from __future__ import annotations

import os
from pathlib import Path

SAF_HINT = (
    "the SAF CLI is not installed: run `make setup` in a fleetscan checkout, or `npm install -g "
    "@mitre/saf@1.5.3` (it needs Node 22), or set FLEETSCAN_SAF to its `saf` executable"
)
HEIMDALL_HINT = (
    "Heimdall Lite is not installed: run `make setup` in a fleetscan checkout (it comes with the SAF CLI), "
    "or unpack `npm pack @mitre/heimdall-lite@2.12.6` and set FLEETSCAN_HEIMDALL_DIST to its dist/ folder"
)


def tools_dir() -> Path | None:
    """$FLEETSCAN_TOOLS, else the .tools/ folder of the checkout this package runs from, if any."""
    configured = os.environ.get("FLEETSCAN_TOOLS")
    if configured:
        return Path(configured)
    checkout = Path(__file__).resolve().parents[1]
    folder = checkout / ".tools"
    return folder if (checkout / "pyproject.toml").is_file() and folder.is_dir() else None
