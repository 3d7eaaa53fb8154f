"""Scenario files: the documented shape loads and behaves; mistakes are reported with their lines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from fleetscan.emulator.scenario import ScenarioError, load_scenario, parse_scenario
from fleetscan.emulator.server import Emulator

from .conftest import DATA, api_client
from .test_emulator_exec import run


@pytest.fixture(scope="module")
def documented() -> Iterator[Emulator]:
    with Emulator(load_scenario(str(DATA / "documented_shape.yaml"))) as emu:
        yield emu


@pytest.fixture()
def core(documented: Emulator, tmp_path: Path) -> client.CoreV1Api:
    return client.CoreV1Api(api_client(documented, tmp_path))


def sh(core: client.CoreV1Api, script: str, pod: str = "web-1", container: str = "app") -> str:
    status, out, err = run(core, "team-a", pod, ["sh", "-c", script], container=container)
    assert status["status"] == "Success", err
    return out.decode()


def test_image_overrides_are_visible_inside_the_container(core: client.CoreV1Api) -> None:
    assert sh(core, "stat -c '%a %u %g' /etc/app.conf /usr/local/bin/helper").split("\n")[:2] == ["666 0 0", "4755 0 0"]
    assert sh(core, "readlink /usr/bin/env") == "/bin/busybox\n"
    assert sh(core, "test -e /bin/vi && echo present || echo removed") == "removed\n"
    passwd = sh(core, "cat /etc/passwd")
    assert "app:x:1000:1000::/app:/sbin/nologin" in passwd.splitlines()
    assert "app:x:1000:" in sh(core, "cat /etc/group").splitlines()
    assert sh(core, "id -u") == "1000\n"  # runAsUser from the pod securityContext


def test_passwords_and_packages_in_the_base_formats(core: client.CoreV1Api) -> None:
    status, _, err = run(core, "team-a", "web-1", ["cat", "/etc/shadow"], container="app")
    assert status["status"] == "Failure" and b"Permission denied" in err  # uid 1000 cannot read it
    shadow = sh(core, "cat /etc/shadow", pod="svc-0", container="deb")
    assert shadow.startswith("root:*:")
    root_shadow = run(core, "team-a", "svc-0", ["cat", "/etc/os-release"], container="deb")[1]
    assert b"ID=debian" in root_shadow
    assert "Package: bash\nStatus: install ok installed" in sh(core, "cat /var/lib/dpkg/status", "svc-0", "deb")
    status, _, _ = run(core, "team-a", "svc-0", ["ls", "/var/lib/dpkg/status.d"], container="svc")
    assert status["reason"] == "InternalError"  # distroless: no ls, no shell


def test_web_image_files_via_debug_container(core: client.CoreV1Api) -> None:
    dbg = {
        "name": "dbg",
        "image": "fleetscan/debug:1.0",
        "command": ["sleep", "3600"],
        "targetContainerName": "svc",
        "securityContext": {"capabilities": {"add": ["SYS_PTRACE"]}},
    }
    core.patch_namespaced_pod_ephemeralcontainers("svc-0", "team-a", {"spec": {"ephemeralContainers": [dbg]}})
    status, out, _ = run(
        core,
        "team-a",
        "svc-0",
        [
            "sh",
            "-c",
            "ls /proc/1/root/var/lib/dpkg/status.d; grep -h Version /proc/1/root/var/lib/dpkg/status.d/libssl3",
        ],
        container="dbg",
    )
    assert status["status"] == "Success"
    assert "libssl3" in out.decode().split() and "Version: 3.0.15-1~deb12u1" in out.decode()


def test_apk_database_and_os_release(core: client.CoreV1Api, documented: Emulator, tmp_path: Path) -> None:
    admin = client.CoreV1Api(api_client(documented, tmp_path))
    admin.create_namespaced_pod(
        "team-a", {"metadata": {"name": "web-root"}, "spec": {"containers": [{"name": "app", "image": "acme/web:1.0"}]}}
    )
    apk = sh(admin, "cat /lib/apk/db/installed; cat /etc/os-release; grep '^root:' /etc/shadow", "web-root")
    assert "P:openssl\nV:3.3.1-r0" in apk
    assert 'PRETTY_NAME="Alpine Linux v3.20"' in apk and "VERSION_ID=3.20.1" in apk
    assert "root::" in apk  # the empty password from `passwords`


def test_owners_and_scale_generator(documented: Emulator, tmp_path: Path) -> None:
    api = api_client(documented, tmp_path)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    web = core.read_namespaced_pod("web-1", "team-a")
    assert web.metadata.annotations == {"fleetscan.io/skip": "false"}
    assert apps.read_namespaced_deployment("web", "team-a").status.ready_replicas == 1
    assert core.read_namespaced_pod("svc-0", "team-a").metadata.owner_references[0].kind == "StatefulSet"
    scale = core.list_pod_for_all_namespaces(label_selector="app").items
    generated = [p for p in scale if p.metadata.namespace.startswith("scale-")]
    assert len(generated) == 12 and {len(p.spec.containers) for p in generated} == {2}
    assert {p.metadata.namespace for p in generated} == {"scale-000", "scale-001", "scale-002"}
    assert all(p.status.phase == "Running" for p in generated)


def test_bundled_demo_has_the_promised_mix() -> None:
    demo = load_scenario("demo")
    pods = [p for ns in demo.namespaces for p in ns.pods]
    assert len(demo.namespaces) >= 5 and len(pods) >= 20
    bases = {demo.images[c.image].base for p in pods for c in p.containers if c.image in demo.images}
    assert {"busybox", "distroless"} <= bases
    assert any(p.shareProcessNamespace and len(p.containers) > 1 for p in pods)  # sidecar pods


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("images:\n  a/b:1:\n    base: alpine\n", ["scenario.yaml:3: images.a/b:1.base"]),
        (
            "images:\n  a/b:1:\n    files:\n      /x: {content: hi, mode: 0644}\n",
            ["scenario.yaml:4: images.a/b:1.files./x.mode", "quoted octal string"],
        ),
        ("namespaces:\n  - name: Team_A\n    pods: []\n", ["scenario.yaml:2: namespaces.0.name", "RFC 1123"]),
        (
            "namespaces:\n  - name: a\n    pods:\n      - name: p\n        containers: []\n",
            ["scenario.yaml:5: namespaces.0.pods.0.containers"],
        ),
        (
            "namespaces:\n  - name: a\n    pods:\n      - {name: p, containers: [{name: c, image: busybox}]}\n"
            "      - {name: p, containers: [{name: c, image: busybox}]}\n",
            ["scenario.yaml:5", "appears twice"],
        ),
        ("scale: {namespaces: 2}\n", ["scale.pods_per_namespace", "Field required"]),
        ("imgaes: {}\n", ["scenario.yaml:1: imgaes", "Extra inputs are not permitted"]),
    ],
)
def test_problems_are_reported_with_their_lines(text: str, expected: list[str]) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text, "scenario.yaml")
    for fragment in expected:
        assert fragment in str(err.value)


def test_bad_override_paths_are_refused(tmp_path: Path) -> None:
    through_link = "images:\n  a/b:1:\n    files:\n      /bin/sh/passwd: {content: pwned}\n"
    with pytest.raises(ScenarioError, match="symlink"), Emulator(parse_scenario(through_link, "s.yaml")):
        pass
    dotdot = "images:\n  a/b:1:\n    files:\n      /etc/../../x: {content: pwned}\n"
    with pytest.raises(ScenarioError, match="absolute and normalised"), Emulator(parse_scenario(dotdot, "s.yaml")):
        pass
    with pytest.raises(ScenarioError, match="no such file"):
        load_scenario(str(tmp_path / "missing.yaml"))
