"""CustomResourceDefinitions (apiextensions.k8s.io/v1): a CRD's storage version is served with
discovery, RBAC and the CRD's OpenAPI v3 schema checked on every create and update, as the API
server does. Known differences: one served version (the storage one), no pruning of unknown
fields, no defaulting, no CEL rules (x-kubernetes-validations), no conversion webhooks."""

from __future__ import annotations

import copy
import json
from typing import Any

from jsonschema import Draft7Validator

from .resources import CRUD, CustomResource, ResourceType, Subresource
from .validation import dns_label_problem

Obj = dict[str, Any]
Cause = tuple[str, str]

_ENVELOPE = {"apiVersion", "kind", "metadata"}


def definition_problems(crd: Obj) -> list[Cause]:
    """What the API server would refuse in a CRD (the parts the emulator relies on)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    causes: list[Cause] = []
    group, plural = spec.get("group") or "", names.get("plural") or ""
    if not group or "." not in group:
        causes.append(("spec.group", f'Invalid value: "{group}": should be a domain with at least one dot'))
    if not plural or dns_label_problem(plural):
        causes.append(("spec.names.plural", f'Invalid value: "{plural}": a lowercase RFC 1123 label is required'))
    if not names.get("kind"):
        causes.append(("spec.names.kind", "Required value"))
    scope, name = spec.get("scope"), (crd.get("metadata") or {}).get("name")
    if scope not in ("Namespaced", "Cluster"):
        causes.append(("spec.scope", f'Unsupported value: "{scope}": supported values: "Cluster", "Namespaced"'))
    if name != f"{plural}.{group}":
        causes.append(("metadata.name", f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group'))
    versions = spec.get("versions") or []
    storage = [v for v in versions if v.get("storage")]
    if len(storage) != 1:
        causes.append(("spec.versions", "Invalid value: must have exactly one version marked as storage version"))
    for i, v in enumerate(versions):
        schema = ((v.get("schema") or {}).get("openAPIV3Schema")) or None
        if not isinstance(schema, dict):
            causes.append((f"spec.versions[{i}].schema.openAPIV3Schema", "Required value: schemas are required"))
        elif problem := _schema_problem(schema):
            causes.append((f"spec.versions[{i}].schema.openAPIV3Schema", f"Invalid value: {problem}"))
    return causes


def _schema_problem(schema: Obj) -> str:
    try:
        Draft7Validator.check_schema(_json_schema(schema))
    except Exception as exc:  # jsonschema's SchemaError and friends: the message is what matters
        return str(getattr(exc, "message", exc))
    return ""


def served(crd: Obj) -> tuple[str, str]:
    """(group, plural): what a CRD serves, which it may not change."""
    spec = crd.get("spec") or {}
    return str(spec.get("group") or ""), str((spec.get("names") or {}).get("plural") or "")


def resource_of(crd: Obj) -> CustomResource:
    """The resource an accepted CRD serves."""
    spec = crd["spec"]
    names = spec["names"]
    version = next(v for v in spec["versions"] if v.get("storage"))
    subresources = tuple(
        Subresource(name, names["kind"], ("get", "patch", "update")) for name in (version.get("subresources") or {})
    )
    rt = ResourceType(
        spec["group"],
        version["name"],
        names["plural"],
        names["kind"],
        spec["scope"] == "Namespaced",
        names.get("singular") or names["kind"].lower(),
        tuple(names.get("shortNames") or ()),
        CRUD,
        subresources,
        tuple(names.get("categories") or ()),
    )
    return CustomResource(
        rt, _json_schema(version["schema"]["openAPIV3Schema"]), tuple(version.get("additionalPrinterColumns") or ())
    )


def established(crd: Obj, now: str) -> Obj:
    """The status the API server gives an accepted CRD."""
    names = crd["spec"]["names"]
    accepted = {k: v for k, v in names.items() if k in ("plural", "singular", "kind", "listKind", "shortNames")}
    accepted.setdefault("singular", names["kind"].lower())
    accepted.setdefault("listKind", f"{names['kind']}List")
    condition = {"lastTransitionTime": now, "message": "the initial names have been accepted", "status": "True"}
    return {
        "acceptedNames": accepted,
        "conditions": [
            {**condition, "type": "NamesAccepted", "reason": "NoConflicts", "message": "no conflicts found"},
            {**condition, "type": "Established", "reason": "InitialNamesAccepted"},
        ],
        "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
    }


def object_problems(custom: CustomResource, obj: Obj) -> list[Cause]:
    """Every schema violation of a custom object, as field path and message."""
    body = {k: v for k, v in obj.items() if k not in _ENVELOPE}
    properties = {k: v for k, v in (custom.schema.get("properties") or {}).items() if k not in _ENVELOPE}
    schema = {**custom.schema, "properties": properties}
    causes = []
    for error in sorted(Draft7Validator(schema).iter_errors(body), key=lambda e: list(map(str, e.absolute_path))):
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
        causes.append((path or "<root>", _message(error)))
    return causes[:20]


def _message(error: Any) -> str:
    if error.validator == "enum":
        allowed = ", ".join(f'"{v}"' for v in error.validator_value)
        return f"Unsupported value: {json.dumps(error.instance)}: supported values: {allowed}"
    if error.validator == "type":
        return f'Invalid value: "{type(error.instance).__name__}": must be of type {error.validator_value}'
    if error.validator == "required":
        return f"Required value: {error.message}"
    return f"Invalid value: {error.message}"


def _json_schema(node: Any) -> Any:
    """OpenAPI v3 (the structural subset CRDs use) as JSON Schema: `nullable` allows null, and the
    x-kubernetes-* extensions are what they mean rather than unknown keywords."""
    if isinstance(node, list):
        return [_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return copy.deepcopy(out)
