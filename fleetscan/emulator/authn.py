"""Who is calling: the admin token, static test users, and TokenRequest JWTs checked against the clock."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from .clock import Clock
from .pki import TokenSigner
from .resources import BY_KEY
from .store import Store

ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_ACCOUNTS = BY_KEY[("", "serviceaccounts")]


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]
    uid: str = ""
    extra: dict[str, list[str]] = field(default_factory=dict)

    @property
    def is_master(self) -> bool:
        return "system:masters" in self.groups

    def describe(self) -> dict[str, Any]:
        return {"username": self.name, "uid": self.uid, "groups": list(self.groups)}


ANONYMOUS = User("system:anonymous", ("system:unauthenticated",))
ADMIN_NAME = "kubernetes-admin"


def service_account_user(namespace: str, name: str, uid: str = "") -> User:
    return User(
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
        uid,
    )


class Authenticator:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._signer = TokenSigner()
        self.admin_token = secrets.token_urlsafe(32)
        self._static: dict[str, User] = {self.admin_token: User(ADMIN_NAME, ("system:masters", "system:authenticated"))}

    def add_static_user(self, name: str, groups: list[str]) -> str:
        """A bearer token for a fixed identity (like a static token file), for tests and demos."""
        token = secrets.token_urlsafe(32)
        self._static[token] = User(name, (*groups, "system:authenticated"))
        return token

    def issue(self, namespace: str, sa: dict[str, Any], seconds: int, audiences: list[str]) -> tuple[str, float]:
        now = self._clock.now()
        exp = now + seconds
        claims = {
            "iss": ISSUER,
            "sub": f"system:serviceaccount:{namespace}:{sa['metadata']['name']}",
            "aud": audiences,
            "exp": int(exp),
            "iat": int(now),
            "nbf": int(now),
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": sa["metadata"]["name"], "uid": sa["metadata"]["uid"]},
            },
        }
        return self._signer.sign(claims), float(int(exp))

    def authenticate(self, token: str | None) -> User | None:
        """The caller, ANONYMOUS without a token, or None for a token that is not (or no longer) valid."""
        if not token:
            return ANONYMOUS
        static = self._static.get(token)
        if static:
            return static
        claims = self._signer.verify(token)
        if not claims or claims.get("iss") != ISSUER:
            return None
        now = self._clock.now()
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= now or claims.get("nbf", 0) > now + 60:
            return None
        k8s = claims.get("kubernetes.io") or {}
        namespace = k8s.get("namespace", "")
        sa_ref = k8s.get("serviceaccount") or {}
        # Bound tokens die with their ServiceAccount, as on a real API server.
        sa = self._store.find(SERVICE_ACCOUNTS, namespace, sa_ref.get("name", ""))
        if sa is None or sa["metadata"]["uid"] != sa_ref.get("uid"):
            return None
        return service_account_user(namespace, sa_ref["name"], sa["metadata"]["uid"])
