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
between non-adjacent frames can live beside the adjacent ones. With a `PairPlan`'s `offsets`
(--long-term 1,2,4) the stage also computes, for each frame i, the pairs carrying frames i-2 and
i-4 onto it, on the content frames as the adjacent ones; their cut scores are not recorded (the
adjacent pairs' are). With its `bridges`, the pair carrying the frame before each flash onto the
frame after it (cuts.py), which continues from it; with its `lit` frames (a flash's), their
adjacent pairs are computed with the light of the frame before (flow.match_light), for the
temporal term that holds a flash's frame to the frame before it. Which frames those are is in the
flow stage's settings (video_records.stage_settings), so a pair file is always of its kind.
A long-term pair whose earlier frame is not there (before the range, or already gone because no
frame of the shot reads it) is skipped, not an error: only a wait for it is.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from joblib.externals.loky import get_reusable_executor

from .errors import PipelineError
from .flow import FramePair, frame_pair
from .workdir import frame_name

PAIR_GLOB = "[0-9]*.npz"
Key = tuple[int, int]  # (earlier, later): the pair carrying frame `earlier` onto frame `later`
WAIT_POLL = 0.5  # seconds: how often a waiting stylize loop looks up (Ctrl-C stays responsive)


def pair_name(earlier: int, later: int) -> str:
    """The file name of the pair carrying frame `earlier` onto frame `later`."""
    if earlier == later - 1:
        return frame_name(later, ".npz")
    return f"{frame_name(earlier, '')}-{frame_name(later, '.npz')}"


def pair_key(name: str) -> Key | None:
    """The inverse of pair_name: (earlier, later) from a pair file's name, None for other files."""
    stem = name.removesuffix(".npz")
    if stem.isdigit():
        return int(stem) - 1, int(stem)
    earlier, _, later = stem.partition("-")
    return (int(earlier), int(later)) if earlier.isdigit() and later.isdigit() else None


def default_workers() -> int:
    """One process per core but one, which stays with the process feeding the GPU; a few are
    plenty, since each pair takes tens of milliseconds at 512 px."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise PipelineError(f"{path}: cannot read the frame")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def compute_pair(
    key: Key, previous: Path, current: Path, output: Path, preset: str, lit: bool = False
) -> tuple[Key, float | None]:
    """A worker's task: the pair carrying `previous` onto `current`, written to `output` (`lit`:
    in the light of `previous`, flow.frame_pair); a long-term pair whose earlier frame is gone is
    skipped (score None)."""
    # The parallelism is across pairs; OpenCV's own thread pool in every worker would oversubscribe.
    cv2.setNumThreads(1)
    earlier, later = key
    try:
        images = read_rgb(previous), read_rgb(current)
    except PipelineError:
        if earlier != later - 1:  # another shot's frame, deleted as that shot moved on: not needed
            return key, None
        raise
    pair = frame_pair(*images, preset, lit=lit)
    pair.save(output)
    return key, pair.cut_score


@dataclass(frozen=True)
class PairPlan:
    """Which pairs a FlowStage computes: for each frame i from `first` on, the pairs from frames
    i-k, k in `offsets` (1: the adjacent pair alone), i-k not before `earliest` (the adjacent pair
    always: the flicker record needs it). The whole video's adjacent pairs by default (`ADJACENT`);
    a shot's run (videorange.py) starts where it resumes, with --long-term's offsets, and reaches
    no frame before its own first (the frames there are another shot's)."""

    first: int = 2
    offsets: tuple[int, ...] = (1,)
    earliest: int = 1
    bridges: tuple[Key, ...] = ()  # and these (none before `earliest`): a flash's frame before onto its frame after
    lit: frozenset[int] = frozenset()  # frames whose adjacent pair is computed in the light of the frame before


ADJACENT = PairPlan()


class FlowStage:
    """Computes the pairs of `pairs` (a PairPlan) as WORK/flow/NNNNNN.npz in the background, for
    frames from its `first` on: up to `total`, or as long as `available(i)` (which may block until
    frame i is decoded) says frame i exists.
    `wait(i)` returns the pair of frame i as soon as it exists, `pair(i - k, i)` any other. Use
    as a context manager, or call `close`."""

    def __init__(
        self, *, frames_dir: Path, flow_dir: Path, total: int | None = None, preset: str, workers: int | None = None,
        pairs: PairPlan = ADJACENT, available: Callable[[int], bool] | None = None,
    ):  # fmt: skip
        self.frames_dir = Path(frames_dir)
        self.flow_dir = Path(flow_dir)
        self.total = total
        self.preset = preset
        self.workers = workers or default_workers()
        self.first = max(2, pairs.first)
        # The farthest first: by the time the adjacent pair (the one the stylize loop waits for) is
        # done, so are the others, whose earlier frames may go once that frame is finished.
        self.offsets = tuple(sorted(pairs.offsets, reverse=True))
        self.earliest = pairs.earliest  # no long-term pair from a frame before this one (a shot's first frame)
        self.bridges = {later: earlier for earlier, later in pairs.bridges}
        self.lit = pairs.lit
        self.available = available or (lambda index: total is not None and index <= total)
        self.computed: list[int] = []  # adjacent pairs this stage computed (by their later frame)
        self.computed_long: list[Key] = []  # and the others
        self.ready_before: frozenset[int] = frozenset()  # adjacent pairs found on disk by `start`
        self._scores: dict[int, float] = {}
        self._ready: set[Key] = set()
        self._skipped: set[Key] = set()
        self._error: BaseException | None = None
        self._running = False
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def path(self, index: int) -> Path:
        return self.flow_dir / pair_name(index - 1, index)

    def start(self) -> FlowStage:
        self.flow_dir.mkdir(parents=True, exist_ok=True)
        keys = (pair_key(p.name) for p in self.flow_dir.glob(PAIR_GLOB))
        self._ready = {key for key in keys if key is not None and key[1] >= self.first}
        self.ready_before = frozenset(later for earlier, later in self._ready if earlier == later - 1)
        self._running = True
        self._thread = threading.Thread(target=self._run, name="flow-stage", daemon=True)
        self._thread.start()
        return self

    def _todo(self) -> Iterator[Key]:
        """The pairs to compute, in frame order, as their frames arrive."""
        index = self.first
        while not self._stop.is_set() and self.available(index):
            keys = [(index - k, index) for k in self.offsets if index - k >= min(self.earliest, index - 1)]
            if index in self.bridges:
                keys.insert(0, (self.bridges[index], index))
            for key in keys:
                if key not in self._ready:
                    yield key
            index += 1

    def _task(self, key: Key) -> tuple:
        """compute_pair's arguments for the pair `key`."""
        earlier, later = key
        frames, output = self.frames_dir, self.flow_dir / pair_name(earlier, later)
        lit = earlier == later - 1 and later in self.lit
        return key, frames / frame_name(earlier), frames / frame_name(later), output, self.preset, lit

    def _run(self) -> None:
        try:
            if self.workers == 1:
                for key in self._todo():
                    self._done(*compute_pair(*self._task(key)))
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
        for key in self._todo():
            pending.add(executor.submit(compute_pair, *self._task(key)))
            while len(pending) >= 2 * self.workers:
                done, pending = wait_futures(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    self._done(*future.result())
        for future in pending:
            self._done(*future.result())

    def _done(self, key: Key, score: float | None) -> None:
        earlier, later = key
        with self._changed:
            if score is None:
                self._skipped.add(key)
            else:
                self._ready.add(key)
                if earlier == later - 1:
                    self._scores[later] = score
                    self.computed.append(later)
                else:
                    self.computed_long.append(key)
            self._changed.notify_all()

    def _wait_for(self, key: Key) -> Path:
        path = self.flow_dir / pair_name(*key)
        with self._changed:
            while key not in self._ready:
                if self._error is not None:
                    raise PipelineError(f"optical flow failed: {self._error}") from self._error
                if key in self._skipped or not self._running:
                    raise PipelineError(f"optical flow from frame {key[0]} to frame {key[1]} is missing ({path})")
                self._changed.wait(WAIT_POLL)
        return path

    def wait(self, index: int) -> FramePair:
        """The pair carrying frame index-1 onto frame index, once it is on disk."""
        return FramePair.load(self._wait_for((index - 1, index)))

    def pair(self, earlier: int, later: int) -> FramePair:
        """The pair carrying frame `earlier` onto frame `later` (an offset or a bridge of the stage's),
        once on disk."""
        return FramePair.load(self._wait_for((earlier, later)))

    def finish(self) -> dict[int, float]:
        """Wait for every pair (frames `first`..total); return each one's cut score."""
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise PipelineError(f"optical flow failed: {self._error}") from self._error
        last = max([self.total or 0, *(later for _, later in self._ready)])
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
