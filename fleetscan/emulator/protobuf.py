"""Decode the protobuf request bodies kubectl's typed clients send.

kubectl encodes built-in types as `application/vnd.kubernetes.protobuf`: the magic `k8s\\0` and a
`runtime.Unknown` envelope {typeMeta, raw}. Responses may be JSON (kubectl accepts it), so only
request decoding is needed. The schemas below (field numbers from the Kubernetes `generated.proto`
files) cover the kinds kubectl sends that way for the emulator's resources; anything else gets a
415 that says to use a manifest (`kubectl apply -f`), which kubectl always sends as JSON.
"""

from __future__ import annotations

from typing import Any

from .errors import ApiError

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

# message -> field number -> (JSON name, type, repeated). Types: str, int, bool, map (string map),
# or another message's name.
Field = tuple[str, str, bool]
SCHEMAS: dict[str, dict[int, Field]] = {
    "ObjectMeta": {
        1: ("name", "str", False),
        2: ("generateName", "str", False),
        3: ("namespace", "str", False),
        11: ("labels", "map", False),
        12: ("annotations", "map", False),
        13: ("ownerReferences", "OwnerReference", True),
        14: ("finalizers", "str", True),
    },
    "OwnerReference": {
        1: ("kind", "str", False),
        3: ("name", "str", False),
        4: ("uid", "str", False),
        5: ("apiVersion", "str", False),
        6: ("controller", "bool", False),
        7: ("blockOwnerDeletion", "bool", False),
    },
    "PolicyRule": {
        1: ("verbs", "str", True),
        2: ("apiGroups", "str", True),
        3: ("resources", "str", True),
        4: ("resourceNames", "str", True),
        5: ("nonResourceURLs", "str", True),
    },
    "Subject": {
        1: ("kind", "str", False),
        2: ("apiGroup", "str", False),
        3: ("name", "str", False),
        4: ("namespace", "str", False),
    },
    "RoleRef": {1: ("apiGroup", "str", False), 2: ("kind", "str", False), 3: ("name", "str", False)},
    "LocalObjectReference": {1: ("name", "str", False)},
    "Role": {1: ("metadata", "ObjectMeta", False), 2: ("rules", "PolicyRule", True)},
    "ClusterRole": {1: ("metadata", "ObjectMeta", False), 2: ("rules", "PolicyRule", True)},
    "RoleBinding": {
        1: ("metadata", "ObjectMeta", False),
        2: ("subjects", "Subject", True),
        3: ("roleRef", "RoleRef", False),
    },
    "ClusterRoleBinding": {
        1: ("metadata", "ObjectMeta", False),
        2: ("subjects", "Subject", True),
        3: ("roleRef", "RoleRef", False),
    },
    "ServiceAccount": {
        1: ("metadata", "ObjectMeta", False),
        3: ("imagePullSecrets", "LocalObjectReference", True),
        4: ("automountServiceAccountToken", "bool", False),
    },
    "Namespace": {1: ("metadata", "ObjectMeta", False)},
    "ConfigMap": {1: ("metadata", "ObjectMeta", False), 2: ("data", "map", False), 4: ("immutable", "bool", False)},
    "BoundObjectReference": {
        1: ("kind", "str", False),
        2: ("apiVersion", "str", False),
        3: ("name", "str", False),
        4: ("uid", "str", False),
    },
    "TokenRequestSpec": {
        1: ("audiences", "str", True),
        3: ("boundObjectRef", "BoundObjectReference", False),
        4: ("expirationSeconds", "int", False),
    },
    "TokenRequest": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "TokenRequestSpec", False)},
    "ResourceAttributes": {
        1: ("namespace", "str", False),
        2: ("verb", "str", False),
        3: ("group", "str", False),
        4: ("version", "str", False),
        5: ("resource", "str", False),
        6: ("subresource", "str", False),
        7: ("name", "str", False),
    },
    "NonResourceAttributes": {1: ("path", "str", False), 2: ("verb", "str", False)},
    "SelfSubjectAccessReviewSpec": {
        1: ("resourceAttributes", "ResourceAttributes", False),
        2: ("nonResourceAttributes", "NonResourceAttributes", False),
    },
    "SubjectAccessReviewSpec": {
        1: ("resourceAttributes", "ResourceAttributes", False),
        2: ("nonResourceAttributes", "NonResourceAttributes", False),
        3: ("user", "str", False),
        4: ("groups", "str", True),
        6: ("uid", "str", False),
    },
    "SelfSubjectAccessReview": {
        1: ("metadata", "ObjectMeta", False),
        2: ("spec", "SelfSubjectAccessReviewSpec", False),
    },
    "SubjectAccessReview": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "SubjectAccessReviewSpec", False)},
    "LocalSubjectAccessReview": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "SubjectAccessReviewSpec", False)},
    "SelfSubjectRulesReviewSpec": {1: ("namespace", "str", False)},
    "SelfSubjectRulesReview": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "SelfSubjectRulesReviewSpec", False)},
    "TokenReviewSpec": {1: ("token", "str", False), 2: ("audiences", "str", True)},
    "TokenReview": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "TokenReviewSpec", False)},
    "SelfSubjectReview": {1: ("metadata", "ObjectMeta", False)},
    "DeleteOptions": {},
}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]  # IndexError on truncation
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = data[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out.append((number, value))
    return out


def _scalar(kind: str, value: int | bytes) -> Any:
    if kind == "int":
        return int(value) if isinstance(value, int) else 0
    if kind == "bool":
        return bool(value)
    if kind == "map":
        entry = dict(_fields(bytes(value)))
        return (bytes(entry.get(1, b"")).decode(), bytes(entry.get(2, b"")).decode())
    if kind == "str":
        return bytes(value).decode()
    return decode_message(kind, bytes(value))


def decode_message(name: str, data: bytes) -> dict[str, Any]:
    schema = SCHEMAS[name]
    out: dict[str, Any] = {}
    for number, value in _fields(data):
        if number not in schema:
            continue  # a field the emulator does not use
        json_name, kind, repeated = schema[number]
        item = _scalar(kind, value)
        if kind == "map":
            out.setdefault(json_name, {})[item[0]] = item[1]
        elif repeated:
            out.setdefault(json_name, []).append(item)
        else:
            out[json_name] = item
    return out


def decode_request(data: bytes) -> dict[str, Any]:
    if not data.startswith(MAGIC):
        raise ApiError.bad_request("protobuf body without the k8s magic prefix")
    try:
        envelope = dict(_fields(data[len(MAGIC) :]))
        type_meta = dict(_fields(bytes(envelope.get(1, b""))))
        api_version, kind = bytes(type_meta.get(1, b"")).decode(), bytes(type_meta.get(2, b"")).decode()
        if kind not in SCHEMAS:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the emulator cannot decode protobuf {kind or 'bodies of this kind'}; "
                "create it from a manifest instead (kubectl apply -f sends JSON)",
            )
        body = decode_message(kind, bytes(envelope.get(2, b"")))
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ApiError.bad_request(f"the request body could not be decoded: {exc}") from exc
    body["kind"], body["apiVersion"] = kind, api_version
    return body
