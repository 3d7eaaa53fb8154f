"""HDF: the InSpec exec-JSON format that the SAF CLI and Heimdall read. One profile per file (SAF
evaluates only the first)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__


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


def write_atomic(path: Path, doc: dict[str, Any]) -> None:
    """Write JSON so that readers never see a partial file (temp file in the same folder, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
