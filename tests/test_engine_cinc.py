"""Contract tests of the cinc engine: a stand-in auditor checks the command line and environment it
gets, proves the kubeconfig holds only the narrow token, and writes a real recorded InSpec report."""

from __future__ import annotations

import gzip
import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetscan.emulator.scenario import parse_scenario
from fleetscan.emulator.server import Emulator
from fleetscan.engines.cinc import CincEngine, CincError, CincSettings
from fleetscan.errors import ApproachUnavailable
from fleetscan.kube.credentials import NamespaceCredentials
from fleetscan.kube.discovery import Selection, discover
from fleetscan.kube.targets import Target

from .conftest import DATA
from .kube_helpers import admin_kube, grants

ROOT = Path(__file__).resolve().parents[1]

RECORDED = DATA / "saf" / "hdf" / "good_nginxresults.json.gz"

STAND_IN = r'''#!{python}
"""Stand-in for cinc-auditor: verifies what fleetscan passes, then writes a recorded report."""
import gzip, json, os, stat, sys
from kubernetes import client, config

args = sys.argv[1:]
log = open(os.environ["STAND_IN_LOG"], "w")
mode = oct(stat.S_IMODE(os.stat(os.environ["KUBECONFIG"]).st_mode))
call = {{"args": args, "env": sorted(os.environ), "kubeconfig_mode": mode, "kubeconfig": os.environ["KUBECONFIG"]}}
json.dump(call, log)
log.close()
assert args[0] == "exec" and args[2] == "-t" and args[3].startswith("k8s-container://"), args
assert args[4] == "--reporter" and args[5].startswith("json:") and args[6] == "--no-color", args
ns, pod, container = args[3][len("k8s-container://"):].split("/")
api = client.CoreV1Api(config.new_client_from_config(os.environ["KUBECONFIG"]))
api.read_namespaced_pod(pod, ns)  # the narrow token may read its pod...
try:
    api.list_namespaced_pod(ns)  # ...and nothing more
    sys.exit(3)
except client.exceptions.ApiException as exc:
    assert exc.status == 403
mode = os.environ.get("STAND_IN_MODE", "results")
if mode == "crash":
    print("Could not load profile: syntax error", file=sys.stderr)
    sys.exit(1)
if mode == "sleep":
    import time; time.sleep(30)
with gzip.open({recorded!r}) as src:
    report = json.load(src)
if mode == "garbage":
    report = {{"not": "hdf"}}
open(args[5][len("json:"):], "w").write(json.dumps(report))
sys.exit(100 if mode == "results" else 0)
'''


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    scenario = (
        "namespaces:\n  - name: apps\n    pods:\n      - {name: web, containers: [{name: nginx, image: busybox}]}\n"
    )
    with Emulator(parse_scenario(scenario, "cinc.yaml")) as e:
        yield e


@pytest.fixture()
def auditor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cinc-auditor"
    path.write_text(STAND_IN.format(python=sys.executable, recorded=str(RECORDED)))
    path.chmod(0o755)
    monkeypatch.setenv("STAND_IN_LOG", str(tmp_path / "call.json"))
    return path


def run_scan(emu: Emulator, tmp_path: Path, auditor: Path, **settings: object) -> tuple[dict, Target, Path]:
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "never-passed-on")  # what the auditor must not see
    kube = admin_kube(emu, tmp_path)
    target = discover(kube, Selection(namespaces=("apps",))).targets[0]
    settings.setdefault("extra_env", ("STAND_IN_LOG", "STAND_IN_MODE"))
    with NamespaceCredentials(kube, "apps", "cinc", grants(["web"])) as creds, creds.kubeconfig() as kubeconfig:
        doc = CincEngine("/profiles/nginx-baseline", CincSettings(str(auditor), **settings)).audit(kubeconfig, target)  # type: ignore[arg-type]
        used = kubeconfig
    return doc, target, used


def test_contract_arguments_environment_and_report(emu: Emulator, tmp_path: Path, auditor: Path) -> None:
    doc, _target, kubeconfig = run_scan(emu, tmp_path, auditor)
    call = json.loads((tmp_path / "call.json").read_text())
    assert call["args"][:4] == ["exec", "/profiles/nginx-baseline", "-t", "k8s-container://apps/web/nginx"]
    assert call["kubeconfig_mode"] == "0o600" and call["kubeconfig"] == str(kubeconfig)
    from fleetscan.engines.cinc import PASSED_ENV

    # only what it needs: none of the orchestrator's own credentials, cloud keys or Prefect settings
    assert set(call["env"]) <= {*PASSED_ENV, "KUBECONFIG", "STAND_IN_LOG", "STAND_IN_MODE", "PWD", "SHLVL", "_"}
    assert not kubeconfig.exists() and not kubeconfig.parent.exists()  # deleted afterwards
    with gzip.open(RECORDED) as src:
        recorded = json.load(src)
    assert doc["profiles"] == recorded["profiles"]  # passed through unchanged
    assert doc["platform"]["target_id"] == "k8s-container://apps/web/nginx"


@pytest.mark.parametrize(
    ("mode", "message"),
    [("crash", "failed with exit code 1: Could not load profile"), ("garbage", "not valid exec-json")],
)
def test_contract_failures_are_errors(
    emu: Emulator, tmp_path: Path, auditor: Path, monkeypatch: pytest.MonkeyPatch, mode: str, message: str
) -> None:
    monkeypatch.setenv("STAND_IN_MODE", mode)
    with pytest.raises(CincError, match=message):
        run_scan(emu, tmp_path, auditor)


def test_contract_timeout(emu: Emulator, tmp_path: Path, auditor: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAND_IN_MODE", "sleep")
    with pytest.raises(CincError, match="did not finish within 2 s"):
        run_scan(emu, tmp_path, auditor, timeout=2.0)


def test_distroless_targets_need_the_native_engine(tmp_path: Path) -> None:
    target = Target("apps", "api", "app", "gcr.io/distroless/static", workload=None)  # type: ignore[arg-type]
    with pytest.raises(ApproachUnavailable, match=r"only by exec.*native engine"):
        CincEngine("p").audit(tmp_path / "kc", target, approach="debug")


def test_missing_auditor_says_how_to_install(tmp_path: Path) -> None:
    target = Target("apps", "web", "nginx", "busybox", workload=None)  # type: ignore[arg-type]
    with pytest.raises(CincError, match="not installed"):
        CincEngine("p", CincSettings(executable=str(tmp_path / "no-such-auditor"))).audit(tmp_path / "kc", target)


KILLED = """
import os, sys, time
from fleetscan.kube.client import Kube
from fleetscan.kube.credentials import NamespaceCredentials
from tests.kube_helpers import grants
kube = Kube.from_kubeconfig(sys.argv[1])
creds = NamespaceCredentials(kube, "apps", "killed", grants(["web"]))
creds.__enter__()
with creds.kubeconfig() as path:
    print(path, flush=True)
    time.sleep(600)  # SIGKILLed here, with the auditor's kubeconfig on disk
"""


def test_a_killed_runs_token_kubeconfig_is_private_and_swept(emu: Emulator, tmp_path: Path) -> None:
    """SIGKILL leaves the auditor's kubeconfig (0600 in a 0700 folder of the user's runtime
    directory); the next run or `fleetscan gc` removes it."""
    import signal
    import subprocess
    import sys

    runtime = tmp_path / "runtime"
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(kubeconfig)], env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    path = Path(proc.stdout.readline().strip())  # type: ignore[union-attr]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert path.exists() and path.parent.parent == runtime / "fleetscan"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((runtime / "fleetscan").stat().st_mode) == 0o700
    gc = subprocess.run(
        [sys.executable, "-m", "fleetscan", "gc", "--kubeconfig", str(kubeconfig)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert gc.returncode == 0, gc.stderr
    assert not path.exists() and not path.parent.exists() and "kubeconfig of a killed run" in gc.stdout
