"""The orchestrator's own RBAC, rendered from the code that uses it (deployments/rbac/ ships it).

What it may do, and why each rule is there:
- discover: list namespaces (or get the named ones), read pods, list ReplicaSets and Jobs (owners),
  get the one workload of a workload scan;
- make each run's credentials: create (RBAC cannot limit create by name) and list (gc) service
  accounts, roles and role bindings; get, patch and delete only fleetscan's slots; mint tokens
  only for the slots' service accounts, never for anyone else's;
- delegate: pods/exec and pods/ephemeralcontainers, which the per-run Roles grant on exact pods
  (Kubernetes lets an identity grant only what it holds). The orchestrator never uses them
  itself; deployments/rbac/admission-policy.yaml narrows what it can create;
- report (`--policy-reports`): create or replace its PolicyReports, delete the parts it no longer
  needs (PolicyReports hold results, nothing secret; it never overwrites one it does not manage).
"""

from __future__ import annotations

from typing import Any

from .credentials import RBAC_GROUP, slot_names
from .names import check_label

NAME = "fleetscan-orchestrator"
# --policy-reports: list its own (by label), create, replace and delete stale parts.
POLICY_REPORT_VERBS = ["list", "create", "update", "delete"]
LABELS = {"app.kubernetes.io/name": "fleetscan"}


def orchestrator_rules(namespace: str | None = None) -> list[dict[str, Any]]:
    """The rules of the ClusterRole, or (`namespace`) of the Role in one namespace."""
    slots = slot_names()
    namespaces: dict[str, Any] = (
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list"]}
        if namespace is None
        else {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"], "resourceNames": [namespace]}
    )
    return [
        namespaces,
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["list"]},
        {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets"], "verbs": ["get"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["create", "list"]},
        {
            "apiGroups": [""],
            "resources": ["serviceaccounts"],
            "verbs": ["get", "patch", "delete"],
            "resourceNames": slots,
        },
        {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"], "resourceNames": slots},
        {"apiGroups": [RBAC_GROUP], "resources": ["roles", "rolebindings"], "verbs": ["create", "list"]},
        {
            "apiGroups": [RBAC_GROUP],
            "resources": ["roles", "rolebindings"],
            "verbs": ["get", "patch", "delete"],
            "resourceNames": slots,
        },
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"]},
        {"apiGroups": [""], "resources": ["pods/ephemeralcontainers"], "verbs": ["get", "patch"]},
        {"apiGroups": ["wgpolicyk8s.io"], "resources": ["policyreports"], "verbs": POLICY_REPORT_VERBS},
    ]


def orchestrator_manifests(
    namespaces: list[str] | None = None, account: tuple[str, str] = ("fleetscan", "fleetscan")
) -> list[dict[str, Any]]:
    """A ClusterRole and its binding to the orchestrator's ServiceAccount (`account`: namespace,
    name), or, for teams that grant no ClusterRole, a Role and RoleBinding in each of `namespaces`
    (discovery then needs the namespaces named: it cannot list them)."""
    account_ns, account_name = check_label(account[0], "namespace"), account[1]
    subject = [{"kind": "ServiceAccount", "name": account_name, "namespace": account_ns}]
    meta = {"name": NAME, "labels": dict(LABELS)}
    if namespaces is None:
        return [
            {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRole", "metadata": meta, "rules": orchestrator_rules()},
            {
                "apiVersion": f"{RBAC_GROUP}/v1",
                "kind": "ClusterRoleBinding",
                "metadata": dict(meta, labels=dict(LABELS)),
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": NAME},
                "subjects": subject,
            },
        ]
    docs: list[dict[str, Any]] = []
    for ns in namespaces:
        check_label(ns, "namespace")
        namespaced = {"name": NAME, "namespace": ns, "labels": dict(LABELS)}
        docs.append(
            {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "Role", "metadata": namespaced, "rules": orchestrator_rules(ns)}
        )
        docs.append(
            {
                "apiVersion": f"{RBAC_GROUP}/v1",
                "kind": "RoleBinding",
                "metadata": dict(namespaced, labels=dict(LABELS)),
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": NAME},
                "subjects": subject,
            }
        )
    return docs
