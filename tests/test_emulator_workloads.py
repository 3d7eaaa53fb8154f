"""Workload objects: controllers create ReplicaSets and pods; watches see rollouts complete."""

from __future__ import annotations

import threading
from pathlib import Path

from kubernetes import client, watch

from fleetscan.emulator.server import Emulator

from .conftest import api_client


def deployment(image: str, replicas: int = 2) -> dict:
    return {
        "metadata": {"name": "api"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {"containers": [{"name": "api", "image": image, "command": ["sleep", "3600"]}]},
            },
        },
    }


def rolled_out(d: client.V1Deployment) -> bool:
    s = d.status
    return bool(
        s
        and s.observed_generation == d.metadata.generation
        and s.updated_replicas == d.spec.replicas
        and s.replicas == d.spec.replicas
        and s.ready_replicas == d.spec.replicas
    )


def test_deployment_rollout_is_observable_by_watch(fresh_emulator: Emulator, tmp_path: Path) -> None:
    api = api_client(fresh_emulator, tmp_path)
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    created = apps.create_namespaced_deployment("alpha", deployment("busybox:1.36"))
    assert rolled_out(created) and created.metadata.generation == 1
    (rs,) = apps.list_namespaced_replica_set("alpha", label_selector="app=api").items
    pods = core.list_namespaced_pod("alpha", label_selector="app=api").items
    assert len(pods) == 2 and all(p.metadata.owner_references[0].uid == rs.metadata.uid for p in pods)
    assert all(p.metadata.labels["pod-template-hash"] == rs.metadata.labels["pod-template-hash"] for p in pods)

    events: list[client.V1Deployment] = []
    rv = apps.list_namespaced_deployment("alpha").metadata.resource_version

    def follow() -> None:
        w = watch.Watch()
        for ev in w.stream(apps.list_namespaced_deployment, "alpha", resource_version=rv, timeout_seconds=20):
            events.append(ev["object"])
            if rolled_out(ev["object"]) and ev["object"].metadata.generation == 2:
                w.stop()

    thread = threading.Thread(target=follow)
    thread.start()
    apps.patch_namespaced_deployment(
        "api", "alpha", {"spec": {"template": {"spec": {"containers": [{"name": "api", "image": "busybox:1.37"}]}}}}
    )
    thread.join(30)
    assert events and events[0].metadata.generation == 2 and not rolled_out(events[0])  # spec first, then status
    assert rolled_out(events[-1])
    new = core.list_namespaced_pod("alpha", label_selector="app=api").items
    assert {p.spec.containers[0].image for p in new} == {"busybox:1.37"} and len(new) == 2
    assert len(apps.list_namespaced_replica_set("alpha", label_selector="app=api").items) == 2  # old one kept at 0


def test_statefulset_and_daemonset_pods(fresh_emulator: Emulator, tmp_path: Path) -> None:
    api = api_client(fresh_emulator, tmp_path)
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    spec = deployment("busybox")["spec"]
    sts = apps.create_namespaced_stateful_set("beta", {"metadata": {"name": "db"}, "spec": spec | {"replicas": 3}})
    assert sts.status.ready_replicas == 3
    names = sorted(p.metadata.name for p in core.list_namespaced_pod("beta", label_selector="app=api").items)
    assert names == ["db-0", "db-1", "db-2"]
    spec.pop("replicas")
    ds = apps.create_namespaced_daemon_set("beta", {"metadata": {"name": "agent"}, "spec": spec})
    assert ds.status.number_ready == 1 and ds.status.desired_number_scheduled == 1
    apps.delete_namespaced_stateful_set("db", "beta")
    left = [p.metadata.name for p in core.list_namespaced_pod("beta", label_selector="app=api").items]
    assert len(left) == 1 and left[0].startswith("agent-")  # dependents of the StatefulSet were collected


def test_namespace_deletion_stops_its_pods(fresh_emulator: Emulator, tmp_path: Path) -> None:
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path))
    assert fresh_emulator.cluster is not None
    pod = core.read_namespaced_pod("three", "beta")
    sandbox = fresh_emulator.cluster.pods.sandboxes[pod.metadata.uid]
    main = sandbox.containers["main"]
    core.delete_namespace("beta")
    assert [ns.metadata.name for ns in core.list_namespace().items if ns.metadata.name == "beta"] == []
    assert not main.alive and not sandbox.directory.exists()
