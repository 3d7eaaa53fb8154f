"""HDF: the InSpec exec-JSON format that the SAF CLI and Heimdall read. One profile per file (SAF
evaluates only the first). Writing it, checking it is what SAF accepts, and counting its controls
exactly as SAF does (overlays, waivers, status and severity rules)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ResultsError
from .jsvalues import UNDEFINED, truthy

STATUSES = ("passed", "failed", "skipped", "no_impact", "error")
SEVERITIES = ("critical", "high", "medium", "low")
CANONICAL_SEVERITIES = ("none", "low", "medium", "high", "critical")
_STATUS_KEY = {
    "Passed": "passed",
    "Failed": "failed",
    "Not Reviewed": "skipped",
    "Not Applicable": "no_impact",
    "Profile Error": "error",
}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Result:
    status: str  # passed, failed, skipped, error
    code_desc: str
    start_time: str
    run_time: float = 0.0
    message: str | None = None
    resource: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "code_desc": self.code_desc,
            "run_time": self.run_time,
            "start_time": self.start_time,
        }
        if self.resource:
            out["resource"] = self.resource
        if self.message:
            out["skip_message" if self.status == "skipped" else "message"] = self.message
        return out


@dataclass
class Control:
    id: str
    title: str
    desc: str
    impact: float
    tags: dict[str, Any]
    refs: list[dict[str, Any]]
    code: str
    source_ref: str
    source_line: int
    results: list[Result] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "desc": self.desc,
            "descriptions": [{"label": "default", "data": self.desc}] if self.desc else [],
            "impact": self.impact,
            "refs": self.refs,
            "tags": self.tags,
            "code": self.code,
            "source_location": {"ref": self.source_ref, "line": self.source_line},
            "waiver_data": {},
            "results": [r.to_dict() for r in self.results],
        }


@dataclass
class ProfileInfo:
    name: str
    title: str
    version: str
    sha256: str
    maintainer: str = ""
    summary: str = ""
    license: str = ""
    supports: list[dict[str, Any]] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    group_id: str = "controls"


def statistics(controls: list[Control], duration: float) -> dict[str, Any]:
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for c in controls:
        for r in c.results:
            if r.status in counts:
                counts[r.status] += 1
    return {"duration": duration, "controls": {k: {"total": v} for k, v in counts.items()}}


def document(
    profile: ProfileInfo,
    controls: list[Control],
    *,
    target_id: str,
    platform_name: str,
    platform_release: str,
    duration: float,
) -> dict[str, Any]:
    return {
        "platform": {"name": platform_name, "release": platform_release, "target_id": target_id},
        "profiles": [
            {
                "name": profile.name,
                "version": profile.version,
                "sha256": profile.sha256,
                "title": profile.title,
                "maintainer": profile.maintainer,
                "summary": profile.summary,
                "license": profile.license,
                "copyright": profile.maintainer,
                "copyright_email": "",
                "supports": profile.supports,
                "attributes": [{"name": k, "options": {"value": v}} for k, v in profile.inputs.items()],
                "groups": [{"id": profile.group_id, "controls": [c.id for c in controls]}],
                "status": "loaded",
                "depends": [],
                "controls": [c.to_dict() for c in controls],
            }
        ],
        "statistics": statistics(controls, duration),
        "version": f"fleetscan {__version__}",
    }


# -- validation ---------------------------------------------------------------------------------------
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
        raise ResultsError(f"{path}: cannot read the results file: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ResultsError(f"{path}: not JSON: {exc}") from exc
    problems = exec_json_problems(doc)
    if problems:
        raise ResultsError(f"{path}: not an InSpec/HDF exec-json result file: " + "; ".join(problems[:5]))
    if not doc["profiles"]:
        raise ResultsError(f"{path}: the results file has no profiles")
    return dict(doc)


# -- counting ---------------------------------------------------------------------------------------------
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
            raise ResultsError(f"control {control.get('id')!r}: tags.{key} is not a string (SAF crashes on it)")
        if value.lower() in CANONICAL_SEVERITIES:
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


def status_key(control: dict[str, Any]) -> str:
    """The control's status as threshold files name it (passed, failed, skipped, no_impact, error)."""
    return _STATUS_KEY[status_of(control)]


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
        counted.append(CountedControl(str(root.get("id")), status_key(root), severity_of(root)))
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


def _raw_controls(doc: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    return {c.get("id"): c for p in doc.get("profiles") or [] for c in p.get("controls") or []}


# One row per counted control, what reports and results.csv need: kept in each container's record
# so that a run's aggregation never parses its HDF files again. `waived`: "" when no waiver applies,
# else what the check found under it (passed, failed, skipped), so a waived failure stays visible.
ROW_FIELDS = ("control", "title", "severity", "impact", "status", "message", "waived")


def first_message(control: dict[str, Any]) -> str:
    """The message of the control's first result that did not pass: why it failed or was skipped."""
    return next(
        (str(r.get("message") or r.get("skip_message") or "") for r in control.get("results") or []
         if r.get("status") != "passed"),
        "",
    )  # fmt: skip


def control_rows(doc: dict[str, Any], counted: list[CountedControl] | None = None) -> list[list[Any]]:
    raw = _raw_controls(doc)
    rows = []
    for c in counted_controls(doc) if counted is None else counted:
        meta = raw.get(c.id) or {}
        message = first_message(meta)
        waived = truthy((meta.get("waiver_data") or {}).get("skipped_due_to_waiver", UNDEFINED))
        found = status_key({**meta, "waiver_data": {}}) if waived else ""
        rows.append(
            [c.id, str(meta.get("title") or c.id), c.severity, float(meta.get("impact", 0.0)), c.status, message, found]
        )
    return rows


def unexamined_controls(doc: dict[str, Any], counted: list[CountedControl] | None = None) -> list[str]:
    """The counted controls that hold an error result, each with its first message: facts the
    scan needed but could not establish (a cut section, a hostile file, a failed command)."""
    raw = _raw_controls(doc)
    out = []
    for control in counted_controls(doc) if counted is None else counted:
        if control.status != "error":
            continue
        results = (raw.get(control.id) or {}).get("results") or []
        message = next((str(r.get("message") or "") for r in results if r.get("status") == "error"), "")
        out.append(f"{control.id} ({message[:200]})" if message else control.id)
    return out
