"""`pods/exec` over WebSocket (v5/v4.channel.k8s.io), framed and terminated exactly as the kubelet does."""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from .errors import ApiError
from .rbac import Attributes
from .resources import BY_KEY
from .runtime import kill_quietly

if TYPE_CHECKING:
    from .authn import User
    from .cluster import Cluster
    from .requestinfo import RequestInfo

PODS = BY_KEY[("", "pods")]
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
STDIN, STDOUT, STDERR, STATUS, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255
CHUNK = 64 * 1024


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "false").lower() in ("true", "1")


def _authorize(cluster: Cluster, user: User, info: RequestInfo, verbs: tuple[str, ...]) -> None:
    from .api import forbidden_message

    for verb in verbs:
        attrs = Attributes(verb, info.namespace, "", "pods", "exec", info.name)
        if not cluster.authz.allowed(user, attrs):
            raise ApiError.forbidden(forbidden_message(user, attrs), PODS, info.name)


def exit_status(code: int, argv: list[str]) -> dict[str, Any]:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "message": f"command terminated with non-zero exit code: error executing command [{' '.join(argv)}], "
        f"exit code {code}",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def missing_binary_status(container_id: str, binary: str) -> dict[str, Any]:
    """containerd's answer when argv[0] does not exist in the container (e.g. `sh` in distroless)."""
    inner = (
        f"error executing command in container: failed to exec in container: failed to start exec "
        f'"{container_id}": OCI runtime exec failed: exec failed: unable to start container process: '
        f'exec: "{binary}": executable file not found in $PATH: unknown'
    )
    return {
        "metadata": {},
        "status": "Failure",
        "reason": "InternalError",
        "code": 500,
        "message": f"Internal error occurred: {inner}",
        "details": {"causes": [{"message": inner}]},
    }


async def handle_exec(request: web.Request, cluster: Cluster, info: RequestInfo, user: User) -> web.StreamResponse:
    if request.method == "POST":  # SPDY: authorized like the real server, then refused (WebSocket only)
        _authorize(cluster, user, info, ("create",))
        raise ApiError.bad_request("Upgrade request required")
    if request.method != "GET":
        raise ApiError.method_not_allowed()
    _authorize(cluster, user, info, ("get", "create") if cluster.exec_requires_create else ("get",))
    pod = cluster.store.get(PODS, info.namespace, info.name)
    argv = request.query.getall("command", [])
    if not argv:
        raise ApiError.bad_request("you must specify at least one command for the container")
    want_stdin, want_stdout, want_stderr = (_flag(request, n) for n in ("stdin", "stdout", "stderr"))
    if not (want_stdin or want_stdout or want_stderr):
        raise ApiError.bad_request("you must specify at least 1 of stdin, stdout, stderr")
    spec = pod["spec"]
    names = [c["name"] for c in spec["containers"]]
    name = request.query.get("container", "")
    if not name:
        if len(names) != 1:
            raise ApiError.bad_request(
                f"a container name must be specified for pod {info.name}, choose one of: [{' '.join(names)}]"
            )
        name = names[0]
    known = names + [c["name"] for c in spec.get("ephemeralContainers") or []]
    if name not in known:
        raise ApiError.bad_request(f"container {name} is not valid for pod {info.name}")
    ctr = cluster.pods.container(pod, name)
    if ctr is None or not ctr.alive:
        raise ApiError.bad_request(
            f'container "{name}" in pod "{info.name}" is waiting to start: trying and failing to pull image'
        )
    node = spec.get("nodeName", "")
    if delay := cluster.faults.node_delay(node):
        await asyncio.sleep(delay)  # the API server reaches the pod's kubelet, which is slow to answer
    ws = web.WebSocketResponse(protocols=PROTOCOLS, autoping=True, max_msg_size=64 * 1024 * 1024)
    if not ws.can_prepare(request).ok:
        raise ApiError.bad_request("Upgrade request required")
    await ws.prepare(request)
    stall = cluster.faults.stall_for(request.path)
    if stall:  # fault injection: a command that hangs without a byte (cancelled if the client leaves)
        await asyncio.sleep(stall)
    proc, status_fd = await cluster.pods.runtime.exec(ctr, argv, stdin=want_stdin)
    kill = cluster.faults.take_exec_kill(request.path)
    if kill is not None:
        asyncio.get_running_loop().call_later(
            kill.after, _kill_action, cluster, kill.action, info.namespace, info.name, name
        )
    drop_after = cluster.faults.take_exec_drop()
    sent = 0
    dropped = False

    async def pump(stream: asyncio.StreamReader | None, channel: int) -> None:
        nonlocal sent, dropped
        if stream is None:
            return
        while chunk := await stream.read(CHUNK):
            if dropped or ws.closed:
                continue  # keep draining so the process never blocks on a full pipe
            if (channel == STDOUT and not want_stdout) or (channel == STDERR and not want_stderr):
                continue
            if drop_after is not None and sent + len(chunk) > drop_after:
                # Fault injection: the connection dies mid-stream, with no status frame.
                dropped = True
                await ws.send_bytes(bytes([channel]) + chunk[: max(0, drop_after - sent)])
                transport = request.transport
                if transport is not None:
                    transport.abort()
                continue
            sent += len(chunk)
            await ws.send_bytes(bytes([channel]) + chunk)

    async def read_client() -> None:
        async for msg in ws:
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                continue
            data = msg.data.encode() if isinstance(msg.data, str) else msg.data
            if not data or proc.stdin is None:
                continue
            if data[0] == STDIN and want_stdin and not proc.stdin.is_closing():
                proc.stdin.write(data[1:])
                await proc.stdin.drain()
            elif data[0] == CLOSE and data[1:2] == bytes([STDIN]) and not proc.stdin.is_closing():
                proc.stdin.close()

    pumps = asyncio.gather(pump(proc.stdout, STDOUT), pump(proc.stderr, STDERR))
    client = asyncio.ensure_future(read_client())
    try:
        done, _ = await asyncio.wait({asyncio.ensure_future(proc.wait()), client}, return_when=asyncio.FIRST_COMPLETED)
        if client in done and proc.returncode is None:
            kill_quietly(proc)  # the client went away: end the session as the kubelet does
        code = await proc.wait()
        await pumps
        failure = os.read(status_fd, 64).decode().strip()
        if not dropped and not ws.closed:
            status = (
                missing_binary_status(_container_id(pod, name), argv[0])
                if failure == "ENOENT"
                else exit_status(code, argv)
            )
            await ws.send_bytes(bytes([STATUS]) + json.dumps(status).encode())
            await ws.close()
    finally:
        os.close(status_fd)
        client.cancel()
        kill_quietly(proc)
    return ws


def _container_id(pod: dict[str, Any], name: str) -> str:
    for st in (pod.get("status") or {}).get("containerStatuses", []) + (pod.get("status") or {}).get(
        "ephemeralContainerStatuses", []
    ):
        if st.get("name") == name and st.get("containerID"):
            return str(st["containerID"]).split("://")[-1]
    return name


def _kill_action(cluster: Cluster, action: str, namespace: str, pod: str, container: str) -> None:
    """The exec_kill fault: the container restarts, or the pod goes, while the exec runs."""
    try:
        if action == "restart":
            cluster.restart_container(namespace, pod, container)
        else:
            cluster.api_delete(PODS, namespace, pod)
    except ApiError:
        pass  # already gone: nothing left to cut
