"""The optimization of Gatys, Ecker and Bethge (2016): pure torch, no file I/O, no printing.

`Stylizer` holds the feature network and the style targets (computed once per output size);
`Stylizer.stylize` optimizes an image coarse to fine and reports progress through a callback
(`Stylizer.stylize_within_memory`: the same, falling back to a coarser scale where the device runs
out of memory).
At each scale `Stylizer.objective` composes the loss (objective.py) and `Stylizer._optimize`
runs the loop. Start images and extra loss terms (the temporal term for video) come from the
caller; the settings and their defaults are in settings.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .color import gray, luminance, match_color_histogram, match_luminance
from .cudagraph import GraphedStep
from .devices import configure_precision, is_out_of_memory
from .errors import InputError
from .lbfgs import HISTORY_SIZE, BatchedLBFGS
from .losses import ContentLoss, RangeLoss, TVLoss
from .objective import (
    IMAGE,
    RGB,
    LayerApply,
    LuminanceOnly,
    Network,
    Objective,
    Scale,
    TermLog,
    blended_gram_targets,
    style_term,
)
from .settings import CONTENT_LAYER, MAX_ITERATIONS, MAX_SEED, PRESETS, STYLE_LAYERS, StyleSettings
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
    "Progress",
    "ProgressCallback",
    "StyleResult",
    "StyleSettings",
    "Stylizer",
    "blended_gram_targets",
    "resize_long_side",
    "resize_to",
    "scale_sizes",
    "split_iterations",
]

# alpha is given for an output of this many pixels (see Stylizer.objective).
REFERENCE_PIXELS = 512 * 512


@dataclass
class Progress:
    """One optimization step, as reported to the callback."""

    iteration: int  # 1-based, within this call
    iterations: int
    loss: float
    terms: dict[str, float]  # weighted loss terms: content, style, tv, plus any extra ones
    elapsed: float  # seconds since the start of this call
    scale: int = 1  # which coarse-to-fine scale (1-based) is being optimized
    scales: int = 1


@dataclass
class StyleResult:
    image: torch.Tensor  # (B, 3, H, W), RGB 0..1, on the stylizer's device
    history: list[dict] = field(default_factory=list)  # per iteration, summed over the batch
    iterations: int = 0
    per_image: list[dict] = field(default_factory=list)  # weighted loss terms of the result
    optimized_size: tuple[int, int] | None = None  # the finest scale optimized (see stylize)

    @property
    def final_terms(self) -> dict:
        """The result's loss terms summed over the batch."""
        totals: dict[str, float] = {}
        for record in self.per_image:
            for key, value in record.items():
                totals[key] = totals.get(key, 0.0) + value
        return totals


ProgressCallback = Callable[[Progress], None]
# An extra loss term: image -> per-image loss, already weighted (e.g. the temporal loss).
ExtraLoss = Callable[[torch.Tensor], torch.Tensor]


def resize_long_side(image: torch.Tensor, long_side: int) -> torch.Tensor:
    """Resize (B, 3, H, W) so that its longer side is `long_side`, keeping the aspect ratio."""
    h, w = image.shape[-2:]
    scale = long_side / max(h, w)
    return resize_to(image, (max(1, round(h * scale)), max(1, round(w * scale))))


def blend_weights(settings: StyleSettings, n_styles: int) -> list[float]:
    weights = list(settings.style_blend) or [1.0] * n_styles
    if len(weights) != n_styles:
        raise InputError(f"--style-blend has {len(weights)} weights for {n_styles} style images")
    total = sum(weights)
    return [w / total for w in weights]


MIN_SCALE_SIDE = 32  # VGG-19's relu5_1 needs a few positions at the coarsest scale


def scale_sizes(height: int, width: int, settings: StyleSettings) -> list[tuple[int, int]]:
    """Coarse-to-fine sizes ending at (height, width), each twice the one before."""
    long_side, short_side = max(height, width), min(height, width)
    count = settings.scales or 1 + max(0, math.ceil(math.log2(long_side / settings.multiscale_threshold)))
    count = max(1, min(count, 1 + int(math.log2(max(1, short_side / MIN_SCALE_SIDE)))))
    return [(round(height / 2**k), round(width / 2**k)) for k in reversed(range(count))]


def split_iterations(iterations: int, scales: int) -> list[int]:
    """Equal shares, the remainder to the coarsest (cheapest) scale."""
    scales = min(scales, iterations)
    shares = [iterations // scales] * scales
    shares[0] += iterations - sum(shares)
    return shares


def resize_to(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


@dataclass(frozen=True)
class EarlyStop:
    """Stop once the loss fell by less than `tolerance` (a fraction) over the last `window`
    iterations; a tolerance of 0 never stops. For warm-started video frames. With
    `style_tolerance`, only once the style term too fell by less than that over the window: where
    the content term is the larger (gravel.png's is ~15 times its style term at a frame's end) the
    total has stopped moving while the style term still falls, and a frame stopped there is
    visibly less styled (docs/video-quality.md, "Another style"). With `change`, stop also once the
    image moved by less than that many 0..255 levels per value on average over the last `window`
    iterations (issue 17: a rule on the image, not the loss; see ImageSettled)."""

    tolerance: float = 0.0
    window: int = 10
    change: float = 0.0
    style_tolerance: float = 0.0

    def reached(self, losses: Sequence[float], styles: Sequence[float] = ()) -> bool:
        """`losses`: the total loss of each iteration so far; `styles`: the style term's (none: an
        objective without one, which the style rule does not hold back)."""
        if not self.fell_less(losses, self.tolerance):
            return False
        return self.style_tolerance <= 0 or not styles or self.fell_less(styles, self.style_tolerance)

    def fell_less(self, values: Sequence[float], tolerance: float) -> bool:
        """Whether the last value is less than `tolerance` (a fraction) below the one `window` before."""
        if tolerance <= 0 or len(values) <= self.window:
            return False
        before, now = values[-self.window - 1], values[-1]
        return (before - now) / max(abs(before), 1e-30) < tolerance


class ImageSettled:
    """EarlyStop's rule on the image: at every `window`-th iteration (looked at where the loss is
    read back, so `window` should be a multiple of report_every), the mean absolute change of the
    optimized values since the last look, in 0..255 levels, against `change`. A loss can keep
    falling slowly while the picture no longer changes visibly."""

    def __init__(self, stop: EarlyStop):
        self.stop, self.snapshot = stop, None

    def reached(self, variable: torch.Tensor, iteration: int) -> bool:
        if self.stop.change <= 0 or iteration % self.stop.window:
            return False
        current = variable.detach()
        moved = None if self.snapshot is None else float((current - self.snapshot).abs().mean()) * 255  # SYNC
        self.snapshot = current.clone()
        return moved is not None and moved < self.stop.change


@dataclass(kw_only=True)
class _Run:
    """What one `stylize` call hands to the optimization of each of its scales."""

    iterations: int  # over all scales
    result: StyleResult
    callback: ProgressCallback | None = None
    stop: EarlyStop = EarlyStop()  # the default: all iterations
    history_size: int = HISTORY_SIZE  # L-BFGS's curvature pairs
    scales: int = 1
    scale: int = 1  # 1-based, the one being optimized
    started: float = field(default_factory=time.perf_counter)

    def report(self, records: list[dict[str, float]], done: int) -> list[dict[str, float]]:
        """Add the records of this scale's iterations done+1, done+2, ... to the history and tell
        the callback about the last one; returns them as the history holds them ("loss" and each
        term's). A non-finite loss (bf16 overflow) raises FloatingPointError."""
        result = self.result
        for iteration, record in enumerate(records, start=done + 1):
            loss = record.pop("total")
            if not math.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss} at iteration {iteration}")
            result.history.append({"iteration": result.iterations + iteration, "loss": loss, **record})
        if self.callback is not None:
            elapsed = time.perf_counter() - self.started
            iteration += result.iterations
            event = Progress(iteration, self.iterations, loss, record, elapsed, scale=self.scale, scales=self.scales)
            self.callback(event)
        return result.history[-len(records) :]


class ProjectedAdam:
    """Adam (Kingma and Ba) on the image, projected back onto the 0..1 box after every step."""

    def __init__(self, variable: torch.Tensor, *, lr: float):
        self.variable = variable
        self.adam = torch.optim.Adam([variable], lr=lr)

    def update(self, grad: torch.Tensor) -> None:
        self.variable.grad = grad
        self.adam.step()
        self.variable.grad = None
        with torch.no_grad():
            self.variable.clamp_(0, 1)


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
        self.blend = blend_weights(settings, len(styles))
        layers = (settings.content_layer, *settings.style_layers)
        self.vgg = (vgg or load_vgg19(settings.weights, layers=layers, pooling=settings.pooling)).to(self.device)
        self.styles = [s.to(self.device, torch.float32) for s in styles]
        self._style_targets: dict[int, list[torch.Tensor]] = {}
        self.autocast_dtype = configure_precision(self.device, settings.precision)
        self.channels_last = self.device.type == "cuda"
        if self.channels_last:
            self.vgg = self.vgg.to(memory_format=torch.channels_last)

    def _style_image(self, style: torch.Tensor, long_side: int, content: torch.Tensor | None) -> torch.Tensor:
        style = resize_long_side(style, long_side)
        if content is None:
            return style
        if self.settings.preserve_color == "histogram":
            return match_color_histogram(style, content)
        return gray(match_luminance(luminance(style), luminance(content)))

    def style_targets(self, height: int, width: int, content: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Blended per-position Gram matrices for an output of this size, one row per image.

        They are computed once per style size, except under colour preservation, where the style image
        is first matched to each content image (one extra forward pass per image)."""
        long_side = max(16, round(self.settings.style_scale * max(height, width)))
        # The targets depend on the output only through the style image's size.
        key = long_side
        per_content = self.settings.preserve_color != "none" and content is not None
        if not per_content and key in self._style_targets:
            return self._style_targets[key]
        references = [content[i : i + 1] for i in range(content.shape[0])] if per_content else [None]
        targets = [
            blended_gram_targets(  # fp32: no autocast here
                self.vgg,
                [self._style_image(style, long_side, reference) for style in self.styles],
                self.blend,
                self.settings.style_layers,
            )
            for reference in references
        ]
        stacked = [torch.cat(layer_targets) for layer_targets in zip(*targets)]
        if not per_content:
            self._style_targets[key] = stacked
        return stacked

    def objective(self, content: torch.Tensor, extra_losses: dict[str, ExtraLoss] | None = None) -> Objective:
        """The loss for stylizing `content` (B, 3, H, W) at its size: per image, the weighted
        content, style and TV terms of Gatys et al. and the given extra terms, in that order."""
        s = self.settings
        h, w = content.shape[-2:]
        render = LuminanceOnly(content) if s.preserve_color == "luminance" else RGB()
        with torch.no_grad():  # fp32: no autocast for the targets
            content_features = self.vgg(render.vgg_input(render.variable_from(content)))[s.content_layer].float()
        # Departure: alpha is scaled by REFERENCE_PIXELS / (H W), so that the content/style
        # balance (and the look) does not change with the output size; the paper's sum grows with M.
        content_weight = s.content_weight * REFERENCE_PIXELS / (h * w)
        style_targets = self.style_targets(h, w, content)
        terms = {
            "content": Scale(LayerApply(ContentLoss(content_features), s.content_layer), content_weight),
            "style": Scale(style_term(style_targets, s.style_layers, s.style_layer_weights), s.style_weight),
        }
        if s.tv_weight:
            terms["tv"] = Scale(LayerApply(TVLoss(), IMAGE), s.tv_weight)
        if s.range_weight:  # the picture is clipped to 0..1 when saved: optimize what will be kept
            terms["range"] = Scale(LayerApply(RangeLoss(), IMAGE), s.range_weight)
        for name, extra in (extra_losses or {}).items():
            terms[name] = LayerApply(extra, IMAGE)  # already weighted
        return Objective(render, Network(self.vgg, self.autocast_dtype, channels_last=self.channels_last), terms)

    def initial_image(self, content: torch.Tensor, init: torch.Tensor | None) -> torch.Tensor:
        if init is not None:
            init = resize_to(init.to(self.device, torch.float32), tuple(content.shape[-2:]))
            return init.clamp(0, 1).expand_as(content).contiguous()
        if self.settings.init == "noise":
            # The same noise for every image of a batch: what each would get on its own.
            generator = torch.Generator().manual_seed(self.settings.seed)
            noise = torch.rand((1, *content.shape[1:]), generator=generator)
            return noise.expand_as(content).contiguous().to(self.device)
        if self.settings.init == "image":
            raise InputError("--init image needs an init image")
        return content.clone(memory_format=torch.contiguous_format)

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
    ) -> StyleResult:
        """Optimize an image (B, 3, H, W), RGB 0..1, to carry the style and keep the content.

        Large outputs are optimized coarse to fine (see scale_sizes); a given `init` (a warm
        start) is already a good start, so it is refined at full size only. `iterations` (default:
        the settings') are shared by the scales. `extra_losses` apply at full size. The loss is
        read back from the device (a synchronisation) and `callback` called every `report_every`
        iterations (the Stylizer's) and at the end. With `stop`, the optimization stops early once
        the loss fell by less than its tolerance, or the image moved less than its change, over its
        window (EarlyStop; for warm-started video frames). L-BFGS keeps `history_size` curvature
        pairs (two image-sized buffers each)."""
        content = content.to(self.device, torch.float32).contiguous()
        sizes = [tuple(content.shape[-2:])] if init is not None else scale_sizes(*content.shape[-2:], self.settings)
        iterations = self.settings.iterations if iterations is None else iterations
        run = _Run(
            iterations=iterations, result=StyleResult(image=content), callback=callback, stop=stop or EarlyStop(),
            history_size=history_size,
        )  # fmt: skip
        self._run_scales(content, sizes, init, extra_losses, run)
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
            run = _Run(iterations=self.settings.iterations, result=StyleResult(image=content), callback=callback)
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

    def _run_scales(self, content, sizes, init, extra_losses, run: _Run) -> None:
        """The coarse-to-fine loop; result.image and result.optimized_size follow each scale."""
        result, full_size = run.result, tuple(content.shape[-2:])
        shares = split_iterations(run.iterations, len(sizes))
        sizes = sizes[len(sizes) - len(shares) :]
        torch.manual_seed(self.settings.seed)
        image = init
        run.started, run.scales = time.perf_counter(), len(sizes)
        for index, (size, share) in enumerate(zip(sizes, shares), start=1):
            run.scale = index
            scaled = resize_to(content, size)
            image = self.initial_image(scaled, image)
            objective = self.objective(scaled, extra_losses if size == full_size else None)
            recorded = len(result.history)
            try:
                image = self._optimize(objective, image, share, run)
            except FloatingPointError:
                if objective.network.autocast_dtype is None:
                    raise
                # bf16 overflowed somewhere: redo this scale in fp32 (later calls try bf16 again).
                del result.history[recorded:]
                objective.network.autocast_dtype = None
                image = self._optimize(objective, image, share, run)
            result.image, result.optimized_size = image, tuple(size)

    def _optimize(self, objective: Objective, start: torch.Tensor, iterations: int, run: _Run) -> torch.Tensor:
        """Optimize one scale from `start` for up to `iterations`; returns the image, RGB 0..1.

        The host waits for the device at two points only, both marked SYNC: reading the loss log
        back at each report, and scoring the result."""
        # Set-up: the variable (the image, or its luminance) and the optimizer's state.
        variable = objective.variable_from(start).requires_grad_(True)
        if self.settings.optimizer == "lbfgs":
            # One curvature history per image, so that batchmates do not influence each other.
            optimizer = BatchedLBFGS(variable, lr=1, history_size=run.history_size)
        else:
            optimizer = ProjectedAdam(variable, lr=self.settings.learning_rate)
        log = TermLog(objective.names, min(self.report_every, iterations), self.device)

        def iteration() -> None:
            # Forward, backward and update, only queued on the device (what a CUDA graph records).
            with torch.enable_grad():
                terms = objective(variable)
                total = sum(t.sum() for t in terms.values())
                (grad,) = torch.autograd.grad(total, variable)
            optimizer.update(grad)
            log.write(total.detach(), terms)

        graphs = self.settings.cuda_graphs and self.settings.optimizer == "lbfgs" and self.device.type == "cuda"
        step = GraphedStep(iteration, enabled=graphs)
        losses: list[float] = []
        styles: list[float] = []  # the style term's, for EarlyStop's style_tolerance
        settled = ImageSettled(run.stop)
        try:
            for i in range(1, iterations + 1):
                # Step (with --cuda-graphs: one graph replay).
                step()
                if i % self.report_every and i != iterations:
                    continue
                # Report. SYNC: the log of the iterations since the last report comes back in one read.
                records = run.report(log.read(i - len(losses)), len(losses))
                losses += [record["loss"] for record in records]
                styles += [record["style"] for record in records]  # every objective has a style term
                # Early stop: the loss (and the style term) hardly fell, or the image hardly moved,
                # over the last window.
                if run.stop.reached(losses, styles) or settled.reached(variable, i):
                    iterations = i
                    break
        finally:
            step.close()
        run.result.iterations += iterations
        # Score the returned image itself (the history holds each iteration's starting loss).
        variable = variable.detach().clamp(0, 1)
        with torch.no_grad():
            final = objective(variable)
        total = sum(final.values())
        run.result.per_image = [  # SYNC: float()
            {"loss": float(total[i]), **{k: float(v[i]) for k, v in final.items()}} for i in range(variable.shape[0])
        ]
        return objective.image_of(variable)
