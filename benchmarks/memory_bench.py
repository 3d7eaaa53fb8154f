"""Memory benchmark: `fleetscan scan` as a person runs it without a Prefect server (no
PREFECT_API_URL: the scan starts Prefect's temporary server itself), over N single-container pods
(default 10,000 in 200 namespaces), with the scan process's RSS sampled every second: its level
while scanning (first and last sample of the scan), and its own peak (VmHWM, the aggregation at the
end). Seven minutes at 10,000 on two cores, so not part of `make bench`. Nothing asserts.

    python benchmarks/memory_bench.py [--containers 10000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import scale_emulator
from peak import high_water_mb, rss_mb

PODS_PER_NAMESPACE = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--containers", type=int, default=10_000, help="fleet size (a multiple of 50)")
    args = parser.parse_args()
    namespaces = max(1, args.containers // PODS_PER_NAMESPACE)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        server, kubeconfig = scale_emulator.start(tmp, namespaces, PODS_PER_NAMESPACE, pods_per_node=250)
        try:
            while not kubeconfig.exists():
                if server.poll() is not None:
                    raise SystemExit("the emulator did not start")
                time.sleep(0.5)
            env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
            env.update(PREFECT_HOME=str(tmp / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
            cmd = [sys.executable, "-m", "fleetscan", "scan", "--kubeconfig", str(kubeconfig), "-q"]
            cmd += ["--out", str(tmp / "run"), "--concurrency", "32", "--qps", "1000", "--burst", "1000"]
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            samples: list[float] = []
            peak = 0.0
            records = tmp / "run" / "records"
            tick = 0
            while proc.poll() is None:  # its own peak 5 times a second (the end is short), RSS every second
                if tick % 5 == 0:
                    scanned = sum(1 for _ in records.glob("*/*")) if records.is_dir() else 0
                    if 0 < scanned < args.containers:  # pods with a record: the scan is under way
                        samples.append(rss_mb(proc.pid))
                peak = max(peak, high_water_mb(proc.pid))
                tick += 1
                time.sleep(0.2)
            wall = time.perf_counter() - start
            if proc.returncode not in (0, 1):
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                log = tmp / "run" / "fleetscan.log"  # gone with the folder: its end is shown here
                err += log.read_text(errors="replace")[-4000:] if log.exists() else ""
                raise SystemExit(f"fleetscan scan failed ({proc.returncode}): {err[-6000:]}")
        finally:
            server.terminate()
            server.wait(timeout=300)
    level = f"{samples[0]:.0f} MB at the first namespaces, {samples[-1]:.0f} MB at the last" if samples else "-"
    print(
        f"`fleetscan scan` without a Prefect server, {namespaces * PODS_PER_NAMESPACE} single-container pods: "
        f"wall {wall:.0f} s; RSS while scanning {level} (max {max(samples, default=0):.0f} MB); "
        f"peak RSS of the process {peak:.0f} MB"
    )


if __name__ == "__main__":
    main()
