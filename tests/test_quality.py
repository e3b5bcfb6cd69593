"""Image-quality features: colour preservation, coarse-to-fine scales, presets, evaluator, sheet."""

import json

import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.color import luminance, match_color_histogram, rgb_to_yiq, yiq_to_rgb
from pipeline.errors import InputError
from pipeline.images import load_image
from pipeline.score import Scorer, reference_losses, reference_vgg
from pipeline.stylize import PRESETS, StyleSettings, Stylizer, scale_sizes, split_iterations

CONTENT, STYLE = "samples/chelsea.png", "samples/ihc.png"


@pytest.fixture(scope="module")
def vgg():
    return reference_vgg()


@pytest.fixture(scope="module")
def images():
    return load_image(CONTENT, 64), load_image(STYLE, 64)


def chroma_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference of the I and Q (chroma) channels, pixel by pixel."""
    return (rgb_to_yiq(a)[:, 1:] - rgb_to_yiq(b)[:, 1:]).abs().mean().item()


def colour_statistics_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Distance between the mean colours and between the colour covariances of two images."""
    fa, fb = a.flatten(2)[0], b.flatten(2)[0]
    return ((fa.mean(1) - fb.mean(1)).norm() + (torch.cov(fa) - torch.cov(fb)).norm()).item()


def test_yiq_round_trip():
    image = torch.rand(2, 3, 5, 7)
    assert torch.allclose(yiq_to_rgb(rgb_to_yiq(image)), image, atol=1e-5)


def test_histogram_matching_gives_the_reference_mean_and_covariance():
    generator = torch.Generator().manual_seed(0)
    source = torch.rand(1, 3, 40, 40, generator=generator) * torch.tensor([0.3, 0.6, 0.2]).view(1, 3, 1, 1)
    reference = 0.2 + 0.5 * torch.rand(1, 3, 40, 40, generator=generator) ** 2
    matched = match_color_histogram(source, reference)
    flat_m, flat_r = matched.flatten(2)[0], reference.flatten(2)[0]
    assert torch.allclose(flat_m.mean(1), flat_r.mean(1), atol=2e-3)
    assert torch.allclose(torch.cov(flat_m), torch.cov(flat_r), atol=2e-3)


@pytest.mark.parametrize("mode", ["luminance", "histogram"])
def test_colour_preservation_keeps_the_content_chroma(images, vgg, mode):
    content, style = images
    plain = Stylizer([style], StyleSettings(iterations=30), vgg=vgg).stylize(content).image
    kept = Stylizer([style], StyleSettings(iterations=30, preserve_color=mode), vgg=vgg).stylize(content).image
    if mode == "histogram":
        # The style's colours were matched to the content's before optimizing.
        assert colour_statistics_distance(kept, content) < 0.5 * colour_statistics_distance(plain, content)
    else:
        # Only luminance was optimized: the chroma is the content's, up to clipping at 0 and 1.
        assert chroma_distance(kept, content) < 0.02
        # ...and the luminance still moved towards the style.
        assert (luminance(kept) - luminance(content)).abs().mean() > 0.02


def test_scale_schedule():
    settings = StyleSettings()
    assert scale_sizes(2048, 2048, settings) == [(512, 512), (1024, 1024), (2048, 2048)]
    assert scale_sizes(512, 384, settings) == [(512, 384)]
    assert scale_sizes(100, 64, StyleSettings(scales=2)) == [(50, 32), (100, 64)]
    # Never coarser than VGG-19 can see: 40 px cannot be halved.
    assert scale_sizes(40, 40, StyleSettings(scales=3)) == [(40, 40)]
    # A picture cropped from a wider frame (--crop-bars) gets the frame's scales, as far as it can be halved.
    narrow = StyleSettings(multiscale_threshold=64)
    assert scale_sizes(128, 128, narrow) == [(64, 64), (128, 128)]
    assert scale_sizes(128, 128, narrow, frame_size=(128, 170)) == [(32, 32), (64, 64), (128, 128)]
    assert scale_sizes(96, 128, narrow, frame_size=(128, 170)) == [(48, 64), (96, 128)]
    assert split_iterations(10, 3) == [4, 3, 3]
    assert sum(split_iterations(7, 2)) == 7


def test_multiscale_reaches_a_lower_reference_style_loss_at_equal_iterations(vgg):
    content, style = load_image(CONTENT, 128), load_image(STYLE, 128)
    losses = {}
    for scales in (1, 2):
        # The schedule alone: from noise in 40 iterations the range term moves both runs' optima.
        settings = StyleSettings(iterations=40, scales=scales, init="noise", range_weight=0)
        events = []
        result = Stylizer([style], settings, vgg=vgg).stylize(content, callback=events.append)
        assert [e.iteration for e in events] == list(range(1, 41))
        assert {e.scales for e in events} == {scales}
        assert tuple(result.image.shape[-2:]) == tuple(content.shape[-2:])
        losses[scales] = reference_losses(result.image, content, [style], vgg=vgg, size=128)["style"]
    assert losses[2] < losses[1]


def test_presets_parse_and_explicit_options_win():
    assert StyleSettings.from_preset("fast").iterations == PRESETS["fast"]["iterations"]
    assert StyleSettings.from_preset("quality").iterations > StyleSettings.from_preset("balanced").iterations
    assert StyleSettings.from_preset("fast", iterations=7).iterations == 7
    with pytest.raises(InputError):
        StyleSettings.from_preset("turbo")


def test_cli_preset_with_override(tmp_path):
    out = tmp_path / "out.png"
    args = [
        "image",
        CONTENT,
        "-s",
        STYLE,
        "--size",
        "32",
        "--preset",
        "fast",
        "--iterations",
        "3",
        "-o",
        str(out),
        "--log-json",
        "-q",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["settings"]["iterations"] == 3  # explicit
    assert record["settings"]["multiscale_threshold"] == PRESETS["fast"]["multiscale_threshold"]  # preset
    assert len(record["history"]) == 3


def test_evaluator_is_stable_and_ranks_a_stylized_image_below_the_content(images, vgg):
    content, style = images
    stylized = Stylizer([style], StyleSettings(iterations=20), vgg=vgg).stylize(content).image
    first = reference_losses(stylized, content, [style], vgg=vgg, size=64)
    assert first == reference_losses(stylized, content, [style], vgg=vgg, size=64)
    of_content = reference_losses(content, content, [style], vgg=vgg, size=64)
    assert of_content["content"] == 0
    assert first["style"] < 0.5 * of_content["style"]
    assert first["total"] == pytest.approx(first["content"] + 1e3 * first["style"])


def test_a_scorer_keeps_its_style_targets_per_size_and_scores_as_one_call_does(images, vgg):
    """Scoring many frames (bench/video_quality.py) computes the style's Gram targets once per
    size: the same losses as a call of their own, a second size its own targets."""
    content, style = images
    other = content.flip(-1)
    scorer = Scorer([style], vgg=vgg)
    at_64 = [scorer(image, content, size=64) for image in (content, other)]
    assert list(scorer.targets) == [64]
    assert at_64 == [reference_losses(image, content, [style], vgg=vgg, size=64) for image in (content, other)]
    assert at_64[1]["content"] > 0 == at_64[0]["content"]
    at_48 = scorer(other, content, size=48)
    assert sorted(scorer.targets) == [48, 64]
    assert at_48 == reference_losses(other, content, [style], vgg=vgg, size=48) != at_64[1]


def test_evaluator_scores_against_the_style_target_the_jobs_optimize_toward(vgg):
    """At the output's own size the evaluator's style loss is the jobs' style term over beta: its
    style image is resized as load_styles resizes theirs (Lanczos). With torch's bicubic it was
    another target, and the same frame scored up to twice as high (docs/video-quality.md)."""
    from pipeline.images import load_styles

    settings = StyleSettings(size=96, iterations=15, full_layer_weights=True)  # the paper's losses, as the evaluator's
    content = load_image(CONTENT, 96)
    job = Stylizer(load_styles([STYLE], settings), settings, vgg=vgg)
    output = job.stylize(content).image
    objective = job.objective(content)
    with torch.no_grad():
        term = objective(objective.variable_from(output))["style"].item()
    score = reference_losses(output, content, [load_image(STYLE)], vgg=vgg, size=96)["style"]
    assert score * settings.style_weight == pytest.approx(term, rel=1e-4)


def test_score_and_sheet_commands(tmp_path):
    out = tmp_path / "out.png"
    runner = CliRunner()
    made = runner.invoke(
        app, ["image", CONTENT, "-s", STYLE, "--size", "48", "--iterations", "10", "-o", str(out), "--sheet", "-q"]
    )
    assert made.exit_code == 0, made.output
    sheet = load_image(tmp_path / "out-sheet.png")
    result = load_image(out)
    assert sheet.shape[-2] == result.shape[-2]
    assert sheet.shape[-1] > 2.5 * result.shape[-1]  # content, style and result side by side
    scores = []
    for image in (out, CONTENT):
        scored = runner.invoke(
            app, ["score", str(image), "-c", CONTENT, "-s", STYLE, "--size", "48", "--json", "--device", "cpu"]
        )
        assert scored.exit_code == 0, scored.output
        scores.append(json.loads(scored.stdout))
    assert scores[0]["style"] < scores[1]["style"]
    bad = runner.invoke(app, ["score", str(tmp_path / "missing.png"), "-c", CONTENT, "-s", STYLE])
    assert bad.exit_code == 2 and "missing.png" in bad.output
