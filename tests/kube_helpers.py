"""Helpers for the access-layer tests: a private emulator per test and clients on it."""

from __future__ import annotations

from pathlib import Path

from fleetscan.emulator.server import Emulator
from fleetscan.kube.client import Kube
from fleetscan.kube.transports import Transport


def admin_kube(emu: Emulator, tmp_path: Path, token: str | None = None) -> Kube:
    return Kube.from_kubeconfig(str(emu.write_kubeconfig(tmp_path / "orchestrator.kubeconfig", token)))


def read(transport: Transport, path: str) -> bytes:
    """A file of the target container, through whichever approach."""
    result = transport.run(["cat", f"{transport.root.rstrip('/')}{path}"])
    assert result.exit_code == 0, result.stderr
    return result.stdout
