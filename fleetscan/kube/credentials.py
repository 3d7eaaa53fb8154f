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

from ..errors import Conflict, FleetscanError, Forbidden, NotFound, UsageError
from .client import Kube
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


def merge_rules(*groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One rule per (apiGroups, resources, verbs), naming the union of the pods of its sources."""
    merged: dict[tuple[tuple[str, ...], ...], set[str]] = {}
    for rules in groups:
        for rule in rules:
            key = (tuple(rule["apiGroups"]), tuple(rule["resources"]), tuple(rule["verbs"]))
            merged.setdefault(key, set()).update(rule.get("resourceNames") or [])
    return [
        {"apiGroups": list(g), "resources": list(r), "verbs": list(v), "resourceNames": sorted(names)}
        for (g, r, v), names in merged.items()
    ]


def _check_rules(namespace: str, rules: list[dict[str, Any]]) -> None:
    pods = [p for rule in rules for p in rule.get("resourceNames") or []]
    for pod in pods:
        check_subdomain(pod, "pod")
    if not pods:
        raise UsageError(f'namespace "{namespace}": no pods to grant access to')


def manifests(
    namespace: str,
    run_id: str,
    rules: list[dict[str, Any]],
    settings: CredentialSettings | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The ServiceAccount, Role and RoleBinding a run creates in one namespace; every rule names
    exactly the pods it grants (`resourceNames`)."""
    settings = settings or CredentialSettings()
    check_label(namespace, "namespace")
    _check_rules(namespace, rules)
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
            "rules": merge_rules(rules),
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
    """A context manager: objects created on enter, deleted on exit whatever happened inside.

    `rules` are what the scan token may do at first (usually: exec into the pods to scan); `grant`
    adds rules later, when a container turns out to need another way in (a debug container)."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        run_id: str,
        rules: list[dict[str, Any]],
        settings: CredentialSettings | None = None,
    ) -> None:
        self.settings = settings or CredentialSettings()
        self.namespace = namespace
        self.name = object_name(run_id)
        self._kube = kube
        self._run_id = run_id
        self._rules = merge_rules(rules)
        self._manifests = manifests(namespace, run_id, self._rules, self.settings)
        self._token = ""
        self._issued = 0.0
        self._lock = threading.Lock()
        self.refreshes = 0

    # -- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> NamespaceCredentials:
        sa, role, binding = self._manifests
        try:
            self._create(
                "serviceaccount", lambda: self._kube.core.create_namespaced_service_account(self.namespace, sa)
            )
            self._create("role", lambda: self._kube.rbac.create_namespaced_role(self.namespace, role))
            self._create("rolebinding", lambda: self._kube.rbac.create_namespaced_role_binding(self.namespace, binding))
            self.refresh()
        except BaseException:
            self.revoke()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.revoke()

    def _create(self, kind: str, call: Callable[[], object]) -> None:
        try:
            call()
        except Conflict:
            self._adopt(kind)  # left by an interrupted attempt of this same run: take it over

    def _adopt(self, kind: str) -> None:
        """Bring an object of this run that already exists to what this attempt wants."""
        sa, role, binding = self._manifests
        if kind == "role":
            patch = {"rules": role["rules"], "metadata": role["metadata"]}
            self._kube.rbac.patch_namespaced_role(self.name, self.namespace, patch)
        elif kind == "serviceaccount":
            self._kube.core.patch_namespaced_service_account(self.name, self.namespace, {"metadata": sa["metadata"]})
        else:
            self._kube.rbac.patch_namespaced_role_binding(self.name, self.namespace, {"metadata": binding["metadata"]})

    def revoke(self) -> None:
        """Delete what this run created here; deleting the ServiceAccount also invalidates its tokens."""
        self._token = ""
        failures = []
        deleters: tuple[tuple[str, Callable[[str, str], object]], ...] = (
            ("rolebinding", self._kube.rbac.delete_namespaced_role_binding),
            ("role", self._kube.rbac.delete_namespaced_role),
            ("serviceaccount", self._kube.core.delete_namespaced_service_account),
        )
        for _kind, delete in deleters:
            try:
                delete(self.name, self.namespace)
            except NotFound:
                continue
            except FleetscanError as exc:
                failures.append(str(exc))
        if failures:  # the expiry annotation lets `fleetscan gc` finish the job
            log.warning("cleanup incomplete, `fleetscan gc` will retry: %s", "; ".join(failures))
        self.revoke_failures = failures

    # -- token --------------------------------------------------------------------------------------
    def refresh(self) -> str:
        body = {"spec": {"expirationSeconds": self.settings.token_seconds}}
        try:
            tr = self._kube.core.create_namespaced_service_account_token(self.name, self.namespace, body)
        except Forbidden as exc:
            raise Forbidden(f"{exc}; the orchestrator needs create on serviceaccounts/token") from exc
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
        self._kube.core.patch_namespaced_service_account(self.name, self.namespace, patch)
        self._kube.rbac.patch_namespaced_role(self.name, self.namespace, patch)
        self._kube.rbac.patch_namespaced_role_binding(self.name, self.namespace, patch)

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

    def grant(self, rules: list[dict[str, Any]]) -> None:
        """Widen the Role by `rules` (pods found to need another way in while scanning); a no-op when
        it already grants them."""
        with self._lock:
            wanted = merge_rules(self._rules, rules)
            if wanted == self._rules:
                return
            _check_rules(self.namespace, wanted)
            self._kube.rbac.patch_namespaced_role(self.name, self.namespace, {"rules": wanted})
            self._rules = wanted

    @property
    def rules(self) -> list[dict[str, Any]]:
        return list(self._rules)

    @contextlib.contextmanager
    def kubeconfig(self) -> Iterator[Path]:
        """A kubeconfig holding the narrow token, for external tools: mode 0600 in a private folder
        named by this process, deleted afterwards (`sweep_kubeconfigs` removes a killed run's)."""
        folder = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=credential_folder()))  # 0700
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


def credential_folder() -> Path:
    """Where kubeconfigs holding a scan token live while an external tool runs: the user's runtime
    folder ($XDG_RUNTIME_DIR, a tmpfs cleared at logout) or ~/.cache/fleetscan/credentials, 0700."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(runtime) / "fleetscan" if runtime else Path.home() / ".cache" / "fleetscan" / "credentials"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def sweep_kubeconfigs() -> list[Path]:
    """Remove the kubeconfigs of processes that died without cleaning up (SIGKILL): their tokens
    stay valid until they expire or `fleetscan gc` deletes their ServiceAccount, but no longer on disk."""
    removed = []
    for folder in credential_folder().iterdir():
        pid = folder.name.split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep(kube: Kube, selector: str, doomed: Callable[[str, Any], bool]) -> list[str]:
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
        for obj in kube.list_all(lister, label_selector=selector):
            if not doomed(kind, obj):
                continue
            name, namespace = obj.metadata.name, obj.metadata.namespace
            with contextlib.suppress(NotFound):
                deleter(name, namespace)
            deleted.append(f"{kind}/{namespace}/{name}")
    return deleted


def collect_garbage(kube: Kube, now: datetime | None = None) -> list[str]:
    """Delete fleetscan's leftovers (a killed run's) whose expiry has passed, by the API server's
    clock unless `now` is given. Returns what went."""
    moment = now or kube.server_time()

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

    return _sweep(kube, f"{MANAGED_BY}=fleetscan", expired)


def revoke_run(kube: Kube, run_id: str) -> list[str]:
    """Delete every object a run created, in every namespace (after a crash or cancellation)."""
    selector = f"{MANAGED_BY}=fleetscan,{RUN_ID}={check_label(run_id, 'run id')}"
    return _sweep(kube, selector, lambda kind, obj: True)
