"""The native engine against purpose-built images whose answers are known, through every approach."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from fleetscan.access.exec import ExecTransport
from fleetscan.access.transport import Transport
from fleetscan.emulator.scenario import parse_scenario
from fleetscan.emulator.server import Emulator
from fleetscan.engines.native.engine import NativeEngine
from fleetscan.engines.native.facts import Fact
from fleetscan.engines.native.profile import ProfileError, load_profile, parse_profile
from fleetscan.engines.native.resources.accounts import TableFact
from fleetscan.engines.native.resources.file import FileFact
from fleetscan.engines.native.resources.processes import ProcessesFact, parse_processes
from fleetscan.engines.native.resources.search import SearchFact
from fleetscan.engines.native.script import build, complete, new_token, split
from fleetscan.kube.client import Kube
from fleetscan.kube.discovery import Selection, discover
from fleetscan.kube.targets import Target
from fleetscan.results.hdf import exec_json_problems
from fleetscan.results.threshold import evaluate

from .conftest import DATA
from .kube_helpers import admin_kube, open_way_in

PROFILE = load_profile(str(DATA / "profiles" / "all-resources.yml"))
SCHEMA = json.loads((DATA / "schemas" / "exec-json.json").read_text())


@pytest.fixture(scope="module")
def engine_emu() -> Iterator[Emulator]:
    with Emulator(parse_scenario((DATA / "engine.yaml").read_text(), "engine.yaml")) as emu:
        yield emu


@pytest.fixture(scope="module")
def kube(engine_emu: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Kube:
    return admin_kube(engine_emu, tmp_path_factory.mktemp("kc"))


@pytest.fixture(scope="module")
def targets(kube: Kube) -> dict[str, Target]:
    return {t.pod: t for t in discover(kube, Selection(namespaces=("engine",))).targets}


def transport(kube: Kube, target: Target, approach: str) -> Transport:
    return open_way_in(kube, target, approach)


def scan(kube: Kube, target: Target, approach: str = "exec", **kwargs: Any) -> dict[str, Any]:
    return NativeEngine(PROFILE, **kwargs).examine(transport(kube, target, approach), target).document


def results(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {c["id"]: c["results"] for c in doc["profiles"][0]["controls"]}


def statuses(doc: dict[str, Any]) -> dict[str, list[str]]:
    return {cid: [r["status"] for r in rs] for cid, rs in results(doc).items()}


def messages(doc: dict[str, Any], control: str) -> str:
    return " | ".join(r.get("message") or r.get("skip_message") or "" for r in results(doc)[control])


def test_known_bad_image(kube: Kube, targets: dict[str, Target]) -> None:
    doc = scan(kube, targets["bad"])
    s = statuses(doc)
    assert "found 1: /srv/data.txt" in messages(doc, "F-WW")
    assert s["F-SUID"] == ["failed"] and "/usr/local/bin/suid" in messages(doc, "F-SUID")
    assert "/bin/busybox" not in messages(doc, "F-SUID")
    assert "/usr/local/bin/sgid" in messages(doc, "F-SGID")
    assert "found 1: /srv/orphan" in messages(doc, "F-UNOWNED")
    assert "found 1: /opt/keys/id_rsa" in messages(doc, "F-KEYS")
    assert s["F-SHADOW"] == ["passed", "passed", "passed", "passed", "failed"]  # exists, type, owner, group, mode
    assert "mode is 0644" in messages(doc, "F-SHADOW")
    assert s["F-CONF"] == ["passed", "failed", "passed"] and "it matches" in messages(doc, "F-CONF")
    assert s["F-LINK"] == ["passed", "passed", "passed"]
    assert s["F-MISSING"] == ["failed", "failed", "passed", "passed"]
    assert "also id 0: toor" in messages(doc, "U-ROOT") and "twin and app (1000)" in messages(doc, "U-ROOT")
    assert "app (/bin/sh)" in messages(doc, "U-SHELLS") and "toor (/bin/sh)" in messages(doc, "U-SHELLS")
    assert s["L-EMPTY"] == ["failed", "failed"] and "empty password: root" in messages(doc, "L-EMPTY")
    assert s["O-REL"] == ["passed", "passed", "failed"] and "'3.15.4'" in messages(doc, "O-REL")
    assert "openssh-server 8.8_p1-r1 (apk), sudo 1.9.8-r0 (apk)" in messages(doc, "P-SSH")
    assert s["R-PROC"] == ["failed", "passed", "passed"]  # the container's main process runs as root
    assert s["K-POD"][:2] == ["failed", "passed"]
    assert s["X-STRICT"] == ["skipped"]


def test_known_good_image(kube: Kube, targets: dict[str, Target]) -> None:
    doc = scan(kube, targets["good"])
    s = statuses(doc)
    for control in ("F-SGID", "F-UNOWNED", "U-ROOT", "G-UNIQUE", "O-REL", "R-PROC", "K-POD"):
        assert set(s[control]) == {"passed"}, (control, messages(doc, control))
    # uid 1000 may not look into /root (0700) nor read /etc/shadow: those searches are not
    # reviewed, never passed blind
    for control in ("F-WW", "F-KEYS"):
        assert s[control] == ["skipped"] and "may not read some files or directories" in messages(doc, control)
    assert s["F-CONF"] == ["passed", "skipped", "passed"]  # 0640 root: uid 1000 may not read its content
    assert s["L-EMPTY"] == ["skipped", "skipped"]  # uid 1000 cannot read /etc/shadow: not a guess
    assert "cannot be read" in messages(doc, "L-EMPTY")


def test_same_results_through_exec_debug_and_sidecar(kube: Kube, targets: dict[str, Target]) -> None:
    by_exec = scan(kube, targets["same-exec"], "exec")
    by_debug = scan(kube, targets["same-debug"], "debug")
    by_sidecar = scan(kube, targets["same-sidecar"], "sidecar")
    assert statuses(by_exec) == statuses(by_debug) == statuses(by_sidecar)
    assert [r.get("message", None) for r in results(by_exec)["F-SUID"]] == [
        r.get("message", None) for r in results(by_sidecar)["F-SUID"]
    ]


def test_distroless_through_debug(kube: Kube, targets: dict[str, Target]) -> None:
    doc = scan(kube, targets["dl"], "debug")
    assert "found 1: /app/cache" in messages(doc, "F-WW")
    assert statuses(doc)["P-SSH"] == ["passed", "passed"]  # status.d database read, no ssh
    assert doc["platform"]["release"] == "debian 12"
    assert doc["platform"]["target_id"] == "k8s-container://engine/dl/main"


def test_hostile_names_and_contents_neither_break_nor_execute(kube: Kube, targets: dict[str, Target]) -> None:
    doc = scan(kube, targets["odd"])
    found = messages(doc, "F-WW")
    for name in ("/srv/new\nline", "/srv/$(touch /tmp/pwned)", "/srv/`touch /tmp/pwned2`", "/srv/quote'\"x"):
        assert name in found
    assert "found 4:" in found
    check = ExecTransport(kube, targets["odd"]).run(["sh", "-c", "ls /tmp"])
    assert check.stdout == b""  # nothing was executed


def test_framing_ignores_forged_markers() -> None:
    token = new_token()
    forged = b"\nFAKE:E:0\n\ndeadbeef:B:1\n"
    output = f"\n{token}:B:0\n".encode() + forged + f"\n{token}:E:0\n".encode()
    sections = split(output, token, 2)
    assert list(sections) == [0] and sections[0].payload == forged


@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_script_is_posix(tmp_path: Path, shell: str) -> None:
    """The same script under dash and busybox ash (both POSIX shells) gives the same facts."""
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "etc" / "x y").write_text("z")
    (root / "etc" / "x y").chmod(0o666)
    facts = [FileFact("/etc/x y"), TableFact("/etc/passwd"), SearchFact(("/etc",), "world_writable")]
    token = new_token()
    argv = [shell, "-s"] if shell == "dash" else [shell, "sh", "-s"]
    out = subprocess.run(argv, input=build(facts, str(root), token).encode(), capture_output=True, check=True).stdout
    sections = split(out, token, 3)
    assert sections[0].payload.startswith(b"F 81b6 ")
    assert sections[1].payload == b"OK\nroot:0:/bin/sh\n"  # name, id and shell: never the password field
    assert sections[2].payload.split(b"\n", 1)[1] == f"{root}/etc/x y\0F:ok\0".encode()
    assert all(s.status == 0 and not s.truncated for s in sections.values())


@dataclass(frozen=True)
class _Shell(Fact):
    """A fact that is a piece of shell, to see how a section ends."""

    text: str

    def key(self) -> str:
        return self.text

    def script(self) -> str:
        return self.text


@pytest.mark.parametrize("shell", ["dash", "busybox", "bash"])
def test_a_process_is_named_by_its_argv0_alone(shell: str) -> None:
    """Each process's record names the last part of its argv[0], at most 256 bytes of it: a
    newline in argv[0] is a space, and the arguments after it never show."""
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    argv0 = {"/usr/sbin/sshd": "sshd", "evil\nsshd": "evil sshd", "a/b c": "b c", "x" * 300: "x" * 256}
    sleepers = {
        subprocess.Popen([name, "30", "1"], executable=shutil.which("sleep")).pid: want for name, want in argv0.items()
    }
    try:
        token = new_token()
        argv = [shell, "sh", "-s"] if shell == "busybox" else [shell, "-s"]
        script = build([ProcessesFact()], "", token).encode()
        out = subprocess.run(argv, input=script, capture_output=True, check=True, timeout=60).stdout
        procs = parse_processes(split(out, token, 1)[0].payload)
        assert procs is not None
        names = {p.pid: p.name for p in procs if p.pid in sleepers}
        assert names == sleepers
    finally:
        for pid in sleepers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


@pytest.mark.parametrize("shell", ["dash", "busybox", "bash"])
def test_an_exit_ends_its_section_and_a_killed_one_has_no_status(shell: str) -> None:
    """A fact's `exit` ends only that fact, with its status; a fact killed mid-way has no status
    line (it did not finish: never read as complete); the facts after both still run."""
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    facts = [
        _Shell("echo one; exit 7; echo never"),
        _Shell("echo two; sh -c 'kill -9 $PPID'; echo never"),
        _Shell("echo three"),
    ]
    token = new_token()
    argv = [shell, "sh", "-s"] if shell == "busybox" else [shell, "-s"]
    script = build(facts, "", token).encode()
    out = subprocess.run(argv, input=script, capture_output=True, check=True, timeout=30).stdout
    sections = split(out, token, 3)
    assert (sections[0].payload, sections[0].status, sections[0].truncated) == (b"one\n", 7, False)
    assert (sections[1].payload, sections[1].status, sections[1].truncated) == (b"two\n", None, True)
    assert (sections[2].payload, sections[2].status) == (b"three\n", 0)
    assert complete(out, token)


def test_no_secret_leaves_the_container(kube: Kube, targets: dict[str, Target]) -> None:
    bundled = (
        NativeEngine(load_profile("container-baseline"))
        .examine(ExecTransport(kube, targets["bad"]), targets["bad"])
        .document
    )
    text = json.dumps(scan(kube, targets["bad"])) + json.dumps(bundled)
    for secret in ("KNOWNHASH", "knownsalt", "S3CRETKEYMATERIAL", "export TOKEN"):
        assert secret not in text


def test_hdf_is_valid_exec_json(kube: Kube, targets: dict[str, Target]) -> None:
    doc = (
        NativeEngine(load_profile("container-baseline"))
        .examine(ExecTransport(kube, targets["bad"]), targets["bad"])
        .document
    )
    jsonschema.validate(doc, SCHEMA)
    assert exec_json_problems(doc) == []
    assert len(doc["profiles"]) == 1
    counts = evaluate(doc, {}).counts.overall
    assert sum(counts.values()) == 36 and counts["failed"] > 5


def test_batched_needs_one_exec_and_per_check_many(kube: Kube, targets: dict[str, Target]) -> None:
    profile = load_profile("container-baseline")
    batched = NativeEngine(profile).examine(ExecTransport(kube, targets["bad"]), targets["bad"])
    per_check = NativeEngine(profile, exec_mode="per-check").examine(
        ExecTransport(kube, targets["bad"]), targets["bad"]
    )
    assert batched.stats.exec_calls == 1
    assert per_check.stats.exec_calls >= 10 * batched.stats.exec_calls
    assert statuses(batched.document) == statuses(per_check.document)


def test_unreachable_container_is_an_error_result_not_a_crash(kube: Kube, targets: dict[str, Target]) -> None:
    doc = scan(kube, targets["dl"], "exec")  # no shell in distroless
    assert {s for ss in statuses(doc).values() for s in ss} <= {"error", "skipped"}
    assert "could not be examined" in messages(doc, "F-WW")
    assert evaluate(doc, {}).counts.overall["error"] == 17


def test_profile_problems_are_all_reported_with_lines() -> None:
    text = """name: broken
title: Broken
version: 1
controls:
  - id: A
    impact: 1.5
    tags: {nist: [AC-1], severity: high}
    checks: [{filez: /etc/passwd, expect: {exists: true}}]
  - id: A
    impact: 0.5
    tags: {nist: [AC-1], severity: medium}
    checks:
      - file: /etc/passwd
        expect: {mode: 644}
  - id: B
    impact: 0.5
    tags: {nist: [AC-1], severity: loud}
    checks:
      - search: {roots: [relative], find: everything}
        expect: {none: true}
"""
    with pytest.raises(ProfileError) as err:
        parse_profile(text, "broken.yml")
    message = str(err.value)
    for expected in (
        "broken.yml:5: control 'A': impact must be a number from 0.0 to 1.0",
        "broken.yml:8: unknown resource 'filez'",
        "broken.yml:9: duplicate control id 'A' (first at line 5)",
        'broken.yml:13: expect.mode must be a quoted octal mode such as "0644"',
        "broken.yml:15: control 'B': tags need nist",
        "broken.yml:19: search.find must be one of",
        "broken.yml:19: search roots and excludes must be absolute paths",
    ):
        assert expected in message


def test_bundled_profile_and_thresholds() -> None:
    from importlib import resources

    from fleetscan.results.lint import lint
    from fleetscan.results.threshold import parse_threshold_text

    profile = load_profile("container-baseline")
    assert len(profile.controls) >= 30
    assert all(c.tags["nist"] and c.tags["severity"] for c in profile.controls)
    for name in ("default.yml", "strict.yml"):
        text = resources.files("fleetscan.profiles").joinpath(name).read_text()
        assert lint(parse_threshold_text(text, name), flattened_source=text) == []
