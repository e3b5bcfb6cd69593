"""Who holds a shot: a Dask task that outlives its job's process stops, and the next run waits
for it (the same command finishes the job, whatever was killed when).

A Dask worker runs a shot in a thread that nothing can stop from outside. When the job's own
process dies (kill -9, a lost node, a batch system's preemption), the scheduler forgets the task
but the worker goes on running it, writing frames, flow pairs and chunks into the work directory.
The same command, run again, hands the shot out again; two tasks on one shot would then prune and
encode the same files under each other (seen: `chunks/000049.mp4: ffmpeg failed: ... No such
file or directory` in the second of three kill-and-resume runs). So:

    WORK/shots/run.json    the run that holds the job now, written before its shots start (claim)
    WORK/shots/NNNNNN.json the shot's record (videoshots.run_shot): its run, where it runs, state

- A shot's task keeps its record fresh while it runs (ShotLease: its mtime, every HEARTBEAT
  seconds, from a thread of its own, so a long step between iterations keeps it fresh too) and
  reads run.json as often. Once another run holds the job, the task is told (`superseded`: it
  stops at its shot's next iteration) and, on its way out, marks its record "stopped".
- A task about to start a shot whose record says another run's task is running it waits
  (wait_for_holder) until that record says otherwise, or its holder is known dead: a task of
  this process whose lease has ended (one that failed to mark its record, the disk being full),
  a process of this host that is gone (a killed local run's records), or a record not refreshed
  for STALE seconds (a Dask worker that died with its task).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .errors import PipelineError, WriteError
from .manifest import read_json, timestamp, write_json

HEARTBEAT = 2.0  # seconds between a running task's refreshes of its record (and looks at run.json)
STALE = 20.0  # seconds: a record not refreshed for this long has lost its task
POLL = 0.25  # seconds between a waiting task's looks at the record
RUN_FILE = "run.json"

# The runs whose shots are leased in this process now, and how many each: a record written here
# is known live or dead without waiting for it to go stale.
_LEASED: dict[str, int] = {}
_LEASED_LOCK = threading.Lock()


def run_file(work: Path) -> Path:
    return Path(work) / "shots" / RUN_FILE


def claim(work: Path, run: str) -> None:
    """This run holds the job from now on: tasks of earlier runs still running stop."""
    run_file(work).parent.mkdir(exist_ok=True)
    write_json(run_file(work), {"run": run, "claimed": timestamp()})


def current_run(work: Path) -> str | None:
    """The run holding the job; None once the shots' folder is gone (a later run discarded it)."""
    data = read_json(run_file(work), default=None)
    return data.get("run") if isinstance(data, dict) else None


def where() -> str:
    """Where a shot runs, for its record: the Dask worker's address, or this host and process."""
    # A Dask worker has imported distributed before it runs a task; a local run has not, and
    # importing it only to be told so took half a second of every job (a fifth of a 4-frame one).
    distributed = sys.modules.get("distributed")
    if distributed is not None:
        try:
            return distributed.get_worker().address
        except ValueError:  # imported (a client, say) but not on a worker
            pass
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_gone(record: dict) -> bool:
    """True when the task that wrote `record` is known to have ended: it ran in this process
    (where() says so) and no shot of its run is leased here any more, or in a process of this host
    that no longer exists. Of a task elsewhere (a Dask worker's), only the record's freshness can
    tell."""
    place = str(record.get("where", ""))
    if place == where():
        with _LEASED_LOCK:
            return _LEASED.get(record.get("run"), 0) == 0
    host, _, pid = place.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process of that number: alive
        return False
    return False


def held_by_another(record: object, run: str) -> bool:
    """A record that says a task of another run is running the shot (records from before the
    runs were named hold nothing)."""
    return isinstance(record, dict) and record.get("state") == "running" and record.get("run") not in (None, run)


def wait_for_holder(path: Path, run: str, *, check: Callable[[], None], tell: Callable[[str], None]) -> None:
    """Return once no live task of another run holds the shot whose record is `path`. `check`
    raises when this task's own run is over; `tell` says, once, what the wait is for."""
    seen, since, told = None, time.monotonic(), False
    while True:
        record = read_json(path, default=None)
        if not held_by_another(record, run) or holder_gone(record):
            return
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime != seen:  # refreshed since the last look: its task was alive then
            seen, since = mtime, time.monotonic()
        # Stale by this machine's clock at the first look (a record left long ago), or not
        # refreshed while watched (clock-proof: the file server's clock may differ from ours).
        if time.time() - mtime > STALE or time.monotonic() - since > STALE:
            return
        if not told:
            tell(f"waiting for the task of an earlier run at {record.get('where')} to stop")
            told = True
        check()
        time.sleep(POLL)


class ShotLease:
    """A running task's hold on its shot's record (`with ShotLease(...)` around the shot's loop):
    refreshed every HEARTBEAT seconds; `superseded()` is called once another run holds the job;
    a task that leaves by an exception marks its record "stopped", so that a waiting task of the
    next run goes on at once."""

    def __init__(self, work: Path, record: Path, run: str, superseded: Callable[[], None]):
        self.work, self.record, self.run, self.superseded = Path(work), record, run, superseded
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.beat, name=f"lease {record.name}", daemon=True)

    def __enter__(self) -> ShotLease:
        with _LEASED_LOCK:
            _LEASED[self.run] = _LEASED.get(self.run, 0) + 1
        self.thread.start()
        return self

    def __exit__(self, kind, exc, traceback) -> None:
        self.done.set()
        self.thread.join()
        with _LEASED_LOCK:
            _LEASED[self.run] -= 1
            if not _LEASED[self.run]:
                del _LEASED[self.run]
        if exc is None:
            return
        record = read_json(self.record, default=None)
        if isinstance(record, dict) and record.get("run") == self.run and record.get("state") == "running":
            try:
                write_json(self.record, record | {"state": "stopped", "stopped": timestamp()})
            except WriteError:  # the shots' folder is gone, or the disk full: the record goes stale
                pass

    def beat(self) -> None:
        told = False
        while not self.done.wait(HEARTBEAT):
            with contextlib.suppress(OSError):  # gone with the shots' folder: a later run discarded it
                os.utime(self.record)
            try:
                holder = current_run(self.work)
            except PipelineError:  # unreadable for now (a network file system's hiccup): the next beat
                continue
            if not told and holder != self.run:
                self.superseded()
                told = True
