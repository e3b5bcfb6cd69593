"""The flow stage of a video job, on joblib CPU workers.

    WORK_DIR/flow/000002.npz   frame 2 back to frame 1: backward flow, reliability, cut score

`FlowStage` computes the missing pairs in a background thread that feeds a pool of worker
processes (joblib's loky executor; in the thread itself with one worker), so the stylize loop on
the GPU only ever waits for the one pair it needs next. Pairs are dispatched in frame order as
their frames arrive (`available`: the streaming decode's `wait`), at most two per worker ahead,
and DIS is far faster than the optimization, so in practice the pair needed is long finished. A
pair file counts as done once it exists: each is written under a temporary name and renamed
(FramePair.save), so a killed job resumes with the pairs it had and computes only the rest.

A pair is named by its frames (`pair_name`): the adjacent pair carrying frame i-1 onto frame i
by its later frame alone (000002.npz), any other by both (000001-000005.npz), so that pairs
between non-adjacent frames can live beside the adjacent ones.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED
from concurrent.futures import wait as wait_futures
from pathlib import Path

import cv2
import numpy as np
from joblib.externals.loky import get_reusable_executor

from .errors import PipelineError
from .flow import FramePair, frame_pair
from .workdir import frame_name

PAIR_GLOB = "[0-9]*.npz"
WAIT_POLL = 0.5  # seconds: how often a waiting stylize loop looks up (Ctrl-C stays responsive)


def pair_name(earlier: int, later: int) -> str:
    """The file name of the pair carrying frame `earlier` onto frame `later`."""
    if earlier == later - 1:
        return frame_name(later, ".npz")
    return f"{frame_name(earlier, '')}-{frame_name(later, '.npz')}"


def default_workers() -> int:
    """One process per core but one, which stays with the process feeding the GPU; a few are
    plenty, since each pair takes tens of milliseconds at 512 px."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise PipelineError(f"{path}: cannot read the frame")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def compute_pair(index: int, previous: Path, current: Path, output: Path, preset: str) -> tuple[int, float]:
    """A worker's task: the pair carrying `previous` onto `current`, written to `output`."""
    # The parallelism is across pairs; OpenCV's own thread pool in every worker would oversubscribe.
    cv2.setNumThreads(1)
    pair = frame_pair(read_rgb(previous), read_rgb(current), preset)
    pair.save(output)
    return index, pair.cut_score


class FlowStage:
    """Computes WORK/flow/NNNNNN.npz for frames `first`.. in the background: up to `total`, or
    as long as `available(i)` (which may block until frame i is decoded) says frame i exists.
    `wait(i)` returns the pair of frame i as soon as it exists. Use as a context manager, or
    call `close`."""

    def __init__(
        self, *, frames_dir: Path, flow_dir: Path, total: int | None = None, preset: str, workers: int | None = None,
        first: int = 2, available: Callable[[int], bool] | None = None,
    ):  # fmt: skip
        self.frames_dir = Path(frames_dir)
        self.flow_dir = Path(flow_dir)
        self.total = total
        self.preset = preset
        self.workers = workers or default_workers()
        self.first = max(2, first)
        self.available = available or (lambda index: total is not None and index <= total)
        self.computed: list[int] = []  # pairs this stage computed
        self.ready_before: frozenset[int] = frozenset()  # pairs found on disk by `start`
        self._scores: dict[int, float] = {}
        self._ready: set[int] = set()
        self._error: BaseException | None = None
        self._running = False
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def path(self, index: int) -> Path:
        return self.flow_dir / pair_name(index - 1, index)

    def start(self) -> FlowStage:
        self.flow_dir.mkdir(parents=True, exist_ok=True)
        self._ready = {
            int(p.stem) for p in self.flow_dir.glob(PAIR_GLOB) if p.stem.isdigit() and int(p.stem) >= self.first
        }
        self.ready_before = frozenset(self._ready)
        self._running = True
        self._thread = threading.Thread(target=self._run, name="flow-stage", daemon=True)
        self._thread.start()
        return self

    def _todo(self) -> Iterator[int]:
        """The pairs to compute, in frame order, as their frames arrive."""
        index = self.first
        while not self._stop.is_set() and self.available(index):
            if index not in self._ready:
                yield index
            index += 1

    def _task(self, index: int) -> tuple:
        return (index, self.frames_dir / frame_name(index - 1), self.frames_dir / frame_name(index), self.path(index))

    def _run(self) -> None:
        try:
            if self.workers == 1:
                for index in self._todo():
                    self._done(*compute_pair(*self._task(index), self.preset))
            else:
                self._run_pool()
        except BaseException as exc:  # handed to the thread that waits, which raises it
            with self._changed:
                self._error = exc
        finally:
            with self._changed:
                self._running = False
                self._changed.notify_all()

    def _run_pool(self) -> None:
        # At most two pairs per worker in flight: `close` stops the dispatching at once, and the
        # few pairs already handed out finish and are kept.
        executor, pending = get_reusable_executor(max_workers=self.workers), set()
        for index in self._todo():
            pending.add(executor.submit(compute_pair, *self._task(index), self.preset))
            while len(pending) >= 2 * self.workers:
                done, pending = wait_futures(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    self._done(*future.result())
        for future in pending:
            self._done(*future.result())

    def _done(self, index: int, score: float) -> None:
        with self._changed:
            self._scores[index] = score
            self._ready.add(index)
            self.computed.append(index)
            self._changed.notify_all()

    def _wait_for(self, index: int) -> None:
        with self._changed:
            while index not in self._ready:
                if self._error is not None:
                    raise PipelineError(f"optical flow failed: {self._error}") from self._error
                if not self._running:
                    raise PipelineError(f"optical flow for frame {index} is missing ({self.path(index)})")
                self._changed.wait(WAIT_POLL)

    def wait(self, index: int) -> FramePair:
        """The pair carrying frame index-1 onto frame index, once it is on disk."""
        self._wait_for(index)
        return FramePair.load(self.path(index))

    def finish(self) -> dict[int, float]:
        """Wait for every pair (frames `first`..total); return each one's cut score."""
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise PipelineError(f"optical flow failed: {self._error}") from self._error
        last = max([self.total or 0, *self._ready])
        return {
            i: self._scores[i] if i in self._scores else FramePair.load_cut_score(self.path(i))
            for i in range(self.first, last + 1)
        }

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FlowStage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
