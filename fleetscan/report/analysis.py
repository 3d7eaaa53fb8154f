"""The roll-ups a security lead reads first: where the fleet is worst, and which controls fail most."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .frames import RunFrames

SEVERITIES = ["critical", "high", "medium", "low", "none"]
WEIGHT = {"critical": 10, "high": 5, "medium": 2, "low": 1, "none": 0}
OUTCOMES = ["passed", "failed", "error", "skipped"]


@dataclass
class Analysis:
    fleet_compliance: float | None
    by_namespace: pd.DataFrame  # namespace, containers, outcomes..., compliance
    by_workload: pd.DataFrame
    by_image: pd.DataFrame
    top_controls: pd.DataFrame  # control, title, severity, failing containers, score
    by_approach: pd.DataFrame  # approach x outcome counts
    heatmap: pd.DataFrame  # namespace x severity: failed controls


def _rollup(containers: pd.DataFrame, key: str) -> pd.DataFrame:
    if containers.empty:
        return pd.DataFrame(columns=[key, "containers", *OUTCOMES, "compliance"])
    counts = pd.crosstab(containers[key], containers["outcome"]).reindex(columns=OUTCOMES, fill_value=0)
    grouped = containers.groupby(key, observed=True)
    out = counts.assign(containers=grouped.size(), compliance=grouped["compliance"].mean().round(1))
    out = out.reset_index()[[key, "containers", *OUTCOMES, "compliance"]]
    return out.sort_values(["compliance", key], na_position="last").reset_index(drop=True)


def analyse(frames: RunFrames) -> Analysis:
    c, k = frames.containers, frames.controls
    scanned = c[c["compliance"].notna()]
    fleet = round(float(scanned["compliance"].mean()), 1) if len(scanned) else None
    failed = k[k["status"] == "failed"]
    if len(failed):
        top = failed.groupby(["control", "title", "severity"], observed=True).size().rename("failing").reset_index()
        top["score"] = top["failing"] * top["severity"].astype(str).str.lower().map(WEIGHT).fillna(0)
        top = top.sort_values(["score", "failing", "control"], ascending=[False, False, True]).reset_index(drop=True)
        heat = pd.crosstab(failed["namespace"], failed["severity"].astype(str).str.lower())
    else:
        top = pd.DataFrame(columns=["control", "title", "severity", "failing", "score"])
        heat = pd.DataFrame()
    namespaces = sorted(c["namespace"].astype(str).unique()) if len(c) else []
    heat = heat.reindex(index=namespaces, columns=SEVERITIES, fill_value=0)
    approach = (
        pd.crosstab(c["approach"].astype(str).replace("", "-"), c["outcome"]).reindex(columns=OUTCOMES, fill_value=0)
        if len(c)
        else pd.DataFrame(columns=OUTCOMES)
    )
    return Analysis(fleet, _rollup(c, "namespace"), _rollup(c, "workload"), _rollup(c, "image"), top, approach, heat)
