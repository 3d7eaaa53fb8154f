"""Just enough of the workload controllers for owner references and `kubectl rollout status`.

Reconciliation runs synchronously when a workload is written through the API: a Deployment gets a
ReplicaSet per pod-template hash, ReplicaSets, StatefulSets and DaemonSets get pods, and every
workload's status is recomputed from the pods it owns. Deleted pods are not replaced (fault tests
delete pods on purpose and want them gone).
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
from typing import TYPE_CHECKING, Any

from .resources import BY_KEY

if TYPE_CHECKING:
    from .cluster import Cluster

Obj = dict[str, Any]
PODS = BY_KEY[("", "pods")]
DEPLOYMENTS = BY_KEY[("apps", "deployments")]
REPLICASETS = BY_KEY[("apps", "replicasets")]
STATEFULSETS = BY_KEY[("apps", "statefulsets")]
DAEMONSETS = BY_KEY[("apps", "daemonsets")]
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(template: Obj) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:10])


def random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def owner_ref(owner: Obj) -> Obj:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(cluster: Cluster, kind_rt: Any, owner: Obj) -> list[Obj]:
    uid = owner["metadata"]["uid"]
    return cluster.store.list(
        kind_rt,
        owner["metadata"]["namespace"],
        lambda o: any(ref.get("uid") == uid for ref in o["metadata"].get("ownerReferences") or []),
    )


def _ready(pods: list[Obj]) -> int:
    return sum(1 for p in pods if p.get("status", {}).get("phase") == "Running")


class Controllers:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    # -- reconcile: create and delete pods -----------------------------------------------------------
    def reconcile(self, rt: Any, obj: Obj) -> None:
        if rt is DEPLOYMENTS:
            self._deployment(obj)
        elif rt is REPLICASETS:
            self._pods_for(obj, int(obj["spec"].get("replicas", 1)), lambda i: "")
        elif rt is STATEFULSETS:
            name = obj["metadata"]["name"]
            self._pods_for(obj, int(obj["spec"].get("replicas", 1)), lambda i: f"{name}-{i}", rolling=True)
        elif rt is DAEMONSETS:
            self._pods_for(obj, 1, lambda i: "", rolling=True)
        else:
            return
        self.refresh(rt, obj)

    def _deployment(self, deploy: Obj) -> None:
        c = self.cluster
        template = deploy["spec"].get("template") or {}
        h = template_hash(template)
        rs_name = f"{deploy['metadata']['name']}-{h}"
        ns = deploy["metadata"]["namespace"]
        replicas = int(deploy["spec"].get("replicas", 1))
        current = c.store.find(REPLICASETS, ns, rs_name)
        if current is None:
            tpl = copy.deepcopy(template)
            tpl.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
            selector = copy.deepcopy(deploy["spec"].get("selector") or {})
            selector.setdefault("matchLabels", {})["pod-template-hash"] = h
            current = c.store.create(
                REPLICASETS,
                {
                    "metadata": {
                        "name": rs_name,
                        "namespace": ns,
                        "labels": dict(tpl["metadata"]["labels"]),
                        "ownerReferences": [owner_ref(deploy)],
                        "annotations": {
                            "deployment.kubernetes.io/revision": str(deploy["metadata"].get("generation", 1))
                        },
                    },
                    "spec": {"replicas": replicas, "selector": selector, "template": tpl},
                },
            )
        elif current["spec"].get("replicas") != replicas:
            current = dict(current, spec=dict(current["spec"], replicas=replicas))
            c.store.replace(REPLICASETS, current)
        self.reconcile(REPLICASETS, current)
        for rs in owned_by(c, REPLICASETS, deploy):
            if rs["metadata"]["name"] != rs_name and rs["spec"].get("replicas", 0) != 0:
                rs = dict(rs, spec=dict(rs["spec"], replicas=0))
                c.store.replace(REPLICASETS, rs)
                self.reconcile(REPLICASETS, rs)

    def _pods_for(self, owner: Obj, replicas: int, name_of: Any, rolling: bool = False) -> None:
        c = self.cluster
        ns = owner["metadata"]["namespace"]
        template = owner["spec"].get("template") or {}
        revision = template_hash(template)
        pods = owned_by(c, PODS, owner)
        if rolling:  # replace pods of an older template revision
            for pod in pods:
                if pod["metadata"].get("labels", {}).get("controller-revision-hash") != revision:
                    c.delete_object(PODS, ns, pod["metadata"]["name"])
            pods = owned_by(c, PODS, owner)
        for pod in pods[replicas:]:
            c.delete_object(PODS, ns, pod["metadata"]["name"])
        existing = {p["metadata"]["name"] for p in pods}
        for i in range(len(pods), replicas):
            name = name_of(i) or f"{owner['metadata']['name']}-{random_suffix()}"
            if name in existing:
                continue
            meta = copy.deepcopy(template.get("metadata") or {})
            meta.update(name=name, namespace=ns, ownerReferences=[owner_ref(owner)])
            if rolling:
                meta.setdefault("labels", {})["controller-revision-hash"] = revision
            c.create_object(PODS, {"metadata": meta, "spec": copy.deepcopy(template.get("spec") or {})})

    # -- status ---------------------------------------------------------------------------------------
    def refresh(self, rt: Any, obj: Obj) -> Obj:
        """Recompute a workload's status from the pods it owns, and store it."""
        c = self.cluster
        gen = obj["metadata"].get("generation", 1)
        if rt is DEPLOYMENTS:
            rses = owned_by(c, REPLICASETS, obj)
            h = template_hash(obj["spec"].get("template") or {})
            new_rs = [
                rs
                for rs in rses
                if rs["metadata"]["name"].endswith(f"-{h}")
                or rs["metadata"].get("labels", {}).get("pod-template-hash") == h
            ]
            pods = [p for rs in rses for p in owned_by(c, PODS, rs)]
            updated = [p for rs in new_rs for p in owned_by(c, PODS, rs)]
            name = new_rs[0]["metadata"]["name"] if new_rs else obj["metadata"]["name"]
            now = c.clock.iso()
            status: Obj = {
                "observedGeneration": gen,
                "replicas": len(pods),
                "updatedReplicas": len(updated),
                "readyReplicas": _ready(pods),
                "availableReplicas": _ready(pods),
                "conditions": [
                    {
                        "type": "Available",
                        "status": "True",
                        "reason": "MinimumReplicasAvailable",
                        "message": "Deployment has minimum availability.",
                        "lastUpdateTime": now,
                        "lastTransitionTime": now,
                    },
                    {
                        "type": "Progressing",
                        "status": "True",
                        "reason": "NewReplicaSetAvailable",
                        "message": f'ReplicaSet "{name}" has successfully progressed.',
                        "lastUpdateTime": now,
                        "lastTransitionTime": now,
                    },
                ],
            }
        elif rt is REPLICASETS:
            pods = owned_by(c, PODS, obj)
            status = {
                "observedGeneration": gen,
                "replicas": len(pods),
                "fullyLabeledReplicas": len(pods),
                "readyReplicas": _ready(pods),
                "availableReplicas": _ready(pods),
            }
        elif rt is STATEFULSETS:
            pods = owned_by(c, PODS, obj)
            rev = f"{obj['metadata']['name']}-{template_hash(obj['spec'].get('template') or {})}"
            status = {
                "observedGeneration": gen,
                "replicas": len(pods),
                "readyReplicas": _ready(pods),
                "currentReplicas": len(pods),
                "updatedReplicas": len(pods),
                "availableReplicas": _ready(pods),
                "currentRevision": rev,
                "updateRevision": rev,
                "collisionCount": 0,
            }
        elif rt is DAEMONSETS:
            pods = owned_by(c, PODS, obj)
            status = {
                "observedGeneration": gen,
                "desiredNumberScheduled": 1,
                "currentNumberScheduled": len(pods),
                "numberReady": _ready(pods),
                "updatedNumberScheduled": len(pods),
                "numberAvailable": _ready(pods),
                "numberMisscheduled": 0,
            }
        else:
            return obj
        _keep_transition_times((obj.get("status") or {}).get("conditions") or [], status.get("conditions") or [])
        if obj.get("status") != status:
            obj = dict(obj, status=status)
            c.store.replace(rt, obj)
        return obj


def _keep_transition_times(old: list[Obj], new: list[Obj]) -> None:
    """A condition that did not change keeps its timestamps (so refreshing emits no needless event)."""
    before = {c.get("type"): c for c in old}
    for cond in new:
        prev = before.get(cond.get("type"))
        if prev and prev.get("status") == cond.get("status") and prev.get("reason") == cond.get("reason"):
            for key in ("lastUpdateTime", "lastTransitionTime"):
                if key in prev:
                    cond[key] = prev[key]
