"""SAF threshold files, evaluated with exactly the semantics of `saf validate threshold` 1.5.3.

The verdict and message are byte-for-byte SAF's (the spec is in the project's SAF research notes,
and tests replay the real CLI's recorded outcomes). Unlike SAF, a missing or invalid input or
threshold file is an error, never a silent pass, and `lint()` reports the rules SAF ignores.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from .errors import FleetscanError
from .jsvalues import UNDEFINED, greater, less, lodash_get, parse_int, to_string, truthy

PASS_MESSAGE = "All validation tests passed"
STATUSES = ("passed", "failed", "skipped", "no_impact", "error")
SEVERITIES = ("critical", "high", "medium", "low")
_CANONICAL = ("none", "low", "medium", "high", "critical")
_STATUS_KEY = {
    "Passed": "passed",
    "Failed": "failed",
    "Not Reviewed": "skipped",
    "Not Applicable": "no_impact",
    "Profile Error": "error",
}


class ThresholdError(FleetscanError):
    """The input or the threshold could not be evaluated (SAF would crash, yet exit 0)."""


# -- HDF ---------------------------------------------------------------------------------------------
def exec_json_problems(doc: Any) -> list[str]:
    """The required fields and types of inspecjs's exec-json parser (what SAF accepts)."""
    out: list[str] = []

    def need(obj: Any, key: str, kinds: tuple[type, ...], where: str, nullable: bool = False) -> Any:
        if not isinstance(obj, dict) or key not in obj:
            out.append(f"{where}.{key} is missing")
            return None
        value = obj[key]
        if value is None and nullable:
            return None
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            out.append(f"{where}.{key} has the wrong type")
        return value

    if not isinstance(doc, dict):
        return ["not a JSON object"]
    platform = need(doc, "platform", (dict,), "root")
    if isinstance(platform, dict):
        need(platform, "name", (str,), "platform")
        need(platform, "release", (str,), "platform")
    need(doc, "statistics", (dict,), "root")
    need(doc, "version", (str,), "root")
    profiles = need(doc, "profiles", (list,), "root")
    for p_i, profile in enumerate(profiles if isinstance(profiles, list) else []):
        where = f"profiles[{p_i}]"
        for key, kinds in (
            ("name", (str,)),
            ("sha256", (str,)),
            ("supports", (list,)),
            ("attributes", (list,)),
            ("groups", (list,)),
            ("controls", (list,)),
        ):
            need(profile, key, kinds, where)
        for c_i, control in enumerate(profile.get("controls") or [] if isinstance(profile, dict) else []):
            cw = f"{where}.controls[{c_i}]"
            need(control, "id", (str,), cw)
            need(control, "impact", (int, float), cw)
            need(control, "refs", (list,), cw)
            need(control, "tags", (dict,), cw)
            need(control, "source_location", (dict,), cw)
            results = need(control, "results", (list,), cw)
            for r_i, result in enumerate(results if isinstance(results, list) else []):
                rw = f"{cw}.results[{r_i}]"
                need(result, "code_desc", (str,), rw)
                need(result, "start_time", (str,), rw)
                status = result.get("status") if isinstance(result, dict) else None
                if status not in (None, "passed", "failed", "skipped", "error"):
                    out.append(f"{rw}.status {status!r} is not passed, failed, skipped or error")
        if len(out) > 20:
            break
    return out


def load_hdf(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ThresholdError(f"{path}: cannot read the results file: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ThresholdError(f"{path}: not JSON: {exc}") from exc
    problems = exec_json_problems(doc)
    if problems:
        raise ThresholdError(f"{path}: not an InSpec/HDF exec-json result file: " + "; ".join(problems[:5]))
    if not doc["profiles"]:
        raise ThresholdError(f"{path}: the results file has no profiles")
    return dict(doc)


@dataclass
class _Control:
    raw: dict[str, Any]
    extends_from: list[_Control] = field(default_factory=list)
    extended_by: list[_Control] = field(default_factory=list)


@dataclass(frozen=True)
class CountedControl:
    id: str
    status: str  # passed, failed, skipped, no_impact, error
    severity: str  # as written in the tags when canonical (case kept), else from impact


def _root(control: _Control) -> _Control:
    seen = 0
    while control.extends_from and seen < 1000:
        control = control.extends_from[0]
        seen += 1
    return control


def severity_of(control: dict[str, Any]) -> str:
    tags = control.get("tags") or {}
    for key in ("severityoverride", "severity"):
        value = tags.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ThresholdError(f"control {control.get('id')!r}: tags.{key} is not a string (SAF crashes on it)")
        if value.lower() in _CANONICAL:
            return value
    impact = float(control.get("impact") or 0)
    if impact < 0.1:
        return "none"
    if impact < 0.4:
        return "low"
    if impact < 0.7:
        return "medium"
    if impact < 0.9:
        return "high"
    return "critical"


def status_of(control: dict[str, Any]) -> str:
    segments = [
        "error" if r.get("backtrace") is not None else (r.get("status") or "no_status")
        for r in control.get("results") or []
    ]
    waived = truthy((control.get("waiver_data") or {}).get("skipped_due_to_waiver", UNDEFINED))
    if "error" in segments:
        return "Profile Error"
    if waived or control.get("impact") == 0:
        return "Not Applicable"
    if not segments:
        return "Profile Error"
    if "failed" in segments:
        return "Failed"
    if "passed" in segments:
        return "Passed"
    if "skipped" in segments:
        return "Not Reviewed"
    return "Profile Error"


def counted_controls(doc: dict[str, Any]) -> list[CountedControl]:
    """The controls SAF counts: profiles[0]'s, each resolved through overlays to the control that
    holds the results."""
    profiles = doc["profiles"]
    controls = [[_Control(c) for c in p.get("controls") or []] for p in profiles]
    extends_from: list[list[int]] = [[] for _ in profiles]
    extended_by: list[list[int]] = [[] for _ in profiles]
    first_named: dict[str, int] = {}
    for i, p in enumerate(profiles):
        first_named.setdefault(p.get("name"), i)
    for i, p in enumerate(profiles):
        parent = p.get("parent_profile")
        if parent is not None and parent in first_named:
            q = first_named[parent]
            extends_from[q].append(i)
            extended_by[i].append(q)
    by_id: dict[str, list[_Control]] = {}
    for group in controls:
        for c in group:
            by_id.setdefault(c.raw.get("id"), []).append(c)  # type: ignore[arg-type]
    for i, group in enumerate(controls):
        for c in group:
            cid = c.raw.get("id")
            if extends_from[i] or extended_by[i]:
                for dep in extends_from[i]:
                    match = next((a for a in controls[dep] if a.raw.get("id") == cid), None)
                    if match is not None:
                        c.extends_from = [match]
                        match.extended_by.append(c)
                        break
            else:
                same = by_id[cid]  # type: ignore[index]
                populated = next((s for s in same if s.raw.get("results")), same[0])
                if populated is not c:
                    c.extends_from = [populated]
                    populated.extended_by.append(c)
    counted = []
    for c in controls[0]:
        if c.extended_by:
            continue
        root = _root(c).raw
        counted.append(CountedControl(str(root.get("id")), _STATUS_KEY[status_of(root)], severity_of(root)))
    return counted


@dataclass(frozen=True)
class Counts:
    overall: dict[str, int]
    by_severity: dict[str, dict[str, int]]
    compliance: int

    @classmethod
    def of(cls, controls: list[CountedControl]) -> Counts:
        overall = dict.fromkeys(STATUSES, 0)
        by_sev: dict[str, dict[str, int]] = {}
        for c in controls:
            overall[c.status] += 1
            by_sev.setdefault(c.severity, dict.fromkeys(STATUSES, 0))[c.status] += 1
        denominator = overall["passed"] + overall["failed"] + overall["skipped"] + overall["error"]
        compliance = 0 if denominator == 0 else math.floor(100 * overall["passed"] / denominator + 0.5)
        return cls(overall, by_sev, compliance)

    def at(self, severity: str, status: str) -> int:
        return self.by_severity.get(severity, {}).get(status, 0)


# -- thresholds ----------------------------------------------------------------------------------------
def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = str(key).split(".")
        a, b, c = parts[0], parts[1] if len(parts) > 1 else None, parts[2] if len(parts) > 2 else None
        group = out.setdefault(a, {})
        if not isinstance(group, dict):
            continue
        if c is not None:
            group[b] = {c: value}
        else:
            group["undefined" if b is None else b] = value
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_threshold_text(text: str, source: str) -> Any:
    try:
        doc = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        raise ThresholdError(f"{source}: not valid YAML: {exc}") from exc
    if doc is None:
        raise ThresholdError(f"{source}: the threshold file is empty")
    if isinstance(doc, dict) and all(_is_number(v) for v in doc.values()):
        return unflatten(doc)
    return doc


def load_threshold(path: str | Path) -> Any:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ThresholdError(f"{path}: cannot read the threshold file: {exc.strerror or exc}") from exc
    return parse_threshold_text(text, str(path))


def parse_inline(argument: str) -> dict[str, Any]:
    """`-I "{compliance.min: 80}, {failed.total.max: 2}"` as SAF reads it (quirks included)."""
    flat: dict[str, Any] = {}
    for item in argument.split(","):
        item = item.strip().replace("{", "", 1).replace("}", "", 1)
        parts = item.split(":")
        flat[parts[0]] = parse_int(parts[1]) if len(parts) > 1 else math.nan
    return unflatten(flat)


# -- evaluation ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    passed: bool
    message: str  # SAF's text: PASS_MESSAGE, or the first violation (without "Error: ")
    counts: Counts

    @property
    def stdout(self) -> str:
        return f"{PASS_MESSAGE}\n" if self.passed else ""

    @property
    def stderr(self) -> str:
        return "" if self.passed else f"Error: {self.message}\n"


def _violation(name: str, status: str, received: int, relation: str, wanted: Any) -> str:
    return (
        f"{name}: Threshold not met. Number of received total {status} controls ({received}) is {relation} "
        f"your set threshold for the number of {status} controls ({to_string(wanted)})"
    )


def _iterate(expected: Any, where: str) -> Iterable[Any]:
    if isinstance(expected, (list, str)):
        return expected
    raise ThresholdError(f"{where}: must be a list of control ids (SAF crashes on this value)")


def _first_violation(t: Any, counts: Counts, controls: list[CountedControl]) -> str | None:
    o = counts.overall
    compliance = t.get("compliance", UNDEFINED) if isinstance(t, dict) else UNDEFINED
    if truthy(compliance):
        bounds = compliance if isinstance(compliance, dict) else {}
        low, high = bounds.get("min", UNDEFINED), bounds.get("max", UNDEFINED)
        if truthy(low) and less(counts.compliance, low):
            return "Overall compliance minimum was not satisfied"
        if truthy(high) and greater(counts.compliance, high):
            return "Overall compliance maximum was not satisfied"
    for st in STATUSES:
        v = lodash_get(t, f"{st}.total")
        if v is not UNDEFINED and v is not None and not isinstance(v, (dict, list)):
            equal = _is_number(v) and float(v) == o[st]
            if not equal:
                return _violation(f"{st}.total", st, o[st], "not equal to", v)
    for bound, compare, relation in (("min", less, "less than"), ("max", greater, "greater than")):
        for st in ("passed", "failed", "skipped", "error"):
            v = lodash_get(t, f"{st}.total.{bound}")
            if v is not UNDEFINED and compare(o[st], v):
                return _violation(f"{st}.total.{bound}", st, o[st], relation, v)
    cells = [(sev, st) for sev in SEVERITIES for st in ("passed", "failed", "skipped", "error", "no_impact")]
    for sev, st in [*cells, ("none", "no_impact")]:
        for bound, compare, relation in (("min", less, "less than"), ("max", greater, "greater than")):
            v = lodash_get(t, f"{st}.{sev}.{bound}")
            if v is not UNDEFINED and compare(counts.at(sev, st), v):
                return _violation(f"{st}.{sev}.{bound}", st, counts.at(sev, st), relation, v)
    for sev, st in [*cells, ("none", "no_impact")]:
        expected = lodash_get(t, f"{st}.{sev}.controls")
        if not truthy(expected):
            continue
        actual = [c.id for c in controls if c.status == st and c.severity == sev] or None
        shown = ", ".join(actual) if actual else "undefined"
        for e in _iterate(expected, f"{st}.{sev}.controls"):
            if actual is None or not isinstance(e, str) or e not in actual:
                return (
                    f"Expected {st}.{sev}.controls to contain {to_string(e)} controls but it only contained [{shown}]"
                )
        if actual is None or len(expected) != len(actual):  # JS: length !== undefined when none
            got = str(len(actual)) if actual else "undefined"
            return f"Expected {st}.{sev}.controls to contain {len(expected)} controls but it contained {got}"
    return None


def evaluate(hdf: dict[str, Any], threshold: Any) -> Verdict:
    controls = counted_controls(hdf)
    counts = Counts.of(controls)
    violation = _first_violation(threshold, counts, controls)
    return Verdict(violation is None, violation or PASS_MESSAGE, counts)


# -- lint ----------------------------------------------------------------------------------------------
_CELL_KEYS = ("min", "max", "controls")


def lint(threshold: Any, *, flattened_source: str | None = None) -> list[str]:
    """Rules SAF silently ignores or reads surprisingly, so users can fix them."""
    warnings: list[str] = []
    if flattened_source is not None:
        doc = YAML(typ="safe", pure=True).load(flattened_source)
        if isinstance(doc, dict) and doc and all(_is_number(v) for v in doc.values()):
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
                hint = " (severities are lower case)" if lower in _CANONICAL else ""
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
