"""Prefect's ephemeral mode without Prefect's server in this process.

With no PREFECT_API_URL, Prefect starts a temporary API server in a subprocess on the first client
call, but imports the whole server (FastAPI app, database models) into the calling process just to
start it: 79 MB of a `fleetscan scan` that never serves an API. `TemporaryServer` starts the same
subprocess the same way (Prefect 3.9's `SubprocessASGIServer` command and environment) and points
this process at it, so the scan process holds only Prefect's client. The server takes 3-4 s to
start (most of it importing Prefect's server), so the CLI starts it first, before importing Prefect
itself, and waits for it only when the flow is about to run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

TRIES = 3  # uvicorn exits when another process took the port first: another port, up to this often
# Seconds the server may take to answer, unless PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS
# says otherwise: its first start migrates a new database, 9 s on this idle 2-core machine and 19 s
# beside four busy processes, too close to Prefect's own 20 s default for a first scan.
STARTUP_TIMEOUT = 120.0

log = logging.getLogger(__name__)


class ServerDidNotStart(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _prefect_dir() -> str:
    """Where the prefect package is, found without importing it (uvicorn's --app-dir)."""
    spec = importlib.util.find_spec("prefect")
    if spec is None or spec.origin is None:
        raise ServerDidNotStart("Prefect is not installed")
    return str(Path(spec.origin).parent.parent)


def _start(port: int) -> subprocess.Popen[bytes]:
    # The server reads the same environment and profile as this process, which has set nothing
    # of its own in Prefect's settings yet (Prefect's own start passes those on as variables).
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    args = ["--app-dir", _prefect_dir(), "--factory", "prefect.server.api.server:create_app"]
    args += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"]
    argv = [sys.executable, "-c", _WITH_PARENT, str(os.getpid()), *args]
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


# uvicorn, ended by the kernel when the thread that started it ends (the CLI's main thread: so when
# the scan dies, even by SIGKILL, no server is left behind). Set in the child itself, since a
# preexec_fn is unsafe once threads run.
_WITH_PARENT = """import ctypes, os, runpy, signal, sys
if sys.platform == "linux":
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)  # the parent died before the line above
sys.argv = ["uvicorn", *sys.argv[2:]]
runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
"""


def _startup_timeout() -> float:
    from prefect.settings import get_current_settings

    ephemeral = get_current_settings().server.ephemeral
    if "startup_timeout_seconds" in ephemeral.model_fields_set:  # the user's own, from env or profile
        return float(ephemeral.startup_timeout_seconds)
    return STARTUP_TIMEOUT


def _healthy(proc: subprocess.Popen[bytes], url: str, deadline: float, timeout: float) -> bool:
    """True once the server answers; False if it exited first (its port taken)."""
    import httpx

    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}/health").status_code == 200:
                    return True
            time.sleep(0.1)
    raise ServerDidNotStart(
        f"Prefect's temporary server at {url} did not answer within {timeout:g} s "
        "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)"
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class TemporaryServer:
    """Prefect's temporary API server: `start()` launches it (not when the environment names a
    server), `serving()` waits for it and points this process at it for a block, `stop()` ends it."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._port = 0

    def _launch(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            self._port = _free_port()
            self._proc = _start(self._port)
            log.info("Prefect's temporary server starting: pid %d, port %d", self._proc.pid, self._port)
        return self._proc

    def start(self) -> TemporaryServer:
        """Launch it now, without waiting (unless the environment names a server)."""
        if not os.environ.get("PREFECT_API_URL"):
            self._launch()
        return self

    def stop(self) -> None:
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None

    @contextlib.contextmanager
    def serving(self) -> Iterator[str | None]:
        """The server's URL as PREFECT_API_URL of this process (and its threads) for the block;
        None, and no server, when a server is configured (a profile's too) or the ephemeral mode
        is off (Prefect then says what is missing)."""
        from prefect.context import refresh_global_settings_context
        from prefect.settings import (
            PREFECT_API_URL,
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
            PREFECT_SERVER_EPHEMERAL_ENABLED,
            temporary_settings,
        )

        if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
            self.stop()
            yield None
            return
        try:
            timeout = _startup_timeout()
            deadline = time.monotonic() + timeout
            for _ in range(TRIES):
                proc = self._launch()
                url = f"http://127.0.0.1:{self._port}/api"
                if _healthy(proc, url, deadline, timeout):
                    break
                code, self._proc = proc.returncode, None
            else:
                raise ServerDidNotStart(f"Prefect's temporary server exited at start-up (code {code})")
            os.environ["PREFECT_API_URL"] = url
            refresh_global_settings_context()  # the settings every thread falls back to, from the environment
            try:
                # No flow run heartbeats: they let a server's automations find crashed runs, and nothing
                # watches a server that ends with the scan. Each costs the flow run's end up to a second
                # (Prefect's heartbeat thread sleeps in whole seconds and is joined when the flow ends).
                with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
                    yield url
            finally:
                del os.environ["PREFECT_API_URL"]
                refresh_global_settings_context()
        finally:
            self.stop()


@contextlib.contextmanager
def temporary_server() -> Iterator[str | None]:
    """Start the server and serve with it for the block (see `TemporaryServer`)."""
    with TemporaryServer().start().serving() as url:
        yield url
