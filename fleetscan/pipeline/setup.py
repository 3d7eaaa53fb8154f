"""Turn scan parameters into the objects a run needs, checking every input before any cluster call."""

from __future__ import annotations

import os
from importlib import resources
from typing import Any

from ..engines.cinc import CincEngine, CincSettings
from ..engines.native.engine import NativeEngine
from ..engines.native.profile import load_profile
from ..errors import UsageError
from ..kube.client import ClientSettings, Kube
from ..kube.discovery import Selection
from ..threshold import load_threshold, parse_threshold_text
from .params import ScanParams


def kube_for(params: ScanParams) -> Kube:
    settings = ClientSettings(qps=params.qps, burst=params.burst)
    if (
        params.kubeconfig is None
        and params.context is None
        and os.environ.get("KUBERNETES_SERVICE_HOST")
        and not os.environ.get("KUBECONFIG")
    ):
        return Kube.in_cluster(settings)
    return Kube.from_kubeconfig(params.kubeconfig, params.context, settings)


def engine_for(params: ScanParams) -> NativeEngine | CincEngine:
    if params.engine == "cinc":
        return CincEngine(params.profile, CincSettings(timeout=params.scan_timeout))
    profile = load_profile(params.profile)
    unknown = sorted(set(params.inputs) - set(profile.inputs))
    if unknown:
        raise UsageError(
            f"profile {profile.name} has no input(s) {', '.join(unknown)} "
            f"(it has: {', '.join(profile.inputs) or 'none'})"
        )
    return NativeEngine(profile, script_timeout=params.scan_timeout, inputs=dict(params.inputs))


def rules_for(params: ScanParams) -> tuple[Any, str]:
    """The parsed threshold and how to name it in reports."""
    if params.threshold:
        return load_threshold(params.threshold), params.threshold
    text = resources.files("fleetscan.profiles").joinpath("default.yml").read_text()
    return parse_threshold_text(text, "default.yml"), "default.yml (bundled)"


def selection_for(params: ScanParams) -> Selection:
    return Selection(
        namespaces=tuple(params.namespaces),
        namespace_selector=params.namespace_selector,
        exclude=tuple(params.exclude_namespaces),
        own_namespace=params.own_namespace,
        pod_selector=params.selector,
        one_per_workload=params.one_per_workload,
    )
