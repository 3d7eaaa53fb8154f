"""Run the emulator: in a background thread (tests, benchmarks, `fleetscan demo`) or in the foreground."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import signal
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from . import api, control
from .cluster import Cluster
from .handle import EmulatorClient
from .pki import ServingCert, mint_serving_cert
from .runtime import sweep_stale
from .scenario import Scenario, apply_scenario

log = logging.getLogger(__name__)
WORKDIR_PREFIX = "fleetscan-emu-"
KUBELET_PERIOD = 1.0


def kubeconfig(server: str, ca_pem: bytes, token: str, name: str = "fleetscan-emulator") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": name,
        "clusters": [
            {
                "name": name,
                "cluster": {"server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()},
            }
        ],
        "users": [{"name": f"{name}-admin", "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin", "namespace": "default"}}],
    }


def write_private(path: Path, text: str) -> None:
    """Write a credential-bearing file as 0600 from the start (never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


class Emulator:
    """An HTTPS Kubernetes API server with real container processes behind it.

    `start()` returns once the scenario runs and the port listens; `stop()` ends every container
    process and removes every folder it made.
    """

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        exec_requires_create: bool = True,
        workdir_parent: str | None = None,
        watch_history: int = 10_000,
        rootless: bool | None = None,
    ) -> None:
        self._watch_history = watch_history
        # Without root, containers live in a user namespace; root may ask for that path too.
        self._rootless = os.geteuid() != 0 if rootless is None else rootless
        self._scenario = scenario
        self._host = host
        self._port = port
        self._exec_requires_create = exec_requires_create
        self._workdir_parent = Path(workdir_parent or tempfile.gettempdir())
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.cluster: Cluster | None = None
        self.cert: ServingCert | None = None
        self.workdir: Path | None = None
        self.port = 0
        self.summary: dict[str, int] = {}

    # -- properties -----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://{self._host}:{self.port}"

    @property
    def ca_pem(self) -> bytes:
        assert self.cert is not None
        return self.cert.ca_pem

    @property
    def admin_token(self) -> str:
        assert self.cluster is not None
        return self.cluster.authn.admin_token

    def kubeconfig(self, token: str | None = None) -> dict[str, Any]:
        return kubeconfig(self.url, self.ca_pem, token or self.admin_token)

    def write_kubeconfig(self, path: str | Path, token: str | None = None) -> Path:
        target = Path(path)
        write_private(target, yaml.safe_dump(self.kubeconfig(token), sort_keys=False))
        return target

    def client(self) -> EmulatorClient:
        return EmulatorClient(self.url, self.ca_pem, self.admin_token)

    # -- lifecycle ------------------------------------------------------------------------------------
    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=self._workdir_parent))
        (self.workdir / "owner.pid").write_text(str(os.getpid()))
        runner: web.AppRunner | None = None
        try:
            self.cert = mint_serving_cert()
            self.cluster = Cluster(
                self.workdir,
                exec_requires_create=self._exec_requires_create,
                watch_history=self._watch_history,
                rootless=self._rootless,
            )
            if self._scenario is not None:
                self.summary = apply_scenario(self.cluster, self._scenario)
            app = web.Application(middlewares=[api.api_middleware], client_max_size=64 * 1024 * 1024)
            app[api.CLUSTER_KEY] = self.cluster
            app.on_response_prepare.append(api.date_from_clock)
            api.add_routes(app)
            control.add_routes(app)
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert_file = self.workdir / "serving.pem"
            write_private(cert_file, (self.cert.cert_pem + self.cert.key_pem).decode())
            ctx.load_cert_chain(cert_file)
            cert_file.unlink()
            runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
            await runner.setup()
            site = web.TCPSite(runner, self._host, self._port, ssl_context=ctx, backlog=1024)
            await site.start()
            server = getattr(site, "_server", None)
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1] if sockets else self._port
            kubelet = asyncio.ensure_future(self._kubelet(self.cluster))
            self._ready.set()
            await self._stopped.wait()
            kubelet.cancel()
        finally:
            if self.cluster is not None:
                self.cluster.store.close_watches()
            if runner is not None:
                await runner.cleanup()
            if self.cluster is not None:
                self.cluster.shutdown()
            shutil.rmtree(self.workdir, ignore_errors=True)

    @staticmethod
    async def _kubelet(cluster: Cluster) -> None:
        """The nodes' kubelets: every second, exited containers are noticed and restarted."""
        while True:
            await asyncio.sleep(KUBELET_PERIOD)
            try:
                cluster.sync_pods()
            except Exception:  # one bad pass must not end the loop
                log.exception("the emulator's kubelet loop failed")

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()
            self._error = exc
        finally:
            loop.close()
            self._ready.set()

    def start(self, timeout: float = 600.0) -> Emulator:
        sweep_stale(self._workdir_parent, WORKDIR_PREFIX)
        # Container processes die with the thread that spawned them (PDEATHSIG), so one long-lived
        # thread owns the event loop and every spawn.
        self._thread = threading.Thread(target=self._thread_main, name="fleetscan-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the emulator did not become ready")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float | None = 60.0) -> None:
        """Stop serving and remove every container; waits `timeout` seconds at most (None: until
        done, as a served cluster does before it exits: its leftovers would wait for the next
        emulator's sweep)."""
        if self._loop is not None and self._stopped is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run_until_signalled(self, on_ready: Any = None) -> None:
        """Foreground mode: start, call `on_ready`, then serve until SIGINT or SIGTERM."""
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            if on_ready is not None:
                on_ready(self)
            while not stop.wait(0.5):
                if self._thread is None or not self._thread.is_alive():
                    break
        finally:
            self.stop(timeout=None)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
