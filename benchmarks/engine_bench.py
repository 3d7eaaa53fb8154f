"""Native engine benchmark: exec calls and wall time, batched versus per-check, for the bundled
profile on one container of each kind (standard via exec, distroless via debug, sidecar), plus the
CPU time spent evaluating per container. Measured side by side in one run; nothing asserts.

    python benchmarks/engine_bench.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from fleetscan.access import REGISTRY, AccessSettings
from fleetscan.emulator.scenario import load_scenario
from fleetscan.emulator.server import Emulator
from fleetscan.engines.native.engine import NativeEngine
from fleetscan.engines.native.profile import load_profile
from fleetscan.kube.client import ClientSettings, Kube
from fleetscan.kube.discovery import Selection, discover

KINDS = (
    ("standard (exec)", "shop/web-7d9f-abcde/web", "exec"),
    ("distroless (debug)", "shop/api-1/api", "debug"),
    ("sidecar", "payments/payments-6c5b-bbbbb/app", "sidecar"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    profile = load_profile("container-baseline")
    with Emulator(load_scenario("demo")) as emu, tempfile.TemporaryDirectory() as tmp:
        # A generous client-side rate limit: this measures the engine, not the limiter.
        kube = Kube.from_kubeconfig(str(emu.write_kubeconfig(Path(tmp) / "kc")), settings=ClientSettings(1000, 1000))
        targets = {t.key: t for t in discover(kube, Selection()).targets}
        settings = AccessSettings(debug_image="fleetscan/debug:1.0")
        print(f"profile {profile.name}: {len(profile.controls)} controls; median of {args.repeat} runs")
        print(f"{'container':<20} {'mode':<10} {'exec calls':>10} {'wall ms':>9} {'eval cpu ms':>12}")
        for label, key, approach in KINDS:
            transport = REGISTRY[approach].open(kube, targets[key], settings)
            rows = {}
            for mode in ("batched", "per-check"):
                engine = NativeEngine(profile, exec_mode=mode)
                walls, cpus, calls = [], [], 0
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    scan = engine.examine(transport, targets[key])
                    walls.append((time.perf_counter() - start) * 1000)
                    cpus.append(scan.stats.evaluate_seconds * 1000)
                    calls = scan.stats.exec_calls
                rows[mode] = (calls, statistics.median(walls), statistics.median(cpus))
                print(f"{label:<20} {mode:<10} {calls:>10} {rows[mode][1]:>9.1f} {rows[mode][2]:>12.2f}")
            (b_calls, b_wall, _), (p_calls, p_wall, _) = rows["batched"], rows["per-check"]
            print(
                f"{'':<20} ratio      {p_calls / b_calls:>9.0f}x {p_wall / b_wall:>8.1f}x  "
                f"(per-check / batched; targets: batched <= 3 calls, >= 10x fewer)"
            )


if __name__ == "__main__":
    main()
