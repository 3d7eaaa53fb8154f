"""SAF threshold files, evaluated with exactly the semantics of `saf validate threshold` 1.5.3.

The verdict and message are byte-for-byte SAF's (the spec is in the project's SAF research notes,
and tests replay the real CLI's recorded outcomes). Unlike SAF, a missing or invalid input or
threshold file is an error, never a silent pass; `lint` reports the rules SAF ignores.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from ..errors import ResultsError
from .hdf import SEVERITIES, STATUSES, CountedControl, Counts, counted_controls
from .jsvalues import UNDEFINED, greater, less, lodash_get, parse_int, to_string, truthy

PASS_MESSAGE = "All validation tests passed"


class ThresholdError(ResultsError):
    """The threshold could not be evaluated (SAF would crash, yet exit 0)."""


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


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_threshold_text(text: str, source: str) -> Any:
    try:
        doc = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        raise ThresholdError(f"{source}: not valid YAML: {exc}") from exc
    if doc is None:
        raise ThresholdError(f"{source}: the threshold file is empty")
    if isinstance(doc, dict) and all(is_number(v) for v in doc.values()):
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
            equal = is_number(v) and float(v) == o[st]
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


def evaluate(hdf: dict[str, Any], threshold: Any, controls: list[CountedControl] | None = None) -> Verdict:
    """The threshold's verdict on `hdf` (whose counted controls may be passed in, computed once)."""
    controls = counted_controls(hdf) if controls is None else controls
    counts = Counts.of(controls)
    violation = _first_violation(threshold, counts, controls)
    return Verdict(violation is None, violation or PASS_MESSAGE, counts)


@dataclass(frozen=True)
class Threshold:
    """A parsed threshold file, how reports name it, and a hash of its text (resume checks it)."""

    rules: Any
    name: str
    sha256: str

    def evaluate(self, hdf: dict[str, Any], controls: list[CountedControl] | None = None) -> Verdict:
        return evaluate(hdf, self.rules, controls)


def load_run_threshold(path: str | None) -> Threshold:
    """The run's threshold: a file, or the bundled default.yml."""
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ThresholdError(f"{path}: cannot read the threshold file: {exc.strerror or exc}") from exc
        name = path
    else:
        text = resources.files("fleetscan.profiles").joinpath("default.yml").read_text()
        name, path = "default.yml (bundled)", "default.yml"
    return Threshold(parse_threshold_text(text, path), name, hashlib.sha256(text.encode()).hexdigest())
