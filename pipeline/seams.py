"""Seams: where a long shot, split into segments by --max-shot-frames (shots.py), joins again.

Segment B starts afresh `overlap` frames before segment A ends (its "head", A's "tail"). Both
stylize those frames, each in its own sequence; the output cross-fades linearly from A's
versions to B's over them (Shot.fade_weight), so the seam is a short blend, not a jump:

    WORK/styled/NNNNNN.png   A's versions (A's frames, like any other)
    WORK/seams/NNNNNN.png    B's versions, with their statistics NNNNNN.json (B's commit records)

The seam's frames are encoded as a chunk of their own (frames b..a, chunks.py) by whichever of
the two segments finishes its part of them second: both look when they do, and a lock file lets
one through (`Seams.try_seam`). A segment killed in between leaves it to the job, which makes
every seam still missing once the shots are done (`Seams.make_missing`). Once the chunk is
there, both versions, their content frames and flow pairs go, except B's last version and content
frame (its next frame's warm start and flow pair, also on a resume), or under --long-term 1,2,4
its last max(k) (its next frames' long-term terms and pairs read them), until the job's end.

Neither segment deletes the other's shared files as it goes (videorange.Retention keeps to each
segment's own frames): a file the other's decode has already seen must not vanish under it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from .chunks import Chunk, ChunkStore
from .errors import PipelineError, WriteError
from .flowstage import pair_name
from .shots import Shot
from .workdir import FrameStore, frame_name


class SeamStore(FrameStore):
    """A segment's view of the work directory: its head's stylized frames and statistics are in
    seams/, so that they do not take the names of the segment before it."""

    def __init__(self, work_dir: Path, shot: Shot):
        super().__init__(work_dir)
        self.seams_dir = self.work_dir / "seams"
        self.head = range(shot.first, shot.first + shot.overlap)

    def styled(self, index: int) -> Path:
        return self.seams_dir / frame_name(index) if index in self.head else super().styled(index)

    def stats(self, index: int) -> Path:
        return self.seams_dir / frame_name(index, ".json") if index in self.head else super().stats(index)


def store_for(work_dir: Path, shot: Shot) -> FrameStore:
    return SeamStore(work_dir, shot) if shot.overlap else FrameStore(work_dir)


def seam_of(after: Shot) -> Chunk:
    """The chunk of the frames segment `after` shares with the one before it."""
    return Chunk(after.first, after.first + after.overlap - 1)


def versions_finished(store: FrameStore, chunk: Chunk, stage_hash: str) -> bool:
    """Whether the store has a finished version of every frame of the seam."""
    return all(store.finished(index, stage_hash) for index in range(chunk.first, chunk.last + 1))


@dataclass(frozen=True)
class Seams:
    """Makes a job's seams: where, with which chunks, and how they are encoded."""

    work: Path
    chunks: ChunkStore
    stage_hash: str  # the stylize stage's: which frames count as finished
    rate: Fraction
    crf: int
    keep: bool = False  # --keep-frames: both versions stay, for inspection
    long_term: tuple[int, ...] = (1,)  # --long-term: how far back the later segment's next frames read
    reach: int = 1  # and how far back they read at all (VideoJob.reads_back, at least max(long_term))

    def try_seam(self, after: Shot) -> bool:
        """Make the seam before segment `after` if both versions are finished and no one else is
        making it; return whether it is done."""
        chunk = seam_of(after)
        if self.chunks.finished(chunk.first) == chunk:
            return True
        earlier, later = FrameStore(self.work), SeamStore(self.work, after)
        if not all(versions_finished(store, chunk, self.stage_hash) for store in (earlier, later)):
            return False
        later.seams_dir.mkdir(exist_ok=True)
        lock = later.seams_dir / f".lock-{frame_name(chunk.first, '')}"
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False  # the other segment is making it
        except OSError as exc:
            raise WriteError(lock, exc) from None
        try:
            os.close(fd)
            if self.chunks.finished(chunk.first) != chunk:
                self.make(earlier, later, after)
            return True
        finally:
            lock.unlink(missing_ok=True)

    def make(self, earlier: FrameStore, later: SeamStore, after: Shot) -> None:
        """Cross-fade the two versions, encode them as the seam's chunk, then delete what is used up."""
        chunk = seam_of(after)
        folder = Path(tempfile.mkdtemp(prefix=".fade-", dir=later.seams_dir))
        try:
            for index in range(chunk.first, chunk.last + 1):
                blended = cross_fade(earlier.styled(index), later.styled(index), after.fade_weight(index))
                if not cv2.imwrite(str(folder / frame_name(index)), blended):
                    raise WriteError(folder / frame_name(index), OSError("cannot write the cross-faded frame"))
            self.chunks.encode(folder, chunk, rate=self.rate, crf=self.crf)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if not self.keep:
            used_up(earlier, later, chunk, self.long_term, self.reach)

    def make_missing(self, shots: list[Shot]) -> None:
        """Once every shot is done: each seam a killed segment left unmade (stale locks first: no
        segment runs now)."""
        for lock in (Path(self.work) / "seams").glob(".lock-*"):
            with contextlib.suppress(OSError):
                lock.unlink()
        for shot in shots:
            if shot.overlap and not self.try_seam(shot):
                where = Path(self.work) / "seams"
                raise PipelineError(f"{where}: the frames of the seam at frame {shot.first} are missing; run again")


def used_up(earlier: FrameStore, later: SeamStore, chunk: Chunk, long_term: tuple[int, ...], reach: int = 1) -> None:
    """The seam is encoded: both versions, their content frames and pairs (each frame's pair with
    each frame k before it) go, but for the later segment's last `reach` versions and content
    frames (VideoJob.reads_back: max(k), or the frame before a flash): the frame after the seam
    starts from the last, and holds to and pairs with the frames k before it
    (videorange.Retention keeps as many of each segment's own frames)."""
    kept = range(chunk.last - reach + 1, chunk.last + 1)
    for index in range(chunk.first, chunk.last + 1):
        earlier.styled(index).unlink(missing_ok=True)
        for k in long_term:
            earlier.flow_dir.joinpath(pair_name(index - k, index)).unlink(missing_ok=True)
        if index not in kept:
            later.styled(index).unlink(missing_ok=True)
            earlier.content(index).unlink(missing_ok=True)


def cross_fade(before: Path, after: Path, weight: float) -> np.ndarray:
    """(1 - weight) x before + weight x after, in 8 bits (BGR, as OpenCV writes it)."""
    images = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in (before, after)]
    for path, image in zip((before, after), images):
        if image is None:
            raise PipelineError(f"{path}: a frame of a seam is missing; run again")
    blended = (1 - weight) * images[0].astype(np.float32) + weight * images[1].astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
