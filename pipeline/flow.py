"""Optical flow between content frames (OpenCV DIS), reliability masks, warping, scene cuts and
the flicker metric, after Ruder, Dosovitskiy and Brox, "Artistic style transfer for videos" (2016).

Conventions: frames are RGB uint8 arrays (H, W, 3). `flow_back[y, x]` is the displacement from a
pixel of the current frame to where it was in the previous frame, so that
prev[y + flow_back[y, x, 1], x + flow_back[y, x, 0]] ~ cur[y, x]; warping the previous frame
with it brings it onto the current frame.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .atomic import atomic_path
from .video_defaults import FLOW_PRESETS

# OpenCV's codes for the preset names the options take (video_defaults, which loads no OpenCV).
DIS_PRESETS = dict(
    zip(
        FLOW_PRESETS,
        (cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, cv2.DISOPTICAL_FLOW_PRESET_FAST, cv2.DISOPTICAL_FLOW_PRESET_MEDIUM),
        strict=True,
    )
)


@dataclass
class FramePair:
    """What the stylizer needs to carry frame i-1 over to frame i."""

    flow_back: np.ndarray  # (H, W, 2) float32, current -> previous
    reliability: np.ndarray  # (H, W) float32 in 0..1; 0 where the warp cannot be trusted
    cut_score: float  # 0..1; above the scene threshold this pair is a scene cut
    colours: float | None = None  # the colours' part of the cut score (not saved: the cut scan's)

    @property
    def unreliable(self) -> float:
        """The flow's part of the cut score: the share of the pixels it fails."""
        return 1.0 - float(self.reliability.mean())

    def save(self, path: Path | str) -> None:
        """Atomic: a temporary file beside `path`, renamed when complete."""
        with atomic_path(Path(path)) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, flow_back=self.flow_back, reliability=self.reliability, cut_score=self.cut_score)

    @classmethod
    def load(cls, path: Path | str) -> FramePair:
        with np.load(path) as data:
            return cls(data["flow_back"], data["reliability"], float(data["cut_score"]))

    @staticmethod
    def load_cut_score(path: Path | str) -> float:
        """The cut score alone: npz members are read lazily, so the flow is not decompressed."""
        with np.load(path) as data:
            return float(data["cut_score"])


def dis_flow(source: np.ndarray, target: np.ndarray, preset: str = "medium") -> np.ndarray:
    """Dense flow f with source[y, x] ~ target[(y, x) + f[y, x]] (DIS on grey levels)."""
    dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
    gray_source = cv2.cvtColor(source, cv2.COLOR_RGB2GRAY)
    gray_target = cv2.cvtColor(target, cv2.COLOR_RGB2GRAY)
    return dis.calc(gray_source, gray_target, None)


@functools.lru_cache(maxsize=4)
def pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's x and y (float32, read-only), made once per frame size: every pair of a job
    samples or confines at the same size (two 8 MB arrays a 1080p frame)."""
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    grid_x.setflags(write=False)
    grid_y.setflags(write=False)
    return grid_x, grid_y


def _sample(field: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """field(x + flow(x)), bilinear, with the border replicated."""
    grid_x, grid_y = pixel_grid(*flow.shape[:2])
    return cv2.remap(
        field, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def reliability_mask(flow_back: np.ndarray, flow_forward: np.ndarray, *, smooth: float = 1.0) -> np.ndarray:
    """1 where the previous frame can be trusted at x + flow_back(x), 0 where not (Ruder et al.):
    - the forward-backward check fails: |w + w_f(x + w)|^2 > 0.01 (|w|^2 + |w_f(x + w)|^2) + 0.5,
    - a motion boundary: |grad w_f(x + w)|^2 > 0.01 |w_f(x + w)|^2 + 0.002,
    - or x + w leaves the frame;
    with w = flow_back and w_f the forward flow (previous -> current). Lightly smoothed."""
    h, w = flow_back.shape[:2]
    forward_at = _sample(flow_forward, flow_back)
    round_trip = np.sum((flow_back + forward_at) ** 2, axis=2)
    magnitudes = np.sum(flow_back**2, axis=2) + np.sum(forward_at**2, axis=2)
    consistent = round_trip <= 0.01 * magnitudes + 0.5
    du_y, du_x = np.gradient(forward_at[..., 0])
    dv_y, dv_x = np.gradient(forward_at[..., 1])
    gradient = du_x**2 + du_y**2 + dv_x**2 + dv_y**2
    not_boundary = gradient <= 0.01 * np.sum(forward_at**2, axis=2) + 0.002
    grid_x, grid_y = np.meshgrid(np.arange(w), np.arange(h))
    target_x, target_y = grid_x + flow_back[..., 0], grid_y + flow_back[..., 1]
    # Half a pixel of slack: a border pixel with a tiny outward flow still has a source.
    inside = (target_x >= -0.5) & (target_x <= w - 0.5) & (target_y >= -0.5) & (target_y <= h - 0.5)
    mask = (consistent & not_boundary & inside).astype(np.float32)
    if smooth > 0:
        # Smooth, but never let an unreliable pixel become trusted: take the minimum.
        mask = np.minimum(mask, cv2.GaussianBlur(mask, (0, 0), smooth))
    return mask


def colour_histogram(frame: np.ndarray) -> np.ndarray:
    """A frame's hue-saturation-value histogram, normalized: what histogram_distance compares."""
    hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [16, 8, 8], [0, 180, 0, 256, 0, 256])
    return cv2.normalize(hist, hist).flatten()


def histogram_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya distance (0 same, 1 disjoint) of two colour_histogram's."""
    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya distance (0 same, 1 disjoint) of the hue-saturation-value histograms."""
    return histogram_gap(colour_histogram(a), colour_histogram(b))


def frame_pair(previous: np.ndarray, current: np.ndarray, preset: str = "medium", *, lit: bool = False) -> FramePair:
    """Flow, reliability and a scene-cut score for two consecutive content frames. `lit`, for a
    flash's frame (cuts.py): the flow and reliability of `current` in the light of `previous`
    (match_light) where its checks trust more pixels than the flow of the frames as they are; the
    cut score is still that of the frames as they are."""
    pair = pair_of_flows(previous, current, dis_flow(current, previous, preset), dis_flow(previous, current, preset))
    if not lit:
        return pair
    moved = lit_pair(previous, current, preset)
    if moved.reliability.mean() <= pair.reliability.mean():
        return pair
    return FramePair(moved.flow_back, moved.reliability, pair.cut_score, pair.colours)


def lit_pair(previous: np.ndarray, current: np.ndarray, preset: str = "medium") -> FramePair:
    """The pair of `previous` and `current` brought into its light (match_light): what the flow
    makes of the picture whatever the change of light between them (a flash's, a fade's)."""
    matched = match_light(current, previous)
    return pair_of_flows(previous, matched, dis_flow(matched, previous, preset), dis_flow(previous, matched, preset))


def match_light(frame: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`frame` with each colour channel's mean and spread made `reference`'s: a flash's frame in
    the light of the frame before it, so that the flow follows the motion and not the light. DIS
    normalizes each patch's mean, not its contrast, and where a flash burns the highlights out its
    checks trust few pixels: 27% of the sample clip's at 64 px with one frame flashed (ffmpeg's
    eq, brightness +0.5, contrast 0.6), 77% with the light matched (95% between two frames
    without a flash). A flash that only scales and lifts the levels DIS follows as it is, and
    the stretch back amplifies the frame's noise: frame_pair keeps the better of the two."""
    frame, reference = frame.astype(np.float32), reference.astype(np.float32)
    spread = frame.std(axis=(0, 1)) + 1e-6
    matched = (frame - frame.mean(axis=(0, 1))) / spread * reference.std(axis=(0, 1)) + reference.mean(axis=(0, 1))
    return np.clip(matched, 0, 255).round().astype(np.uint8)


def pair_of_flows(
    previous: np.ndarray, current: np.ndarray, flow_back: np.ndarray, flow_forward: np.ndarray
) -> FramePair:
    """The pair of two frames given their flows either way, from DIS or from any other estimator."""
    reliability = reliability_mask(flow_back, flow_forward)
    # A cut shows as colours that change wholesale or as flow that cannot be trusted anywhere
    # (and so does a fast move: cuts.py tells them apart).
    colours = histogram_distance(previous, current)
    return FramePair(flow_back, reliability, max(colours, 1.0 - float(reliability.mean())), colours)


def warp(image: torch.Tensor, flow_back: np.ndarray | torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Bring the previous frame (B, C, H, W) onto the current one: image(x + flow_back(x)),
    interpolated by `mode` (grid_sample's: bilinear or bicubic)."""
    flow = torch.as_tensor(flow_back, dtype=torch.float32, device=image.device)
    h, w = flow.shape[:2]
    ys, xs = torch.meshgrid(torch.arange(h, device=image.device), torch.arange(w, device=image.device), indexing="ij")
    # grid_sample wants coordinates in -1..1, with align_corners=True mapping -1 and 1 to pixel centres.
    grid_x = (xs + flow[..., 0]) * (2 / max(w - 1, 1)) - 1
    grid_y = (ys + flow[..., 1]) * (2 / max(h - 1, 1)) - 1
    grid = torch.stack([grid_x, grid_y], dim=-1).unsqueeze(0).expand(image.shape[0], -1, -1, -1)
    return F.grid_sample(image.float(), grid, mode=mode, padding_mode="border", align_corners=True)


def to_tensor(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).unsqueeze(0).float() / 255


def warping_error(
    previous_output: np.ndarray, current_output: np.ndarray, pair: FramePair, mode: str = "bilinear"
) -> float:
    """Mean squared difference (0..255 scale) between the current output and the previous output
    warped onto it (by `mode`'s interpolation), over the reliable pixels. The bilinear warp, the
    measure of the video consistency literature, blurs what it moves by a fraction of a pixel: a
    fine texture carried exactly from frame to frame scores well above zero, and can score above
    one laid out anew near the blurred warp in each frame (docs/video-quality.md, "Flicker by the
    measure's interpolation")."""
    warped = warp(to_tensor(previous_output), pair.flow_back, mode=mode)
    diff = ((to_tensor(current_output) - warped) * 255).pow(2).sum(1)[0].numpy()
    weight = pair.reliability
    return float((weight * diff).sum() / max(weight.sum(), 1.0))


def flicker(
    outputs: Iterable[np.ndarray], pairs: Iterable[FramePair | None], scene_threshold: float, mode: str = "bilinear"
) -> float:
    """Mean masked warping error over consecutive frames, skipping scene cuts. pairs[i] carries
    frame i-1 to frame i (None: no pair, as for the first frame). Both may be generators: only two
    frames are held at a time, so long videos fit in memory."""
    errors, previous = [], None
    for output, pair in zip(outputs, pairs):
        if previous is not None and pair is not None and pair.cut_score <= scene_threshold:
            errors.append(warping_error(previous, output, pair, mode))
        previous = output
    return float(np.mean(errors)) if errors else 0.0
