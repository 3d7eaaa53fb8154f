"""The scan path's invariant, as a property over injected faults: whatever API call fails, and however
(503, 500, 429, 403, to the end of every retry), a fleet scan and a workload scan end with exactly
one record per selected container, and the exit code follows the records. A failure that keeps a
container from being examined is an `error` for it, never a pass and never a missing record."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.testing.utilities import prefect_test_harness

from fleetscan.emulator.scenario import parse_scenario
from fleetscan.emulator.server import Emulator
from fleetscan.errors import FleetscanError
from fleetscan.results.records import exit_code, totals
from fleetscan.results.rundir import RunDir
from fleetscan.settings import ScanParams

pytestmark = pytest.mark.slow

FLEET = """
images:
  acme/api:1.0: {base: distroless}
namespaces:
  - name: shop
    pods:
      - name: web-1
        labels: {app: web}
        owner: {kind: Deployment, name: web}
        containers: [{name: web, image: busybox}]
      - name: web-2
        labels: {app: web}
        owner: {kind: Deployment, name: web}
        containers: [{name: web, image: busybox}]
      - {name: api-0, labels: {app: api}, containers: [{name: api, image: "acme/api:1.0"}]}
      - {name: hidden, annotations: {fleetscan.io/skip: "true"}, containers: [{name: c, image: busybox}]}
  - name: other
    pods:
      - {name: solo, containers: [{name: c, image: busybox}]}
"""
FLEET_SELECTED = {"shop/web-1/web", "shop/web-2/web", "shop/api-0/api", "shop/hidden/c", "other/solo/c"}
WORKLOAD_SELECTED = {"shop/web-1/web", "shop/web-2/web"}

# Every API call a scan makes, as (method, path regex) the emulator's faults match, and what its
# failure takes away: "plan" (nothing can be selected: the run fails), the containers it blocks
# (they must be errors), or nothing (revoking: the scans are done, gc finishes the cleanup).
CALLS: dict[str, tuple[str, str, Any]] = {
    # the named namespaces are read one by one, with a list as the fallback when reads are refused
    "read namespaces": ("GET", r"^/api/v1/namespaces(/shop|/other)?$", "plan"),
    "list pods": ("GET", r"/namespaces/shop/pods$", "plan"),
    "list workloads": ("GET", r"/namespaces/shop/replicasets$", "plan"),
    "read workload": ("GET", r"/namespaces/shop/deployments/web$", "plan"),
    "token request": ("POST", r"/namespaces/shop/serviceaccounts/[^/]+/token$", "shop"),
    "serviceaccount create": ("POST", r"/namespaces/shop/serviceaccounts$", "shop"),
    "role create": ("POST", r"/namespaces/shop/roles$", "shop"),
    "rolebinding create": ("POST", r"/namespaces/shop/rolebindings$", "shop"),
    "scan exec": ("GET", r"/namespaces/shop/pods/[^/]+/exec$", "shop"),
    "ephemeral patch": ("PATCH", r"/namespaces/shop/pods/api-0/ephemeralcontainers$", {"shop/api-0/api"}),
    "revoke": ("DELETE", r"/namespaces/shop/(rolebindings|roles|serviceaccounts)/", set()),
}
CODES = (503, 500, 429, 403)


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[str]:
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    with prefect_test_harness(server_startup_timeout=120):
        from prefect.settings import PREFECT_API_URL

        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(parse_scenario(FLEET, "fleet.yaml")) as e:
        yield e


def _params(emu: Emulator, tmp_path: Path, run_id: str) -> ScanParams:
    return ScanParams(
        kubeconfig=str(emu.write_kubeconfig(tmp_path / "kc")),
        out=str(tmp_path / "run"),
        run_id=run_id,
        debug_image="fleetscan/debug:1.0",
        retries=1,
    )


def _scan(kind: str, params: ScanParams) -> int:
    from flows.fleet import fleet_scan, run_to_end, workload_scan

    if kind == "fleet":
        return run_to_end(fleet_scan, params.model_copy(update={"namespaces": ["shop", "other"]})).exit_code
    return run_to_end(workload_scan, "shop", "Deployment", "web", params).exit_code


@pytest.mark.parametrize("scan", ["fleet", "workload"])
@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("call", list(CALLS))
def test_one_record_per_selected_container_whatever_fails(
    prefect_api: str, emu: Emulator, tmp_path: Path, scan: str, code: int, call: str
) -> None:
    method, path, blocks = CALLS[call]
    if scan == "workload" and call in ("read namespaces", "ephemeral patch"):
        pytest.skip("a workload scan makes no such call")
    if scan == "fleet" and call == "read workload":
        pytest.skip("a fleet scan makes no such call")
    selected = FLEET_SELECTED if scan == "fleet" else WORKLOAD_SELECTED
    run_id = f"inv-{scan[0]}-{code}-{abs(hash(call)) % 10**6}"
    params = _params(emu, tmp_path, run_id)
    handle = emu.client()
    handle.set_faults(errors=[{"path": path, "method": method, "code": code, "retry_after": 0}])
    try:
        try:
            code_seen = _scan(scan, params)
        except FleetscanError:
            code_seen = 2  # the run itself failed: the CLI exits 2
    finally:
        handle.clear_faults()
    records = RunDir(tmp_path / "run", run_id).records()
    keys = [r.key for r in records]
    if blocks == "plan":  # nothing could be selected: the run fails, nothing pretends to be scanned
        assert code_seen == 2 and keys == []
        return
    assert sorted(keys) == sorted(selected)  # exactly one record each
    assert code_seen == exit_code(totals(records))
    blocked = {k for k in selected if k.startswith("shop/") and k != "shop/hidden/c"} if blocks == "shop" else blocks
    by_key = {r.key: r for r in records}
    for key in blocked & selected:
        assert by_key[key].outcome == "error" and str(code) in by_key[key].reason, (key, by_key[key])
    for key in selected - blocked:
        assert by_key[key].outcome in ("passed", "failed", "skipped"), (key, by_key[key])
    assert by_key.get("shop/hidden/c") is None or by_key["shop/hidden/c"].outcome == "skipped"
    if blocked & selected:
        assert code_seen == 2


@pytest.mark.parametrize("action", ["restart", "delete"])
def test_a_container_lost_mid_scan_is_an_error_never_a_verdict(prefect_api: str, tmp_path: Path, action: str) -> None:
    """The container restarts (or its pod goes) while the fact script runs, on every attempt: its
    record is an error; the other containers are unaffected and the exit code follows."""
    run_id = f"inv-kill-{action}"
    with Emulator(parse_scenario(FLEET, "fleet.yaml")) as private:
        params = _params(private, tmp_path, run_id)
        private.client().set_faults(exec_kill=[{"path": "/pods/web-1/exec$", "after": 0.05, "action": action}])
        code_seen = _scan("fleet", params)
        records = RunDir(tmp_path / "run", run_id).records()
        audit = private.client().audit(subresource="exec", name="web-1")
    by_key = {r.key: r for r in records}
    assert sorted(by_key) == sorted(FLEET_SELECTED)
    assert audit, "the scan never reached web-1"
    assert by_key["shop/web-1/web"].outcome == "error", by_key["shop/web-1/web"]
    assert all(by_key[k].outcome != "error" for k in FLEET_SELECTED - {"shop/web-1/web"})
    assert code_seen == exit_code(totals(records)) == 2
