"""How far each shot of a video job got, read from its files, and the watcher that turns that into
progress while shots run elsewhere (other threads, Dask workers): frames done of the total,
frames per second, the time left and the shots running, for the display and the live report.

A shot's frames are finished in order: those in its finished chunks, then each one with a
statistics file of the stylize stage's hash (its commit record). So one pointer per shot says
how far it is, and moving the pointers on costs a file lookup per frame, whatever the length.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .chunks import ChunkStore
from .seams import store_for
from .shots import Shot
from .videojob import JobEvents
from .videorange import resume_point
from .workdir import FrameStore, prune

WATCH_SECONDS = 0.5  # how often the watcher looks at the frames' records


class ShotProgress:
    """Each shot's finished chunks and last finished frame."""

    def __init__(self, store: FrameStore, chunks: ChunkStore, stage_hash: str, shots: list[Shot], reach: int = 1):
        self.stage_hash, self.shots, self.reach = stage_hash, shots, reach
        self.stores = {shot: store_for(store.work_dir, shot) for shot in shots}  # a segment's head is in seams/
        done = chunks.done()
        points = {shot: resume_point(shot, self.stores[shot], chunks, stage_hash, done) for shot in shots}
        self.chunked = {shot: chunked for shot, (chunked, _) in points.items()}
        self.last = {shot: last for shot, (_, last) in points.items()}

    def finished(self, shot: Shot) -> bool:
        """Every frame of the shot is in a finished chunk: nothing of it is left to do."""
        return self.chunked[shot] >= shot.last

    def frames_done(self, shot: Shot) -> int:
        """The shot's finished frames, its overlap with the segment before it not counted twice."""
        return max(0, self.last[shot] - shot.own_first + 1)

    @property
    def done(self) -> int:
        return sum(self.frames_done(shot) for shot in self.shots)

    def prune(self) -> None:
        """What a killed run left that no shot needs (workdir.prune, shot by shot, of its own frames
        only, as videorange.Retention deletes them: the frames two segments share go with their seam,
        seams.py; the later segment may still need their content frames and pairs)."""
        for shot in self.shots:
            prune(self.stores[shot], done=self.last[shot], chunked=self.chunked[shot], reach=self.reach, own=shot.own)

    def advance(self) -> Iterator[tuple[int, dict]]:
        """The frames finished since the last look, with their statistics."""
        for shot in self.shots:
            store = self.stores[shot]
            while self.last[shot] < shot.last and store.finished(self.last[shot] + 1, self.stage_hash):
                self.last[shot] += 1
                try:
                    stats = json.loads(store.stats(self.last[shot]).read_text())
                except (OSError, ValueError):
                    stats = {}
                yield self.last[shot], stats

    def count(self) -> int:
        """Frames finished now (the pointers moved on first)."""
        for _ in self.advance():
            pass
        return self.done

    def running(self) -> int:
        """Shots begun and not finished."""
        return sum(1 for shot in self.shots if shot.first <= self.last[shot] < shot.last)

    def complete(self) -> int:
        return sum(1 for shot in self.shots if self.last[shot] >= shot.last)

    @contextmanager
    def watching(self, events: JobEvents, tick: Callable[[], None]) -> Iterator[None]:
        """While the block runs, a thread hands each frame finished elsewhere to `events`, and
        the shots' state after each look; `tick` keeps the live report current."""
        stop = threading.Event()

        def look() -> None:
            for index, stats in self.advance():
                events.frame_finished(index, stats)
            events.shots(self.running(), self.complete(), len(self.shots))

        def watch() -> None:
            while not stop.wait(WATCH_SECONDS):
                look()
                tick()

        thread = threading.Thread(target=watch, name="shot-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
        look()  # the frames finished since the last look
