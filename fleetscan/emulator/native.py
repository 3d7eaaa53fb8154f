"""Build (once, cached by source hash) the static container helper the runtime spawns."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path


class NativeBuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fleetscan"


def helper_binary() -> Path:
    """Path of the compiled `pause` helper (static, so it also runs inside images without libc)."""
    source = resources.files("fleetscan.emulator").joinpath("native/ctr.c").read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    target = cache_dir() / f"ctr-{digest}" / "pause"
    if target.exists():
        return target
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise NativeBuildError("the emulator needs a C compiler (apt-get install gcc libc6-dev) to build its helper")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "ctr.c"
        src.write_bytes(source)
        out = Path(tmp) / "pause"
        proc = subprocess.run(
            [compiler, "-static", "-O2", "-o", str(out), str(src)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise NativeBuildError(f"building the emulator's container helper failed:\n{proc.stderr}")
        os.replace(out, target)  # atomic: concurrent builders both end with a complete binary
    return target
