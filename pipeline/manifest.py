"""Job records on disk: atomic JSON writes and a lock that keeps one process per work directory."""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from .errors import InputError, PipelineError
from .images import atomic_path


def write_json(path: Path | str, data: Any) -> None:
    """Write JSON atomically (temporary file, fsync, rename): readers never see half a record."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise PipelineError(f"{path}: no space left on the device; free some space and run the same command again") from None
        raise PipelineError(f"{path}: could not write ({exc.strerror or exc})") from None


def read_json(path: Path | str, default: Any = None) -> Any:
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable job record ({exc})") from None


class WorkDirLock:
    """An exclusive flock on WORK_DIR/.lock. The kernel drops it when its process dies, so a
    lock left by a killed run is simply taken over by the next one."""

    def __init__(self, work_dir: Path | str):
        self.path = Path(work_dir) / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> "WorkDirLock":
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(f"{self.path.parent}: work directory is not writable ({exc.strerror})") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            self.fd = None
            raise InputError(f"{self.path.parent}: work directory is in use by process {holder}") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
