"""Atomic placement of files: a temporary name beside the final one, then one rename.

Every file a job finishes (a frame, a record, a flow pair, an output) reaches its final name
through `replace`, so a reader sees it complete or not at all. The rule that makes resume exact
(DESIGN.md, "Stages, checkpoints, resume") is stated in terms of these renames: a kill right after
any one of them leaves a state the same command finishes from. `tests/test_commit_points.py`
checks exactly that: with PIPELINE_EXIT_AFTER_RENAMES=N in the environment, the process hard-exits
(os._exit, no cleanup, no flush) right after its N-th rename. Where the order of renames is not
fixed (an archive's batches finish on two threads per device in either order), a test stops at a
file instead: with PIPELINE_EXIT_AFTER_RENAME_TO=PATH, right after the rename onto PATH.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .signals import deferred

# Read once at import: os.umask can only be read by setting it, which races with other threads.
UMASK = os.umask(0o022)
os.umask(UMASK)
# atomic_path's temporary names: .NAME.<8 random characters>.tmp.SUFFIX
TEMPORARY_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")
# The test hook: hard-exit right after this many renames (0: never). Read once, at import, and
# taken out of the environment so that processes this one starts (flow workers) do not inherit it.
EXIT_AFTER_RENAMES = int(os.environ.pop("PIPELINE_EXIT_AFTER_RENAMES", "0") or 0)
_exit_path = os.environ.pop("PIPELINE_EXIT_AFTER_RENAME_TO", "")
# And right after the rename onto this path (made absolute once, here; "": never).
EXIT_AFTER_RENAME_TO = os.path.abspath(_exit_path) if _exit_path else ""
EXIT_STATUS = 99  # what a process stopped by the hook exits with, told apart from any real status
RENAME_COUNT_ENV = "PIPELINE_COUNT_RENAMES"  # set to a file path: each rename appends a line to it

_renames = 0
_renames_lock = threading.Lock()


def replace(source: Path | str, destination: Path | str) -> None:
    """os.replace, counted for the commit-point test (see the module's docstring).

    The rename, its count, its log line and the hook's exit happen under one lock: with renames
    on several threads (the flow stage's, a report writer's), the N-th logged rename is the N-th
    on disk, and the process exits before any other thread can place a file after it."""
    global _renames
    with _renames_lock:
        os.replace(source, destination)
        _renames += 1
        log = os.environ.get(RENAME_COUNT_ENV)
        if log:
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"{_renames} {destination}\n")
        if EXIT_AFTER_RENAMES and _renames >= EXIT_AFTER_RENAMES:
            os._exit(EXIT_STATUS)
        if EXIT_AFTER_RENAME_TO and os.path.abspath(destination) == EXIT_AFTER_RENAME_TO:
            os._exit(EXIT_STATUS)


def is_temporary(name: str) -> bool:
    """Whether a file name is one of atomic_path's temporaries (left behind by a killed run)."""
    return TEMPORARY_NAME.match(name) is not None


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    Ctrl-C and SIGTERM wait for the block to end (signals.deferred): a stopped job has finished
    the write it was doing, and its record of that write can follow."""
    path = Path(path)
    with deferred():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
        # mkstemp makes the file 0600; give the result the usual permissions of a new file.
        os.fchmod(fd, 0o666 & ~UMASK)
        os.close(fd)
        try:
            yield Path(tmp)
            replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
