"""Faults for reliability tests: latency, injected errors, dropped exec streams, vanishing pods, audit counts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream
from websocket import WebSocketConnectionClosedException

from fleetscan.emulator.handle import EmulatorControlError
from fleetscan.emulator.server import Emulator

from .conftest import api_client
from .test_emulator_exec import run


def test_latency_applies_to_matching_routes_only(fresh_emulator: Emulator, tmp_path: Path) -> None:
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path))
    fresh_emulator.client().set_faults(latency=[{"path": r"/namespaces/alpha/pods$", "seconds": 2}])
    start = time.monotonic()
    core.list_namespaced_pod("alpha")
    slow = time.monotonic() - start
    start = time.monotonic()
    core.list_namespaced_pod("beta")
    fast = time.monotonic() - start
    assert slow >= 2 > fast  # the injected delay, on the matching route only


def raw_get(emu: Emulator, path: str) -> tuple[int, dict[str, str], dict]:
    import ssl
    import urllib.error
    import urllib.request

    req = urllib.request.Request(emu.url + path, headers={"Authorization": f"Bearer {emu.admin_token}"})
    try:
        with urllib.request.urlopen(req, context=ssl.create_default_context(cadata=emu.ca_pem.decode())) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def test_throttling_with_retry_after(fresh_emulator: Emulator, tmp_path: Path) -> None:
    fresh_emulator.client().set_faults(errors=[{"path": "/pods", "code": 429, "retry_after": 1, "count": 2}])
    for _ in range(2):
        code, headers, body = raw_get(fresh_emulator, "/api/v1/namespaces/alpha/pods")
        assert code == 429 and headers["Retry-After"] == "1" and body["reason"] == "TooManyRequests"
    assert raw_get(fresh_emulator, "/api/v1/namespaces/alpha/pods")[0] == 200  # the fault spent its count
    # The official client honours Retry-After by itself: two throttled answers are absorbed.
    fresh_emulator.client().set_faults(errors=[{"path": "/pods", "code": 429, "retry_after": 1, "count": 2}])
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path))
    assert len(core.list_namespaced_pod("alpha").items) == 2
    assert len(fresh_emulator.client().audit(resource="pods", namespace="alpha", code="429")) == 4


@pytest.mark.parametrize("code", [500, 503])
def test_errors_at_a_rate(fresh_emulator: Emulator, code: int) -> None:
    fresh_emulator.client().set_faults(errors=[{"path": "/pods", "code": code, "rate": 0.5, "method": "GET"}], seed=7)
    outcomes = [raw_get(fresh_emulator, "/api/v1/namespaces/alpha/pods")[0] for _ in range(40)]
    assert set(outcomes) == {200, code} and 8 <= outcomes.count(code) <= 32
    assert raw_get(fresh_emulator, "/api/v1/namespaces/alpha/serviceaccounts")[0] == 200  # other routes unaffected
    fresh_emulator.client().clear_faults()
    assert all(raw_get(fresh_emulator, "/api/v1/namespaces/alpha/pods")[0] == 200 for _ in range(10))


def test_exec_stream_dropped_after_n_bytes(fresh_emulator: Emulator, tmp_path: Path) -> None:
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path))
    fresh_emulator.client().set_faults(exec_drop_after_bytes=1000)
    ws = stream(
        core.connect_get_namespaced_pod_exec,
        "one",
        "alpha",
        command=["cat", "/bin/busybox"],
        stderr=True,
        stdout=True,
        stdin=False,
        tty=False,
        _preload_content=False,
        binary=True,
    )
    out, status = b"", b""
    deadline = time.monotonic() + 10
    with pytest.raises(WebSocketConnectionClosedException):
        while time.monotonic() < deadline:
            ws.update(timeout=1)
            out += ws.read_channel(1) or b""
            status += ws.read_channel(3) or b""
    out += ws.read_channel(1) or b""
    assert len(out) == 1000 and status == b""  # cut off mid-stream: no status frame ever arrives
    fresh_emulator.client().clear_faults()
    assert run(core, "alpha", "one", ["true"])[0]["status"] == "Success"


def test_deleted_pod_is_gone_with_its_processes(fresh_emulator: Emulator, tmp_path: Path) -> None:
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path))
    assert fresh_emulator.cluster is not None
    pod = core.read_namespaced_pod("two", "alpha")
    ctr = fresh_emulator.cluster.pods.container(pod.to_dict() | {"metadata": {"uid": pod.metadata.uid}}, "main")
    assert ctr is not None and ctr.alive
    fresh_emulator.client().delete_pod("alpha", "two")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("two", "alpha")
    assert err.value.status == 404
    assert not ctr.alive and not Path(f"/proc/{ctr.pid}/root").exists()


def test_control_api_is_admin_only(fresh_emulator: Emulator, tmp_path: Path) -> None:
    from fleetscan.emulator.handle import EmulatorClient

    token = fresh_emulator.client().add_user("mallory")
    intruder = EmulatorClient(fresh_emulator.url, fresh_emulator.ca_pem, token)
    with pytest.raises(EmulatorControlError, match="403"):
        intruder.advance_clock(3600)
    with pytest.raises(EmulatorControlError, match="400"):
        fresh_emulator.client().set_faults(errors=[{"path": "/", "code": 404}])  # not a fault the emulator injects


def test_audit_counts_api_calls(fresh_emulator: Emulator, tmp_path: Path) -> None:
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path))
    handle = fresh_emulator.client()
    handle.clear_audit()
    for _ in range(3):
        core.list_namespaced_pod("alpha")
    run(core, "alpha", "one", ["true"])
    lists = handle.audit(verb="list", resource="pods", namespace="alpha")
    execs = handle.audit(resource="pods", subresource="exec")
    assert len(lists) == 3 and len(execs) == 1
    assert execs[0]["user"] == "kubernetes-admin" and execs[0]["code"] == 101
