"""Emulator benchmark: exec round trips (Python client) and a 2,000-container fleet's start time and memory.

Prints measurements and how they compare with the targets of the emulator issue (exec median under
15 ms; 2,000 containers started in under 60 s and under 4 GB). Nothing here asserts: it measures.

    python benchmarks/emulator_bench.py [--containers 2000] [--execs 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import scale_emulator
from kubernetes import client, config
from kubernetes.stream import stream

from fleetscan.emulator.scenario import load_scenario
from fleetscan.emulator.server import Emulator


def tree_memory(root: int) -> tuple[int, int, int]:
    """(processes, summed RSS, summed PSS) in bytes for `root` and every descendant."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry))
    todo, count, rss, pss = [root], 0, 0, 0
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().split("\n")
        except OSError:
            continue
        count += 1
        for line in rollup:
            if line.startswith("Rss:"):
                rss += int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss += int(line.split()[1]) * 1024
    return count, rss, pss


def exec_latency(n: int) -> list[float]:
    with Emulator(load_scenario("demo")) as emu, tempfile.TemporaryDirectory() as tmp:
        kc = emu.write_kubeconfig(Path(tmp) / "kc")
        core = client.CoreV1Api(config.new_client_from_config(str(kc)))
        samples = []
        for i in range(n + 10):
            start = time.perf_counter()
            ws = stream(
                core.connect_get_namespaced_pod_exec,
                "toolbox",
                "sandbox",
                command=["true"],
                stderr=True,
                stdout=True,
                stdin=False,
                tty=False,
                _preload_content=False,
            )
            ws.run_forever(timeout=10)
            ws.read_channel(3)
            ws.close()
            if i >= 10:  # warm-up: first TLS handshakes and page-cache misses
                samples.append((time.perf_counter() - start) * 1000)
        return samples


def fleet_start(containers: int) -> dict[str, float]:
    per_pod = 1
    namespaces = max(1, containers // 50)
    pods = containers // namespaces // per_pod
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc, kubeconfig = scale_emulator.start(Path(tmp), namespaces, pods, per_pod)
        peak = [0, 0, 0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                snapshot = tree_memory(proc.pid)
                peak[:] = [max(a, b) for a, b in zip(peak, snapshot, strict=True)]
                time.sleep(0.5)

        sampler = threading.Thread(target=sample)
        sampler.start()
        while not kubeconfig.exists() and proc.poll() is None:
            time.sleep(0.05)
        ready = time.perf_counter() - start
        time.sleep(1)
        done.set()
        sampler.join()
        core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
        running = len(core.list_pod_for_all_namespaces(field_selector="status.phase=Running").items)
        stop = time.perf_counter()
        proc.terminate()
        proc.wait(timeout=300)
        return {
            "ready_s": ready,
            "running_pods": running,
            "processes": peak[0],
            "rss_gb": peak[1] / 2**30,
            "pss_gb": peak[2] / 2**30,
            "stop_s": time.perf_counter() - stop,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--containers", type=int, default=2000)
    parser.add_argument("--execs", type=int, default=200)
    args = parser.parse_args()

    samples = sorted(exec_latency(args.execs))
    median, p90 = statistics.median(samples), samples[int(len(samples) * 0.9) - 1]
    print(
        f"exec round trip, Python client, n={len(samples)}: median {median:.1f} ms, p90 {p90:.1f} ms "
        f"(target: median < 15 ms -> {median / 15:.2f} of budget)"
    )

    fleet = fleet_start(args.containers)
    print(
        f"{args.containers} containers: ready in {fleet['ready_s']:.1f} s "
        f"({fleet['ready_s'] / 60:.2f} of the 60 s budget), {fleet['running_pods']:.0f} pods Running, "
        f"{fleet['processes']:.0f} processes"
    )
    print(
        f"peak memory: PSS {fleet['pss_gb']:.2f} GB ({fleet['pss_gb'] / 4:.2f} of the 4 GB budget), "
        f"summed RSS {fleet['rss_gb']:.2f} GB (counts shared pages once per process)"
    )
    print(f"shutdown: {fleet['stop_s']:.1f} s")


if __name__ == "__main__":
    main()
