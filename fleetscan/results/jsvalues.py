"""JavaScript value semantics, for reproducing the SAF CLI (written in TypeScript) exactly."""

from __future__ import annotations

import math
import re
from typing import Any


class _Undefined:
    """JavaScript's `undefined`: a missing key, distinct from `null` (None)."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "undefined"

    def __bool__(self) -> bool:
        return False


UNDEFINED: Any = _Undefined()
_NUMERIC = re.compile(r"^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|Infinity)$")


def truthy(value: Any) -> bool:
    if value is UNDEFINED or value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0 and not math.isnan(value)
    if isinstance(value, str):
        return value != ""
    return True  # objects and arrays, even empty ones


def to_number(value: Any) -> float:
    """JS `Number(value)` (ToNumber with ToPrimitive for arrays and objects)."""
    if value is UNDEFINED:
        return math.nan
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return to_number(to_string(value))
    if isinstance(value, dict):
        return math.nan
    text = str(value).strip()
    if text == "":
        return 0.0
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", text):
        return float(int(text, 16))
    if _NUMERIC.match(text):
        return float(text.replace("Infinity", "inf"))
    return math.nan


def less(a: Any, b: Any) -> bool:
    """JS `a < b` for a number `a` (NaN compares false)."""
    x, y = to_number(a), to_number(b)
    return not (math.isnan(x) or math.isnan(y)) and x < y


def greater(a: Any, b: Any) -> bool:
    x, y = to_number(a), to_number(b)
    return not (math.isnan(x) or math.isnan(y)) and x > y


def to_string(value: Any) -> str:
    """JS `String(value)` / template-literal formatting."""
    if value is UNDEFINED:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return ",".join("" if v is None or v is UNDEFINED else to_string(v) for v in value)
    if isinstance(value, dict):
        return "[object Object]"
    return str(value)


def parse_int(text: str) -> float:
    """JS `parseInt(text, 10)`: leading whitespace, a sign, then digits; NaN when there are none."""
    found = re.match(r"\s*([+-]?\d+)", text)
    return float(int(found.group(1))) if found else math.nan


def lodash_get(obj: Any, path: str) -> Any:
    """lodash `_.get(obj, path)`: a literal key first, else walk the dotted path."""
    if isinstance(obj, dict) and path in obj:
        return obj[path]
    current = obj
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return UNDEFINED
    return current
