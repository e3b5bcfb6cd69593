"""The flow stage of a video job, on joblib CPU workers.

    WORK_DIR/flow/000002.npz   frame 2 back to frame 1: backward flow, reliability, cut score

`FlowStage` computes the missing pairs in a background thread that drives a joblib `Parallel`
(loky processes, results as they finish), so the stylize loop on the GPU only ever waits for the
one pair it needs next. Pairs are dispatched in frame order and DIS is far faster than the
optimization, so in practice that pair is long finished. A pair file counts as done once it
exists: each is written under a temporary name and renamed (FramePair.save), so a killed job
resumes with the pairs it had and computes only the rest.
"""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

import cv2
import numpy as np
from joblib import Parallel, delayed

from .errors import PipelineError
from .flow import FramePair, frame_pair
from .workdir import frame_name

WAIT_POLL = 0.5  # seconds: how often a waiting stylize loop looks up (Ctrl-C stays responsive)


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
    """Computes WORK/flow/NNNNNN.npz for frames 2..total in the background; `wait(i)` returns
    the pair of frame i as soon as it exists. Use as a context manager, or call `close`."""

    def __init__(self, *, frames_dir: Path, flow_dir: Path, total: int, preset: str, workers: int | None = None):
        self.frames_dir = Path(frames_dir)
        self.flow_dir = Path(flow_dir)
        self.total = total
        self.preset = preset
        self.workers = workers or default_workers()
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
        return self.flow_dir / frame_name(index, ".npz")

    def start(self) -> FlowStage:
        self.flow_dir.mkdir(parents=True, exist_ok=True)
        self._ready = {i for i in range(2, self.total + 1) if self.path(i).exists()}
        self.ready_before = frozenset(self._ready)
        todo = [i for i in range(2, self.total + 1) if i not in self._ready]
        if todo:
            self._running = True
            self._thread = threading.Thread(target=self._run, args=(todo,), name="flow-stage", daemon=True)
            self._thread.start()
        return self

    def _run(self, todo: list[int]) -> None:
        # joblib pulls tasks from this generator as workers free up, so `close` stops the
        # dispatching at once; the few pairs already handed out finish and are kept.
        tasks = (
            delayed(compute_pair)(
                i, self.frames_dir / frame_name(i - 1), self.frames_dir / frame_name(i), self.path(i), self.preset
            )
            for i in itertools.takewhile(lambda _: not self._stop.is_set(), todo)
        )
        try:
            for index, score in Parallel(n_jobs=self.workers, return_as="generator_unordered")(tasks):
                with self._changed:
                    self._scores[index] = score
                    self._ready.add(index)
                    self.computed.append(index)
                    self._changed.notify_all()
        except BaseException as exc:  # handed to the thread that waits, which raises it
            with self._changed:
                self._error = exc
        finally:
            with self._changed:
                self._running = False
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
        """Wait for every pair; return each frame's cut score (frames 2..total)."""
        for index in range(2, self.total + 1):
            self._wait_for(index)
        if self._thread is not None:
            self._thread.join()
        return {
            i: self._scores[i] if i in self._scores else FramePair.load_cut_score(self.path(i))
            for i in range(2, self.total + 1)
        }

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FlowStage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
