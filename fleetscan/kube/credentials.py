"""Per-namespace, per-run scan credentials: a ServiceAccount, a Role naming exactly the pods to scan,
a RoleBinding and a short-lived TokenRequest token, all deleted when the namespace is done.

The orchestrator's own identity creates these objects and never execs; the scan holds only the
narrow token. Kubernetes lets an identity grant only what it holds (or with `escalate`/`bind`), so
the orchestrator's ClusterRole (deployments/rbac/orchestrator.yaml) includes the exec rights it
delegates.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from ..errors import FleetscanError, KubeError, UsageError
from .client import Kube
from .failures import classify
from .names import check_label, check_subdomain

MANAGED_BY = "app.kubernetes.io/managed-by"
RUN_ID = "fleetscan.io/run-id"
EXPIRES = "fleetscan.io/expires-at"
RBAC_GROUP = "rbac.authorization.k8s.io"
MIN_TOKEN_SECONDS = 600

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CredentialSettings:
    token_seconds: int = 900
    # Refresh once this share of the token's life is gone (local clock), or at once on a 401.
    refresh_after: float = 0.75
    # How long after its token would expire an object may linger before `fleetscan gc` takes it.
    expiry_grace_seconds: int = 300

    def __post_init__(self) -> None:
        if self.token_seconds < MIN_TOKEN_SECONDS:
            raise UsageError(
                f"token lifetime {self.token_seconds} s: the API server's minimum is {MIN_TOKEN_SECONDS} s (10 minutes)"
            )


def object_name(run_id: str) -> str:
    return f"fleetscan-{check_label(run_id, 'run id')}"[:63].rstrip("-")


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def role_rules(exec_pods: list[str], debug_pods: list[str]) -> list[dict[str, Any]]:
    """Exactly the pods to scan: read them, exec into them, and add debug containers to some."""
    pods = sorted(set(exec_pods) | set(debug_pods))
    rules: list[dict[str, Any]] = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": pods},
        # WebSocket exec is a GET; Kubernetes 1.35+ also checks create on the upgrade.
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"], "resourceNames": list(pods)},
    ]
    if debug_pods:
        rules.append(
            {
                "apiGroups": [""],
                "resources": ["pods/ephemeralcontainers"],
                "verbs": ["get", "patch"],
                "resourceNames": sorted(set(debug_pods)),
            }
        )
    return rules


def manifests(
    namespace: str,
    run_id: str,
    exec_pods: list[str],
    debug_pods: list[str],
    settings: CredentialSettings | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The ServiceAccount, Role and RoleBinding a run creates in one namespace."""
    settings = settings or CredentialSettings()
    check_label(namespace, "namespace")
    for pod in [*exec_pods, *debug_pods]:
        check_subdomain(pod, "pod")
    if not exec_pods and not debug_pods:
        raise UsageError(f'namespace "{namespace}": no pods to grant access to')
    name = object_name(run_id)
    expires = (now or datetime.now(UTC)) + timedelta(seconds=settings.token_seconds + settings.expiry_grace_seconds)

    def meta() -> dict[str, Any]:  # a fresh dict per object: the manifests are edited separately
        return {
            "name": name,
            "namespace": namespace,
            "labels": {MANAGED_BY: "fleetscan", RUN_ID: run_id},
            "annotations": {EXPIRES: _iso(expires)},
        }

    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(), "automountServiceAccountToken": False},
        {
            "apiVersion": f"{RBAC_GROUP}/v1",
            "kind": "Role",
            "metadata": meta(),
            "rules": role_rules(exec_pods, debug_pods),
        },
        {
            "apiVersion": f"{RBAC_GROUP}/v1",
            "kind": "RoleBinding",
            "metadata": meta(),
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]


class NamespaceCredentials:
    """A context manager: objects created on enter, deleted on exit whatever happened inside."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        run_id: str,
        exec_pods: list[str],
        debug_pods: list[str] | None = None,
        settings: CredentialSettings | None = None,
    ) -> None:
        self.settings = settings or CredentialSettings()
        self.namespace = namespace
        self.name = object_name(run_id)
        self._kube = kube
        self._run_id = run_id
        self._exec_pods = sorted(set(exec_pods))
        self._debug_pods = sorted(set(debug_pods or []))
        self._manifests = manifests(namespace, run_id, self._exec_pods, self._debug_pods, self.settings)
        self._token = ""
        self._issued = 0.0
        self._lock = threading.Lock()
        self.refreshes = 0

    # -- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> NamespaceCredentials:
        sa, role, binding = self._manifests
        try:
            self._create(
                lambda: self._kube.core.create_namespaced_service_account(self.namespace, sa), "serviceaccount"
            )
            self._create(lambda: self._kube.rbac.create_namespaced_role(self.namespace, role), "role")
            self._create(lambda: self._kube.rbac.create_namespaced_role_binding(self.namespace, binding), "rolebinding")
            self.refresh()
        except BaseException:
            self.revoke()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.revoke()

    def _create(self, call: Any, kind: str) -> None:
        try:
            call()
        except Exception as exc:
            err = classify(exc, f'create {kind} "{self.name}" in namespace "{self.namespace}"')
            if isinstance(err, KubeError) and err.status == 409:
                self._adopt(kind)  # left by an interrupted attempt of this same run: take it over
                return
            raise err from exc

    def _adopt(self, kind: str) -> None:
        """Bring an object of this run that already exists to what this attempt wants."""
        sa, role, binding = self._manifests
        try:
            if kind == "role":
                patch = {"rules": role["rules"], "metadata": role["metadata"]}
                self._kube.rbac.patch_namespaced_role(self.name, self.namespace, patch)
            elif kind == "serviceaccount":
                self._kube.core.patch_namespaced_service_account(
                    self.name, self.namespace, {"metadata": sa["metadata"]}
                )
            else:
                patch = {"metadata": binding["metadata"]}
                self._kube.rbac.patch_namespaced_role_binding(self.name, self.namespace, patch)
        except Exception as exc:
            raise classify(exc, f'take over {kind} "{self.name}" in namespace "{self.namespace}"') from exc

    def revoke(self) -> None:
        """Delete what this run created here; deleting the ServiceAccount also invalidates its tokens."""
        self._token = ""
        failures = []
        deleters: tuple[tuple[str, Callable[[str, str], object]], ...] = (
            ("rolebinding", self._kube.rbac.delete_namespaced_role_binding),
            ("role", self._kube.rbac.delete_namespaced_role),
            ("serviceaccount", self._kube.core.delete_namespaced_service_account),
        )
        for kind, delete in deleters:
            try:
                delete(self.name, self.namespace)
            except Exception as exc:
                err = classify(exc, f'delete {kind} "{self.name}" in namespace "{self.namespace}"')
                if not (isinstance(err, KubeError) and err.status == 404):
                    failures.append(str(err))
        if failures:  # the expiry annotation lets `fleetscan gc` finish the job
            log.warning("cleanup incomplete, `fleetscan gc` will retry: %s", "; ".join(failures))

    # -- token --------------------------------------------------------------------------------------
    def refresh(self) -> str:
        body = {"spec": {"expirationSeconds": self.settings.token_seconds}}
        try:
            tr = self._kube.core.create_namespaced_service_account_token(self.name, self.namespace, body)
        except Exception as exc:
            raise classify(
                exc,
                f'request a token for serviceaccount "{self.name}" in namespace '
                f'"{self.namespace}" (the orchestrator needs create on serviceaccounts/token)',
            ) from exc
        with self._lock:
            self._token = tr.status.token
            self._issued = time.monotonic()
            self.refreshes += 1
        if self.refreshes > 1:
            self._extend_expiry()
        return self._token

    def _extend_expiry(self) -> None:
        """A run still in progress must not look like a dead run's leftovers to `fleetscan gc`."""
        expires = datetime.now(UTC) + timedelta(
            seconds=self.settings.token_seconds + self.settings.expiry_grace_seconds
        )
        patch = {"metadata": {"annotations": {EXPIRES: _iso(expires)}}}
        for kind, call in (
            ("serviceaccount", self._kube.core.patch_namespaced_service_account),
            ("role", self._kube.rbac.patch_namespaced_role),
            ("rolebinding", self._kube.rbac.patch_namespaced_role_binding),
        ):
            try:
                call(self.name, self.namespace, patch)
            except Exception as exc:
                raise classify(
                    exc, f'extend the expiry of {kind} "{self.name}" in namespace "{self.namespace}"'
                ) from exc

    def token(self) -> str:
        """The current token, refreshed first when most of its life is gone."""
        with self._lock:
            fresh = self._token and (
                time.monotonic() - self._issued < self.settings.token_seconds * self.settings.refresh_after
            )
            token = self._token
        if not token:
            raise FleetscanError(f'namespace "{self.namespace}": the scan credentials were revoked')
        return token if fresh else self.refresh()

    def scan_client(self) -> Kube:
        """A client that authenticates with the narrow token (always the current one)."""
        return self._kube.with_token(self.token, self.refresh)

    def grant_debug(self, pods: list[str]) -> None:
        """Add pods that need an ephemeral debug container to the Role (found out while scanning)."""
        wanted = sorted(set(self._debug_pods) | set(pods))
        if wanted == self._debug_pods:
            return
        for pod in pods:
            check_subdomain(pod, "pod")
        self._debug_pods = wanted
        rules = role_rules(self._exec_pods, self._debug_pods)
        try:
            self._kube.rbac.patch_namespaced_role(self.name, self.namespace, {"rules": rules})
        except Exception as exc:
            raise classify(exc, f'grant debug access in role "{self.name}" in namespace "{self.namespace}"') from exc

    @contextlib.contextmanager
    def kubeconfig(self) -> Iterator[Path]:
        """A kubeconfig holding the narrow token, for external tools: mode 0600 in a private folder,
        deleted afterwards."""
        folder = Path(tempfile.mkdtemp(prefix="fleetscan-kc-"))  # mkdtemp makes it 0700
        path = folder / "kubeconfig"
        try:
            cfg = self._kube.configuration
            cluster: dict[str, Any] = {"server": cfg.host}
            if cfg.ssl_ca_cert:  # embedded: the tool may outlive the client's own temporary CA file
                cluster["certificate-authority-data"] = base64.b64encode(Path(cfg.ssl_ca_cert).read_bytes()).decode()
            if not cfg.verify_ssl:
                cluster["insecure-skip-tls-verify"] = True
            doc = {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fleetscan",
                "clusters": [{"name": "target", "cluster": cluster}],
                "users": [{"name": self.name, "user": {"token": self.token()}}],
                "contexts": [
                    {
                        "name": "fleetscan",
                        "context": {"cluster": "target", "user": self.name, "namespace": self.namespace},
                    }
                ],
            }
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                yaml.safe_dump(doc, fh)
            yield path
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _sweep(kube: Kube, selector: str, what: str, doomed: Callable[[str, Any], bool]) -> list[str]:
    """Delete the run objects (bindings first) matching `selector` for which `doomed(kind, obj)`."""
    kinds: tuple[tuple[str, Callable[..., Any], Callable[[str, str], object]], ...] = (
        ("rolebinding", kube.rbac.list_role_binding_for_all_namespaces, kube.rbac.delete_namespaced_role_binding),
        ("role", kube.rbac.list_role_for_all_namespaces, kube.rbac.delete_namespaced_role),
        (
            "serviceaccount",
            kube.core.list_service_account_for_all_namespaces,
            kube.core.delete_namespaced_service_account,
        ),
    )
    deleted = []
    for kind, lister, deleter in kinds:
        try:
            items = lister(label_selector=selector).items
        except Exception as exc:
            raise classify(exc, f"list {kind}s {what}") from exc
        for obj in items:
            if not doomed(kind, obj):
                continue
            name, namespace = obj.metadata.name, obj.metadata.namespace
            try:
                deleter(name, namespace)
            except Exception as exc:
                err = classify(exc, f'delete {kind} "{name}" in "{namespace}"')
                if not (isinstance(err, KubeError) and err.status == 404):
                    raise err from exc
            deleted.append(f"{kind}/{namespace}/{name}")
    return deleted


def collect_garbage(kube: Kube, now: datetime | None = None) -> list[str]:
    """Delete fleetscan's leftovers (a killed run's) whose expiry has passed. Returns what went."""
    moment = now or datetime.now(UTC)

    def expired(kind: str, obj: Any) -> bool:
        stamp = (obj.metadata.annotations or {}).get(EXPIRES, "")
        try:
            return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) <= moment
        except ValueError:
            log.warning(
                "%s %s/%s has no readable %s annotation; left alone",
                kind,
                obj.metadata.namespace,
                obj.metadata.name,
                EXPIRES,
            )
            return False

    return _sweep(kube, f"{MANAGED_BY}=fleetscan", "managed by fleetscan", expired)


def revoke_run(kube: Kube, run_id: str) -> list[str]:
    """Delete every object a run created, in every namespace (after a crash or cancellation)."""
    selector = f"{MANAGED_BY}=fleetscan,{RUN_ID}={check_label(run_id, 'run id')}"
    return _sweep(kube, selector, f"of run {run_id}", lambda kind, obj: True)
