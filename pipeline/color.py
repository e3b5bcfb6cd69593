"""Colour preservation, after Gatys et al. (2016) "Preserving color in neural artistic style
transfer": luminance-only transfer (YIQ) and colour histogram matching (mean and covariance)."""

from __future__ import annotations

import functools

import torch

# NTSC YIQ; rows give Y, I, Q from R, G, B in 0..1.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


_MATRICES = {"rgb_to_yiq": _RGB_TO_YIQ, "yiq_to_rgb": _YIQ_TO_RGB}


@functools.cache
def _matrix(name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Copied to each device once: a copy per call would make every iteration wait for the GPU.
    return _MATRICES[name].to(device, dtype)


def _apply(name: str, image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", _matrix(name, image.device, image.dtype), image)


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    return _apply("rgb_to_yiq", image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return _apply("yiq_to_rgb", image)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) Y."""
    return rgb_to_yiq(image)[:, :1]


def gray(y: torch.Tensor) -> torch.Tensor:
    """A luminance channel as a grey RGB image, for VGG."""
    return y.expand(-1, 3, -1, -1)


def chroma(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 2, H, W) I and Q."""
    return rgb_to_yiq(image)[:, 1:]


def with_chroma(y: torch.Tensor, iq: torch.Tensor) -> torch.Tensor:
    """Combine luminance `y` with chroma channels `iq` (from `chroma`) into RGB."""
    return yiq_to_rgb(torch.cat([y, iq.expand(y.shape[0], -1, -1, -1)], 1))


def match_luminance(style_y: torch.Tensor, content_y: torch.Tensor) -> torch.Tensor:
    """Shift and scale the style's luminance to the content's mean and spread (paper, sec. 2.2)."""
    s_mean, s_std = style_y.mean(), style_y.std().clamp(min=1e-6)
    return ((style_y - s_mean) * (content_y.std() / s_std) + content_y.mean()).clamp(0, 1)


def _sqrtm(cov: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(cov)
    values = values.clamp(min=1e-8).sqrt()
    if inverse:
        values = 1 / values
    return vectors @ torch.diag(values) @ vectors.T


def match_color_histogram(source: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Linearly transform the colours of `source` so that their mean and covariance equal those of
    `reference` (both (1, 3, H, W) RGB 0..1): x' = C_r^1/2 C_s^-1/2 (x - mu_s) + mu_r."""
    src = source.flatten(2)[0].double()  # (3, P)
    ref = reference.flatten(2)[0].double()
    mu_s, mu_r = src.mean(1, keepdim=True), ref.mean(1, keepdim=True)
    eye = 1e-5 * torch.eye(3, dtype=torch.float64, device=src.device)
    cov_s = torch.cov(src) + eye
    cov_r = torch.cov(ref) + eye
    transform = _sqrtm(cov_r) @ _sqrtm(cov_s, inverse=True)
    out = transform @ (src - mu_s) + mu_r
    return out.float().view_as(source).clamp(0, 1)
