"""The part of a video a job works on: --start, --duration and --every-nth, checked once.

`stylize video` decodes it, `stylize flicker` measures the reference over it, and the encode
takes the same range of the sound; all three get it as one FrameRange.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InputError

MAX_EVERY_NTH = 10_000  # one frame in 400 s at 25 fps: a preview of a feature film
# Longer than any video (31 years): a larger --start or --duration is a typo, and ffmpeg, which
# gets both as decimal text, would fail on 1e300 with an error that seems to be the input's.
MAX_SECONDS = 1e9


@dataclass(frozen=True)
class FrameRange:
    """From `start` seconds, for `duration` seconds (None: to the end), every `every_nth` frame."""

    start: float = 0.0
    duration: float | None = None
    every_nth: int = 1

    def __post_init__(self):
        start, duration, every_nth = self.start, self.duration, self.every_nth
        if not math.isfinite(start) or start < 0:
            raise InputError(f"--start {start}: must be a number of seconds >= 0")
        if start > MAX_SECONDS:
            raise InputError(f"--start {start}: must be at most {MAX_SECONDS:g} seconds")
        if duration is not None and (not math.isfinite(duration) or duration <= 0):
            raise InputError(f"--duration {duration}: must be a number of seconds > 0")
        if duration is not None and duration > MAX_SECONDS:
            raise InputError(f"--duration {duration}: must be at most {MAX_SECONDS:g} seconds")
        if not 1 <= every_nth <= MAX_EVERY_NTH:
            raise InputError(f"--every-nth {every_nth}: must be between 1 and {MAX_EVERY_NTH}")

    def check_within(self, path, duration: float) -> None:
        """Refuse a start at or beyond the end of a video of `duration` seconds at `path`."""
        if self.start >= duration:
            raise InputError(f"--start {self.start:g}: {path} is only {duration:.2f} s long")

    def end(self, video_duration: float) -> float:
        """Where the range ends in a video whose frames last `video_duration` seconds."""
        return video_duration if self.duration is None else min(video_duration, self.start + self.duration)

    def trim_options(self) -> dict:
        """ffmpeg input options selecting the range (seeking on the input is frame-accurate when decoding)."""
        options = {}
        if self.start:
            options["ss"] = f"{self.start:.6f}"
        if self.duration is not None:
            options["t"] = f"{self.duration:.6f}"
        return options

    def text(self) -> str:
        """The range in words; empty for all of the video."""
        parts = []
        if self.start:
            parts.append(f"from {self.start:g} s")
        if self.duration is not None:
            parts.append(f"for {self.duration:g} s")
        if self.every_nth > 1:
            parts.append(f"1 frame in {self.every_nth}")
        return ", ".join(parts)


ALL = FrameRange()
