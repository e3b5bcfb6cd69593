"""One shot of a video job's frames, stylized in order on one device: the streaming loop.

    decode window (framestream.py) -> flow pairs (flowstage.py) -> stylize -> chunks (chunks.py)

`RangeRun(context, shot).run()` stylizes the shot's unfinished frames: each frame waits for its
content frame from the streaming decode and, where the starter or the flicker record needs it,
its flow pair; once its statistics file (its commit record) is written, what no resume needs any
more goes (`Retention`); every finished chunk is encoded at once. The job runs one per shot
(shots.py), several at once on several devices or Dask workers (videoshots.py): everything here
is per frame or per chunk (per-frame files, no shared record rewritten per frame), and no shot
touches another's files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import torch

from .chunks import Chunk, ChunkPlan, ChunkStore
from .cuts import Flash
from .decode import VideoInfo
from .fades import FadePlan
from .flowstage import FlowStage, PairPlan, pair_name
from .frame_record import (
    finished_line,
    first_pass_marks,
    flicker_field,
    frame_stats,
    recorded_cut_score,
    recorded_loss,
)
from .framestream import FrameStream
from .images import load_image, load_styles, save_image
from .letterbox import Letterbox
from .manifest import write_json
from .passes import Passes
from .seams import Seams
from .shots import Shot, counted
from .stylize import Stylizer
from .temporal import EarlierFrames, FrameStart, WarmStart, optimize_frame
from .vgg import VGG19
from .videojob import JobEvents, VideoJob
from .workdir import FrameStore, JobLog, prune


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
    estimate: int  # frames in the range, as the cut scan counted them (cuts.py)
    events: JobEvents
    log: JobLog
    device: torch.device
    vgg: VGG19 | None = None
    tick: Callable[[], None] = lambda: None  # after each frame: the live report, when due
    # A frame's statistics are written, its files still there: the report's pictures of it.
    recorded: Callable[[int, dict], None] = lambda index, stats: None
    made_stylizer: Stylizer | None = None  # one made before, on this device (videoshots.py keeps one per device)
    # The cut scan's fingerprints of frames first..last (cuts.py): the decode seeks to a shot's frames.
    fingerprints: Callable[[int, int], dict[int, str]] | None = None
    flashes: tuple[Flash, ...] = ()  # the cut scan's flashes (cuts.py): the shots go on through them
    fades: FadePlan = field(default_factory=FadePlan)  # its fades and blank frames (fades.py)
    goes_on: frozenset[int] = frozenset()  # frames whose pair scores as a cut and is none (shotplan.py)
    picture: Letterbox | None = None  # the bars cropped off each frame the stylizer sees (letterbox.py)

    def stylizer(self) -> Stylizer:
        """The job's stylizer on this range's device: the network and the style targets."""
        if self.made_stylizer is None:
            settings, styles = self.job.settings, self.job.styles
            self.made_stylizer = Stylizer(load_styles(styles, settings), settings, device=self.device, vgg=self.vgg)
        return self.made_stylizer


class Retention:
    """Deletes, as frames and chunks finish, what no resume needs: a content frame once the next
    frame is finished (its pair is used up), a flow pair once its later frame is finished (its
    flicker figures are in that frame's record), a stylized frame once it is in a chunk, except
    the last finished one (the next frame's warm start). `--keep-frames` keeps everything. Only
    the shot's own content frames and pairs (`own`, first..last): the frame before its first is
    another shot's, and the frames a segment shares with its neighbour go with their seam (seams.py).
    The last `reach` content and stylized frames stay (VideoJob.reads_back): with --long-term
    1,2,4 the next frames' long-term pairs and temporal terms read them, and the frame after a
    flash its frame before (`bridges`: after -> before), also after a resume. With --passes > 1
    nothing goes as frames finish: the later passes read the whole shot again."""

    def __init__(
        self, store: FrameStore, job: VideoJob, *, chunked: int, own: tuple[int, int], bridges: dict[int, int]
    ):  # fmt: skip
        self.store, self.chunked, (self.first, self.last), self.bridges = store, chunked, own, bridges
        self.keep, self.hold = job.keep_frames, job.passes > 1
        self.long_term, self.reach = job.long_term, job.reads_back

    def frame_finished(self, index: int) -> None:
        if self.keep or self.hold:
            return
        gone = index - self.reach  # no later frame reads this one
        if self.first <= gone <= self.last:
            self.store.content(gone).unlink(missing_ok=True)
        if self.first <= index <= self.last:
            earlier = [index - k for k in self.long_term] + ([self.bridges[index]] if index in self.bridges else [])
            for before in earlier:
                self.store.flow_dir.joinpath(pair_name(before, index)).unlink(missing_ok=True)
        if self.first <= gone <= self.chunked:  # in a chunk already
            self.store.styled(gone).unlink(missing_ok=True)

    def chunk_placed(self, chunk: Chunk, done: int) -> None:
        self.chunked = chunk.last
        if not self.keep:
            for index in range(chunk.first, min(chunk.last, done - self.reach) + 1):
                self.store.styled(index).unlink(missing_ok=True)


def resume_point(shot: Shot, store: FrameStore, chunks: ChunkStore, stage_hash: str, done: list[Chunk] | None = None):
    """Where a shot resumes: (the last frame of its finished chunks, its last finished frame).
    A segment's chunks are the seam before it (seams.py), then its own: those count also while
    the seam is still to make."""
    chunked = chunks.chunked_from(shot.first, shot.last, done)
    own_first = shot.own_first
    if shot.overlap and chunked < own_first and chunks.chunked_from(own_first, shot.last, done) >= own_first:
        chunked = chunks.chunked_from(own_first, shot.last, done)
    return chunked, store.finished_count(stage_hash, chunked, shot.last)


class RangeRun:
    """Stylizes a shot's unfinished frames in order (resuming after `done`), encoding its chunks as
    they fill. Its first frame starts afresh (temporal.py: a cut, or a segment's start, shots.py),
    whatever ran before it, so shots can run in any order and at once."""

    def __init__(
        self, context: RangeContext, shot: Shot, *, done: int, chunked: int, start_score: float | None = None
    ):  # fmt: skip
        self.c, self.shot = context, shot
        self.done = max(done, shot.first - 1)  # the shot's last finished frame
        self.start_score = start_score  # the cut scan's score of the pair before the shot (cuts.py)
        self.passes = context.job.passes  # > 1: the shot's chunks wait for its last pass (passes.py)
        # The flashes whose frames before and after are both this shot's: it goes on through them.
        self.flashes = {
            index: flash for flash in context.flashes if shot.first <= flash.before and flash.after <= shot.last
            for index in range(flash.first, flash.after + 1)
        }  # fmt: skip
        self.bridges = {flash.after: flash.before for flash in self.flashes.values()}
        # Every flash's frames, this shot's or not: a frame two segments share has one pair file.
        self.lit_frames = frozenset(
            index for flash in context.flashes for index in range(flash.first, flash.after)
        ) if context.job.lit_flashes else frozenset()  # fmt: skip
        self.retention = Retention(context.store, context.job, chunked=chunked, own=shot.own, bridges=self.bridges)
        self.plan = ChunkPlan(max(chunked + 1, shot.own_first), context.job.scene_threshold)
        self.stylized: list[int] = []
        self.redone: list[int] = []  # frames of this run stylized again after stopping too early
        self.previous_loss: float | None = None  # the last finished frame's loss: the stall guard's neighbour

    def run(self) -> int:
        """Stylize to the end of the shot; return how many frames it has."""
        if self.passes > 1:
            self.all_passes()
        # Frames finished before whose chunk was not placed yet: the same decisions as when they finished.
        for index in range(self.plan.start, min(self.done, self.shot.own_last) + 1):
            cut_score = recorded_cut_score(self.c.store, index, self.shot.first)
            self.encode(self.plan.finished(index, self.chunk_cut(index, cut_score)))
        if self.done < self.shot.last:
            self.stylize_rest()
        self.encode(self.plan.end(self.shot.own_last))
        if self.passes > 1:
            self.passes_done()
        if self.shot.tail:  # the seam with the next segment, if that one has done its part (seams.py)
            self.seam(Shot(self.shot.last - self.shot.tail + 1, self.shot.last, overlap=self.shot.tail))
        return self.shot.frames

    def all_passes(self) -> None:
        """--passes > 1: the first pass (the usual loop, where it stopped), then the others
        (passes.py); the chunks follow, as for frames finished before a resume."""
        passes = Passes(self)
        self.done = passes.first_pass_done()
        if self.done < self.shot.last:
            self.stylize_rest()
        passes.all(self.c.stylizer)
        self.done = self.shot.last

    def passes_done(self) -> None:
        """The shot's chunks are encoded: its head's seam, if the segment before is done, and what
        the passes kept goes (workdir.prune, of the shot's own frames; the tail's go with its seam)."""
        if self.shot.overlap:
            self.seam(self.shot)
        if not self.c.job.keep_frames:
            prune(self.c.store, done=self.shot.own_last, chunked=self.retention.chunked, own=self.shot.own)

    def stylize_rest(self) -> None:
        c, shot = self.c, self.shot
        resumed = self.done >= shot.first  # frames of this shot finished before: the last is the warm start
        first = self.done if resumed else shot.first
        stream = FrameStream(
            c.info, c.store.frames_dir, size=c.size, frames=c.job.frame_range, first=first, last=shot.last,
            fingerprints=c.fingerprints(first, shot.last) if c.fingerprints else None,
            content=c.fades.content if c.fades else None,
        )  # fmt: skip
        flows = FlowStage(
            frames_dir=c.store.frames_dir, flow_dir=c.store.flow_dir, preset=c.job.flow_preset,
            workers=c.job.flow_workers, available=stream.wait,
            pairs=PairPlan(
                first=max(self.done, shot.first) + 1, offsets=c.job.long_term, earliest=shot.first,
                bridges=tuple((before, after) for after, before in sorted(self.bridges.items())),
                lit=self.lit_frames,
            ),
        )  # fmt: skip
        # The stream closes first (exits run in reverse): a flow thread waiting for a frame is let go.
        with flows, stream:
            stream.start().wait(self.done + 1)  # a range without frames is refused before the flow starts
            flows.start()
            c.log(
                f"shot {shot.text()}: {self.done - shot.first + 1} frames finished before, starting at frame "
                f"{self.done + 1} on {c.device} (decoding {stream.window} frames ahead; flow on "
                f"{counted(flows.workers, 'worker')}, {counted(len(flows.ready_before), 'pair')} there before)"
            )
            stylizer, previous = None, load_image(c.store.styled(self.done)) if resumed else None
            self.previous_loss = recorded_loss(c.store, self.done) if resumed else None  # then kept from each frame's
            c.tick()  # the first page: the job's settings and what was done before
            index, earlier = self.done + 1, EarlierFrames(c.store, flows, c.picture)
            while index <= shot.last and stream.wait(index):
                if stylizer is None:  # one per shot: the network loaded, the style targets computed once
                    stylizer = c.stylizer()
                self.stylize_frame(stylizer, index, previous, earlier)
                # The next frame starts from this one as saved, so a resumed run starts from the same image.
                previous = load_image(c.store.styled(index))
                stream.consumed(index)
                c.tick()
                index += 1
        if stream.sought is False:
            c.log(f"shot {shot.text()}: the seek to frame {first} landed elsewhere; decoded from the range's start")

    def start_of(
        self, index: int, content: torch.Tensor, previous: torch.Tensor | None, pairs: EarlierFrames
    ) -> FrameStart:  # fmt: skip
        """How frame `index` starts: as the starter says, from the frame before it; afresh at the
        shot's first frame; through a flash, from the frame before the flash (cuts.py); a blank
        frame as it is, for one iteration (fades.py: black or white on output whatever it becomes)."""
        c, flash = self.c, self.flashes.get(index)
        if index in c.fades.blanks:
            return FrameStart(init=content, iterations=1, source="blank")
        if flash is None:
            start = c.starter.start(index, content, previous, pairs, may_cut=index not in c.goes_on)
            if index == self.shot.first and index > 1:  # afresh: a cut, or where a segment starts (shots.py)
                start.source = "segment" if self.shot.overlap else "cut"
                start.stats["cut_score"] = self.start_score
            return start
        if index < flash.after:
            return c.starter.through_flash(index, content, previous, pairs)
        # As saved, as the frame before it is: a resumed run starts from the same image.
        start = c.starter.start(index, content, load_image(c.store.styled(flash.before)), pairs.across(flash.before))
        start.stats["after_flash"] = [flash.first, flash.last]
        return start

    def stylize_frame(
        self, stylizer: Stylizer, index: int, previous: torch.Tensor | None, pairs: EarlierFrames
    ) -> None:  # fmt: skip
        c = self.c
        content = load_image(c.store.content(index))
        start = self.start_of(index, content, previous, pairs).within(c.picture)
        c.events.frame_started(index, start.iterations)
        began = time.perf_counter()
        result, redone = optimize_frame(stylizer, content, start, c.events.iteration, self.previous_loss)
        seconds = time.perf_counter() - began
        c.store.styled(index).parent.mkdir(exist_ok=True)
        save_image(result.image, c.store.styled(index))
        stats = frame_stats(index, start, result, seconds, stage_hash=c.hashes["stylize"], device=c.device)
        stats |= first_pass_marks(result, redone=redone, passes=self.passes)
        # Measured by the pairs as the flow stage made them, whatever the stylizer saw (EarlierFrames.picture).
        stats |= flicker_field(c.store, index, self.shot.first, pairs.flows.wait, self.start_score, c.hashes["flow"])
        if redone:
            self.redone.append(index)
        # The statistics file is the frame's commit record: written last, atomically.
        write_json(c.store.stats(index), stats)
        self.done, self.previous_loss = index, stats["loss"]  # at once: a stop from here on records the frame
        self.stylized.append(index)
        if self.passes == 1 and index >= self.shot.own_first:  # a segment's head: shown by
            c.recorded(index, stats)  # the segment before it; with --passes, once final (passes.py)
        c.log(finished_line(stats, c.estimate, seconds))
        if self.passes > 1:
            return
        self.retention.frame_finished(index)
        if index <= self.shot.own_last:
            self.encode(self.plan.finished(index, self.chunk_cut(index, stats.get("flicker", {}).get("cut_score"))))
        if index == self.shot.own_first - 1:  # its head is done: the seam, if the segment before is
            self.seam(self.shot)
        c.events.frame_finished(index, stats)

    def chunk_cut(self, index: int, cut_score: float | None) -> float | None:
        """The cut score the chunk plan goes by for frame `index`: none at a flash this shot goes
        on through, whose pairs in and out score as cuts (cuts.py), nor where the shot goes on
        through a pair that scores as a cut (a fade's, the relit: shotplan.py), so that its chunk
        goes on too."""
        return None if index in self.flashes or index in self.c.goes_on else cut_score

    def finished(self, index: int, stats: dict) -> None:
        """Frame `index` is final after its last pass (passes.py): the report's pictures of it, the display."""
        if index >= self.shot.own_first:
            self.c.recorded(index, stats)
        self.c.events.frame_finished(index, stats)

    def seam(self, after: Shot) -> None:
        c = self.c
        seams = Seams(
            c.job.work, c.chunks, c.hashes["stylize"], rate=c.rate, crf=c.job.crf, keep=c.job.keep_frames,
            long_term=c.job.long_term, reach=c.job.reads_back,
        )  # fmt: skip
        if seams.try_seam(after):
            c.log(f"seam: frames {after.first}-{after.first + after.overlap - 1} cross-faded and encoded")

    def encode(self, chunks: list[Chunk]) -> None:
        c = self.c
        for chunk in chunks:
            c.chunks.encode(c.store.styled_dir, chunk, rate=c.rate, crf=c.job.crf)
            c.log(f"chunk: frames {chunk.first}-{chunk.last} encoded ({c.chunks.video(chunk.first).name})")
            self.retention.chunk_placed(chunk, self.done)
