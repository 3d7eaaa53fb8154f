"""The real kubectl (1.32, chosen by the dispatcher from /version) against the emulator, as a person uses it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from fleetscan.emulator.server import Emulator

from .conftest import Kubectl, make_kubectl

pytestmark = pytest.mark.kubectl


def test_get_pods_prints_the_usual_columns(kubectl: Kubectl) -> None:
    out = kubectl("get", "pods", "-n", "shop", check=True).stdout.decode()
    header, *rows = out.strip().splitlines()
    assert header.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert any(r.split()[:3] == ["web-7d9f-abcde", "1/1", "Running"] for r in rows)
    broken = kubectl("get", "pod", "broken-image", "-n", "staging", check=True).stdout.decode()
    assert "ErrImagePull" in broken
    as_json = json.loads(kubectl("get", "pod", "api-0", "-n", "shop", "-o", "json", check=True).stdout)
    assert as_json["spec"]["containers"][0]["image"] == "acme/api:2.4"


def test_exec_exit_codes_and_stdin(kubectl: Kubectl) -> None:
    out = kubectl("exec", "-n", "shop", "web-7d9f-abcde", "--", "cat", "/etc/os-release", check=True)
    assert b"ID=alpine" in out.stdout
    failed = kubectl("exec", "-n", "shop", "web-7d9f-abcde", "--", "sh", "-c", "exit 7")
    assert failed.returncode == 7 and b"command terminated with exit code 7" in failed.stderr
    piped = kubectl("exec", "-i", "-n", "sandbox", "toolbox", "--", "wc", "-c", stdin=b"x" * 100_000, check=True)
    assert piped.stdout.strip() == b"100000"
    distroless = kubectl("exec", "-n", "shop", "api-0", "--", "sh")
    assert distroless.returncode == 1
    assert b'exec: "sh": executable file not found in $PATH' in distroless.stderr


def test_create_token_and_can_i(kubectl: Kubectl) -> None:
    token = kubectl("create", "token", "default", "-n", "shop", "--duration", "15m", check=True).stdout.decode().strip()
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["exp"] - claims["iat"] == 900
    short = kubectl("create", "token", "default", "-n", "shop", "--duration", "5m")
    assert short.returncode != 0 and b"may not specify a duration less than 10 minutes" in short.stderr
    sa = "system:serviceaccount:shop:default"
    assert kubectl("auth", "can-i", "create", "pods/exec", "-n", "shop", "--as", sa).stdout.strip() == b"no"
    assert kubectl("auth", "can-i", "list", "pods", "-n", "shop").stdout.strip() == b"yes"


def test_can_i_with_a_scanner_token(fresh_emulator: Emulator, tmp_path: Path) -> None:
    admin = make_kubectl(fresh_emulator, tmp_path)
    admin("create", "serviceaccount", "scanner", "-n", "alpha", check=True)
    admin(
        "create",
        "role",
        "scanner",
        "-n",
        "alpha",
        "--verb=get,create",
        "--resource=pods,pods/exec",
        "--resource-name=one",
        check=True,
    )
    admin(
        "create",
        "rolebinding",
        "scanner",
        "-n",
        "alpha",
        "--role=scanner",
        "--serviceaccount=alpha:scanner",
        check=True,
    )
    token = admin("create", "token", "scanner", "-n", "alpha", "--duration=15m", check=True).stdout.decode().strip()
    scanner = make_kubectl(fresh_emulator, tmp_path, token)
    assert scanner("auth", "can-i", "delete", "pods", "-n", "alpha").stdout.strip() == b"no"
    assert scanner("auth", "can-i", "create", "pods/one", "--subresource=exec", "-n", "alpha").stdout.strip() == b"yes"
    assert scanner("auth", "can-i", "create", "pods/two", "--subresource=exec", "-n", "alpha").stdout.strip() == b"no"
    assert scanner("exec", "-n", "alpha", "one", "--", "true").returncode == 0
    denied = scanner("exec", "-n", "alpha", "two", "--", "true")
    assert denied.returncode != 0 and b"forbidden" in denied.stderr.lower()
    escalate = scanner("create", "role", "more", "-n", "alpha", "--verb=delete", "--resource=pods")
    assert escalate.returncode != 0 and b"forbidden" in escalate.stderr.lower()


def test_debug_target_reads_distroless_root(fresh_emulator: Emulator, tmp_path: Path) -> None:
    k = make_kubectl(fresh_emulator, tmp_path)
    k("run", "dl", "-n", "alpha", "--image=gcr.io/distroless/static-debian12", "--restart=Never", check=True)
    k(
        "debug",
        "dl",
        "-n",
        "alpha",
        "--image=fleetscan/debug:1.0",
        "--target=dl",
        "--profile=general",
        "-c",
        "dbg",
        "--",
        "sleep",
        "3600",
        check=True,
    )
    out = k("exec", "-n", "alpha", "dl", "-c", "dbg", "--", "cat", "/proc/1/root/etc/os-release", check=True)
    assert b"PRETTY_NAME=Distroless" in out.stdout
    listing = k("exec", "-n", "alpha", "dl", "-c", "dbg", "--", "ls", "/proc/1/root/app", check=True)
    assert listing.stdout.split() == [b"server"]
    pod = json.loads(k("get", "pod", "dl", "-n", "alpha", "-o", "json", check=True).stdout)
    (eph,) = pod["spec"]["ephemeralContainers"]
    assert eph["targetContainerName"] == "dl" and "SYS_PTRACE" in eph["securityContext"]["capabilities"]["add"]
    assert "running" in pod["status"]["ephemeralContainerStatuses"][0]["state"]


def test_apply_rollout_and_scale(fresh_emulator: Emulator, tmp_path: Path) -> None:
    k = make_kubectl(fresh_emulator, tmp_path)
    manifest = tmp_path / "web.yaml"
    manifest.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: alpha}\n"
        "spec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n"
        "  template:\n    metadata: {labels: {app: web}}\n"
        "    spec: {containers: [{name: busybox, image: 'busybox:1.36', command: [sleep, '3600']}]}\n"
    )
    k("apply", "-f", str(manifest), check=True)
    k("rollout", "status", "deployment/web", "-n", "alpha", "--timeout=30s", check=True)
    pods = k("get", "pods", "-n", "alpha", "-l", "app=web", "-o", "name", check=True).stdout.split()
    assert len(pods) == 2
    k("set", "image", "deployment/web", "-n", "alpha", "busybox=busybox:1.37", check=True)
    k("rollout", "status", "deployment/web", "-n", "alpha", "--timeout=30s", check=True)
    images = k(
        "get", "pods", "-n", "alpha", "-l", "app=web", "-o", "jsonpath={.items[*].spec.containers[0].image}", check=True
    ).stdout.split()
    assert images == [b"busybox:1.37", b"busybox:1.37"]
    k("scale", "deployment/web", "-n", "alpha", "--replicas=3", check=True)
    k("rollout", "status", "deployment/web", "-n", "alpha", "--timeout=30s", check=True)
    assert len(k("get", "pods", "-n", "alpha", "-l", "app=web", "-o", "name", check=True).stdout.split()) == 3
    k("delete", "-f", str(manifest), check=True)
    assert k("get", "pods", "-n", "alpha", "-l", "app=web", "-o", "name", check=True).stdout.split() == []


def test_logs_of_a_container(kubectl: Kubectl) -> None:
    kubectl("exec", "-n", "sandbox", "toolbox", "--", "sh", "-c", "echo from-main > /proc/1/fd/1", check=True)
    out = kubectl("logs", "-n", "sandbox", "toolbox", "--tail", "1", check=True)
    assert out.stdout == b"from-main\n"
