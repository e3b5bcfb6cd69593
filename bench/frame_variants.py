"""One warm frame of a finished video job run again under variants (not a test): how many
iterations it takes and where its style loss ends, by the evaluator of `stylize score`, as a
multiple of the job's own frame. For tracing where a clip's warm frames spend their iterations
(docs/video-quality.md, "The pan").

    python bench/frame_variants.py WORKDIR --frames 40,100 [--style samples/ihc.png]
        [--variants default,its=40,tol=0.01,start=bicubic+target=bicubic,tw=1.5e9,blur=1]

WORKDIR is a job's work directory that kept its frames and flow pairs (`--keep-frames`, as
bench/video_quality.py's jobs do). Each frame starts from the job's frame before it, as saved.
A variant is `default` or settings joined by `+`: `its` (the cap), `tol` (the stopping rule's
tolerance), `stol` (its tolerance on the style term, --stop-style-tolerance), `tw` (the temporal
weight), `start` and `target` (the warp's interpolation for the start and for the temporal
loss's target: bilinear, bicubic, nearest, or lanczos, OpenCV's 8x8 Lanczos), `blur` (the
temporal loss compares both images blurred by a Gaussian of this sigma, in pixels), `still=1`
(no motion at all: the frame before run again on its own content, from itself and held to it,
every pixel reliable: what the stopping rule costs a frame that has nothing to catch up),
`coarse` (up to this many iterations at half size first, under the same stopping rule, their
change upsampled bicubically and added to the start), `opt` (`lbfgs` or `adam`) and `lr` (Adam's
learning rate, in 0..1 pixel units). The rest is the job's own.
The temporal error printed is the mean masked squared difference to the target, 0..255 levels.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.flow import FramePair, warp  # noqa: E402
from pipeline.images import load_image, load_styles  # noqa: E402
from pipeline.losses import TemporalLoss  # noqa: E402
from pipeline.objective import Scale  # noqa: E402
from pipeline.optimize import EarlyStop  # noqa: E402
from pipeline.score import Scorer  # noqa: E402
from pipeline.settings import StyleSettings  # noqa: E402
from pipeline.stylize import Stylizer  # noqa: E402
from pipeline.temporal import StartPlan, warm_iterations  # noqa: E402
from pipeline.video_defaults import OWN_DEFAULTS, STOP_WINDOW  # noqa: E402


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur, the border repeated."""
    radius = max(1, round(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-t * t / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    channels = image.shape[1]
    rows = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    image = F.conv2d(F.pad(image, (radius, radius, 0, 0), mode="replicate"), rows, groups=channels)
    columns = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    return F.conv2d(F.pad(image, (0, 0, radius, radius), mode="replicate"), columns, groups=channels)


class BlurredTemporalLoss(TemporalLoss):
    """The temporal loss between the image and its target, both blurred: blind to the grain."""

    def __init__(self, warped: torch.Tensor, reliability: torch.Tensor, sigma: float):
        super().__init__(gaussian_blur(warped, sigma), reliability)
        self.sigma = sigma

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return super().forward(gaussian_blur(image, self.sigma))


def warp_by(image: torch.Tensor, flow_back: np.ndarray, mode: str) -> torch.Tensor:
    """pipeline.flow.warp, or OpenCV's Lanczos (which grid_sample does not have), the border repeated."""
    if mode != "lanczos":
        return warp(image, flow_back, mode=mode)
    h, w = flow_back.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    hwc = np.ascontiguousarray(image[0].permute(1, 2, 0).numpy())
    moved = cv2.remap(
        hwc, xs + flow_back[..., 0], ys + flow_back[..., 1], cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REPLICATE
    )
    return torch.from_numpy(moved).permute(2, 0, 1)[None]


@dataclasses.dataclass
class Variant:
    its: int
    tol: float
    tw: float
    stol: float = 0.0
    start: str = "bilinear"
    target: str = "bilinear"
    blur: float = 0.0
    still: int = 0
    coarse: int = 0
    opt: str = "lbfgs"
    lr: float = 0.0

    @classmethod
    def parse(cls, text: str, job: Variant) -> Variant:
        variant = dataclasses.replace(job)
        for part in text.split("+"):
            if part == "default":
                continue
            key, _, value = part.partition("=")
            field = {f.name: f for f in dataclasses.fields(cls)}.get(key)
            if field is None or not value:
                raise SystemExit(
                    f"{text}: {part!r} is not one of its=, tol=, stol=, tw=, start=, target=, blur=, still=, "
                    "coarse=, opt=, lr="
                )
            setattr(variant, key, {"str": str, "int": int, "float": float}[field.type](value))
        return variant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--frames", required=True, help="comma list of frame numbers (each after the first)")
    parser.add_argument("--variants", default="default,its=40")
    parser.add_argument("--style", type=Path, default=ROOT / "samples" / "ihc.png")
    args = parser.parse_args()
    work = args.workdir
    torch.manual_seed(0)
    recorded = json.loads((work / "job.json").read_text())["stages"]["stylize"]["settings"]
    names = {f.name for f in dataclasses.fields(StyleSettings)}
    settings = StyleSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items() if k in names})
    job = Variant(
        its=settings.iterations, tol=recorded.get("stop_tolerance") or 0.0, tw=recorded.get("temporal_weight", 0.0),
        stol=recorded.get("stop_style_tolerance", 0.0),
        start=recorded.get("warp", "bilinear"), target=recorded.get("warp", "bilinear"),
    )  # fmt: skip
    implied = {name: recorded.get(name, OWN_DEFAULTS[name]) for name in ("iterations_tracked", "tracked_share")}
    budget = StartPlan(iterations_first=1, iterations=settings.iterations, **implied)  # a warm frame's, at most
    history = recorded.get("lbfgs_history", 20)
    content_start = recorded.get("unreliable_start", "content") == "content"  # absent: the releases before's
    stylizers: dict[tuple[str, float], Stylizer] = {}  # by optimizer and learning rate, made once

    def stylizer_for(v: Variant) -> Stylizer:
        key = (v.opt, v.lr or settings.learning_rate)
        if key not in stylizers:
            own = dataclasses.replace(settings, optimizer=key[0], learning_rate=key[1])
            stylizers[key] = Stylizer(load_styles([args.style], own), own, device="cpu")
        return stylizers[key]

    score = Scorer([load_image(args.style)])
    for index in (int(x) for x in args.frames.split(",")):
        previous, content = (
            load_image(work / "styled" / f"{index - 1:06d}.png"),
            load_image(work / "frames" / f"{index:06d}.png"),
        )
        pair = FramePair.load(work / "flow" / f"{index:06d}.npz")
        reliability = torch.from_numpy(pair.reliability)[None, None]
        size = max(content.shape[-2:])
        own = score(load_image(work / "styled" / f"{index:06d}.png"), content, size=size)
        iterations = json.loads((work / "styled" / f"{index:06d}.json").read_text())["iterations"]
        print(f"frame {index}: the job's {iterations} iterations, style loss {own['style']:.4g}")
        its = warm_iterations(budget, float(pair.reliability.mean()))  # the job's budget for it
        for text in args.variants.split(","):
            v = Variant.parse(text, dataclasses.replace(job, its=its))
            frame, mask, reference = content, reliability, own["style"]
            if v.still:  # against the job's frame before, which it starts from
                frame, mask = load_image(work / "frames" / f"{index - 1:06d}.png"), torch.ones_like(reliability)
                init = target = previous
                reference = score(previous, frame, size=size)["style"]
            else:
                init = warp_by(previous, pair.flow_back, v.start).clamp(0, 1)
                target = warp_by(previous, pair.flow_back, v.target).clamp(0, 1)
            if content_start and not v.still:
                init = reliability * init + (1 - reliability) * content
            coarse_its = 0
            if v.coarse:  # a half-size pass first; its change, upsampled, added to the start
                half = tuple(max(1, side // 2) for side in frame.shape[-2:])
                small_frame, small_init, small_target, small_mask = (
                    F.interpolate(t, size=half, mode="area") for t in (frame, init, target, mask)
                )
                term = TemporalLoss(small_target, small_mask)
                coarse = stylizer_for(v).stylize(
                    small_frame, init=small_init, iterations=v.coarse,
                    extra_losses={"temporal": Scale(term, v.tw)} if v.tw > 0 else {},
                    history_size=history, stop=EarlyStop(v.tol, STOP_WINDOW, style_tolerance=v.stol),
                )  # fmt: skip
                change = F.interpolate(coarse.image - small_init, size=frame.shape[-2:], mode="bicubic")
                init, coarse_its = (init + change).clamp(0, 1), coarse.iterations
            term = BlurredTemporalLoss(target, mask, v.blur) if v.blur else TemporalLoss(target, mask)
            extra = {"temporal": Scale(term, v.tw)} if v.tw > 0 else {}
            result = stylizer_for(v).stylize(
                frame, init=init, iterations=v.its, extra_losses=extra, history_size=history,
                stop=EarlyStop(v.tol, STOP_WINDOW, style_tolerance=v.stol),
            )  # fmt: skip
            image = (result.image.clamp(0, 1) * 255).round() / 255  # as saved
            loss = score(image, frame, size=size)["style"]
            error = ((image - target) * 255).pow(2).mul(mask).mean().item()
            print(
                f"  {text:40s} {result.iterations:4d} iterations  style {loss:.4g} "
                f"({loss / reference:.3f} of the job's)  temporal error {error:.2f}"
                + (f"  after {coarse_its} at half size" if v.coarse else ""),
                flush=True,
            )


if __name__ == "__main__":
    main()
