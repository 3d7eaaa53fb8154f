"""/version and the discovery documents kubectl and the Python client read before anything else."""

from __future__ import annotations

from typing import Any

from .resources import Registry

# The kubectl dispatcher picks its kubectl by the server's minor version; 32 means WebSocket exec.
VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.4",
    "gitCommit": "fleetscan-emulator",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23.6",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def api_group_list(registry: Registry) -> dict[str, Any]:
    groups = []
    for group, version in registry.group_versions().items():
        if not group:
            continue
        gv = {"groupVersion": f"{group}/{version}", "version": version}
        groups.append({"name": group, "versions": [gv], "preferredVersion": gv})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Registry, group: str) -> dict[str, Any] | None:
    version = registry.group_versions().get(group)
    if not group or version is None:
        return None
    gv = {"groupVersion": f"{group}/{version}", "version": version}
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [gv], "preferredVersion": gv}


def resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    if registry.group_versions().get(group) != version:
        return None
    entries: list[dict[str, Any]] = []
    for rt in registry.all():
        if rt.group != group:
            continue
        entry: dict[str, Any] = {
            "name": rt.resource,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(rt.verbs),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        entries.append(entry)
        for sub in rt.subresources:
            item: dict[str, Any] = {
                "name": f"{rt.resource}/{sub.name}",
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": sub.kind or rt.kind,
                "verbs": list(sub.verbs),
            }
            if sub.group:
                item.update(group=sub.group, version=sub.version)
            entries.append(item)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": entries}


# -- OpenAPI v3, just enough for kubectl ----------------------------------------------------------
# kubectl validates manifests server-side when the OpenAPI v3 document of a group-version lists a
# `fieldValidation` query parameter on the kind's PATCH operation; otherwise it wants full schemas.
OPENAPI_HASH = "fleetscan-emulator-1"


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_index(registry: Registry) -> dict[str, Any]:
    return {
        "paths": {
            _gv_path(g, v): {"serverRelativeURL": f"/openapi/v3/{_gv_path(g, v)}?hash={OPENAPI_HASH}"}
            for g, v in registry.group_versions().items()
        }
    }


def openapi_group_version(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    if registry.group_versions().get(group) != version:
        return None
    field_validation = {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    paths: dict[str, Any] = {}
    for rt in registry.all():
        if rt.group != group or rt.virtual:
            continue
        scope = "/namespaces/{namespace}" if rt.namespaced else ""
        gvk = {"group": group, "version": version, "kind": rt.kind}
        paths[f"/{_gv_path(group, version)}{scope}/{rt.resource}/{{name}}"] = {
            "patch": {
                "operationId": f"patch{rt.kind}",
                "parameters": [field_validation],
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
            }
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": {}},
    }
