"""Per-node load shaping: at most `max_per_node` scans at once on one node, whatever the run's
concurrency, proven from the emulator's audit log (the start and end of every exec session)."""

from __future__ import annotations

from pathlib import Path

from fleetscan.emulator.scenario import parse_scenario
from fleetscan.emulator.server import Emulator
from fleetscan.kube.client import Kube
from fleetscan.settings import ScanParams

from .pipeline_helpers import scan_records

SCENARIO = """
nodes: [node-a, node-b]
namespaces:
  - name: busy
    pods:
""" + "".join(f"      - {{name: p{i}, containers: [{{name: c, image: busybox}}]}}\n" for i in range(12))


def peak(spans: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    open_, most = 0, 0
    for _, step in edges:
        open_ += step
        most = max(most, open_)
    return most


def per_node_peaks(emu: Emulator, kube: Kube, params: ScanParams, tmp_path: Path) -> tuple[dict[str, int], int]:
    emu.client().clear_audit()
    emu.client().set_faults(latency=[{"path": "/exec$", "seconds": 0.4}])
    try:
        records = scan_records(kube, tmp_path, params)
    finally:
        emu.client().clear_faults()
    assert len(records) == 12 and all(r.outcome in ("passed", "failed") for r in records)
    node_of = {p.metadata.name: p.spec.node_name for p in kube.core.list_namespaced_pod("busy").items}
    execs = [a for a in emu.client().audit(subresource="exec") if a["user"].startswith("system:serviceaccount")]
    by_node: dict[str, list[tuple[float, float]]] = {}
    for a in execs:
        by_node.setdefault(node_of[a["name"]], []).append((a["started"], a["time"]))
    return {node: peak(spans) for node, spans in by_node.items()}, peak([s for v in by_node.values() for s in v])


def test_scans_per_node_are_bounded_while_the_run_uses_its_concurrency(tmp_path: Path) -> None:
    with Emulator(parse_scenario(SCENARIO, "nodes.yaml")) as emu:
        kube = Kube.from_kubeconfig(str(emu.write_kubeconfig(tmp_path / "kc")))
        params = ScanParams(namespaces=["busy"], approach="exec", concurrency=8, max_per_node=2)
        nodes, overall = per_node_peaks(emu, kube, params, tmp_path / "limited")
        assert set(nodes) == {"node-a", "node-b"}  # the pods were spread over both
        assert max(nodes.values()) == 2 and overall == 4, (nodes, overall)  # both nodes busy, neither over
        unlimited = params.model_copy(update={"max_per_node": 0, "run_id": "t2"})
        nodes, overall = per_node_peaks(emu, kube, unlimited, tmp_path / "unlimited")
        assert max(nodes.values()) > 2 and overall > 4, (nodes, overall)  # the limit is what held them back
