"""A video job's shots, stylized at once on this machine's devices or on a Dask cluster (issue 16).

Frames within a shot depend on each other (each starts from the one before), shots do not (each
starts afresh, shots.py): so each shot is one task, `run_shot(task, shot)`, that runs the
streaming loop (videorange.RangeRun) over its frames on one device, and the tasks run in any
order, longest first, anywhere. Every schedule gives the same frames. `stylize_shots` is the
job's stylize stage: the shots not finished yet, the seams of long shots' segments after them, and
the stage's record (video_records.StageRecords) once at its start and once at its end.

    WORK/shots/000001.json   a shot's record: its frames, state, frames done, where it ran, its run
    WORK/shots/run.json      the run that holds the job now (shotlease.py)

The shots run where the archive's batches do (backends.py, whose `connect` finds the workers):
'local' runs one thread per device of --devices, 'dask' the cluster's workers through joblib's
dask backend (the task, style images and all, scattered to each worker once; workers need the
work directory's path and this package). A worker that dies mid-shot loses only its
unfinished frame: Dask runs the task again elsewhere, and the shot resumes from its last
finished frame, as a killed job does. A task that outlives the job's process stops once the next
run claims the job, and that run's task for the same shot waits for it (shotlease.py).

What a process keeps across its shot tasks is one ShotWorker: its pool of devices (one shot a
device at a time), a Stylizer per device (the network and the style targets, made once), what
this run's caller listens to (events, live report: local threads only) and which runs are over.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from fractions import Fraction

import torch

from .backends import Workers, run_tasks
from .chunks import ChunkStore, chunk_key
from .cuts import CutScan, Flash
from .decode import VideoInfo
from .devices import pick_device
from .fades import FadePlan
from .images import load_image
from .letterbox import Letterbox
from .manifest import timestamp, write_json
from .report_frames import FrameThumbnails
from .seams import Seams, store_for
from .shotlease import ShotLease, claim, wait_for_holder, where
from .shotprogress import ShotProgress
from .shots import Shot, counted, longest_first, shot_record_path
from .stylize import Stylizer
from .temporal import make_starter
from .vgg import VGG19
from .video_records import StageRecords
from .videojob import JobEvents, VideoJob
from .videorange import RangeContext, RangeRun, resume_point
from .workdir import FrameStore, JobLog, remove_leftovers

# After Ctrl-C or SIGTERM, how long to wait for shots on other threads to reach their next
# iteration, where they stop, and finish the frame record they may be writing.
STOP_TIMEOUT = 60.0


@dataclass(frozen=True)
class ShotTask:
    """What any worker needs to run any shot of the job; picklable (Dask sends it once)."""

    job: VideoJob
    info: VideoInfo
    size: tuple[int, int]
    hashes: dict[str, str]
    rate: Fraction
    total: int
    run: str  # this run's id: the shots of a stopped run stop
    devices: tuple[str, ...] | None = None  # local: these; None: the worker's own (auto)
    starts: dict[int, float] = field(default_factory=dict)  # a shot's first frame -> the scan's cut score
    scan_key: str | None = None  # the cut scan's records (cuts.py): the frames' fingerprints
    flashes: tuple[Flash, ...] = ()  # the cut scan's flashes (cuts.py): the shots go on through them
    fades: FadePlan = field(default_factory=FadePlan)  # its fades and blank frames (fades.py)
    goes_on: frozenset[int] = frozenset()  # frames whose pair scores as a cut and is none (shotplan.py)
    letterbox: Letterbox | None = None  # the bars kept black in the output (letterbox.py)

    def chunks(self) -> ChunkStore:
        """The job's chunks of this stylize hash, CRF and rate; a fade's frames faded in them, the
        bars black."""
        key = chunk_key(self.hashes["stylize"], self.job.crf, self.rate)
        return ChunkStore(self.job.work, key, self.fades, self.letterbox)


class Cancelled(Exception):
    """The run this shot belongs to is over (Ctrl-C in the parent): stop at the next iteration.
    Threads cannot be stopped from outside and would otherwise finish their shots."""


@dataclass
class Listener:
    """Who hears a local run's shots as they go: the job's events and live report (one shot at a
    time: every iteration; several: the parent watches the frames' records instead)."""

    events: JobEvents
    tick: Callable[[], None]
    progress: ShotProgress
    vgg: VGG19 | None = None


class ShotWorker:
    """One process's state, shared by its threads (see the module's docstring)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pools: dict[tuple[str, ...], queue.Queue] = {}
        self.stylizers: dict[tuple, tuple[str, Stylizer]] = {}  # (device, thread) -> (stylize hash, its stylizer)
        self.listeners: dict[str, Listener] = {}
        self.finished_runs: set[str] = set()
        self.running = threading.Condition()
        self.shots_running: dict[str, int] = {}

    @contextmanager
    def device(self, devices: tuple[str, ...] | None) -> Iterator[torch.device]:
        """Hold one of the devices for a whole shot (its frames depend on one another)."""
        key = devices or ("auto",)
        with self.lock:
            if key not in self.pools:
                self.pools[key] = queue.Queue()
                for name in key:
                    self.pools[key].put(name)
        name = self.pools[key].get()
        try:
            yield pick_device(name)
        finally:
            self.pools[key].put(name)

    def stylizer(self, context: RangeContext) -> Stylizer:
        """One Stylizer per device and thread, kept across shots (the network, the style targets):
        a thread holds its device for a whole shot, so no two shots use one Stylizer at once."""
        settings, place = context.hashes["stylize"], (str(context.device), threading.get_ident())
        with self.lock:
            cached = self.stylizers.get(place)
        if cached is None or cached[0] != settings:
            cached = (settings, context.stylizer())
            with self.lock:
                self.stylizers[place] = cached
        return cached[1]

    def check(self, run: str) -> None:
        if run in self.finished_runs:
            raise Cancelled(run)

    @contextmanager
    def shot(self, run: str) -> Iterator[None]:
        with self.running:
            self.shots_running[run] = self.shots_running.get(run, 0) + 1
        try:
            yield
        finally:
            with self.running:
                self.shots_running[run] -= 1
                self.running.notify_all()

    def stop(self, run: str, timeout: float = STOP_TIMEOUT) -> None:
        """End a run: its shots here stop at their next iteration; returns once they have."""
        self.finished_runs.add(run)
        self.listeners.pop(run, None)
        with self.running:
            self.running.wait_for(lambda: self.shots_running.get(run, 0) == 0, timeout)
            self.shots_running.pop(run, None)


WORKER = ShotWorker()  # this process's: Dask runs run_shot in each worker's process


class ShotEvents(JobEvents):
    """A shot's events: the local listener's when it is the only shot running, else none (the
    parent watches the records); each iteration checks that the run goes on."""

    def __init__(self, run: str, listener: Listener | None):
        self.run, self.listener = run, listener

    def frame_started(self, index: int, iterations: int) -> None:
        if self.listener:
            self.listener.events.frame_started(index, iterations)

    def iteration(self, progress) -> None:
        WORKER.check(self.run)
        if self.listener:
            self.listener.events.iteration(progress)

    def frame_finished(self, index: int, stats: dict) -> None:
        if self.listener:
            self.listener.events.frame_finished(index, stats)


def run_shot(task: ShotTask, shot: Shot) -> dict:
    """One task: the shot's unfinished frames on one device, its chunks, its record."""
    job = task.job
    with WORKER.shot(task.run), WORKER.device(task.devices) as device:
        WORKER.check(task.run)
        listener = WORKER.listeners.get(task.run)
        log = JobLog(job.work / "job.log")
        path = shot_record_path(job.work, shot)
        try:
            # A task of an earlier run that outlived its process (Dask) finishes with this shot first.
            wait_for_holder(
                path,
                task.run,
                check=lambda: WORKER.check(task.run),
                tell=lambda note: log(f"shot {shot.text()}: {note}"),
            )
            context = shot_context(task, shot, device, listener, log)
            chunked, done = resume_point(shot, context.store, context.chunks, task.hashes["stylize"])
            record = {"first": shot.first, "last": shot.last, "overlap": shot.overlap, "where": where(),
                      "device": str(device), "started": timestamp(), "run": task.run}  # fmt: skip
            path.parent.mkdir(exist_ok=True)
            began = time.perf_counter()
            loop = RangeRun(context, shot, done=done, chunked=chunked, start_score=task.starts.get(shot.first))
            with ShotLease(job.work, path, task.run, superseded=lambda: WORKER.finished_runs.add(task.run)):
                write_json(path, record | {"state": "running", "done": done - shot.first + 1})
                loop.run()
            record |= {"state": "done", "done": shot.frames, "finished": timestamp(), "redone": loop.redone,
                       "stylized": len(loop.stylized), "seconds": round(time.perf_counter() - began, 3)}  # fmt: skip
            write_json(path, record)
            return record | {"stylized_frames": loop.stylized}
        finally:
            log.close()


def shot_context(task: ShotTask, shot: Shot, device: torch.device, listener: Listener | None, log) -> RangeContext:
    job = task.job
    init_image = load_image(job.init_path) if job.init_path else None
    flow_workers = job.flow_workers if task.devices is not None else 1  # a Dask worker cannot fork a pool
    thumbnails = FrameThumbnails(
        job.work, hashes=task.hashes, expected=task.total, scene_threshold=job.scene_threshold,
        warn=lambda message: log(f"warning: {message}"), worst=f"worst-{shot.first:06d}.json",
    )  # fmt: skip
    context = RangeContext(
        job=replace(job, flow_workers=flow_workers), info=task.info, size=task.size, store=store_for(job.work, shot),
        chunks=task.chunks(),
        starter=make_starter(job, task.size, init_image=init_image, device=device), hashes=task.hashes, rate=task.rate,
        estimate=task.total, events=ShotEvents(task.run, listener), log=log, device=device,
        vgg=listener.vgg if listener else None, tick=listener.tick if listener else lambda: None,
        recorded=thumbnails.frame_finished,
        fingerprints=CutScan(job.work, key=task.scan_key, preset=None).fingerprints if task.scan_key else None,
        flashes=task.flashes, fades=task.fades, goes_on=task.goes_on,
        picture=task.letterbox if task.letterbox and task.letterbox.cropped else None,
    )  # fmt: skip
    context.made_stylizer = WORKER.stylizer(context)
    return context


def run_shots(task: ShotTask, shots: list[Shot], workers: Workers, listener: Listener) -> list[dict]:
    """Run the shots on the job's backend; return their results. One place at a time (one
    device, local): in this thread, every iteration shown. Several: each frame shown as its
    record appears (ShotProgress's watcher)."""

    def run() -> list[dict]:
        stop = lambda: WORKER.stop(task.run)  # noqa: E731  (threads stop at their shots' next iteration)
        return list(run_tasks(run_shot, task, shots, workers=workers, threads=workers.count, stop=stop))

    if workers.client is None and workers.count == 1:
        WORKER.listeners[task.run] = listener
        return run()
    with listener.progress.watching(listener.events, listener.tick):
        return run()


def stylize_shots(
    task: ShotTask, shots: list[Shot], workers: Workers, listener: Listener, records: StageRecords, log: JobLog
) -> list[dict]:
    """The stylize stage: the shots not finished yet (`listener.progress` knows which), longest
    first, on the workers, then the seams of long shots' segments; the stages' records once at the
    start and once at the end, never per frame. Returns the shots' results."""
    job, total, progress = task.job, task.total, listener.progress
    claim(job.work, task.run)  # before any shot starts: tasks of earlier runs still running stop
    records.stylize_started(total, task.size, progress.done)
    if not job.keep_frames:
        progress.prune()
    todo = longest_first(shot for shot in shots if not progress.finished(shot))
    listener.events.stage("stylize", total=total, done=progress.done)
    log(
        f"stylize: {progress.done} of {total} frames finished before; {len(todo)} of {len(shots)} shots to do "
        f"on {counted(workers.count, 'Dask worker' if job.backend == 'dask' else 'device')}"
    )
    try:
        results = run_shots(task, todo, workers, listener)
        remove_leftovers(FrameStore(job.work), job.output)  # of a Dask worker that died mid-write
        Seams(
            job.work, task.chunks(), task.hashes["stylize"], rate=task.rate, crf=job.crf, keep=job.keep_frames,
            long_term=job.long_term, reach=job.reads_back,
        ).make_missing(shots)  # fmt: skip
    finally:
        records.stylize_stopped(progress.count())
    records.stylize_finished(total, task.size, [index for result in results for index in result["redone"]])
    log(f"stylize: done, {total} frames ({sum(result['stylized'] for result in results)} by this run)")
    return results
