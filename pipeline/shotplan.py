"""The cut scan's verdict, before any frame is stylized: the flashes the shots go on through, the
fades and blank frames, the scene cuts, and so the shots (and segments, with --max-shot-frames).
A function of the scan's records (cuts.py) and the job's options alone, so every run of a job,
and every worker of it, plans the same shots.

Under --flow dis a shot starts at each scene cut: a pair over --scene-threshold, but a flash's way
in and out (cuts.py), a fade's pairs (fades.py: their scores are the light's) and, unless
--light-cuts, the pairs between two blank frames and those of the same picture in another light
(Scan.relit: the frame goes on from the one before) and, unless --motion-cuts, the fast moves
(Scan.sudden: over it by the flow alone and no sudden change), no flash being found among a fade's frames;
and at each run of blank frames and the frame after it, a shot of its own. With another --flow
the range is one shot (a frame of --flow none starts from the one before, whatever it shows), its
fades followed all the same.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from .cuts import Flash, Scan
from .fades import FadePlan, plan_fades
from .letterbox import Letterbox
from .shots import Shot, at_frames, frames_text, plan_shots, runs_text
from .video_defaults import DEFAULT_FLOW_PRESET


class PlanOptions(Protocol):
    """What ShotPlan.of reads of a job's options: a VideoJob's, or a measure's (MeasureOptions)."""

    flow: str
    scene_threshold: float
    flash_frames: int
    ignore_fades: bool
    max_shot_frames: int | None
    segment_overlap: int

    @property
    def tells_moves(self) -> bool: ...

    @property
    def cuts_in_own_light(self) -> bool: ...

    @property
    def keeps_bars(self) -> bool: ...


@dataclass(frozen=True)
class MeasureOptions:
    """The options `stylize flicker` tells a reference's cuts, flashes, fast moves, changes of light
    and fades by: `stylize video`'s defaults but for the three it takes (flicker.py)."""

    scene_threshold: float
    flash_frames: int
    motion_cuts: bool = False
    flow_preset: str = DEFAULT_FLOW_PRESET  # the flow the lit scores are computed by
    flow: str = "dis"
    ignore_fades: bool = False
    max_shot_frames: int | None = None
    segment_overlap: int = 0

    @property
    def tells_moves(self) -> bool:
        return not self.motion_cuts

    @property
    def cuts_in_own_light(self) -> bool:
        return True

    @property
    def keeps_bars(self) -> bool:  # the measure compares frames: what the output shows in its bars counts
        return False


@dataclass(frozen=True)
class ShotPlan:
    """A range's flashes, fades, scene cuts and shots, and with --max-shot-frames the shots'
    segments."""

    total: int
    flashes: tuple[Flash, ...]
    fades: FadePlan
    cuts: tuple[int, ...]
    shots: tuple[Shot, ...]
    segments: tuple[Shot, ...] | None
    flow: bool  # --flow dis: cuts, flashes and shots are the flow's (FlowWarmStart)
    goes_on: frozenset[int] = frozenset()  # frames whose pair scores as a cut and is none: a fade's, relit, moved
    relit: tuple[int, ...] = ()  # the frames that would be scene cuts but for Scan.relit, for the log
    moves: tuple[int, ...] = ()  # and those but for Scan.sudden: the fast moves
    letterbox: Letterbox | None = None  # the bars kept black in the output (letterbox.py)

    @property
    def runs(self) -> tuple[Shot, ...]:
        """What is stylized, each in frame order: the shots, or their segments."""
        return self.shots if self.segments is None else self.segments

    @classmethod
    def of(cls, scan: Scan, job: PlanOptions, *, crop_size: tuple[int, int] | None = None) -> ShotPlan:
        """The plan of a scanned range; `crop_size`: the frames' (H, W) where the stylizer is to see
        the picture between the bars alone (letterbox.py; None: the whole frame)."""
        flow = job.flow == "dis"
        flashes = ()
        if flow and job.flash_frames:
            flashes = tuple(scan.flashes(job.scene_threshold, job.flash_frames, sudden=job.tells_moves))
        fades = FadePlan()
        if not job.ignore_fades and scan.light:  # (a scan keyed for fades records the light)
            flashed = {index for flash in flashes for index in range(flash.first, flash.last + 1)}
            fades = plan_fades(scan.light, scan.total, flashed, scan.lit_cuts() if job.cuts_in_own_light else ())
        if job.cuts_in_own_light:  # a "flash" among a fade's frames is its darkest frames' noise, lifted
            flashes = tuple(flash for flash in flashes if not fades.covers(flash.first, flash.last))
        cuts: list[int] = []
        relit = scan.relit() if job.cuts_in_own_light else set()
        goes_on, moves = fades.through() | relit, set()
        if flow:
            scored = set(scan.cuts(job.scene_threshold, flashes)) - fades.through()
            blanks = fades.inside_blanks() if job.cuts_in_own_light else set()
            if job.tells_moves:
                moves = set(scan.moves(job.scene_threshold, flashes)) - fades.through() - relit - blanks
            cuts = sorted(scored - relit - blanks - moves)
            relit &= scored
            goes_on |= moves
        # A run of blank frames is a shot of its own (fades.py), where frames go on from each other by the flow.
        starts = sorted({*cuts, *(i for i in fades.cuts() if 1 < i <= scan.total)}) if flow else []
        segments = None
        if job.max_shot_frames:
            split = plan_shots(starts, scan.total, max_frames=job.max_shot_frames, overlap=job.segment_overlap)
            segments = tuple(split)
        shots = tuple(plan_shots(starts, scan.total))
        relit, moves = tuple(sorted(relit)), tuple(sorted(moves))
        letterbox = Letterbox.of(scan.bars, fades.blanks) if job.keeps_bars else None
        if letterbox and crop_size and letterbox.fits(*crop_size):
            letterbox = replace(letterbox, cropped_from=tuple(crop_size))
        return cls(
            scan.total, flashes, fades, tuple(cuts), shots, segments, flow, frozenset(goes_on), relit, moves, letterbox
        )

    def text(self) -> str:
        """For the log: "75 frames, scene cut at frame 31, flash at frame 12, fade 2-15 (from black)"."""
        cuts = at_frames(list(self.cuts), "scene cut", "scene cuts") if self.cuts else "no scene cuts"
        parts = [f"{self.total} frames", cuts]
        if self.flashes:
            flashes = [frames_text(flash.first, flash.last) for flash in self.flashes]
            parts.append(at_frames(flashes, "flash", "flashes"))
        parts += self.fades.texts() if self.fades else []
        if self.relit:
            parts.append(at_frames(runs_text(self.relit), "change of light", "changes of light") + " (no cuts)")
        if self.moves:
            parts.append(at_frames(runs_text(self.moves), "fast move", "fast moves") + " (no cuts)")
        if self.letterbox:
            parts.append(self.letterbox.text())
        return ", ".join(parts)

    def record(self) -> dict:
        """For the stylize stage's record (`stylize status`, the report): the fades and blank frames,
        and under --flow dis the shots, flashes and changes of light; the segments with
        --max-shot-frames; the black bars kept ("bars"), and where the stylizer sees the picture alone,
        the frames' size it is cropped from ("cropped")."""
        record = self.fades.record() if self.fades else {}
        if self.flow:
            record["shots"] = [[shot.first, shot.last] for shot in self.shots]
            if self.flashes:
                record["flashes"] = [[flash.first, flash.last] for flash in self.flashes]
            if self.relit:
                record["relit"] = list(self.relit)
            if self.moves:
                record["moves"] = list(self.moves)
        if self.segments is not None:
            record["segments"] = [[shot.first, shot.last] for shot in self.segments]
        if self.letterbox:
            record["bars"] = list(self.letterbox.bars)
            if self.letterbox.cropped:  # from frames of this (H, W)
                record["cropped"] = list(self.letterbox.cropped_from)
        return record
