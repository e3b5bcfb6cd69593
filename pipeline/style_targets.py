"""The style targets of Gatys et al.: the style images' Gram matrices at each style layer, blended
across styles (--style-blend), for the size an output needs. The style image is resized to
--style-scale times the output's long side, so the targets are computed once per long side and
shared by every output with it; under colour preservation the style image is first matched to
each content image (one extra forward pass per image).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .color import gray, luminance, match_color_histogram, match_luminance
from .errors import InputError
from .images import resize_long_side
from .objective import blended_gram_targets
from .settings import StyleSettings
from .vgg import VGG19


def blend_weights(settings: StyleSettings, n_styles: int) -> list[float]:
    weights = list(settings.style_blend) or [1.0] * n_styles
    if len(weights) != n_styles:
        raise InputError(f"--style-blend has {len(weights)} weights for {n_styles} style images")
    total = sum(weights)
    return [w / total for w in weights]


class StyleTargets:
    """`targets(height, width, content)`: the blended per-position Gram matrices for an output of
    that size, one row per content image, computed with `vgg` in fp32 (no autocast)."""

    def __init__(self, vgg: VGG19, styles: Sequence[torch.Tensor], settings: StyleSettings):
        self.vgg, self.styles, self.settings = vgg, styles, settings
        self.blend = blend_weights(settings, len(styles))
        self.cache: dict[int, list[torch.Tensor]] = {}  # by the style image's long side

    def __call__(self, height: int, width: int, content: torch.Tensor | None = None) -> list[torch.Tensor]:
        long_side = max(16, round(self.settings.style_scale * max(height, width)))
        # The targets depend on the output only through the style image's size.
        per_content = self.settings.preserve_color != "none" and content is not None
        if not per_content and long_side in self.cache:
            return self.cache[long_side]
        references = [content[i : i + 1] for i in range(content.shape[0])] if per_content else [None]
        targets = [
            blended_gram_targets(  # fp32: no autocast here
                self.vgg,
                [self.style_image(style, long_side, reference) for style in self.styles],
                self.blend,
                self.settings.style_layers,
            )
            for reference in references
        ]
        stacked = [torch.cat(layer_targets) for layer_targets in zip(*targets)]
        if not per_content:
            self.cache[long_side] = stacked
        return stacked

    def style_image(self, style: torch.Tensor, long_side: int, content: torch.Tensor | None) -> torch.Tensor:
        """The style image at `long_side`, matched to `content`'s colours under colour preservation."""
        style = resize_long_side(style, long_side)
        if content is None:
            return style
        if self.settings.preserve_color == "histogram":
            return match_color_histogram(style, content)
        return gray(match_luminance(luminance(style), luminance(content)))
