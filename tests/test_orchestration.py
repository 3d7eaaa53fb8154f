"""How runs behave as processes among others: a shared concurrency limit proven from the emulator's
audit log, SIGTERM with a stream blocked, SIGKILL then gc, resume that checks what it resumes,
output folders that cannot take the results, and failures nobody planned for."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prefect.testing.utilities import prefect_test_harness

from fleetscan.emulator.scenario import parse_scenario
from fleetscan.emulator.server import Emulator
from fleetscan.results.rundir import RunDir
from fleetscan.settings import ScanParams

from .test_pipeline import leftovers

FLEETSCAN = [sys.executable, "-m", "fleetscan"]
ROOT = Path(__file__).resolve().parent.parent


def fleet(namespaces: dict[str, int]) -> str:
    return "namespaces:\n" + "".join(
        f"  - name: {ns}\n    pods:\n"
        + "".join(f"      - {{name: p{j}, containers: [{{name: c, image: busybox}}]}}\n" for j in range(n))
        for ns, n in namespaces.items()
    )


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[str]:
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    with prefect_test_harness(server_startup_timeout=120):
        from prefect.settings import PREFECT_API_URL

        yield str(PREFECT_API_URL.value())


def cli(args: list[str], api: str, **kwargs: Any) -> subprocess.Popen[str]:
    env = dict(os.environ, PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return subprocess.Popen(
        [*FLEETSCAN, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, **kwargs
    )


def scan_args(kubeconfig: Path, out: Path, *extra: str) -> list[str]:
    return ["scan", "--kubeconfig", str(kubeconfig), "--out", str(out), "--quiet", *extra]


def wait_for(predicate: Any, timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


# -- the global concurrency limit ----------------------------------------------------------------------
def test_two_runs_sharing_a_limit_of_one_never_overlap_execs(prefect_api: str, tmp_path: Path) -> None:
    """Each run alone would scan 3 containers at once; with `fleetscan-scans` at 1 no two execs of
    either run are ever in flight together (the audit log's start and end of each exec session)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from flows.fleet import GLOBAL_LIMIT

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GLOBAL_LIMIT, limit=1))
    try:
        with Emulator(parse_scenario(fleet({"left": 3, "right": 3}), "fleet.yaml")) as emu:
            kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
            emu.client().set_faults(latency=[{"path": "/exec$", "seconds": 0.4}])
            runs = [
                cli(scan_args(kubeconfig, tmp_path / ns, "--namespaces", ns, "--concurrency", "3"), prefect_api)
                for ns in ("left", "right")
            ]
            for run in runs:
                _, err = run.communicate(timeout=600)
                assert run.returncode in (0, 1), err
            execs = [a for a in emu.client().audit(subresource="exec") if a["user"].startswith("system:serviceaccount")]
        assert len(execs) == 6
        spans = sorted((a["started"], a["time"]) for a in execs)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end - 0.01, spans  # the next exec starts only after the previous ended
        with get_client(sync_client=True) as client:
            assert client.read_global_concurrency_limit_by_name(GLOBAL_LIMIT).active_slots == 0  # all given back
    finally:
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(GLOBAL_LIMIT)


class _Answer(BaseHTTPRequestHandler):
    status = 500

    def do_POST(self) -> None:  # the Prefect client reads limits with POST .../filter and GET
        self.do_GET()

    def do_GET(self) -> None:
        body = json.dumps({"detail": "broken" if self.status >= 500 else "Concurrency limit not found"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("status", "limited"), [(404, False), (500, True)])
def test_only_no_such_limit_means_unlimited(status: int, limited: bool, caplog: pytest.LogCaptureFixture) -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    from flows.fleet import global_slot

    handler = type("Answer", (_Answer,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/api"
        with temporary_settings({PREFECT_API_URL: url, PREFECT_CLIENT_MAX_RETRIES: 0}):
            slot = global_slot(logging.getLogger("test"))
    finally:
        server.shutdown()
    assert (slot is not None) == limited
    assert ("cannot read the global concurrency limit" in caplog.text) == limited


# -- signals ------------------------------------------------------------------------------------------------
def test_sigterm_stops_a_run_with_blocked_streams_promptly(prefect_api: str, tmp_path: Path) -> None:
    """Streams of `stuck` stay silent for 10 minutes; SIGTERM ends the run in seconds, keeps what
    finished (all of `quick`), revokes every credential and exits 2."""
    with Emulator(parse_scenario(fleet({"quick": 2, "stuck": 3}), "fleet.yaml")) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        emu.client().set_faults(exec_stall=[{"path": "/namespaces/stuck/pods/", "seconds": 600}])
        out = tmp_path / "run"
        run = cli(scan_args(kubeconfig, out, "--run-id", "term1"), prefect_api)
        quick = out / "records" / "quick"
        wait_for(lambda: len(list(quick.rglob("*.json"))) == 2, what="the quick namespace's records")
        time.sleep(2)  # the stuck streams are open and silent
        assert leftovers(emu, tmp_path)  # credentials exist while it scans
        sent = time.monotonic()
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=120)
        took = time.monotonic() - sent
        assert leftovers(emu, tmp_path) == []
    assert run.returncode == 2, err
    assert "interrupted" in err or "terminated" in err
    assert "--run-id term1" in err and "Traceback" not in err
    assert took < 20, took  # scans poll the stop signal every second; nothing waits for the streams
    records = RunDir(out, "term1").records()
    assert sorted(r.key for r in records) == ["quick/p0/c", "quick/p1/c"]


def test_gc_after_sigkill_removes_the_objects_once_they_expire(prefect_api: str, tmp_path: Path) -> None:
    with Emulator(parse_scenario(fleet({"stuck": 2}), "fleet.yaml")) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        emu.client().set_faults(exec_stall=[{"path": "/exec$", "seconds": 600}])
        run = cli(scan_args(kubeconfig, tmp_path / "run"), prefect_api)
        wait_for(lambda: len(leftovers(emu, tmp_path)) == 3, what="the run's credentials")
        run.send_signal(signal.SIGKILL)  # no chance to clean up
        run.communicate(timeout=60)
        emu.client().clear_faults()

        def gc() -> subprocess.CompletedProcess[str]:
            done = subprocess.run(
                [*FLEETSCAN, "gc", "--kubeconfig", str(kubeconfig)], capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, done.stderr
            return done

        assert "0 expired object(s) removed" in gc().stderr  # not expired yet: a live run looks the same
        assert len(leftovers(emu, tmp_path)) == 3
        emu.client().advance_clock(900 + 300 + 60)  # token lifetime, grace, and a minute
        assert "3 expired object(s) removed" in gc().stderr
        assert leftovers(emu, tmp_path) == []


# -- resume -------------------------------------------------------------------------------------------------
def test_resume_is_refused_when_it_would_scan_something_else(prefect_api: str, tmp_path: Path) -> None:
    strict = str(ROOT / "fleetscan" / "profiles" / "strict.yml")
    with Emulator(parse_scenario(fleet({"a": 1, "b": 1}), "fleet.yaml")) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        out = tmp_path / "run"
        first = cli(scan_args(kubeconfig, out, "--run-id", "same", "--namespaces", "a"), prefect_api)
        assert first.communicate(timeout=300) and first.returncode in (0, 1)
        emu.client().clear_audit()
        for extra, what in (
            (["--namespaces", "a", "--threshold", strict], "threshold"),
            (["--namespaces", "b"], "namespaces"),
            (
                ["--namespaces", "a", "--profile", str(ROOT / "tests" / "data" / "profiles" / "all-resources.yml")],
                "profile",
            ),
        ):
            again = cli(scan_args(kubeconfig, out, "--run-id", "same", *extra), prefect_api)
            _, err = again.communicate(timeout=300)
            assert again.returncode == 64, err
            assert "cannot be resumed with other settings" in err and what in err, err
        assert emu.client().audit() == []  # refused before any cluster call


def test_a_resumed_shard_with_a_share_scans_only_what_no_attempt_finished(prefect_api: str, tmp_path: Path) -> None:
    from flows.fleet import namespace_scan

    share = (tmp_path / "bucket").as_uri()
    with Emulator(parse_scenario(fleet({"a": 3}), "fleet.yaml")) as emu:
        params = ScanParams(
            kubeconfig=str(emu.write_kubeconfig(tmp_path / "kc")), run_id="sharded", aggregate=False, share=share
        )
        namespace_scan("a", params)  # the first attempt of the shard hands everything over
        stored = sorted(p.name for p in (tmp_path / "bucket" / "sharded" / "records" / "a").rglob("*.json"))
        assert stored == ["c.json"] * 3
        (tmp_path / "bucket" / "sharded" / "records" / "a" / "p1" / "c.json").unlink()  # as if it never ran
        emu.client().clear_audit()
        namespace_scan("a", params)  # the shard dispatched again
        rescanned = {a["name"] for a in emu.client().audit(subresource="exec")}
    assert rescanned == {"p1"}
    assert len(list((tmp_path / "bucket" / "sharded" / "records").rglob("*.json"))) == 3


# -- the run directory --------------------------------------------------------------------------------------
@pytest.fixture()
def small_mount(tmp_path: Path) -> Iterator[Any]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(size_kb: int, *, read_only: bool = False) -> Path:
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        opts = f"size={size_kb}k" + (",ro" if read_only else "")
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], check=True)
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_an_unwritable_output_folder_fails_before_any_cluster_call(
    prefect_api: str, tmp_path: Path, small_mount: Any
) -> None:
    read_only = small_mount(64, read_only=True)
    with Emulator(parse_scenario(fleet({"a": 1}), "fleet.yaml")) as emu:
        run = cli(scan_args(emu.write_kubeconfig(tmp_path / "kc"), read_only / "run"), prefect_api)
        _, err = run.communicate(timeout=300)
        assert emu.client().audit() == []
    assert run.returncode == 64, err
    assert "cannot write" in err and "not writable" in err and "Traceback" not in err


def test_a_full_output_folder_stops_the_run_and_keeps_what_was_written(
    prefect_api: str, tmp_path: Path, small_mount: Any
) -> None:
    full = small_mount(256)
    out = full / "run"
    with Emulator(parse_scenario(fleet({"a": 30}), "fleet.yaml")) as emu:
        run = cli(scan_args(emu.write_kubeconfig(tmp_path / "kc"), out, "--concurrency", "2"), prefect_api)
        _, err = run.communicate(timeout=600)
        assert leftovers(emu, tmp_path) == []
    assert run.returncode == 2, err
    assert "no space left on the device" in err and "Traceback" not in err
    records = list((out / "records").rglob("*.json"))
    assert 0 < len(records) < 30
    for path in records:  # every record that exists is whole, and so is the HDF it vouches for
        record = json.loads(path.read_text())
        if record["hdf"]:
            assert json.loads((out / record["hdf"]).read_text())["profiles"]


# -- failures nobody planned for -----------------------------------------------------------------------------
BROKEN_AGGREGATION = """
import sys
import fleetscan.pipeline.aggregate as aggregate

def broken(*args, **kwargs):
    raise RuntimeError("aggregation exploded")

aggregate.aggregate = broken  # before the flow's tasks import it
from fleetscan.cli import main
sys.argv = ["fleetscan", *sys.argv[1:]]
main()
"""


def test_an_unexpected_failure_exits_2_with_one_line_and_the_log(prefect_api: str, tmp_path: Path) -> None:
    with Emulator(parse_scenario(fleet({"a": 1}), "fleet.yaml")) as emu:
        env = dict(os.environ, PREFECT_API_URL=prefect_api, PREFECT_SERVER_ANALYTICS_ENABLED="false")
        out = tmp_path / "run"
        done = subprocess.run(
            [sys.executable, "-c", BROKEN_AGGREGATION, *scan_args(emu.write_kubeconfig(tmp_path / "kc"), out)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "RuntimeError: aggregation exploded" in lines[0], done.stderr
    assert str(out / "fleetscan.log") in lines[0] and "Traceback" not in done.stderr
    assert "Traceback" in (out / "fleetscan.log").read_text()
