"""How each video frame starts, after Ruder, Dosovitskiy and Brox (2016), and the flicker of a
finished video.

`--flow dis`: the previous stylized frame is warped onto the current one by the backward optical
flow of the content frames; where the flow cannot be trusted (occlusions, motion boundaries,
pixels from outside the frame) the content frame fills in. The optimization starts there and
adds `--temporal-weight` x TemporalLoss against the warped frame, so that the reliable pixels
stay put while the occluded ones are free to take the style. A pair whose cut score exceeds
`--scene-threshold` starts a new shot: first-frame iterations from --init, no temporal term.
`--flow none` is the plain warm start of video.WarmStart; `--flow independent` stylizes every
frame on its own (the baseline flicker is measured against).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .decode import VideoInfo, extract_frames, frame_size, probe
from .errors import InputError
from .flow import DIS_PRESETS, warp
from .flowstage import FlowStage, measure_flicker
from .losses import TemporalLoss
from .video import DEFAULT_SCENE_THRESHOLD, STOP_WINDOW, FrameStart, FrameStore, WarmStart, check_range

if TYPE_CHECKING:
    from .video import VideoJob


class IndependentStart(WarmStart):
    """Every frame from --init with --iterations-first: each frame is its own shot."""

    name = "independent"

    def settings(self) -> dict:
        return {"warm_start": self.name, "iterations_first": self.iterations_first}

    def start(self, index: int, content: torch.Tensor, previous: torch.Tensor | None, store: FrameStore) -> FrameStart:
        return FrameStart(self.init_image, self.iterations_first, source="init")


class FlowWarmStart(WarmStart):
    """The previous stylized frame warped by the optical flow, plus the masked temporal loss."""

    name = "flow"
    uses_flow = True  # the stylize stage's hash includes the flow stage's

    def __init__(
        self,
        *,
        iterations_first: int,
        iterations: int,
        init_image: torch.Tensor | None = None,
        temporal_weight: float,
        scene_threshold: float,
        stop_tolerance: float = 0.0,
        device: torch.device | str = "cpu",
    ):
        super().__init__(iterations_first=iterations_first, iterations=iterations, init_image=init_image, stop_tolerance=stop_tolerance)
        self.temporal_weight = temporal_weight
        self.scene_threshold = scene_threshold
        self.device = torch.device(device)

    def settings(self) -> dict:
        return super().settings() | {"temporal_weight": self.temporal_weight, "scene_threshold": self.scene_threshold}

    def start(self, index: int, content: torch.Tensor, previous: torch.Tensor | None, store: FrameStore) -> FrameStart:
        if previous is None:
            return FrameStart(self.init_image, self.iterations_first, source="init")
        waited = time.perf_counter()
        pair = store.pair(index)
        # Seconds the device sat idle for the flow stage: near 0 unless the CPUs are far too slow.
        waited = round(time.perf_counter() - waited, 3)
        if pair.cut_score > self.scene_threshold:
            return FrameStart(self.init_image, self.iterations_first, source="cut", stats={"cut_score": round(pair.cut_score, 4), "flow_wait": waited})
        # On the stylizer's device: the warp and the blend are a few kernels there.
        previous, content = previous.to(self.device, torch.float32), content.to(self.device, torch.float32)
        warped = warp(previous, pair.flow_back)
        reliability = torch.from_numpy(pair.reliability).to(self.device)[None, None]
        init = reliability * warped + (1 - reliability) * content
        extra_losses = {}
        if self.temporal_weight > 0:
            extra_losses["temporal"] = WeightedLoss(TemporalLoss(warped, reliability), self.temporal_weight)
        stats = {"cut_score": round(pair.cut_score, 4), "reliable": round(float(pair.reliability.mean()), 4), "flow_wait": waited}
        return FrameStart(init, self.iterations, extra_losses, source="warped", stop_tolerance=self.stop_tolerance, stop_window=STOP_WINDOW, stats=stats)


class WeightedLoss:
    """weight x loss(image): the core takes extra terms already weighted."""

    def __init__(self, loss: torch.nn.Module, weight: float):
        self.loss, self.weight = loss, weight

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.weight * self.loss(image)


def make_starter(job: "VideoJob", *, init_image: torch.Tensor | None, device: torch.device | str) -> WarmStart:
    """The frame starter for the job's --flow."""
    first, iterations = job.first_iterations, job.settings.iterations
    if job.flow == "independent":
        return IndependentStart(iterations_first=first, iterations=iterations, init_image=init_image)
    if job.flow == "none":
        return WarmStart(iterations_first=first, iterations=iterations, init_image=init_image, stop_tolerance=job.stop_tolerance)
    return FlowWarmStart(
        iterations_first=first, iterations=iterations, init_image=init_image, temporal_weight=job.temporal_weight,
        scene_threshold=job.scene_threshold, stop_tolerance=job.stop_tolerance, device=device,
    )  # fmt: skip


def range_text(start: float, duration: float | None, every_nth: int) -> str:
    """The part of a video that --start, --duration and --every-nth select, in words; empty for all of it."""
    parts = []
    if start:
        parts.append(f"from {start:g} s")
    if duration is not None:
        parts.append(f"for {duration:g} s")
    if every_nth > 1:
        parts.append(f"1 frame in {every_nth}")
    return ", ".join(parts)


def frame_count_mismatch(output: Path, output_info: VideoInfo, output_frames: int, reference: Path, reference_info: VideoInfo, reference_frames: int, *, start: float, duration: float | None, every_nth: int) -> str:
    """One line: both files and counts, and which options would make them match."""
    ratio = reference_info.rate / output_info.rate
    step = round(ratio)
    hint = ""
    if step > 1 and step != every_nth and abs(ratio - step) <= 0.01 * step:
        hint = f" (the frame rates suggest --every-nth {step})"
    part = range_text(start, duration, every_nth)
    return (
        f"{output}: has {output_frames} frames at {float(output_info.rate):.4g} fps, {reference} has {reference_frames} at "
        f"{float(reference_info.rate):.4g} fps ({part or 'the whole video'}); give stylize flicker "
        f"the video the output was made from and the --start, --duration and --every-nth stylize video was given{hint}"
    )


def video_flicker(
    output: Path,
    *,
    reference: Path,
    size: int | None = None,
    preset: str = "medium",
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD,
    workers: int | None = None,
    start: float = 0.0,
    duration: float | None = None,
    every_nth: int = 1,
) -> dict:
    """`stylize flicker`: both videos decoded at the same frame size (the reference's aspect,
    `size` or the output's long side), flow and masks computed on the reference, and the mean
    masked warping error of the output and of the reference itself.

    The reference is decoded over the part the output was made from: `start`, `duration` and
    `every_nth` as `stylize video` was given them, through the same extract_frames as the video
    job, so its frames are exactly the job's content frames. The output's timestamps cannot tell
    that part: `stylize video` writes its frames from 0 s whatever --start was, and a re-encoded
    output may have another rate; so the user says, and differing counts are refused."""
    if preset not in DIS_PRESETS:
        raise InputError(f"--flow-preset {preset!r}: must be one of {', '.join(DIS_PRESETS)}")
    if size is not None and not 16 <= size <= 16384:
        raise InputError(f"--size {size}: must be between 16 and 16384 pixels")
    if not 0 <= scene_threshold <= 1:
        raise InputError(f"--scene-threshold {scene_threshold}: must be between 0 and 1")
    check_range(start, duration, every_nth)
    output_info, reference_info = probe(output), probe(reference)
    if start >= reference_info.duration:
        raise InputError(f"--start {start:g}: {reference} is only {reference_info.duration:.2f} s long")
    dims = frame_size(reference_info, size or max(output_info.width, output_info.height))
    with tempfile.TemporaryDirectory(prefix="stylize-flicker-") as tmp:
        folders = {"output": Path(tmp) / "output", "input": Path(tmp) / "input"}
        counts = {
            "input": extract_frames(reference_info, folders["input"], size=dims, start=start, duration=duration, every_nth=every_nth),
            "output": extract_frames(output_info, folders["output"], size=dims),
        }
        if counts["output"] != counts["input"]:
            raise InputError(
                frame_count_mismatch(
                    output, output_info, counts["output"], reference, reference_info, counts["input"], start=start, duration=duration, every_nth=every_nth
                )
            )
        if counts["input"] < 2:
            raise InputError(f"{reference}: one frame only ({range_text(start, duration, every_nth) or 'all of it'}), no motion to measure")
        with FlowStage(frames_dir=folders["input"], flow_dir=Path(tmp) / "flow", total=counts["input"], preset=preset, workers=workers) as flows:
            flows.start().finish()
        report = measure_flicker(flow_dir=Path(tmp) / "flow", sequences=folders, total=counts["input"], scene_threshold=scene_threshold, workers=workers)
    return report | {
        "frames": counts["input"], "width": dims[0], "height": dims[1], "flow_preset": preset,
        "start": start, "duration": duration, "every_nth": every_nth,
    }  # fmt: skip
