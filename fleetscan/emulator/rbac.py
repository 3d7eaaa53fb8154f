"""RBAC as the API server evaluates it, including escalation prevention for roles and bindings."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .authn import User
from .resources import BY_KEY
from .store import Store

ROLES = BY_KEY[("rbac.authorization.k8s.io", "roles")]
ROLE_BINDINGS = BY_KEY[("rbac.authorization.k8s.io", "rolebindings")]
CLUSTER_ROLES = BY_KEY[("rbac.authorization.k8s.io", "clusterroles")]
CLUSTER_ROLE_BINDINGS = BY_KEY[("rbac.authorization.k8s.io", "clusterrolebindings")]


@dataclass(frozen=True)
class Attributes:
    verb: str
    namespace: str = ""
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    is_resource: bool = True
    path: str = ""


@dataclass(frozen=True)
class Rule:
    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Rule:
        return cls(
            tuple(raw.get("verbs") or ()),
            tuple(raw.get("apiGroups") or ()),
            tuple(raw.get("resources") or ()),
            tuple(raw.get("resourceNames") or ()),
            tuple(raw.get("nonResourceURLs") or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"verbs": list(self.verbs)}
        if self.non_resource_urls:
            out["nonResourceURLs"] = list(self.non_resource_urls)
        else:
            out["apiGroups"] = list(self.api_groups)
            out["resources"] = list(self.resources)
        if self.resource_names:
            out["resourceNames"] = list(self.resource_names)
        return out

    def describe(self) -> str:
        """The API server's rendering of an ungranted rule in escalation errors."""
        if self.non_resource_urls:
            return f'{{NonResourceURLs:["{self.non_resource_urls[0]}"], Verbs:["{self.verbs[0]}"]}}'
        names = f', ResourceNames:["{self.resource_names[0]}"]' if self.resource_names else ""
        return (
            f'{{APIGroups:["{self.api_groups[0]}"], Resources:["{self.resources[0]}"]{names}, '
            f'Verbs:["{self.verbs[0]}"]}}'
        )

    def allows(self, a: Attributes) -> bool:
        if "*" not in self.verbs and a.verb not in self.verbs:
            return False
        if not a.is_resource:
            return any(
                u == "*" or u == a.path or (u.endswith("*") and a.path.startswith(u[:-1]))
                for u in self.non_resource_urls
            )
        if "*" not in self.api_groups and a.api_group not in self.api_groups:
            return False
        combined = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
        if not any(r == "*" or r == combined or (a.subresource and r == f"*/{a.subresource}") for r in self.resources):
            return False
        return not self.resource_names or a.name in self.resource_names


def _subject_matches(subject: dict[str, Any], user: User, binding_ns: str) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return bool(subject.get("name") == user.name)
    if kind == "Group":
        return subject.get("name") in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_ns
        return user.name == f"system:serviceaccount:{ns}:{subject.get('name')}"
    return False


class Authorizer:
    def __init__(self, store: Store) -> None:
        self._store = store

    def _role_rules(self, ref: dict[str, Any], namespace: str) -> list[Rule]:
        if ref.get("kind") == "ClusterRole":
            role = self._store.find(CLUSTER_ROLES, "", ref.get("name", ""))
            if role and role.get("aggregationRule"):
                return self._aggregated(role)
        else:
            role = self._store.find(ROLES, namespace, ref.get("name", ""))
        return [Rule.from_dict(r) for r in (role or {}).get("rules") or []]

    def _aggregated(self, role: dict[str, Any]) -> list[Rule]:
        from .selectors import selector_matches

        rules = [Rule.from_dict(r) for r in role.get("rules") or []]
        for selector in role["aggregationRule"].get("clusterRoleSelectors") or []:
            for other in self._store.list(CLUSTER_ROLES):
                if other is not role and selector_matches(selector, other["metadata"].get("labels") or {}):
                    rules.extend(Rule.from_dict(r) for r in other.get("rules") or [])
        return rules

    def rules_for(self, user: User, namespace: str) -> list[Rule]:
        """Every rule that applies to the user in the namespace (cluster-wide ones included)."""
        rules: list[Rule] = []
        for crb in self._store.list(CLUSTER_ROLE_BINDINGS):
            if any(_subject_matches(s, user, "") for s in crb.get("subjects") or []):
                rules.extend(self._role_rules(crb.get("roleRef") or {}, ""))
        if namespace:
            for rb in self._store.list(ROLE_BINDINGS, namespace):
                if any(_subject_matches(s, user, namespace) for s in rb.get("subjects") or []):
                    rules.extend(self._role_rules(rb.get("roleRef") or {}, namespace))
        return rules

    def allowed(self, user: User, attrs: Attributes) -> bool:
        if user.is_master:
            return True
        return any(rule.allows(attrs) for rule in self.rules_for(user, attrs.namespace))

    def ungranted(self, user: User, namespace: str, wanted: Iterable[Rule]) -> list[Rule]:
        """Atomic rules among `wanted` that the user does not hold itself (escalation check)."""
        if user.is_master:
            return []
        held = self.rules_for(user, namespace)
        return [atom for atom in _atoms(wanted) if not any(_covers(h, atom) for h in held)]


def _atoms(rules: Iterable[Rule]) -> list[Rule]:
    """Break rules into one verb x group x resource x name each, like the API server's validation."""
    out: list[Rule] = []
    for r in rules:
        for verb in r.verbs:
            if r.non_resource_urls:
                out.extend(Rule((verb,), non_resource_urls=(u,)) for u in r.non_resource_urls)
                continue
            for group in r.api_groups:
                for res in r.resources:
                    names = r.resource_names or ("",)
                    out.extend(Rule((verb,), (group,), (res,), (n,) if n else ()) for n in names)
    return out


def _covers(owner: Rule, atom: Rule) -> bool:
    if "*" not in owner.verbs and atom.verbs[0] not in owner.verbs:
        return False
    if atom.non_resource_urls:
        url = atom.non_resource_urls[0]
        return any(
            u == "*" or u == url or (u.endswith("*") and url.startswith(u[:-1])) for u in owner.non_resource_urls
        )
    if "*" not in owner.api_groups and atom.api_groups[0] not in owner.api_groups:
        return False
    res = atom.resources[0]
    sub = res.split("/", 1)[1] if "/" in res else ""
    if not any(r == "*" or r == res or (sub and r == f"*/{sub}") for r in owner.resources):
        return False
    if owner.resource_names:
        return bool(atom.resource_names) and atom.resource_names[0] in owner.resource_names
    return True
