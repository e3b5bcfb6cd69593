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

from .decode import extract_frames, frame_size, probe
from .errors import InputError
from .flow import DIS_PRESETS, warp
from .flowstage import FlowStage, measure_flicker
from .losses import TemporalLoss
from .video import DEFAULT_SCENE_THRESHOLD, STOP_WINDOW, FrameStart, FrameStore, WarmStart

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


def video_flicker(
    output: Path,
    *,
    reference: Path,
    size: int | None = None,
    preset: str = "medium",
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD,
    workers: int | None = None,
) -> dict:
    """`stylize flicker`: both videos decoded at the same frame size (the reference's aspect,
    `size` or the output's long side), flow and masks computed on the reference, and the mean
    masked warping error of the output and of the reference itself."""
    if preset not in DIS_PRESETS:
        raise InputError(f"--flow-preset {preset!r}: must be one of {', '.join(DIS_PRESETS)}")
    if size is not None and not 16 <= size <= 16384:
        raise InputError(f"--size {size}: must be between 16 and 16384 pixels")
    if not 0 <= scene_threshold <= 1:
        raise InputError(f"--scene-threshold {scene_threshold}: must be between 0 and 1")
    output_info, reference_info = probe(output), probe(reference)
    dims = frame_size(reference_info, size or max(output_info.width, output_info.height))
    with tempfile.TemporaryDirectory(prefix="stylize-flicker-") as tmp:
        folders = {"output": Path(tmp) / "output", "input": Path(tmp) / "input"}
        counts = {name: extract_frames(info, folders[name], size=dims) for name, info in (("output", output_info), ("input", reference_info))}
        if counts["output"] != counts["input"]:
            raise InputError(
                f"{output}: has {counts['output']} frames, {reference} has {counts['input']}; "
                "the reference must be the video the output was made from, over the same range"
            )
        if counts["input"] < 2:
            raise InputError(f"{reference}: one frame only, no motion to measure")
        with FlowStage(frames_dir=folders["input"], flow_dir=Path(tmp) / "flow", total=counts["input"], preset=preset, workers=workers) as flows:
            flows.start().finish()
        report = measure_flicker(flow_dir=Path(tmp) / "flow", sequences=folders, total=counts["input"], scene_threshold=scene_threshold, workers=workers)
    return report | {"frames": counts["input"], "width": dims[0], "height": dims[1], "flow_preset": preset}
