"""Exec over WebSocket with the official client: exit codes, stdin, binary output, kubelet-exact status."""

from __future__ import annotations

import json
import ssl
import urllib.request
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from fleetscan.emulator.server import Emulator

from .conftest import api_client


def run(
    core: client.CoreV1Api,
    ns: str,
    pod: str,
    argv: list[str],
    *,
    container: str | None = None,
    stdin: bytes | None = None,
) -> tuple[dict, bytes, bytes]:
    """(status from channel 3, stdout, stderr), parsed here rather than through `returncode`."""
    kwargs = {"container": container} if container else {}
    ws = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        ns,
        command=argv,
        stderr=True,
        stdout=True,
        stdin=stdin is not None,
        tty=False,
        _preload_content=False,
        binary=True,
        **kwargs,
    )
    if stdin is not None:
        ws.write_stdin(stdin)
        ws.close_channel(0)
    out, err, status = b"", b"", b""
    while True:
        ws.update(timeout=5)
        out += ws.read_channel(1) or b""
        err += ws.read_channel(2) or b""
        status += ws.read_channel(3) or b""
        if not ws.is_open():  # the frames of the last update were read just above
            break
    ws.close()
    return json.loads(status), out, err


def test_exit_codes_and_streams(admin: client.ApiClient) -> None:
    core = client.CoreV1Api(admin)
    status, out, err = run(core, "shop", "web-7d9f-abcde", ["sh", "-c", "echo out; echo err >&2"])
    assert status == {"metadata": {}, "status": "Success"} and out == b"out\n" and err == b"err\n"
    status, _, _ = run(core, "shop", "web-7d9f-abcde", ["sh", "-c", "exit 3"])
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"] == {"causes": [{"reason": "ExitCode", "message": "3"}]}
    assert status["message"] == (
        "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
    )


def test_stdin_round_trip(admin: client.ApiClient) -> None:
    core = client.CoreV1Api(admin)
    payload = bytes(range(256)) * 64
    status, out, _ = run(core, "sandbox", "toolbox", ["cat"], stdin=payload)
    assert status["status"] == "Success" and out == payload


def test_binary_output_is_byte_exact(admin: client.ApiClient) -> None:
    core = client.CoreV1Api(admin)
    status, out, _ = run(core, "sandbox", "toolbox", ["cat", "/bin/busybox"])
    assert status["status"] == "Success"
    assert out == Path("/bin/busybox").read_bytes()


def test_each_container_sees_its_own_image(admin: client.ApiClient) -> None:
    core = client.CoreV1Api(admin)
    _, out, _ = run(core, "shop", "web-7d9f-abcde", ["cat", "/etc/os-release"])
    assert b"ID=alpine" in out
    _, out, _ = run(core, "shop", "web-7d9f-abcde", ["stat", "-c", "%a %U", "/usr/local/bin/helper", "/etc/app.conf"])
    assert out.split(b"\n")[:2] == [b"4755 root", b"666 root"]
    _, out, _ = run(core, "batch", "etl-0", ["ps", "-o", "pid,comm"], container="sidecar")
    assert out.split(b"\n")[1].split()[0] == b"1"  # its own PID namespace: the container's main is PID 1


def test_writes_stay_in_their_container(admin: client.ApiClient) -> None:
    core = client.CoreV1Api(admin)
    run(core, "shop", "web-7d9f-abcde", ["sh", "-c", "echo changed > /etc/app.conf"])
    _, mine, _ = run(core, "shop", "web-7d9f-abcde", ["cat", "/etc/app.conf"])
    _, sibling, _ = run(core, "shop", "web-7d9f-fghij", ["cat", "/etc/app.conf"])
    assert mine == b"changed\n" and sibling.startswith(b"debug=true")


def test_missing_binary_is_containerd_internal_error(admin: client.ApiClient) -> None:
    core = client.CoreV1Api(admin)
    status, out, _ = run(core, "shop", "api-0", ["sh", "-c", "true"])
    assert status["status"] == "Failure" and status["reason"] == "InternalError" and status["code"] == 500
    assert 'exec: "sh": executable file not found in $PATH: unknown' in status["message"]
    assert status["message"].startswith("Internal error occurred: error executing command in container")
    assert out == b""


def test_container_choice_is_validated(admin: client.ApiClient) -> None:
    core = client.CoreV1Api(admin)
    with pytest.raises(ApiException) as err:
        run(core, "payments", "payments-6c5b-aaaaa", ["true"])
    assert "Handshake status 400" in str(err.value.reason)
    assert "a container name must be specified for pod payments-6c5b-aaaaa" in str(err.value.reason)
    with pytest.raises(ApiException) as err:
        run(core, "staging", "broken-image", ["true"])
    assert "is waiting to start" in str(err.value.reason)


def test_spdy_post_gets_upgrade_required(demo_emulator: Emulator) -> None:
    ctx = ssl.create_default_context(cadata=demo_emulator.ca_pem.decode())
    req = urllib.request.Request(
        f"{demo_emulator.url}/api/v1/namespaces/shop/pods/web-7d9f-abcde/exec?command=true&stdout=true",
        method="POST",
        headers={
            "Authorization": f"Bearer {demo_emulator.admin_token}",
            "X-Stream-Protocol-Version": "v4.channel.k8s.io",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, context=ctx)
    assert err.value.code == 400
    assert json.loads(err.value.read())["message"] == "Upgrade request required"


def test_v4_subprotocol_is_served(demo_emulator: Emulator, tmp_path: Path) -> None:
    """Older clients offer only v4.channel.k8s.io; the status still arrives on channel 3."""
    import websocket

    url = demo_emulator.url.replace("https", "wss") + (
        "/api/v1/namespaces/shop/pods/web-7d9f-abcde/exec?command=sh&command=-c&command=exit%205&stdout=true"
    )
    ca = tmp_path / "ca.pem"
    ca.write_bytes(demo_emulator.ca_pem)
    ws = websocket.create_connection(
        url,
        header=[f"Authorization: Bearer {demo_emulator.admin_token}"],
        subprotocols=["v4.channel.k8s.io"],
        sslopt={"ca_certs": str(ca)},
    )
    assert ws.subprotocol == "v4.channel.k8s.io"
    frames = []
    while True:
        opcode, data = ws.recv_data(control_frame=False)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        frames.append(data)
    status = json.loads(next(f for f in frames if f[:1] == b"\x03")[1:])
    assert status["details"]["causes"][0]["message"] == "5"


def test_kubeconfig_is_private_and_complete(demo_emulator: Emulator, tmp_path: Path) -> None:
    path = demo_emulator.write_kubeconfig(tmp_path / "kc")
    assert path.stat().st_mode & 0o777 == 0o600
    cfg = yaml.safe_load(path.read_text())
    assert cfg["clusters"][0]["cluster"]["server"].startswith("https://127.0.0.1:")
    assert cfg["clusters"][0]["cluster"]["certificate-authority-data"]
    assert cfg["users"][0]["user"]["token"] == demo_emulator.admin_token
    assert api_client(demo_emulator, tmp_path).call_api  # loads with the official loader
