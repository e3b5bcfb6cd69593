"""The settings of the method, each with its default and its limits, in one place: the CLI reads
its options and defaults from here, checkpoints hash them, and stylize.Stylizer runs them."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .errors import InputError
from .hashing import settings_hash

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYER = "relu4_2"
# The shortest side an image is stylized at, a coarse scale or a picture between bars: VGG-19's
# relu5_1 needs a few positions (a 32 px side leaves it 2).
MIN_SCALE_SIDE = 32
MAX_ITERATIONS = 1_000_000  # a typo guard: more would run for weeks
MAX_SEED = 2**64 - 1  # what torch.Generator.manual_seed takes
# 20 pairs reach the same loss as torch's 100 in our tests at a fifth of the memory (a pair is two
# image-sized buffers: 100 pairs of a 1920x1080 frame would take 5 GB). Video frames keep more
# (video_defaults.DEFAULT_LBFGS_HISTORY): a warm frame starts near its optimum, where the slow tail of
# the descent is what costs iterations, and 50 pairs model that tail better.
HISTORY_SIZE = 20  # L-BFGS's curvature pairs for an image (lbfgs.BatchedLBFGS)
# What every --device takes (devices.parse_devices).
DEVICE_HELP = "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"


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
    range_weight: float = 3e9  # losses.RangeLoss: keeps the image in 0..1 while it is optimized; 0: off
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
    # Every style layer at its weight at every size, as the releases before; by default a layer with
    # fewer positions than channels weighs that much less (objective.texture_weights)
    full_layer_weights: bool = False
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
        for name in ("content_weight", "style_weight", "tv_weight", "range_weight"):
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
    def from_preset(cls, preset: str, **overrides) -> StyleSettings:
        if preset not in PRESETS:
            raise InputError(f"--preset {preset!r}: must be one of {', '.join(PRESETS)}")
        return cls(**(PRESETS[preset] | overrides))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def checkpoint_dict(self) -> dict:
        """The settings as checkpoints hash them: every one, but range_weight where it is 0 (off)
        and full_layer_weights where it is on, as in the releases before them, so that a job begun
        with one of those resumes its finished work when run again with --range-weight 0
        --full-layer-weights."""
        values = self.to_dict()
        if not values["range_weight"]:
            del values["range_weight"]
        if values["full_layer_weights"]:  # as in the releases before it
            del values["full_layer_weights"]
        return values

    def hash(self, *, keys: Sequence[str] | None = None) -> str:
        """A stable hash of the settings (or of the named subset), for checkpoints."""
        values = self.checkpoint_dict()
        if keys is not None:
            for key in keys:
                getattr(self, key)  # a misspelt key raises; one omitted where off (range_weight) is skipped
            values = {k: values[k] for k in keys if k in values}
        return settings_hash(values)


# The settings whose defaults a release changed, each with the value a job's recorded settings
# imply where they leave it out (issue 17 turned the range term on and weighed down the style
# layers with fewer positions than channels; the releases before recorded neither). A rerun that
# leaves such an option unset goes on with the value the job began with, where that keeps its
# finished work valid (archive.keep_own_defaults, and for video with its own options,
# video_defaults.OWN_DEFAULTS): an upgrade does not redo hours of work for a default nobody asked
# to change.
OWN_DEFAULTS = {"range_weight": 0.0, "full_layer_weights": True}


def option_text(value: object) -> str:
    """An option's value as one would type it (3e+09, not 3000000000.0)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def option_given(name: str, value: object) -> str:
    """An option with its value as one would type it: --range-weight 0; a flag (off by default,
    cli_options) as --free-flashes, or "no --free-flashes" where it is off."""
    flag = name.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"no --{flag}"
    return f"--{flag} {option_text(value)}"


def resuming_text(kept: dict[str, tuple[object, object]], job: str, redo: str) -> str:
    """What a job resumed with the options it began with says (kept: name -> the value it began
    with, the default now): 'resuming with the settings the archive began with, --range-weight 0
    (the defaults now: 3e+09; give them to restyle its finished images)'."""
    began = ", ".join(option_given(name, value) for name, (value, _) in kept.items())
    now = [("on" if now else "off") if isinstance(now, bool) else option_text(now) for _, (_, now) in kept.items()]
    defaults = ", ".join(now)
    return (
        f"resuming with the settings the {job} began with, {began} (the defaults now: {defaults}; give them to {redo})"
    )


# Presets set iterations and the multi-scale schedule together; explicit options override them.
PRESETS: dict[str, dict] = {
    "fast": {"iterations": 100, "multiscale_threshold": 256},
    "balanced": {"iterations": StyleSettings.iterations, "multiscale_threshold": StyleSettings.multiscale_threshold},
    "quality": {"iterations": 1000, "multiscale_threshold": 512, "pooling": "avg"},
}
