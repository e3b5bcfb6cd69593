"""A video's shots: the frame ranges stylized each in frame order (every frame starts from the one
before it) and independently of one another, so that several devices can take one each (issue 16).

A shot starts at frame 1 and at every frame whose pair's cut score exceeds --scene-threshold,
but where a flash comes and goes (cuts.py: the shot goes on through it): there the frame starter
begins afresh anyway (temporal.FlowWarmStart), so cutting the job there changes the schedule,
never the result. With --max-shot-frames N a longer shot is split into
segments of at most N frames that overlap by --segment-overlap frames: each later segment starts
afresh at its overlap, and over the overlap the output cross-fades linearly from the earlier
segment's frames to the later one's, so the seam is a short blend instead of a jump (the
multi-pass idea of Ruder, Dosovitskiy and Brox 2018, sec. 3.3, in its simplest, one-pass form).

Frame indices are 1-based, as in the work directory's file names; a shot's `last` is inclusive.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SEGMENT_OVERLAP = 12  # frames: half a second at 24 fps, long enough to hide the seam


@dataclass(frozen=True)
class Shot:
    """Frames first..last, stylized in order. `overlap`: how many of its first frames it shares
    with the segment before it (0 for a shot that starts at a cut or at frame 1); `tail`: how
    many of its last frames it shares with the segment after it."""

    first: int
    last: int
    overlap: int = 0
    tail: int = 0

    @property
    def own_first(self) -> int:
        """The first frame of its own: the head's frames are the segment before it's, until their seam."""
        return self.first + self.overlap

    @property
    def own(self) -> tuple[int, int]:
        """The frames it shares with no other segment: what it prunes as it goes and on a resume."""
        return self.own_first, self.own_last

    @property
    def own_last(self) -> int:
        """The last frame of its own: the tail's frames are cross-faded with the next segment (seams.py)."""
        return self.last - self.tail

    @property
    def frames(self) -> int:
        return self.last - self.first + 1

    def fade_weight(self, index: int) -> float:
        """The weight of this segment's frame `index` in the output, in (0, 1]; 1 outside the overlap.
        Linear over the overlap: the earlier segment's frame gets 1 - weight."""
        position = index - self.first + 1
        return position / (self.overlap + 1) if position <= self.overlap else 1.0

    def text(self) -> str:
        return frames_text(self.first, self.last)


def frames_text(first: int, last: int) -> str:
    """Frames first..last as a person reads them: "31-32", or "31" for one frame."""
    return f"{first}-{last}" if last > first else str(first)


def runs_text(frames: Iterable[int]) -> list[str]:
    """Frames as runs of consecutive ones, each as frames_text has it: [79, 158, 159, 160] ->
    ["79", "158-160"]."""
    runs: list[list[int]] = []
    for frame in sorted(frames):
        if runs and frame == runs[-1][1] + 1:
            runs[-1][1] = frame
        else:
            runs.append([frame, frame])
    return [frames_text(first, last) for first, last in runs]


def counted(count: int, noun: str) -> str:
    """ "1 worker", "2 workers": a count and its noun as a person reads them (the noun in the singular)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def at_frames(places: list, one: str, many: str) -> str:
    """ "scene cut at frame 31", "scene cuts at frames 31, 90", "flash at frames 5-6": the events
    (`one` and `many`, the noun in the singular and the plural) at these frames or frame ranges."""
    texts = [str(place) for place in places]
    noun = one if len(texts) == 1 else many
    frames = "frame" if len(texts) == 1 and "-" not in texts[0] else "frames"
    return f"{noun} at {frames} {', '.join(texts)}"


def plan_shots(cuts: Iterable[int], total: int, *, max_frames: int | None = None, overlap: int = 0) -> list[Shot]:
    """The shots of frames 1..total that start at frame 1 and at each frame in `cuts`, in frame
    order; with `max_frames`, a longer shot split into segments of at most that many frames
    overlapping by `overlap`, at most half of max_frames, so that no frame is in more than two."""
    starts = sorted({1, *(c for c in cuts if 1 < c <= total)})
    shots = [Shot(first, (starts[i + 1] - 1) if i + 1 < len(starts) else total) for i, first in enumerate(starts)]
    if not max_frames:
        return shots
    if not 0 <= 2 * overlap <= max_frames:
        raise ValueError(f"overlap {overlap} must be at least 0 and at most half of max_frames {max_frames}")
    return [segment for shot in shots for segment in split(shot, max_frames, overlap)]


def split(shot: Shot, max_frames: int, overlap: int) -> list[Shot]:
    """Segments of at most max_frames, each after the first starting `overlap` frames before the
    previous one ends; the last segment is never shorter than the overlap plus one frame."""
    segments, first = [], shot.first
    while shot.last - first + 1 > max_frames:
        segments.append(Shot(first, first + max_frames - 1, overlap if segments else shot.overlap, tail=overlap))
        first += max_frames - overlap
    segments.append(Shot(first, shot.last, overlap if segments else shot.overlap, tail=shot.tail))
    return segments


def longest_first(shots: Iterable[Shot]) -> list[Shot]:
    """The order shots are handed out in: the longest first, so that the last shot to finish is a
    short one and no device sits idle at the end while one long shot runs on (ties: frame order)."""
    return sorted(shots, key=lambda shot: (-shot.frames, shot.first))


def owners(shots: Iterable[Shot]) -> dict[int, list[Shot]]:
    """frame index -> the shots that stylize it, in frame order: one, or two over an overlap."""
    by_frame: dict[int, list[Shot]] = {}
    for shot in sorted(shots, key=lambda shot: shot.first):
        for index in range(shot.first, shot.last + 1):
            by_frame.setdefault(index, []).append(shot)
    return by_frame


def shot_record_path(work: Path, shot: Shot) -> Path:
    """WORK/shots/NNNNNN.json: a shot's record (videoshots.run_shot writes it as the shot starts and ends)."""
    return Path(work) / "shots" / f"{shot.first:06d}.json"


def read_shot_records(work: Path) -> list[dict]:
    """Every shot's record, in frame order (`stylize status`)."""
    folder = Path(work) / "shots"
    records = []
    for path in sorted(folder.glob("[0-9]*.json")) if folder.is_dir() else []:
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # being replaced (atomically): the next look sees it
    return records
