"""The evaluator: losses of a finished image under one fixed reference configuration, so that
results of different settings, versions or tools can be compared on the same scale.

Reference: fp32, the original VGG-19 with max pooling, the paper's losses without our size
normalization (L_content = 1/2 sum (F - P)^2 on relu4_2; L_style = sum_l 1/5 E_l on
relu1_1..relu5_1), every image resized to REFERENCE_SIZE on its long side, total = L_content +
1e3 L_style (the paper's alpha/beta = 1e-3). The style images are resized as the jobs load
theirs (images.resize_style, Lanczos), so that at the output's own size and --style-scale 1 the
style loss is the jobs' own style term (without beta): the figure the optimizer lowered.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .images import resize_long_side, resize_style, resize_to
from .losses import ContentLoss, StyleLoss
from .objective import blended_gram_targets
from .settings import CONTENT_LAYER, STYLE_LAYERS
from .vgg import VGG19, load_vgg19

REFERENCE_SIZE = 512
REFERENCE_BETA = 1e3


def reference_vgg() -> VGG19:
    return load_vgg19("original", layers=(CONTENT_LAYER, *STYLE_LAYERS), pooling="max")


class Scorer:
    """The evaluator for many images against the same style images: their Gram targets are
    computed once per scoring size and kept, so that scoring a video's frames costs two VGG passes
    a frame (the frame and its content), not three."""

    def __init__(
        self, styles: Sequence[torch.Tensor], *, blend: Sequence[float] | None = None, vgg: VGG19 | None = None
    ):
        self.vgg = vgg or reference_vgg()
        self.device = next(self.vgg.parameters()).device
        self.styles = list(styles)
        weights = list(blend) if blend else [1.0] * len(self.styles)
        self.blend = [w / sum(weights) for w in weights]
        self.targets: dict[int, list[torch.Tensor]] = {}

    @torch.no_grad()
    def style_targets(self, size: int) -> list[torch.Tensor]:
        if size not in self.targets:
            styles = [resize_style(style, size).to(self.device, torch.float32) for style in self.styles]
            self.targets[size] = blended_gram_targets(self.vgg, styles, self.blend, STYLE_LAYERS)
        return self.targets[size]

    @torch.no_grad()
    def __call__(self, output: torch.Tensor, content: torch.Tensor, *, size: int = REFERENCE_SIZE) -> dict[str, float]:
        """Images are (1, 3, H, W) RGB 0..1 of any size; the content is resized to the output's shape."""
        output = resize_long_side(output.to(self.device, torch.float32), size)
        content = resize_to(content.to(self.device, torch.float32), tuple(output.shape[-2:]))
        features = self.vgg(output)
        content_loss = ContentLoss(self.vgg(content)[CONTENT_LAYER])(features[CONTENT_LAYER]).item()
        style_loss = sum(
            StyleLoss(t)(features[layer]).item() / len(STYLE_LAYERS)
            for t, layer in zip(self.style_targets(size), STYLE_LAYERS)
        )
        return {"content": content_loss, "style": style_loss, "total": content_loss + REFERENCE_BETA * style_loss}


def reference_losses(
    output: torch.Tensor,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    *,
    blend: Sequence[float] | None = None,
    vgg: VGG19 | None = None,
    size: int = REFERENCE_SIZE,
) -> dict[str, float]:
    """One image's losses (a Scorer for one use); images are (1, 3, H, W) RGB 0..1 of any size."""
    return Scorer(styles, blend=blend, vgg=vgg)(output, content, size=size)
