"""The optimization of Gatys, Ecker and Bethge (2016): pure torch, no file I/O, no printing.

`Stylizer` holds the feature network and the style targets (computed once per output size);
`Stylizer.stylize` optimizes an image and reports progress through a callback. Start images and
extra loss terms (the temporal term for video) come from the caller.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import torch
import torch.nn.functional as F

from .color import chroma, gray, luminance, match_color_histogram, match_luminance, with_chroma
from .cudagraph import GraphedStep
from .devices import configure_precision, is_out_of_memory
from .errors import InputError
from .lbfgs import BatchedLBFGS
from .losses import ContentLoss, StyleLoss, TVLoss
from .vgg import VGG19, load_vgg19

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYER = "relu4_2"
# alpha is given for an output of this many pixels (see content_scale below).
REFERENCE_PIXELS = 512 * 512
MAX_ITERATIONS = 1_000_000  # a typo guard: more would run for weeks
MAX_SEED = 2**64 - 1  # what torch.Generator.manual_seed takes


@dataclass(frozen=True, kw_only=True)
class StyleSettings:
    """Every setting of the method with its default; the CLI reads its defaults from here."""

    size: int = 512  # long side of the output, in pixels
    iterations: int = 300
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    learning_rate: float = 0.02  # Adam only, in 0..1 pixel units
    content_weight: float = 1.0  # alpha
    style_weight: float = 1e4  # beta
    tv_weight: float = 0.0
    init: Literal["noise", "content", "image"] = "content"  # paper: noise
    style_scale: float = 1.0  # style image long side relative to the output's
    style_blend: tuple[float, ...] = ()  # one weight per style image; empty: equal
    pooling: Literal["max", "avg"] = "max"
    preserve_color: Literal["none", "luminance", "histogram"] = "none"
    scales: int = 0  # coarse-to-fine scales, each twice the size of the last; 0: automatic
    multiscale_threshold: int = 512  # automatic: one scale up to this long side, then add scales
    weights: str = "original"  # 'original', 'torchvision' or a path
    precision: Literal["auto", "fp32", "tf32", "bf16"] = "auto"  # auto: bf16 on CUDA, fp32 elsewhere
    cuda_graphs: bool = False  # replay each L-BFGS iteration as one CUDA graph (CUDA only)
    content_layer: str = CONTENT_LAYER
    style_layers: tuple[str, ...] = STYLE_LAYERS
    style_layer_weights: tuple[float, ...] = (0.2,) * len(STYLE_LAYERS)
    seed: int = 0

    def __post_init__(self):
        if self.size < 16 or self.size > 16384:
            raise InputError(f"--size {self.size}: must be between 16 and 16384 pixels")
        if not 1 <= self.iterations <= MAX_ITERATIONS:
            raise InputError(f"--iterations {self.iterations}: must be between 1 and {MAX_ITERATIONS}")
        if not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"--seed {self.seed}: must be between 0 and {MAX_SEED}")
        if self.optimizer not in ("lbfgs", "adam"):
            raise InputError(f"--optimizer {self.optimizer!r}: must be 'lbfgs' or 'adam'")
        if self.init not in ("noise", "content", "image"):
            raise InputError(f"--init {self.init!r}: must be 'noise', 'content' or an image path")
        if self.preserve_color not in ("none", "luminance", "histogram"):
            raise InputError(f"--preserve-color {self.preserve_color!r}: must be 'none', 'luminance' or 'histogram'")
        if not 0 <= self.scales <= 8:
            raise InputError(f"--scales {self.scales}: must be between 0 (automatic) and 8")
        if not 32 <= self.multiscale_threshold <= 16384:
            raise InputError(f"--multiscale-threshold {self.multiscale_threshold}: must be between 32 and 16384")
        if self.precision not in ("auto", "fp32", "tf32", "bf16"):
            raise InputError(f"--precision {self.precision!r}: must be auto, fp32, tf32 or bf16")
        if self.pooling not in ("max", "avg"):
            raise InputError(f"--pooling {self.pooling!r}: must be 'max' or 'avg'")
        for name in ("content_weight", "style_weight", "tv_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise InputError(f"--{name.replace('_', '-')} {value}: must be a finite number >= 0")
        if not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise InputError(f"--learning-rate {self.learning_rate}: must be > 0")
        if not math.isfinite(self.style_scale) or not 0.05 <= self.style_scale <= 8:
            raise InputError(f"--style-scale {self.style_scale}: must be between 0.05 and 8")
        if any(not math.isfinite(w) or w < 0 for w in self.style_blend) or (
            self.style_blend and sum(self.style_blend) <= 0
        ):
            raise InputError(f"--style-blend {self.style_blend}: weights must be >= 0 and not all 0")
        if len(self.style_layer_weights) != len(self.style_layers):
            raise InputError("one style layer weight is needed per style layer")

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "StyleSettings":
        if preset not in PRESETS:
            raise InputError(f"--preset {preset!r}: must be one of {', '.join(PRESETS)}")
        return cls(**(PRESETS[preset] | overrides))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self, *, keys: Sequence[str] | None = None) -> str:
        """A stable hash of the settings (or of the named subset), for checkpoints."""
        values = self.to_dict()
        if keys is not None:
            values = {k: values[k] for k in keys}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


# Presets set iterations and the multi-scale schedule together; explicit options override them.
PRESETS: dict[str, dict] = {
    "fast": {"iterations": 100, "multiscale_threshold": 256},
    "balanced": {"iterations": StyleSettings.iterations, "multiscale_threshold": StyleSettings.multiscale_threshold},
    "quality": {"iterations": 1000, "multiscale_threshold": 512, "pooling": "avg"},
}


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


@torch.no_grad()
def blended_gram_targets(vgg: VGG19, styles: Sequence[torch.Tensor], weights: Sequence[float], layers: Sequence[str]) -> list[torch.Tensor]:
    """Per layer, sum_i weights[i] x (per-position Gram matrix of style image i)."""
    targets = [0.0] * len(layers)
    for style, weight in zip(styles, weights):
        features = vgg(style)
        for i, layer in enumerate(layers):
            targets[i] = targets[i] + weight * StyleLoss.target_from(features[layer])
    return targets


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


class Stylizer:
    """The feature network and style targets for one job; stylizes any number of images."""

    def __init__(
        self,
        styles: Sequence[torch.Tensor],
        settings: StyleSettings,
        *,
        device: torch.device | str = "cpu",
        vgg: VGG19 | None = None,
    ):
        if not styles:
            raise InputError("at least one style image is needed")
        self.settings = settings
        self.device = torch.device(device)
        self.blend = blend_weights(settings, len(styles))
        layers = (settings.content_layer, *settings.style_layers)
        self.vgg = (vgg or load_vgg19(settings.weights, layers=layers, pooling=settings.pooling)).to(self.device)
        self.styles = [s.to(self.device, torch.float32) for s in styles]
        self._style_targets: dict[int, list[torch.Tensor]] = {}
        self.tv_loss = TVLoss()
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
                self.vgg, [self._style_image(style, long_side, reference) for style in self.styles], self.blend, self.settings.style_layers
            )
            for reference in references
        ]
        stacked = [torch.cat(layer_targets) for layer_targets in zip(*targets)]
        if not per_content:
            self._style_targets[key] = stacked
        return stacked

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
        report_every: int | None = None,
        stop_tolerance: float = 0.0,
        stop_window: int = 10,
        shrink_on_out_of_memory: bool = False,
    ) -> StyleResult:
        """Optimize an image (B, 3, H, W), RGB 0..1, to carry the style and keep the content.

        Large outputs are optimized coarse to fine (see scale_sizes); a given `init` (a warm
        start) is already a good start, so it is refined at full size only. `extra_losses` apply
        at full size. The loss is read back from the device (a synchronisation) and `callback`
        called every `report_every` iterations (default: 1 on CPU, 10 on a GPU) and at the end.
        With `stop_tolerance`, the optimization stops early once the loss fell by less than that
        fraction over the last `stop_window` iterations (for warm-started video frames).

        With `shrink_on_out_of_memory`, running out of memory at a fine scale keeps the last scale
        that fitted, upsampled to the full size, and at the coarsest scale adds a coarser one;
        `result.optimized_size` tells how far it got. Without it (or with `init`), the error is
        raised."""
        s = self.settings
        iterations = s.iterations if iterations is None else iterations
        content = content.to(self.device, torch.float32).contiguous()
        full_size = tuple(content.shape[-2:])
        sizes = [full_size] if init is not None else scale_sizes(*full_size, s)
        if report_every is None:
            report_every = 1 if self.device.type == "cpu" else 10
        stopping = (stop_tolerance, stop_window)
        while True:
            result = StyleResult(image=content)
            try:
                self._run_scales(content, sizes, iterations, init, extra_losses, callback, report_every, stopping, result)
                return result
            except (RuntimeError, MemoryError) as exc:
                if not (shrink_on_out_of_memory and init is None and is_out_of_memory(exc)):
                    raise
                error = exc.with_traceback(None)  # the traceback would keep the failed scale's tensors
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if result.optimized_size is not None:
                result.image = resize_to(result.image, full_size)
                return result
            coarser = tuple(max(1, side // 2) for side in sizes[0])
            if min(coarser) < MIN_SCALE_SIDE:
                raise error
            sizes = [coarser, *sizes]

    def _run_scales(self, content, sizes, iterations, init, extra_losses, callback, report_every, stopping, result) -> None:
        """The coarse-to-fine loop; result.image and result.optimized_size follow each scale."""
        full_size = tuple(content.shape[-2:])
        shares = split_iterations(iterations, len(sizes))
        sizes = sizes[len(sizes) - len(shares) :]
        torch.manual_seed(self.settings.seed)
        image = init
        start = time.perf_counter()
        for index, (size, share) in enumerate(zip(sizes, shares)):
            scaled = resize_to(content, size)
            image = self.initial_image(scaled, image)

            def report(event: Progress, index=index) -> None:
                event.iteration += result.iterations
                event.iterations, event.elapsed = iterations, time.perf_counter() - start
                event.scale, event.scales = index + 1, len(sizes)
                if callback is not None:
                    callback(event)

            extras = extra_losses if size == full_size else None
            recorded = len(result.history)
            try:
                image = self._optimize(scaled, image, share, extras, report, result, report_every, stopping, self.autocast_dtype)
            except FloatingPointError:
                if self.autocast_dtype is None:
                    raise
                # bf16 overflowed somewhere: redo this scale in fp32 (later calls try bf16 again).
                del result.history[recorded:]
                image = self._optimize(scaled, image, share, extras, report, result, report_every, stopping, None)
            result.image, result.optimized_size = image, tuple(size)

    def _optimize(
        self,
        content: torch.Tensor,
        start: torch.Tensor,
        iterations: int,
        extra_losses: dict[str, ExtraLoss] | None,
        callback: ProgressCallback,
        result: StyleResult,
        report_every: int,
        stopping: tuple[float, int],
        autocast_dtype: torch.dtype | None,
    ) -> torch.Tensor:
        s = self.settings
        b, _, h, w = content.shape
        luminance_only = s.preserve_color == "luminance"
        content_chroma = chroma(content) if luminance_only else None  # once, not per iteration
        with torch.no_grad():
            content_loss = ContentLoss(self.vgg(gray(luminance(content)) if luminance_only else content)[s.content_layer].float())
        style_losses = [StyleLoss(t) for t in self.style_targets(h, w, content)]
        # Departure: alpha is scaled by REFERENCE_PIXELS / (H W), so that the content/style
        # balance (and the look) does not change with the output size; the paper's sum grows with M.
        content_scale = s.content_weight * REFERENCE_PIXELS / (h * w)
        extra_losses = extra_losses or {}

        def render(variable: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(what VGG sees, the RGB output): under luminance-only transfer the variable is Y,
            and the colour comes from the content (Gatys et al. 2016, colour preservation)."""
            if luminance_only:
                return gray(variable), with_chroma(variable, content_chroma)
            return variable, variable

        def features_of(vgg_input: torch.Tensor) -> dict[str, torch.Tensor]:
            if self.channels_last:
                vgg_input = vgg_input.contiguous(memory_format=torch.channels_last)
            # bf16 for the network only: the losses and Gram matrices are accumulated in fp32.
            # No cast cache: it lives for one forward pass anyway, and CUDA graph capture forbids it.
            with torch.autocast(self.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None, cache_enabled=False):
                return self.vgg(vgg_input)

        def loss_terms(variable: torch.Tensor) -> dict[str, torch.Tensor]:
            vgg_input, rgb = render(variable)
            features = features_of(vgg_input)
            terms = {
                "content": content_scale * content_loss(features[s.content_layer]),
                "style": s.style_weight
                * sum(lw * loss(features[layer]) for lw, loss, layer in zip(s.style_layer_weights, style_losses, s.style_layers)),
            }
            if s.tv_weight:
                terms["tv"] = s.tv_weight * self.tv_loss(rgb)
            for name, extra in extra_losses.items():
                terms[name] = extra(rgb)
            return terms

        variable = (luminance(start) if luminance_only else start).clone(memory_format=torch.contiguous_format)
        variable.requires_grad_(True)
        # Each iteration writes its loss terms into `log` on the device; read back once per report.
        names = ["total", "content", "style", *(["tv"] if s.tv_weight else []), *extra_losses]
        log = torch.zeros(min(report_every, iterations), len(names), device=self.device, dtype=torch.float64)
        cursor = torch.zeros(1, dtype=torch.long, device=self.device)

        def log_terms(total: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
            row = torch.stack([total.double(), *(terms[name].sum().double() for name in names[1:])])
            log.index_copy_(0, cursor, row.unsqueeze(0))
            cursor.add_(1)

        if s.optimizer == "lbfgs":
            # One curvature history per image, so that batchmates do not influence each other.
            optimizer = BatchedLBFGS(variable, lr=1)

            def iteration() -> None:
                with torch.enable_grad():
                    terms = loss_terms(variable)
                    total = sum(t.sum() for t in terms.values())
                    (grad,) = torch.autograd.grad(total, variable)
                optimizer.update(grad)
                log_terms(total.detach(), terms)

        else:
            adam = torch.optim.Adam([variable], lr=s.learning_rate)

            def iteration() -> None:
                adam.zero_grad(set_to_none=True)
                with torch.enable_grad():
                    terms = loss_terms(variable)
                    total = sum(t.sum() for t in terms.values())
                    total.backward()
                adam.step()
                with torch.no_grad():
                    variable.clamp_(0, 1)
                log_terms(total.detach(), terms)

        graphs = s.cuda_graphs and s.optimizer == "lbfgs" and self.device.type == "cuda"
        step = GraphedStep(iteration, enabled=graphs)
        recent: list[float] = []
        tolerance, window = stopping
        reported = 0
        try:
            for i in range(1, iterations + 1):
                step()
                if i % report_every and i != iterations:
                    continue
                # One synchronisation for all iterations since the last report.
                values = log[: i - reported].tolist()
                cursor.zero_()
                for offset, row in enumerate(values, start=reported + 1):
                    record = dict(zip(names, row))
                    total = record.pop("total")
                    if not math.isfinite(total):
                        raise FloatingPointError(f"the loss became {total} at iteration {offset}")
                    result.history.append({"iteration": result.iterations + offset, "loss": total, **record})
                    recent.append(total)
                reported = i
                callback(Progress(i, iterations, total, record, 0.0))
                if tolerance > 0 and len(recent) > window:
                    change = (recent[-window - 1] - recent[-1]) / max(abs(recent[-window - 1]), 1e-30)
                    if change < tolerance:
                        iterations = i
                        break
        finally:
            step.close()
        result.iterations += iterations
        variable = variable.detach().clamp(0, 1)
        # The history holds each iteration's starting loss; score the returned image itself.
        with torch.no_grad():
            final = loss_terms(variable)
        total = sum(final.values())
        result.per_image = [
            {"loss": float(total[i]), **{k: float(v[i]) for k, v in final.items()}} for i in range(b)
        ]
        return render(variable)[1].clamp(0, 1)
