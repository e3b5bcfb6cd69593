"""The video report's pictures of a frame, made by the job as the frame finishes.

A streaming job deletes a content frame, a stylized frame and a flow pair as soon as no resume
needs them (issue 15), long before the report is next rewritten: the thumbnails the report may
show of a frame are made at once, while its files are there, and only those, so that what the
report keeps stays bounded whatever the video's length:

- the strip's: content and stylized, for the frames strip_indices picks over the range's
  expected length (the probed frame count; report_video uses the nearest kept frame where the
  decode found a slightly different count);
- the worst pairs': the previous stylized frame warped onto this one and this one, while the
  pair's output flicker is among the WORST highest recorded so far (report-files/worst.json,
  a few numbers); a pair that drops out of them loses its thumbnails on the report's next rewrite.

The names are those report_video and report_flicker look for, so the report finds them as if it
had made them itself, and makes them itself for a job that kept its frames (--keep-frames).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import atomic_path
from .errors import one_line
from .flow import FramePair, to_tensor, warp
from .report_thumbs import thumbnail, thumbnail_of
from .report_video_data import VideoLayout

STRIP = 12  # evenly spaced frames in the report's strip
WORST = 6  # pairs shown as thumbnails
WORST_RECORD = "worst.json"


def strip_indices(total: int, count: int = STRIP) -> list[int]:
    """Evenly spaced frames over the whole job: the same picks on every call, so each thumbnail
    is made once, as soon as its frame is finished."""
    if total <= 0:
        return []
    count = min(count, total)
    return sorted({1 + round(k * (total - 1) / max(count - 1, 1)) for k in range(count)})


def content_thumb(files: Path, decode_hash: str, index: int) -> Path:
    return files / f"{decode_hash[:8]}-c{index:06d}.webp"


def styled_thumb(files: Path, stylize_hash: str, index: int) -> Path:
    return files / f"{stylize_hash[:8]}-s{index:06d}.webp"


def warped_thumb(files: Path, stylize_hash: str, index: int) -> Path:
    return files / f"{stylize_hash[:8]}-w{index:06d}-warped.webp"


def warped_rgb(previous: Path, pair: Path) -> np.ndarray | None:
    """The stylized frame `previous` warped by the flow pair onto the next frame, as 8-bit RGB
    (what the flicker measure compares); None where either file is gone."""
    try:
        with Image.open(previous) as image:
            rgb = np.array(image.convert("RGB"))
        flow_back = FramePair.load(pair).flow_back
    except (OSError, ValueError, KeyError):
        return None
    warped = warp(to_tensor(rgb), flow_back)[0].permute(1, 2, 0).numpy()
    return (warped * 255).round().clip(0, 255).astype(np.uint8)


class FrameThumbnails:
    """Called by the video job for each finished frame, after its statistics and before its
    files may go. A thumbnail that cannot be made is a warning: the report is never the job's end."""

    def __init__(
        self, work_dir: Path, *, hashes: dict[str, str], expected: int, scene_threshold: float,
        warn: Callable[[str], None], worst: str = WORST_RECORD,
    ):  # fmt: skip
        self.layout = VideoLayout(Path(work_dir))
        self.files = self.layout.files
        self.hashes, self.threshold, self.warn = hashes, scene_threshold, warn
        self.strip = set(strip_indices(expected))
        self.worst_path = self.files / worst  # one a shot: shots run at once, in other processes too
        try:
            record = json.loads(self.worst_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {}
        same = record.get("stylize") == hashes["stylize"]
        self.worst = {int(i): float(e) for i, e in record.get("pairs", {}).items()} if same else {}

    def frame_finished(self, index: int, stats: dict) -> None:
        try:
            self.make(index, stats)
        except Exception as exc:  # noqa: BLE001 (a full disk, a bug: the frames are the job)
            self.warn(f"no report thumbnails of frame {index}: {one_line(f'{type(exc).__name__}: {exc}')}")

    def make(self, index: int, stats: dict) -> None:
        layout, stylize = self.layout, self.hashes["stylize"]
        if index in self.strip:
            thumbnail(layout.content(index), content_thumb(self.files, self.hashes["decode"], index))
            thumbnail(layout.stylized(index), styled_thumb(self.files, stylize, index))
        flicker = stats.get("flicker") or {}
        error, cut = flicker.get("output"), (stats.get("cut_score") or flicker.get("cut_score") or 0) > self.threshold
        if error is None or cut or not self.among_worst(index, float(error)):
            return
        make = lambda: warped_rgb(layout.stylized(index - 1), layout.pair(index))  # noqa: E731
        thumbnail_of(make, warped_thumb(self.files, stylize, index))
        thumbnail(layout.stylized(index), styled_thumb(self.files, stylize, index))

    def among_worst(self, index: int, error: float) -> bool:
        """Whether pair `index` joins the WORST highest output flickers so far (recorded if so)."""
        ranked = sorted(self.worst.items(), key=lambda item: -item[1])
        if len(ranked) >= WORST and error <= ranked[WORST - 1][1]:
            return False
        self.worst = dict(sorted({**self.worst, index: error}.items(), key=lambda item: -item[1])[:WORST])
        self.files.mkdir(parents=True, exist_ok=True)
        record = {"stylize": self.hashes["stylize"], "pairs": {str(i): e for i, e in self.worst.items()}}
        with atomic_path(self.worst_path) as tmp:
            tmp.write_text(json.dumps(record), encoding="utf-8")
        return True
