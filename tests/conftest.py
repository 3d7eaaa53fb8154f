"""Shared fixtures: emulators over real HTTPS, the official kubernetes client, and real kubectl."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config

from fleetscan.emulator.runtime import CGROUP_PREFIX, cgroup_mounts
from fleetscan.emulator.scenario import load_scenario, parse_scenario
from fleetscan.emulator.server import Emulator
from fleetscan.results.saf import SafCli

DATA = Path(__file__).parent / "data"

# Processes the suite starts get a private temporary folder, removed when the session ends: a
# fleetscan process SIGKILLed on purpose never runs the kubernetes client's exit hook that deletes
# the CA file it wrote. This process keeps the usual one (resolved before TMPDIR changes).
tempfile.gettempdir()
SESSION_TMP = Path(tempfile.mkdtemp(prefix="fleetscan-tests-"))
os.environ["TMPDIR"] = str(SESSION_TMP)

# A suite started as a shell's background job inherits SIGINT ignored, and so would every process
# it starts: a Prefect worker turns SIGTERM into a SIGINT to itself, and would then never stop.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def leftovers() -> list[str]:
    """What this process's emulators must not leave once stopped: cgroups, container helpers, work
    folders."""
    found = [
        str(root)
        for mount in cgroup_mounts()
        if mount is not None
        for root in mount.glob(f"{CGROUP_PREFIX}{os.getpid()}-*")
    ]
    for folder in SESSION_TMP.glob("fleetscan-emu-*"):
        owner = folder / "owner.pid"
        if owner.exists() and owner.read_text().strip() == str(os.getpid()):
            found.append(f"emulator folder {folder}")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == os.getpid() and os.readlink(stat.parent / "exe").endswith("/pause"):
                found.append(f"container helper process {stat.parent.name}")
        except (OSError, IndexError, ValueError):
            continue
    return found


def pytest_sessionfinish(session: pytest.Session) -> None:
    if left := leftovers():
        print(f"\nthe suite left behind: {', '.join(left)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if str(SESSION_TMP) in Path("/proc/self/mountinfo").read_text():
        return  # something is still mounted there; a test reports it, removing it would be unsafe
    shutil.rmtree(SESSION_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def demo_emulator() -> Iterator[Emulator]:
    """The bundled demo fleet; tests must not change the clock or faults on it."""
    with Emulator(load_scenario("demo")) as emu:
        yield emu


@pytest.fixture()
def fresh_emulator() -> Iterator[Emulator]:
    """A private emulator for tests that advance the clock, inject faults or mutate heavily."""
    with Emulator(parse_scenario((DATA / "small.yaml").read_text(), "small.yaml")) as emu:
        yield emu


def api_client(emu: Emulator, tmp_path: Path, token: str | None = None) -> client.ApiClient:
    path = emu.write_kubeconfig(tmp_path / f"kc-{os.urandom(4).hex()}", token)
    return config.new_client_from_config(str(path))


@pytest.fixture()
def admin(demo_emulator: Emulator, tmp_path: Path) -> client.ApiClient:
    return api_client(demo_emulator, tmp_path)


@dataclass
class Kubectl:
    kubeconfig: Path
    cache: Path

    def __call__(
        self, *args: str, stdin: bytes | None = None, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache), *args],
            input=stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode()}")
        return proc


def make_kubectl(emu: Emulator, tmp_path: Path, token: str | None = None) -> Kubectl:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    path = emu.write_kubeconfig(tmp_path / f"kubectl-{os.urandom(4).hex()}", token)
    return Kubectl(path, tmp_path / "kube-cache")


@pytest.fixture()
def kubectl(demo_emulator: Emulator, tmp_path: Path) -> Kubectl:
    return make_kubectl(demo_emulator, tmp_path)


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    """Headless Chromium (Playwright), for the HTML report and the Prefect UI."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (make setup installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="session")
def saf() -> SafCli:
    """The real SAF CLI (make setup installs it), to check verdicts against."""
    cli = SafCli.find()
    if cli is None:
        pytest.skip("the SAF CLI is not installed (make setup installs it)")
    return cli
