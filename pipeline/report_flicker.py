"""Per-pair flicker for the video report, and thumbnails of the worst pairs.

The job records only the mean flicker (job.json "report"); a person wants to see where it
flickers. For each pair of consecutive finished frames the report takes, in this order:
the figures the job recorded in the later frame's statistics (`"flicker": {"output", "input"}`,
report_video_data.py), the figures it measured itself on an earlier rewrite (cached in
WORK/report-files/flicker.json, keyed by the stylize and flow stages' hashes), or it measures
them now from the flow pair (flow.warping_error: the masked warping error of the stylized and of
the content frames, as the job's mean). Each pair is measured once. Pairs across a scene cut are
not measured (a cut is not flicker), as in the job's mean.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np

from .flow import FramePair, warping_error
from .report_frames import WORST, styled_thumb, warped_rgb, warped_thumb
from .report_html import write_text
from .report_thumbs import thumbnail, thumbnail_of
from .report_video_data import VideoState

CACHE = "flicker.json"
DEFAULT_SCENE_THRESHOLD = 0.6  # video.DEFAULT_SCENE_THRESHOLD, for records that do not say


def _rgb(path: Path) -> np.ndarray | None:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def scene_threshold(state: VideoState) -> float:
    settings = state.stage("stylize").get("settings") or {}
    flicker = (state.data.get("report") or {}).get("flicker") or {}
    return float(settings.get("scene_threshold", flicker.get("scene_threshold", DEFAULT_SCENE_THRESHOLD)))


def cache_key(state: VideoState) -> list[str]:
    return [state.stylize_hash, state.stage("flow").get("hash") or ""]


def measure(state: VideoState, index: int, threshold: float) -> dict | None:
    """Warping errors of pair `index` (frame index-1 onto index), or None if its files are gone."""
    layout = state.layout
    try:
        pair = FramePair.load(layout.pair(index))
    except (OSError, ValueError, KeyError):
        return None
    if pair.cut_score > threshold:
        return {"cut": True, "cut_score": pair.cut_score}
    figures: dict = {"cut_score": pair.cut_score}
    for name, path in (("output", layout.stylized), ("input", layout.content)):
        previous, current = _rgb(path(index - 1)), _rgb(path(index))
        if previous is None or current is None or previous.shape != current.shape:
            return None
        figures[name] = warping_error(previous, current, pair)
    return figures


def pair_figures(state: VideoState, *, budget_s: float | None = None) -> dict[int, dict]:
    """index -> {"output", "input", "cut_score"} or {"cut": True} for every pair of finished
    frames that could be measured; new measurements stop after `budget_s` seconds (None: all),
    so that the report a running job rewrites stays cheap; the next rewrite goes on."""
    path = state.layout.files / CACHE
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    key = cache_key(state)
    measured = {int(k): v for k, v in (cache.get("pairs") or {}).items()} if cache.get("key") == key else {}
    threshold = scene_threshold(state)
    figures, started, new = {}, time.monotonic(), 0
    for index in sorted(state.frames):
        if index < 2 or index - 1 not in state.frames:
            continue
        recorded = state.frames[index].get("flicker")
        # The pair's own: a frame after a flash records the pair it started from as its "cut_score".
        cut_score = (recorded if isinstance(recorded, dict) else state.frames[index]).get("cut_score")
        if isinstance(recorded, dict) and "output" in recorded:
            # Left out as a cut's: a pair over the threshold, or into a shot's first frame, which
            # records none (frame_record.flicker_field; a shot also begins after blank frames, fades.py).
            left_out = (cut_score or 0) > threshold or recorded["output"] is None
            figures[index] = {**recorded, **({"cut": True} if left_out else {})}
        elif index in measured:
            figures[index] = measured[index]
        elif budget_s is None or time.monotonic() - started < budget_s:
            result = measure(state, index, threshold)
            if result is not None:
                figures[index] = measured[index] = result
                new += 1
    if new:
        state.layout.files.mkdir(parents=True, exist_ok=True)
        pairs = {str(k): v for k, v in sorted(measured.items())}
        write_text(path, json.dumps({"key": key, "pairs": pairs}, separators=(",", ":")))
    return figures


def worst_pairs(figures: dict[int, dict], count: int = WORST) -> list[int]:
    """The pairs with the highest output flicker, scene cuts left out, worst first."""
    ranked = [(f["output"], i) for i, f in figures.items() if not f.get("cut") and f.get("output") is not None]
    return [i for _, i in sorted(ranked, reverse=True)[:count]]


def worst_thumbnails(state: VideoState, worst: list[int]) -> dict[int, tuple[Path | None, Path | None]]:
    """index -> (warped previous output, current output) thumbnails, made once each (by the job
    as the frame finished, report_frames, or here from the files); None where those are gone."""
    out, files, stylize = {}, state.layout.files, state.stylize_hash
    for index in worst:
        warped, current = warped_thumb(files, stylize, index), styled_thumb(files, stylize, index)
        make = lambda i=index: warped_rgb(state.layout.stylized(i - 1), state.layout.pair(i))  # noqa: E731
        out[index] = (
            warped if thumbnail_of(make, warped) else None,
            current if thumbnail(state.layout.stylized(index), current) else None,
        )
    return out
