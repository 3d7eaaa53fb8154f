"""Label and field selectors with the API server's syntax and semantics."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ApiError

_SET_RE = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values  # "!=" and "notin"


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return parts


def parse_label_selector(text: str) -> list[Requirement]:
    reqs: list[Requirement] = []
    for raw in _split_top_level(text or ""):
        term = raw.strip()
        if not term:
            continue
        m = _SET_RE.match(term)
        if m:
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(Requirement(m.group(1), m.group(2), values))
        elif "!=" in term:
            k, v = term.split("!=", 1)
            reqs.append(Requirement(k.strip(), "!=", frozenset([v.strip()])))
        elif "==" in term or "=" in term:
            k, v = term.split("==", 1) if "==" in term else term.split("=", 1)
            reqs.append(Requirement(k.strip(), "=", frozenset([v.strip()])))
        elif term.startswith("!"):
            reqs.append(Requirement(term[1:].strip(), "!exists"))
        elif re.fullmatch(r"[A-Za-z0-9._/-]+", term):
            reqs.append(Requirement(term, "exists"))
        else:
            raise ApiError.bad_request(f"unable to parse requirement: {term!r}")
    return reqs


def _involved(field: str) -> Callable[[dict[str, Any]], str]:
    return lambda o: str((o.get("involvedObject") or {}).get(field, ""))


FIELD_GETTERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "metadata.name": lambda o: str(o.get("metadata", {}).get("name", "")),
    "metadata.namespace": lambda o: str(o.get("metadata", {}).get("namespace", "")),
    "status.phase": lambda o: str(o.get("status", {}).get("phase", "")),
    "spec.nodeName": lambda o: str(o.get("spec", {}).get("nodeName", "")),
    "spec.serviceAccountName": lambda o: str(o.get("spec", {}).get("serviceAccountName", "")),
    "spec.unschedulable": lambda o: str(bool(o.get("spec", {}).get("unschedulable", False))).lower(),
    # Events (`kubectl describe` and `kubectl events --for` select by the object involved).
    **{f"involvedObject.{f}": _involved(f) for f in ("kind", "namespace", "name", "uid", "apiVersion", "fieldPath")},
    "reason": lambda o: str(o.get("reason", "")),
    "type": lambda o: str(o.get("type", "")),
    "source": lambda o: str((o.get("source") or {}).get("component", "")),
    "reportingComponent": lambda o: str(o.get("reportingComponent", "")),
}


def parse_field_selector(text: str) -> list[tuple[str, bool, str]]:
    """(field, equal?, value) triples; unknown fields are refused as the API server does."""
    out = []
    for raw in (text or "").split(","):
        term = raw.strip()
        if not term:
            continue
        if "!=" in term:
            key, value, equal = *term.split("!=", 1), False
        elif "==" in term:
            key, value, equal = *term.split("==", 1), True
        elif "=" in term:
            key, value, equal = *term.split("=", 1), True
        else:
            raise ApiError.bad_request(f"invalid selector: {term!r}; can't understand {term!r}")
        key = key.strip()
        if key not in FIELD_GETTERS:
            raise ApiError.bad_request(f"field label not supported: {key}")
        out.append((key, equal, value.strip()))
    return out


def make_filter(label_selector: str | None, field_selector: str | None) -> Callable[[dict[str, Any]], bool]:
    labels = parse_label_selector(label_selector or "")
    fields = parse_field_selector(field_selector or "")

    def accept(obj: dict[str, Any]) -> bool:
        obj_labels = obj.get("metadata", {}).get("labels") or {}
        if not all(r.matches(obj_labels) for r in labels):
            return False
        return all((FIELD_GETTERS[k](obj) == v) == eq for k, eq, v in fields)

    return accept


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector object (matchLabels + matchExpressions) against a label map."""
    if not selector:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}[expr["operator"]]
        if not Requirement(expr["key"], op, frozenset(expr.get("values") or [])).matches(labels):
            return False
    return True
