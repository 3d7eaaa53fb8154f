"""Scenario files (DESIGN.md §3): images from a base plus overrides, namespaces, pods, owners, `scale`.

Other people write these files, so the loader reports every problem at once, each with its line.
Pod and container entries may carry any further pod-spec / container fields (`command`, `env`,
`volumes`, ...): they are passed to the pod spec as written.
"""

from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .cluster import NAMESPACES, PODS, Cluster
from .controllers import owner_ref, template_hash
from .faults import Faults
from .images import FileSpec, ImageError, ImageSpec
from .resources import by_kind
from .validation import dns_label_problem, dns_subdomain_problem

BUNDLED = ("demo",)


class ScenarioError(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileModel(_Strict):
    content: str | None = None
    copy_: str | None = Field(default=None, alias="copy")
    mode: str | None = None
    uid: int = 0
    gid: int = 0

    @field_validator("mode", mode="before")
    @classmethod
    def _mode_is_text(cls, value: Any) -> Any:
        if isinstance(value, int):
            raise ValueError('mode must be a quoted octal string such as "0644" (unquoted, YAML reads it as a number)')
        return value


class UserModel(_Strict):
    name: str
    uid: int
    gid: int | None = None
    home: str | None = None
    shell: str | None = None
    gecos: str = ""


class GroupModel(_Strict):
    name: str
    gid: int
    members: list[str] = []


class PackageModel(_Strict):
    name: str
    version: str
    arch: str | None = None
    description: str | None = None


class ImageModel(_Strict):
    base: Literal["busybox", "distroless", "scratch", "debug", "scanner"] = "busybox"
    files: dict[str, FileModel] = {}
    symlinks: dict[str, str] = {}
    remove: list[str] = []
    users: list[UserModel] = []
    groups: list[GroupModel] = []
    passwords: dict[str, str] = {}
    os_release: dict[str, str] = {}
    packages: list[PackageModel] = []
    package_format: Literal["dpkg", "dpkg-status.d", "apk"] | None = None
    entrypoint: list[str] | None = None
    env: dict[str, str] = {}

    def to_spec(self) -> ImageSpec:
        return ImageSpec(
            base=self.base,
            files={p: FileSpec(f.content, f.copy_, f.mode, f.uid, f.gid) for p, f in self.files.items()},
            symlinks=dict(self.symlinks),
            remove=list(self.remove),
            users=[u.model_dump(exclude_none=True) for u in self.users],
            groups=[g.model_dump() for g in self.groups],
            passwords=dict(self.passwords),
            os_release={k: str(v) for k, v in self.os_release.items()},
            packages=[p.model_dump(exclude_none=True) for p in self.packages],
            package_format=self.package_format,
            entrypoint=self.entrypoint,
            env=dict(self.env),
        )


class ContainerModel(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    image: str
    securityContext: dict[str, Any] | None = None


class OwnerModel(_Strict):
    kind: Literal["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"]
    name: str


class PodModel(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    owner: OwnerModel | None = None
    node: str | None = None  # spec.nodeName; empty: scheduled to the least loaded node
    shareProcessNamespace: bool = False
    securityContext: dict[str, Any] | None = None
    containers: list[ContainerModel] = Field(min_length=1)


class NamespaceModel(_Strict):
    name: str
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    pods: list[PodModel] = []


class ScaleModel(_Strict):
    namespaces: int = Field(ge=1, le=10_000)
    pods_per_namespace: int = Field(ge=1, le=10_000)
    containers_per_pod: int = Field(default=1, ge=1, le=20)
    image: str = "busybox"
    prefix: str = "scale"
    pods_per_node: int = Field(default=100, ge=1)  # spread in turn over nodes <prefix>-node-N, as a scheduler does
    labels: dict[str, str] = {}


class Scenario(_Strict):
    nodes: list[str] = []  # the nodes pods are scheduled to; empty: four emulator-node-N
    # Faults from the start, in the control API's form (PUT /_emu/faults): latency, errors,
    # exec_stall, node_latency, exec_kill, exec_drop_after_bytes, seed.
    faults: dict[str, Any] | None = None
    images: dict[str, ImageModel] = {}
    namespaces: list[NamespaceModel] = []
    scale: ScaleModel | None = None


# -- loading ----------------------------------------------------------------------------------------
def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        if node is None:
            return None
    return node.start_mark.line + 1 if node is not None else None


def parse_scenario(text: str, source: str) -> Scenario:
    try:
        data = yaml.safe_load(text) or {}
        tree = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario is a mapping with images, namespaces and scale")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            line = _line_of(tree, loc)
            where = ".".join(str(p) for p in loc) or "(top)"
            problems.append(f"{source}:{line or '?'}: {where}: {err['msg']}")
        raise ScenarioError("\n".join(problems)) from None
    problems = _semantic_problems(scenario, tree, source)
    if problems:
        raise ScenarioError("\n".join(problems))
    return scenario


def _semantic_problems(s: Scenario, tree: yaml.Node | None, source: str) -> list[str]:
    problems: list[str] = []
    if s.faults is not None:
        try:
            Faults().configure(s.faults)
        except (KeyError, TypeError, ValueError, re.error) as exc:
            problems.append(f"{source}:{_line_of(tree, ('faults',)) or '?'}: faults: {exc}")

    def report(loc: tuple[int | str, ...], message: str) -> None:
        problems.append(f"{source}:{_line_of(tree, loc) or '?'}: {'.'.join(map(str, loc))}: {message}")

    seen_ns: set[str] = set()
    for i, ns in enumerate(s.namespaces):
        problem = dns_label_problem(ns.name)
        if problem:
            report(("namespaces", i, "name"), f"{ns.name!r}: {problem}")
        if ns.name in seen_ns:
            report(("namespaces", i, "name"), f"namespace {ns.name!r} appears twice")
        seen_ns.add(ns.name)
        pods: set[str] = set()
        for j, pod in enumerate(ns.pods):
            problem = dns_subdomain_problem(pod.name)
            if problem:
                report(("namespaces", i, "pods", j, "name"), f"{pod.name!r}: {problem}")
            if pod.name in pods:
                report(("namespaces", i, "pods", j, "name"), f"pod {pod.name!r} appears twice in {ns.name}")
            pods.add(pod.name)
            names: set[str] = set()
            for k, ctr in enumerate(pod.containers):
                problem = dns_label_problem(ctr.name)
                if problem:
                    report(("namespaces", i, "pods", j, "containers", k, "name"), f"{ctr.name!r}: {problem}")
                if ctr.name in names:
                    report(
                        ("namespaces", i, "pods", j, "containers", k, "name"), f"container {ctr.name!r} appears twice"
                    )
                names.add(ctr.name)
    return problems


def load_scenario(name_or_path: str) -> Scenario:
    """A bundled scenario by name (`demo`) or a YAML file."""
    if name_or_path in BUNDLED:
        text = resources.files("fleetscan.emulator").joinpath(f"scenarios/{name_or_path}.yaml").read_text()
        return parse_scenario(text, f"scenario {name_or_path}")
    path = Path(name_or_path)
    if not path.is_file():
        raise ScenarioError(
            f"scenario {name_or_path!r}: no such file, and not a bundled scenario ({', '.join(BUNDLED)})"
        )
    return parse_scenario(path.read_text(), str(path))


# -- applying -----------------------------------------------------------------------------------------
def _pod_object(ns: str, pod: PodModel) -> dict[str, Any]:
    spec: dict[str, Any] = dict(pod.model_extra or {})
    spec["containers"] = [c.model_dump(exclude_none=True) for c in pod.containers]
    spec["shareProcessNamespace"] = pod.shareProcessNamespace
    if pod.node:
        spec["nodeName"] = pod.node
    if pod.securityContext is not None:
        spec["securityContext"] = pod.securityContext
    meta: dict[str, Any] = {"name": pod.name, "namespace": ns, "labels": dict(pod.labels)}
    if pod.annotations:
        meta["annotations"] = dict(pod.annotations)
    return {"metadata": meta, "spec": spec}


def _scale_namespaces(scale: ScaleModel) -> list[NamespaceModel]:
    width = max(3, len(str(scale.namespaces - 1)))
    nodes = -(-scale.namespaces * scale.pods_per_namespace // scale.pods_per_node)
    out = []
    for n in range(scale.namespaces):
        pods = [
            PodModel(
                name=f"app-{p:04d}",
                labels={"app": f"app-{p:04d}", **scale.labels},
                node=f"{scale.prefix}-node-{(n * scale.pods_per_namespace + p) % nodes}",
                containers=[ContainerModel(name=f"c{c}", image=scale.image) for c in range(scale.containers_per_pod)],
            )
            for p in range(scale.pods_per_namespace)
        ]
        out.append(NamespaceModel(name=f"{scale.prefix}-{n:0{width}d}", pods=pods))
    return out


def apply_scenario(cluster: Cluster, scenario: Scenario) -> dict[str, int]:
    """Create the scenario's images, namespaces, workloads and pods (pods start at once, as on a node)."""
    if scenario.nodes:
        cluster.set_nodes(tuple(scenario.nodes))
    elif scenario.scale is not None:
        count = -(-scenario.scale.namespaces * scenario.scale.pods_per_namespace // scenario.scale.pods_per_node)
        cluster.set_nodes(tuple(f"{scenario.scale.prefix}-node-{i}" for i in range(count)))
    if scenario.faults is not None:
        cluster.faults.configure(scenario.faults)
    for ref, image in scenario.images.items():
        try:
            cluster.images.add(ref, image.to_spec())
        except ImageError as exc:
            raise ScenarioError(f"image {ref}: {exc}") from exc
    namespaces = list(scenario.namespaces) + (_scale_namespaces(scenario.scale) if scenario.scale else [])
    pods = containers = 0
    for ns in namespaces:
        if cluster.store.find(NAMESPACES, "", ns.name) is None:
            meta: dict[str, Any] = {"name": ns.name, "labels": dict(ns.labels)}
            if ns.annotations:
                meta["annotations"] = dict(ns.annotations)
            cluster.create_object(NAMESPACES, {"metadata": meta})
        owners: dict[tuple[str, str], dict[str, Any]] = {}
        members: dict[tuple[str, str], dict[str, Any]] = {}
        for pod in ns.pods:
            obj = _pod_object(ns.name, pod)
            if pod.owner is not None:
                key = (pod.owner.kind, pod.owner.name)
                if key not in owners:
                    owners[key] = _create_owner(
                        cluster, ns.name, pod.owner, obj, sum(1 for p in ns.pods if p.owner == pod.owner)
                    )
                parent = owners[key]
                if pod.owner.kind == "Deployment":
                    obj["metadata"]["labels"]["pod-template-hash"] = parent["metadata"]["labels"]["pod-template-hash"]
                obj["metadata"]["ownerReferences"] = [owner_ref(parent)]
                members[key] = obj
            if cluster.store.find(PODS, ns.name, pod.name) is None:
                cluster.create_object(PODS, obj)
                pods += 1
                containers += len(pod.containers)
        for member in members.values():  # workload status follows the pods just started
            cluster.refresh_owners(member)
    return {"namespaces": len(namespaces), "pods": pods, "containers": containers}


def _create_owner(
    cluster: Cluster, ns: str, owner: OwnerModel, first_pod: dict[str, Any], replicas: int
) -> dict[str, Any]:
    """The workload objects for pods a scenario lists explicitly, shaped as the controllers make them."""
    labels = dict(first_pod["metadata"]["labels"]) or {"app": owner.name}
    first_pod["metadata"]["labels"] = dict(labels)
    template = {"metadata": {"labels": dict(labels)}, "spec": copy.deepcopy(first_pod["spec"])}
    spec: dict[str, Any] = {"selector": {"matchLabels": dict(labels)}, "template": template}
    if owner.kind in ("Deployment", "StatefulSet", "ReplicaSet"):
        spec["replicas"] = replicas
    rt = by_kind(owner.kind)
    existing = cluster.store.find(rt, ns, owner.name)
    workload = existing or cluster.store.create(
        rt, {"metadata": {"name": owner.name, "namespace": ns, "labels": labels}, "spec": spec}
    )
    if owner.kind != "Deployment":
        return workload
    h = template_hash(template)
    rs_rt = by_kind("ReplicaSet")
    rs_name = f"{owner.name}-{h}"
    rs = cluster.store.find(rs_rt, ns, rs_name)
    if rs is None:
        rs_template = copy.deepcopy(template)
        rs_template["metadata"]["labels"]["pod-template-hash"] = h
        rs = cluster.store.create(
            rs_rt,
            {
                "metadata": {
                    "name": rs_name,
                    "namespace": ns,
                    "labels": {**labels, "pod-template-hash": h},
                    "ownerReferences": [owner_ref(workload)],
                    "annotations": {"deployment.kubernetes.io/revision": "1"},
                },
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {**labels, "pod-template-hash": h}},
                    "template": rs_template,
                },
            },
        )
    return rs
