"""Credentials and the three ways into a container, against the emulator over HTTPS."""

from __future__ import annotations

import stat
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from fleetscan.access import AccessSettings, chosen
from fleetscan.access.debug import DebugTransport
from fleetscan.access.exec import ExecTransport, NoShell
from fleetscan.access.sidecar import SidecarTransport
from fleetscan.emulator.scenario import parse_scenario
from fleetscan.emulator.server import Emulator
from fleetscan.errors import (
    ApproachUnavailable,
    BinaryNotFound,
    ExecTimeout,
    Forbidden,
    KubeError,
    NotFound,
    ServerError,
    StreamDropped,
)
from fleetscan.kube.client import Kube
from fleetscan.kube.credentials import MANAGED_BY, CredentialSettings, NamespaceCredentials, collect_garbage
from fleetscan.kube.discovery import Selection, discover
from fleetscan.kube.execstream import run_in
from fleetscan.kube.targets import Target

from .conftest import DATA, make_kubectl
from .kube_helpers import admin_kube, grants, open_way_in, read

ALPINE = b'PRETTY_NAME="Alpine Linux v3.20"'


@pytest.fixture()
def access() -> Iterator[Emulator]:
    with Emulator(parse_scenario((DATA / "access.yaml").read_text(), "access.yaml")) as emu:
        yield emu


@pytest.fixture()
def kube(access: Emulator, tmp_path: Path) -> Kube:
    return admin_kube(access, tmp_path)


def targets(kube: Kube, namespace: str = "team-a") -> dict[str, Target]:
    return {t.pod: t for t in discover(kube, Selection(namespaces=(namespace,))).targets}


def leftovers(kube: Kube) -> list[str]:
    selector = f"{MANAGED_BY}=fleetscan"
    found = [
        sa.metadata.name for sa in kube.core.list_service_account_for_all_namespaces(label_selector=selector).items
    ]
    found += [r.metadata.name for r in kube.rbac.list_role_for_all_namespaces(label_selector=selector).items]
    found += [b.metadata.name for b in kube.rbac.list_role_binding_for_all_namespaces(label_selector=selector).items]
    return found


def test_scan_token_reaches_named_pods_and_nothing_else(access: Emulator, kube: Kube) -> None:
    t = targets(kube)
    handle = access.client()
    with NamespaceCredentials(kube, "team-a", "run1", grants(["web-aaaaa", "api-0"], ["api-0"])) as creds:
        scan = creds.scan_client()
        user = f"system:serviceaccount:team-a:{creds.name}"
        handle.clear_audit()
        assert ALPINE in read(ExecTransport(scan, t["web-aaaaa"]), "/etc/os-release")
        debug = DebugTransport(scan, t["api-0"], "fleetscan/debug:1.0")
        debug.prepare()
        assert b"PRETTY_NAME=Distroless" in read(debug, "/etc/os-release")
        granted = {"web-aaaaa", "api-0"}
        for call in handle.audit(user=user):  # the scan made no request outside its grant
            assert call["allowed"] and call["namespace"] == "team-a" and call["name"] in granted, call
            assert call["resource"] == "pods" and call["subresource"] in ("", "exec", "ephemeralcontainers")
        probes = {
            "unnamed pod": lambda: ExecTransport(scan, t["web-bbbbb"]).run(["true"]),
            "other namespace": lambda: run_in(scan, "team-b", "lonely", "main", ["true"]),
            "list secrets": lambda: scan.core.list_namespaced_secret("team-a"),
            "create pods": lambda: scan.core.create_namespaced_pod(
                "team-a", {"metadata": {"name": "evil"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
            ),
            "debug on an exec-only pod": lambda: DebugTransport(scan, t["web-aaaaa"]).prepare(),
        }
        for what, probe in probes.items():
            with pytest.raises(Exception) as err:
                probe()
            assert getattr(err.value, "status", None) == 403, what
            if isinstance(err.value, KubeError):
                assert not err.value.retryable and "lacks this permission" in str(err.value), what
    assert leftovers(kube) == []


def test_all_three_approaches_read_the_target_file(kube: Kube, tmp_path: Path) -> None:
    """auto through the one scan path: exec where there is a shell, the sidecar where the pod has
    one, else a debug container; each reads the target's own files."""
    from fleetscan.settings import ScanParams

    from .pipeline_helpers import scan_records

    pods = ["web-aaaaa", "api-0", "api-nonroot", "guarded"]
    records = scan_records(kube, tmp_path, ScanParams(namespaces=["team-a"], debug_image="fleetscan/debug:1.0"), pods)
    assert {r.pod: r.approach for r in records} == {
        "web-aaaaa": "exec",
        "api-0": "debug",
        "api-nonroot": "debug",
        "guarded": "sidecar",
    }
    t = targets(kube)
    approach = {r.pod: r.approach for r in records}
    with NamespaceCredentials(kube, "team-a", "run2", grants(pods, ["api-0", "api-nonroot"])) as creds:
        scan = creds.scan_client()
        contents = {p: read(open_way_in(scan, t[p], approach[p]), "/etc/os-release") for p in pods}
    assert ALPINE in contents["web-aaaaa"]
    assert all(b"PRETTY_NAME=Distroless" in contents[p] for p in ("api-0", "api-nonroot", "guarded"))


def test_debug_container_matches_a_non_root_target_and_is_reused(kube: Kube) -> None:
    t = targets(kube)["api-nonroot"]
    with NamespaceCredentials(kube, "team-a", "run3", grants(["api-nonroot"], ["api-nonroot"])) as creds:
        first = DebugTransport(creds.scan_client(), t, "fleetscan/debug:1.0")
        first.prepare()
        assert first.created and read(first, "/app/version") == b"api 1.0\n"
        uid = first.run(["id", "-u"])
        assert uid.stdout == b"65532\n"
    with NamespaceCredentials(kube, "team-a", "run4", grants(["api-nonroot"], ["api-nonroot"])) as creds:
        again = DebugTransport(creds.scan_client(), t, "fleetscan/debug:1.0")
        again.prepare()
        assert not again.created and read(again, "/app/version") == b"api 1.0\n"
    pod = kube.core.read_namespaced_pod("api-nonroot", "team-a")
    assert [e.name for e in pod.spec.ephemeral_containers] == [first.name]


def test_forced_approach_that_cannot_work_is_an_error(kube: Kube) -> None:
    t = targets(kube)
    forced, is_forced = chosen(t["api-0"], AccessSettings(approach="exec"))
    assert [a.name for a in forced] == ["exec"] and is_forced
    with NamespaceCredentials(kube, "team-a", "run5", grants(["api-0", "web-aaaaa"])) as creds:
        scan = creds.scan_client()
        with pytest.raises(NoShell, match="needs a shell"):
            ExecTransport(scan, t["api-0"]).run(["sh", "-s"], stdin=b"true")
        with pytest.raises(ApproachUnavailable, match="no scanner sidecar"):
            SidecarTransport(scan, t["web-aaaaa"])
    debug = next(a for a in chosen(t["api-0"], AccessSettings())[0] if a.name == "debug")
    reason = debug.unavailable(t["api-0"], AccessSettings(allow_debug=False), forced=False)
    assert reason is not None and "debug containers are not allowed" in reason


def test_token_expiry_mid_namespace_leads_to_a_refresh(access: Emulator, kube: Kube) -> None:
    t = targets(kube)["web-aaaaa"]
    with NamespaceCredentials(kube, "team-a", "run6", grants(["web-aaaaa"])) as creds:
        transport = ExecTransport(creds.scan_client(), t)
        assert transport.run(["true"]).exit_code == 0
        access.client().advance_clock(901)  # the 900 s token is now expired on the server
        assert transport.run(["true"]).exit_code == 0
        assert creds.refreshes == 2
        assert creds.scan_client().core.read_namespaced_pod("web-aaaaa", "team-a").metadata.name == "web-aaaaa"


def expiry(kube: Kube, name: str) -> datetime:
    stamp = kube.core.read_namespaced_service_account(name, "team-a").metadata.annotations["fleetscan.io/expires-at"]
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def test_long_namespaces_refresh_before_expiry_and_stay_out_of_gc(kube: Kube) -> None:
    t = targets(kube)["web-aaaaa"]
    eager = CredentialSettings(refresh_after=0.0)  # every use counts as "most of its life is gone"
    with NamespaceCredentials(kube, "team-a", "long", grants(["web-aaaaa"]), settings=eager) as creds:
        created = expiry(kube, creds.name)
        time.sleep(1.1)  # the annotation has second precision
        assert ExecTransport(creds.scan_client(), t).run(["true"]).exit_code == 0
        assert creds.refreshes >= 2  # refreshed before use, not after a failure
        assert expiry(kube, creds.name) > created
        # a gc between the first expiry and the extended one leaves the live run alone
        assert collect_garbage(kube, now=created) == []


def test_cleanup_when_scanning_raises(kube: Kube) -> None:
    with pytest.raises(RuntimeError, match="boom"), NamespaceCredentials(kube, "team-a", "run7", grants(["web-aaaaa"])):
        assert leftovers(kube) == ["fleetscan-scan-0"] * 3
        raise RuntimeError("boom")
    assert leftovers(kube) == []


def test_gc_removes_a_killed_runs_objects(access: Emulator, kube: Kube, tmp_path: Path) -> None:
    expired = NamespaceCredentials(
        kube, "team-a", "killed", grants(["web-aaaaa"]), settings=CredentialSettings(expiry_grace_seconds=-2000)
    )
    expired.__enter__()  # never left: the process "died" here
    live = NamespaceCredentials(kube, "team-b", "running", grants(["lonely"]))
    live.__enter__()
    try:
        kubeconfig = access.write_kubeconfig(tmp_path / "gc.kubeconfig")
        out = subprocess.run(
            [".venv/bin/fleetscan", "gc", "--kubeconfig", str(kubeconfig)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert sorted(out.stdout.split("\n")[:3]) == [
            "deleted role/team-a/fleetscan-scan-0",
            "deleted rolebinding/team-a/fleetscan-scan-0",
            "deleted serviceaccount/team-a/fleetscan-scan-0",
        ]
        assert sorted(leftovers(kube)) == ["fleetscan-scan-0"] * 3  # a live run's objects stay
        later = datetime.now(UTC) + timedelta(hours=1)
        assert len(collect_garbage(kube, now=later)) == 3
    finally:
        live.revoke()
    assert leftovers(kube) == []


def test_orchestrator_cluster_role_is_enough(access: Emulator, kube: Kube, tmp_path: Path) -> None:
    role, _ = yaml.safe_load_all(Path("deployments/rbac/orchestrator.yaml").read_text())
    kube.rbac.create_cluster_role(role)
    token = access.client().add_user("fleetscan-orchestrator")
    kube.rbac.create_cluster_role_binding(
        {
            "metadata": {"name": "test-orchestrator"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role["metadata"]["name"],
            },
            "subjects": [{"kind": "User", "name": "fleetscan-orchestrator"}],
        }
    )
    orchestrator = admin_kube(access, tmp_path, token)
    found = discover(orchestrator, Selection(namespaces=("team-a",)))
    t = {x.pod: x for x in found.targets}
    with NamespaceCredentials(orchestrator, "team-a", "orch", grants(["web-aaaaa", "guarded", "api-0"])) as creds:
        scan = creds.scan_client()
        assert ALPINE in read(open_way_in(scan, t["web-aaaaa"], "exec"), "/etc/os-release")
        assert b"Distroless" in read(open_way_in(scan, t["guarded"], "sidecar"), "/etc/os-release")
        creds.grant(grants([], ["api-0"]))  # learnt while scanning: no shell, no sidecar
        assert b"Distroless" in read(open_way_in(scan, t["api-0"], "debug"), "/etc/os-release")
    assert collect_garbage(orchestrator) == []
    with pytest.raises(Forbidden):  # the orchestrator itself cannot read secrets
        orchestrator.core.list_namespaced_secret("team-a")


def test_scan_kubeconfig_for_external_tools(access: Emulator, kube: Kube, tmp_path: Path) -> None:
    with NamespaceCredentials(kube, "team-a", "ext", grants(["web-aaaaa"])) as creds, creds.kubeconfig() as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        kubectl = make_kubectl(access, tmp_path)
        kubectl.kubeconfig = path
        assert kubectl("exec", "-n", "team-a", "web-aaaaa", "--", "true").returncode == 0
        denied = kubectl("exec", "-n", "team-a", "web-bbbbb", "--", "true")
        assert denied.returncode != 0 and b"forbidden" in denied.stderr.lower()
        saved = path
    assert not saved.exists() and not saved.parent.exists()


def test_exec_details(access: Emulator, kube: Kube) -> None:
    t = targets(kube)
    exec_t = ExecTransport(kube, t["web-aaaaa"])
    result = exec_t.run(["sh", "-c", "cat; echo err >&2; exit 4"], stdin=b"\x00\x01binary")
    assert (result.exit_code, result.stdout, result.stderr) == (4, b"\x00\x01binary", b"err\n")
    with pytest.raises(BinaryNotFound):
        ExecTransport(kube, t["api-0"]).run(["ls"])
    with pytest.raises(NoShell):  # no shell: `auto` moves on to the next way in
        ExecTransport(kube, t["api-0"]).run(["sh"])
    with pytest.raises(ExecTimeout, match="timed out after 1 s") as timeout:
        exec_t.run(["sleep", "30"], timeout=1)
    assert not timeout.value.retryable  # a container that hangs once hangs again: no retries
    access.client().set_faults(exec_drop_after_bytes=100)
    with pytest.raises(StreamDropped) as dropped:
        exec_t.run(["cat", "/bin/busybox"])
    assert dropped.value.retryable
    access.client().clear_faults()


def test_exec_from_many_threads(kube: Kube) -> None:
    """Each thread gets its own ApiClient for streams, while REST calls go on beside them."""
    t = targets(kube)
    pods = ["web-aaaaa", "web-bbbbb", "web-ccccc"]

    def work(i: int) -> bytes:
        pod = pods[i % 3]
        kube.core.read_namespaced_pod(pod, "team-a")
        return ExecTransport(kube, t[pod]).run(["echo", str(i)]).stdout

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(work, range(48))) == [f"{i}\n".encode() for i in range(48)]


def test_api_errors_are_classified(access: Emulator, kube: Kube) -> None:
    """Every call of the client is classified once, into typed errors that say what failed."""
    access.client().set_faults(errors=[{"path": "/namespaces/team-a/pods$", "code": 500}])
    with pytest.raises(ServerError) as failed:  # tried again by the one retry policy, then given up
        kube.core.list_namespaced_pod("team-a")
    access.client().clear_faults()
    assert failed.value.status == 500 and failed.value.retryable
    assert 'list pod in namespace "team-a": 500' in str(failed.value)
    with pytest.raises(NotFound) as missing:
        kube.core.read_namespaced_pod("missing", "team-a")
    assert missing.value.status == 404 and not missing.value.retryable
    assert 'read pod "missing" in namespace "team-a": 404 pods "missing" not found' in str(missing.value)


def test_throttled_exec_is_retryable(access: Emulator, kube: Kube) -> None:
    access.client().set_faults(errors=[{"path": "/exec$", "code": 429}])
    with pytest.raises(KubeError) as err:
        ExecTransport(kube, targets(kube)["web-aaaaa"]).run(["true"])
    access.client().clear_faults()
    assert err.value.status == 429 and err.value.retryable and "throttling" in str(err.value)


def test_client_side_rate_limit() -> None:
    from fleetscan.kube.client import RateLimiter

    limiter = RateLimiter(qps=20, burst=2)
    for _ in range(6):
        limiter.acquire()
    assert limiter.waited >= 0.15  # the burst of 2 is free, the other 4 wait about 1/20 s each


def test_bad_kubeconfig_is_a_usage_error(tmp_path: Path, access: Emulator) -> None:
    from fleetscan.errors import UsageError

    with pytest.raises(UsageError, match="cannot load"):
        Kube.from_kubeconfig(str(tmp_path / "missing"))
    path = access.write_kubeconfig(tmp_path / "kc")
    with pytest.raises(UsageError, match="context 'nope'"):
        Kube.from_kubeconfig(str(path), "nope")


def test_lists_are_paginated(tmp_path: Path) -> None:
    """1,200 pods in one namespace, 500 a page: three LISTs, every pod found."""
    from fleetscan.kube.client import ClientSettings

    scenario = "scale:\n  namespaces: 1\n  pods_per_namespace: 1200\n  containers_per_pod: 1\n  image: busybox\n"
    with Emulator(parse_scenario(scenario, "scale.yaml")) as emu:
        path = emu.write_kubeconfig(tmp_path / "kc")
        kube = Kube.from_kubeconfig(str(path), settings=ClientSettings(qps=1000, burst=1000, page_size=500))
        emu.client().clear_audit()
        found = discover(kube, Selection(namespaces=("scale-000",)))
        lists = emu.client().audit(verb="list", resource="pods", namespace="scale-000")
    assert len(found.targets) == 1200 and len({t.pod for t in found.targets}) == 1200
    assert len(lists) == 3


def test_a_stalled_api_server_is_a_clear_retryable_error(access: Emulator, tmp_path: Path) -> None:
    from fleetscan.errors import Unreachable
    from fleetscan.kube.client import ClientSettings
    from fleetscan.retry import RetryPolicy

    settings = ClientSettings(request_timeout=1.0, retry=RetryPolicy(retries=1, base_seconds=0.1))
    kube = Kube.from_kubeconfig(str(access.write_kubeconfig(tmp_path / "kc")), settings=settings)
    access.client().set_faults(latency=[{"path": "/namespaces/team-a/pods$", "seconds": 60}])
    started = time.monotonic()
    try:
        with pytest.raises(Unreachable, match="did not answer within the request timeout") as err:
            discover(kube, Selection(namespaces=("team-a",)))
    finally:
        access.client().clear_faults()
    assert err.value.retryable and time.monotonic() - started < 10  # two tries of a second, not a hang


def test_a_stalled_namespace_ends_with_error_records_while_the_rest_is_scanned(
    access: Emulator, tmp_path: Path
) -> None:
    from fleetscan.settings import ScanParams

    from .pipeline_helpers import scan_records

    kube = Kube.from_kubeconfig(str(access.write_kubeconfig(tmp_path / "kc")))
    stalled = Kube(kube.configuration, replace_settings(request_timeout=1.0))
    access.client().set_faults(
        latency=[{"path": "/namespaces/team-b/serviceaccounts$", "seconds": 60, "method": "POST"}]
    )
    try:
        params = ScanParams(namespaces=["team-a", "team-b"], retries=0, approach="exec")
        records = scan_records(stalled, tmp_path, params, ["web-aaaaa", "lonely"])
    finally:
        access.client().clear_faults()
    by_pod = {r.key: r for r in records}
    assert by_pod["team-a/web-aaaaa/web"].outcome in ("passed", "failed")
    for key in ("team-b/lonely/main", "team-b/lonely/helper"):
        assert by_pod[key].outcome == "error" and "did not answer within the request timeout" in by_pod[key].reason


def replace_settings(**changes: object) -> object:
    from dataclasses import replace

    from fleetscan.kube.client import ClientSettings
    from fleetscan.retry import RetryPolicy

    return replace(ClientSettings(retry=RetryPolicy(retries=0)), **changes)


SHARED = """
images:
  acme/api:1.0: {base: distroless, files: {/app/version: {content: "api 1.0\\n", mode: "0644"}}}
  acme/worker:1.0: {base: distroless, files: {/app/version: {content: "worker 1.0\\n", mode: "0644"}}}
namespaces:
  - name: team-c
    pods:
      - name: shared
        shareProcessNamespace: true
        containers: [{name: api, image: "acme/api:1.0"}, {name: worker, image: "acme/worker:1.0"}]
      - name: apart
        containers: [{name: api, image: "acme/api:1.0"}, {name: worker, image: "acme/worker:1.0"}]
"""


def test_one_debug_container_serves_a_pod_that_shares_its_process_namespace(tmp_path: Path) -> None:
    """In a shared process namespace one debug container scans every container (found by cgroup),
    in two execs each; elsewhere one per container, one exec each (plus, once per image and run, the
    exec that finds it has no shell). The verdicts are the same."""
    from fleetscan.settings import ScanParams

    from .pipeline_helpers import scan_records

    with Emulator(parse_scenario(SHARED, "shared.yaml")) as emu:
        kube = admin_kube(emu, tmp_path)
        # one at a time: apart/api, shared/api, apart/worker, shared/worker (nodes in turn)
        params = ScanParams(namespaces=["team-c"], debug_image="fleetscan/debug:1.0", concurrency=1)
        records = scan_records(kube, tmp_path, params)
        by_key = {r.key: r for r in records}
        assert {r.approach for r in records} == {"debug"}
        ephemeral = {
            p: [e.name for e in kube.core.read_namespaced_pod(p, "team-c").spec.ephemeral_containers or []]
            for p in ("shared", "apart")
        }
        assert len(ephemeral["shared"]) == 1 and len(ephemeral["apart"]) == 2, ephemeral
        calls = {k: r.exec_calls for k, r in by_key.items()}
        assert calls == {
            "team-c/apart/api": 2,  # no shell, then the scan
            "team-c/shared/api": 2,  # the image is known to have no shell: locate, then the scan
            "team-c/apart/worker": 2,
            "team-c/shared/worker": 2,
        }, calls
        for c in ("api", "worker"):  # the same verdict, whichever pod the image runs in
            shared, apart = by_key[f"team-c/shared/{c}"], by_key[f"team-c/apart/{c}"]
            assert (shared.outcome, shared.counts) == (apart.outcome, apart.counts), (shared, apart)
            assert shared.outcome in ("passed", "failed")
        t = {x.key: x for x in discover(kube, Selection(namespaces=("team-c",))).targets}
        with NamespaceCredentials(kube, "team-c", "look", grants(["shared"], ["shared"])) as creds:
            for c in ("api", "worker"):  # each scan read its own container's files
                debug = DebugTransport(creds.scan_client(), t[f"team-c/shared/{c}"], "fleetscan/debug:1.0")
                debug.prepare()
                assert not debug.created and read(debug, "/app/version") == f"{c} 1.0\n".encode()
