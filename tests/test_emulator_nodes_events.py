"""Nodes, events and watch bookmarks, driven with the real kubectl and the official Python client."""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from fleetscan.emulator.scenario import parse_scenario
from fleetscan.emulator.server import Emulator

from .conftest import Kubectl, api_client, make_kubectl
from .test_emulator_exec import run

pytestmark = pytest.mark.kubectl

NODES_SCENARIO = """
nodes: [fast-node, slow-node]
faults: {node_latency: [{node: slow-node, seconds: 0.6}]}
namespaces:
  - name: web
    pods:
      - {name: quick, node: fast-node, containers: [{name: main, image: busybox}]}
      - {name: sluggish, node: slow-node, containers: [{name: main, image: busybox}]}
      - {name: placed, containers: [{name: main, image: busybox}]}
"""


def test_nodes_through_both_clients(demo_emulator: Emulator, kubectl: Kubectl, admin: client.ApiClient) -> None:
    core = client.CoreV1Api(admin)
    nodes = {n.metadata.name: n for n in core.list_node().items}
    assert set(nodes) == {f"emulator-node-{i}" for i in range(4)}
    node = core.read_node("emulator-node-0")
    assert node.status.node_info.kubelet_version == "v1.32.0"
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    pods = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=emulator-node-0").items
    assert pods and all(p.spec.node_name == "emulator-node-0" for p in pods)
    assert {p.status.host_ip for p in pods} == {a.address for a in node.status.addresses if a.type == "InternalIP"}
    assert {p.spec.node_name for p in core.list_pod_for_all_namespaces().items} <= set(nodes)

    table = kubectl("get", "nodes", check=True).stdout.decode()
    assert table.split()[:5] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"] and "emulator-node-3" in table
    described = kubectl("describe", "node", "emulator-node-0", check=True).stdout.decode()
    assert "Kubelet Version:            v1.32.0" in described
    assert f"Non-terminated Pods:          ({len(pods)} in total)" in described
    names = kubectl("get", "nodes", "-o", "name", "-l", "kubernetes.io/os=linux", check=True).stdout.decode()
    assert names.split() == [f"node/emulator-node-{i}" for i in range(4)]
    assert kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=10s").returncode == 0


def test_a_node_created_through_the_api(fresh_emulator: Emulator, tmp_path: Path) -> None:
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path))
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="extra", labels={"pool": "gpu"})))
    k = make_kubectl(fresh_emulator, tmp_path)
    assert k("get", "nodes", "-l", "pool=gpu", "-o", "name", check=True).stdout.split() == [b"node/extra"]
    k("label", "node", "extra", "pool=cpu", "--overwrite", check=True)
    assert core.read_node("extra").metadata.labels["pool"] == "cpu"
    k("delete", "node", "extra", check=True)
    with pytest.raises(ApiException) as err:
        core.read_node("extra")
    assert err.value.status == 404


def test_nodes_need_their_own_rbac(demo_emulator: Emulator, tmp_path: Path) -> None:
    """A namespace's view role (what a scan token resembles) does not reach nodes, a cluster role does."""
    handle = demo_emulator.client()
    token = handle.add_user("node-reader-test")
    k_admin = make_kubectl(demo_emulator, tmp_path)
    k_user = make_kubectl(demo_emulator, tmp_path, token)
    assert k_user("auth", "can-i", "list", "nodes").stdout.decode().strip() == "no"
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(api_client(demo_emulator, tmp_path, token)).list_node()
    assert err.value.status == 403
    k_admin("create", "clusterrole", "node-reader-test", "--verb=get,list", "--resource=nodes", check=True)
    k_admin("create", "clusterrolebinding", "node-reader-test", "--clusterrole=node-reader-test",
            "--user=node-reader-test", check=True)  # fmt: skip
    try:
        assert k_user("auth", "can-i", "list", "nodes").stdout.decode().strip() == "yes"
        assert k_user("auth", "can-i", "delete", "nodes").stdout.decode().strip() == "no"
        assert len(client.CoreV1Api(api_client(demo_emulator, tmp_path, token)).list_node().items) == 4
    finally:
        k_admin("delete", "clusterrolebinding,clusterrole", "node-reader-test")


def test_scenario_nodes_replace_the_defaults_and_a_slow_kubelet_delays_its_execs(tmp_path: Path) -> None:
    with Emulator(parse_scenario(NODES_SCENARIO, "nodes.yaml")) as emu:
        core = client.CoreV1Api(api_client(emu, tmp_path))
        assert sorted(n.metadata.name for n in core.list_node().items) == ["fast-node", "slow-node"]
        assert core.read_namespaced_pod("placed", "web").spec.node_name in ("fast-node", "slow-node")
        handle = emu.client()
        handle.clear_audit()
        for pod in ("quick", "sluggish"):
            assert run(core, "web", pod, ["true"])[0]["status"] == "Success"
        spans = {e["name"]: e["time"] - e["started"] for e in handle.audit(subresource="exec")}
        assert spans["sluggish"] >= 0.6 > spans["quick"]
        # The same fault through the control API, on the other node.
        handle.set_faults(node_latency=[{"node": "fast-.*", "seconds": 0.6}])
        handle.clear_audit()
        run(core, "web", "quick", ["true"])
        assert [e["time"] - e["started"] >= 0.6 for e in handle.audit(subresource="exec")] == [True]


def test_events_are_one_store_in_two_apis(fresh_emulator: Emulator, tmp_path: Path) -> None:
    api = api_client(fresh_emulator, tmp_path)
    core, events_v1 = client.CoreV1Api(api), client.EventsV1Api(api)
    pod = core.read_namespaced_pod("one", "alpha")
    recorded = core.list_namespaced_event(
        "alpha", field_selector=f"involvedObject.name=one,involvedObject.uid={pod.metadata.uid}"
    )
    assert {e.reason for e in recorded.items} >= {"Scheduled", "Started"}
    assert all(e.source.component in ("kubelet", "default-scheduler") for e in recorded.items)

    body = client.EventsV1Event(
        metadata=client.V1ObjectMeta(name="scan-finished"),
        event_time=datetime.datetime.now(datetime.UTC),
        action="Scan",
        reason="ScanPassed",
        note="all controls passed",
        type="Normal",
        reporting_controller="fleetscan.dev/scanner",
        reporting_instance="scanner-1",
        regarding=client.V1ObjectReference(kind="Pod", namespace="alpha", name="one", uid=pod.metadata.uid),
    )
    events_v1.create_namespaced_event("alpha", body)
    as_core = core.read_namespaced_event("scan-finished", "alpha")
    assert (as_core.message, as_core.involved_object.name, as_core.reporting_component) == (
        "all controls passed",
        "one",
        "fleetscan.dev/scanner",
    )
    core.create_namespaced_event(
        "alpha",
        client.CoreV1Event(
            metadata=client.V1ObjectMeta(name="legacy"),
            involved_object=client.V1ObjectReference(kind="Pod", namespace="alpha", name="two"),
            reason="Legacy",
            message="written through core/v1",
            type="Warning",
        ),
    )
    seen = events_v1.read_namespaced_event("legacy", "alpha")
    assert (seen.note, seen.regarding.name, seen.type) == ("written through core/v1", "two", "Warning")
    # events.k8s.io/v1 requires what core/v1 does not (kubectl: the Python client's model would refuse it
    # before sending).
    bad = b"apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: bad}\nreason: X\ntype: Normal\n"
    refused = make_kubectl(fresh_emulator, tmp_path)("create", "-n", "alpha", "-f", "-", stdin=bad)
    assert refused.returncode != 0 and b"eventTime: Required value" in refused.stderr
    with pytest.raises(ApiException) as err:
        core.create_namespaced_event(
            "alpha",
            client.CoreV1Event(
                metadata=client.V1ObjectMeta(name="odd"), involved_object=client.V1ObjectReference(), type="Bogus"
            ),
        )
    assert err.value.status == 422
    events_v1.delete_namespaced_event("legacy", "alpha")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_event("legacy", "alpha")
    assert err.value.status == 404


def test_events_with_kubectl(fresh_emulator: Emulator, tmp_path: Path) -> None:
    k = make_kubectl(fresh_emulator, tmp_path)
    listed = k("events", "-n", "alpha", "--for", "pod/one", check=True).stdout.decode()
    assert "Scheduled" in listed and "Started container main" in listed and "pod/two" not in listed
    described = k("describe", "pod", "one", "-n", "alpha", check=True).stdout.decode()
    assert "Successfully assigned alpha/one to emulator-node-" in described
    got = json.loads(k("get", "events.events.k8s.io", "-n", "alpha", "-o", "json", check=True).stdout)
    assert got["apiVersion"] == "v1" and all(e["apiVersion"] == "events.k8s.io/v1" for e in got["items"])
    assert {e["regarding"]["name"] for e in got["items"]} == {"one", "two"}
    warnings = k("get", "events", "-n", "alpha", "--field-selector", "type=Warning", check=True)
    assert b"No resources found" in warnings.stderr
    # RBAC tells the two groups apart, as on a real cluster.
    token = fresh_emulator.client().add_user("event-reader")
    k("create", "role", "events-reader", "-n", "alpha", "--verb=list", "--resource=events", check=True)
    k("create", "rolebinding", "events-reader", "-n", "alpha", "--role=events-reader", "--user=event-reader",
      check=True)  # fmt: skip
    reader = make_kubectl(fresh_emulator, tmp_path, token)
    assert reader("auth", "can-i", "list", "events", "-n", "alpha").stdout.strip() == b"yes"
    assert reader("auth", "can-i", "list", "events.events.k8s.io", "-n", "alpha").stdout.strip() == b"no"
    assert reader("get", "events", "-n", "alpha").returncode == 0
    assert reader("get", "events.events.k8s.io", "-n", "alpha").returncode != 0


def test_watch_bookmarks_carry_the_current_resource_version(fresh_emulator: Emulator, tmp_path: Path) -> None:
    fresh_emulator.client().settings(bookmark_interval=0.3)
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path))
    listed = core.list_namespaced_pod("alpha")
    types, versions = [], []
    w = watch.Watch()
    started = time.monotonic()
    for event in w.stream(
        core.list_namespaced_pod,
        "alpha",
        resource_version=listed.metadata.resource_version,
        allow_watch_bookmarks=True,
        timeout_seconds=3,
    ):
        types.append(event["type"])
        if event["type"] == "BOOKMARK":
            versions.append(int(event["raw_object"]["metadata"]["resourceVersion"]))
        if time.monotonic() - started > 10:
            break
    assert types.count("BOOKMARK") >= 2 and set(types) == {"BOOKMARK"}
    assert versions == sorted(versions) and versions[0] >= int(listed.metadata.resource_version)
    # Without allowWatchBookmarks a quiet watch stays silent.
    quiet = list(
        watch.Watch().stream(
            core.list_namespaced_pod, "alpha", resource_version=listed.metadata.resource_version, timeout_seconds=1
        )
    )
    assert quiet == []


def test_pagination_with_limit_and_continue(tmp_path: Path) -> None:
    scenario = parse_scenario("namespaces: [{name: paged}]\n", "paged.yaml")
    with Emulator(scenario, watch_history=200) as emu:
        core = client.CoreV1Api(api_client(emu, tmp_path))
        for i in range(25):
            core.create_namespaced_config_map(
                "paged", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"cm-{i:02d}"))
            )
        first = core.list_namespaced_config_map("paged", limit=10)
        names = [c.metadata.name for c in first.items]
        assert names == [f"cm-{i:02d}" for i in range(10)] and first.metadata.remaining_item_count == 15
        # Between pages: one served object and one not yet served go, a new one sorts into page two.
        core.delete_namespaced_config_map("cm-03", "paged")
        core.delete_namespaced_config_map("cm-15", "paged")
        core.create_namespaced_config_map("paged", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm-10a")))
        token = first.metadata._continue
        while token:
            page = core.list_namespaced_config_map("paged", limit=10, _continue=token)
            assert page.metadata.resource_version == first.metadata.resource_version
            names += [c.metadata.name for c in page.items]
            token = page.metadata._continue
        # cm-03 was served before it went; cm-15 went before its page; each name once, in order.
        assert names == sorted({*(f"cm-{i:02d}" for i in range(25) if i != 15), "cm-10a"})
        # kubectl pages its own way (--chunk-size) and sees everything.
        k = make_kubectl(emu, tmp_path)
        listed = k("get", "configmaps", "-n", "paged", "--chunk-size=4", "-o", "name", check=True).stdout.split()
        assert len(listed) == 24 and b"configmap/cm-10a" in listed
        # A token older than the retained history is refused as on a real server.
        stale = core.list_namespaced_config_map("paged", limit=5).metadata._continue
        for i in range(210):
            core.patch_namespaced_config_map("cm-00", "paged", {"data": {"n": str(i)}})
        with pytest.raises(ApiException) as err:
            core.list_namespaced_config_map("paged", limit=5, _continue=stale)
        assert err.value.status == 410 and "too old" in err.value.body
        with pytest.raises(ApiException) as err:
            core.list_namespaced_config_map("paged", limit=5, _continue="not-a-token")
        assert err.value.status == 400


def test_events_expire_after_an_hour(fresh_emulator: Emulator, tmp_path: Path) -> None:
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path))
    assert core.list_namespaced_event("alpha").items
    fresh_emulator.client().advance_clock(3700)  # the API server's default --event-ttl is one hour
    deadline = time.monotonic() + 10
    while core.list_namespaced_event("alpha").items and time.monotonic() < deadline:
        time.sleep(0.2)
    assert core.list_namespaced_event("alpha").items == []
