"""The orchestrator's identity with exactly the shipped RBAC (deployments/rbac/orchestrator.yaml):
everything fleetscan does works under it, and it is no path to anything more. Each test fails
when the rule it guards is widened back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness

from fleetscan.emulator.scenario import parse_scenario
from fleetscan.emulator.server import Emulator
from fleetscan.errors import Forbidden, Unauthorized
from fleetscan.kube.client import Kube
from fleetscan.kube.credentials import ForeignObject, NamespaceCredentials, slot_names
from fleetscan.kube.rbac import orchestrator_manifests
from fleetscan.settings import ScanParams

from .conftest import make_kubectl
from .kube_helpers import admin_kube, grants
from .pipeline_helpers import scan_records

ROOT = Path(__file__).resolve().parent.parent
FLEETSCAN = [sys.executable, "-m", "fleetscan"]
RBAC = "rbac.authorization.k8s.io"
SCENARIO = """
images:
  acme/api:1.0: {base: distroless}
namespaces:
  - name: fleetscan
  - name: team-a
    pods:
      - {name: web-1, labels: {app: web}, owner: {kind: Deployment, name: web},
         containers: [{name: web, image: busybox}]}
      - {name: web-2, labels: {app: web}, owner: {kind: Deployment, name: web},
         containers: [{name: web, image: busybox}]}
      - {name: api-0, containers: [{name: api, image: "acme/api:1.0"}]}
  - name: team-b
    pods:
      - {name: lonely, containers: [{name: main, image: busybox}]}
"""


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[str]:
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    with prefect_test_harness(server_startup_timeout=120):
        from prefect.settings import PREFECT_API_URL

        yield str(PREFECT_API_URL.value())


@pytest.fixture()
def emu() -> Iterator[Emulator]:
    with Emulator(parse_scenario(SCENARIO, "rbac.yaml")) as e:
        yield e


def _token_for(admin: Kube, namespace: str, account: str) -> str:
    admin.core.create_namespaced_service_account(namespace, {"metadata": {"name": account}})
    body = {"spec": {"expirationSeconds": 3600}}
    return str(admin.core.create_namespaced_service_account_token(account, namespace, body).status.token)


def orchestrator(emu: Emulator, tmp_path: Path, docs: list[dict[str, Any]] | None = None) -> Path:
    """A kubeconfig of the ServiceAccount fleetscan/fleetscan bound by exactly the shipped RBAC."""
    admin = admin_kube(emu, tmp_path)
    shipped = list(yaml.safe_load_all((ROOT / "deployments" / "rbac" / "orchestrator.yaml").read_text()))
    assert shipped == orchestrator_manifests()  # the file is what the code renders
    for doc in docs if docs is not None else shipped:
        kind, ns = doc["kind"], doc["metadata"].get("namespace")
        if kind == "ClusterRole":
            admin.rbac.create_cluster_role(doc)
        elif kind == "ClusterRoleBinding":
            admin.rbac.create_cluster_role_binding(doc)
        elif kind == "Role":
            admin.rbac.create_namespaced_role(ns, doc)
        else:
            admin.rbac.create_namespaced_role_binding(ns, doc)
    return emu.write_kubeconfig(tmp_path / "orchestrator.kc", _token_for(admin, "fleetscan", "fleetscan"))


def cli(args: list[str], api: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return subprocess.Popen(
        [*FLEETSCAN, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )


def leftovers(admin: Kube) -> list[str]:
    selector = "app.kubernetes.io/managed-by=fleetscan"
    return sorted(
        f"{x.metadata.namespace}/{x.metadata.name}"
        for lister in (
            admin.core.list_service_account_for_all_namespaces,
            admin.rbac.list_role_for_all_namespaces,
            admin.rbac.list_role_binding_for_all_namespaces,
        )
        for x in admin.list_all(lister, label_selector=selector)
    )


# -- everything fleetscan does works under it -----------------------------------------------------------
def test_scans_gc_and_resume_work_with_exactly_the_shipped_rbac(
    prefect_api: str, emu: Emulator, tmp_path: Path
) -> None:
    kc = orchestrator(emu, tmp_path)
    admin = admin_kube(emu, tmp_path)
    common = ["--kubeconfig", str(kc), "--quiet", "--debug-image", "fleetscan/debug:1.0"]
    fleet = cli(["scan", *common, "--namespaces", "team-a,team-b", "--out", str(tmp_path / "fleet")], prefect_api)
    _, err = fleet.communicate(timeout=300)
    assert fleet.returncode in (0, 1), err  # no container ended in error: nothing was forbidden
    workload = cli(
        ["scan", *common, "--workload", "deployment/web", "--namespaces", "team-a", "--out", str(tmp_path / "wl")],
        prefect_api,
    )
    _, err = workload.communicate(timeout=300)
    assert workload.returncode in (0, 1), err
    assert leftovers(admin) == []
    # a run killed while it holds credentials, resumed under the same identity
    emu.client().set_faults(exec_stall=[{"path": "/namespaces/team-b/", "seconds": 600}])
    args = ["scan", *common, "--namespaces", "team-a,team-b", "--run-id", "again", "--out", str(tmp_path / "again")]
    killed = cli(args, prefect_api)
    deadline = time.monotonic() + 120
    while not [x for x in leftovers(admin) if x.startswith("team-b/")] and time.monotonic() < deadline:
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    emu.client().clear_faults()
    assert leftovers(admin)  # what the killed run held
    resumed = cli(args, prefect_api)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode in (0, 1), err
    assert leftovers(admin) == []  # the resumed run took its own leftovers back and released them
    # gc under the orchestrator's identity, once a killed run's objects expire
    killed_run = NamespaceCredentials(admin, "team-a", "dead", grants(["web-1"]))
    killed_run.__enter__()
    emu.client().advance_clock(900 + 300 + 60)
    gc = subprocess.run([*FLEETSCAN, "gc", "--kubeconfig", str(kc)], capture_output=True, text=True, timeout=120)
    assert gc.returncode == 0 and "3 expired object(s) removed" in gc.stderr, gc.stderr
    assert leftovers(admin) == []


def test_namespaced_rbac_scans_the_namespaces_it_names(prefect_api: str, emu: Emulator, tmp_path: Path) -> None:
    """For teams that grant no ClusterRole: Roles in the named namespaces only."""
    kc = orchestrator(emu, tmp_path, orchestrator_manifests(["team-a"]))
    run = cli(["scan", "--kubeconfig", str(kc), "--quiet", "--namespaces", "team-a", "--approach", "exec",
               "--out", str(tmp_path / "ns")], prefect_api)  # fmt: skip
    _, err = run.communicate(timeout=300)
    assert run.returncode in (0, 1, 2), err
    summary = yaml.safe_load((tmp_path / "ns" / "summary.json").read_text())
    outcomes = {t["pod"]: t["outcome"] for t in summary["targets"]}
    assert outcomes["web-1"] in ("passed", "failed") and outcomes["web-2"] in ("passed", "failed")
    gc = subprocess.run(
        [*FLEETSCAN, "gc", "--kubeconfig", str(kc), "--namespaces", "team-a"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert gc.returncode == 0, gc.stderr
    other = cli(["scan", "--kubeconfig", str(kc), "--quiet", "--namespaces", "team-b", "--out", str(tmp_path / "b")],
                prefect_api)  # fmt: skip
    _, err = other.communicate(timeout=300)
    assert other.returncode == 2 and "403" in err  # nothing granted there


# -- and no path to more --------------------------------------------------------------------------------
def test_it_mints_tokens_only_for_its_own_slots(emu: Emulator, tmp_path: Path) -> None:
    admin = admin_kube(emu, tmp_path)
    admin.core.create_namespaced_service_account("kube-system", {"metadata": {"name": "root-sa"}})
    admin.rbac.create_cluster_role_binding(
        {
            "metadata": {"name": "root-sa"},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "root-sa", "namespace": "kube-system"}],
        }
    )
    kubectl = make_kubectl(emu, tmp_path)
    kubectl.kubeconfig = orchestrator(emu, tmp_path)
    for namespace, account in (("kube-system", "root-sa"), ("team-a", "default")):
        denied = kubectl("create", "token", account, "-n", namespace)
        assert denied.returncode != 0 and b"forbidden" in denied.stderr.lower(), (account, denied.stderr)
    with NamespaceCredentials(admin, "team-a", "mine", grants(["web-1"])) as creds:
        assert creds.name in slot_names()
        minted = kubectl("create", "token", creds.name, "-n", "team-a")
        assert minted.returncode == 0, minted.stderr  # its own slot: yes


def test_it_cannot_touch_other_teams_objects_read_secrets_or_create_pods(emu: Emulator, tmp_path: Path) -> None:
    admin = admin_kube(emu, tmp_path)
    admin.core.create_namespaced_service_account("team-a", {"metadata": {"name": "team-sa"}})
    admin.rbac.create_namespaced_role(
        "team-a",
        {"metadata": {"name": "team-role"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
    )
    admin.rbac.create_namespaced_role_binding(
        "team-a",
        {
            "metadata": {"name": "team-rb"},
            "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "team-role"},
            "subjects": [{"kind": "ServiceAccount", "name": "team-sa", "namespace": "team-a"}],
        },
    )
    admin.core.create_namespaced_secret("team-a", {"metadata": {"name": "db"}, "stringData": {"password": "hunter2"}})
    orch = Kube.from_kubeconfig(str(orchestrator(emu, tmp_path)))
    patch = {"metadata": {"labels": {"stolen": "yes"}}}
    attempts = {
        "patch serviceaccount": lambda: orch.core.patch_namespaced_service_account("team-sa", "team-a", patch),
        "delete serviceaccount": lambda: orch.core.delete_namespaced_service_account("team-sa", "team-a"),
        "patch role": lambda: orch.rbac.patch_namespaced_role("team-role", "team-a", patch),
        "delete role": lambda: orch.rbac.delete_namespaced_role("team-role", "team-a"),
        "patch rolebinding": lambda: orch.rbac.patch_namespaced_role_binding("team-rb", "team-a", patch),
        "delete rolebinding": lambda: orch.rbac.delete_namespaced_role_binding("team-rb", "team-a"),
        "read a secret": lambda: orch.core.read_namespaced_secret("db", "team-a"),
        "list secrets": lambda: orch.core.list_namespaced_secret("team-a"),
        "create a pod": lambda: orch.core.create_namespaced_pod(
            "team-a", {"metadata": {"name": "evil"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
        ),
    }
    for what, attempt in attempts.items():
        with pytest.raises(Forbidden):
            attempt()
        assert what  # each attempt was refused
    assert admin.core.read_namespaced_service_account("team-sa", "team-a").metadata.labels is None


def test_it_adopts_nothing_it_did_not_make(emu: Emulator, tmp_path: Path) -> None:
    """A slot name taken by someone else's ServiceAccount: that namespace fails with an error naming
    it, the object stays as it was, and the rest of the run goes on."""
    admin = admin_kube(emu, tmp_path)
    admin.core.create_namespaced_service_account("team-b", {"metadata": {"name": "fleetscan-scan-0"}})
    orch = Kube.from_kubeconfig(str(orchestrator(emu, tmp_path)))
    records = scan_records(
        orch, tmp_path, ScanParams(namespaces=["team-a", "team-b"], approach="exec"), ["web-1", "lonely"]
    )
    by_pod = {r.pod: r for r in records}
    assert by_pod["web-1"].outcome in ("passed", "failed")
    assert by_pod["lonely"].outcome == "error"
    assert 'serviceaccount "team-b/fleetscan-scan-0" exists but fleetscan did not make it' in by_pod["lonely"].reason
    squatter = admin.core.read_namespaced_service_account("fleetscan-scan-0", "team-b")
    assert squatter.metadata.labels is None  # untouched
    assert leftovers(admin) == []


def test_a_foreign_role_on_a_free_slot_is_left_alone_with_everything_else(emu: Emulator, tmp_path: Path) -> None:
    """The ServiceAccount name is free but a Role of that name is someone else's: the claim fails
    naming the Role, which stays; what the run did make is removed."""
    admin = admin_kube(emu, tmp_path)
    squat = {
        "metadata": {"name": "fleetscan-scan-0"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
    }
    admin.rbac.create_namespaced_role("team-a", squat)
    orch = Kube.from_kubeconfig(str(orchestrator(emu, tmp_path)))
    with pytest.raises(ForeignObject, match='role "team-a/fleetscan-scan-0" exists and is not this run'):
        NamespaceCredentials(orch, "team-a", "run-1", grants(["web-1"])).__enter__()
    assert admin.rbac.read_namespaced_role("fleetscan-scan-0", "team-a").metadata.labels is None  # still there
    assert leftovers(admin) == []  # its own ServiceAccount is gone


def test_the_slot_pool_full_then_an_expired_slot_taken_over(emu: Emulator, tmp_path: Path) -> None:
    admin = admin_kube(emu, tmp_path)
    orch = Kube.from_kubeconfig(str(orchestrator(emu, tmp_path)))
    held = [NamespaceCredentials(orch, "team-a", f"live-{i}", grants(["web-1"])).__enter__() for i in range(8)]
    assert sorted(c.name for c in held) == slot_names()
    with pytest.raises(ForeignObject, match='namespace "team-a": all 8 scan slots are held by live runs'):
        NamespaceCredentials(orch, "team-a", "ninth", grants(["web-1"])).__enter__()
    old_token = held[0].token()
    # the other runs end; slot 0's run dies and its objects expire
    for c in held[1:]:
        c.revoke()
    emu.client().advance_clock(900 + 300 + 60)
    with NamespaceCredentials(orch, "team-a", "next", grants(["web-2"])) as creds:
        assert creds.name == "fleetscan-scan-0"  # the expired slot, taken over
        dead = Kube.from_kubeconfig(str(emu.write_kubeconfig(tmp_path / "dead.kc", old_token)))
        with pytest.raises(Unauthorized):  # the dead run's token died with its ServiceAccount
            dead.core.read_namespaced_pod("web-1", "team-a")
    assert leftovers(admin) == []


def test_concurrent_runs_in_one_namespace_get_separate_slots(emu: Emulator, tmp_path: Path) -> None:
    """Two runs at once in team-a: each claims its own slot, and its token execs only into its pods."""
    emu.client().set_faults(latency=[{"path": "/exec$", "seconds": 0.5}])
    orch = Kube.from_kubeconfig(str(orchestrator(emu, tmp_path)))
    results: dict[str, list[Any]] = {}

    def run(run_id: str, pod: str) -> None:
        params = ScanParams(namespaces=["team-a"], approach="exec", run_id=run_id)
        results[run_id] = scan_records(orch, tmp_path / run_id, params, [pod])

    threads = [threading.Thread(target=run, args=a) for a in (("first", "web-1"), ("second", "web-2"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    emu.client().clear_faults()
    assert all(r.outcome in ("passed", "failed") for rs in results.values() for r in rs)
    execs = [a for a in emu.client().audit(subresource="exec") if a["user"].startswith("system:serviceaccount:team-a")]
    by_account: dict[str, set[str]] = {}
    for entry in execs:
        by_account.setdefault(entry["user"], set()).add(entry["name"])
    assert len(by_account) == 2, by_account  # two slots
    assert sorted(by_account.values(), key=sorted) == [{"web-1"}, {"web-2"}]  # each into its own pod only
    assert all(entry["allowed"] for entry in execs)


def test_escalation_through_the_slots_is_refused(emu: Emulator, tmp_path: Path) -> None:
    """RBAC's own escalation check: a stolen orchestrator credential cannot grant its slot more than
    it holds (no cluster-admin binding, no secrets)."""
    orch = Kube.from_kubeconfig(str(orchestrator(emu, tmp_path)))
    orch.core.create_namespaced_service_account("team-a", {"metadata": {"name": "fleetscan-scan-5"}})
    with pytest.raises(Forbidden):
        orch.rbac.create_namespaced_role_binding(
            "team-a",
            {
                "metadata": {"name": "fleetscan-scan-5"},
                "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "ServiceAccount", "name": "fleetscan-scan-5", "namespace": "team-a"}],
            },
        )
    with pytest.raises(Forbidden):
        orch.rbac.create_namespaced_role(
            "team-a",
            {
                "metadata": {"name": "fleetscan-scan-5"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
            },
        )


def test_the_admission_policy_recipe_is_a_valid_manifest(emu: Emulator, tmp_path: Path) -> None:
    kubectl = make_kubectl(emu, tmp_path)
    path = ROOT / "deployments" / "rbac" / "admission-policy.yaml"
    checked = kubectl("apply", "--dry-run=client", "-f", str(path))
    assert checked.returncode == 0, checked.stderr
    policy, binding = yaml.safe_load_all(path.read_text())
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]


def _policy_denials(obj: dict[str, Any], user: str = "system:serviceaccount:fleetscan:fleetscan") -> list[str]:
    """The messages of the admission policy's validations that `obj` fails, evaluated with
    cel-python as the API server would for a CREATE by `user` (none when it does not match)."""
    import celpy

    policy = next(yaml.safe_load_all((ROOT / "deployments" / "rbac" / "admission-policy.yaml").read_text()))
    resource = {"ServiceAccount": "serviceaccounts", "Role": "roles", "RoleBinding": "rolebindings"}[obj["kind"]]
    env = celpy.Environment()
    activation = {
        "object": celpy.json_to_cel(obj),
        "request": celpy.json_to_cel({"userInfo": {"username": user}, "resource": {"resource": resource}}),
    }

    def holds(expression: str) -> bool:
        return bool(env.program(env.compile(expression)).evaluate(activation))

    if not all(holds(c["expression"]) for c in policy["spec"]["matchConditions"]):
        return []
    return [v["message"] for v in policy["spec"]["validations"] if not holds(v["expression"])]


def test_the_admission_policy_admits_every_slot_fleetscan_makes_and_nothing_else() -> None:
    from fleetscan.access import REGISTRY
    from fleetscan.kube.credentials import manifests

    rules = [rule for approach in REGISTRY.values() for rule in approach.rules(["web-1", "api-0"])]
    made = [doc for name in slot_names() for doc in manifests("team-a", "run-1", rules, name=name)]
    assert made and all(_policy_denials(doc) == [] for doc in made)  # whatever way in a run needs
    policy = (ROOT / "deployments" / "rbac" / "admission-policy.yaml").read_text()
    assert "fleetscan-scan-[0-7]" in policy and len(slot_names()) == 8  # its names are the slots

    sa, role, binding = manifests("team-a", "run-1", rules)
    thefts: dict[str, dict[str, Any]] = {
        "another name": dict(sa, metadata=dict(sa["metadata"], name="ci-deployer")),
        "no labels": dict(sa, metadata={"name": "fleetscan-scan-0", "namespace": "team-a"}),
        "a token mounted into pods": dict(sa, automountServiceAccountToken=True),
        "a binding to another account": dict(
            binding, subjects=[{"kind": "ServiceAccount", "name": "default", "namespace": "team-a"}]
        ),
        "a binding to a ClusterRole": dict(binding, roleRef=dict(binding["roleRef"], kind="ClusterRole", name="edit")),
        "a role on every pod": dict(role, rules=[{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}]),
        "a role on secrets": dict(
            role, rules=[{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["db"]}]
        ),
    }
    for what, obj in thefts.items():
        assert _policy_denials(obj), what
    assert (
        _policy_denials(thefts["another name"], user="system:serviceaccount:team-a:deployer") == []
    )  # others: untouched
