"""The emulated cluster: the store plus admission, side effects (pods run, workloads reconcile) and RBAC."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from . import bootstrap, crds, events
from .audit import AuditLog
from .authn import ISSUER, Authenticator, User
from .clock import Clock
from .controllers import REPLICASETS, Controllers, random_suffix
from .errors import ApiError
from .faults import Faults
from .images import ImageStore
from .native import helper_binary
from .nodes import node_object
from .pods import DEFAULT_NODES, Event, PodRunner, apply_defaults, validate
from .rbac import CLUSTER_ROLE_BINDINGS, CLUSTER_ROLES, ROLE_BINDINGS, ROLES, Attributes, Authorizer, Rule
from .resources import BY_KEY, Registry, ResourceType
from .runtime import Runtime, UserNamespace
from .store import Store
from .validation import dns_label_problem, dns_subdomain_problem, path_segment_problem

log = logging.getLogger(__name__)
Obj = dict[str, Any]

NAMESPACES = BY_KEY[("", "namespaces")]
PODS = BY_KEY[("", "pods")]
SERVICE_ACCOUNTS = BY_KEY[("", "serviceaccounts")]
CRDS = BY_KEY[("apiextensions.k8s.io", "customresourcedefinitions")]
NODES = BY_KEY[("", "nodes")]
EVENTS = BY_KEY[("", "events")]
WORKLOADS = tuple(BY_KEY[("apps", r)] for r in ("deployments", "replicasets", "statefulsets", "daemonsets"))
MIN_TOKEN_SECONDS = 600
DEFAULT_TOKEN_SECONDS = 3600

_POD_UPDATE_FORBIDDEN = (
    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
    "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)


class Cluster:
    def __init__(
        self, workdir: Path, *, exec_requires_create: bool = True, watch_history: int = 10_000, rootless: bool = False
    ) -> None:
        self.clock = Clock()
        self.store = Store(self.clock, watch_history)
        self.resources = Registry()  # built-in resources and those the cluster's CRDs add
        self.authn = Authenticator(self.store, self.clock)
        self.authz = Authorizer(self.store)
        self.audit = AuditLog()
        self.faults = Faults()
        helper = helper_binary()
        self.images = ImageStore(workdir / "images", helper)
        self.userns = UserNamespace(helper) if rootless else None
        if self.userns is not None:
            self.userns.start()
        self.pods = PodRunner(Runtime(workdir / "pods", helper, self.userns), self.images, self.clock)
        self.controllers = Controllers(self)
        # Kubernetes >= 1.35 also requires `create` on pods/exec for the WebSocket (GET) upgrade.
        self.exec_requires_create = exec_requires_create
        self.nodes: tuple[str, ...] = ()  # the nodes the scheduler spreads pods over
        self._node_pods: dict[str, int] = {}  # pods per node, for scheduling
        self.bookmark_interval = 60.0  # seconds between watch bookmarks, as the API server's cache
        self._next_prune = 0.0  # when expired events are next dropped (emulator clock)
        self.set_nodes(DEFAULT_NODES)
        for name in bootstrap.SYSTEM_NAMESPACES:
            self.create_object(NAMESPACES, {"metadata": {"name": name}})
        for role in bootstrap.cluster_roles():
            self.store.create(CLUSTER_ROLES, role)
        for binding in bootstrap.cluster_role_bindings():
            self.store.create(CLUSTER_ROLE_BINDINGS, binding)

    def shutdown(self) -> None:
        self.store.close_watches()
        self.pods.stop_all()
        self.pods.runtime.cgroups.close()
        if self.userns is not None:
            self.userns.stop()

    # -- internal writes with side effects (no authorization) ----------------------------------------
    def create_object(self, rt: ResourceType, obj: Obj) -> Obj:
        meta = obj.setdefault("metadata", {})
        if rt is NAMESPACES:
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
        elif rt is PODS:
            apply_defaults(obj)
            obj["spec"].setdefault("nodeName", self._schedule())
            self.ensure_node(obj["spec"]["nodeName"])
        created = self.store.create(rt, obj)
        if rt is PODS:
            node = created["spec"]["nodeName"]
            self._node_pods[node] = self._node_pods.get(node, 0) + 1
        if rt is NAMESPACES:
            self.store.create(SERVICE_ACCOUNTS, {"metadata": {"name": "default", "namespace": meta["name"]}})
        elif rt is PODS:
            self.record_event(
                created,
                "Normal",
                "Scheduled",
                f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}",
                "default-scheduler",
            )
            self.pods.start(created)
            created = self.store.replace(PODS, created)
            for c in created["status"]["containerStatuses"]:
                if "running" in c["state"]:
                    self.record_event(created, "Normal", "Started", f"Started container {c['name']}", "kubelet")
                else:
                    waiting = c["state"].get("waiting") or {}
                    self.record_event(created, "Warning", "Failed", waiting.get("message", ""), "kubelet")
        return created

    def _schedule(self) -> str:
        """The scheduler's spreading, simplified: the node with the fewest pods."""
        return min(self.nodes, key=lambda n: self._node_pods.get(n, 0))

    # -- nodes, events, the kubelet's loop -------------------------------------------------------------
    def set_nodes(self, names: tuple[str, ...]) -> None:
        """Make `names` the nodes pods are scheduled to: each registered, and the previous ones that
        hold no pod removed (so a scenario's nodes replace the defaults)."""
        for name in self.nodes:
            if name not in names and not self._node_pods.get(name) and self.store.find(NODES, "", name):
                self.store.delete(NODES, "", name)
        self.nodes = names
        for name in names:
            self.ensure_node(name)

    def ensure_node(self, name: str) -> None:
        """Register a node, as its kubelet does on start; a pod bound to an unknown node brings it up."""
        if name and self.store.find(NODES, "", name) is None:
            self.store.create(NODES, node_object(name, len(self.store.list(NODES)), self.clock))

    def record_event(self, involved: Obj, type_: str, reason: str, message: str, component: str) -> None:
        host = (involved.get("spec") or {}).get("nodeName", "") if component == "kubelet" else ""
        ev = events.record(self.clock, involved, type_, reason, message, component, host)
        if self.store.find(NAMESPACES, "", ev["metadata"]["namespace"]) is not None:
            self.store.create(EVENTS, ev)

    def sync_pods(self) -> None:
        """One pass of every node's kubelet: containers that exited are noticed and restarted (with
        back-off), pod status and events follow; events older than their TTL are dropped."""
        for namespace, name in self.pods.sandbox_pods():
            stored = self.store.find(PODS, namespace, name)
            if stored is None or not self.pods.needs_sync(stored):
                continue
            pod = copy.deepcopy(stored)  # stored versions are shared with watch history: never mutated
            if (changes := self.pods.sync(pod)) is not None:
                self._pod_changed(pod, changes)
        if self.clock.now() >= self._next_prune:  # a pass over every event: not every second
            self._next_prune = self.clock.now() + 60
            horizon = self.clock.iso(self.clock.now() - events.EVENT_TTL)
            for ev in self.store.list(EVENTS, "", lambda e: (e.get("lastTimestamp") or "9") < horizon):
                self.store.delete(EVENTS, ev["metadata"]["namespace"], ev["metadata"]["name"])

    def restart_container(self, namespace: str, name: str, container: str) -> Obj:
        pod = copy.deepcopy(self.store.get(PODS, namespace, name))
        try:
            changes = self.pods.restart(pod, container)
        except KeyError as exc:
            raise ApiError.bad_request(f"container {container} is not a running app container of pod {name}") from exc
        return self._pod_changed(pod, changes)

    def _pod_changed(self, pod: Obj, changes: list[Event]) -> Obj:
        updated = self.store.replace(PODS, pod)
        for type_, reason, message in changes:
            self.record_event(updated, type_, reason, message, "kubelet")
        self.refresh_owners(updated)
        return updated

    def delete_object(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.store.delete(rt, namespace, name)
        if rt is PODS:
            node = obj["spec"].get("nodeName", "")
            self._node_pods[node] = max(0, self._node_pods.get(node, 0) - 1)
            self.pods.stop(obj)
            for c in obj["spec"]["containers"]:
                self.record_event(obj, "Normal", "Killing", f"Stopping container {c['name']}", "kubelet")
        elif rt is CRDS:  # its objects go with it
            custom = self.resources.get(crds.served(obj))
            if custom is not None and custom.key not in BY_KEY:
                for item in self.store.list(custom):
                    self.store.delete(custom, item["metadata"].get("namespace", ""), item["metadata"]["name"])
                self.resources.remove(custom.key)
        elif rt is NAMESPACES:
            for other in self.resources.all():
                if other.namespaced and not other.virtual:
                    for item in self.store.list(other, name):
                        self.delete_object(other, name, item["metadata"]["name"])
        if rt.namespaced:  # garbage collection of dependents (background cascade)
            uid = obj["metadata"]["uid"]
            for dep_rt in (REPLICASETS, PODS):
                for dep in self.store.list(
                    dep_rt,
                    namespace,
                    lambda o: any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or []),
                ):
                    self.delete_object(dep_rt, namespace, dep["metadata"]["name"])
            self.refresh_owners(obj)
        return obj

    def refresh_owners(self, obj: Obj) -> None:
        """Workload status follows its pods: refresh the owners of a pod that came or went."""
        for ref in obj["metadata"].get("ownerReferences") or []:
            rt = next((w for w in WORKLOADS if w.kind == ref.get("kind")), None)
            owner = rt and self.store.find(rt, obj["metadata"]["namespace"], ref.get("name", ""))
            if rt is not None and owner and owner["metadata"]["uid"] == ref.get("uid"):
                self.controllers.refresh(rt, owner)
                self.refresh_owners(owner)

    # -- API writes: admission, then the internal write -----------------------------------------------
    def api_create(self, rt: ResourceType, namespace: str, body: Obj, user: User) -> Obj:
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body of the request must be an object")
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + random_suffix()
        name = meta.get("name") or ""
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise ApiError.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
            if self.store.find(NAMESPACES, "", namespace) is None:
                raise ApiError.not_found(NAMESPACES, namespace)
        else:
            meta.pop("namespace", None)
        for key in ("resourceVersion", "uid", "creationTimestamp", "deletionTimestamp"):
            meta.pop(key, None)
        self._validate_name(rt, name)
        self._admit_rbac(rt, namespace, body, user)
        if rt is PODS:
            causes = validate(body)
            if causes:
                raise ApiError.invalid(rt, name, causes)
            body.pop("status", None)
        if rt is CRDS:
            return self._create_crd(body)
        self._admit_custom(rt, body)
        created = self.create_object(rt, body)
        if rt in WORKLOADS:
            self.controllers.reconcile(rt, created)
            created = self.store.get(rt, namespace, name)
        if rt is PODS:
            self.refresh_owners(created)
        return created

    def api_update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Obj,
        user: User,
        subresource: str = "",
        *,
        check_rv: bool = True,
    ) -> Obj:
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body of the request must be an object")
        current = self.store.get(rt, namespace, name)
        meta = body.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise ApiError.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        meta["name"] = name
        if rt.namespaced:
            meta["namespace"] = namespace
        rv = meta.get("resourceVersion")
        if check_rv and rv and rv != current["metadata"]["resourceVersion"]:
            raise ApiError.conflict(
                rt, name, "the object has been modified; please apply your changes to the latest version and try again"
            )
        if subresource == "status":
            new = copy.deepcopy(current)
            new["status"] = body.get("status") or {}
            return self.store.replace(rt, new)
        if rt is PODS:
            return self._update_pod(current, body, subresource)
        self._admit_custom(rt, body, current)
        if rt in (ROLE_BINDINGS, CLUSTER_ROLE_BINDINGS) and body.get("roleRef") != current.get("roleRef"):
            raise ApiError.invalid(rt, name, [("roleRef", "Invalid value: cannot change roleRef")])
        self._admit_rbac(rt, namespace, body, user)
        if "status" in current:
            body["status"] = current["status"]
        spec_changed = body.get("spec") != current.get("spec")
        if rt is NAMESPACES:
            body["spec"], body["status"] = current["spec"], current["status"]
        updated = self.store.replace(rt, body, bump_generation=spec_changed and rt in WORKLOADS)
        if rt in WORKLOADS and spec_changed:
            self.controllers.reconcile(rt, updated)
            updated = self.store.get(rt, namespace, name)
        return updated

    def _update_pod(self, current: Obj, body: Obj, subresource: str) -> Obj:
        name = current["metadata"]["name"]
        new_spec = body.get("spec") or {}
        old = current["spec"].get("ephemeralContainers") or []
        if subresource == "ephemeralcontainers":
            wanted = new_spec.get("ephemeralContainers") or []
            by_name = {c.get("name"): c for c in wanted}
            for i, existing in enumerate(old):
                if by_name.get(existing["name"]) != existing:
                    raise ApiError.invalid(
                        PODS,
                        name,
                        [
                            (
                                f"spec.ephemeralContainers[{i}]",
                                f'Forbidden: existing ephemeral containers "{existing["name"]}" may not be changed',
                            )
                        ],
                    )
            spec = copy.deepcopy(current["spec"])
            spec["ephemeralContainers"] = wanted
            candidate = dict(current, spec=spec)
            causes = validate(candidate)
            known = {c["name"] for c in spec["containers"]}
            for i, c in enumerate(wanted):
                target = c.get("targetContainerName")
                if target and target not in known:
                    causes.append((f"spec.ephemeralContainers[{i}].targetContainerName", f'Not found: "{target}"'))
            if causes:
                raise ApiError.invalid(PODS, name, causes)
            for c in wanted:
                c.setdefault("terminationMessagePolicy", "File")
                c.setdefault("imagePullPolicy", "IfNotPresent")
            new = copy.deepcopy(current)
            new["spec"] = spec
            self.pods.add_ephemeral(new, wanted[len(old) :])
            return self.store.replace(PODS, new)
        if new_spec and new_spec != current["spec"]:
            merged = copy.deepcopy(current["spec"])
            merged.update(new_spec)
            apply_defaults({"spec": merged})
            if merged != current["spec"]:
                raise ApiError.invalid(PODS, name, [("spec", _POD_UPDATE_FORBIDDEN)])
        new = copy.deepcopy(current)
        new["metadata"] = dict(
            current["metadata"],
            **{
                k: v
                for k, v in (body.get("metadata") or {}).items()
                if k in ("labels", "annotations", "ownerReferences", "finalizers")
            },
        )
        return self.store.replace(PODS, new)

    def api_delete(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        self.store.get(rt, namespace, name)
        return self.delete_object(rt, namespace, name)

    def _create_crd(self, body: Obj) -> Obj:
        name = body["metadata"]["name"]
        causes = crds.definition_problems(body)
        spec = body.get("spec") or {}
        if not causes and self.resources.get(crds.served(body)) is not None:
            causes = [("spec.names.plural", f'Invalid value: "{spec["names"]["plural"]}": already served')]
        if causes:
            raise ApiError.invalid(CRDS, name, causes)
        custom = crds.resource_of(body)
        body["status"] = crds.established(body, self.clock.iso())
        created = self.store.create(CRDS, body)
        self.resources.add(custom)
        return created

    def _admit_custom(self, rt: ResourceType, body: Obj, current: Obj | None = None) -> None:
        """A custom object must match its CRD's schema; an updated CRD must still be valid and serve
        the same group and plural (its new schema applies from then on)."""
        name = body["metadata"].get("name", "")
        if (custom := self.resources.custom(rt)) is not None and (causes := crds.object_problems(custom, body)):
            raise ApiError.invalid(rt, name, causes)
        if rt is CRDS and current is not None:
            causes = crds.definition_problems(body)
            if not causes and crds.served(body) != crds.served(current):
                causes = [("spec", "Invalid value: group and names.plural are immutable")]
            if causes:
                raise ApiError.invalid(CRDS, name, causes)
            self.resources.add(crds.resource_of(body))

    # -- admission helpers -----------------------------------------------------------------------------
    def _validate_name(self, rt: ResourceType, name: str) -> None:
        if not name:
            raise ApiError.invalid(rt, name, [("metadata.name", "Required value: name or generateName is required")])
        if rt.group == "rbac.authorization.k8s.io":
            problem = path_segment_problem(name)
        elif rt is NAMESPACES:
            problem = dns_label_problem(name)
        else:
            problem = dns_subdomain_problem(name)
        if problem:
            raise ApiError.invalid(rt, name, [("metadata.name", f'Invalid value: "{name}": {problem}')])

    def _admit_rbac(self, rt: ResourceType, namespace: str, body: Obj, user: User) -> None:
        """Escalation prevention: grant only what you hold, unless you may `escalate` or `bind`."""
        name = body["metadata"]["name"]
        if rt in (ROLES, CLUSTER_ROLES):
            rules = [Rule.from_dict(r) for r in body.get("rules") or []]
            for i, raw in enumerate(body.get("rules") or []):
                if not raw.get("verbs"):
                    raise ApiError.invalid(
                        rt, name, [(f"rules[{i}].verbs", "Required value: verbs must contain at least one value")]
                    )
            if self.authz.allowed(user, Attributes("escalate", namespace, rt.group, rt.resource, name=name)):
                return
            missing = self.authz.ungranted(user, namespace if rt is ROLES else "", rules)
        elif rt in (ROLE_BINDINGS, CLUSTER_ROLE_BINDINGS):
            ref = body.get("roleRef") or {}
            if ref.get("kind") not in ("Role", "ClusterRole") or not ref.get("name"):
                raise ApiError.invalid(
                    rt, name, [("roleRef", "Required value: roleRef kind Role or ClusterRole and a name")]
                )
            ref_rt = ROLES if ref["kind"] == "Role" else CLUSTER_ROLES
            if self.authz.allowed(user, Attributes("bind", namespace, ref_rt.group, ref_rt.resource, name=ref["name"])):
                return
            role = self.store.find(ref_rt, namespace if ref_rt is ROLES else "", ref["name"])
            rules = [Rule.from_dict(r) for r in (role or {}).get("rules") or []]
            missing = self.authz.ungranted(user, namespace if rt is ROLE_BINDINGS else "", rules)
        else:
            return
        if missing:
            groups = " ".join(f'"{g}"' for g in user.groups)
            raise ApiError.forbidden(
                f'{rt.resource}.{rt.group} "{name}" is forbidden: user "{user.name}" (groups=[{groups}]) is '
                f"attempting to grant RBAC permissions not currently held:\n"
                + "\n".join(m.describe() for m in missing),
                rt,
                name,
            )

    # -- virtual resources -----------------------------------------------------------------------------
    def token_request(self, namespace: str, sa_name: str, body: Obj) -> Obj:
        sa = self.store.get(SERVICE_ACCOUNTS, namespace, sa_name)
        spec = dict((body or {}).get("spec") or {})
        seconds = spec.get("expirationSeconds")
        seconds = DEFAULT_TOKEN_SECONDS if seconds is None else int(seconds)
        if seconds < MIN_TOKEN_SECONDS:
            raise ApiError(
                422,
                "Invalid",
                f'TokenRequest.authentication.k8s.io "{sa_name}" is invalid: '
                f"spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration less than "
                "10 minutes",
                {
                    "name": sa_name,
                    "group": "authentication.k8s.io",
                    "kind": "TokenRequest",
                    "causes": [
                        {
                            "reason": "FieldValueInvalid",
                            "field": "spec.expirationSeconds",
                            "message": f"Invalid value: {seconds}: may not specify a duration less than 10 minutes",
                        }
                    ],
                },
            )
        audiences = spec.get("audiences") or [ISSUER]
        token, exp = self.authn.issue(namespace, sa, seconds, audiences)
        spec.update(expirationSeconds=seconds, audiences=audiences)
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": sa_name, "namespace": namespace, "creationTimestamp": self.clock.iso()},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": self.clock.iso(exp)},
        }

    def review(self, rt: ResourceType, namespace: str, body: Obj, user: User) -> Obj:
        spec = (body or {}).get("spec") or {}
        out: Obj = {
            "kind": rt.kind,
            "apiVersion": rt.api_version,
            "metadata": (body or {}).get("metadata") or {},
            "spec": spec,
        }
        if rt.resource in ("selfsubjectaccessreviews", "subjectaccessreviews", "localsubjectaccessreviews"):
            subject = user
            if rt.resource != "selfsubjectaccessreviews":
                subject = User(spec.get("user", ""), tuple(spec.get("groups") or ()), spec.get("uid", ""))
            ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
            if ra:
                attrs = Attributes(
                    ra.get("verb", ""),
                    namespace or ra.get("namespace", ""),
                    ra.get("group", ""),
                    ra.get("resource", ""),
                    ra.get("subresource", ""),
                    ra.get("name", ""),
                )
            elif nra:
                attrs = Attributes(nra.get("verb", ""), is_resource=False, path=nra.get("path", ""))
            else:
                raise ApiError.invalid(
                    rt,
                    "",
                    [
                        (
                            "spec",
                            "Invalid value: exactly one of nonResourceAttributes or "
                            "resourceAttributes must be specified",
                        )
                    ],
                )
            allowed = self.authz.allowed(subject, attrs)
            out["status"] = {"allowed": allowed}
        elif rt.resource == "selfsubjectrulesreviews":
            rules = self.authz.rules_for(user, spec.get("namespace", ""))
            if user.is_master:
                rules = [Rule(("*",), ("*",), ("*",)), Rule(("*",), non_resource_urls=("*",))]
            out["status"] = {
                "resourceRules": [r.to_dict() for r in rules if not r.non_resource_urls],
                "nonResourceRules": [r.to_dict() for r in rules if r.non_resource_urls],
                "incomplete": False,
            }
        elif rt.resource == "tokenreviews":
            who = self.authn.authenticate(spec.get("token") or "")
            out["status"] = {"authenticated": bool(who and who.name != "system:anonymous")}
            if out["status"]["authenticated"] and who:
                out["status"]["user"] = who.describe()
        elif rt.resource == "selfsubjectreviews":
            out["status"] = {"userInfo": user.describe()}
        return out
