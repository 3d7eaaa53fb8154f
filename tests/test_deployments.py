"""Deployments against a real `prefect server` on loopback: prefect.yaml, serve, deploy events from
notify-deploy and the rollout watcher, and a fleet scan sharded over two process workers."""

from __future__ import annotations

import contextlib
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

from .kube_helpers import admin_kube
from .postgres import postgres

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real `prefect server start` on a throwaway PostgreSQL, as production teams run it."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    with postgres() as database:
        env = dict(
            os.environ,
            PREFECT_HOME=str(home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
            PREFECT_API_DATABASE_CONNECTION_URL=database,
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
        assert not list(home.rglob("*.db")), "the server fell back to SQLite"


def client(env: dict[str, str]) -> Any:
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(env["PREFECT_API_URL"])


def deployments(env: dict[str, str]) -> list[Any]:
    with client(env) as c:
        return list(c.read_deployments())


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


SERVED = {"fleet-scan", "fleet-scan-nightly", "workload-scan-on-deploy"}


@contextlib.contextmanager
def serving(server: dict[str, str], kubeconfig: Path, cwd: Path, *extra: str) -> Iterator[subprocess.Popen[str]]:
    """`fleetscan serve`, once it has registered its deployments (on a server holding none of the
    same names before); stopped afterwards."""
    with client(server) as c:
        for d in c.read_deployments():
            c.delete_deployment(d.id)
    served = subprocess.Popen(
        [str(BIN / "fleetscan"), "serve", "--kubeconfig", str(kubeconfig), *extra],
        env=server, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def ready() -> bool:
            if served.poll() is not None:
                raise AssertionError(f"fleetscan serve exited: {served.communicate()[1][-3000:]}")
            with client(server) as c:
                return {d.name for d in c.read_deployments() if d.work_pool_name is None} >= SERVED

        wait_for(ready, what="the served deployments")
        yield served
    finally:
        served.terminate()
        served.wait(timeout=60)


def test_deploy_events_start_workload_scans(server: dict[str, str], tmp_path: Path) -> None:
    with Emulator(load_scenario("demo")) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        watcher: subprocess.Popen[str] | None = None
        with serving(server, kubeconfig, tmp_path, "--debug-image", "fleetscan/debug:1.0"):
            try:
                notify = ["notify-deploy", "-n", "shop", "--kind", "Deployment", "--name", "web"]
                sent = run(server, str(BIN / "fleetscan"), *notify)
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
                # named after what it scans, then its run id
                assert all(r.name == f"{name}{r.id.hex[:12]}" for r in runs)
            finally:
                if watcher is not None:
                    watcher.terminate()
                    watcher.wait(timeout=60)


def test_cancelling_a_served_run_stops_it_and_revokes_its_credentials(server: dict[str, str], tmp_path: Path) -> None:
    """Cancel from the UI or API: the runner signals the flow run's process, its scans stop though
    their streams hang, and the cancellation hook revokes what the run still holds."""
    from prefect.states import Cancelling

    from .test_pipeline import leftovers

    with Emulator(parse_scenario(FLEET, "fleet.yaml")) as emu:
        emu.client().set_faults(exec_stall=[{"path": "/exec$", "seconds": 600}])
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        with serving(server, kubeconfig, tmp_path):
            deployment = next(d for d in deployments(server) if d.name == "fleet-scan")
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
pool = sys.argv[1]
for source, name in zip(sys.argv[2::2], sys.argv[3::2]):
    namespace_scan.from_source(source=source, entrypoint="flows/fleet.py:namespace_scan").deploy(
        name=name, work_pool_name=pool, print_next_steps=False
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


@contextlib.contextmanager
def two_workers(server: dict[str, str], pool: str, folder: Path) -> Iterator[list[Path]]:
    """A process work pool and two workers on it, each running one flow run at a time; yields their logs."""
    made = run(server, str(BIN / "prefect"), "work-pool", "create", pool, "--type", "process")
    assert made.returncode == 0, made.stderr
    logs = [folder / f"{pool}-worker-{i}.log" for i in range(2)]
    outputs = [open(log, "w") for log in logs]  # noqa: SIM115 - closed after the workers stop
    workers = [
        subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--name", f"{pool}-{i}", "--limit", "1"],
            env=server,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        for i, out in enumerate(outputs)
    ]
    try:
        yield logs
    finally:
        for w, out in zip(workers, outputs, strict=True):
            w.terminate()
            w.wait(timeout=60)
            out.close()


def scanner(server: dict[str, str], kubeconfig: str, folder: Path) -> Any:
    """Run fleet_scan in a child process (its run directory in `folder`), returning its RunResult as a dict."""

    def scan(run_id: str, **extra: Any) -> dict[str, Any]:
        params = ScanParams(kubeconfig=kubeconfig, out=str(folder / run_id), run_id=run_id, **extra)
        return dict(in_subprocess(server, FLEET_SCAN, params.model_dump_json()))

    return scan


def outcomes(out: Path) -> dict[str, tuple[str, Any]]:
    summary = json.loads((out / "summary.json").read_text())
    return {
        f"{t['namespace']}/{t['pod']}/{t['container']}": (t["outcome"], t["compliance"]) for t in summary["targets"]
    }


BIG = "scale:\n  namespaces: 40\n  pods_per_namespace: 50\n  containers_per_pod: 1\n  image: busybox\n"


@pytest.mark.slow
@pytest.mark.timeout(1200)  # two scans of 2,000 containers on two cores
def test_2000_containers_sharded_over_two_workers_are_all_recorded(server: dict[str, str], tmp_path: Path) -> None:
    """On PostgreSQL: every shard's flow run and every namespace's task run is recorded, and the
    sharded result equals the single-process one."""
    with two_workers(server, "big", tmp_path), Emulator(parse_scenario(BIG, "big.yaml")) as emu:
        in_subprocess(server, DEPLOY_SHARDS, "big", str(ROOT), "big")
        scan = scanner(server, str(emu.write_kubeconfig(tmp_path / "kc")), tmp_path)
        # What is checked is the orchestration (every run recorded, the same records), not the
        # profile: a one-control profile keeps two 2,000-container scans within the CI budget.
        quick = {"profile": str(ROOT / "tests" / "data" / "one-control.yml"), "concurrency": 32}
        sharded = scan("big-sharded", dispatch="namespace-scan/big", shard_size=10, **quick)
        single = scan("big-single", **quick)
    assert sharded["totals"] == single["totals"] and single["totals"]["targets"] == 2000
    assert outcomes(tmp_path / "big-sharded") == outcomes(tmp_path / "big-single")
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with client(server) as c:
        runs = c.read_flow_runs(limit=200)
        shards = [r for r in runs if r.name.startswith("namespace ") and r.name.endswith(" big-sharded")]
        assert len(shards) == 4 and all(r.state and r.state.is_completed() for r in shards), [r.name for r in shards]
        (parent,) = [r for r in runs if r.name == "fleet big-sharded"]
        assert parent.state is not None and parent.state.is_completed()
        of_shards = FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in shards]))
        tasks = c.read_task_runs(flow_run_filter=of_shards, limit=200)
    scanned = sorted(t.name for t in tasks if t.name.startswith("scan-"))
    assert scanned == sorted(f"scan-scale-{i:03d}" for i in range(40))  # one task run per namespace, none lost
    assert all(t.state and t.state.is_completed() for t in tasks)


def test_fleet_scan_sharded_over_two_workers(server: dict[str, str], tmp_path: Path) -> None:
    with two_workers(server, "shards", tmp_path) as logs, Emulator(parse_scenario(FLEET, "fleet.yaml")) as emu:
        # Shards whose code has vanished by the time a worker starts them ("broken"): their runs crash.
        gone = tmp_path / "gone"
        shutil.copytree(ROOT / "flows", gone / "flows")
        in_subprocess(server, DEPLOY_SHARDS, "shards", str(ROOT), "shards", str(gone), "broken")
        shutil.rmtree(gone)
        scan = scanner(server, str(emu.write_kubeconfig(tmp_path / "kc")), tmp_path)
        sharded = scan("sharded", dispatch="namespace-scan/shards", shard_size=1)
        # workers without a shared filesystem: hand-over through a share
        shared = scan("shared", dispatch="namespace-scan/shards", shard_size=2, share=(tmp_path / "bucket").as_uri())
        lost = scan("lost", dispatch="namespace-scan/broken", shard_size=2)
        single = scan("single")
    assert sharded["totals"] == single["totals"] and sharded["totals"]["targets"] == 8
    assert outcomes(tmp_path / "sharded") == outcomes(tmp_path / "single")
    assert shared["totals"] == single["totals"] and outcomes(tmp_path / "shared") == outcomes(tmp_path / "single")
    # the shards' files collected and cleared; the reports published where a UI user can open them
    published = sorted(p.name for p in (tmp_path / "bucket" / "shared").iterdir())
    assert published == ["report.html", "report.md", "results.csv", "summary.json"]
    assert shared["report"] == f"{(tmp_path / 'bucket').as_uri()}/shared/report.html"
    # Shards that never ran still account for every container: an error naming the shard run.
    assert lost["totals"]["targets"] == 8 and lost["exit_code"] == 2
    reasons = [t["reason"] for t in json.loads((tmp_path / "lost" / "summary.json").read_text())["targets"]]
    assert all(r.startswith("shard run lost-shard-") and "did not complete" in r for r in reasons), reasons
    assert not list(ROOT.glob("runs/shared*"))  # the shards' scratch directories are gone
    picked = [log.read_text().count("shard-") for log in logs]
    assert all(n > 0 for n in picked), picked  # both workers ran shards


# How a shell starts a background job (`worker.sh &`): with SIGINT ignored.
AS_BACKGROUND_JOB = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])"
)


def test_process_recipe_registers_and_starts_a_worker(server: dict[str, str]) -> None:
    """worker.sh registers the deployments and starts a worker that SIGTERM stops, even started as
    a background job."""
    env = dict(server, PREFECT=str(BIN / "prefect"), PYTHON=sys.executable)
    script = ROOT / "deployments" / "process" / "worker.sh"
    argv = [sys.executable, "-c", AS_BACKGROUND_JOB, str(script)]
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
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
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()  # (the script ends by becoming the worker: the same process)
                raise
    assert {"fleet-scan-nightly", "fleet-scan", "namespace-scan", "workload-scan-on-deploy"} <= names


def test_kubernetes_pool_deployments_and_its_real_worker(server: dict[str, str], tmp_path: Path) -> None:
    """Last in this module: it points the deployments at the Kubernetes pool, whose real worker
    (prefect-kubernetes) then renders the base job template and submits the Job to the emulator."""
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

    # The real worker picks up a flow run and submits its Job (it cannot run the image here).
    with Emulator(parse_scenario("namespaces: [{name: fleetscan}]\n", "k8s.yaml")) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        env = dict(server, KUBECONFIG=str(kubeconfig), PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_ENABLED="false")
        with open(tmp_path / "k8s-worker.log", "w") as log:
            worker = subprocess.Popen(
                [str(BIN / "prefect"), "worker", "start", "--pool", "fleetscan-k8s", "--type", "kubernetes"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                with client(server) as c:
                    flow_run = c.create_flow_run_from_deployment(deployments["fleet-scan"].id)
                batch = admin_kube(emu, tmp_path).batch
                (job,) = wait_for(
                    lambda: batch.list_namespaced_job("fleetscan").items, timeout=180, what="the worker's Job"
                )
            finally:
                worker.terminate()
                worker.wait(timeout=60)
    pod = job.spec.template.spec
    (container,) = pod.containers
    env_of = {e.name: e.value for e in container.env}
    assert job.metadata.labels["prefect.io/flow-run-id"] == str(flow_run.id)
    assert job.metadata.labels["app.kubernetes.io/name"] == "fleetscan"
    assert container.image == "registry.example.com/platform/fleetscan:0.1.0"
    assert pod.service_account_name == "fleetscan" and pod.security_context.run_as_non_root
    assert env_of["FLEETSCAN_HOME"] == "/opt/fleetscan" and env_of["PREFECT__FLOW_RUN_ID"] == str(flow_run.id)
    assert env_of["PREFECT_API_URL"] == server["PREFECT_API_URL"]
    assert {v.name: v.persistent_volume_claim.claim_name for v in pod.volumes if v.persistent_volume_claim} == {
        "runs": "fleetscan-runs"
    }
    assert {m.name: m.mount_path for m in container.volume_mounts}["runs"] == "/data"
    assert container.resources.requests == {"cpu": "500m", "memory": "512Mi"}
    assert container.resources.limits == {"memory": "2Gi"}
    assert job.spec.ttl_seconds_after_finished == 3600 and job.spec.backoff_limit == 0
