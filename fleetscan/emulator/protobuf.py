"""Decode the few protobuf request bodies kubectl's typed clients send (reviews and TokenRequest).

kubectl encodes built-in types as `application/vnd.kubernetes.protobuf`: the 4-byte magic `k8s\\0`
and a `runtime.Unknown` envelope {typeMeta, raw}. Responses may be JSON (kubectl also accepts it),
so only request decoding is needed, for the kinds below, by field number.
"""

from __future__ import annotations

from typing import Any

from .errors import ApiError

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

Fields = dict[int, list[Any]]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> Fields:
    """Field number -> values (ints for varints, bytes for length-delimited) of one message."""
    out: Fields = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _str(f: Fields, n: int) -> str:
    return bytes(f[n][0]).decode() if n in f else ""


def _strs(f: Fields, n: int) -> list[str]:
    return [bytes(v).decode() for v in f.get(n, [])]


def _sub(f: Fields, n: int) -> Fields:
    return fields(bytes(f[n][0])) if n in f else {}


def _meta(f: Fields) -> dict[str, Any]:
    m = _sub(f, 1)
    return {k: v for k, v in (("name", _str(m, 1)), ("namespace", _str(m, 3))) if v}


def _resource_attributes(f: Fields) -> dict[str, Any]:
    names = ("namespace", "verb", "group", "version", "resource", "subresource", "name")
    return {name: _str(f, i + 1) for i, name in enumerate(names) if i + 1 in f}


def _access_spec(f: Fields, with_subject: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if 1 in f:
        spec["resourceAttributes"] = _resource_attributes(_sub(f, 1))
    if 2 in f:
        nra = _sub(f, 2)
        spec["nonResourceAttributes"] = {"path": _str(nra, 1), "verb": _str(nra, 2)}
    if with_subject:
        spec.update(user=_str(f, 3), groups=_strs(f, 4), uid=_str(f, 6))
    return spec


def _decode(kind: str, raw: bytes) -> dict[str, Any]:
    msg = fields(raw)
    spec = _sub(msg, 2)
    if kind == "TokenRequest":
        out: dict[str, Any] = {"audiences": _strs(spec, 1)}
        if 4 in spec:
            out["expirationSeconds"] = int(spec[4][0])
        body: dict[str, Any] = {"spec": out}
    elif kind in ("SelfSubjectAccessReview", "SubjectAccessReview", "LocalSubjectAccessReview"):
        body = {"spec": _access_spec(spec, kind != "SelfSubjectAccessReview")}
    elif kind == "SelfSubjectRulesReview":
        body = {"spec": {"namespace": _str(spec, 1)}}
    elif kind == "TokenReview":
        body = {"spec": {"token": _str(spec, 1), "audiences": _strs(spec, 2)}}
    elif kind == "SelfSubjectReview":
        body = {}
    elif kind == "DeleteOptions":
        return {}
    else:
        raise ApiError(415, "UnsupportedMediaType", f"the emulator cannot decode protobuf {kind}; send JSON")
    body["metadata"] = _meta(msg)
    return body


def decode_request(data: bytes) -> dict[str, Any]:
    if not data.startswith(MAGIC):
        raise ApiError.bad_request("protobuf body without the k8s magic prefix")
    try:
        envelope = fields(data[len(MAGIC):])
        type_meta = _sub(envelope, 1)
        kind = _str(type_meta, 2)
        body = _decode(kind, bytes(envelope.get(2, [b""])[0]))
        body["kind"], body["apiVersion"] = kind, _str(type_meta, 1)
        return body
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ApiError.bad_request(f"the request body could not be decoded: {exc}") from exc
