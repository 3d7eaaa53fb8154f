"""Threshold rules that SAF silently ignores or reads surprisingly, so users can fix them."""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML

from .hdf import CANONICAL_SEVERITIES, SEVERITIES, STATUSES
from .jsvalues import to_string, truthy
from .threshold import is_number

_CELL_KEYS = ("min", "max", "controls")


def lint(threshold: Any, *, flattened_source: str | None = None) -> list[str]:
    """Rules SAF silently ignores or reads surprisingly, so users can fix them."""
    warnings: list[str] = []
    if flattened_source is not None:
        doc = YAML(typ="safe", pure=True).load(flattened_source)
        if isinstance(doc, dict) and doc and all(is_number(v) for v in doc.values()):
            seen: dict[str, str] = {}
            for key in doc:
                parts = str(key).split(".")
                if len(parts) >= 3:
                    path = ".".join(parts[:2])
                    if path in seen:
                        warnings.append(f"{key}: in a flattened file it replaces {seen[path]} (SAF keeps the last)")
                    seen[path] = str(key)
    if not isinstance(threshold, dict):
        return [*warnings, "the threshold is not a mapping: SAF checks nothing"]
    for key, value in threshold.items():
        if key == "compliance":
            if not isinstance(value, dict):
                warnings.append("compliance: a scalar is ignored; write compliance: {min: N}")
                continue
            for bound, v in value.items():
                if bound not in ("min", "max"):
                    warnings.append(f"compliance.{bound}: unknown key, ignored")
                elif not truthy(v):
                    warnings.append(f"compliance.{bound}: {to_string(v)} disables the check")
            continue
        if "." in str(key):
            warnings.append(f"{key}: a dotted key inside a nested file is read only by accident; nest it")
            continue
        if key not in STATUSES:
            warnings.append(f"{key}: unknown key, ignored (statuses are {', '.join(STATUSES)})")
            continue
        if not isinstance(value, dict):
            warnings.append(f"{key}: expected a mapping of severities, ignored")
            continue
        for sev, cell in value.items():
            where = f"{key}.{sev}"
            if sev == "total":
                if isinstance(cell, dict):
                    if key == "no_impact" and ({"min", "max"} & set(cell)):
                        warnings.append("no_impact.total.min/max are never checked; use no_impact.total: N")
                    for bound, v in cell.items():
                        if bound not in ("min", "max"):
                            warnings.append(f"{where}.{bound}: unknown or unchecked key, ignored")
                        elif isinstance(v, str):
                            warnings.append(f"{where}.{bound}: quoted number; compared loosely, write it unquoted")
                elif isinstance(cell, str):
                    warnings.append(f"{where}: a quoted number never equals a count; write it unquoted")
                continue
            if sev not in SEVERITIES and sev != "none":
                lower = str(sev).lower()
                hint = " (severities are lower case)" if lower in CANONICAL_SEVERITIES else ""
                warnings.append(f"{where}: unknown severity, ignored{hint}")
                continue
            if sev == "none" and key != "no_impact":
                warnings.append(f"{where}: only no_impact.none is checked; ignored")
                continue
            if not isinstance(cell, dict):
                warnings.append(f"{where}: a scalar is ignored; write {where}: {{max: N}}")
                continue
            for bound, v in cell.items():
                if bound not in _CELL_KEYS:
                    warnings.append(f"{where}.{bound}: unknown key, ignored")
                elif bound != "controls" and isinstance(v, str):
                    warnings.append(f"{where}.{bound}: quoted number; compared loosely, write it unquoted")
    return warnings
