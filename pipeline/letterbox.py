"""Letterbox and pillarbox bars: the black rows at the top and bottom of every frame (a wide film
in a narrower frame) or the black columns at its sides stay black in the output.

Gatys et al.'s loss paints the style's texture over black as over any picture (fades.py), so a
letterboxed film came out with its bars textured, a frame of the style around the picture. The
cut scan records each frame's black edges (`frame_bars`: how many rows at the top and at the
bottom, and columns at the left and at the right, have every value within BAR_LEVEL of black).
The range's bars are the fewest of each side over its frames that are not blank (a black frame, a
title card's, is all bar: fades.py), so a row is a bar only where every picture of the range
leaves it black; the chunks encode each frame with its bars drawn black over the stylized frame
(chunks.py, ffmpeg's drawbox). The stylizer still sees and stylizes the whole frame: the bars'
texture is computed and not shown. --stylize-bars: the bars stylized as any black, as the releases
before.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

# A bar's rows and columns: every value (0..255, any channel) at most this. Black bars are
# encoded at the format's black and decode within a few levels of 0; fades.BLANK_LEVEL alike.
BAR_LEVEL = 12
SIDES = ("top", "bottom", "left", "right")
SETTINGS = {"bar_level": BAR_LEVEL}  # in the stylize stage's settings while the bars are kept


def frame_bars(rgb: np.ndarray) -> list[int]:
    """A frame's black edges as the cut scan records them: [top, bottom, left, right], the rows or
    columns from each edge inwards whose every value is at most BAR_LEVEL."""
    # Each row's values as one run (0.1 ms a 1080p frame; numpy's max over the rows' and the
    # colours' axes at once took 37, in the scan's loop over every frame of a film).
    rows = rgb.reshape(rgb.shape[0], -1).max(axis=1) <= BAR_LEVEL
    columns = rgb.max(axis=0).max(axis=1) <= BAR_LEVEL
    return [leading(rows), leading(rows[::-1]), leading(columns), leading(columns[::-1])]


def leading(black: np.ndarray) -> int:
    """How many of the first values are True."""
    return int(black.size if black.all() else np.argmin(black))


@dataclass(frozen=True)
class Letterbox:
    """The range's bars, [top, bottom, left, right] in rows and columns of its frames."""

    bars: tuple[int, int, int, int]

    @classmethod
    def of(cls, bars: Mapping[int, list[int]], blanks: Collection[int] = ()) -> Letterbox | None:
        """The bars every frame of the range but the blank ones has (`bars`: frame -> frame_bars),
        or None where there are none (or no frame but blank ones)."""
        pictures = [edges for index, edges in bars.items() if index not in blanks]
        if not pictures:
            return None
        fewest = tuple(int(min(edges[k] for edges in pictures)) for k in range(4))
        return cls(fewest) if any(fewest) else None  # type: ignore[arg-type]

    def boxes(self) -> list[dict[str, str]]:
        """The bars as ffmpeg drawbox rectangles (x, y, w, h: expressions of the frame's iw, ih)."""
        top, bottom, left, right = self.bars
        boxes = [{"x": "0", "y": "0", "w": "iw", "h": str(top)}] if top else []
        boxes += [{"x": "0", "y": f"ih-{bottom}", "w": "iw", "h": str(bottom)}] if bottom else []
        boxes += [{"x": "0", "y": "0", "w": str(left), "h": "ih"}] if left else []
        boxes += [{"x": f"iw-{right}", "y": "0", "w": str(right), "h": "ih"}] if right else []
        return boxes

    def text(self) -> str:
        """For the log and `stylize status`: "black bars 6 px top, 6 px bottom (kept black)"."""
        sides = [f"{count} px {side}" for side, count in zip(SIDES, self.bars) if count]
        return f"black bars {', '.join(sides)} (kept black)"


def bars_text(record: dict) -> str | None:
    """The bars of a stylize stage's record in words, or None."""
    bars = record.get("bars")
    return Letterbox(tuple(bars)).text() if bars else None
