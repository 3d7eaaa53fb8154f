"""The one source of a run's settings and their defaults: the CLI derives its options from these
fields (names, defaults, help, limits and choices), the Prefect UI renders them as a form, and the
deployments, schedules, deploy events and shards all pass them on."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, Field, field_validator

from .access import DEFAULT_DEBUG_IMAGE
from .kube.client import DEFAULT_BURST, DEFAULT_QPS, DEFAULT_REQUEST_TIMEOUT
from .kube.discovery import DEFAULT_EXCLUDES, Selection, workload_ref
from .kube.names import check_label
from .retry import DEFAULT_RETRIES


def new_run_id() -> str:
    """Sortable, unique enough, and a valid Kubernetes name part (it names the scan ServiceAccount)."""
    return f"r{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


class ScanParams(BaseModel):
    kubeconfig: str | None = Field(
        None, description="Kubeconfig file; empty: $KUBECONFIG, ~/.kube/config or in-cluster"
    )
    context: str | None = Field(None, description="Kubeconfig context")
    namespaces: list[str] = Field(default_factory=list, description="Names or globs; empty: every namespace")
    namespace_selector: str = Field("", description="Label selector on namespaces")
    exclude_namespaces: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXCLUDES), description="Names or globs never scanned"
    )
    own_namespace: str | None = Field(None, description="fleetscan's own namespace (never scanned)")
    selector: str = Field("", description="Label selector on pods")
    workload: str = Field(
        "",
        description="Scan one workload, KIND/NAME (Deployment, StatefulSet, DaemonSet, Job or Pod), in the "
        "one namespace named",
    )
    one_per_workload: bool = Field(False, description="Scan one pod per workload revision (replicas are alike)")
    profile: str = Field("container-baseline", description="Bundled profile name or a profile file")
    inputs: dict[str, bool | int | str] = Field(
        default_factory=dict, description="Profile inputs, e.g. production: true"
    )
    threshold: str | None = Field(None, description="SAF threshold file; empty: the bundled default.yml")
    waivers: str = Field(
        "", description="Waiver file (YAML): accepted risks, each with an owner and an expiry; empty: none"
    )
    baseline: str = Field(
        "",
        description="Earlier run to compare with: its run directory, or previous (the last run in the "
        "history); empty: none",
    )
    fail_on_new: bool = Field(
        False, description="Exit 1 only when a container/control fails that did not fail in the baseline?"
    )
    metrics: str = Field(
        "", description="Prometheus text file to write at the end (node_exporter's textfile collector); empty: none"
    )
    pushgateway: str = Field("", description="Prometheus Pushgateway URL to push the same metrics to; empty: none")
    metrics_per_workload: bool = Field(
        False, description="Add one metrics series per workload (cardinality grows with the fleet)?"
    )
    policy_reports: bool = Field(
        False, description="Create or replace one PolicyReport (wgpolicyk8s.io/v1alpha2) per scanned namespace?"
    )
    policy_reports_dir: str = Field(
        "", description="Write the PolicyReports as YAML files into this folder (with or without policy_reports)"
    )
    approach: Literal["auto", "exec", "debug", "sidecar"] = Field("auto", description="How to get into containers")
    allow_debug: bool = Field(True, description="May auto fall back to ephemeral debug containers?")
    debug_image: str = Field(DEFAULT_DEBUG_IMAGE, description="Image of the ephemeral debug containers")
    engine: Literal["native", "cinc"] = Field("native", description="fleetscan's engine, or CINC Auditor")
    concurrency: int = Field(16, ge=1, le=512, description="Containers scanned at once in the whole run")
    max_per_node: int = Field(
        4, ge=0, le=512, description="Containers scanned at once on one node (its kubelet runs them); 0: no limit"
    )
    out: str = Field("", description="Run directory; empty: runs/<run id>")
    history: str = Field("", description="Trend history folder; empty: .fleetscan-history beside the run directory")
    run_id: str = Field("", description="Reuse one to resume an interrupted run; empty: a new id")
    token_seconds: int = Field(900, ge=600, description="Lifetime of the scan token, in seconds")
    scan_timeout: float = Field(300.0, gt=0, description="Seconds one container's scan may take")
    retries: int = Field(
        DEFAULT_RETRIES, ge=0, le=10, description="Retries of an API call or exec that failed retryably"
    )
    request_timeout: float = Field(DEFAULT_REQUEST_TIMEOUT, gt=0, description="Seconds one API request may take")
    qps: float = Field(DEFAULT_QPS, gt=0, description="Client-side API request rate limit (requests per second)")
    burst: int = Field(DEFAULT_BURST, ge=1, description="Requests allowed at once above the rate limit")
    dispatch: str = Field(
        "",
        description="Deployment ('flow/deployment') that scans shards of namespaces on a "
        "work pool; empty: scan in this flow run",
    )
    shard_size: int = Field(20, ge=1, description="Namespaces per dispatched shard")
    share: str = Field(
        "",
        description="fsspec URL (s3://bucket/path, file:///mnt/x) through which shards hand their "
        "results back when workers share no filesystem; empty: shards write into the run directory",
    )
    max_error_ratio: float = Field(
        0.1,
        ge=0,
        le=1,
        description="The flow run ends Failed when more than this share of its containers could not be "
        "scanned (else Completed, whatever the verdicts); the CLI's exit code does not change",
    )
    aggregate: bool = Field(True, description="Write summary and reports at the end (shards leave it to the parent)")

    @field_validator("run_id")
    @classmethod
    def _valid_run_id(cls, value: str) -> str:
        if value:
            check_label(value, "run id")
            if len(value) > 40:
                raise ValueError("run id: at most 40 characters")
        return value

    @field_validator("pushgateway")
    @classmethod
    def _valid_pushgateway(cls, value: str) -> str:
        parsed = urlparse(value)
        if value and (parsed.scheme not in ("http", "https") or not parsed.netloc):
            raise ValueError(f"{value!r}: give the Pushgateway's http(s) URL, e.g. http://pushgateway:9091")
        return value

    @field_validator("workload")
    @classmethod
    def _valid_workload(cls, value: str) -> str:
        if value:
            kind, name = workload_ref(value)
            return f"{kind}/{name}"
        return value

    def resolved(self) -> ScanParams:
        """A copy with the run id and output folder filled in."""
        run_id = self.run_id or new_run_id()
        return self.model_copy(update={"run_id": run_id, "out": self.out or f"runs/{run_id}"})

    def selection(self) -> Selection:
        """What this run scans: every way a scan starts goes through here."""
        return Selection(
            namespaces=tuple(self.namespaces),
            namespace_selector=self.namespace_selector,
            exclude=tuple(self.exclude_namespaces),
            own_namespace=self.own_namespace,
            pod_selector=self.selector,
            one_per_workload=self.one_per_workload,
            workload=workload_ref(self.workload) if self.workload else None,
        )
