"""Fades to and from black or white: the output follows the picture's light.

Gatys et al.'s style loss asks for the style's colours whatever the content's light: a content
frame at a tenth of its brightness stylizes to much the same picture (the sample clip at 64 px: a
mean level of 138 against 145 at full light), so a film's fade to black stayed bright to the end
and its black frames came out as a texture of the style's colours (docs/video-quality.md, "Fades
follow the picture's light"). An editor's fade scales every pixel's distance to the fade's colour
k (0 or 255) by one gain a (0..1) per frame, I = k + a (P - k) with P the picture (ffmpeg's fade
filter does this to Y'CbCr, which is linear in RGB), so this module undoes it before the
stylizer sees the frame and does it again to the stylized frame on the way out:

- The cut scan records each frame's light: the mean and spread (standard deviation) of its luma
  (cuts.py), and the same of its darkest and of its brightest pixels but a share of them
  (--overlay-share, video_defaults.DEFAULT_OVERLAY_SHARE). A frame whose spread is under
  BLANK_SPREAD and whose mean is within BLANK_LEVEL of 0 or 255, without the share of its pixels
  furthest from that colour, is blank: black or white, nothing to stylize, but for a caption, a
  logo or a subtitle over it. Blank frames are written as they are (1 iteration, so that they have
  a record like any frame's), each run a shot of its own: a fade from black starts afresh from a
  picture, not from the style's texture on black.
- A fade is the run of frames next to blank ones whose light (their mean's distance to k plus
  their spread) rises, frame by frame away from the blank ones, by at least RISE: the fade's far
  end, where the rise stops, is its reference, at full light. Each fade frame's gain is its light
  over the reference's, the light again without the share of its pixels furthest from k: a
  caption that stays while the picture fades is no part of the fade (a share of the pixels
  nearest k scales as all of them do, so the gains are the fade's).
- A scene cut inside a fade's rise ends it (under --flow dis; --light-cuts: not, as the
  release before). A fade's pairs score as cuts by the colours and the flow of the frames as they
  are, so the cut scan scores the pairs that might be either in the light of their first frame
  too (LIT_CUT): the flow of the picture, whatever its light. (The same lit scores tell the same
  picture in another light from a cut outside fades too: LIT_SAME, shotplan.py.)
- The stylizer sees each fade frame brought back to the reference's light (`content`), the
  flow stage computes its pairs on those frames, so a fade costs what the same frames at full
  light cost; the chunks get each stylized frame faded by its gain (`output`).

--ignore-fades stylizes every frame as it comes, as the releases before did.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np

# A frame this flat (luma standard deviation, 0..255) and this near black or white is blank.
BLANK_SPREAD = 2.0
BLANK_LEVEL = 12.0
# A fade's frames: each at least this much lighter than its neighbour nearer the blank frames.
RISE = 0.01
MIN_FADE_FRAMES = 3  # fewer: a cut to black (the blank frames are still blank)
# The content of a fade frame is brought back to full light by at most 1 / MIN_GAIN: below it the
# picture is a few levels of noise, and the output's gain hides what the stylizer makes of it. On
# the bench's `fade` clip at 64 px (its fade in begins at a gain of 0.067, the shot's cold start)
# 0.05 against 0.1 gave 13% less style loss and 16-46% less flicker by the bench's three measures:
# the first frame lifted only to two thirds of the picture's light set a look the shot kept.
MIN_GAIN = 0.05
# The cut scan's lit score of a pair: the share of its pixels whose flow fails once the second
# frame is brought into the first one's light (flow.lit_pair), both frames at most LIT_SIZE px.
# Measured on carphone and a pan over a still, each faded in and out over 3-30 frames, cut to the
# other inside a fade, through H.264 at 64-640 px (docs/video-quality.md, "A scene cut inside a
# fade"): across a cut 0.92-1.00; between two frames of one fade at most 0.17 where both are
# LIT_LEVEL or more from black or white and 0.43 nearer, where the stretch back to full light is
# mostly noise. At the frames' own size those grow with it (0.52 and 0.78 at 640 px): hence
# LIT_SIZE, which also keeps the two flows cheap. A fade's walk stops at a lit score
# over LIT_CUT between two frames of that light only: a cut among a fade's darkest frames is
# missed (its shot starts warm) rather than a fade cut short or lost. Scored where a pair's own
# score is over LIT_FLOOR (no scene threshold anyone runs with cuts below it: pairs of one moving
# shot score 0.1-0.3) and its light changes as a fade's does (light_changes), so its flows are
# spent only where they count.
LIT_FLOOR = 0.3
LIT_CUT = 0.8
LIT_LEVEL = 16.0
LIT_SIZE = 128
# And at most this, between two frames LIT_LEVEL or more from black and white, a pair that scores as
# a cut is the same picture in another light (a lamp switched on, an exposure stepped): no cut,
# the frame goes on from the one before (shotplan.py). The sample clip at 64-640 px, its light
# stepped by x0.4-1.5 or +40 (a cut score of 0.40-0.79): 0.00-0.18; a fade's steps at most 0.17.
LIT_SAME = 0.3
# What the decoded frames depend on: the decode stage's settings record it (video_records.py).
SETTINGS = {
    "blank_spread": BLANK_SPREAD, "blank_level": BLANK_LEVEL, "rise": RISE, "min_fade_frames": MIN_FADE_FRAMES,
    "min_gain": MIN_GAIN,
}  # fmt: skip
# And what the cut scan's lit scores decide (--flow dis, unless --light-cuts).
CUT_SETTINGS = {
    "lit_floor": LIT_FLOOR, "lit_cut": LIT_CUT, "lit_level": LIT_LEVEL, "lit_size": LIT_SIZE, "lit_same": LIT_SAME,
}  # fmt: skip


# Rec. 601 luma, as OpenCV's RGB2GRAY (numpy alone: `stylize status` reads this module's records
# without loading OpenCV).
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
LEVELS = np.arange(256, dtype=np.float64)  # a luma histogram's levels


def frame_light(rgb: np.ndarray, overlay: float = 0.0) -> list[float]:
    """A frame's light as the cut scan records it: [mean, spread] of its luma (0..255); with an
    `overlay` share, then the [mean, spread] of its darkest pixels but that share of them and of
    its brightest (what blank frames and fades are measured by toward black and toward white,
    `toward`)."""
    luma = rgb.astype(np.float32) @ LUMA
    light = [round(float(luma.mean()), 3), round(float(luma.std()), 3)]
    if not overlay:
        return light
    # Trimmed by the luma's histogram (whole levels; 0.5 added and cut off rounds, as np.rint would
    # at ten times the cost), not a sort: 10 ms a 1080p frame for the whole light against 7.
    counts = np.bincount((luma + 0.5).astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    keep = counts.sum() * (1 - overlay)
    return light + kept_light(counts, keep, LEVELS) + kept_light(counts[::-1], keep, LEVELS[::-1])


def kept_light(counts: np.ndarray, keep: float, levels: np.ndarray) -> list[float]:
    """[mean, spread] of the first `keep` pixels of a luma histogram, `counts[i]` pixels at `levels[i]`."""
    before = np.cumsum(counts) - counts  # the pixels at the levels ahead of each
    weights = np.clip(keep - before, 0, counts)
    mean = float(weights @ levels / keep)
    spread = float(np.sqrt(max(weights @ (levels - mean) ** 2 / keep, 0.0)))
    return [round(mean, 3), round(spread, 3)]


def toward(light: list[float], colour: int) -> list[float]:
    """A frame's [mean, spread] as measured toward blank `colour` (0 or 255): without the overlay
    share of its pixels furthest from it where the record has them, else of the whole frame."""
    if len(light) == 2:
        return light
    return light[2:4] if colour == 0 else light[4:6]


def level(light: list[float], colour: int) -> float:
    """How far a frame's light (frame_light) is from blank `colour` (0 or 255): what a fade scales."""
    mean, spread = toward(light, colour)
    return abs(mean - colour) + spread


def lit_clear(light: list[float]) -> bool:
    """Whether a frame's light is LIT_LEVEL or more from black and from white: its lit scores are
    the picture's, not the noise of a frame stretched back from near blank."""
    return min(level(light, 0), level(light, 255)) >= LIT_LEVEL


def light_changes(before: list[float], after: list[float]) -> bool:
    """Whether two frames' light differs as between two frames of a fade: by RISE or more, toward
    black or white."""
    return any(
        max(level(before, k), level(after, k)) >= min(level(before, k), level(after, k)) * (1 + RISE) for k in (0, 255)
    )


@dataclass(frozen=True)
class Fade:
    """Frames first..last fade between the picture and `colour` (0 or 255); `gains[i]` is frame
    first + i's (0..1, 1: the picture's full light)."""

    first: int
    last: int
    colour: int
    gains: tuple[float, ...]

    @property
    def way(self) -> str:
        """Which way it goes, in words ("to black", "from white"): a fade out loses the light toward its end."""
        towards = "to" if self.gains[0] > self.gains[-1] else "from"
        return f"{towards} {'black' if self.colour == 0 else 'white'}"

    def text(self) -> str:
        return f"{self.first}-{self.last} ({self.way})"


@dataclass(frozen=True)
class FadePlan:
    """A range's fades and blank frames ({frame: colour}), from the cut scan's light records."""

    fades: tuple[Fade, ...] = ()
    blanks: Mapping[int, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.fades or self.blanks)

    def gain(self, index: int) -> tuple[float, int] | None:
        """Frame `index`'s (gain, colour), or None where it is at full light."""
        if index in self.blanks:
            return 0.0, self.blanks[index]
        for fade in self.fades:
            if fade.first <= index <= fade.last:
                return fade.gains[index - fade.first], fade.colour
        return None

    def content(self, index: int, rgb: np.ndarray) -> np.ndarray:
        """Frame `index` as the stylizer sees it: a fade's frame at the reference's light."""
        light = self.gain(index)
        if light is None or index in self.blanks:
            return rgb
        gain, colour = light
        lifted = colour + (rgb.astype(np.float32) - colour) / max(gain, MIN_GAIN)
        return np.clip(np.rint(lifted), 0, 255).astype(np.uint8)

    def output(self, index: int, rgb: np.ndarray) -> np.ndarray:
        """Stylized frame `index` as the output shows it: faded by its gain; a blank frame (as it
        came: one iteration from its content moves no pixel a level) the colour, but for a caption
        over it, the pixels further than BLANK_LEVEL from the colour, which stay as they are."""
        light = self.gain(index)
        if light is None:
            return rgb
        gain, colour = light
        if index in self.blanks:
            near = np.abs(rgb.astype(np.int16) - colour).max(axis=-1, keepdims=True) <= BLANK_LEVEL
            return np.where(near, np.uint8(colour), rgb)
        faded = colour + (rgb.astype(np.float32) - colour) * gain
        return np.clip(np.rint(faded), 0, 255).astype(np.uint8)

    def cuts(self) -> set[int]:
        """The frames that begin a shot because of blank frames: the first blank frame of a run
        and the first frame after it (each run of blank frames is a shot of its own)."""
        return blank_edges(self.record())

    def through(self) -> set[int]:
        """The frames of a fade and the frame after it: their pairs' cut scores are the light's,
        not a new picture's (the frame after blank ones begins a shot all the same: `cuts`)."""
        return {index for fade in self.fades for index in range(fade.first, fade.last + 2)}

    def covers(self, first: int, last: int) -> bool:
        """Whether frames first..last are all one fade's."""
        return any(fade.first <= first and last <= fade.last for fade in self.fades)

    def inside_blanks(self) -> set[int]:
        """The blank frames but the first of each run: their pairs' cut scores are the noise of two
        black (or white) frames, no cut (a run of them is one shot)."""
        return {index for index in self.blanks if index - 1 in self.blanks}

    def record(self) -> dict:
        """For the stylize stage's record (`stylize status`, the report): the fades and the blank runs."""
        return {
            "fades": [[fade.first, fade.last, fade.way] for fade in self.fades],
            "blanks": [list(run) for run in runs(sorted(self.blanks))],
        }

    def texts(self) -> list[str]:
        """The fades and blank runs in words, for the log."""
        return record_texts(self.record())


def blank_edges(record: dict) -> set[int]:
    """The frames of a FadePlan's record that begin a shot for its blank frames (FadePlan.cuts; no
    scene cuts, as `stylize status` and the report read the record)."""
    return {index for first, last in record.get("blanks") or [] for index in (first, last + 1)}


def scene_cuts(record: dict) -> list[int]:
    """The frames of a stylize stage's record ("shots", and a FadePlan's record) that begin a shot
    at a scene cut: not those begun for blank frames. For `stylize status` and the report."""
    blank = blank_edges(record)
    return [int(first) for first, _ in (record.get("shots") or [])[1:] if first not in blank]


def record_texts(record: dict) -> list[str]:
    """A FadePlan's record in words: "fade 2-15 (from black)", "blank 70-75"."""
    texts = [f"fade {first}-{last} ({way})" for first, last, way in record.get("fades") or []]
    blanks = [f"{first}-{last}" if last > first else str(first) for first, last in record.get("blanks") or []]
    return texts + ([f"blank {', '.join(blanks)}"] if blanks else [])


def runs(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted frame numbers as runs of consecutive ones: (first, last)."""
    found: list[tuple[int, int]] = []
    for index in indices:
        if found and found[-1][1] == index - 1:
            found[-1] = (found[-1][0], index)
        else:
            found.append((index, index))
    return found


def blank_colour(light: list[float]) -> int | None:
    """0 or 255 for a blank frame's light (frame_light), else None."""
    for colour in (0, 255):
        mean, spread = toward(light, colour)
        if spread < BLANK_SPREAD and abs(mean - colour) <= BLANK_LEVEL:
            return colour
    return None


def plan_fades(
    light: Mapping[int, list[float]], total: int, flashes: Collection[int] = (), cuts: Collection[int] = ()
) -> FadePlan:
    """The fades and blank frames of frames 1..total from their light (frame_light). The frames of
    `flashes` are none of them: a flash that burns a frame out white is a flash (cuts.py), whose
    shot goes on through it. A fade ends before any of `cuts` (frames whose pair with the frame
    before is a scene cut in the picture's own light, Scan.lit_cuts)."""
    blanks = {
        index: colour for index in range(1, total + 1)
        if index not in flashes and (colour := blank_colour(light[index])) is not None
    }  # fmt: skip
    fades, cuts = [], frozenset(cuts)
    for first, last in runs(sorted(blanks)):
        walk = FadeWalk(light, total, blanks[first], blanks, cuts)
        for edge, step in ((first - 1, -1), (last + 1, 1)):  # a fade out before the run, a fade in after it
            fade = walk.from_edge(edge, step)
            if fade is not None and not any(f.first <= fade.last and fade.first <= f.last for f in fades):
                fades.append(fade)
    return FadePlan(tuple(sorted(fades, key=lambda fade: fade.first)), blanks)


@dataclass(frozen=True)
class FadeWalk:
    """The frames 1..total walked away from blank frames of `colour`: a fade's frames cross no
    blank frame, nor a pair of `cuts` (a frame's pair with the frame before it) both of whose
    frames are at least LIT_LEVEL from the colour."""

    light: Mapping[int, list[float]]
    total: int
    colour: int
    blanks: Mapping[int, int]
    cuts: frozenset[int]

    def level(self, index: int) -> float:
        return level(self.light[index], self.colour)

    def stops(self, frame: int, step: int) -> bool:
        """Whether the walk from `frame` to the frame `step` (-1 or 1) away must stop before it."""
        after = frame + step
        if after in self.blanks:
            return True
        return max(frame, after) in self.cuts and min(self.level(frame), self.level(after)) >= LIT_LEVEL

    def from_edge(self, edge: int, step: int) -> Fade | None:
        """The fade whose frame nearest the blank ones is `edge`, away from them by `step` (-1: the
        frames before, a fade out; 1: after, a fade in), or None where the light does not rise there."""
        frames = [edge]
        while 1 <= frames[-1] + step <= self.total and not self.stops(frames[-1], step):
            if self.level(frames[-1] + step) < self.level(frames[-1]) * (1 + RISE):
                break
            frames.append(frames[-1] + step)
        if not 1 <= edge <= self.total or edge in self.blanks or len(frames) - 1 < MIN_FADE_FRAMES:
            return None
        reference = frames.pop()  # where the rise stops (or a cut): the picture at full light
        gains = [round(min(self.level(i) / self.level(reference), 1.0), 4) for i in frames]
        frames, gains = (frames[::-1], gains[::-1]) if step < 0 else (frames, gains)
        return Fade(frames[0], frames[-1], self.colour, tuple(gains))
