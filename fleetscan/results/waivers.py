"""Waivers: accepted risks with an owner and an expiry, applied to a container's HDF the way InSpec
applies its own (`waiver_data.skipped_due_to_waiver`), so the threshold, SAF and Heimdall count a
waived control as Not Applicable. The check still runs: what it found stays in the HDF (its
results and `waiver_data.message`) and in the control rows, so an auditor sees whether a waived
control still fails. A waiver whose result is an error does not hide it (SAF's error rule comes
first). A bad file fails before any cluster call, with its file and line."""

from __future__ import annotations

import fnmatch
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml

from ..errors import UsageError
from ..kube.targets import Target
from .hdf import first_message, status_key

SCOPE_KEYS = ("namespace", "workload", "pod", "container", "image")
ENTRY_KEYS = ("controls", "scope", "justification", "expires", "approved_by")
REQUIRED = ("controls", "justification", "expires", "approved_by")  # no scope: everywhere


@dataclass(frozen=True)
class Waiver:
    id: str  # file:line, how reports and summary.json name it
    controls: tuple[str, ...]
    scope: tuple[tuple[str, str], ...]  # (key, glob), every one must match
    justification: str
    expires: date  # the last day it applies (UTC)
    approved_by: str

    def covers(self, target: Target) -> bool:
        values = {
            "namespace": target.namespace,
            "workload": target.workload.name or target.pod,  # a bare pod is its own workload
            "pod": target.pod,
            "container": target.container,
            "image": target.image,
        }
        return all(fnmatch.fnmatchcase(values[key], glob) for key, glob in self.scope)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "controls": list(self.controls),
            "scope": dict(self.scope),
            "justification": self.justification,
            "expires": self.expires.isoformat(),
            "approved_by": self.approved_by,
        }


@dataclass(frozen=True)
class Waivers:
    """A run's waiver file, split on the run's date into those in force and those expired."""

    name: str  # the file as given, "" when the run has none
    sha256: str
    in_force: tuple[Waiver, ...]
    expired: tuple[Waiver, ...]
    today: date

    @property
    def identity(self) -> str:
        return f"{self.name} sha256:{self.sha256[:16]}" if self.name else ""

    def apply(self, doc: dict[str, Any], target: Target) -> list[str]:
        """Waive, in `doc`, the controls a waiver in force covers for `target` (the first matching
        waiver in file order); return the ids of the waivers applied."""
        if not self.in_force:
            return []
        covering = [w for w in self.in_force if w.covers(target)]
        applied: list[str] = []
        for profile in doc.get("profiles") or []:
            for control in profile.get("controls") or []:
                waiver = next((w for w in covering if control.get("id") in w.controls), None)
                if waiver is None:
                    continue
                control["waiver_data"] = _waiver_data(waiver, control)
                if waiver.id not in applied:
                    applied.append(waiver.id)
        return applied

    def section(self, containers_by_waiver: dict[str, int]) -> dict[str, Any]:
        """What summary.json and the reports say about the waivers: applied (with how many
        containers), in force but matching nothing, and expired."""
        return {
            "file": self.name,
            "date": self.today.isoformat(),
            "applied": [
                {**w.describe(), "containers": containers_by_waiver[w.id]}
                for w in self.in_force
                if containers_by_waiver.get(w.id)
            ],
            "unused": [w.describe() for w in self.in_force if not containers_by_waiver.get(w.id)],
            "expired": [w.describe() for w in self.expired],
        }


NO_WAIVERS = Waivers("", "", (), (), date(1970, 1, 1))


def _waiver_data(waiver: Waiver, control: dict[str, Any]) -> dict[str, Any]:
    found = status_key({**control, "waiver_data": {}})
    first = first_message(control)
    return {
        "skipped_due_to_waiver": True,
        "run": True,  # the check ran; its results stay beside the waiver
        "justification": waiver.justification,
        "expiration_date": waiver.expires.isoformat(),
        "approved_by": waiver.approved_by,
        "message": f"waived by {waiver.id}; the check found: {found}" + (f" ({first[:300]})" if first else ""),
    }


def today_utc() -> date:
    return datetime.now(UTC).date()


def load_waivers(path: str | None, today: date | None = None) -> Waivers:
    """The waiver file `path` (empty: none), every problem reported at once with its line."""
    if not path:
        return NO_WAIVERS
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the waiver file: {exc.strerror or exc}") from exc
    return parse_waivers(text, path, today or today_utc())


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def parse_waivers(text: str, source: str, today: date) -> Waivers:
    try:
        tree = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from exc
    problems: list[str] = []
    waivers: list[Waiver] = []
    entries: list[yaml.Node] = []
    if not isinstance(tree, yaml.MappingNode):
        problems.append(f"{source}:1: a waiver file is a mapping with one key, waivers: a list of entries")
    else:
        for key, value in tree.value:
            if key.value != "waivers":
                problems.append(f"{source}:{_line(key)}: unknown key {key.value!r} (only waivers)")
            elif not isinstance(value, yaml.SequenceNode):
                problems.append(f"{source}:{_line(value)}: waivers must be a list of entries")
            else:
                entries = value.value
    name = Path(source).name
    for node in entries:
        waiver = _entry(node, source, f"{name}:{_line(node)}", problems)
        if waiver is not None:
            waivers.append(waiver)
    if problems:
        raise UsageError(f"{source}: bad waiver file:\n  " + "\n  ".join(problems))
    return Waivers(
        source,
        hashlib.sha256(text.encode()).hexdigest(),
        tuple(w for w in waivers if w.expires >= today),
        tuple(w for w in waivers if w.expires < today),
        today,
    )


def _scalar(node: yaml.Node) -> str | None:
    return str(node.value).strip() if isinstance(node, yaml.ScalarNode) and str(node.value).strip() else None


def _entry(node: yaml.Node, source: str, waiver_id: str, problems: list[str]) -> Waiver | None:
    where = f"{source}:{_line(node)}"
    if not isinstance(node, yaml.MappingNode):
        problems.append(f"{where}: a waiver is a mapping of {', '.join(ENTRY_KEYS)}")
        return None
    before = len(problems)
    fields: dict[str, yaml.Node] = {}
    for key, value in node.value:
        if key.value not in ENTRY_KEYS:
            problems.append(f"{source}:{_line(key)}: unknown key {key.value!r} ({', '.join(ENTRY_KEYS)})")
        fields[key.value] = value
    for required in REQUIRED:
        if required not in fields:
            problems.append(f"{where}: {required} is required")
    controls: list[str] = []
    if "controls" in fields:
        raw = fields["controls"]
        items = raw.value if isinstance(raw, yaml.SequenceNode) else []
        controls = [c for c in (_scalar(i) for i in items) if c]
        if not controls or len(controls) != len(items):
            problems.append(f"{where}: controls must be a non-empty list of control ids")
    scope: list[tuple[str, str]] = []
    if "scope" in fields:
        raw = fields["scope"]
        if not isinstance(raw, yaml.MappingNode):
            problems.append(f"{where}: scope must be a mapping of {', '.join(SCOPE_KEYS)} to globs")
        else:
            for key, value in raw.value:
                glob = _scalar(value)
                if key.value not in SCOPE_KEYS:
                    problems.append(f"{where}: unknown scope key {key.value!r} ({', '.join(SCOPE_KEYS)})")
                elif glob is None or (why := _bad_glob(glob)):
                    problems.append(f"{where}: scope {key.value}: {why if glob else 'a non-empty glob is required'}")
                else:
                    scope.append((key.value, glob))
    texts = {k: _scalar(fields[k]) for k in ("justification", "approved_by") if k in fields}
    for key, value in texts.items():
        if value is None:
            problems.append(f"{where}: {key} must be a non-empty text")
    expires: date | None = None
    if "expires" in fields:
        raw_date = _scalar(fields["expires"]) or ""
        try:
            expires = date.fromisoformat(raw_date) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw_date) else None
        except ValueError:
            expires = None
        if expires is None:
            problems.append(f"{where}: expires {raw_date!r} is not a date (YYYY-MM-DD)")
    if len(problems) > before or expires is None:
        return None
    return Waiver(
        waiver_id, tuple(controls), tuple(scope), texts["justification"] or "", expires, texts["approved_by"] or ""
    )


def _bad_glob(glob: str) -> str:
    """Why `glob` is not a usable glob ("" if it is): an unclosed [ would silently match itself."""
    at = glob.find("[")
    while at != -1:
        start = at + 1 + (glob[at + 1 : at + 2] == "!")
        close = glob.find("]", start + (glob[start : start + 1] == "]"))
        if close == -1:
            return f"{glob!r} has a [ without its ]"
        at = glob.find("[", close + 1)
    try:
        re.compile(fnmatch.translate(glob))
    except re.error as exc:
        return f"{glob!r} is not a valid glob ({exc})"
    return ""
