"""The structure holds: import boundaries between the layers, plug-in registries that are complete,
and one source for every default."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest

from fleetscan.access import REGISTRY as APPROACHES
from fleetscan.engines import REGISTRY as ENGINES
from fleetscan.engines.native.facts import Fact
from fleetscan.engines.native.profile import ProfileError, parse_profile
from fleetscan.engines.native.resources import REGISTRY as RESOURCES
from fleetscan.engines.native.resources import Check, Env
from fleetscan.engines.native.resources.accounts import ShadowFact, TableFact
from fleetscan.engines.native.resources.file import FileFact, GrepFact
from fleetscan.engines.native.resources.os_release import OsReleaseFact
from fleetscan.engines.native.resources.packages import PackagesFact
from fleetscan.engines.native.resources.processes import ProcessesFact
from fleetscan.engines.native.resources.search import SearchFact
from fleetscan.engines.native.script import Section
from fleetscan.kube.targets import SecurityFacts, Target, Workload
from fleetscan.settings import ScanParams

ROOT = Path(__file__).resolve().parent.parent


def imports(path: Path) -> set[str]:
    """Every module a file imports, relative imports resolved to absolute names."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))]


def _under(name: str, *roots: str) -> bool:
    return any(name == r or name.startswith(f"{r}.") for r in roots)


def test_only_the_cli_touches_prefect_and_the_flows() -> None:
    for path in files("fleetscan"):
        if path.name == "cli.py" and path.parent.name == "fleetscan":
            continue
        bad = {m for m in imports(path) if _under(m, "prefect", "flows", "tasks")}
        assert not bad, (path, bad)


def test_only_fleetscan_kube_touches_the_kubernetes_client() -> None:
    for path in files("fleetscan", "flows", "tasks"):
        if "emulator" in path.parts or (ROOT / "fleetscan" / "kube") in path.parents:
            continue
        bad = {m for m in imports(path) if _under(m, "kubernetes", "websocket", "urllib3")}
        assert not bad, (path, bad)


def test_flows_and_tasks_hold_no_kubernetes_logic() -> None:
    for path in files("flows", "tasks"):
        bad = {m for m in imports(path) if _under(m, "fleetscan.kube", "fleetscan.access", "fleetscan.engines")}
        assert not bad, (path, bad)


def test_the_emulator_and_the_product_are_separate_worlds() -> None:
    for path in files("fleetscan"):
        inside = "emulator" in path.parts
        for module in imports(path):
            if inside:
                assert not _under(module, "fleetscan") or _under(module, "fleetscan.emulator"), (path, module)
            elif _under(module, "fleetscan.emulator"):
                assert path == ROOT / "fleetscan" / "cli.py", (path, module)  # demo and emulator serve only


# -- registries ------------------------------------------------------------------------------------------
def test_every_choice_of_the_settings_is_registered() -> None:
    assert set(get_args(ScanParams.model_fields["approach"].annotation)) == {"auto", *APPROACHES}
    assert list(APPROACHES) == ["exec", "sidecar", "debug"]  # the `auto` order
    assert set(get_args(ScanParams.model_fields["engine"].annotation)) == set(ENGINES)


# A plausible answer of the scan script for every fact, and a plausible value for every expectation.
PAYLOADS: dict[type[Fact], bytes] = {
    FileFact: b"F 81a4 0 0 10",
    GrepFact: b"1",
    TableFact: b"OK\nroot:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/app:/sbin/nologin\n",
    ShadowFact: b"OK\nroot set\napp locked\n",
    OsReleaseFact: b"OK\nID=alpine\nVERSION_ID=3.20.1\n",
    PackagesFact: b"apk openssl 3.3.1-r0\n",
    SearchFact: b"OK\n/srv/file\0",
    ProcessesFact: b"OK 99\n1 0 0 /app/server\n",
}
VALUES: dict[str, Any] = {
    "type": "file",
    "mode": "0644",
    "mode_max": "0644",
    "owner": "root",
    "group": "root",
    "size_max": 100,
    "content": "x",
    "content_not": "x",
    "link_target": "/x",
    "min_version": {"alpine": "3.19"},
    "max": 5,
    "id_in": ["alpine"],
    "id_not_in": ["debian"],
    "absent": ["telnet"],
    "present": ["root"],
    "only": ["/srv/*"],
    "locked": ["app"],
    "uid_zero_only": ["root"],
    "gid_zero_only": ["root"],
    "login_shells_only": ["root"],
    "capabilities_added_only": [],
    "capabilities_dropped_include": ["ALL"],
}
TARGETS: dict[str, Any] = {"file": "/etc/app.conf", "search": {"roots": ["/srv"], "find": "world_writable"}}


def _check_text(resource: str, expectation: str) -> str:
    target = TARGETS.get(resource)
    head = f"{resource}: {target!r}" if target is not None else f"{resource}: null"
    value = VALUES.get(expectation, True)
    return f"""name: one
title: One
version: 1
controls:
  - id: C-1
    impact: 0.5
    tags: {{nist: [AC-6], severity: medium}}
    checks:
      - {head}
        expect: {{{expectation}: {value!r}}}
""".replace("'", '"')


CASES = [(r, e) for r, res in RESOURCES.items() for e in res.expectations()]


@pytest.mark.parametrize(("resource", "expectation"), CASES, ids=[f"{r}.{e}" for r, e in CASES])
def test_every_expectation_the_parser_accepts_is_evaluated(resource: str, expectation: str) -> None:
    profile = parse_profile(_check_text(resource, expectation), "one.yml")
    (check,) = profile.controls[0].checks
    target = Target("ns", "pod", "app", "img", Workload("Pod", "pod"), security=SecurityFacts(run_as_user=1000))

    def section(fact: Fact) -> Section | None:
        return Section(PAYLOADS[type(fact)], False)

    outcomes = RESOURCES[resource].evaluate(check, Env(section, "/", target))
    assert outcomes, "nothing was evaluated"
    assert all(o.status in ("passed", "failed") and o.code_desc for o in outcomes), outcomes


def test_an_expectation_without_an_evaluator_does_not_parse() -> None:
    with pytest.raises(ProfileError, match=r"pod does not understand expect\.runs_as_admin"):
        parse_profile(_check_text("pod", "runs_as_admin"), "one.yml")
    assert isinstance(Check("pod", None, {}, 1), Check)


# -- one source for each default -------------------------------------------------------------------------
def test_the_cli_options_come_from_the_settings() -> None:
    from fleetscan.cli import scan_options

    options = {p.name: p for p in scan_options()}
    for name, field in ScanParams.model_fields.items():
        if name == "aggregate":
            continue
        default = field.get_default(call_default_factory=True)
        shown = options[name].default
        if isinstance(default, list):
            assert shown == ",".join(default), name
        elif isinstance(default, dict):
            assert shown is None, name
        else:
            assert shown == default, name
    out = subprocess.run(
        [sys.executable, "-m", "fleetscan", "scan", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    ).stdout
    for flag in ("--workload", "--request-timeout", "--concurrency", "--no-debug", "--run-id", "--input"):
        assert flag in out, flag
