"""Per-namespace, per-run scan credentials: a ServiceAccount, a Role naming exactly the pods to scan,
a RoleBinding and a short-lived TokenRequest token, all deleted when the namespace is done.

The orchestrator's own identity creates these objects and never execs; the scan holds only the
narrow token. Its RBAC may mint tokens for, patch and delete only fleetscan's own objects: a fixed
pool of slot names per namespace (`fleetscan-scan-0` ... `fleetscan-scan-7`), listed in its
`resourceNames` (RBAC has no name patterns). A run claims a free slot with an optimistic create
and releases it at the end, so concurrent runs in one namespace stay apart. It touches no object
it did not make: an existing object is adopted only when it carries fleetscan's labels, this
run's id and the expected roleRef and subjects.
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

from ..errors import Conflict, FleetscanError, Forbidden, KubeError, NotFound, UsageError
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


SLOTS = 8  # concurrent runs per namespace; the orchestrator's RBAC names each slot
SLOT_PREFIX = "fleetscan-scan-"


def slot_names() -> list[str]:
    return [f"{SLOT_PREFIX}{i}" for i in range(SLOTS)]


class ForeignObject(KubeError):
    """An object in fleetscan's way that fleetscan did not make (or another run holds): left alone."""

    status = 409


def _labels(obj: Any) -> dict[str, str]:
    return dict(getattr(obj.metadata, "labels", None) or {})


def _run_of(obj: Any) -> str | None:
    """The run id of one of fleetscan's objects, or None when fleetscan did not make it."""
    labels = _labels(obj)
    return labels.get(RUN_ID) if labels.get(MANAGED_BY) == "fleetscan" else None


def _expired(obj: Any, now: datetime) -> bool:
    stamp = (obj.metadata.annotations or {}).get(EXPIRES, "")
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) <= now
    except ValueError:
        return False


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
    name: str = f"{SLOT_PREFIX}0",
) -> list[dict[str, Any]]:
    """The ServiceAccount, Role and RoleBinding a run creates in one namespace (in slot `name`);
    every rule names exactly the pods it grants (`resourceNames`)."""
    settings = settings or CredentialSettings()
    check_label(namespace, "namespace")
    check_label(run_id, "run id")
    _check_rules(namespace, rules)
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
    """A context manager: a slot claimed and its objects created on enter, deleted on exit whatever
    happened inside.

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
        self.name = ""  # the slot, once claimed
        self._held: set[str] = set()  # the kinds of the slot's objects this run made or adopted
        self._kube = kube
        self._run_id = check_label(run_id, "run id")
        self._rules = merge_rules(rules)
        manifests(namespace, run_id, self._rules, self.settings)  # checks names before any call
        self._token = ""
        self._issued = 0.0
        self._lock = threading.Lock()
        self._grant_lock = threading.Lock()
        self.refreshes = 0
        self.revoke_failures: list[str] = []

    def _where(self, kind: str, name: str) -> str:
        return f'{kind} "{self.namespace}/{name}"'

    # -- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> NamespaceCredentials:
        try:
            self._claim()
            _, role, binding = manifests(self.namespace, self._run_id, self._rules, self.settings, name=self.name)
            self._create_or_adopt("role", role, self._kube.rbac.create_namespaced_role)
            self._create_or_adopt("rolebinding", binding, self._kube.rbac.create_namespaced_role_binding)
            self.refresh()
        except BaseException:
            self.revoke()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.revoke()

    def _claim(self) -> None:
        """The first free slot: its ServiceAccount created, or already this run's (a resume), or left
        by a dead run whose objects have expired (taken over: deleted, then made anew, so none of
        that run's tokens stays valid)."""
        now: datetime | None = None  # the API server's clock, read once if a slot is held (as gc does)
        busy = []
        for name in slot_names():
            sa = manifests(self.namespace, self._run_id, self._rules, self.settings, name=name)[0]
            try:
                self._kube.core.create_namespaced_service_account(self.namespace, sa)
                self.name, self._held = name, {"serviceaccount"}
                return
            except Conflict:
                existing = self._kube.core.read_namespaced_service_account(name, self.namespace)
            owner = _run_of(existing)
            if owner is None:
                raise ForeignObject(
                    f"{self._where('serviceaccount', name)} exists but fleetscan did not make it (it has no "
                    f"{MANAGED_BY}=fleetscan label): fleetscan will not touch it; rename or remove it"
                )
            if owner == self._run_id:
                self.name, self._held = name, {"serviceaccount"}  # an earlier attempt of this run: take it over
                self._kube.core.patch_namespaced_service_account(name, self.namespace, {"metadata": sa["metadata"]})
                return
            now = now or self._kube.server_time()
            if _expired(existing, now):
                self._release(name)
                self._kube.core.create_namespaced_service_account(self.namespace, sa)
                self.name, self._held = name, {"serviceaccount"}
                return
            busy.append(f"{name} ({owner})")
        raise ForeignObject(
            f'namespace "{self.namespace}": all {SLOTS} scan slots are held by live runs ({", ".join(busy)}); '
            "wait for one to end"
        )

    def _create_or_adopt(self, kind: str, manifest: dict[str, Any], create: Callable[..., object]) -> None:
        try:
            create(self.namespace, manifest)
            self._held.add(kind)
            return
        except Conflict:
            pass
        name = manifest["metadata"]["name"]
        read = self._kube.rbac.read_namespaced_role if kind == "role" else self._kube.rbac.read_namespaced_role_binding
        existing = read(name, self.namespace)
        if _run_of(existing) != self._run_id:
            raise ForeignObject(
                f"{self._where(kind, name)} exists and is not this run's (labels {_labels(existing)}): "
                "fleetscan will not adopt it"
            )
        if kind == "rolebinding":  # it must bind exactly this slot's Role to this slot's account
            ref = existing.role_ref
            subjects = [(s.kind, s.name, s.namespace) for s in existing.subjects or []]
            if (ref.kind, ref.name) != ("Role", name) or subjects != [("ServiceAccount", name, self.namespace)]:
                raise ForeignObject(f"{self._where(kind, name)} binds something else than its slot: left alone")
        else:
            self._kube.rbac.patch_namespaced_role(name, self.namespace, {"rules": manifest["rules"]})
        self._held.add(kind)

    def _deleters(self) -> tuple[tuple[str, Callable[..., Any], Callable[[str, str], object]], ...]:
        """(kind, read, delete) for a slot's objects, bindings first."""
        rbac, core = self._kube.rbac, self._kube.core
        return (
            ("rolebinding", rbac.read_namespaced_role_binding, rbac.delete_namespaced_role_binding),
            ("role", rbac.read_namespaced_role, rbac.delete_namespaced_role),
            ("serviceaccount", core.read_namespaced_service_account, core.delete_namespaced_service_account),
        )

    def _release(self, name: str) -> None:
        """Delete an expired slot's objects that fleetscan made (another's same-named object stays);
        deleting the ServiceAccount voids its tokens."""
        for _kind, read, delete in self._deleters():
            with contextlib.suppress(NotFound):
                if _run_of(read(name, self.namespace)) is not None:
                    delete(name, self.namespace)

    def revoke(self) -> None:
        """Delete what this run holds here; deleting the ServiceAccount also invalidates its tokens."""
        self._token = ""
        failures = []
        for kind, _read, delete in self._deleters():
            if kind not in self._held:
                continue  # never made or adopted by this run: not ours to delete
            try:
                delete(self.name, self.namespace)
            except NotFound:
                pass
            except FleetscanError as exc:
                failures.append(str(exc))
                continue
            self._held.discard(kind)
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
        with self._grant_lock:
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


def _sweep(
    kube: Kube, selector: str, doomed: Callable[[str, Any], bool], namespaces: list[str] | None = None
) -> list[str]:
    """Delete the slot objects (bindings first) matching `selector` for which `doomed(kind, obj)`,
    in every namespace, or in `namespaces` (an orchestrator with namespaced RBAC cannot list across)."""
    kinds: tuple[tuple[str, Callable[..., Any], Callable[..., Any], Callable[[str, str], object]], ...] = (
        (
            "rolebinding",
            kube.rbac.list_role_binding_for_all_namespaces,
            kube.rbac.list_namespaced_role_binding,
            kube.rbac.delete_namespaced_role_binding,
        ),
        (
            "role",
            kube.rbac.list_role_for_all_namespaces,
            kube.rbac.list_namespaced_role,
            kube.rbac.delete_namespaced_role,
        ),
        (
            "serviceaccount",
            kube.core.list_service_account_for_all_namespaces,
            kube.core.list_namespaced_service_account,
            kube.core.delete_namespaced_service_account,
        ),
    )
    slots = set(slot_names())
    deleted = []
    for kind, list_everywhere, list_in, deleter in kinds:
        if namespaces is None:
            items = kube.list_all(list_everywhere, label_selector=selector)
        else:
            items = [o for ns in namespaces for o in kube.list_all(list_in, ns, label_selector=selector)]
        for obj in items:
            name, namespace = obj.metadata.name, obj.metadata.namespace
            if name not in slots or not doomed(kind, obj):  # a label alone does not make it fleetscan's
                continue
            with contextlib.suppress(NotFound):
                deleter(name, namespace)
            deleted.append(f"{kind}/{namespace}/{name}")
    return deleted


def collect_garbage(kube: Kube, now: datetime | None = None, namespaces: list[str] | None = None) -> list[str]:
    """Delete fleetscan's leftovers (a killed run's) whose expiry has passed, by the API server's
    clock unless `now` is given. Returns what went."""
    moment = now or kube.server_time()

    def expired(kind: str, obj: Any) -> bool:
        if _expired(obj, moment):
            return True
        if not (obj.metadata.annotations or {}).get(EXPIRES):
            log.warning(
                "%s %s/%s has no %s annotation; left alone", kind, obj.metadata.namespace, obj.metadata.name, EXPIRES
            )
        return False

    return _sweep(kube, f"{MANAGED_BY}=fleetscan", expired, namespaces)


def revoke_run(kube: Kube, run_id: str, namespaces: list[str] | None = None) -> list[str]:
    """Delete every object a run created, in every namespace or in `namespaces` (after a crash or
    cancellation, or at the end of a resumed run)."""
    selector = f"{MANAGED_BY}=fleetscan,{RUN_ID}={check_label(run_id, 'run id')}"
    return _sweep(kube, selector, lambda kind, obj: True, namespaces)
