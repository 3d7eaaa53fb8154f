"""The container runtime: real processes in real PID and mount namespaces, one overlay per container.

Every container gets a long-lived main process started by the static helper (`native/ctr.c`):
its own PID namespace (or the pod's shared one, or its target's for an ephemeral container), a
private mount namespace with an overlay over the image folder, /proc and /dev, a chroot, and the
uid, gid and capabilities of its securityContext. Exec enters that process's namespaces. So
`/proc/<pid>/root` and its permission checks are the kernel's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .images import DEFAULT_PATH, Image

log = logging.getLogger(__name__)

CAPS = {
    name: i
    for i, name in enumerate(
        (
            "CHOWN",
            "DAC_OVERRIDE",
            "DAC_READ_SEARCH",
            "FOWNER",
            "FSETID",
            "KILL",
            "SETGID",
            "SETUID",
            "SETPCAP",
            "LINUX_IMMUTABLE",
            "NET_BIND_SERVICE",
            "NET_BROADCAST",
            "NET_ADMIN",
            "NET_RAW",
            "IPC_LOCK",
            "IPC_OWNER",
            "SYS_MODULE",
            "SYS_RAWIO",
            "SYS_CHROOT",
            "SYS_PTRACE",
            "SYS_PACCT",
            "SYS_ADMIN",
            "SYS_BOOT",
            "SYS_NICE",
            "SYS_RESOURCE",
            "SYS_TIME",
            "SYS_TTY_CONFIG",
            "MKNOD",
            "LEASE",
            "AUDIT_WRITE",
            "AUDIT_CONTROL",
            "SETFCAP",
            "MAC_OVERRIDE",
            "MAC_ADMIN",
            "SYSLOG",
            "WAKE_ALARM",
            "BLOCK_SUSPEND",
            "AUDIT_READ",
            "PERFMON",
            "BPF",
            "CHECKPOINT_RESTORE",
        )
    )
}
# containerd's default set (no SYS_PTRACE: a container cannot read other processes' roots).
DEFAULT_CAPS = (
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
)
ALL_CAPS = (1 << len(CAPS)) - 1


def _host_bounding_set() -> int:
    """Capabilities this process may hand out; a sandboxed host may lack some (e.g. SYS_RESOURCE)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapBnd:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return ALL_CAPS


HOST_CAPS = _host_bounding_set()


class RuntimeError_(Exception):
    """A container could not be started (shown as the container's waiting reason)."""


@dataclass(frozen=True)
class Credentials:
    uid: int = 0
    gid: int = 0
    caps: int = 0

    @classmethod
    def from_security_context(cls, pod_sc: dict[str, Any] | None, ctr_sc: dict[str, Any] | None) -> Credentials:
        pod_sc, ctr_sc = pod_sc or {}, ctr_sc or {}
        uid = ctr_sc.get("runAsUser", pod_sc.get("runAsUser", 0))
        gid = ctr_sc.get("runAsGroup", pod_sc.get("runAsGroup", 0))
        if ctr_sc.get("privileged"):
            return cls(int(uid), int(gid), ALL_CAPS)
        caps = {CAPS[c] for c in DEFAULT_CAPS}
        spec = ctr_sc.get("capabilities") or {}
        for name in spec.get("drop") or []:
            if name.upper() == "ALL":
                caps.clear()
            else:
                caps.discard(CAPS.get(name.upper().removeprefix("CAP_"), -1))
        for name in spec.get("add") or []:
            if name.upper() == "ALL":
                caps = set(CAPS.values())
            elif name.upper().removeprefix("CAP_") in CAPS:
                caps.add(CAPS[name.upper().removeprefix("CAP_")])
        return cls(int(uid), int(gid), sum(1 << c for c in caps))

    def helper_args(self) -> list[str]:
        return ["-U", str(self.uid), "-G", str(self.gid), "-c", format(self.caps & HOST_CAPS, "x")]


@dataclass
class Container:
    name: str
    image: Image
    creds: Credentials
    env: dict[str, str]
    workdir: str
    pid: int = 0
    helper: subprocess.Popen[bytes] | None = None
    directory: Path | None = None
    started_at: float = 0.0
    container_id: str = ""  # as the pod status names it (without "containerd://")
    memory_limit: int = 0  # bytes; 0: none
    cgroup: ContainerCgroup | None = None  # its processes' cgroups, named by the container id
    restarts: int = 0
    terminated: dict[str, Any] | None = None  # how its last process ended, until it is restarted
    last_state: dict[str, Any] | None = None  # the termination before the current run
    backoff_until: float = 0.0  # monotonic time of the next restart
    oom_kills: int = 0  # OOM kills already accounted for

    @property
    def alive(self) -> bool:
        return self.helper is not None and self.helper.poll() is None


@dataclass
class Sandbox:
    """A pod: its folder, its optional shared-PID pause process and its containers."""

    directory: Path
    share_pid: bool
    pause: Container | None = None
    containers: dict[str, Container] = field(default_factory=dict)
    pod_key: tuple[str, str] = ("", "")  # the pod's namespace and name


class UserNamespace:
    """Rootless mode: a keeper process holding a user namespace (and a mount namespace it owns).

    Helpers join it before creating containers, so a non-root user gets PID and mount namespaces,
    overlayfs and chroot, with the kernel's permission checks inside. Run by root it maps uids
    0-65535 to themselves; run by a user it maps only that user, to root.
    """

    def __init__(self, helper: Path) -> None:
        self._helper = helper
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 10.0) -> None:
        self.process = subprocess.Popen(
            ["unshare", "--user", "--mount", "--propagation", "private", str(self._helper), "pause"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        # unshare execs the helper once the namespaces exist; only then are the maps writable.
        while os.path.realpath(f"/proc/{self.pid}/exe") != os.path.realpath(self._helper):
            if self.process.poll() is not None or time.monotonic() > deadline:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError_(f"could not create a user namespace: {err.strip() or 'timed out'}")
            time.sleep(0.005)
        if os.geteuid() == 0:
            maps = {"uid_map": "0 0 65536\n", "gid_map": "0 0 65536\n"}
        else:
            Path(f"/proc/{self.pid}/setgroups").write_text("deny")
            maps = {"uid_map": f"0 {os.geteuid()} 1\n", "gid_map": f"0 {os.getegid()} 1\n"}
        for name, text in maps.items():
            Path(f"/proc/{self.pid}/{name}").write_text(text)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


CGROUP_PREFIX = "fleetscan-emu-"  # our folder in each hierarchy: fleetscan-emu-<emulator pid>-<id>


class ContainerCgroup:
    """One container's cgroups, a folder per hierarchy named by its container id (as a node's runtime
    does: /proc/<pid>/cgroup then names the container a process belongs to), one of them limiting
    its memory. Every exec joins them, so a limit covers the container's processes together."""

    def __init__(self, folders: list[Path], memory: Path | None, rlimit: int = 0) -> None:
        self.folders = folders
        self.memory = memory  # the folder whose memory files hold the limit; None: rlimit only
        self.rlimit = rlimit  # bytes of address space per process, where no memory cgroup exists

    def helper_args(self) -> list[str]:
        args = [a for f in self.folders for a in ("-g", str(f / "cgroup.procs"))]
        return args + (["-m", str(self.rlimit)] if self.rlimit else [])

    def oom_kills(self) -> int:
        """How many processes the kernel OOM-killed in this container (cgroup v2 memory.events, v1
        memory.oom_control)."""
        if self.memory is None:
            return 0
        for name in ("memory.events", "memory.oom_control"):
            with contextlib.suppress(OSError):
                for line in (self.memory / name).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        return 0

    def kill(self) -> None:
        """SIGKILL every process of the container, execs and their children included, as a runtime
        stopping a container does (cgroup.kill where the kernel has it, else pid by pid)."""
        for folder in self.folders:
            with contextlib.suppress(OSError):
                (folder / "cgroup.kill").write_text("1")
        for _ in range(50):
            pids: set[int] = set()
            for folder in self.folders:
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        for folder in self.folders:
            _rmdir_when_empty(folder)


class Cgroups:
    """Per-container cgroups and the way memory limits are enforced on this host: `cgroup2` (a
    writable cgroup v2 hierarchy with the memory controller), `cgroup1` (the v1 memory hierarchy),
    or `rlimit`, the fallback where no memory cgroup can be made (rootless, or no writable
    hierarchy): each process's address space is capped, so an allocation beyond the limit fails
    instead of the kernel OOM-killing the process."""

    def __init__(self, tag: str, enabled: bool = True) -> None:
        self.roots: list[Path] = []  # our folder in each hierarchy, the v2 one first
        self.memory_root: Path | None = None
        self.memory_mode = "rlimit"
        if not enabled or os.geteuid() != 0:
            return
        name = f"{CGROUP_PREFIX}{tag}"
        v2, v1_memory = cgroup_mounts()
        for mount in (v2, v1_memory):
            if mount is not None:
                _sweep_stale_cgroups(mount)
        if v2 is not None and (root := _make_dir(v2 / name)) is not None:
            self.roots.append(root)
            if _enable_memory(v2, root):
                self.memory_root, self.memory_mode = root, "cgroup2"
        if self.memory_root is None and v1_memory is not None and (root := _make_dir(v1_memory / name)) is not None:
            self.roots.append(root)
            self.memory_root, self.memory_mode = root, "cgroup1"
        log.info("container memory limits enforced by %s", self.memory_mode)

    def make(self, container_id: str, memory_limit: int) -> ContainerCgroup:
        folders, memory = [], None
        for root in self.roots if container_id else []:
            folder = _make_dir(root / container_id)
            if folder is None:
                continue
            folders.append(folder)
            if root == self.memory_root and memory_limit and _set_limit(folder, memory_limit):
                memory = folder
        return ContainerCgroup(folders, memory, 0 if memory is not None or not memory_limit else memory_limit)

    def close(self) -> None:
        for root in self.roots:
            for child in root.iterdir():
                if child.is_dir():
                    _rmdir_when_empty(child)
            _rmdir_when_empty(root)


def _sweep_stale_cgroups(mount: Path) -> None:
    """Remove the cgroups of emulators that died without cleaning up (their processes died with
    them, so the folders are empty)."""
    for root in mount.glob(f"{CGROUP_PREFIX}*"):
        try:
            os.kill(int(root.name[len(CGROUP_PREFIX) :].split("-", 1)[0]), 0)
            continue  # its emulator is alive
        except ProcessLookupError:
            pass
        except (PermissionError, ValueError):
            continue
        for child in root.iterdir():
            if child.is_dir():
                _rmdir_when_empty(child, attempts=1)
        _rmdir_when_empty(root, attempts=1)


def _make_dir(folder: Path) -> Path | None:
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        log.info("no cgroup %s (%s)", folder, exc)
        return None
    return folder


def _enable_memory(mount: Path, root: Path) -> bool:
    """Delegate the v2 memory controller down to `root`'s children (False where it is not offered)."""
    try:
        if "memory" not in (mount / "cgroup.controllers").read_text().split():
            return False
        for parent in (mount, root):
            if "memory" not in (parent / "cgroup.subtree_control").read_text().split():
                (parent / "cgroup.subtree_control").write_text("+memory")
    except OSError as exc:
        log.info("cgroup v2 memory controller unavailable (%s)", exc)
        return False
    return True


def _set_limit(folder: Path, limit: int) -> bool:
    for name in ("memory.max", "memory.limit_in_bytes"):
        if (folder / name).exists():
            try:
                (folder / name).write_text(str(limit))
                # v1 counts swap separately; with memsw the limit covers swap too, as v2's does.
                with contextlib.suppress(OSError):
                    (folder / "memory.memsw.limit_in_bytes").write_text(str(limit))
                with contextlib.suppress(OSError):
                    (folder / "memory.swap.max").write_text("0")
                return True
            except OSError as exc:
                log.info("could not set the memory limit of %s (%s)", folder, exc)
    return False


def _rmdir_when_empty(folder: Path, attempts: int = 50) -> None:
    for _ in range(attempts):  # a cgroup can be removed once its last process is reaped
        try:
            folder.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


def cgroup_mounts() -> tuple[Path | None, Path | None]:
    """The cgroup v2 mount and the cgroup v1 memory hierarchy's mount, where they exist."""
    v2 = v1_memory = None
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fstype, _, options = [*right.split(" "), "", ""][:3]
                if fstype == "cgroup2" and v2 is None:
                    v2 = Path(left.split()[4])
                elif fstype == "cgroup" and "memory" in options.strip().split(","):
                    v1_memory = Path(left.split()[4])
    except OSError:
        pass
    return v2, v1_memory


class Runtime:
    def __init__(self, workdir: Path, helper: Path, userns: UserNamespace | None = None) -> None:
        self._dir = workdir
        self._helper = helper
        self._ids = itertools.count(1)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._join = ["-N", str(userns.pid)] if userns is not None else []
        # Rootless, the host's cgroups are not ours to write: memory limits fall back to rlimits.
        self.cgroups = Cgroups(f"{os.getpid()}-{id(self):x}", enabled=userns is None)

    # -- lifecycle ------------------------------------------------------------------------------
    def new_sandbox(self, share_pid: bool) -> Sandbox:
        directory = self._dir / f"pod-{next(self._ids):06d}"
        directory.mkdir()
        sandbox = Sandbox(directory, share_pid)
        if share_pid:
            # PID 1 of the pod, chrooted into an empty folder: /proc/1/root shows nothing of the host.
            empty = directory / "pause-root"
            empty.mkdir()
            pause = Container("POD", Image("pause", empty, None, (), "scratch"), Credentials(caps=0), {}, "/")
            self.launch(sandbox, pause, new_pid_ns=True, overlay=False)
            self.wait_ready(pause)
            sandbox.pause = pause
        return sandbox

    def launch(
        self,
        sandbox: Sandbox,
        ctr: Container,
        *,
        target: Container | None = None,
        new_pid_ns: bool = False,
        overlay: bool = True,
        command: list[str] | None = None,
    ) -> None:
        """Spawn the container's helper; `wait_ready` then collects its PID (start many, then wait)."""
        ctr.directory = sandbox.directory / f"{ctr.name}-{next(self._ids)}"
        ctr.directory.mkdir()
        args = [str(self._helper), "start", *self._join]
        if overlay:
            merged, upper, work = (ctr.directory / d for d in ("rootfs", "upper", "work"))
            for d in (merged, upper, work):
                d.mkdir()
            args += ["-r", str(merged), "-l", str(ctr.image.rootfs), "-u", str(upper), "-w", str(work)]
        else:
            args += ["-r", str(ctr.image.rootfs)]
        join = target or sandbox.pause
        if join is not None:
            args += ["-j", str(join.pid)]
        elif new_pid_ns or not sandbox.share_pid:
            args += ["-P"]
        args += ctr.creds.helper_args()
        ctr.cgroup = self.cgroups.make(ctr.container_id, ctr.memory_limit)
        args += ctr.cgroup.helper_args()
        entry = command or list(ctr.image.entrypoint or ())
        if entry:
            args += ["--", *entry]
        with open(ctr.directory / "log", "ab") as log_file:  # the child keeps its own copy
            ctr.helper = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log_file,
                env=ctr.env | {"PATH": ctr.env.get("PATH", DEFAULT_PATH)},
                close_fds=True,
            )

    def wait_ready(self, ctr: Container, timeout: float = 15.0) -> None:
        assert ctr.helper is not None and ctr.helper.stdout is not None
        out = ctr.helper.stdout
        ready, _, _ = select.select([out], [], [], timeout)
        line = out.readline() if ready else b""
        out.close()
        if not line.strip().isdigit():
            ctr.helper.kill()
            ctr.helper.wait()
            reason = self.log_tail(ctr) or "the container helper did not start in time"
            raise RuntimeError_(f"container {ctr.name!r} failed to start: {reason}")
        ctr.pid = int(line)

    def log_tail(self, ctr: Container, limit: int = 2000) -> str:
        if ctr.directory is None:
            return ""
        try:
            return (ctr.directory / "log").read_bytes()[-limit:].decode(errors="replace").strip()
        except OSError:
            return ""

    def stop(self, containers: list[Container]) -> None:
        # SIGTERM makes each helper SIGKILL its container's main process and reap it; the cgroup
        # kill then ends what the main process leaves behind (execs in flight, their children).
        for ctr in containers:
            if ctr.helper is not None and ctr.helper.poll() is None:
                ctr.helper.terminate()
        for ctr in containers:
            if ctr.cgroup is not None:
                ctr.cgroup.kill()
            if ctr.helper is None:
                continue
            try:
                ctr.helper.wait(timeout=5)
            except subprocess.TimeoutExpired:
                ctr.helper.kill()
                ctr.helper.wait()

    def restart(self, sandbox: Sandbox, ctr: Container, command: list[str] | None = None) -> None:
        """Replace the container's processes with a fresh start from its image, as the kubelet
        restarts a container: a new writable layer, execs in flight cut, one more restart."""
        self.stop([ctr])
        self._discard(ctr)
        ctr.restarts += 1
        self.launch(sandbox, ctr, command=command)
        self.wait_ready(ctr)

    def _discard(self, ctr: Container) -> None:
        if ctr.cgroup is not None:
            ctr.cgroup.remove()
        if ctr.directory is not None:
            shutil.rmtree(ctr.directory, ignore_errors=True)

    def destroy(self, *sandboxes: Sandbox) -> None:
        """Stop every container of the sandboxes and remove what they leave. Many at once (a
        cluster shutting down) are signalled together, then reaped: one after the other, each
        helper's exit was waited for in turn (10,000 pods took minutes)."""
        members = [ctr for sb in sandboxes for ctr in (*sb.containers.values(), *([sb.pause] if sb.pause else []))]
        self.stop(members)
        for ctr in members:
            if ctr.cgroup is not None:
                ctr.cgroup.remove()
        for sandbox in sandboxes:
            shutil.rmtree(sandbox.directory, ignore_errors=True)

    # -- exec -----------------------------------------------------------------------------------
    async def exec(self, ctr: Container, argv: list[str], *, stdin: bool) -> tuple[ExecProcess, int]:
        """Start argv inside the container; returns the process and a pipe that says "ENOENT" when
        argv[0] cannot be executed there (the containerd error case)."""
        args = [
            str(self._helper),
            "exec",
            *self._join,
            "-t",
            str(ctr.pid),
            *ctr.creds.helper_args(),
            *(ctr.cgroup.helper_args() if ctr.cgroup is not None else []),
            "-d",
            ctr.workdir or "/",
            "-s",
            "3",
            "--",
            *argv,
        ]
        return await ExecProcess.spawn(args, ctr.env, stdin=stdin)


class ExecProcess:
    """An exec's helper process, spawned without forking this (large) process and watched through a
    pidfd on the event loop: no thread and no fork per exec, unlike asyncio's subprocesses."""

    def __init__(self, pid: int, stdin: asyncio.StreamWriter | None, stdout: asyncio.StreamReader,
                 stderr: asyncio.StreamReader) -> None:  # fmt: skip
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None
        self._exited = asyncio.get_running_loop().create_future()

    @classmethod
    async def spawn(cls, args: list[str], env: dict[str, str], *, stdin: bool) -> tuple[ExecProcess, int]:
        loop = asyncio.get_running_loop()
        in_r, in_w = os.pipe() if stdin else (os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), -1)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        status_r, status_w = os.pipe()
        try:
            actions = [(os.POSIX_SPAWN_DUP2, fd, n) for n, fd in enumerate((in_r, out_w, err_w, status_w))]
            pid = os.posix_spawn(args[0], args, env, file_actions=actions, setsid=True)
        except BaseException:
            for fd in (in_r, in_w, out_r, err_r, status_r):
                if fd >= 0:
                    os.close(fd)
            raise
        finally:
            for fd in (out_w, err_w, status_w):
                os.close(fd)
        os.close(in_r)
        readers = []
        for fd in (out_r, err_r):
            reader = asyncio.StreamReader(limit=1 << 20)
            await loop.connect_read_pipe(
                functools.partial(asyncio.StreamReaderProtocol, reader), os.fdopen(fd, "rb", 0)
            )
            readers.append(reader)
        writer = None
        if in_w >= 0:
            transport, protocol = await loop.connect_write_pipe(
                lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), os.fdopen(in_w, "wb", 0)
            )
            writer = asyncio.StreamWriter(transport, protocol, None, loop)
        proc = cls(pid, writer, readers[0], readers[1])
        pidfd = os.pidfd_open(pid)

        def reap() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            _, status = os.waitpid(pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            proc._exited.set_result(proc.returncode)

        loop.add_reader(pidfd, reap)
        return proc, status_r

    async def wait(self) -> int:
        return int(await asyncio.shield(self._exited))

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)


def sweep_stale(parent: Path, prefix: str) -> None:
    """Remove work folders of emulators that died without cleaning up (their pid file is stale)."""
    for folder in parent.glob(f"{prefix}*"):
        pid_file = folder / "owner.pid"
        try:
            os.kill(int(pid_file.read_text()), 0)
        except PermissionError:
            continue  # alive, another user's
        except (OSError, ValueError):
            shutil.rmtree(folder, ignore_errors=True)  # dead owner, or a folder never finished


def kill_quietly(proc: ExecProcess) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
