"""Writing run files so that a reader never sees a partial one and a crash never leaves one: a
temporary file in the same folder, then a rename. A full or read-only disk is a RunDirError that
names the file, so the run stops with a clear message and what was written before stays."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from ..errors import RunDirError


@contextlib.contextmanager
def atomic_text(path: Path) -> Iterator[TextIO]:
    """A text file written in pieces that appears whole at `path`, or not at all."""
    tmp = ""
    try:
        tmp, fd = _open_temporary(path)
        with os.fdopen(fd, "w", newline="") as fh:
            yield fh
        os.replace(tmp, path)
    except OSError as exc:
        raise RunDirError(f"cannot write {path}: {_why(exc)}") from exc
    finally:
        if tmp:
            Path(tmp).unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = ""
    try:
        tmp, fd = _open_temporary(path)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise RunDirError(f"cannot write {path}: {_why(exc)}") from exc


def _open_temporary(path: Path) -> tuple[str, int]:
    """The temporary file beside `path`, its folder made only when missing (at a record per
    container, a mkdir per write costs more than the write). Named per process and thread, each of
    which writes one file at a time: cheaper than mkstemp's random names."""
    tmp = str(path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return tmp, os.open(tmp, flags, 0o600)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tmp, os.open(tmp, flags, 0o600)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: Path, doc: Any, *, compact: bool = False) -> None:
    text = json.dumps(doc, separators=(",", ":")) if compact else json.dumps(doc, indent=1)
    write_bytes_atomic(path, text.encode())


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{exc.strerror} (the folder is not writable)"
    return exc.strerror or str(exc)
