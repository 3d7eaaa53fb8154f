"""Serve a run's HDF files in Heimdall Lite, locally.

Heimdall Lite is a static build (npm `@mitre/heimdall-lite`, installed with the SAF CLI by
`make setup`). It must be served at the root of an origin, and it loads results on its own from
`/dynamic/predefinedload.json` when opened as `/?predefinedLoad=true`.
"""

from __future__ import annotations

import json
import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..tools import HEIMDALL_HINT, tools_dir

PREDEFINED = "/dynamic/predefinedload.json"


def find_dist() -> Path:
    """$FLEETSCAN_HEIMDALL_DIST, or the copy that came with the SAF CLI in the tools folder."""
    tools = tools_dir()
    for candidate in (
        os.environ.get("FLEETSCAN_HEIMDALL_DIST"),
        tools / "saf" / "node_modules" / "@mitre" / "heimdall-lite" / "dist" if tools else None,
    ):
        if candidate and (Path(candidate) / "index.html").is_file():
            return Path(candidate)
    raise UsageError(HEIMDALL_HINT)


def predefined_load(run_dir: Path) -> list[dict[str, str]]:
    """Every HDF of the run, as Heimdall's predefined-load list."""
    files = sorted((run_dir / "hdf").rglob("*.json"))
    if not files:
        raise UsageError(f"{run_dir}: no HDF results to show (hdf/ is empty)")
    return [{"filename": str(f.relative_to(run_dir / "hdf")).replace("/", "_"), "data": f.read_text()} for f in files]


class _Handler(SimpleHTTPRequestHandler):
    payload: bytes = b"[]"

    def do_GET(self) -> None:
        if self.path.split("?")[0] == PREDEFINED:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(self.payload)))
            self.end_headers()
            self.wfile.write(self.payload)
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the CLI prints the URL instead
        pass


class HeimdallServer:
    def __init__(self, run_dir: Path, *, host: str = "127.0.0.1", port: int = 0, dist: Path | None = None) -> None:
        handler = type("RunHandler", (_Handler,), {"payload": json.dumps(predefined_load(run_dir)).encode()})
        self._server = ThreadingHTTPServer((host, port), partial(handler, directory=str(dist or find_dist())))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/?predefinedLoad=true"

    def start(self) -> HeimdallServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="heimdall", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
