"""The optimization loop's reporting, early stopping and precision fallback."""

import pytest
import torch

from pipeline.images import load_image
from pipeline.stylize import StyleSettings, Stylizer


@pytest.fixture(scope="module")
def stylizer():
    style = load_image("samples/ihc.png", 32)
    return Stylizer([style], StyleSettings(iterations=12))


@pytest.fixture(scope="module")
def content():
    return load_image("samples/chelsea.png", 32)


def test_reports_every_n_iterations_but_records_all(stylizer, content):
    events = []
    result = stylizer.stylize(content, report_every=5, callback=events.append)
    assert [e.iteration for e in events] == [5, 10, 12]
    assert [h["iteration"] for h in result.history] == list(range(1, 13))
    every = stylizer.stylize(content)
    # Reporting less often changes nothing in the optimization itself.
    assert torch.equal(every.image, result.image)
    assert [h["loss"] for h in every.history] == [h["loss"] for h in result.history]


def test_early_stopping_on_small_relative_change(stylizer, content):
    # A tolerance of 100% stops as soon as one window has been seen.
    result = stylizer.stylize(content, iterations=30, stop_tolerance=1.0, stop_window=3)
    assert result.iterations == 4
    assert len(result.history) == 4
    # A tolerance of 0 never stops early.
    assert stylizer.stylize(content, iterations=6, stop_tolerance=0.0).iterations == 6


def test_bf16_overflow_falls_back_to_fp32(content):
    style = load_image("samples/ihc.png", 32)
    stylizer = Stylizer([style], StyleSettings(iterations=3))
    stylizer.autocast_dtype = torch.bfloat16  # as on a GPU
    calls = []

    def poisoned(image):
        # Non-finite only while the network runs in bf16.
        calls.append(stylizer.autocast_dtype)
        return torch.full((image.shape[0],), float("nan") if stylizer.autocast_dtype else 0.0)

    result = stylizer.stylize(content, extra_losses={"probe": poisoned})
    assert stylizer.autocast_dtype is None
    assert torch.bfloat16 in calls and calls[-1] is None
    assert [h["iteration"] for h in result.history] == [1, 2, 3]
    assert all(h["probe"] == 0.0 for h in result.history)
