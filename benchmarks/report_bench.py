"""Report benchmark: the end of a synthetic N-container run (default 100,000, the bundled profile's
controls each) as a real run ends it: `aggregate()` reads the records from the run directory and
writes summary.json, results.csv, report.md and report.html. Timed, with its process's peak memory
(aggregation runs in a child process of its own, so generating the run does not count). Nothing
asserts.

    python benchmarks/report_bench.py [--containers 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peak import high_water_mb

from fleetscan.engines.native.profile import load_profile
from fleetscan.heap import lean_allocators
from fleetscan.pipeline.aggregate import aggregate
from fleetscan.results.records import TargetRecord
from fleetscan.results.rundir import RunDir

STATUSES = ["passed", "passed", "passed", "failed", "skipped"]


def synthetic_run(folder: Path, containers: int) -> None:
    """records/<ns>/<pod>/c.json for `containers` pods in 200 namespaces, as a scan writes them."""
    profile = load_profile("container-baseline")
    rng = random.Random(7)
    made: set[Path] = set()
    for i in range(containers):
        ns, pod = f"ns-{i % 200:03d}", f"app-{i:06d}"
        rows = []
        for c in profile.controls:
            status = rng.choice(STATUSES)
            message = "" if status == "passed" else f"{c.id}: found /usr/bin/x{rng.randrange(1000)}"
            rows.append([c.id, c.title, str(c.tags.get("severity", "medium")), c.impact, status, message])
        failed = sum(r[4] == "failed" for r in rows)
        record = TargetRecord(
            ns,
            pod,
            "c",
            f"registry.example/img-{i % 50}:1",
            "Deployment",
            f"w-{i % 1000}",
            "exec",
            "native",
            "failed" if failed else "passed",
            round(100 * (1 - failed / len(rows))),
            {"passed": len(rows) - failed, "failed": failed},
            "",
            f"hdf/{ns}/{pod}/c.json",
            1,
            0.1,
            1,
            node=f"node-{i % 40}",
            controls=rows,
        )
        path = folder / "records" / ns / pod / "c.json"
        if path.parent not in made:
            path.parent.mkdir(parents=True)
            made.add(path.parent)
        path.write_text(json.dumps(record.to_dict(), separators=(",", ":")))


def aggregate_only(folder: Path) -> None:
    """The child process: what the flow's aggregate task does, on the generated run, in a process
    set up as a flow run sets up its own."""
    lean_allocators()
    start = time.perf_counter()
    summary = aggregate(
        RunDir(folder, "bench"), started_at="2026-12-01T00:00:00Z", profile="container-baseline", threshold="t"
    )
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "targets": summary.totals["targets"], "peak_mb": high_water_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--containers", type=int, default=100_000)
    parser.add_argument("--aggregate", help=argparse.SUPPRESS)  # the child process's run directory
    args = parser.parse_args()
    if args.aggregate:
        aggregate_only(Path(args.aggregate))
        return
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        start = time.perf_counter()
        synthetic_run(run, args.containers)
        generated = time.perf_counter() - start
        proc = subprocess.Popen([sys.executable, __file__, "--aggregate", str(run)], stdout=subprocess.PIPE)
        _, status, _ = os.wait4(proc.pid, 0)
        out = json.loads(proc.stdout.read() if proc.stdout else b"{}")
        proc.returncode = os.waitstatus_to_exitcode(status)
        sizes = {name: (run / name).stat().st_size / 2**20 for name in ("summary.json", "results.csv", "report.html")}
    rows = args.containers * len(load_profile("container-baseline").controls)
    print(f"report: {out['targets']} containers, {rows} control rows (generated in {generated:.0f} s)")
    print(
        f"  aggregate (records -> summary.json, results.csv, report.md, report.html): {out['seconds']:.1f} s, "
        f"peak RSS of its process {out['peak_mb']:.0f} MB"
    )
    print("  " + ", ".join(f"{name} {mb:.1f} MB" for name, mb in sizes.items()))


if __name__ == "__main__":
    main()
