"""REST semantics of the emulator through the official kubernetes client over HTTPS."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from fleetscan.emulator.server import Emulator

from .conftest import api_client


def status_of(exc: ApiException) -> dict:
    return json.loads(exc.body)


def test_version_and_discovery(admin: client.ApiClient) -> None:
    version = client.VersionApi(admin).get_code()
    assert (version.major, version.minor) == ("1", "32")
    groups = {g.name for g in client.ApisApi(admin).get_api_versions().groups}
    assert {"apps", "rbac.authorization.k8s.io", "authorization.k8s.io", "authentication.k8s.io"} <= groups
    resources = {r.name: r for r in client.CoreV1Api(admin).get_api_resources().resources}
    assert resources["pods/exec"].verbs == ["create", "get"]
    assert "pods/ephemeralcontainers" in resources and "serviceaccounts/token" in resources


def test_demo_fleet_is_running(admin: client.ApiClient) -> None:
    core = client.CoreV1Api(admin)
    pods = core.list_pod_for_all_namespaces().items
    namespaces = {p.metadata.namespace for p in pods}
    assert len(namespaces) >= 5 and len(pods) >= 20
    broken = core.read_namespaced_pod("broken-image", "staging")
    assert broken.status.phase == "Pending"
    assert broken.status.container_statuses[0].state.waiting.reason == "ErrImagePull"
    running = [p for p in pods if p.status.phase == "Running"]
    assert all(s.state.running is not None for p in running for s in p.status.container_statuses)


def test_label_and_field_selectors(admin: client.ApiClient) -> None:
    core = client.CoreV1Api(admin)
    web = core.list_namespaced_pod("shop", label_selector="app=web").items
    assert [p.metadata.name for p in web] == ["web-7d9f-abcde", "web-7d9f-fghij", "web-7d9f-klmno"]
    assert {
        p.metadata.name
        for p in core.list_namespaced_pod("staging", label_selector="app in (web,api),track!=canary").items
    } == {"web-old", "api-preview"}
    running = core.list_pod_for_all_namespaces(field_selector="status.phase=Running").items
    assert "broken-image" not in {p.metadata.name for p in running}
    one = core.list_pod_for_all_namespaces(field_selector="metadata.name=api-0,metadata.namespace=shop").items
    assert [(p.metadata.namespace, p.metadata.name) for p in one] == [("shop", "api-0")]
    with pytest.raises(ApiException) as err:
        core.list_pod_for_all_namespaces(field_selector="spec.bogus=1")
    assert err.value.status == 400


def test_owner_references_form_workload_chains(admin: client.ApiClient) -> None:
    core, apps = client.CoreV1Api(admin), client.AppsV1Api(admin)
    pod = core.read_namespaced_pod("web-7d9f-abcde", "shop")
    (ref,) = pod.metadata.owner_references
    assert ref.kind == "ReplicaSet"
    rs = apps.read_namespaced_replica_set(ref.name, "shop")
    assert rs.metadata.owner_references[0].kind == "Deployment"
    assert rs.metadata.owner_references[0].name == "web"
    deploy = apps.read_namespaced_deployment("web", "shop")
    assert (deploy.status.replicas, deploy.status.ready_replicas, deploy.status.observed_generation) == (3, 3, 1)
    sts_pod = core.read_namespaced_pod("api-0", "shop")
    assert sts_pod.metadata.owner_references[0].kind == "StatefulSet"


def test_error_bodies_are_kubernetes_status(fresh_emulator: Emulator, tmp_path: Path) -> None:
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path))
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("nope", "alpha")
    assert err.value.status == 404
    assert status_of(err.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "nope" not found',
        "reason": "NotFound",
        "code": 404,
        "details": {"name": "nope", "group": "", "kind": "pods"},
    }
    body = {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    core.create_namespaced_pod("alpha", body)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("alpha", body)
    assert err.value.status == 409 and status_of(err.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("alpha", {"metadata": {"name": "Bad_Name"}, "spec": body["spec"]})
    assert err.value.status == 422 and status_of(err.value)["reason"] == "Invalid"
    assert status_of(err.value)["details"]["causes"][0]["field"] == "metadata.name"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("no-such-ns", body)
    assert err.value.status == 404 and 'namespaces "no-such-ns" not found' in status_of(err.value)["message"]


def test_create_update_and_patches(fresh_emulator: Emulator, tmp_path: Path) -> None:
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path))
    sa = core.create_namespaced_service_account("alpha", {"metadata": {"name": "bot", "labels": {"a": "1"}}})
    rv = sa.metadata.resource_version
    merged = core.patch_namespaced_service_account("bot", "alpha", {"metadata": {"labels": {"b": "2"}}})
    assert merged.metadata.labels == {"a": "1", "b": "2"} and merged.metadata.resource_version != rv
    patched = core.patch_namespaced_service_account(
        "bot", "alpha", [{"op": "remove", "path": "/metadata/labels/a"}], _content_type="application/json-patch+json"
    )
    assert patched.metadata.labels == {"b": "2"}
    stale = {"metadata": {"name": "bot", "resourceVersion": rv}}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_service_account("bot", "alpha", stale)
    assert err.value.status == 409 and status_of(err.value)["reason"] == "Conflict"
    core.delete_namespaced_service_account("bot", "alpha")
    with pytest.raises(ApiException):
        core.read_namespaced_service_account("bot", "alpha")


def test_pod_spec_is_immutable_but_labels_are_not(fresh_emulator: Emulator, tmp_path: Path) -> None:
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path))
    pod = core.patch_namespaced_pod("one", "alpha", {"metadata": {"labels": {"scanned": "yes"}}})
    assert pod.metadata.labels["scanned"] == "yes" and pod.status.phase == "Running"
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_pod("one", "alpha", {"spec": {"hostNetwork": True}})
    assert err.value.status == 422 and "pod updates may not change fields" in status_of(err.value)["message"]


def test_ephemeral_containers_are_append_only(fresh_emulator: Emulator, tmp_path: Path) -> None:
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path))
    dbg = {"name": "dbg", "image": "fleetscan/debug:1.0", "command": ["sleep", "3600"], "targetContainerName": "main"}
    pod = core.patch_namespaced_pod_ephemeralcontainers("one", "alpha", {"spec": {"ephemeralContainers": [dbg]}})
    assert [c.name for c in pod.spec.ephemeral_containers] == ["dbg"]
    assert pod.status.ephemeral_container_statuses[0].state.running is not None
    second = {"name": "dbg2", "image": "busybox", "command": ["sleep", "3600"]}
    pod = core.patch_namespaced_pod_ephemeralcontainers("one", "alpha", {"spec": {"ephemeralContainers": [second]}})
    assert [c.name for c in pod.spec.ephemeral_containers] == ["dbg", "dbg2"]  # strategic merge keyed by name
    changed = dict(dbg, image="busybox")
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_pod_ephemeralcontainers("one", "alpha", {"spec": {"ephemeralContainers": [changed]}})
    assert err.value.status == 422 and "may not be changed" in status_of(err.value)["message"]
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_pod_ephemeralcontainers(
            "one",
            "alpha",
            [{"op": "remove", "path": "/spec/ephemeralContainers/0"}],
            _content_type="application/json-patch+json",
        )
    assert err.value.status == 422
    third = {"name": "dbg3", "image": "busybox", "targetContainerName": "nope"}
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_pod_ephemeralcontainers(
            "one",
            "alpha",
            [{"op": "add", "path": "/spec/ephemeralContainers/-", "value": third}],
            _content_type="application/json-patch+json",
        )
    assert err.value.status == 422 and "targetContainerName" in status_of(err.value)["message"]


def test_watch_streams_events_and_resumes(fresh_emulator: Emulator, tmp_path: Path) -> None:
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path))
    listing = core.list_namespaced_pod("alpha")
    rv = listing.metadata.resource_version
    seen: list[tuple[str, str]] = []

    def consume() -> None:
        w = watch.Watch()
        for event in w.stream(core.list_namespaced_pod, "alpha", resource_version=rv, timeout_seconds=20):
            seen.append((event["type"], event["object"].metadata.name))
            if event["type"] == "DELETED":
                w.stop()

    thread = threading.Thread(target=consume)
    thread.start()
    spec = {"containers": [{"name": "c", "image": "busybox"}]}
    core.create_namespaced_pod("alpha", {"metadata": {"name": "watched"}, "spec": spec})
    core.delete_namespaced_pod("watched", "alpha")
    thread.join(30)
    assert ("ADDED", "watched") in seen and seen[-1] == ("DELETED", "watched")
    # Resuming from the old resourceVersion replays what happened since, in order.
    replay = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(core.list_namespaced_pod, "alpha", resource_version=rv, timeout_seconds=1)
    ]
    assert replay[:2] == [("ADDED", "watched"), ("MODIFIED", "watched")] and replay[-1] == ("DELETED", "watched")


def test_watch_from_compacted_version_is_gone(tmp_path: Path) -> None:
    with Emulator(watch_history=5) as emu:
        core = client.CoreV1Api(api_client(emu, tmp_path))
        old = core.list_namespaced_service_account("default").metadata.resource_version
        for i in range(10):
            core.create_namespaced_service_account("default", {"metadata": {"name": f"sa{i}"}})
        with pytest.raises(ApiException) as err:
            for _ in watch.Watch().stream(
                core.list_namespaced_service_account, "default", resource_version=old, timeout_seconds=2
            ):
                pass
        assert err.value.status == 410
        # A fresh list gives a version the watch can resume from.
        current = core.list_namespaced_service_account("default").metadata.resource_version
        events = list(
            watch.Watch().stream(
                core.list_namespaced_service_account, "default", resource_version=current, timeout_seconds=1
            )
        )
        assert events == []
