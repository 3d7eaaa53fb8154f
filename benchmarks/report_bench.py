"""Report benchmark: aggregation and rendering of a synthetic N-container run (default 10,000, the
bundled profile's 36 controls each), timing and peak memory measured in this run; nothing asserts.

    python benchmarks/report_bench.py [--containers 10000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from pathlib import Path

from fleetscan.engines.native.profile import load_profile
from fleetscan.report.analysis import analyse
from fleetscan.report.build import build_reports
from fleetscan.report.frames import load_run
from fleetscan.results import hdf


def synthetic_run(folder: Path, containers: int) -> Path:
    profile = load_profile("container-baseline")
    rng = random.Random(7)
    targets = []
    for i in range(containers):
        ns, pod = f"ns-{i % 200:03d}", f"app-{i:05d}"
        controls = [
            hdf.Control(
                c.id,
                c.title,
                "",
                c.impact,
                c.tags,
                [],
                "",
                "p.yml",
                1,
                [
                    hdf.Result(
                        rng.choice(["passed", "passed", "passed", "failed", "skipped"]), c.title, "2026-11-27T00:00:00Z"
                    )
                ],
            )
            for c in profile.controls
        ]
        doc = hdf.document(
            hdf.ProfileInfo(profile.name, profile.title, profile.version, profile.sha256),
            controls,
            target_id=pod,
            platform_name="k8s-container",
            platform_release="1",
            duration=0.1,
        )
        rel = f"hdf/{ns}/{pod}/c.json"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(json.dumps(doc))
        targets.append(
            {
                "namespace": ns,
                "pod": pod,
                "container": "c",
                "image": f"img-{i % 50}",
                "workload_kind": "Deployment",
                "workload_name": f"w-{i % 1000}",
                "approach": "exec",
                "engine": "native",
                "outcome": "failed",
                "compliance": 70,
                "reason": "",
                "hdf": rel,
                "exec_calls": 2,
                "duration_s": 0.1,
            }
        )
    (folder / "summary.json").write_text(
        json.dumps(
            {
                "run_id": "bench",
                "finished_at": "2026-11-27T00:00:00Z",
                "profile": profile.name,
                "threshold": "t",
                "targets": targets,
            }
        )
    )
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--containers", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = synthetic_run(Path(tmp) / "run", args.containers)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        frames = load_run(run)
        loaded = time.perf_counter()
        analyse(frames)
        analysed = time.perf_counter()
        build_reports(run, Path(tmp) / "history")
        built = time.perf_counter()
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
        rows = len(frames.controls)
        size = (run / "report.html").stat().st_size / 2**20
    print(f"{args.containers} containers, {rows} control rows")
    print(
        f"load HDFs into frames {loaded - start:.1f} s; aggregate {analysed - loaded:.2f} s; "
        f"full report build (load, aggregate, history, HTML, Markdown) {built - analysed:.1f} s"
    )
    print(f"peak memory growth while reporting {peak / 2**20:.0f} MB; report.html {size:.1f} MB")


if __name__ == "__main__":
    main()
