"""One range of a video job's frames, stylized in order on one device: the streaming loop.

    decode window (framestream.py) -> flow pairs (flowstage.py) -> stylize -> chunks (chunks.py)

`RangeRun.run(first)` stylizes frames `first`, first+1, ... to the end of the range: each frame
waits for its content frame from the streaming decode and, where the starter or the flicker
record needs it, its flow pair; once its statistics file (its commit record) is written, what
no resume needs any more goes (`Retention`); every finished chunk is encoded at once. A job is one
such range today; issue 16 runs one per shot, each on its own device, so everything here is per
frame or per chunk (per-frame files, no shared record rewritten per frame) and takes its range
and device from its caller.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import torch

from .chunks import Chunk, ChunkPlan, ChunkStore
from .decode import VideoInfo
from .flicker import pair_flicker
from .flowstage import FlowStage, pair_name
from .framestream import FrameStream
from .images import load_image, load_styles, save_image
from .manifest import timestamp, write_json
from .stylize import StyleResult, Stylizer
from .temporal import EarlierFrames, FrameStart, Pairs, WarmStart, redo_if_stalled
from .vgg import VGG19
from .videojob import JobEvents, VideoJob
from .workdir import FrameStore, JobLog


@dataclass
class RangeContext:
    """What the loop needs from its job: the job, its store, chunks and starter, the stage hashes,
    where it reports, and the device (with an already loaded network, if any)."""

    job: VideoJob
    info: VideoInfo
    size: tuple[int, int]
    store: FrameStore
    chunks: ChunkStore
    starter: WarmStart
    hashes: dict[str, str]
    rate: Fraction  # the chunks' frame rate
    estimate: int  # frames in the range, as probed (the decode tells the exact count at its end)
    events: JobEvents
    log: JobLog
    device: torch.device
    vgg: VGG19 | None = None
    tick: Callable[[], None] = lambda: None  # after each frame: the live report, when due
    # A frame's statistics are written, its files still there: the report's pictures of it.
    recorded: Callable[[int, dict], None] = lambda index, stats: None


class Retention:
    """Deletes, as frames and chunks finish, what no resume needs: a content frame once the next
    frame is finished (its pair is used up), a flow pair once its later frame is finished (its
    flicker figures are in that frame's record), a stylized frame once it is in a chunk, except
    the last finished one (the next frame's warm start). `--keep-frames` keeps everything.
    With `long_term` (--long-term 1,2,4), the last max(k) content and stylized frames stay: the
    next frames' long-term pairs and temporal terms read them, also after a resume."""

    def __init__(self, store: FrameStore, keep: bool, chunked: int, long_term: tuple[int, ...] = (1,)):
        self.store, self.keep, self.chunked, self.long_term = store, keep, chunked, long_term
        self.reach = max(long_term)

    def frame_finished(self, index: int) -> None:
        if not self.keep:
            gone = index - self.reach  # no later frame reads this one
            self.store.content(gone).unlink(missing_ok=True)
            for k in (k for k in self.long_term if k < index):
                self.store.flow_dir.joinpath(pair_name(index - k, index)).unlink(missing_ok=True)
            if gone <= self.chunked:  # in a chunk already
                self.store.styled(gone).unlink(missing_ok=True)

    def chunk_placed(self, chunk: Chunk, done: int) -> None:
        self.chunked = chunk.last
        if not self.keep:
            for index in range(chunk.first, min(chunk.last, done - self.reach) + 1):
                self.store.styled(index).unlink(missing_ok=True)


class RangeRun:
    """Stylizes the range's unfinished frames in order, encoding chunks as they fill."""

    def __init__(
        self, context: RangeContext, *, done: int, chunked: int, total: int | None,
        on_end: Callable[[RangeRun], None] = lambda loop: None,
    ):  # fmt: skip
        self.c, self.on_end = context, on_end
        self.done, self.total = done, total  # frames finished; the range's length once known
        self.retention = Retention(context.store, context.job.keep_frames, chunked, context.job.long_term)
        self.plan = ChunkPlan(chunked + 1, context.job.scene_threshold)
        self.stylized: list[int] = []
        self.redone: list[int] = []  # frames of this run stylized again after stopping too early
        self.previous_loss: float | None = None  # the last finished frame's loss: the stall guard's neighbour

    def cut_score(self, index: int) -> float | None:
        record = json.loads(self.c.store.stats(index).read_text()).get("flicker") or {}
        return record.get("cut_score")

    def run(self) -> int:
        """Stylize to the end of the range (resuming after `done`); return the range's length."""
        # Frames finished before whose chunk was not placed yet: the same decisions as when they finished.
        for index in range(self.plan.start, self.done + 1):
            self.encode(self.plan.finished(index, self.cut_score(index)))
        if self.total is None or self.done < self.total:
            self.stylize_rest()
        self.on_end(self)  # every frame is finished: the caller records it before the last chunk
        self.encode(self.plan.end(self.total))
        return self.total

    def stylize_rest(self) -> None:
        c = self.c
        stream = FrameStream(
            c.info, c.store.frames_dir, size=c.size, frames=c.job.frame_range, first=max(1, self.done),
            known_total=self.total,
        )  # fmt: skip
        flows = FlowStage(
            frames_dir=c.store.frames_dir, flow_dir=c.store.flow_dir, preset=c.job.flow_preset,
            workers=c.job.flow_workers, first=self.done + 1, available=stream.wait, offsets=c.job.long_term,
        )  # fmt: skip
        # The stream closes first (exits run in reverse): a flow thread waiting for a frame is let go.
        with flows, stream:
            stream.start().wait(self.done + 1)  # a range without frames is refused before the flow starts
            flows.start()
            # Pairs up to frame `done` were used (and deleted, unless kept); those after it found on disk.
            there = max(0, self.done - 1) + len(flows.ready_before)
            c.log(
                f"flow: {there} of {c.estimate - 1} pairs there before, {max(0, c.estimate - 1 - there)} to compute "
                f"(DIS {c.job.flow_preset}, {flows.workers} workers)"
            )
            c.log(
                f"stylize: {self.done} frames finished before, starting at frame {self.done + 1} "
                f"(decoding {stream.window} frames ahead; flow on {flows.workers} workers)"
            )
            stylizer, previous = None, load_image(c.store.styled(self.done)) if self.done else None
            self.previous_loss = self.recorded_loss(self.done)  # then kept from each frame's statistics
            c.tick()  # the first page: the job's settings and what was done before
            index = self.done + 1
            while stream.wait(index):
                if stylizer is None:  # one per range: the network loaded, the style targets computed once
                    settings = c.job.settings
                    stylizer = Stylizer(load_styles(c.job.styles, settings), settings, device=c.device, vgg=c.vgg)
                self.stylize_frame(stylizer, index, previous, EarlierFrames(c.store, flows))
                # The next frame starts from this one as saved, so a resumed run starts from the same image.
                previous = load_image(c.store.styled(index))
                stream.consumed(index)
                c.tick()
                index += 1
            self.total = stream.total

    def stylize_frame(self, stylizer: Stylizer, index: int, previous: torch.Tensor | None, pairs: Pairs) -> None:
        c = self.c
        content = load_image(c.store.content(index))
        start = c.starter.start(index, content, previous, pairs)
        c.events.frame_started(index, start.iterations)
        began = time.perf_counter()
        result = stylizer.stylize(
            content, init=start.init, iterations=start.iterations, extra_losses=start.extra_losses,
            callback=c.events.iteration, stop_tolerance=start.stop_tolerance, stop_window=start.stop_window,
            stop_change=start.stop_change,
        )  # fmt: skip
        # A warm frame that stopped far too early is run again with a fresh optimizer (temporal.py).
        result, redone = redo_if_stalled(stylizer, content, start, result, self.previous_loss)
        seconds = time.perf_counter() - began
        c.store.styled_dir.mkdir(exist_ok=True)
        save_image(result.image, c.store.styled(index))
        stats = self.frame_stats(index, start, result, seconds) | ({"redone": True} if redone else {})
        if redone:
            self.redone.append(index)
        if index > 1:
            stats["flicker"] = self.pair_record(index, pairs(index))
        # The statistics file is the frame's commit record: written last, atomically.
        write_json(c.store.stats(index), stats)
        self.done, self.previous_loss = index, stats["loss"]  # at once: a stop from here on records the frame
        self.stylized.append(index)
        c.recorded(index, stats)
        c.log(
            f"frame {index:06d}/{self.total or c.estimate:06d} start={start.source} "
            f"iterations={result.iterations} loss={stats['loss']:.5g} "
            + " ".join(f"{k}={v:.4g}" for k, v in stats["terms"].items())
            + f" seconds={seconds:.2f}"
        )
        self.retention.frame_finished(index)
        self.encode(self.plan.finished(index, stats.get("flicker", {}).get("cut_score")))
        c.events.frame_finished(index, stats)

    def recorded_loss(self, index: int) -> float | None:
        """Frame `index`'s final loss as its statistics record it (None before the first frame):
        read once, where a run resumes."""
        path = self.c.store.stats(index)
        return json.loads(path.read_text()).get("loss") if index >= 1 and path.exists() else None

    def pair_record(self, index: int, pair) -> dict:
        """The pair (index - 1, index)'s flicker figures, recorded with the frame as it finishes so
        the report needs no frames or flow kept to the end; the flow hash says which flow made them."""
        store = self.c.store
        sequences = {
            "output": (store.styled(index - 1), store.styled(index)),
            "input": (store.content(index - 1), store.content(index)),
        }
        return pair_flicker(pair, sequences) | {"flow": self.c.hashes["flow"]}

    def frame_stats(self, index: int, start: FrameStart, result: StyleResult, seconds: float) -> dict:
        final = result.final_terms
        return {
            "frame": index,
            "stage_hash": self.c.hashes["stylize"],
            "start": start.source,
            **start.stats,
            "iterations": result.iterations,
            "loss": final.get("loss"),
            "terms": {k: v for k, v in final.items() if k != "loss"},
            "loss_history": [record["loss"] for record in result.history],
            "seconds": round(seconds, 3),
            "device": str(self.c.device),
            "finished": timestamp(),
        }

    def encode(self, chunks: list[Chunk]) -> None:
        c = self.c
        for chunk in chunks:
            c.chunks.encode(c.store.styled_dir, chunk, rate=c.rate, crf=c.job.crf)
            c.log(f"chunk: frames {chunk.first}-{chunk.last} encoded ({c.chunks.video(chunk.first).name})")
            self.retention.chunk_placed(chunk, self.done)
