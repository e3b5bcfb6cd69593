"""The loss terms of Gatys et al. (2016) and Ruder et al. (2016), one small module each.

Every loss returns one value per image of the batch, so that batched images stay independent.
"""

from __future__ import annotations

import torch
from torch import nn


def accumulation(x: torch.Tensor) -> torch.Tensor:
    """At least fp32: bf16/fp16 activations are accumulated in fp32, float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """G_ij = sum_k F_ik F_jk for each image: (B, N, H, W) -> (B, N, N), accumulated in fp32."""
    flat = accumulation(features.flatten(2))
    return torch.bmm(flat, flat.transpose(1, 2))


class ContentLoss(nn.Module):
    """L_content = 1/2 sum_ij (F_ij - P_ij)^2 against the content image's features P."""

    def __init__(self, target: torch.Tensor):
        super().__init__()
        self.register_buffer("target", accumulation(target.detach()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return 0.5 * (accumulation(features) - self.target).pow(2).flatten(1).sum(1)


class StyleLoss(nn.Module):
    """E_l = 1/(4 N^2 M^2) sum_ij (G_ij - A_ij)^2.

    The target is stored per position (A / M_style) and compared with G / M: identical to the paper
    when style and output have the same size, and still meaningful when they do not.
    """

    def __init__(self, target_gram_per_position: torch.Tensor):
        super().__init__()
        self.register_buffer("target", accumulation(target_gram_per_position.detach()))

    @staticmethod
    def target_from(features: torch.Tensor) -> torch.Tensor:
        return gram_matrix(features) / (features.shape[2] * features.shape[3])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        n, m = features.shape[1], features.shape[2] * features.shape[3]
        gram = gram_matrix(features) / m
        return (gram - self.target).pow(2).sum((1, 2)) / (4 * n**2)


class TVLoss(nn.Module):
    """Total variation: squared differences of neighbouring pixels of the 0..1 image."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        dy = (image[:, :, 1:, :] - image[:, :, :-1, :]).pow(2).flatten(1).sum(1)
        dx = (image[:, :, :, 1:] - image[:, :, :, :-1]).pow(2).flatten(1).sum(1)
        return dx + dy


class RangeLoss(nn.Module):
    """How far the image lies outside the 0..1 a saved picture can hold: 1/D sum_k e_k^2, e_k the
    excess of value k beyond 0 or 1 in 0..255 levels, D = C x H x W (a mean, as TemporalLoss's, so
    that its weight means the same at every size).

    Unconstrained, L-BFGS draws the texture's peaks out of range: on a cold 128 px frame (300
    iterations) 1% of the values, and clipping them for saving raised the style term by 30%. Held in
    range, the optimizer finds a texture a saved picture can show: that frame's saved style term
    came out 26% lower by the evaluator (docs/video-quality.md).
    """

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        image = accumulation(image)
        return ((image - image.clamp(0, 1)) * 255.0).pow(2).flatten(1).mean(1)


class TemporalLoss(nn.Module):
    """L_temporal = 1/D sum_k c_k (x_k - w_k)^2 (Ruder et al.), w the warped previous output and
    D = C x H x W, the number of values, as in Ruder et al."""

    def __init__(self, warped: torch.Tensor, reliability: torch.Tensor):
        super().__init__()
        self.register_buffer("warped", accumulation(warped.detach()))
        # The mask is per pixel; broadcast it over the colour channels.
        reliability = reliability.detach().to(self.warped.dtype).expand_as(self.warped).contiguous()
        self.register_buffer("reliability", reliability)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # Measured on the 0..255 scale the paper's images use, so its weights carry over.
        diff = (accumulation(image) - self.warped) * 255.0
        return (self.reliability * diff.pow(2)).flatten(1).sum(1) / diff[0].numel()
