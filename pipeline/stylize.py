"""The optimization of Gatys, Ecker and Bethge (2016): pure torch, no file I/O, no printing.

`Stylizer` holds the feature network and the style targets (style_targets.py);
`Stylizer.stylize` optimizes an image coarse to fine and reports progress through a callback
(`Stylizer.stylize_within_memory`: the same, falling back to a coarser scale where the device runs
out of memory).
At each scale `Stylizer.objective` composes the loss (objective.py) and optimize.py runs the
loop. Start images and extra loss terms (the temporal term for video) come from the
caller; the settings and their defaults are in settings.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch

from .devices import configure_precision, is_out_of_memory
from .errors import InputError
from .images import resize_to
from .lbfgs import HISTORY_SIZE
from .losses import ContentLoss, RangeLoss, TVLoss
from .objective import (
    IMAGE,
    RGB,
    LayerApply,
    LuminanceOnly,
    Network,
    Objective,
    Scale,
    style_term,
    texture_weights,
)
from .optimize import EarlyStop, OptimizationRun, ProgressCallback, StyleResult, optimize
from .settings import CONTENT_LAYER, MAX_ITERATIONS, MAX_SEED, MIN_SCALE_SIDE, PRESETS, STYLE_LAYERS, StyleSettings
from .style_targets import StyleTargets
from .vgg import VGG19, load_vgg19

# Also imported from here by the CLI, the video and archive jobs, the evaluator and the tests.
__all__ = [
    "CONTENT_LAYER",
    "MAX_ITERATIONS",
    "MAX_SEED",
    "PRESETS",
    "REFERENCE_PIXELS",
    "STYLE_LAYERS",
    "ExtraLoss",
    "StyleSettings",
    "Stylizer",
    "scale_sizes",
    "split_iterations",
]

# alpha is given for an output of this many pixels (see Stylizer.objective).
REFERENCE_PIXELS = 512 * 512


# An extra loss term: image -> per-image loss, already weighted (e.g. the temporal loss).
ExtraLoss = Callable[[torch.Tensor], torch.Tensor]


def scale_sizes(
    height: int, width: int, settings: StyleSettings, frame_size: tuple[int, int] | None = None
) -> list[tuple[int, int]]:  # fmt: skip
    """Coarse-to-fine sizes ending at (height, width), each twice the one before; as many as for
    `frame_size` (H, W) where the image is the picture cropped from that frame (letterbox.py), as
    far as the picture can be halved."""
    long_side, short_side = max(frame_size or (height, width)), min(height, width)
    count = settings.scales or 1 + max(0, math.ceil(math.log2(long_side / settings.multiscale_threshold)))
    count = max(1, min(count, 1 + int(math.log2(max(1, short_side / MIN_SCALE_SIDE)))))
    return [(round(height / 2**k), round(width / 2**k)) for k in reversed(range(count))]


def split_iterations(iterations: int, scales: int) -> list[int]:
    """Equal shares, the remainder to the coarsest (cheapest) scale."""
    scales = min(scales, iterations)
    shares = [iterations // scales] * scales
    shares[0] += iterations - sum(shares)
    return shares


def initial_image(content: torch.Tensor, init: torch.Tensor | None, settings: StyleSettings) -> torch.Tensor:
    """Where the optimization of `content` (B, 3, H, W) starts: `init` resized to it (a warm start,
    or the previous scale's result), else by --init: noise, or the content itself."""
    if init is not None:
        init = resize_to(init.to(content.device, torch.float32), tuple(content.shape[-2:]))
        return init.clamp(0, 1).expand_as(content).contiguous()
    if settings.init == "noise":
        # The same noise for every image of a batch: what each would get on its own.
        generator = torch.Generator().manual_seed(settings.seed)
        noise = torch.rand((1, *content.shape[1:]), generator=generator)
        return noise.expand_as(content).contiguous().to(content.device)
    if settings.init == "image":
        raise InputError("--init image needs an init image")
    return content.clone(memory_format=torch.contiguous_format)


class Stylizer:
    """The feature network and style targets for one job; stylizes any number of images."""

    def __init__(
        self,
        styles: Sequence[torch.Tensor],
        settings: StyleSettings,
        *,
        device: torch.device | str = "cpu",
        vgg: VGG19 | None = None,
        report_every: int | None = None,
    ):
        if not styles:
            raise InputError("at least one style image is needed")
        self.settings = settings
        self.device = torch.device(device)
        # How often `stylize` reads the loss back from the device (a synchronisation) and calls its
        # callback: every iteration on the CPU, where reading it costs nothing, every 10 on a GPU.
        self.report_every = report_every or (1 if self.device.type == "cpu" else 10)
        layers = (settings.content_layer, *settings.style_layers)
        self.vgg = (vgg or load_vgg19(settings.weights, layers=layers, pooling=settings.pooling)).to(self.device)
        self.styles = [s.to(self.device, torch.float32) for s in styles]
        self.autocast_dtype = configure_precision(self.device, settings.precision)
        self.channels_last = self.device.type == "cuda"
        if self.channels_last:
            self.vgg = self.vgg.to(memory_format=torch.channels_last)
        # style_targets(height, width, content): computed once per size (style_targets.py).
        self.style_targets = StyleTargets(self.vgg, self.styles, settings)

    def objective(
        self, content: torch.Tensor, extra_losses: dict[str, ExtraLoss] | None = None,
        frame_size: tuple[int, int] | None = None,
    ) -> Objective:  # fmt: skip
        """The loss for stylizing `content` (B, 3, H, W) at its size: per image, the weighted
        content, style and TV terms of Gatys et al. and the given extra terms, in that order.
        `frame_size` (H, W): that of the frame `content` was cropped from (letterbox.py): the style
        image is scaled and the style layers weighed as for that frame, so that cropping its black
        bars off changes the work and not the look (default: `content`'s own)."""
        s = self.settings
        h, w = content.shape[-2:]
        frame_h, frame_w = frame_size or (h, w)
        render = LuminanceOnly(content) if s.preserve_color == "luminance" else RGB()
        with torch.no_grad():  # fp32: no autocast for the targets
            content_features = self.vgg(render.vgg_input(render.variable_from(content)))[s.content_layer].float()
        # Departure: alpha is scaled by REFERENCE_PIXELS / (H W), so that the content/style
        # balance (and the look) does not change with the output size; the paper's sum grows with M.
        content_weight = s.content_weight * REFERENCE_PIXELS / (h * w)
        style_targets = self.style_targets(frame_h, frame_w, content)
        layer_weights = s.style_layer_weights
        if not s.full_layer_weights:  # under 512 px the deep layers' Gram matrices would copy the style image
            layer_weights = texture_weights(s.style_layers, layer_weights, style_targets, frame_h, frame_w)
        terms = {
            "content": Scale(LayerApply(ContentLoss(content_features), s.content_layer), content_weight),
            "style": Scale(style_term(style_targets, s.style_layers, layer_weights), s.style_weight),
        }
        if s.tv_weight:
            terms["tv"] = Scale(LayerApply(TVLoss(), IMAGE), s.tv_weight)
        if s.range_weight:  # the picture is clipped to 0..1 when saved: optimize what will be kept
            terms["range"] = Scale(LayerApply(RangeLoss(), IMAGE), s.range_weight)
        for name, extra in (extra_losses or {}).items():
            terms[name] = LayerApply(extra, IMAGE)  # already weighted
        return Objective(render, Network(self.vgg, self.autocast_dtype, channels_last=self.channels_last), terms)

    def stylize(
        self,
        content: torch.Tensor,
        *,
        init: torch.Tensor | None = None,
        iterations: int | None = None,
        extra_losses: dict[str, ExtraLoss] | None = None,
        callback: ProgressCallback | None = None,
        stop: EarlyStop | None = None,
        history_size: int = HISTORY_SIZE,
        frame_size: tuple[int, int] | None = None,
    ) -> StyleResult:
        """Optimize an image (B, 3, H, W), RGB 0..1, to carry the style and keep the content.

        Large outputs are optimized coarse to fine (see scale_sizes); a given `init` (a warm
        start) is already a good start, so it is refined at full size only. `iterations` (default:
        the settings') are shared by the scales. `extra_losses` apply at full size. The loss is
        read back from the device (a synchronisation) and `callback` called every `report_every`
        iterations (the Stylizer's) and at the end. With `stop`, the optimization stops early once
        the loss fell by less than its tolerance, or the image moved less than its change, over its
        window (EarlyStop; for warm-started video frames). L-BFGS keeps `history_size` curvature
        pairs (two image-sized buffers each). `frame_size`: that of the frame `content` is the
        picture of (`objective`)."""
        content = content.to(self.device, torch.float32).contiguous()
        full_size = tuple(content.shape[-2:])
        sizes = [full_size] if init is not None else scale_sizes(*full_size, self.settings, frame_size)
        iterations = self.settings.iterations if iterations is None else iterations
        run = OptimizationRun(
            iterations=iterations, result=StyleResult(image=content), callback=callback, stop=stop or EarlyStop(),
            history_size=history_size,
        )  # fmt: skip
        self._run_scales(content, sizes, init, extra_losses, run, frame_size=frame_size)
        return run.result

    def stylize_within_memory(
        self, content: torch.Tensor, *, init: torch.Tensor | None = None, callback: ProgressCallback | None = None
    ) -> StyleResult:
        """`stylize` with the settings' iterations, where running out of device memory at a fine
        scale keeps the last scale that fitted, upsampled to the full size, and at the coarsest
        scale adds a coarser one; `result.optimized_size` tells how far it got. (The image command,
        and an archive's batch of one.) A warm start (`init`) is optimized at full size only: its
        out-of-memory error is raised."""
        if init is not None:
            return self.stylize(content, init=init, callback=callback)
        content = content.to(self.device, torch.float32).contiguous()
        full_size = tuple(content.shape[-2:])
        sizes = scale_sizes(*full_size, self.settings)
        while True:
            run = OptimizationRun(
                iterations=self.settings.iterations, result=StyleResult(image=content), callback=callback
            )
            try:
                self._run_scales(content, sizes, None, None, run)
                return run.result
            except (RuntimeError, MemoryError) as exc:
                if not is_out_of_memory(exc):
                    raise
                error = exc.with_traceback(None)  # the traceback would keep the failed scale's tensors
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if run.result.optimized_size is not None:
                run.result.image = resize_to(run.result.image, full_size)
                return run.result
            coarser = tuple(max(1, side // 2) for side in sizes[0])
            if min(coarser) < MIN_SCALE_SIDE:
                raise error
            sizes = [coarser, *sizes]

    def _run_scales(self, content, sizes, init, extra_losses, run: OptimizationRun, frame_size=None) -> None:
        """The coarse-to-fine loop; result.image and result.optimized_size follow each scale (and
        `frame_size`, that of the frame `content` was cropped from, with it)."""
        result, full_size = run.result, tuple(content.shape[-2:])
        shares = split_iterations(run.iterations, len(sizes))
        sizes = sizes[len(sizes) - len(shares) :]
        torch.manual_seed(self.settings.seed)
        image = init
        run.started, run.scales = time.perf_counter(), len(sizes)
        for index, (size, share) in enumerate(zip(sizes, shares), start=1):
            run.scale = index
            scaled = resize_to(content, size)
            image = initial_image(scaled, image, self.settings)
            frame = frame_size and tuple(round(side * size[0] / full_size[0]) for side in frame_size)
            objective = self.objective(scaled, extra_losses if size == full_size else None, frame)
            recorded, loop = len(result.history), {"settings": self.settings, "report_every": self.report_every}
            try:
                image = optimize(objective, image, share, run, **loop)
            except FloatingPointError:
                if objective.network.autocast_dtype is None:
                    raise
                # bf16 overflowed somewhere: redo this scale in fp32 (later calls try bf16 again).
                del result.history[recorded:]
                objective.network.autocast_dtype = None
                image = optimize(objective, image, share, run, **loop)
            result.image, result.optimized_size = image, tuple(size)
