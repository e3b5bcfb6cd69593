"""A shot's task that outlives its run (a Dask worker goes on after the job's process is killed)
stops once the next run claims the job, and the next run's task for that shot waits for it
(pipeline/shotlease.py). Nothing here can kill a Dask client mid-write on cue, so the job runs
in-process with helpers.py's tiny network and the other run is played by the test: it claims the
job as a new process would, or keeps a shot's record fresh as a live task on a worker would.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import build_tiny_vgg, decoded_frames, make_clip, make_job
from pipeline import shotlease
from pipeline.manifest import read_json, write_json
from pipeline.shotlease import ShotLease, claim, run_file, wait_for_holder
from pipeline.video import run_video
from pipeline.videoshots import Cancelled
from pipeline.workdir import frame_name

FRAMES = 24
DEADLINE = 180  # seconds; the machine running the tests may be shared and slow
WORKER = "tcp://192.0.2.1:8786"  # a Dask worker's address, on no machine of this test's


def wait_until(condition, what: str, thread: threading.Thread | None = None) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if thread is not None and not thread.is_alive():
            pytest.fail(f"the run ended before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {DEADLINE} s")
        time.sleep(0.01)


def finished(work: Path) -> int:
    return len(list((work / "styled").glob("[0-9]*.json")))


class InThread(threading.Thread):
    """run_video(job) in a thread; its result or its exception."""

    def __init__(self, job):
        super().__init__(daemon=True)
        self.job, self.result, self.error = job, None, None

    def run(self) -> None:
        try:
            self.result = run_video(self.job, vgg=build_tiny_vgg())
        except BaseException as exc:  # noqa: BLE001  (the test looks at it)
            self.error = exc


class LiveHolder:
    """A shot's record kept fresh, as the task of a live worker keeps it, until released."""

    def __init__(self, path: Path):
        self.path, self.stop = path, threading.Event()
        self.thread = threading.Thread(target=self.beat, daemon=True)

    def beat(self) -> None:
        while not self.stop.wait(0.05):
            os.utime(self.path)

    def __enter__(self) -> LiveHolder:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=FRAMES)


def test_a_task_left_by_an_earlier_run_stops_and_the_next_run_waits_for_it_then_finishes_the_job(
    clip, tmp_path, monkeypatch
):
    monkeypatch.setattr(shotlease, "HEARTBEAT", 0.05)  # the running task looks at run.json this often
    reference = make_job(clip, tmp_path / "reference", keep_frames=True)
    run_video(reference, vgg=build_tiny_vgg())
    job = make_job(clip, tmp_path / "job", keep_frames=True)
    record_path = job.work / "shots" / frame_name(1, ".json")  # --flow none: the range is one shot

    # Another run claims the job while the shot's task runs (what the next command does while a
    # Dask worker still runs the killed one's task): the task stops, its record says so.
    first = InThread(job)
    first.start()
    wait_until(lambda: finished(job.work) >= 2, "second finished frame", first)
    claim(job.work, "the next run")
    first.join(DEADLINE)
    assert isinstance(first.error, Cancelled), first.error
    record = read_json(record_path)
    assert record["state"] == "stopped" and record["run"] not in (None, "the next run")
    stopped_at = finished(job.work)
    assert stopped_at < FRAMES

    # The next run finds the shot held by a live task of an earlier run on a worker: it waits,
    # stylizing nothing, until that task's record says it stopped; then it finishes the job.
    write_json(record_path, record | {"state": "running", "run": "earlier", "where": WORKER})
    with LiveHolder(record_path):
        second = InThread(job)
        second.start()
        note = f"waiting for the task of an earlier run at {WORKER} to stop"
        wait_until(lambda: note in (job.work / "job.log").read_text(), "note of the wait in job.log", second)
        assert finished(job.work) == stopped_at
        write_json(record_path, record | {"state": "stopped", "run": "earlier", "where": WORKER})
    second.join(DEADLINE)
    assert second.error is None and second.result.frames == FRAMES
    assert read_json(record_path)["state"] == "done"
    for index in range(1, FRAMES + 1):
        name = frame_name(index)
        assert (job.work / "styled" / name).read_bytes() == (reference.work / "styled" / name).read_bytes(), name
    assert decoded_frames(job.output) == decoded_frames(reference.output)


def test_a_holder_known_to_be_gone_is_not_waited_for(tmp_path, monkeypatch):
    path, notes = tmp_path / "000001.json", []
    holding = {"state": "running", "run": "earlier", "first": 1, "last": 9}
    gone = subprocess.Popen(["true"])
    gone.wait()
    # A killed local run's task: a process of this host that no longer exists.
    write_json(path, holding | {"where": f"{socket.gethostname()}:{gone.pid}"})
    wait_for_holder(path, "mine", check=lambda: None, tell=notes.append)
    # A task of this process whose lease has ended without marking its record (the disk was full).
    write_json(path, holding | {"where": shotlease.where()})
    wait_for_holder(path, "mine", check=lambda: None, tell=notes.append)
    # A record this run wrote itself, one that says stopped or done, one from before runs were named.
    for record in ({"run": "mine"}, {"state": "stopped"}, {"state": "done"}, {"run": None}):
        write_json(path, holding | {"where": WORKER} | record)
        wait_for_holder(path, "mine", check=lambda: None, tell=notes.append)
    # A worker's record last refreshed long ago, by this machine's clock.
    write_json(path, holding | {"where": WORKER})
    os.utime(path, (time.time() - 3600, time.time() - 3600))
    wait_for_holder(path, "mine", check=lambda: None, tell=notes.append)
    assert notes == []
    # A worker's record that stops being refreshed while watched: taken once it has gone stale.
    monkeypatch.setattr(shotlease, "STALE", 0.3)
    write_json(path, holding | {"where": WORKER})
    wait_for_holder(path, "mine", check=lambda: None, tell=notes.append)
    assert notes == [f"waiting for the task of an earlier run at {WORKER} to stop"]


def test_a_task_waiting_for_a_holder_stops_when_its_own_run_is_over(tmp_path):
    path = tmp_path / "000001.json"
    write_json(path, {"state": "running", "run": "earlier", "where": WORKER})

    class Over(Exception):
        pass

    def check() -> None:
        raise Over

    with LiveHolder(path), pytest.raises(Over):
        wait_for_holder(path, "mine", check=check, tell=lambda note: None)


def test_a_lease_beats_on_past_an_unreadable_run_file_and_takes_a_folder_gone_for_another_run(tmp_path, monkeypatch):
    monkeypatch.setattr(shotlease, "HEARTBEAT", 0.01)
    claim(tmp_path, "mine")
    record = tmp_path / "shots" / frame_name(1, ".json")
    write_json(record, {"state": "running", "run": "mine", "where": shotlease.where()})
    run_file(tmp_path).write_text("{half a record")  # as a network file system may show it for a moment
    superseded = threading.Event()
    with ShotLease(tmp_path, record, "mine", superseded=superseded.set):
        for _ in range(2):  # refreshed again after a beat that could not read run.json: still beating
            long_ago = time.time() - 3600
            os.utime(record, (long_ago, long_ago))
            wait_until(lambda: record.stat().st_mtime > long_ago + 60, "refresh of the shot's record")
        assert not superseded.is_set()
        shutil.rmtree(tmp_path / "shots")  # what a later run does to records of frames it discards
        assert superseded.wait(DEADLINE)


def test_a_local_shot_says_host_and_process_without_importing_dask():
    """Every shot record says where it ran; outside a Dask worker that must not cost the import of
    distributed (half a second of every job)."""
    probe = (
        "import os, socket, sys\n"
        "from pipeline import shotlease\n"
        "assert shotlease.where() == f'{socket.gethostname()}:{os.getpid()}', shotlease.where()\n"
        "assert 'distributed' not in sys.modules, 'where() imported distributed'\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
        timeout=DEADLINE,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
