"""The optimization objective as a module: image variable -> weighted loss terms, per image.

Composed from small modules in the manner of crowsonkb/style-transfer-pytorch: `LayerApply`
picks one activation out of the features, `Scale` weights a term, `SumLoss` adds terms up, and
`Objective` runs the network once and evaluates every named term on its features. Stylizer builds
one per scale (see stylize.Stylizer.objective); the optimization loop only calls it.

Every term keeps one value per image of the batch, so that batched images stay independent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from .color import chroma, gray, luminance, with_chroma
from .losses import StyleLoss
from .vgg import VGG19, layer_positions

# The key under which the RGB output (0..1) sits beside the network's activations: TV and the
# extra terms (the temporal loss) are measured on the image, not on features.
IMAGE = "image"

Features = dict[str, torch.Tensor]


class Scale(nn.Module):
    """weight x term. The weight is a Python number, as in the original expressions; a CUDA
    graph records it as a constant, which it is for the life of an objective."""

    def __init__(self, module: Callable, weight: float):
        super().__init__()
        self.module, self.weight = module, weight

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}"

    def forward(self, *args) -> torch.Tensor:
        return self.weight * self.module(*args)


class LayerApply(nn.Module):
    """A loss applied to one entry of the features (a VGG layer, or IMAGE)."""

    def __init__(self, module: Callable, layer: str):
        super().__init__()
        self.module, self.layer = module, layer

    def extra_repr(self) -> str:
        return f"layer={self.layer!r}"

    def forward(self, features: Features) -> torch.Tensor:
        return self.module(features[self.layer])


class SumLoss(nn.ModuleList):
    """The sum of the terms, in order (Python's sum, so 0 + t_1 + t_2 + ...), on the features or, for
    the temporal terms, on the image."""

    def forward(self, features: Features) -> torch.Tensor:
        return sum(term(features) for term in self)


class RGB(nn.Module):
    """The variable is the RGB image itself; VGG sees it as it is."""

    def variable_from(self, image: torch.Tensor) -> torch.Tensor:
        return image

    def vgg_input(self, variable: torch.Tensor) -> torch.Tensor:
        return variable

    def forward(self, variable: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what VGG sees, the RGB output)."""
        return variable, variable


class LuminanceOnly(nn.Module):
    """Luminance-only transfer (Gatys et al. 2016, colour preservation): the variable is Y, VGG
    sees it as a grey image, and the output's colour (I and Q) comes from the content."""

    def __init__(self, content: torch.Tensor):
        super().__init__()
        self.register_buffer("content_chroma", chroma(content))  # once, not per iteration

    def variable_from(self, image: torch.Tensor) -> torch.Tensor:
        return luminance(image)

    def vgg_input(self, variable: torch.Tensor) -> torch.Tensor:
        return gray(variable)

    def forward(self, variable: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what VGG sees, the RGB output)."""
        return gray(variable), with_chroma(variable, self.content_chroma)


class Network(nn.Module):
    """The feature network as the loop runs it: channels-last on CUDA, and under bf16 autocast
    for the network only (the losses and Gram matrices accumulate in fp32, see losses.py)."""

    def __init__(self, vgg: VGG19, autocast_dtype: torch.dtype | None, *, channels_last: bool):
        super().__init__()
        self.vgg, self.autocast_dtype, self.channels_last = vgg, autocast_dtype, channels_last

    def forward(self, image: torch.Tensor) -> Features:
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        dtype = self.autocast_dtype
        # No cast cache: it lives for one forward pass anyway, and CUDA graph capture forbids it.
        enabled = dtype is not None
        with torch.autocast(image.device.type, dtype=dtype or torch.float32, enabled=enabled, cache_enabled=False):
            return self.vgg(image)


class Objective(nn.Module):
    """variable -> {term name: weighted loss per image}, the terms in the order given."""

    def __init__(self, render: RGB | LuminanceOnly, network: Network, terms: dict[str, nn.Module]):
        super().__init__()
        self.render, self.network = render, network
        self.terms = nn.ModuleDict(terms)

    @property
    def names(self) -> list[str]:
        return list(self.terms)

    def variable_from(self, image: torch.Tensor) -> torch.Tensor:
        """The optimization variable that starts from this RGB image (a new tensor)."""
        return self.render.variable_from(image).clone(memory_format=torch.contiguous_format)

    def image_of(self, variable: torch.Tensor) -> torch.Tensor:
        """The RGB output (0..1) that a variable stands for."""
        return self.render(variable)[1].clamp(0, 1)

    def forward(self, variable: torch.Tensor) -> dict[str, torch.Tensor]:
        vgg_input, image = self.render(variable)
        features = {**self.network(vgg_input), IMAGE: image}
        return {name: term(features) for name, term in self.terms.items()}


def style_term(targets: Sequence[torch.Tensor], layers: Sequence[str], layer_weights: Sequence[float]) -> SumLoss:
    """L_style = sum_l w_l E_l over the style layers (Gatys et al., eq. 5)."""
    return SumLoss(Scale(LayerApply(StyleLoss(t), layer), w) for t, layer, w in zip(targets, layers, layer_weights))


def texture_weights(
    layers: Sequence[str], weights: Sequence[float], targets: Sequence[torch.Tensor], height: int, width: int
) -> tuple[float, ...]:
    """Each style layer's weight times M / N where its M positions (for an output of height x
    width) are fewer than its N channels (the default; --full-layer-weights leaves the weights as
    they are). A Gram matrix over M < N positions has rank M and fixes the layer's features up to
    a rotation of the positions: a rearrangement of the style image's own, its layout rather than
    its texture. Optimized to the end (a video shot's first frame), such layers copy the style
    image and the picture is lost: at 64 px relu4_1 has 48 positions for 512 channels
    (docs/video-quality.md, "At small sizes the style image was copied"). At 512 px and above (up
    to 16:9) every layer has at least as many positions as channels: no change there. `targets`:
    the layers' Gram targets."""
    return tuple(
        weight * min(1.0, layer_positions(layer, height, width) / target.shape[-1])  # a Gram target is N x N
        for layer, weight, target in zip(layers, weights, targets)
    )


@torch.no_grad()
def blended_gram_targets(
    vgg: VGG19, styles: Iterable[torch.Tensor], weights: Sequence[float], layers: Sequence[str]
) -> list[torch.Tensor]:
    """Per layer, sum_i weights[i] x (per-position Gram matrix of style image i)."""
    targets = [0.0] * len(layers)
    for style, weight in zip(styles, weights):
        features = vgg(style)
        for i, layer in enumerate(layers):
            targets[i] = targets[i] + weight * StyleLoss.target_from(features[layer])
    return targets


class TermLog:
    """Each iteration's total and terms (summed over the batch), written into a buffer on the
    device without a host read, so that an iteration can be recorded as a CUDA graph; `read`
    brings the rows back in one transfer."""

    def __init__(self, names: Sequence[str], rows: int, device: torch.device):
        self.names = ["total", *names]
        self.rows = torch.zeros(rows, len(self.names), device=device, dtype=torch.float64)
        self.cursor = torch.zeros(1, dtype=torch.long, device=device)

    def write(self, total: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        row = torch.stack([total.double(), *(terms[name].sum().double() for name in self.names[1:])])
        self.rows.index_copy_(0, self.cursor, row.unsqueeze(0))
        self.cursor.add_(1)

    def read(self, count: int) -> list[dict[str, float]]:
        """The `count` rows written since the last read. A host-device synchronisation."""
        values = self.rows[:count].tolist()
        self.cursor.zero_()
        return [dict(zip(self.names, row)) for row in values]
