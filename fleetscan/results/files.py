"""Writing run files so that a reader never sees a partial one and a crash never leaves one: a
temporary file in the same folder, then a rename. A full or read-only disk is a RunDirError that
names the file, so the run stops with a clear message and what was written before stays."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
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
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", newline="") as fh:
            yield fh
        os.replace(tmp, path)
    except OSError as exc:
        raise RunDirError(f"cannot write {path}: {_why(exc)}") from exc
    finally:
        if tmp:
            Path(tmp).unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes, *, folder_exists: bool = False) -> None:
    tmp = ""
    try:
        if not folder_exists:
            path.parent.mkdir(parents=True, exist_ok=True)
        # Unique per process and thread (each writes one file at a time): cheaper than mkstemp's
        # random names, which cost more than the write itself at a record per container.
        tmp = str(path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
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


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: Path, doc: Any, *, compact: bool = False, folder_exists: bool = False) -> None:
    text = json.dumps(doc, separators=(",", ":")) if compact else json.dumps(doc, indent=1)
    write_bytes_atomic(path, text.encode(), folder_exists=folder_exists)


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{exc.strerror} (the folder is not writable)"
    return exc.strerror or str(exc)
