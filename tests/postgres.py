"""A throwaway PostgreSQL for the tests that run Prefect as production does: Debian's PostgreSQL 15
binaries, `initdb` in a temporary folder as an unprivileged user (postgres refuses to run as root),
a free port on loopback, stopped and removed afterwards."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

USER = "prefect"  # the database superuser initdb creates (Prefect's migrations add pg_trgm)


def _bindir() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_unprivileged() -> dict[str, int]:
    """Run as `nobody` when this process is root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid}


def _run(args: list[str], ids: dict[str, int]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, **ids)  # type: ignore[arg-type]
    assert done.returncode == 0, f"{args[0]}: {done.stderr}"


@contextmanager
def postgres() -> Iterator[str]:
    """The SQLAlchemy URL (asyncpg) of a fresh database `prefect` on a private server."""
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (make setup installs Debian's postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="fleetscan-pg-"))
    data, port = folder / "data", _free_port()
    ids = _as_unprivileged()
    if ids:
        os.chown(folder, ids["user"], ids["group"])
    server: subprocess.Popen[bytes] | None = None
    try:
        _run([str(bindir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8"], ids)
        server = subprocess.Popen(  # type: ignore[call-overload]
            [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(folder),
             "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "fsync=off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **ids,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while subprocess.run(
            [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
        ).returncode:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("PostgreSQL did not start")
            time.sleep(0.2)
        _run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, "prefect"], ids)
        yield f"postgresql+asyncpg://{USER}@127.0.0.1:{port}/prefect"
    finally:
        if server is not None:
            server.terminate()  # smart shutdown: waits for Prefect's connections to close
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(folder, ignore_errors=True)
