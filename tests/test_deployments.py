"""Deployments against a real `prefect server` on loopback: prefect.yaml, serve, deploy events from
notify-deploy and the rollout watcher, and a fleet scan sharded over two process workers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetscan.emulator.scenario import load_scenario, parse_scenario
from fleetscan.emulator.server import Emulator
from fleetscan.settings import ScanParams

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = dict(
        os.environ,
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        FLEETSCAN_HOME=str(ROOT),
    )
    env.pop("PREFECT_API_KEY", None)
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("prefect server did not start") from None
            time.sleep(0.5)
    yield env
    proc.terminate()
    proc.wait(timeout=60)


def client(env: dict[str, str]) -> Any:
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(env["PREFECT_API_URL"])


def flow_runs(env: dict[str, str], prefix: str) -> list[Any]:
    """The flow runs whose name starts with `prefix` (names end with the run id)."""
    with client(env) as c:
        return [r for r in c.read_flow_runs(limit=200) if r.name.startswith(prefix)]


def wait_for(predicate: Any, timeout: float = 180, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def run(env: dict[str, str], *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), env=env, capture_output=True, text=True, timeout=300, cwd=ROOT, check=False, **kwargs
    )


def test_prefect_yaml_registers_schedule_and_trigger(server: dict[str, str]) -> None:
    pool = run(server, str(BIN / "prefect"), "work-pool", "create", "fleetscan", "--type", "process")
    assert pool.returncode == 0, pool.stderr
    deployed = run(server, str(BIN / "prefect"), "--no-prompt", "deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    with client(server) as c:
        names = {d.name: d for d in c.read_deployments()}
        assert {"fleet-scan-nightly", "fleet-scan", "namespace-scan", "workload-scan-on-deploy"} <= set(names)
        (schedule,) = names["fleet-scan-nightly"].schedules
        assert schedule.schedule.cron == "0 2 * * *" and schedule.schedule.timezone == "UTC"
        automations = [a for a in c.read_automations() if "workload-scan-on-deploy" in a.name]
        assert automations and "fleetscan.workload.deployed" in automations[0].trigger.expect
        schema = names["fleet-scan"].parameter_openapi_schema
        assert "ScanParams" in json.dumps(schema)  # the UI renders the parameter model as a form
        fields = schema["definitions"]["ScanParams"]["properties"]
        assert {"waivers", "threshold", "namespaces"} <= set(fields)  # e.g. a waiver file on the worker


def test_deploy_events_start_workload_scans(server: dict[str, str], tmp_path: Path) -> None:
    with client(server) as c:  # serve registers its own deployments: start from none of the same names
        for d in c.read_deployments():
            c.delete_deployment(d.id)
    with Emulator(load_scenario("demo")) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        served = subprocess.Popen(
            [str(BIN / "fleetscan"), "serve", "--kubeconfig", str(kubeconfig), "--debug-image", "fleetscan/debug:1.0"],
            env=server,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        watcher: subprocess.Popen[str] | None = None
        try:

            def served_ready() -> bool:
                if served.poll() is not None:
                    raise AssertionError(f"fleetscan serve exited: {served.communicate()[1][-3000:]}")
                with client(server) as c:
                    return any(
                        d.name == "workload-scan-on-deploy" and d.work_pool_name is None for d in c.read_deployments()
                    )

            wait_for(served_ready, what="the served deployments")
            sent = run(
                server, str(BIN / "fleetscan"), "notify-deploy", "-n", "shop", "--kind", "Deployment", "--name", "web"
            )
            assert sent.returncode == 0, sent.stderr
            name = "workload shop/deployment/web p"  # then the run id, derived from the flow run's id
            wait_for(
                lambda: [r for r in flow_runs(server, name) if r.state and r.state.is_completed()],
                what="the notified workload scan",
            )
            # The watcher: a rollout of shop/web completes, and exactly that workload is scanned again.
            watcher = subprocess.Popen(
                [str(BIN / "fleetscan"), "watch", "--kubeconfig", str(kubeconfig)],
                env=server,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(3)  # it lists first: what is rolled out already is not news
            from kubernetes import client as k8s
            from kubernetes import config

            apps = k8s.AppsV1Api(config.new_client_from_config(str(kubeconfig)))
            apps.patch_namespaced_deployment(
                "web",
                "shop",
                {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "acme/web:1.1"}]}}}},
            )
            done = wait_for(
                lambda: [r for r in flow_runs(server, name) if r.state and r.state.is_completed()][1:],
                what="the watched rollout's workload scan",
            )
            assert done[0].parameters["namespace"] == "shop" and done[0].parameters["name"] == "web"
            runs = flow_runs(server, name)
            assert all(r.name == f"{name}{r.id.hex[:12]}" for r in runs)  # named after what it scans, and its run id
        finally:
            for proc in (watcher, served):
                if proc is not None:
                    proc.terminate()
                    proc.wait(timeout=60)


def test_cancelling_a_served_run_stops_it_and_revokes_its_credentials(server: dict[str, str], tmp_path: Path) -> None:
    """Cancel from the UI or API: the runner signals the flow run's process, its scans stop though
    their streams hang, and the cancellation hook revokes what the run still holds."""
    from prefect.states import Cancelling

    from .test_pipeline import leftovers

    with client(server) as c:
        for d in c.read_deployments():
            c.delete_deployment(d.id)
    with Emulator(parse_scenario(FLEET, "fleet.yaml")) as emu:
        emu.client().set_faults(exec_stall=[{"path": "/exec$", "seconds": 600}])
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        served = subprocess.Popen(
            [str(BIN / "fleetscan"), "serve", "--kubeconfig", str(kubeconfig)],
            env=server,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:

            def adhoc() -> Any:
                if served.poll() is not None:
                    raise AssertionError(f"fleetscan serve exited: {served.communicate()[1][-3000:]}")
                with client(server) as c:
                    return next((d for d in c.read_deployments() if d.name == "fleet-scan"), None)

            deployment = wait_for(adhoc, what="the served fleet-scan deployment")
            with client(server) as c:
                flow_run = c.create_flow_run_from_deployment(deployment.id)
            wait_for(lambda: len(leftovers(emu, tmp_path)) >= 3, what="the run's credentials")
            time.sleep(2)  # its exec streams are open and silent
            with client(server) as c:
                c.set_flow_run_state(flow_run.id, Cancelling(), force=True)

            def cancelled() -> bool:
                with client(server) as c:
                    state = c.read_flow_run(flow_run.id).state
                return bool(state and state.is_cancelled())

            wait_for(cancelled, timeout=120, what="the cancelled state")
            wait_for(lambda: leftovers(emu, tmp_path) == [], timeout=60, what="revoked credentials")
        finally:
            served.terminate()
            served.wait(timeout=60)


FLEET = "namespaces:\n" + "".join(
    f"  - name: n{i}\n    pods:\n"
    + "".join(f"      - {{name: p{j}, containers: [{{name: c, image: busybox}}]}}\n" for j in range(2))
    for i in range(4)
)


def in_subprocess(env: dict[str, str], code: str, *args: str) -> Any:
    """Run Prefect client code in a child process: flow runs in this one would leave Prefect's
    background services bound to this module's server after it stops, failing later tests."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


DEPLOY_SHARDS = """
import json, sys
from flows.fleet import namespace_scan
for source, name in zip(sys.argv[1::2], sys.argv[2::2]):
    namespace_scan.from_source(source=source, entrypoint="flows/fleet.py:namespace_scan").deploy(
        name=name, work_pool_name="shards", print_next_steps=False
    )
print(json.dumps("ok"))
"""

FLEET_SCAN = """
import dataclasses, json, sys
from flows.fleet import fleet_scan, run_to_end
from fleetscan.settings import ScanParams
result = run_to_end(fleet_scan, ScanParams.model_validate_json(sys.argv[1]))
print(json.dumps({**dataclasses.asdict(result), "exit_code": result.exit_code}))
"""


def test_fleet_scan_sharded_over_two_workers(server: dict[str, str], tmp_path: Path) -> None:
    pool = run(server, str(BIN / "prefect"), "work-pool", "create", "shards", "--type", "process")
    assert pool.returncode == 0, pool.stderr
    # Shards whose code has vanished by the time a worker starts them ("broken"): their runs crash.
    gone = tmp_path / "gone"
    shutil.copytree(ROOT / "flows", gone / "flows")
    in_subprocess(server, DEPLOY_SHARDS, str(ROOT), "shards", str(gone), "broken")
    shutil.rmtree(gone)
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    outputs = [open(log, "w") for log in logs]  # noqa: SIM115 - closed after the workers stop
    workers = [
        subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", "shards", "--name", f"w{i}", "--limit", "1"],
            env=server,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        for i, out in enumerate(outputs)
    ]
    try:
        with Emulator(parse_scenario(FLEET, "fleet.yaml")) as emu:
            kubeconfig = str(emu.write_kubeconfig(tmp_path / "kc"))

            def scan(run_id: str, **extra: Any) -> dict[str, Any]:
                params = ScanParams(kubeconfig=kubeconfig, out=str(tmp_path / run_id), run_id=run_id, **extra)
                return dict(in_subprocess(server, FLEET_SCAN, params.model_dump_json()))

            sharded = scan("sharded", dispatch="namespace-scan/shards", shard_size=1)
            # workers without a shared filesystem: hand-over through a share
            shared = scan(
                "shared", dispatch="namespace-scan/shards", shard_size=2, share=(tmp_path / "bucket").as_uri()
            )
            lost = scan("lost", dispatch="namespace-scan/broken", shard_size=2)
            single = scan("single")
    finally:
        for w, out in zip(workers, outputs, strict=True):
            w.terminate()
            w.wait(timeout=60)
            out.close()

    def outcomes(out: Path) -> dict[str, tuple[str, Any]]:
        summary = json.loads((out / "summary.json").read_text())
        return {
            f"{t['namespace']}/{t['pod']}/{t['container']}": (t["outcome"], t["compliance"]) for t in summary["targets"]
        }

    assert sharded["totals"] == single["totals"] and sharded["totals"]["targets"] == 8
    assert outcomes(tmp_path / "sharded") == outcomes(tmp_path / "single")
    assert shared["totals"] == single["totals"] and outcomes(tmp_path / "shared") == outcomes(tmp_path / "single")
    assert not (tmp_path / "bucket" / "shared").exists()  # collected and cleared
    # Shards that never ran still account for every container: an error naming the shard run.
    assert lost["totals"]["targets"] == 8 and lost["exit_code"] == 2
    reasons = [t["reason"] for t in json.loads((tmp_path / "lost" / "summary.json").read_text())["targets"]]
    assert all(r.startswith("shard run lost-shard-") and "did not complete" in r for r in reasons), reasons
    assert not list(ROOT.glob("runs/shared*"))  # the shards' scratch directories are gone
    picked = [log.read_text().count("shard-") for log in logs]
    assert all(n > 0 for n in picked), picked  # both workers ran shards


def test_process_recipe_registers_and_starts_a_worker(server: dict[str, str]) -> None:
    env = dict(server, PREFECT=str(BIN / "prefect"))
    script = ROOT / "deployments" / "process" / "worker.sh"
    with subprocess.Popen([str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        try:

            def worker_up() -> bool:
                from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

                try:
                    with client(server) as c:
                        return bool(c.read_workers_for_work_pool("fleetscan"))
                except (ObjectNotFound, PrefectHTTPStatusError):  # the script has not created the pool yet
                    return False

            wait_for(worker_up, 240, "a worker polling the fleetscan pool")
            with client(server) as c:
                names = {d.name for d in c.read_deployments()}
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    assert {"fleet-scan-nightly", "fleet-scan", "namespace-scan", "workload-scan-on-deploy"} <= names


def test_kubernetes_base_job_template_registers_and_deployments_target_it(server: dict[str, str]) -> None:
    """Last in this module: it points the deployments at the Kubernetes pool."""
    template = ROOT / "deployments" / "kubernetes" / "base-job-template.json"
    created = run(
        server, str(BIN / "prefect"), "work-pool", "create", "fleetscan-k8s", "--type", "kubernetes",
        "--base-job-template", str(template),
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    with client(server) as c:
        pool = c.read_work_pool("fleetscan-k8s")
    assert pool.type == "kubernetes"
    defaults = pool.base_job_template["variables"]["properties"]
    assert defaults["service_account_name"]["default"] == "fleetscan"
    assert defaults["env"]["default"]["FLEETSCAN_HOME"] == "/opt/fleetscan"
    k8s_file = ROOT / "deployments" / "kubernetes" / "prefect.yaml"
    deployed = run(server, str(BIN / "prefect"), "--no-prompt", "deploy", "--all", "--prefect-file", str(k8s_file))
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    with client(server) as c:
        deployments = {d.name: d for d in c.read_deployments()}
    declared = {d["name"] for d in yaml.safe_load(k8s_file.read_text())["deployments"]}
    assert {deployments[name].work_pool_name for name in declared} == {"fleetscan-k8s"}
    assert deployments["fleet-scan-nightly"].pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/fleetscan"}}
    ]

    # The Kubernetes file declares the same deployments as the main one; only pool and code path differ.
    def comparable(path: Path) -> list[dict[str, Any]]:
        out = []
        for d in yaml.safe_load(path.read_text())["deployments"]:
            out.append({k: v for k, v in d.items() if k != "work_pool"})
        return out

    assert comparable(k8s_file) == comparable(ROOT / "prefect.yaml")
