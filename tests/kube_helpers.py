"""Helpers for the access-layer tests: a private emulator per test and clients on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleetscan.access.transport import Transport
from fleetscan.emulator.server import Emulator
from fleetscan.kube.client import Kube
from fleetscan.kube.targets import Target


def admin_kube(emu: Emulator, tmp_path: Path, token: str | None = None) -> Kube:
    return Kube.from_kubeconfig(str(emu.write_kubeconfig(tmp_path / "orchestrator.kubeconfig", token)))


def unreachable_kubeconfig(path: Path) -> Path:
    """A kubeconfig of a cluster that is not there (nothing listens on port 9)."""
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    return path


def read(transport: Transport, path: str) -> bytes:
    """A file of the target container, through whichever approach."""
    result = transport.run(["cat", f"{transport.root.rstrip('/')}{path}"])
    assert result.exit_code == 0, result.stderr
    return result.stdout


def grants(exec_pods: list[str], debug_pods: list[str] | None = None) -> list[dict[str, Any]]:
    """The Role rules a run starts with (exec into `exec_pods`) plus debug containers in `debug_pods`."""
    from fleetscan.access import REGISTRY

    return REGISTRY["exec"].rules(exec_pods) + (REGISTRY["debug"].rules(debug_pods) if debug_pods else [])


def open_way_in(kube: Kube, target: Target, approach: str, debug_image: str = "fleetscan/debug:1.0") -> Transport:
    """An opened transport of one registered approach."""
    from fleetscan.access import REGISTRY, AccessSettings

    return REGISTRY[approach].open(kube, target, AccessSettings(debug_image=debug_image))
