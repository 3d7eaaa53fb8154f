"""The API resources the emulator serves: the single table discovery, routing and RBAC read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

READ = ("get", "list", "watch")
CRUD = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Subresource:
    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str = ""
    version: str = ""


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    resource: str
    kind: str
    namespaced: bool
    singular: str
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = CRUD
    subresources: tuple[Subresource, ...] = ()
    categories: tuple[str, ...] = ()
    # Create-only "virtual" resources (reviews): never stored.
    virtual: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.resource)

    def subresource(self, name: str) -> Subresource | None:
        return next((s for s in self.subresources if s.name == name), None)


_REVIEW = ("create",)
_APPS_SUBS = (
    Subresource("status", "", ("get", "patch", "update")),
    Subresource("scale", "Scale", ("get", "patch", "update"), "autoscaling", "v1"),
)

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "namespaces",
        "Namespace",
        False,
        "namespace",
        ("ns",),
        ("create", "delete", "get", "list", "patch", "update", "watch"),
        (
            Subresource("status", "Namespace", ("get", "patch", "update")),
            Subresource("finalize", "Namespace", ("update",)),
        ),
    ),
    ResourceType(
        "",
        "v1",
        "pods",
        "Pod",
        True,
        "pod",
        ("po",),
        CRUD,
        (
            Subresource("exec", "PodExecOptions", ("create", "get")),
            Subresource("log", "Pod", ("get",)),
            Subresource("ephemeralcontainers", "Pod", ("get", "patch", "update")),
            Subresource("status", "Pod", ("get", "patch", "update")),
        ),
        ("all",),
    ),
    ResourceType(
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        True,
        "serviceaccount",
        ("sa",),
        CRUD,
        (Subresource("token", "TokenRequest", ("create",), "authentication.k8s.io", "v1"),),
    ),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, "configmap", ("cm",)),
    ResourceType(
        "",
        "v1",
        "nodes",
        "Node",
        False,
        "node",
        ("no",),
        CRUD,
        (Subresource("status", "Node", ("get", "patch", "update")),),
    ),
    ResourceType("", "v1", "events", "Event", True, "event", ("ev",)),
    # The same objects as core/v1 events, seen through the events.k8s.io/v1 schema (api.py converts).
    ResourceType("events.k8s.io", "v1", "events", "Event", True, "event", ("ev",)),
    ResourceType("", "v1", "secrets", "Secret", True, "secret"),
    ResourceType(
        "apps", "v1", "deployments", "Deployment", True, "deployment", ("deploy",), CRUD, _APPS_SUBS, ("all",)
    ),
    ResourceType("apps", "v1", "replicasets", "ReplicaSet", True, "replicaset", ("rs",), CRUD, _APPS_SUBS, ("all",)),
    ResourceType(
        "apps", "v1", "statefulsets", "StatefulSet", True, "statefulset", ("sts",), CRUD, _APPS_SUBS, ("all",)
    ),
    ResourceType("apps", "v1", "daemonsets", "DaemonSet", True, "daemonset", ("ds",), CRUD, (_APPS_SUBS[0],), ("all",)),
    ResourceType(
        "batch",
        "v1",
        "jobs",
        "Job",
        True,
        "job",
        (),
        CRUD,
        (Subresource("status", "Job", ("get", "patch", "update")),),
        ("all",),
    ),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role", True, "role"),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, "rolebinding"),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, "clusterrole"),
    ResourceType(
        "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False, "clusterrolebinding"
    ),
    # Stored and served (kubectl maps and validates them), never enforced: the emulator has no CEL.
    ResourceType(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicies",
        "ValidatingAdmissionPolicy",
        False,
        "validatingadmissionpolicy",
        (),
        CRUD,
        (Subresource("status", "ValidatingAdmissionPolicy", ("get", "patch", "update")),),
    ),
    ResourceType(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding",
        False,
        "validatingadmissionpolicybinding",
    ),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        "customresourcedefinition",
        ("crd", "crds"),
        CRUD,
        (Subresource("status", "CustomResourceDefinition", ("get", "patch", "update")),),
    ),
    ResourceType(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        False,
        "selfsubjectaccessreview",
        (),
        _REVIEW,
        virtual=True,
    ),
    ResourceType(
        "authorization.k8s.io",
        "v1",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        False,
        "selfsubjectrulesreview",
        (),
        _REVIEW,
        virtual=True,
    ),
    ResourceType(
        "authorization.k8s.io",
        "v1",
        "subjectaccessreviews",
        "SubjectAccessReview",
        False,
        "subjectaccessreview",
        (),
        _REVIEW,
        virtual=True,
    ),
    ResourceType(
        "authorization.k8s.io",
        "v1",
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        True,
        "localsubjectaccessreview",
        (),
        _REVIEW,
        virtual=True,
    ),
    ResourceType(
        "authentication.k8s.io", "v1", "tokenreviews", "TokenReview", False, "tokenreview", (), _REVIEW, virtual=True
    ),
    ResourceType(
        "authentication.k8s.io",
        "v1",
        "selfsubjectreviews",
        "SelfSubjectReview",
        False,
        "selfsubjectreview",
        (),
        _REVIEW,
        virtual=True,
    ),
)

BY_KEY: dict[tuple[str, str], ResourceType] = {r.key: r for r in RESOURCES}
BY_KIND: dict[tuple[str, str], ResourceType] = {(r.group, r.kind): r for r in RESOURCES}
GROUP_VERSIONS: dict[str, str] = {r.group: r.version for r in RESOURCES}


def lookup(group: str, version: str, resource: str) -> ResourceType | None:
    found = BY_KEY.get((group, resource))
    return found if found and found.version == version else None


def by_kind(kind: str) -> ResourceType:
    """The resource for a workload kind named in a scenario or an ownerReference."""
    for r in RESOURCES:
        if r.kind == kind and not r.virtual:
            return r
    raise KeyError(kind)


@dataclass(frozen=True)
class CustomResource:
    """A resource a CustomResourceDefinition added: its type, the schema its objects are validated
    against, and the columns `kubectl get` shows."""

    type: ResourceType
    schema: dict[str, Any]
    columns: tuple[dict[str, Any], ...] = ()


class Registry:
    """One cluster's resources: the built-in ones plus those its CRDs define (each emulator its own)."""

    def __init__(self) -> None:
        self._custom: dict[tuple[str, str], CustomResource] = {}

    def lookup(self, group: str, version: str, resource: str) -> ResourceType | None:
        found = self.get((group, resource))
        return found if found and found.version == version else None

    def get(self, key: tuple[str, str]) -> ResourceType | None:
        custom = self._custom.get(key)
        return custom.type if custom else BY_KEY.get(key)

    def custom(self, rt: ResourceType) -> CustomResource | None:
        found = self._custom.get(rt.key)
        return found if found is not None and found.type is rt else None

    def all(self) -> tuple[ResourceType, ...]:
        return RESOURCES + tuple(c.type for c in self._custom.values())

    def group_versions(self) -> dict[str, str]:
        return {**GROUP_VERSIONS, **{c.type.group: c.type.version for c in self._custom.values()}}

    def add(self, custom: CustomResource) -> None:
        self._custom[custom.type.key] = custom

    def remove(self, key: tuple[str, str]) -> None:
        self._custom.pop(key, None)
