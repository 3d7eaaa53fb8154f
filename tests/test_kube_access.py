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
from kubernetes.client.exceptions import ApiException

from fleetscan.emulator.scenario import parse_scenario
from fleetscan.emulator.server import Emulator
from fleetscan.errors import ApproachUnavailable, BinaryNotFound, ExecTimeout, KubeError, StreamDropped
from fleetscan.kube.approach import ApproachSettings, connect, decide, ephemeral_containers_supported
from fleetscan.kube.client import Kube
from fleetscan.kube.credentials import MANAGED_BY, CredentialSettings, NamespaceCredentials, collect_garbage
from fleetscan.kube.discovery import Selection, discover
from fleetscan.kube.execstream import run_in
from fleetscan.kube.targets import Target
from fleetscan.kube.transports import DebugTransport, ExecTransport, SidecarTransport, has_shell

from .conftest import DATA, make_kubectl
from .kube_helpers import admin_kube, read

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
    with NamespaceCredentials(kube, "team-a", "run1", ["web-aaaaa", "api-0"], ["api-0"]) as creds:
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


def test_all_three_approaches_read_the_target_file(kube: Kube) -> None:
    t = targets(kube)
    settings = ApproachSettings(debug_image="fleetscan/debug:1.0")
    pods = ["web-aaaaa", "api-0", "api-nonroot", "guarded"]
    with NamespaceCredentials(kube, "team-a", "run2", pods, ["api-0", "api-nonroot"]) as creds:
        scan = creds.scan_client()
        supported = ephemeral_containers_supported(kube)
        chosen = {p: decide(t[p], settings, lambda p=p: has_shell(scan, t[p]), supported).approach for p in pods}
        assert chosen == {"web-aaaaa": "exec", "api-0": "debug", "api-nonroot": "debug", "guarded": "sidecar"}
        contents = {p: read(connect(scan, t[p], chosen[p], settings), "/etc/os-release") for p in pods}
    assert ALPINE in contents["web-aaaaa"]
    assert all(b"PRETTY_NAME=Distroless" in contents[p] for p in ("api-0", "api-nonroot", "guarded"))


def test_debug_container_matches_a_non_root_target_and_is_reused(kube: Kube) -> None:
    t = targets(kube)["api-nonroot"]
    with NamespaceCredentials(kube, "team-a", "run3", ["api-nonroot"], ["api-nonroot"]) as creds:
        first = DebugTransport(creds.scan_client(), t, "fleetscan/debug:1.0")
        first.prepare()
        assert first.created and read(first, "/app/version") == b"api 1.0\n"
        uid = first.run(["id", "-u"])
        assert uid.stdout == b"65532\n"
    with NamespaceCredentials(kube, "team-a", "run4", ["api-nonroot"], ["api-nonroot"]) as creds:
        again = DebugTransport(creds.scan_client(), t, "fleetscan/debug:1.0")
        again.prepare()
        assert not again.created and read(again, "/app/version") == b"api 1.0\n"
    pod = kube.core.read_namespaced_pod("api-nonroot", "team-a")
    assert [e.name for e in pod.spec.ephemeral_containers] == [first.name]


def test_forced_approach_that_cannot_work_is_an_error(kube: Kube) -> None:
    t = targets(kube)
    with NamespaceCredentials(kube, "team-a", "run5", ["api-0", "web-aaaaa"]) as creds:
        scan = creds.scan_client()
        decision = decide(t["api-0"], ApproachSettings(approach="exec"), lambda: False, True)
        assert decision.approach == "exec" and decision.forced
        with pytest.raises(ApproachUnavailable, match="needs a shell"):
            connect(scan, t["api-0"], "exec", ApproachSettings())
        with pytest.raises(ApproachUnavailable, match="no scanner sidecar"):
            SidecarTransport(scan, t["web-aaaaa"])
    skip = decide(t["api-0"], ApproachSettings(allow_debug=False), lambda: False, True)
    assert skip.approach is None and "debug containers are not allowed" in skip.reason


def test_token_expiry_mid_namespace_leads_to_a_refresh(access: Emulator, kube: Kube) -> None:
    t = targets(kube)["web-aaaaa"]
    with NamespaceCredentials(kube, "team-a", "run6", ["web-aaaaa"]) as creds:
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
    with NamespaceCredentials(kube, "team-a", "long", ["web-aaaaa"], settings=eager) as creds:
        created = expiry(kube, creds.name)
        time.sleep(1.1)  # the annotation has second precision
        assert ExecTransport(creds.scan_client(), t).run(["true"]).exit_code == 0
        assert creds.refreshes >= 2  # refreshed before use, not after a failure
        assert expiry(kube, creds.name) > created
        # a gc between the first expiry and the extended one leaves the live run alone
        assert collect_garbage(kube, now=created) == []


def test_cleanup_when_scanning_raises(kube: Kube) -> None:
    with pytest.raises(RuntimeError, match="boom"), NamespaceCredentials(kube, "team-a", "run7", ["web-aaaaa"]):
        assert leftovers(kube) == ["fleetscan-run7"] * 3
        raise RuntimeError("boom")
    assert leftovers(kube) == []


def test_gc_removes_a_killed_runs_objects(access: Emulator, kube: Kube, tmp_path: Path) -> None:
    expired = NamespaceCredentials(
        kube, "team-a", "killed", ["web-aaaaa"], settings=CredentialSettings(expiry_grace_seconds=-2000)
    )
    expired.__enter__()  # never left: the process "died" here
    live = NamespaceCredentials(kube, "team-b", "running", ["lonely"])
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
            "deleted role/team-a/fleetscan-killed",
            "deleted rolebinding/team-a/fleetscan-killed",
            "deleted serviceaccount/team-a/fleetscan-killed",
        ]
        assert sorted(leftovers(kube)) == ["fleetscan-running"] * 3  # a live run's objects stay
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
    settings = ApproachSettings(debug_image="fleetscan/debug:1.0")
    with NamespaceCredentials(orchestrator, "team-a", "orch", ["web-aaaaa", "guarded", "api-0"]) as creds:
        scan = creds.scan_client()
        assert ALPINE in read(connect(scan, t["web-aaaaa"], "exec", settings), "/etc/os-release")
        assert b"Distroless" in read(connect(scan, t["guarded"], "sidecar", settings), "/etc/os-release")
        creds.grant_debug(["api-0"])  # learnt while scanning: no shell, no sidecar
        assert b"Distroless" in read(connect(scan, t["api-0"], "debug", settings), "/etc/os-release")
    assert collect_garbage(orchestrator) == []
    with pytest.raises(ApiException) as err:  # the orchestrator itself cannot read secrets
        orchestrator.core.list_namespaced_secret("team-a")
    assert err.value.status == 403


def test_scan_kubeconfig_for_external_tools(access: Emulator, kube: Kube, tmp_path: Path) -> None:
    with NamespaceCredentials(kube, "team-a", "ext", ["web-aaaaa"]) as creds, creds.kubeconfig() as path:
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
        ExecTransport(kube, t["api-0"]).run(["sh"])
    with pytest.raises(ExecTimeout) as timeout:
        exec_t.run(["sleep", "30"], timeout=1)
    assert timeout.value.retryable
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
    from fleetscan.kube.failures import classify

    access.client().set_faults(errors=[{"path": "/namespaces/team-a/pods$", "code": 500}])
    with pytest.raises(ApiException) as failed:  # the client retries 5xx itself, then gives up
        kube.core.list_namespaced_pod("team-a")
    access.client().clear_faults()
    err = classify(failed.value, 'list pods in namespace "team-a"')
    assert isinstance(err, KubeError) and err.status == 500 and err.retryable
    with pytest.raises(ApiException) as missing:
        kube.core.read_namespaced_pod("missing", "team-a")
    err = classify(missing.value, 'read pod "team-a/missing"')
    assert isinstance(err, KubeError) and err.status == 404 and not err.retryable
    assert 'read pod "team-a/missing": 404 pods "missing" not found' in str(err)


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
