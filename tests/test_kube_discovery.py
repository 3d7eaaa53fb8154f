"""Discovery: namespaces, selectors, exclusions, owners, annotations, one pod per workload revision."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetscan.emulator.scenario import parse_scenario
from fleetscan.emulator.server import Emulator
from fleetscan.errors import UsageError
from fleetscan.kube.discovery import Selection, discover
from fleetscan.kube.targets import Workload

from .conftest import DATA
from .kube_helpers import admin_kube


@pytest.fixture(scope="module")
def access() -> Iterator[Emulator]:
    with Emulator(parse_scenario((DATA / "access.yaml").read_text(), "access.yaml")) as emu:
        yield emu


def keys(found: list) -> list[str]:
    return [t.key for t in found]


def test_everything_but_system_and_own_namespaces(access: Emulator, tmp_path: Path) -> None:
    found = discover(admin_kube(access, tmp_path), Selection(own_namespace="fleetscan"))
    assert found.namespaces == ["default", "team-a", "team-b"]
    assert keys(found.targets) == [
        "team-a/api-0/api",
        "team-a/api-nonroot/api",
        "team-a/forced-debug/main",
        "team-a/guarded/app",
        "team-a/web-aaaaa/web",
        "team-a/web-bbbbb/web",
        "team-a/web-ccccc/web",
        "team-b/lonely/main",
        "team-b/lonely/helper",
    ]
    skipped = {(s.pod, s.container): s.reason for s in found.skipped}
    assert skipped == {  # broken is not Running; every container of a selected pod is accounted for
        ("ignored", "main"): "pod annotation fleetscan.io/skip=true",
        ("guarded", "fleetscan-scanner"): "the pod's scanner sidecar: it scans the other containers",
    }


def test_targets_carry_what_later_steps_need(access: Emulator, tmp_path: Path) -> None:
    found = {t.key: t for t in discover(admin_kube(access, tmp_path), Selection(namespaces=("team-a",))).targets}
    web = found["team-a/web-aaaaa/web"]
    assert web.workload == Workload("Deployment", "web") and web.revision and web.image == "acme/shop:1.0"
    assert found["team-a/api-0/api"].workload == Workload("StatefulSet", "api")
    nonroot = found["team-a/api-nonroot/api"]
    assert nonroot.workload == Workload("Pod", "api-nonroot")
    assert nonroot.security.run_as_user == 65532 and nonroot.security.run_as_non_root
    guarded = found["team-a/guarded/app"]
    assert guarded.sidecar == "fleetscan-scanner" and guarded.share_process_namespace
    assert "team-a/guarded/fleetscan-scanner" not in found  # the scanner is never a target
    assert found["team-a/forced-debug/main"].forced_approach == "debug"


def test_selectors_and_exclusions(access: Emulator, tmp_path: Path) -> None:
    kube = admin_kube(access, tmp_path)
    assert discover(kube, Selection(namespace_selector="env=dev")).namespaces == ["team-b"]
    assert discover(kube, Selection(namespaces=("team-*",), exclude=("team-b",))).namespaces == ["team-a"]
    web = discover(kube, Selection(namespaces=("team-a",), pod_selector="app=web"))
    assert {t.pod for t in web.targets} == {"web-aaaaa", "web-bbbbb", "web-ccccc"}
    some = discover(kube, Selection(namespaces=("team-a", "no-such-ns")))
    assert some.missing_namespaces == ["no-such-ns"]
    with pytest.raises(UsageError, match="none of the namespaces"):
        discover(kube, Selection(namespaces=("no-such-ns",)))
    with pytest.raises(UsageError, match="not a valid name"):
        Selection(namespaces=("Team_A",))


def test_one_pod_per_workload_revision(access: Emulator, tmp_path: Path) -> None:
    found = discover(admin_kube(access, tmp_path), Selection(namespaces=("team-a",), one_per_workload=True))
    web = [t for t in found.targets if t.workload.name == "web"]
    assert len(web) == 1 and web[0].pod == "web-aaaaa" and web[0].represents == ("web-bbbbb", "web-ccccc")
    assert len([t for t in found.targets if t.workload.kind == "Pod"]) == 3  # bare pods stand alone


def test_api_calls_per_namespace_do_not_grow_with_pods(tmp_path: Path) -> None:
    def pods(n: int) -> str:
        return "\n".join(
            f"      - {{name: p{i}, labels: {{app: x}}, owner: {{kind: Deployment, name: d}}, "
            f"containers: [{{name: c, image: busybox}}]}}"
            for i in range(n)
        )

    scenario = f"namespaces:\n  - name: small\n    pods:\n{pods(2)}\n  - name: large\n    pods:\n{pods(30)}\n"
    with Emulator(parse_scenario(scenario, "fleet.yaml")) as emu:
        kube = admin_kube(emu, tmp_path)
        emu.client().clear_audit()
        found = discover(kube, Selection(namespaces=("small", "large")))
        assert len(found.targets) == 32
        calls = emu.client().audit(user="kubernetes-admin")
        per_ns = {
            ns: sorted((c["verb"], c["resource"]) for c in calls if c["namespace"] == ns) for ns in ("small", "large")
        }
        # each named namespace is read, its pods and ReplicaSets listed: three calls, whatever its size
        assert per_ns["small"] == per_ns["large"] == [("get", "namespaces"), ("list", "pods"), ("list", "replicasets")]
        assert len(calls) == 6
