"""Fleet benchmark: everything issue "performance at the physical limit" names, measured side by side
in one run on one emulated fleet (single-container pods spread over nodes). Nothing asserts.

1. the emulator's own CPU per exec (server process and the container processes it starts);
2. latency hiding: the fleet flow at two injected exec latencies, with a one-control profile so
   the containers' own work does not hide the orchestration: wall/ideal, where ideal is the larger
   of the latency bound (execs x latency / concurrency) and what the emulator and containers cost
   this machine's cores (the scanner's own CPU counts against fleetscan, never in the ideal), and
   how busy the cores were (near 100 %: the wall is what the machine can do, not a wait);
3. end to end through the CLI (`fleetscan scan`, bundled profile): containers per second, exec
   calls and API requests per container, that process's CPU and peak RSS (from its own resource
   usage), the emulator's and containers' CPU per exec, peak scans per node at once;
4. the reference design's way on a sample (per-pod RBAC with its 3 s wait, one exec per check).

    python benchmarks/fleet_bench.py [--containers 2000] [--quick]
"""

from __future__ import annotations

import argparse
import base64
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import scale_emulator
import yaml
from peak import high_water_mb

from fleetscan.access import REGISTRY
from fleetscan.access.exec import ExecTransport
from fleetscan.emulator.handle import EmulatorClient
from fleetscan.engines.native.engine import NativeEngine
from fleetscan.engines.native.profile import load_profile
from fleetscan.kube.client import ClientSettings, Kube
from fleetscan.kube.credentials import CredentialSettings, NamespaceCredentials
from fleetscan.kube.discovery import Selection, discover
from fleetscan.kube.execstream import run_in
from fleetscan.settings import ScanParams

PODS_PER_NAMESPACE = 50
NODES = 40  # node limits (4 each) then allow 160 scans at once, more than the concurrency asked
CORES = os.cpu_count() or 1
ONE_CONTROL = Path(__file__).resolve().parent.parent / "tests" / "data" / "one-control.yml"  # latency, not profile cost


def _handle(kubeconfig: Path) -> EmulatorClient:
    """The control handle of an emulator started elsewhere, from the admin kubeconfig it wrote."""
    cfg = yaml.safe_load(kubeconfig.read_text())
    cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
    return EmulatorClient(cluster["server"], base64.b64decode(cluster["certificate-authority-data"]), user["token"])


def _cpu_of(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of a process, from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    v = text[text.rindex(")") + 2 :].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(v[11]) + int(v[12])) / tick, (int(v[13]) + int(v[14])) / tick


def _machine() -> tuple[int, int]:
    """(busy, all) clock ticks of every core since boot, from /proc/stat (idle and iowait not busy)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def _busy_since(start: tuple[int, int]) -> float:
    """How busy the machine's cores were since `start` (a _machine() reading), 0 to 1."""
    busy, total = _machine()
    return (busy - start[0]) / max(1, total - start[1])


def _own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    open_ = most = 0
    for _, step in edges:
        open_ += step
        most = max(most, open_)
    return most


@dataclass
class Fleet:
    server: subprocess.Popen[bytes]
    kubeconfig: Path
    emu: EmulatorClient
    kube: Kube
    namespaces: list[str]

    def emulator_cpu(self) -> tuple[float, float]:
        return _cpu_of(self.server.pid)


@dataclass
class Measured:
    containers: int
    wall: float
    scanner_cpu: float
    emulator_self: float
    emulator_children: float
    execs: int
    requests: int
    node_peak: int
    overall_peak: int
    totals: dict[str, int]
    busy: float  # of the machine's cores, 0 to 1


def exec_latency(kube: Kube, samples: int = 20) -> float:
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        run_in(kube, "scale-000", "app-0000", "c0", ["true"])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def emulator_per_exec(fleet: Fleet, n: int = 300) -> None:
    for _ in range(10):
        run_in(fleet.kube, "scale-000", "app-0000", "c0", ["true"])
    (s0, c0), me0, t0 = fleet.emulator_cpu(), _own_cpu(), time.perf_counter()
    for _ in range(n):
        run_in(fleet.kube, "scale-000", "app-0000", "c0", ["true"])
    (s1, c1), me1, t1 = fleet.emulator_cpu(), _own_cpu(), time.perf_counter()
    print(
        f"1. emulator CPU per exec of `true` ({n} in a row): server {1000 * (s1 - s0) / n:.2f} ms, "
        f"container processes {1000 * (c1 - c0) / n:.2f} ms; the client's {1000 * (me1 - me0) / n:.2f} ms; "
        f"wall {1000 * (t1 - t0) / n:.1f} ms"
    )


def _exec_peaks(fleet: Fleet, audit: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(exec sessions, most at once on one node, most at once in the fleet), from the audit log."""
    pods = fleet.kube.core.list_pod_for_all_namespaces().items
    node_of = {(p.metadata.namespace, p.metadata.name): p.spec.node_name for p in pods}
    by_node: dict[str, list[tuple[float, float]]] = defaultdict(list)
    execs = [a for a in audit if a["subresource"] == "exec"]
    for a in execs:
        by_node[node_of.get((a["namespace"], a["name"]), "")].append((a["started"], a["time"]))
    spans = [span for v in by_node.values() for span in v]
    return len(execs), max((_peak(v) for v in by_node.values()), default=0), _peak(spans)


def scan_flow(fleet: Fleet, tmp: Path, name: str, namespaces: list[str], **params: Any) -> Measured:
    """One fleet_scan flow run in this process, with what it cost everyone."""
    from flows.fleet import fleet_scan, run_to_end

    scan = ScanParams(
        kubeconfig=str(fleet.kubeconfig), out=str(tmp / name), run_id=name, namespaces=namespaces, qps=1000, burst=1000
    )
    scan = scan.model_copy(update=params)
    fleet.emu.clear_audit()
    (s0, c0), me0, t0, cores = fleet.emulator_cpu(), _own_cpu(), time.perf_counter(), _machine()
    result = run_to_end(fleet_scan, scan)
    (s1, c1), me1, t1, busy = fleet.emulator_cpu(), _own_cpu(), time.perf_counter(), _busy_since(cores)
    audit = fleet.emu.audit()
    execs, node_peak, overall_peak = _exec_peaks(fleet, audit)
    return Measured(
        result.totals["targets"],
        t1 - t0,
        me1 - me0,
        s1 - s0,
        c1 - c0,
        execs,
        len(audit),
        node_peak,
        overall_peak,
        result.totals,
        busy,
    )


def latency_hiding(fleet: Fleet, tmp: Path, containers: int, latency: float, concurrency: int, profile: Path) -> None:
    namespaces = fleet.namespaces[: max(1, containers // PODS_PER_NAMESPACE)]
    fleet.emu.set_faults(latency=[{"path": "/exec$", "seconds": latency}])
    try:
        per_exec = exec_latency(fleet.kube)
        m = scan_flow(
            fleet, tmp, f"hide-{int(latency * 1000)}", namespaces, concurrency=concurrency, profile=str(profile)
        )
    finally:
        fleet.emu.clear_faults()
    latency_bound = m.execs * per_exec / concurrency
    machine_bound = (m.emulator_self + m.emulator_children) / CORES
    ideal = max(latency_bound, machine_bound)
    print(
        f"2. latency hiding, {m.containers} containers, {latency * 1000:.0f} ms injected per exec "
        f"(measured {per_exec * 1000:.0f} ms), concurrency {concurrency}, one-control profile:\n"
        f"   wall {m.wall:.1f} s; ideal {ideal:.1f} s (latency bound {latency_bound:.1f} s, emulator and "
        f"containers' CPU over {CORES} cores {machine_bound:.1f} s); wall/ideal {m.wall / ideal:.2f}; "
        f"{m.overall_peak} execs in flight at most; scanner CPU {1000 * m.scanner_cpu / m.containers:.1f} ms "
        f"per container; the {CORES} cores {100 * m.busy:.0f}% busy; outcomes {m.totals}"
    )


def cli_end_to_end(fleet: Fleet, tmp: Path, containers: int) -> float:
    """`fleetscan scan` as a user runs it, with the bundled profile; its seconds per container."""
    from prefect.settings import PREFECT_API_URL

    namespaces = fleet.namespaces[: max(1, containers // PODS_PER_NAMESPACE)]
    cmd = [sys.executable, "-m", "fleetscan", "scan", "--kubeconfig", str(fleet.kubeconfig)]
    cmd += ["--out", str(tmp / "cli"), "--concurrency", "32", "--qps", "1000", "--burst", "1000"]
    cmd += ["--namespaces", ",".join(namespaces)]
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    fleet.emu.clear_audit()
    (s0, c0), start, cores = fleet.emulator_cpu(), time.perf_counter(), _machine()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    while True:  # its own peak, read while it runs (high_water_mb)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, high_water_mb(proc.pid))
        time.sleep(0.05)
    wall, busy = time.perf_counter() - start, _busy_since(cores)
    (s1, c1), audit = fleet.emulator_cpu(), fleet.emu.audit()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"3. fleetscan scan failed ({proc.returncode}): {err[-2000:]}")
    n = len(namespaces) * PODS_PER_NAMESPACE
    execs, node_peak, overall_peak = _exec_peaks(fleet, audit)
    print(
        f"3. `fleetscan scan --concurrency 32`, {n} single-container pods, bundled profile: wall {wall:.1f} s "
        f"(start-up included), {n / wall:.1f} containers/s; the {CORES} cores {100 * busy:.0f}% busy\n"
        f"   per container: {execs / n:.2f} exec calls, {len(audit) / n:.2f} API requests; the fleetscan "
        f"process's CPU {1000 * (usage.ru_utime + usage.ru_stime) / n:.1f} ms (start-up, flow, Prefect and "
        f"reports included), peak RSS {peak:.0f} MB\n"
        f"   emulator {1000 * (s1 - s0) / execs:.1f} ms per exec, the scan script {1000 * (c1 - c0) / execs:.1f} ms "
        f"per exec in the containers; at most {node_peak} scans at once on one node (max_per_node "
        f"{ScanParams().max_per_node}), {overall_peak} in the fleet"
    )
    return wall / n


def reference_design(fleet: Fleet, sample: int, profile_name: str) -> float:
    """Seconds per container the reference scripts take: per-pod RBAC with a 3 s wait, per-check execs."""
    targets = discover(fleet.kube, Selection(namespaces=("scale-001",))).targets[:sample]
    engine = NativeEngine(load_profile(profile_name), exec_mode="per-check")
    start = time.perf_counter()
    for i, target in enumerate(targets):
        rules = REGISTRY["exec"].rules([target.pod])
        with NamespaceCredentials(fleet.kube, target.namespace, f"ref-{i}", rules, settings=CredentialSettings()) as c:
            time.sleep(3)  # the reference scripts wait for RBAC to propagate
            engine.examine(ExecTransport(c.scan_client(), target), target)
    return (time.perf_counter() - start) / len(targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--containers", type=int, default=2000, help="fleet size (a multiple of 50)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the fleet, for a first look")
    parser.add_argument("--reference-sample", type=int, default=3)
    args = parser.parse_args()
    size = args.containers // 10 if args.quick else args.containers
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    from flows.fleet import fleet_scan, run_to_end

    with prefect_test_harness(server_startup_timeout=120), tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        namespaces = max(1, size // PODS_PER_NAMESPACE)
        # The emulator runs in its own process, as a cluster would: not competing for this one's GIL.
        server, kubeconfig = scale_emulator.start(
            tmp, namespaces, PODS_PER_NAMESPACE, pods_per_node=max(1, size // NODES)
        )
        while not kubeconfig.exists():
            if server.poll() is not None:
                raise SystemExit("the emulator did not start")
            time.sleep(0.2)
        try:
            kube = Kube.from_kubeconfig(str(kubeconfig), settings=ClientSettings(qps=1000, burst=1000))
            fleet = Fleet(server, kubeconfig, _handle(kubeconfig), kube, [f"scale-{i:03d}" for i in range(namespaces)])
            print(f"machine: {CORES} cores; fleet: {namespaces * PODS_PER_NAMESPACE} single-container pods, busybox")
            run_to_end(
                fleet_scan,
                ScanParams(kubeconfig=str(kubeconfig), out=str(tmp / "warm"), run_id="warm", namespaces=["scale-000"]),
            )  # imports, Prefect's first flow run, TLS: not what the figures below are about
            emulator_per_exec(fleet)
            latency_hiding(fleet, tmp, size // 2, 0.03, 16, ONE_CONTROL)
            latency_hiding(fleet, tmp, size, 0.2, 128, ONE_CONTROL)
            ours = cli_end_to_end(fleet, tmp, size)
            per_container = reference_design(fleet, args.reference_sample, ScanParams().profile)
            print(
                f"4. reference design (sample of {args.reference_sample}): {per_container:.2f} s per container -> "
                f"{per_container * size / 60:.0f} min for {size} containers, one at a time; "
                f"fleetscan (3.) is {per_container / ours:.0f}x faster"
            )
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"peak RSS of this process (the flows of 2. ran in it): {peak:.0f} MB")
        finally:
            server.terminate()
            server.wait(timeout=120)


if __name__ == "__main__":
    main()
