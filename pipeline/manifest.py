"""Job records on disk: atomic JSON writes and a lock that keeps one process per work directory."""

from __future__ import annotations

import fcntl
import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .atomic import atomic_path
from .errors import InputError, WriteError


def writable_directory(directory: Path, what: str) -> None:
    """Create `directory` if needed and make sure we can write in it, or raise InputError."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{directory}: cannot create the {what} directory ({exc.strerror or exc})") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InputError(f"{directory}: {what} directory is not writable")


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
        raise WriteError(path, exc) from None


def read_json(path: Path | str, default: Any = None) -> Any:
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable job record ({exc})") from None


LOCK_TRIES = 5


class WorkDirLock:
    """An exclusive flock on WORK_DIR/.lock. The kernel drops it when its process dies, so a
    lock left by a killed run is simply taken over by the next one."""

    def __init__(self, work_dir: Path | str):
        self.path = Path(work_dir) / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> WorkDirLock:
        # A refused run removes the .lock it created while still holding it (workdir.py,
        # CreatedByThisRun): a lock taken on a file no longer under that name holds nothing, so
        # it is taken again on the file that is there now.
        while True:
            self._lock_file()
            try:
                if os.path.samestat(os.stat(self.path), os.fstat(self.fd)):
                    break
            except FileNotFoundError:
                pass
            os.close(self.fd)
            self.fd = None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def _lock_file(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(f"{self.path.parent}: work directory is not writable ({exc.strerror})") from None
        # `holder` (stylize status) takes a shared lock for a moment: a few tries tell that apart
        # from a job that holds the directory.
        for attempt in range(LOCK_TRIES):
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if attempt + 1 < LOCK_TRIES:
                    time.sleep(0.02)
                    continue
                holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "another process"
                os.close(self.fd)
                self.fd = None
                raise InputError(f"{self.path.parent}: work directory is in use by process {holder}") from None

    @staticmethod
    def holder(work_dir: Path | str) -> str | None:
        """The process id holding the lock on `work_dir`, or None when no process does."""
        path = Path(work_dir) / ".lock"
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        except BlockingIOError:
            return os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def timestamp() -> str:
    """Now, as job records give times."""
    return datetime.now().isoformat(timespec="seconds")


class JobManifest:
    """WORK_DIR/job.json: what a job is made of, and for each stage the hash of the settings that
    produced its outputs, those settings, its status and how far it got.

    Stages hash everything they depend on, including the hash of the stage before them, so a
    changed setting invalidates its own stage and every later one, and nothing earlier.
    """

    FILE = "job.json"

    def __init__(self, work_dir: Path | str, kind: str):
        self.path = Path(work_dir) / self.FILE
        data = read_json(self.path)
        if data is not None and data.get("kind") != kind:
            raise InputError(
                f"{self.path}: work directory belongs to a {data.get('kind')!r} job, not a {kind!r} job; use another "
                "--work-dir"
            )
        self.data = data or {"kind": kind, "version": 1, "inputs": {}, "stages": {}}

    def stage(self, name: str) -> dict:
        return self.data["stages"].setdefault(name, {"status": "pending"})

    def changed_settings(self, name: str, settings: dict) -> list[str]:
        """Names of the settings that differ from those the stage's outputs were made with."""
        old = self.stage(name).get("settings") or {}
        settings = json.loads(json.dumps(settings))  # as stored: tuples become lists
        return sorted(k for k in settings.keys() | old.keys() if old.get(k) != settings.get(k))

    def is_current(self, name: str, stage_hash: str) -> bool:
        return self.stage(name).get("hash") == stage_hash

    def reset(self, name: str, stage_hash: str, settings: dict) -> None:
        """Forget the stage's progress and record the settings it will now run with."""
        self.data["stages"][name] = {"status": "pending", "hash": stage_hash, "settings": settings}

    def update(self, name: str, **fields: Any) -> None:
        self.stage(name).update(fields)
        self.save()

    def save(self) -> None:
        write_json(self.path, self.data)
