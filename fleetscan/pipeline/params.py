"""One parameter model for every flow: the CLI builds it, and the Prefect UI renders it as a form."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from ..kube.names import check_label


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
        default_factory=lambda: ["kube-system", "kube-public", "kube-node-lease"],
        description="Names or globs never scanned",
    )
    own_namespace: str | None = Field(None, description="fleetscan's own namespace (never scanned)")
    selector: str = Field("", description="Label selector on pods")
    profile: str = Field("container-baseline", description="Bundled profile name or a profile file")
    inputs: dict[str, bool | int | str] = Field(
        default_factory=dict, description="Profile inputs, e.g. production: true"
    )
    threshold: str | None = Field(None, description="SAF threshold file; empty: the bundled default.yml")
    approach: Literal["auto", "exec", "debug", "sidecar"] = "auto"
    allow_debug: bool = Field(True, description="May auto fall back to ephemeral debug containers?")
    debug_image: str = Field("busybox:1.36", description="Image of the ephemeral debug container")
    engine: Literal["native", "cinc"] = "native"
    concurrency: int = Field(16, ge=1, le=512, description="Containers scanned at once in the whole run")
    one_per_workload: bool = Field(False, description="Scan one pod per workload revision")
    out: str = Field("", description="Run directory; empty: runs/<run id>")
    history: str = Field("", description="Trend history folder; empty: .fleetscan-history beside the run directory")
    run_id: str = Field("", description="Reuse one to resume an interrupted run; empty: a new id")
    token_seconds: int = Field(900, ge=600, description="Lifetime of the scan token")
    scan_timeout: float = Field(300.0, gt=0, description="Seconds one container's scan may take")
    retries: int = Field(2, ge=0, le=10, description="Retries per container for retryable errors")
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
    aggregate: bool = Field(True, description="Write summary and reports at the end (shards leave it to the parent)")
    qps: float = Field(50.0, gt=0, description="Client-side API request rate limit")
    burst: int = Field(100, ge=1)

    @field_validator("run_id")
    @classmethod
    def _valid_run_id(cls, value: str) -> str:
        if value:
            check_label(value, "run id")
            if len(value) > 40:
                raise ValueError("run id: at most 40 characters")
        return value

    def resolved(self) -> ScanParams:
        """A copy with the run id and output folder filled in."""
        run_id = self.run_id or new_run_id()
        return self.model_copy(update={"run_id": run_id, "out": self.out or f"runs/{run_id}"})
