"""Containers that lie (DESIGN.md §7): whatever they do with links, names, tables, shells and
output, the verdict is theirs, the same whichever way in, bounded in time and bytes inside and
outside, and a partial scan is an error, never a pass."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetscan.emulator.scenario import parse_scenario
from fleetscan.emulator.server import Emulator
from fleetscan.engines.native.facts import Fact
from fleetscan.engines.native.resources import REGISTRY, Env
from fleetscan.engines.native.script import Section
from fleetscan.kube.client import Kube
from fleetscan.results.records import TargetRecord
from fleetscan.settings import ScanParams

from .conftest import DATA
from .kube_helpers import admin_kube
from .pipeline_helpers import scan_records
from .test_architecture import _check_text

PROFILE = str(DATA / "profiles" / "hostile.yml")
TIMEOUT = 6.0


BIG_PASSWD = f"""
images:
  hostile/big-passwd:1.0:
    base: busybox
    files:
      /etc/passwd: {{content: "root:x:0:0:{"x" * 5_000_000}\\n"}}
namespaces:
  - name: hostile
    pods:
      - {{name: big-passwd, containers: [{{name: app, image: "hostile/big-passwd:1.0"}}]}}
"""


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(parse_scenario((DATA / "hostile.yaml").read_text(), "hostile.yaml")) as e:
        e.client().load_scenario(BIG_PASSWD)  # a 5 MB single-line /etc/passwd
        yield e


@pytest.fixture(scope="module")
def kube(emu: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Kube:
    return admin_kube(emu, tmp_path_factory.mktemp("kc"))


def scan(kube: Kube, tmp_path: Path, pods: list[str], **params: Any) -> dict[str, TargetRecord]:
    """Records by pod, or by pod/container where a pod has several."""
    params = {"profile": PROFILE, **params}
    settings = ScanParams(namespaces=["hostile"], debug_image="fleetscan/debug:1.0", scan_timeout=TIMEOUT, **params)
    records = scan_records(kube, tmp_path, settings, pods)
    return {r.pod if sum(x.pod == r.pod for x in records) == 1 else f"{r.pod}/{r.container}": r for r in records}


def results(tmp_path: Path, record: TargetRecord) -> dict[str, list[tuple[str, str]]]:
    doc = json.loads((tmp_path / "run" / record.hdf).read_text())
    return {
        c["id"]: [(r["status"], r.get("message") or r.get("skip_message") or "") for r in c["results"]]
        for c in doc["profiles"][0]["controls"]
    }


def statuses(found: dict[str, list[tuple[str, str]]]) -> dict[str, list[str]]:
    return {cid: [s for s, _ in rs] for cid, rs in found.items()}


ODD_NAMES = ("/srv/ww/new\nline", "/srv/ww/quote'\"x", "/srv/ww/$(touch /tmp/pwned)", "/srv/ww/`touch /tmp/pwned2`")
EXPECTED = {
    "H-SHADOW": ["failed"],  # root's empty password, behind two absolute links
    "H-RELEASE": ["passed"],  # the container's own release, not the scanner's
    "H-USERS": ["failed"],  # toor
    "H-CONF": ["passed", "passed", "passed"],
    "H-CHAIN": ["passed", "passed"],
    "H-RELATIVE": ["passed", "passed"],  # its target's mode, not that of /releases/v1.conf
    "H-LOOP": ["passed", "failed"],  # a symlink, whose target never resolves
    "H-OUTSIDE": ["passed"],
    "H-ESCAPE": ["passed"],
    "H-PROC": ["error"],  # never read: an error, not a pass
    "H-DEV": ["error"],
    "H-NAMES": ["failed"],
    "H-OWNER": ["passed", "passed"],
}


def test_the_same_verdict_whichever_way_in(kube: Kube, tmp_path: Path) -> None:
    records = scan(kube, tmp_path, ["links-exec", "links-debug", "links-sidecar"])
    assert {p: r.approach for p, r in records.items()} == {
        "links-exec": "exec",
        "links-debug": "debug",
        "links-sidecar": "sidecar",
    }
    by_exec, by_debug, by_sidecar = (
        results(tmp_path, records[p]) for p in ("links-exec", "links-debug", "links-sidecar")
    )
    assert statuses(by_exec) == EXPECTED
    assert by_exec == by_debug == by_sidecar  # statuses and messages, control by control
    names = by_exec["H-NAMES"][0][1]
    assert "found 5:" in names and all(n in names for n in ODD_NAMES)
    assert all(r.outcome == "error" for r in records.values())  # H-PROC and H-DEV could not be examined
    assert all("H-PROC" in r.reason and "H-DEV" in r.reason for r in records.values())
    assert scan_exec(kube, "links-exec", ["sh", "-c", "ls /tmp"]) == b""  # no name was ever executed


def test_a_distroless_variant_through_debug(kube: Kube, tmp_path: Path) -> None:
    records = scan(kube, tmp_path, ["links-distroless"])
    record = records["links-distroless"]
    assert record.approach == "debug"
    expected = EXPECTED | {"H-OWNER": ["failed"]}  # /etc/shadow.real is not at that path here
    assert statuses(results(tmp_path, record)) == expected


def test_a_neighbour_cannot_steer_the_sidecar(kube: Kube, tmp_path: Path) -> None:
    """A sibling whose command line carries newlines and a forged process record: the sidecar
    scans the target by its cgroup, and finds what exec finds."""
    records = scan(kube, tmp_path, ["links-exec", "links-steered"])
    steered = records["links-steered/app"]
    assert steered.approach == "sidecar"
    assert results(tmp_path, steered) == results(tmp_path, records["links-exec"])
    sibling = records["links-steered/sibling"]  # busybox: its own answers, not the target's
    assert statuses(results(tmp_path, sibling))["H-RELEASE"] == ["failed"]


def scan_exec(kube: Kube, pod: str, argv: list[str]) -> bytes:
    from fleetscan.kube.execstream import run_in

    return run_in(kube, "hostile", pod, "app", argv, timeout=30).stdout


# -- bounded, inside and outside ------------------------------------------------------------------------
def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _processes_in(pid_ns: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "pid") == pid_ns:
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def _container_main(emu: Emulator, pod: str) -> int:
    from fleetscan.emulator.cluster import PODS

    assert emu.cluster is not None
    container = emu.cluster.pods.container(emu.cluster.store.get(PODS, "hostile", pod), "app")
    assert container is not None
    return container.pid


class Sampler:
    """The largest sum of RSS of a container's processes, and of this process, while a scan runs."""

    def __init__(self, pid_ns: str) -> None:
        self.pid_ns = pid_ns
        self.container_base = sum(_rss_kb(p) for p in _processes_in(pid_ns))
        self.self_base = _rss_kb(os.getpid())
        self.container_peak = self.self_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.container_peak = max(self.container_peak, sum(_rss_kb(p) for p in _processes_in(self.pid_ns)))
            self.self_peak = max(self.self_peak, _rss_kb(os.getpid()))
            time.sleep(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize(
    ("pod", "why"),
    [
        ("flood-group", "/etc/group: it resolves into /proc, /sys or /dev"),
        ("big-passwd", "/etc/passwd: it is larger than the scan reads"),
        ("stderr", "output limit exceeded"),
        ("flood-stat", "output limit exceeded"),
        ("stall", f"timed out after {TIMEOUT + 2:.0f} s"),
        ("killed", "did not complete (exit code 137"),
        ("cut", "did not complete (exit code 0, and it was cut short)"),
    ],
)
def test_a_flooding_stalling_or_dying_container_ends_in_error_within_its_deadline(
    emu: Emulator, kube: Kube, tmp_path: Path, pod: str, why: str
) -> None:
    main = _container_main(emu, pod)
    pid_ns = os.readlink(f"/proc/{main}/ns/pid")
    started = time.monotonic()
    with Sampler(pid_ns) as sampled:
        records = scan(kube, tmp_path, [pod, "fine"], profile="container-baseline")
    took = time.monotonic() - started
    record = records[pod]
    found = record.reason + (json.dumps(results(tmp_path, record)) if record.hdf else "")
    assert record.outcome == "error" and why in found, found[:3000]
    assert records["fine"].outcome in ("passed", "failed")  # the rest of the run completes
    assert record.duration_s <= TIMEOUT + 2 + 1, record.duration_s  # its deadline, plus the slack it allows
    assert took < 3 * TIMEOUT + 30
    assert (sampled.container_peak - sampled.container_base) < 16 * 1024  # KiB: the container's own memory
    assert (sampled.self_peak - sampled.self_base) < 50 * 1024  # and fleetscan's
    deadline = time.monotonic() + 5  # nothing fleetscan started keeps running in the container
    while time.monotonic() < deadline and [p for p in _processes_in(pid_ns) if p != main and _ours(p)]:
        time.sleep(0.2)
    assert [p for p in _processes_in(pid_ns) if p != main and _ours(p)] == []


def _ours(pid: int) -> bool:
    try:
        return b"FLEETSCAN_SCAN=" in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


# -- complete or error ----------------------------------------------------------------------------------
def test_odd_ids_are_findings_and_container_data_is_never_expanded(kube: Kube, tmp_path: Path) -> None:
    record = scan(kube, tmp_path, ["bad-ids"], profile=str(DATA / "profiles" / "ids.yml"))["bad-ids"]
    found = results(tmp_path, record)
    zero = found["I-ZERO"][0]
    assert zero[0] == "failed"
    for shown in ("star ('*')", "neg ('-1')", "huge ('99999999999')", "word ('abc')", "space (' 0')"):
        assert shown in zero[1], zero[1]
    assert found["I-UNIQUE"][0][0] == "failed"
    unowned = found["I-UNOWNED"][0]  # owned by uid 5000, which no valid row names: still a finding
    assert unowned[0] == "failed" and "/srv/orphan" in unowned[1], unowned
    assert scan_exec(kube, "bad-ids", ["sh", "-c", "ls /tmp"]) == b""  # `$(touch /tmp/pwned)` never ran


def test_a_directory_the_scan_may_not_read_is_not_reviewed_not_passed(kube: Kube, tmp_path: Path) -> None:
    records = scan(kube, tmp_path, ["denied"], profile=str(DATA / "profiles" / "ids.yml"))
    denied = results(tmp_path, records["denied"])["I-WW"][0]  # uid 1000 may not enter /root
    assert denied[0] == "skipped" and "may not read some files or directories" in denied[1], denied


@pytest.mark.parametrize(
    ("complaint", "status"),
    [("find: '/srv/x': Input/output error", "error"), ("find: '/srv/x': Permission denied", "skipped")],
)
def test_find_failures_are_reported_never_a_pass(tmp_path: Path, complaint: str, status: str) -> None:
    """A find that fails (under dash, where PATH decides which find runs): the search is an error,
    or not reviewed when it was only denied; never `none` passed."""
    import shutil
    import subprocess

    from fleetscan.engines.native.profile import parse_profile
    from fleetscan.engines.native.resources.search import SearchFact
    from fleetscan.engines.native.script import build, new_token, split

    if shutil.which("dash") is None:
        pytest.skip("dash is not installed")
    fake = tmp_path / "bin" / "find"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "{complaint}" >&2\nexit 1\n')
    fake.chmod(0o755)
    root = tmp_path / "root"
    (root / "srv").mkdir(parents=True)
    fact = SearchFact(("/srv",), "world_writable")
    token = new_token()
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin"}
    out = subprocess.run(
        ["dash", "-s"], input=build([fact], str(root), token).encode(), capture_output=True, env=env, check=True
    ).stdout
    text = _check_text("search", "none")  # roots [/srv], world_writable
    (check,) = parse_profile(text, "one.yml").controls[0].checks
    sections = split(out, token, 1)
    outcomes = REGISTRY["search"].evaluate(check, Env(lambda f: sections[0], str(root), None))
    assert [o.status for o in outcomes] == [status], outcomes


# Every resource, fed a section that was cut at its limit or that never finished: an error for
# every expectation (a search that found something keeps its finding), never a pass.
CUT_CASES = [(r, e) for r, res in REGISTRY.items() if r != "pod" for e in res.expectations()]


@pytest.mark.parametrize("how", ["truncated", "unfinished"])
@pytest.mark.parametrize(("resource", "expectation"), CUT_CASES, ids=[f"{r}.{e}" for r, e in CUT_CASES])
def test_a_cut_or_unfinished_section_is_an_error(resource: str, expectation: str, how: str) -> None:
    from fleetscan.engines.native.profile import parse_profile

    from .test_architecture import PAYLOADS

    profile = parse_profile(_check_text(resource, expectation), "one.yml")
    (check,) = profile.controls[0].checks

    def section(fact: Fact) -> Section | None:
        payload = PAYLOADS[type(fact)]
        if type(fact).__name__ == "SearchFact":
            payload = b"OK\n"  # nothing found: a cut listing then proves nothing
        return Section(payload, True, 0) if how == "truncated" else Section(payload, True, None)

    outcomes = REGISTRY[resource].evaluate(check, Env(section, "/", None))
    assert outcomes and all(o.status == "error" for o in outcomes), outcomes


@pytest.mark.parametrize(
    "payload",
    [b"F 81a4 0 0", b"F zz 0 0 1", b"L 81a4 0 0 1\nS garbage", b"F 81a4 0 0 1\nextra", b"?"],
)
def test_a_malformed_answer_is_an_error(payload: bytes) -> None:
    from fleetscan.engines.native.profile import parse_profile

    (check,) = parse_profile(_check_text("file", "exists"), "one.yml").controls[0].checks
    outcomes = REGISTRY["file"].evaluate(check, Env(lambda f: Section(payload, False, 0), "/", None))
    assert [o.status for o in outcomes] == ["error"] and "malformed" in (outcomes[0].message or "")
