"""The cut scan: before any frame is stylized, the range is decoded once, into memory only, to
count its frames, to fingerprint each one and, under --flow dis, to give every pair of
consecutive frames its cut score (flow.frame_pair's: the figure the flow stage records with each
pair). The job then knows its shots (shots.py) before it starts, and can stylize them at once on
several devices (issue 16): the cut decision for the whole range is made here, once, and every
schedule follows it.

    WORK/cuts/000001.json   frames 1..500: {"key", "first", "fingerprints": [...], "scores": [...],
                            "spans": [...], "light": [...], "lit": [...]} (score i: the pair of
                            frames i-1 and i, None for frame 1; spans i: the colour histograms'
                            distance of frame i to frames i-2, i-3, ..., for the flashes; light i:
                            frame i's luma mean and spread, for the fades, fades.py, and with
                            --overlay-share the same without an overlay's pixels; lit i: pair i's
                            score in the light of frame i-1, or None, for the cuts inside a
                            fade, fades.LIT_FLOOR); with the cuts told from fast motion (the
                            default) also "colours" and "unreliable": pair i's two parts of its
                            score, for Scan.sudden; unless --stylize-bars, "bars": frame i's
                            black edges (letterbox.py); the last block also has "total"

A block of SCAN_BLOCK frames is written (atomically) as soon as it fills, so a killed scan
resumes where it was: the decode runs from the range's start again (the one exact way,
framestream.py) and only the frames not recorded are looked at. The scan is done once a block
with "total" is there. The flow stage computes the pairs again while stylizing; keeping them from
here would cost 8 bytes a pixel for every frame of the film (issue 15's bound).

A flash is not a cut. A change of light that lasts a frame or two and goes (a camera's flash, a
strobe, lightning) scores as a cut where it comes and again where it goes: two cuts, so two
shots begun afresh, each a cold start, and the frames after it no longer in the look of the frames
before it, for the rest of the shot. So where the frame after such a change is back in the colours
of the frame before it (its span to that frame is under the threshold), the scan calls it a
flash (`Scan.flashes`): the shot goes on through it, its frames start from the frame before it,
held to it through a flow computed in that frame's light (unless --free-flashes), and the frame
after it continues from the frame before the flash, by the flow between those two
(temporal.FlowWarmStart, flowstage.PairPlan, videorange.py).

A fast move is not a cut either. A pair's cut score is the larger of how far its colours are apart
and the share of its pixels whose flow fails (flow.pair_of_flows): a whip pan or a shaken
hand-held camera fails the flow as a cut does, its colours alike. Where the flow alone puts a pair
over the threshold, the pair is a cut only where its flow fails far more than in the pairs on
either side of it (Scan.sudden): a cut is sudden, the frames on either side of it each tracked
within their shot, while motion fast enough to fail the flow builds up and dies down over several
frames. On cockatoo.mp4 at 64 px (imageio's test clip, hand-held) a pair at frame 79 scored 0.634
(colours 0.18 apart, 64% of its pixels unreliable) and a whip pan at 158-160 scored over the
threshold three times: cold starts mid-shot and a "flash", the shot's look laid out anew each
time. Measured on five real clips at 64, 128 and 256 px, the real cuts' unreliable share stood
0.59-0.80 above the larger of their neighbours', the fast moves' at most 0.29 (the test suite's
cut between two alike textures: 0.53); CUT_SPIKE is between. A pair whose flow fails almost
everywhere (FLOW_FAILS) next to a pair it tracks is a cut too: a jump cut out of a fast move.
--motion-cuts: every pair over the threshold is a cut, as the releases before. What this cannot
tell: a cut between alike colours into or out of motion that fails the flow nearly as much, where
the flow still follows a fair share of the pixels (the new shot's first frame then starts from the
warp of the last one, restyled where the flow fails, as in a fast move); of 112 jump cuts made by
joining two moments of the four real clips, 36 scored over the threshold, and this rule kept 33 of
them.

The fingerprints (8 bytes of BLAKE2b of each frame's RGB) let a shot's decode seek straight to
its first frame and check, frame by frame, that it gets exactly the frames of a decode from the
range's start (framestream.FrameStream).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from joblib.externals.loky import get_reusable_executor

from .decode import VideoInfo
from .fades import CUT_SETTINGS, LIT_CUT, LIT_FLOOR, LIT_SAME, LIT_SIZE, frame_light, light_changes, lit_clear
from .flow import colour_histogram, frame_pair, histogram_gap, lit_pair
from .framerange import FrameRange
from .framestream import RawDecode, fingerprint
from .hashing import settings_hash
from .letterbox import SETTINGS as BAR_SETTINGS
from .letterbox import frame_bars
from .manifest import read_json, write_json
from .video_defaults import MAX_FLASH_FRAMES
from .videojob import VideoJob
from .workdir import frame_name

SCAN_BLOCK = 500  # frames a record: a killed scan of a film loses at most this many
# How much more of a pair's pixels the flow must fail than in either neighbouring pair for a pair
# over the threshold by its flow alone to be a cut (Scan.sudden); the measurements above.
CUT_SPIKE = 0.4
# Or than in one of them, where it fails on more than this share of the pixels: nothing of the
# frame before could be carried, and no fast move of the five clips came near (at most 0.77).
FLOW_FAILS = 0.9
MOVE_SETTINGS = {"cut_spike": CUT_SPIKE, "flow_fails": FLOW_FAILS}  # in the stylize stage's hash


@dataclass(frozen=True)
class Flash:
    """Frames first..last are a flash: the frame after it continues from the frame before it."""

    first: int
    last: int

    @property
    def before(self) -> int:
        return self.first - 1

    @property
    def after(self) -> int:
        return self.last + 1


@dataclass(frozen=True)
class Scan:
    """The range's frame count and each pair's cut score (pair i: frame i-1 onto frame i; none
    without flow), each frame's spans (span i[g - 2]: frame i-g's colours against frame i's) and
    each frame's light (fades.frame_light; none in the scans of the releases before); with
    the cuts told from fast motion, each pair's colours' distance and unreliable share (the two
    parts of its score)."""

    total: int
    scores: dict[int, float] = field(default_factory=dict)
    spans: dict[int, list[float]] = field(default_factory=dict)
    light: dict[int, list[float]] = field(default_factory=dict)
    lit: dict[int, float] = field(default_factory=dict)
    colours: dict[int, float] = field(default_factory=dict)
    unreliable: dict[int, float] = field(default_factory=dict)
    bars: dict[int, list[int]] = field(default_factory=dict)  # each frame's black edges (letterbox.py)

    def lit_cuts(self) -> set[int]:
        """The frames whose pair is a cut in the light of the frame before it: a fade's pairs that
        score as cuts are not (fades.LIT_CUT)."""
        return {index for index, lit in self.lit.items() if lit > LIT_CUT}

    def relit(self) -> set[int]:
        """The frames whose pair is the same picture as the frame before it in another light
        (fades.LIT_SAME), neither of them near black or white."""
        return {
            index for index, lit in self.lit.items()
            if lit <= LIT_SAME and all(index - k in self.light and lit_clear(self.light[index - k]) for k in (0, 1))
        }  # fmt: skip

    def flashes(self, threshold: float, longest: int, *, sudden: bool = False) -> list[Flash]:
        """The changes of light of at most `longest` frames after which the picture is back to
        the frame before them: a pair over `threshold` (the light comes), the next one over it
        within `longest` frames (it goes), nothing over it between, and the frame after in the
        colours of the frame before (their span at most `threshold`); with `sudden`, a change
        that comes and goes suddenly (Scan.sudden: the colours of a fast move over a picture of
        alike colours are back as a flash's are)."""
        flashes, over = [], sorted(index for index, score in self.scores.items() if score > threshold)
        for comes, goes in zip(over, over[1:]):
            gap = goes - comes + 1  # from the frame before the change to the frame after it
            spans = self.spans.get(goes, [])
            if goes - comes <= longest and len(spans) > gap - 2 and spans[gap - 2] <= threshold:
                if sudden and not self.sudden(comes, threshold, last=goes):
                    continue
                if not flashes or flashes[-1].after < comes:  # the light's return is no new flash
                    flashes.append(Flash(comes, goes - 1))
        return flashes

    def cuts(self, threshold: float, flashes: list[Flash] = (), *, sudden: bool = False) -> list[int]:
        """The frames that start a new shot: their pair's cut score is over `threshold`, unless
        they begin or end one of `flashes` or (`sudden`) are a fast move (`moves`)."""
        through = {index for flash in flashes for index in (flash.first, flash.after)}
        over = [index for index, score in sorted(self.scores.items()) if score > threshold and index not in through]
        return [index for index in over if not sudden or self.sudden(index, threshold)]

    def moves(self, threshold: float, flashes: list[Flash] = ()) -> list[int]:
        """The frames whose pair is over `threshold` by its flow alone and no cut: a fast move."""
        return [index for index in self.cuts(threshold, flashes) if not self.sudden(index, threshold)]

    def sudden(self, index: int, threshold: float, *, last: int | None = None) -> bool:
        """Whether pair `index` (or pairs index..last: a flash's), over `threshold`, is a cut
        (module docstring): the colours of one are over it, or the flow fails on CUT_SPIKE more of
        the pixels of one than in either pair beside them (those of the range there are), or than
        in one of them where it fails on more than FLOW_FAILS. A scan that records no parts (the
        releases before'): yes."""
        inside = range(index, (last or index) + 1)
        if any(k not in self.unreliable or self.colours.get(k, 1.0) > threshold for k in inside):
            return True
        beside = [self.unreliable[k] for k in (index - 1, inside[-1] + 1) if k in self.unreliable]
        top = max(self.unreliable[k] for k in inside)
        if top - max(beside, default=0.0) > CUT_SPIKE:
            return True
        return top > FLOW_FAILS and top - min(beside, default=0.0) > CUT_SPIKE


class PairScores(NamedTuple):
    """What the scan records of a pair: its cut score, its lit score (or None) and the score's parts."""

    score: float
    lit: float | None
    colours: float
    unreliable: float


def colour_spans(histogram: np.ndarray, before: list[np.ndarray]) -> list[float]:
    """A frame's spans (Scan.spans): its colour histogram's distance to each of `before`, the
    histograms of frames i-2, i-3, ... (nearest first)."""
    return [round(histogram_gap(earlier, histogram), 6) for earlier in before]


def pair_scores(previous: np.ndarray, current: np.ndarray, preset: str, lit: bool) -> PairScores:
    """A worker's task: the pair's cut score, as the flow stage's pair of these frames has it, and
    (`lit`: the job asks for it and the pair's light changes) its lit score where the cut score is
    over LIT_FLOOR, else None."""
    cv2.setNumThreads(1)  # the parallelism is across pairs (flowstage.compute_pair does the same)
    pair = frame_pair(previous, current, preset)
    scores = PairScores(pair.cut_score, None, pair.colours, pair.unreliable)
    if not lit or pair.cut_score <= LIT_FLOOR:
        return scores
    return scores._replace(lit=lit_score(previous, current, preset))


def lit_score(previous: np.ndarray, current: np.ndarray, preset: str) -> float:
    """A pair's lit score: the share of its pixels whose flow fails with `current` brought into
    `previous`'s light, both at most LIT_SIZE px (fades.LIT_CUT)."""
    previous, current = (at_most(frame, LIT_SIZE) for frame in (previous, current))
    return lit_pair(previous, current, preset).unreliable


def at_most(frame: np.ndarray, long_side: int) -> np.ndarray:
    """`frame` shrunk (by area) to `long_side` pixels on its longer side, if it is larger."""
    height, width = frame.shape[:2]
    scale = long_side / max(height, width)
    if scale >= 1:
        return frame
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


class CutScan:
    """WORK/cuts/: the scan's records for one key (the decode's settings and the flow preset, or
    None: frames counted and fingerprinted, no scores)."""

    def __init__(
        self,
        work_dir: Path,
        *,
        key: str,
        preset: str | None,
        workers: int = 1,
        lit: bool = False,
        parts: bool = False,
        overlay: float = 0.0,
        bars: bool = False,
    ):
        self.dir = Path(work_dir) / "cuts"
        self.key, self.preset, self.workers, self.lit, self.parts = key, preset, max(1, workers), lit, parts
        self.overlay = overlay  # each frame's light also without this share of its pixels (fades.frame_light)
        self.bars = bars  # each frame's black edges (letterbox.frame_bars)

    @classmethod
    def of(cls, job: VideoJob, decode_hash: str, *, workers: int) -> CutScan:
        """A job's scan: keyed by its decode stage's hash and, under --flow dis, the preset whose flow
        scores the cuts, and by what it records for the job's options (the scans of the releases
        before each record none of it: their jobs keep their records)."""
        preset = job.flow_preset if job.flow == "dis" else None
        key = {"decode": decode_hash, "flow_preset": preset}
        if preset and job.flash_frames:  # the colour spans, for the flashes
            key["spans"] = MAX_FLASH_FRAMES
        overlay = 0.0 if job.ignore_fades else job.overlay_share
        if not job.ignore_fades:  # each frame's light, for the fades (and without an overlay's pixels)
            key["light"] = {"overlay_share": overlay} if overlay else True
        lit = bool(preset) and job.cuts_in_own_light
        if lit:  # the lit scores, for the cuts in the picture's own light
            key["lit"] = CUT_SETTINGS
        parts = bool(preset) and job.tells_moves
        if parts:  # each score's parts, for the fast moves
            key["parts"] = True
        if job.keeps_bars:  # each frame's black edges, for the letterbox's bars
            key["bars"] = BAR_SETTINGS
        options = {"lit": lit, "parts": parts, "overlay": overlay, "bars": job.keeps_bars}
        return cls(job.work, key=settings_hash(key), preset=preset, workers=workers, **options)

    def path(self, first: int) -> Path:
        return self.dir / frame_name(first, ".json")

    def stale(self) -> bool:
        """Whether the folder holds a scan of other settings (it goes as a whole)."""
        paths = sorted(self.dir.glob("[0-9]*.json")) if self.dir.is_dir() else []
        return any(read_json(path, default={}).get("key") != self.key for path in paths)

    def blocks(self) -> list[dict]:
        """This key's blocks that follow one another from frame 1."""
        blocks, expected = [], 1
        while (block := read_json(self.path(expected), default={})).get("key") == self.key:
            blocks.append(block)
            expected += len(block["fingerprints"])
            if "total" in block:
                break
        return blocks

    def recorded(self) -> Scan | None:
        """The finished scan, if its records are all there."""
        blocks = self.blocks()
        if not blocks or "total" not in blocks[-1]:
            return None
        scores = [score for block in blocks for score in block["scores"]]
        spans = [span for block in blocks for span in block.get("spans", [[]] * len(block["scores"]))]
        light = [level for block in blocks for level in block.get("light", [])]
        lit = [score for block in blocks for score in block.get("lit", [])]
        colours = [part for block in blocks for part in block.get("colours", [])]
        unreliable = [part for block in blocks for part in block.get("unreliable", [])]
        bars = [edges for block in blocks for edges in block.get("bars", [])]
        return Scan(
            blocks[-1]["total"], {i: s for i, s in enumerate(scores, 1) if s is not None},
            {i: span for i, span in enumerate(spans, 1) if span},
            dict(enumerate(light, 1)) if len(light) == len(scores) else {},
            {i: s for i, s in enumerate(lit, 1) if s is not None},
            {i: part for i, part in enumerate(colours, 1) if part is not None},
            {i: part for i, part in enumerate(unreliable, 1) if part is not None},
            dict(enumerate(bars, 1)),
        )  # fmt: skip

    def fingerprints(self, first: int, last: int) -> dict[int, str]:
        """Frames first..last's fingerprints, from the records of a finished scan."""
        found, start = {}, 1 + (first - 1) // SCAN_BLOCK * SCAN_BLOCK
        while start <= last:
            block = read_json(self.path(start), default={})
            if block.get("key") != self.key:
                break
            found |= {i: f for i, f in enumerate(block["fingerprints"], start) if first <= i <= last}
            start += len(block["fingerprints"])
        return found

    def run(
        self, info: VideoInfo, size: tuple[int, int], frames: FrameRange, on_progress: Callable[[int], None]
    ) -> Scan:
        """Decode the range, look at the frames not recorded yet, record them block by block."""
        done = self.recorded()
        if done is not None:
            return done
        block = Block(self, first=1 + sum(len(known["scores"]) for known in self.blocks()))
        decode, pending, previous, previous_light = RawDecode(info, size, frames), deque(), None, None
        # The colour histograms of the frames before, nearest last: each frame's spans to them.
        recent: deque[np.ndarray] = deque(maxlen=MAX_FLASH_FRAMES + 1)
        executor = get_reusable_executor(max_workers=self.workers) if self.preset and self.workers > 1 else None
        for index, rgb in enumerate(decode, 1):
            histogram = colour_histogram(rgb) if self.preset else None
            light = frame_light(rgb, self.overlay)
            if index >= block.first:
                block.spans.append(colour_spans(histogram, list(recent)[-2::-1]))
                block.light.append(light)
                if self.bars:
                    block.bars.append(frame_bars(rgb))
                # Only a pair whose light changes as a fade's does is looked at in its first frame's light.
                lit = self.lit and previous_light is not None and light_changes(previous_light, light)
                if not self.preset or previous is None:
                    pending.append(None)
                elif executor is None:
                    pending.append(pair_scores(previous, rgb, self.preset, lit))
                else:  # in order, at most two pairs a worker in flight
                    pending.append(executor.submit(pair_scores, previous, rgb, self.preset, lit))
                block.frames.append(fingerprint(rgb))
                while len(pending) > 2 * self.workers or (pending and not hasattr(pending[0], "result")):
                    block.add(pending.popleft())
            previous, previous_light = rgb, light
            if histogram is not None:
                recent.append(histogram)
            if index % 25 == 0:
                on_progress(index)
        while pending:
            block.add(pending.popleft())
        block.close(total=decode.count)
        on_progress(decode.count)
        return self.recorded()


class Block:
    """The frames being recorded: written as a block of SCAN_BLOCK fills, the rest at the end.
    `frames` holds the fingerprints of the frames looked at, `add` takes their scores in order."""

    def __init__(self, scan: CutScan, first: int):
        self.scan, self.first, self.start = scan, first, first
        self.frames: list[str] = []
        self.spans: list[list[float]] = []
        self.light: list[list[float]] = []
        self.bars: list[list[int]] = []
        self.scores: list[float | None] = []
        self.lit: list[float | None] = []
        self.colours: list[float | None] = []
        self.unreliable: list[float | None] = []

    def add(self, scores) -> None:
        """The next frame's PairScores (or a future of them), or None for a range's first frame."""
        scores = scores.result() if hasattr(scores, "result") else scores
        for kept, value in zip(
            (self.scores, self.lit, self.colours, self.unreliable), scores or (None,) * 4, strict=True
        ):  # fmt: skip
            kept.append(None if value is None else round(float(value), 6))
        if len(self.scores) == SCAN_BLOCK:
            self.write()

    def write(self, **extra) -> None:
        count = len(self.scores)
        self.scan.dir.mkdir(parents=True, exist_ok=True)
        record = {
            "key": self.scan.key, "first": self.start, "fingerprints": self.frames[:count], "scores": self.scores,
            "spans": self.spans[:count], "light": self.light[:count], **extra,
        }  # fmt: skip
        if self.scan.lit:
            record["lit"] = self.lit
        if self.scan.parts:
            record |= {"colours": self.colours, "unreliable": self.unreliable}
        if self.scan.bars:
            record["bars"] = self.bars[:count]
        write_json(self.scan.path(self.start), record)
        self.start += count
        self.frames, self.spans, self.light = self.frames[count:], self.spans[count:], self.light[count:]
        self.bars = self.bars[count:]
        self.scores, self.lit, self.colours, self.unreliable = [], [], [], []

    def close(self, total: int) -> None:
        self.write(total=total)
