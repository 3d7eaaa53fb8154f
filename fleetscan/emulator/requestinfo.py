"""Turn an HTTP method and path into the attributes RBAC and the handlers work with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


@dataclass(frozen=True)
class RequestInfo:
    path: str
    verb: str
    is_resource: bool
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def parse(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    """Same decomposition as the API server's RequestInfoFactory, for the core and named groups."""
    parts = [p for p in path.split("/") if p]
    http_verb = method.upper()
    non_resource = RequestInfo(path=path, verb=http_verb.lower(), is_resource=False)
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return non_resource
    if not rest:
        return non_resource
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
        namespace, rest = rest[1], rest[2:]
    elif rest[0] == "namespaces" and len(rest) >= 2:
        namespace = rest[1]  # a namespace object is "in" itself, as in the real server
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if http_verb == "GET":
        verb = "get" if name else ("watch" if query.get("watch") in ("true", "1") else "list")
        if not name and verb in ("list", "watch"):
            # As the API server does: a list or watch of one object by `fieldSelector=metadata.name=X`
            # is authorized (and audited) as a request for X, so resourceNames rules can allow it.
            for term in (query.get("fieldSelector") or "").split(","):
                key, sep, value = term.partition("=")
                if sep and key.strip() == "metadata.name" and not key.endswith("!"):
                    name = value.removeprefix("=").strip()
    elif http_verb == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = _VERBS.get(http_verb, http_verb.lower())
    return RequestInfo(path, verb, True, group, version, resource, subresource, namespace, name)
