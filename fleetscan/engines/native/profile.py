"""Native profiles (YAML): inspec.yml-like metadata plus controls whose checks name a resource and
what is expected of it. Loading reports every problem at once, each with its file and line."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ...errors import UsageError
from .resources import REGISTRY as RESOURCES
from .resources import Check, Resource

BUNDLED = ("container-baseline",)
SEVERITIES = ("none", "low", "medium", "high", "critical")


class ProfileError(UsageError):
    pass


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    desc: str
    impact: float
    tags: dict[str, Any]
    refs: tuple[dict[str, Any], ...]
    checks: tuple[Check, ...]
    only_if: str | None
    line: int
    code: str


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    version: str
    maintainer: str
    summary: str
    license: str
    supports: tuple[dict[str, Any], ...]
    inputs: dict[str, Any]
    controls: tuple[Control, ...]
    source: str
    sha256: str
    extra: dict[str, Any] = field(default_factory=dict)


def _lines(node: yaml.Node | None) -> dict[int, int]:
    """id(python value) is useless here, so map control index -> line via the composed tree."""
    out: dict[int, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "controls" and isinstance(value, yaml.SequenceNode):
                for i, item in enumerate(value.value):
                    out[i] = item.start_mark.line + 1
    return out


def _check_lines(node: yaml.Node | None) -> dict[tuple[int, int], int]:
    out: dict[tuple[int, int], int] = {}
    if not isinstance(node, yaml.MappingNode):
        return out
    for key, value in node.value:
        if key.value != "controls" or not isinstance(value, yaml.SequenceNode):
            continue
        for i, control in enumerate(value.value):
            if not isinstance(control, yaml.MappingNode):
                continue
            for ckey, cvalue in control.value:
                if ckey.value == "checks" and isinstance(cvalue, yaml.SequenceNode):
                    for j, check in enumerate(cvalue.value):
                        out[(i, j)] = check.start_mark.line + 1
    return out


def _check_problems(resource: Resource, target: Any, expect: dict[str, Any], where: str) -> list[str]:
    known = (*resource.expectations(), *resource.modifiers)
    problems = [
        f"{where}: {resource.name} does not understand expect.{key} (known: {', '.join(known)})"
        for key in expect
        if key not in known
    ]
    return problems + resource.problems(target, expect, where)


def parse_profile(text: str, source: str) -> Profile:
    try:
        data = yaml.safe_load(text)
        tree = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: a profile is a mapping with name, title, version and controls")
    problems: list[str] = []
    for key in ("name", "title", "version"):
        if not isinstance(data.get(key), (str, int, float)) or not str(data.get(key)).strip():
            problems.append(f"{source}:1: profile {key} is required")
    control_lines, check_lines = _lines(tree), _check_lines(tree)
    inputs = data.get("inputs") or {}
    if not isinstance(inputs, dict):
        problems.append(f"{source}: inputs must be a mapping of name to default value")
        inputs = {}
    raw_controls = data.get("controls")
    if not isinstance(raw_controls, list) or not raw_controls:
        problems.append(f"{source}: controls must be a non-empty list")
        raw_controls = []
    seen: dict[str, int] = {}
    controls: list[Control] = []
    for i, raw in enumerate(raw_controls):
        line = control_lines.get(i, 0)
        where = f"{source}:{line}"
        if not isinstance(raw, dict):
            problems.append(f"{where}: a control is a mapping")
            continue
        cid = str(raw.get("id") or "")
        if not cid:
            problems.append(f"{where}: control id is required")
        elif cid in seen:
            problems.append(f"{where}: duplicate control id {cid!r} (first at line {seen[cid]})")
        seen.setdefault(cid, line)
        for key in raw:
            if key not in ("id", "title", "desc", "impact", "tags", "refs", "checks", "only_if"):
                problems.append(f"{where}: control {cid!r}: unknown key {key!r}")
        impact = raw.get("impact")
        if isinstance(impact, bool) or not isinstance(impact, (int, float)) or not 0 <= impact <= 1:
            problems.append(f"{where}: control {cid!r}: impact must be a number from 0.0 to 1.0, not {impact!r}")
            impact = 0.0
        tags = raw.get("tags") or {}
        if not isinstance(tags, dict) or not tags.get("nist") or tags.get("severity") not in SEVERITIES:
            problems.append(f"{where}: control {cid!r}: tags need nist (a list) and severity ({', '.join(SEVERITIES)})")
            tags = tags if isinstance(tags, dict) else {}
        only_if = raw.get("only_if")
        if only_if is not None and only_if not in inputs:
            problems.append(f"{where}: control {cid!r}: only_if names an input that is not declared: {only_if!r}")
        checks: list[Check] = []
        raw_checks = raw.get("checks")
        if not isinstance(raw_checks, list) or not raw_checks:
            problems.append(f"{where}: control {cid!r}: checks must be a non-empty list")
            raw_checks = []
        for j, raw_check in enumerate(raw_checks):
            cline = check_lines.get((i, j), line)
            cwhere = f"{source}:{cline}"
            if not isinstance(raw_check, dict):
                problems.append(f"{cwhere}: a check is a mapping")
                continue
            names = [k for k in raw_check if k != "expect"]
            unknown = [k for k in names if k not in RESOURCES]
            if unknown or len(names) != 1:
                problems.append(
                    f"{cwhere}: unknown resource {', '.join(map(repr, unknown or names))}; "
                    f"a check names one of {', '.join(RESOURCES)}"
                )
                continue
            expect = raw_check.get("expect") or {}
            if not isinstance(expect, dict) or not expect:
                problems.append(f"{cwhere}: the check needs an expect mapping")
                continue
            resource = names[0]
            target = raw_check[resource]
            problems.extend(_check_problems(RESOURCES[resource], target, expect, cwhere))
            checks.append(Check(resource, target, dict(expect), cline))
        refs = raw.get("refs") or []
        controls.append(
            Control(
                id=cid,
                title=str(raw.get("title") or cid),
                desc=str(raw.get("desc") or "").strip(),
                impact=float(impact),
                tags=dict(tags),
                refs=tuple(r for r in refs if isinstance(r, dict)),
                checks=tuple(checks),
                only_if=only_if,
                line=line,
                code=yaml.safe_dump({"checks": raw_checks}, sort_keys=False).strip(),
            )
        )
    if problems:
        raise ProfileError(f"{source}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return Profile(
        name=str(data["name"]),
        title=str(data["title"]),
        version=str(data["version"]),
        maintainer=str(data.get("maintainer", "")),
        summary=str(data.get("summary", "")),
        license=str(data.get("license", "")),
        supports=tuple(data.get("supports") or ()),
        inputs=dict(inputs),
        controls=tuple(controls),
        source=source,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
    )


def load_profile(name_or_path: str) -> Profile:
    """A bundled profile by name (`container-baseline`) or a YAML file."""
    if name_or_path in BUNDLED:
        text = resources.files("fleetscan.profiles").joinpath(f"{name_or_path}.yml").read_text()
        return parse_profile(text, f"{name_or_path}.yml")
    path = Path(name_or_path)
    if not path.is_file():
        raise ProfileError(f"profile {name_or_path!r}: no such file, and not a bundled profile ({', '.join(BUNDLED)})")
    return parse_profile(path.read_text(), str(path))
