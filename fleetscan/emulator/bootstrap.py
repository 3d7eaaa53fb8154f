"""Objects every cluster starts with: system namespaces and the default RBAC roles and bindings."""

from __future__ import annotations

from typing import Any

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

_RBAC = "rbac.authorization.k8s.io"
_READ = ["get", "list", "watch"]
_WRITE = ["create", "delete", "deletecollection", "patch", "update"]


def _cluster_role(name: str, rules: list[dict[str, Any]], labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults", **(labels or {})}}
    return {"metadata": meta, "rules": rules}


def _binding(name: str, role: str, group: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "roleRef": {"apiGroup": _RBAC, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": _RBAC, "kind": "Group", "name": group}],
    }


def cluster_roles() -> list[dict[str, Any]]:
    workload_groups = ["", "apps", "batch"]
    workloads = [
        "pods",
        "deployments",
        "replicasets",
        "statefulsets",
        "daemonsets",
        "jobs",
        "configmaps",
        "serviceaccounts",
    ]
    return [
        _cluster_role(
            "cluster-admin",
            [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ],
        ),
        _cluster_role(
            "system:discovery",
            [
                {
                    "nonResourceURLs": [
                        "/api",
                        "/api/*",
                        "/apis",
                        "/apis/*",
                        "/healthz",
                        "/livez",
                        "/readyz",
                        "/openapi",
                        "/openapi/*",
                        "/version",
                        "/version/",
                    ],
                    "verbs": ["get"],
                }
            ],
        ),
        _cluster_role(
            "system:public-info-viewer",
            [{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}],
        ),
        _cluster_role(
            "system:basic-user",
            [
                {
                    "apiGroups": ["authorization.k8s.io"],
                    "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    "verbs": ["create"],
                },
                {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
            ],
        ),
        _cluster_role(
            "view", [{"apiGroups": workload_groups, "resources": [*workloads, "namespaces"], "verbs": _READ}]
        ),
        _cluster_role(
            "edit",
            [
                {"apiGroups": workload_groups, "resources": workloads, "verbs": _READ + _WRITE},
                {
                    "apiGroups": [""],
                    "resources": ["pods/exec", "pods/ephemeralcontainers"],
                    "verbs": ["get", "create", "patch"],
                },
            ],
        ),
        _cluster_role(
            "admin",
            [
                {"apiGroups": workload_groups, "resources": workloads, "verbs": _READ + _WRITE},
                {
                    "apiGroups": [""],
                    "resources": ["pods/exec", "pods/ephemeralcontainers", "serviceaccounts/token"],
                    "verbs": ["get", "create", "patch"],
                },
                {"apiGroups": [_RBAC], "resources": ["roles", "rolebindings"], "verbs": _READ + _WRITE},
            ],
        ),
    ]


def cluster_role_bindings() -> list[dict[str, Any]]:
    return [
        _binding("cluster-admin", "cluster-admin", "system:masters"),
        _binding("system:discovery", "system:discovery", "system:authenticated"),
        _binding("system:basic-user", "system:basic-user", "system:authenticated"),
        _binding("system:public-info-viewer", "system:public-info-viewer", "system:unauthenticated"),
    ]
