"""Letterbox and pillarbox bars: the black rows at the top and bottom of every frame (a wide film
in a narrower frame) or the black columns at its sides stay black in the output; with
--crop-bars the stylizer sees only the picture between them.

Gatys et al.'s loss paints the style's texture over black as over any picture (fades.py), so a
letterboxed film came out with its bars textured, a frame of the style around the picture. The
cut scan records each frame's black edges (`frame_bars`: how many rows at the top and at the
bottom, and columns at the left and at the right, have every value within BAR_LEVEL of black).
The range's bars are the fewest of each side over its frames that are not blank (a black frame, a
title card's, is all bar: fades.py), so a row is a bar only where every picture of the range
leaves it black; the chunks encode each frame with its bars drawn black over the stylized frame
(chunks.py, ffmpeg's drawbox). --stylize-bars: the bars stylized and shown, as the releases before.

With --crop-bars each frame's optimization runs on the picture alone (`Letterbox.crop`;
temporal.FrameStart.within): its content, its start and the targets of its temporal terms
cropped, its result pasted back over the content frame's bars (`paste`); the style image scaled
and the layers weighed as for the whole frame (stylize.Stylizer.objective's frame_size), each flow
pair confined to the picture as a cropped film's would be (`confine`). A 2.39:1 film in a 16:9
frame is a quarter bars: 13-16% less time a frame at 128 px on two real clips, but at some flicker
and style loss (the Gram matrices over the picture alone lose the bars' share of the texture;
docs/video-quality.md, "The picture between the bars stylized alone"): not the default.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from .settings import MIN_SCALE_SIDE

if TYPE_CHECKING:  # `stylize status` reads the bars' records without torch or OpenCV (status.py)
    import torch

    from .flow import FramePair

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
    """The range's bars, [top, bottom, left, right] in rows and columns of its frames, and where
    the stylizer sees the picture between them alone (--crop-bars, where the picture `fits`) the
    frames' (H, W) it is cropped from (`cropped_from`)."""

    bars: tuple[int, int, int, int]
    cropped_from: tuple[int, int] | None = None

    @property
    def cropped(self) -> bool:
        return self.cropped_from is not None

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

    def fits(self, height: int, width: int) -> bool:
        """Whether the picture between the bars of a frame this size is large enough to stylize alone
        (settings.MIN_SCALE_SIDE a side); a smaller one is stylized with its bars."""
        top, bottom, left, right = self.bars
        return min(height - top - bottom, width - left - right) >= MIN_SCALE_SIDE

    def crop(self, image: torch.Tensor) -> torch.Tensor:
        """The picture between the bars of an image (..., H, W): a view, not a copy."""
        top, bottom, left, right = self.bars
        height, width = image.shape[-2:]
        return image[..., top : height - bottom, left : width - right]

    def paste(self, picture: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """`frame` (..., H, W) with `picture` in the place `crop` takes it from: a new tensor."""
        out = frame.to(picture.device, picture.dtype).clone()
        self.crop(out).copy_(picture)
        return out

    def confine(self, pair: FramePair) -> FramePair:
        """The pair as the picture alone would have it, as if the film had been cropped: where the
        flow takes a pixel's source outside the picture (into a bar: the picture's edge in motion)
        that source is unreliable, as one outside the frame is (flow.reliability_mask), and moved
        onto the picture's edge, as the warp replicates a frame's border (flow.warp). A warp from
        the bars would carry their black into the picture's edge, held there by the temporal term."""
        flow, (height, width) = pair.flow_back, pair.reliability.shape
        top, bottom, left, right = self.bars
        from .flow import pixel_grid  # here: `stylize status` imports this module without OpenCV or torch

        columns, rows = pixel_grid(height, width)
        source_x, source_y = columns + flow[..., 0], rows + flow[..., 1]
        # Half a pixel of slack, as at the frame's border.
        inside = (source_x >= left - 0.5) & (source_x <= width - right - 0.5)
        inside &= (source_y >= top - 0.5) & (source_y <= height - bottom - 0.5)
        moved = np.stack(
            [np.clip(source_x, left, width - right - 1) - columns, np.clip(source_y, top, height - bottom - 1) - rows],
            axis=-1,
        )  # fmt: skip
        return replace(pair, flow_back=moved, reliability=pair.reliability * inside)

    def text(self) -> str:
        """For the log and `stylize status`: "black bars 6 px top, 6 px bottom (kept black, not stylized)"."""
        sides = [f"{count} px {side}" for side, count in zip(SIDES, self.bars) if count]
        return f"black bars {', '.join(sides)} (kept black{', not stylized' if self.cropped else ''})"


def picture_share(mask: np.ndarray | torch.Tensor, picture: Letterbox | None) -> float:
    """A reliability mask's mean over the pixels the stylizer optimizes: the picture's alone where
    `picture` is cropped off the frames (a confined pair's bars are all unreliable, and cropped off);
    the whole frame's where it is None."""
    return float((picture.crop(mask) if picture else mask).mean())


def bars_text(record: dict) -> str | None:
    """The bars of a stylize stage's record in words, or None."""
    bars = record.get("bars")
    cropped = record.get("cropped")
    return Letterbox(tuple(bars), cropped_from=tuple(cropped) if cropped else None).text() if bars else None
