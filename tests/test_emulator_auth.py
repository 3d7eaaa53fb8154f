"""Authentication (admin token, TokenRequest JWTs, the clock) and RBAC as the API server enforces it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from fleetscan.emulator.server import Emulator

from .conftest import api_client
from .test_emulator_exec import run

RBAC = "rbac.authorization.k8s.io"


def token_for(core: client.CoreV1Api, ns: str, sa: str, seconds: int | None = None) -> str:
    spec = {"audiences": []} if seconds is None else {"expirationSeconds": seconds}
    return core.create_namespaced_service_account_token(sa, ns, {"spec": spec}).status.token


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def grant(admin: client.ApiClient, ns: str, sa: str, rules: list[dict], name: str = "scanner") -> None:
    rbac = client.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(ns, {"metadata": {"name": name}, "rules": rules})
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        },
    )


@pytest.fixture()
def scanner(fresh_emulator: Emulator, tmp_path: Path) -> tuple[client.ApiClient, client.ApiClient]:
    """(admin client, client holding a token for alpha/scanner with exec on pod `one` only)."""
    admin = api_client(fresh_emulator, tmp_path)
    core = client.CoreV1Api(admin)
    core.create_namespaced_service_account("alpha", {"metadata": {"name": "scanner"}})
    grant(
        admin,
        "alpha",
        "scanner",
        [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"], "resourceNames": ["one"]},
        ],
    )
    return admin, api_client(fresh_emulator, tmp_path, token_for(core, "alpha", "scanner", 900))


def test_token_request_lifetimes(fresh_emulator: Emulator, tmp_path: Path) -> None:
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path))
    tr = core.create_namespaced_service_account_token("default", "alpha", {"spec": {"expirationSeconds": 900}})
    c = claims(tr.status.token)
    assert c["exp"] - c["iat"] == 900
    assert c["sub"] == "system:serviceaccount:alpha:default"
    assert c["kubernetes.io"]["serviceaccount"]["name"] == "default"
    default = claims(token_for(core, "alpha", "default"))
    assert default["exp"] - default["iat"] == 3600
    with pytest.raises(ApiException) as err:
        token_for(core, "alpha", "default", 599)
    assert err.value.status == 422
    assert "may not specify a duration less than 10 minutes" in json.loads(err.value.body)["message"]
    with pytest.raises(ApiException) as err:
        token_for(core, "alpha", "ghost", 900)
    assert err.value.status == 404


@pytest.mark.parametrize(
    ("verb", "namespace", "name", "allowed"),
    [
        ("get", "alpha", "one", True),
        ("list", "alpha", "", True),
        ("delete", "alpha", "one", False),
        ("list", "beta", "", False),
        ("get", "beta", "three", False),
    ],
)
def test_rbac_rest_matrix(
    scanner: tuple[client.ApiClient, client.ApiClient], verb: str, namespace: str, name: str, allowed: bool
) -> None:
    core = client.CoreV1Api(scanner[1])
    call = {
        "get": lambda: core.read_namespaced_pod(name, namespace),
        "list": lambda: core.list_namespaced_pod(namespace),
        "delete": lambda: core.delete_namespaced_pod(name, namespace),
    }[verb]
    if allowed:
        call()
        return
    with pytest.raises(ApiException) as err:
        call()
    assert err.value.status == 403
    body = json.loads(err.value.body)
    assert body["reason"] == "Forbidden"
    assert f'User "system:serviceaccount:alpha:scanner" cannot {verb} resource "pods"' in body["message"]
    assert f'in the namespace "{namespace}"' in body["message"]


def test_exec_is_limited_to_named_pods(scanner: tuple[client.ApiClient, client.ApiClient]) -> None:
    core = client.CoreV1Api(scanner[1])
    status, out, _ = run(core, "alpha", "one", ["id", "-u"])
    assert status["status"] == "Success" and out == b"0\n"
    with pytest.raises(ApiException) as err:
        run(core, "alpha", "two", ["id", "-u"])
    assert err.value.status == 0 and "Handshake status 403" in err.value.reason
    assert 'cannot get resource \\"pods/exec\\"' in err.value.reason


def test_exec_needs_get_and_create(fresh_emulator: Emulator, tmp_path: Path) -> None:
    admin = api_client(fresh_emulator, tmp_path)
    core = client.CoreV1Api(admin)
    core.create_namespaced_service_account("alpha", {"metadata": {"name": "getonly"}})
    grant(admin, "alpha", "getonly", [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get"]}], "getonly")
    limited = client.CoreV1Api(api_client(fresh_emulator, tmp_path, token_for(core, "alpha", "getonly", 900)))
    with pytest.raises(ApiException) as err:
        run(limited, "alpha", "one", ["true"])
    assert "cannot create resource" in err.value.reason
    fresh_emulator.client().settings(exec_requires_create=False)  # Kubernetes before 1.35
    assert run(limited, "alpha", "one", ["true"])[0]["status"] == "Success"


def test_expired_token_gets_401_on_rest_and_exec(
    scanner: tuple[client.ApiClient, client.ApiClient], fresh_emulator: Emulator
) -> None:
    core = client.CoreV1Api(scanner[1])
    core.read_namespaced_pod("one", "alpha")
    fresh_emulator.client().advance_clock(901)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("one", "alpha")
    assert err.value.status == 401
    assert json.loads(err.value.body) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    with pytest.raises(ApiException) as err:
        run(core, "alpha", "one", ["true"])
    assert "Handshake status 401" in err.value.reason


def test_deleting_the_service_account_revokes_its_tokens(scanner: tuple[client.ApiClient, client.ApiClient]) -> None:
    admin, limited = scanner
    client.CoreV1Api(admin).delete_namespaced_service_account("scanner", "alpha")
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(limited).read_namespaced_pod("one", "alpha")
    assert err.value.status == 401


def test_token_request_for_another_sa_is_forbidden(scanner: tuple[client.ApiClient, client.ApiClient]) -> None:
    with pytest.raises(ApiException) as err:
        token_for(client.CoreV1Api(scanner[1]), "alpha", "default", 900)
    assert err.value.status == 403
    assert 'cannot create resource "serviceaccounts/token"' in json.loads(err.value.body)["message"]


def test_role_escalation_is_refused(fresh_emulator: Emulator, tmp_path: Path) -> None:
    admin = api_client(fresh_emulator, tmp_path)
    core = client.CoreV1Api(admin)
    core.create_namespaced_service_account("alpha", {"metadata": {"name": "manager"}})
    grant(
        admin,
        "alpha",
        "manager",
        [
            {"apiGroups": [RBAC], "resources": ["roles", "rolebindings"], "verbs": ["create", "delete"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        ],
        "manager",
    )
    rbac = client.RbacAuthorizationV1Api(api_client(fresh_emulator, tmp_path, token_for(core, "alpha", "manager", 900)))
    rbac.create_namespaced_role(
        "alpha",
        {
            "metadata": {"name": "ok"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": ["one"]}],
        },
    )
    with pytest.raises(ApiException) as err:
        rbac.create_namespaced_role(
            "alpha",
            {
                "metadata": {"name": "too-much"},
                "rules": [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}],
            },
        )
    body = json.loads(err.value.body)
    assert err.value.status == 403
    assert "is attempting to grant RBAC permissions not currently held" in body["message"]
    assert '{APIGroups:[""], Resources:["pods/exec"], Verbs:["create"]}' in body["message"]
    # Binding a role that holds more than the caller is refused too (no `bind` verb).
    with pytest.raises(ApiException) as err:
        rbac.create_namespaced_role_binding(
            "alpha",
            {
                "metadata": {"name": "sneaky"},
                "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "admin"},
                "subjects": [{"kind": "ServiceAccount", "name": "manager", "namespace": "alpha"}],
            },
        )
    assert err.value.status == 403
    # With `escalate`, the same role is accepted.
    client.RbacAuthorizationV1Api(admin).patch_namespaced_role(
        "manager", "alpha", {"rules": [{"apiGroups": [RBAC], "resources": ["roles"], "verbs": ["create", "escalate"]}]}
    )
    rbac.create_namespaced_role(
        "alpha",
        {
            "metadata": {"name": "too-much"},
            "rules": [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}],
        },
    )


def test_cluster_roles_and_groups(fresh_emulator: Emulator, tmp_path: Path) -> None:
    admin = api_client(fresh_emulator, tmp_path)
    token = fresh_emulator.client().add_user("auditor", ["auditors"])
    rbac = client.RbacAuthorizationV1Api(admin)
    rbac.create_cluster_role(
        {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list"]}],
        }
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": "auditors"},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "pod-reader"},
            "subjects": [{"kind": "Group", "name": "auditors"}],
        }
    )
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path, token))
    assert len(core.list_pod_for_all_namespaces().items) == 3
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("one", "alpha")
    assert err.value.status == 403


def test_self_subject_access_review(scanner: tuple[client.ApiClient, client.ApiClient]) -> None:
    authz = client.AuthorizationV1Api(scanner[1])

    def can(verb: str, resource: str, sub: str = "", name: str = "") -> bool:
        review = authz.create_self_subject_access_review(
            {
                "spec": {
                    "resourceAttributes": {
                        "namespace": "alpha",
                        "verb": verb,
                        "resource": resource,
                        "subresource": sub,
                        "name": name,
                    }
                }
            }
        )
        return bool(review.status.allowed)

    assert can("create", "pods", "exec", "one") and not can("create", "pods", "exec", "two")
    assert can("list", "pods") and not can("delete", "pods", name="one")


def test_audit_log_records_every_decision(
    scanner: tuple[client.ApiClient, client.ApiClient], fresh_emulator: Emulator
) -> None:
    handle = fresh_emulator.client()
    handle.clear_audit()
    core = client.CoreV1Api(scanner[1])
    core.list_namespaced_pod("alpha")
    with pytest.raises(ApiException):
        core.list_namespaced_pod("beta")
    entries = handle.audit(user="system:serviceaccount:alpha:scanner")
    assert [(e["verb"], e["resource"], e["namespace"], e["allowed"], e["code"]) for e in entries] == [
        ("list", "pods", "alpha", True, 200),
        ("list", "pods", "beta", False, 403),
    ]


def test_ephemeral_containers_need_patch_on_their_subresource(
    scanner: tuple[client.ApiClient, client.ApiClient], fresh_emulator: Emulator
) -> None:
    admin, limited = scanner
    dbg = {"spec": {"ephemeralContainers": [{"name": "dbg", "image": "busybox", "targetContainerName": "main"}]}}
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(limited).patch_namespaced_pod_ephemeralcontainers("one", "alpha", dbg)
    assert err.value.status == 403
    assert 'cannot patch resource "pods/ephemeralcontainers"' in json.loads(err.value.body)["message"]
    client.RbacAuthorizationV1Api(admin).patch_namespaced_role(
        "scanner",
        "alpha",
        {
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["pods/ephemeralcontainers"],
                    "verbs": ["get", "patch"],
                    "resourceNames": ["one"],
                }
            ]
        },
    )
    pod = client.CoreV1Api(limited).patch_namespaced_pod_ephemeralcontainers("one", "alpha", dbg)
    assert pod.spec.ephemeral_containers[0].name == "dbg"
