"""Fleet benchmark: a scale scenario scanned by the Prefect pipeline, with injected exec latency,
against the reference design's way (one container at a time, a ServiceAccount/Role/RoleBinding per
pod with its 3 s wait, one exec per check). Everything is measured in this one run; nothing asserts.

    python benchmarks/fleet_bench.py [--namespaces 40] [--pods 25] [--latency 0.03] [--concurrency 16]
                                     [--reference-sample 5]
"""

from __future__ import annotations

import argparse
import base64
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import scale_emulator
import yaml

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


def _handle(kubeconfig: Path) -> Any:
    """The control handle of an emulator started elsewhere, from the admin kubeconfig it wrote."""
    cfg = yaml.safe_load(kubeconfig.read_text())
    cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
    return EmulatorClient(cluster["server"], base64.b64decode(cluster["certificate-authority-data"]), user["token"])


def exec_latency(kube: Kube, namespace: str, pod: str, samples: int = 20) -> float:
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        run_in(kube, namespace, pod, "c0", ["true"])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reference_design(kube: Kube, targets: list, profile_name: str) -> float:
    """Seconds per container the reference scripts take: per-pod RBAC with a 3 s wait, per-check execs."""
    engine = NativeEngine(load_profile(profile_name), exec_mode="per-check")
    start = time.perf_counter()
    for i, target in enumerate(targets):
        rules = REGISTRY["exec"].rules([target.pod])
        with NamespaceCredentials(kube, target.namespace, f"ref-{i}", rules, settings=CredentialSettings()) as creds:
            time.sleep(3)  # the reference scripts wait for RBAC to propagate
            engine.examine(ExecTransport(creds.scan_client(), target), target)
    return (time.perf_counter() - start) / len(targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--namespaces", type=int, default=40)
    parser.add_argument("--pods", type=int, default=25)
    parser.add_argument("--latency", type=float, default=0.03, help="injected seconds per exec")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--reference-sample", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    from flows.fleet import fleet_scan

    with prefect_test_harness(server_startup_timeout=120), tempfile.TemporaryDirectory() as tmp:
        # The emulator runs in its own process, as a cluster would: not competing for this one's GIL.
        server, kubeconfig = scale_emulator.start(Path(tmp), args.namespaces, args.pods)
        while not kubeconfig.exists():
            if server.poll() is not None:
                raise SystemExit("the emulator did not start")
            time.sleep(0.2)
        emu = _handle(kubeconfig)
        kube = Kube.from_kubeconfig(str(kubeconfig), settings=ClientSettings(qps=1000, burst=1000))
        emu.set_faults(latency=[{"path": "/exec$", "seconds": args.latency}])
        per_exec = exec_latency(kube, "scale-000", "app-0000")
        emu.clear_audit()
        params = ScanParams(
            kubeconfig=str(kubeconfig),
            out=str(Path(tmp) / "run"),
            run_id="bench",
            concurrency=args.concurrency,
            qps=1000,
            burst=1000,
        )
        start = time.perf_counter()
        result = fleet_scan(params)
        wall = time.perf_counter() - start
        audit = emu.audit()
        targets = result.totals["targets"]
        execs = sum(1 for a in audit if a["subresource"] == "exec")
        requests = len(audit)
        ideal = execs * per_exec / args.concurrency
        sample = discover(kube, Selection(namespaces=("scale-001",))).targets[: args.reference_sample]
        reference = reference_design(kube, sample, params.profile)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        server.terminate()
        server.wait(timeout=120)
    print(
        f"fleet: {targets} containers in {args.namespaces} namespaces, exec latency {args.latency * 1000:.0f} ms "
        f"injected (measured {per_exec * 1000:.1f} ms per exec), concurrency {args.concurrency}"
    )
    print(
        f"fleetscan: wall {wall:.1f} s; ideal {ideal:.1f} s (exec busy time / concurrency); "
        f"wall/ideal {wall / ideal:.2f}"
    )
    print(
        f"  per container: {requests / targets:.1f} API requests, {execs / targets:.2f} exec calls, "
        f"orchestration overhead {(wall - ideal) / targets * 1000:.1f} ms"
    )
    print(f"  outcomes {result.totals}; peak memory of this process {peak_mb:.0f} MB")
    print(
        f"reference design (sample of {len(sample)}): {reference:.2f} s per container -> "
        f"{reference * targets / 60:.1f} min for the fleet; fleetscan is {reference * targets / wall:.0f}x faster"
    )


if __name__ == "__main__":
    main()
