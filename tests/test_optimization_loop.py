"""The optimization loop's reporting, early stopping and precision fallback."""

import dataclasses

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline.images import load_image
from pipeline.losses import TemporalLoss
from pipeline.optimize import EarlyStop
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
    every5 = Stylizer(stylizer.styles, stylizer.settings, vgg=stylizer.vgg, report_every=5)
    result = every5.stylize(content, callback=events.append)
    assert [e.iteration for e in events] == [5, 10, 12]
    assert [h["iteration"] for h in result.history] == list(range(1, 13))
    every = stylizer.stylize(content)
    # Reporting less often changes nothing in the optimization itself.
    assert torch.equal(every.image, result.image)
    assert [h["loss"] for h in every.history] == [h["loss"] for h in result.history]


def test_early_stopping_on_small_relative_change(stylizer, content):
    # A tolerance of 100% stops as soon as one window has been seen.
    result = stylizer.stylize(content, iterations=30, stop=EarlyStop(tolerance=1.0, window=3))
    assert result.iterations == 4
    assert len(result.history) == 4
    # A tolerance of 0 never stops early.
    assert stylizer.stylize(content, iterations=6, stop=EarlyStop(tolerance=0.0)).iterations == 6


def test_bf16_overflow_falls_back_to_fp32(content):
    style = load_image("samples/ihc.png", 32)
    stylizer = Stylizer([style], StyleSettings(iterations=3))
    stylizer.autocast_dtype = torch.bfloat16  # as on a GPU
    network = stylizer.vgg.forward
    calls = []

    def overflowing(image):
        # An overflow only while the network runs under bf16 autocast.
        in_bf16 = torch.is_autocast_enabled("cpu")
        calls.append(in_bf16)
        features = network(image)
        return {k: v * float("inf") for k, v in features.items()} if in_bf16 else features

    stylizer.vgg.forward = overflowing
    result = stylizer.stylize(content)
    assert calls.count(True) >= 1 and calls[-1] is False
    assert [h["iteration"] for h in result.history] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    # The fallback is for this call only: the next image tries bf16 again.
    assert stylizer.autocast_dtype == torch.bfloat16


def test_batched_noise_start_matches_each_image_alone():
    style = load_image("samples/ihc.png", 32)
    first = load_image("samples/chelsea.png", 32)
    second = torch.flip(first, dims=[3])
    stylizer = Stylizer([style], StyleSettings(iterations=4, init="noise"))
    together = stylizer.stylize(torch.cat([first, second])).image
    alone = stylizer.stylize(second).image
    assert torch.allclose(together[1:], alone, atol=2e-4)


def test_style_targets_are_shared_by_outputs_with_the_same_long_side():
    style = load_image("samples/ihc.png", 48)
    stylizer = Stylizer([style], StyleSettings())
    landscape = stylizer.style_targets(24, 32)
    portrait = stylizer.style_targets(32, 20)
    assert all(a is b for a, b in zip(landscape, portrait))
    assert len(stylizer.style_targets.cache) == 1
    stylizer.style_targets(24, 40)
    assert len(stylizer.style_targets.cache) == 2


@pytest.mark.parametrize("field, value", [("iterations", 0), ("iterations", 10**7), ("seed", -1), ("seed", 2**64)])
def test_settings_refuse_values_that_would_hang_or_crash(field, value):
    from pipeline.errors import InputError

    with pytest.raises(InputError, match=f"--{field}"):
        StyleSettings(**{field: value})


def refuse_large_inputs(monkeypatch, pixels: int) -> None:
    """VGG19.forward runs out of memory, as a GPU would, for inputs of more than `pixels`."""
    from pipeline.vgg import VGG19

    real = VGG19.forward

    def forward(self, rgb):
        if rgb.numel() // 3 > pixels:
            raise torch.OutOfMemoryError("CUDA out of memory (injected by the test)")
        return real(self, rgb)

    monkeypatch.setattr(VGG19, "forward", forward)


def test_out_of_memory_keeps_the_last_scale_that_fitted(monkeypatch):
    content, style = load_image("samples/chelsea.png", 128), load_image("samples/ihc.png", 128)
    stylizer = Stylizer([style], StyleSettings(iterations=4))
    refuse_large_inputs(monkeypatch, pixels=5000)  # 128x85 does not fit, 64x42 does
    with pytest.raises(torch.OutOfMemoryError):
        stylizer.stylize(content)
    result = stylizer.stylize_within_memory(content)
    assert result.optimized_size == (42, 64)
    assert result.image.shape == content.shape
    # The share of the scale that did not fit is not spent.
    assert result.iterations == 2 and len(result.history) == 2
    # It is a stylized image, not the content upsampled.
    assert (result.image - content).abs().mean() > 0.01
    # A warm start is optimized at full size only: nothing coarser to keep, the error is raised.
    with pytest.raises(torch.OutOfMemoryError):
        stylizer.stylize_within_memory(content, init=content)


def test_image_command_warns_and_writes_the_full_size_after_out_of_memory(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    refuse_large_inputs(monkeypatch, pixels=5000)
    out = tmp_path / "out.png"
    args = [
        "image",
        "samples/chelsea.png",
        "-s",
        "samples/ihc.png",
        "--size",
        "128",
        "--iterations",
        "4",
        "-o",
        str(out),
        "-q",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert load_image(out).shape[-2:] == (85, 128)
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "optimized up to 64x42" in warning[0]


def test_archive_records_an_image_finished_at_a_smaller_scale(monkeypatch, tmp_path):
    import shutil

    from pipeline import archive
    from pipeline.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy("samples/chelsea.png", photos / "cat.png")
    refuse_large_inputs(monkeypatch, pixels=5000)
    out = tmp_path / "out"
    code = main(
        [
            "images",
            str(photos),
            "-s",
            "samples/ihc.png",
            "-o",
            str(out),
            "--size",
            "128",
            "--iterations",
            "4",
            "--devices",
            "cpu",
            "-q",
        ]
    )
    assert code == 0
    [record] = archive.read_records(out).values()
    assert record["status"] == "done" and record["optimized_size"] == [42, 64]
    assert load_image(out / "cat.png").shape[-2:] == (85, 128)


class HostReads(TorchDispatchMode):
    """Counts the operations that make the host wait for a GPU: reading a value back (item,
    bool, float, an `if` on a tensor), data-dependent shapes, and Python data turned into a
    tensor (a blocking copy to the device)."""

    WAITING = ("aten._local_scalar_dense", "aten.lift_fresh", "aten.nonzero", "aten.masked_select")

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        boolean_index = str(func.overloadpacket) == "aten.index" and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ())
        )
        if str(func.overloadpacket) in self.WAITING or boolean_index:
            self.count += 1
        return func(*args, **(kwargs or {}))


def host_reads_of(run, monkeypatch) -> int:
    reads = HostReads()
    tolist = torch.Tensor.tolist

    def counted_tolist(tensor):
        reads.count += 1
        return tolist(tensor)

    monkeypatch.setattr(torch.Tensor, "tolist", counted_tolist)
    with reads:
        run()
    monkeypatch.setattr(torch.Tensor, "tolist", tolist)
    return reads.count


def test_no_host_device_synchronisation_inside_the_loop(content, monkeypatch):
    """What the host reads back must not grow with the iterations, only with the reports."""
    style = load_image("samples/ihc.png", 32)
    stylizer = Stylizer([style], StyleSettings(iterations=4, tv_weight=1.0, preserve_color="luminance"))
    temporal = {"temporal": TemporalLoss(content.flip(3), torch.ones(1, 1, *content.shape[-2:]))}

    def reads(iterations: int, report_every: int) -> int:
        stylizer.report_every = report_every
        run = lambda: stylizer.stylize(content, iterations=iterations, extra_losses=temporal)  # noqa: E731
        return host_reads_of(run, monkeypatch)

    once = reads(4, 4)
    assert reads(12, 12) == once
    assert reads(12, 4) == once + 2  # one read back per extra report


def test_objective_is_the_weighted_sum_of_the_papers_terms_per_image(tiny_vgg):
    """Stylizer.objective against the formulas: alpha' L_content + beta sum_l w_l E_l + TV weight x
    TV + the extra terms as given, one value per image, in that order; w_l as given with
    --full-layer-weights, and by default times the positions over the channels of a layer with
    fewer positions than channels (objective.texture_weights)."""
    from pipeline.losses import TVLoss
    from pipeline.stylize import REFERENCE_PIXELS

    style, content = load_image("samples/ihc.png", 32), load_image("samples/chelsea.png", 32)
    contents = torch.cat([content, content.flip(3)])
    weights = (0.1, 0.2, 0.3, 0.15, 0.25)
    settings = StyleSettings(
        content_weight=3.0, style_weight=5.0, tv_weight=2.0, style_layer_weights=weights, full_layer_weights=True
    )
    stylizer = Stylizer([style], settings, vgg=tiny_vgg)
    temporal = TemporalLoss(content, torch.ones(1, 1, *content.shape[-2:]))
    objective = stylizer.objective(contents, {"temporal": lambda image: 7.0 * temporal(image)})
    # Some values outside 0..1, for the range term.
    image = torch.rand(contents.shape, generator=torch.Generator().manual_seed(1)) * 1.2 - 0.1
    terms = objective(image)
    assert list(terms) == ["content", "style", "tv", "range", "temporal"]
    assert all(t.shape == (2,) for t in terms.values())

    features, targets, style_features = tiny_vgg(image), tiny_vgg(contents), tiny_vgg(style)
    h, w = content.shape[-2:]
    content_loss = 0.5 * (features["relu4_2"] - targets["relu4_2"]).pow(2).sum((1, 2, 3))
    layer_losses = []
    for layer in settings.style_layers:
        f, s = features[layer].flatten(2), style_features[layer].flatten(2)
        n, m, m_style = f.shape[1], f.shape[2], s.shape[2]
        gram, target = f @ f.transpose(1, 2) / m, s @ s.transpose(1, 2) / m_style
        layer_losses.append((gram - target).pow(2).sum((1, 2)) / (4 * n**2))
    style_loss = sum(weight * loss for weight, loss in zip(weights, layer_losses))
    expected = {
        "content": 3.0 * REFERENCE_PIXELS / (h * w) * content_loss,
        "style": 5.0 * style_loss,
        "tv": 2.0 * TVLoss()(image),
        "range": settings.range_weight * ((image - image.clamp(0, 1)) * 255).pow(2).mean((1, 2, 3)),
        "temporal": 7.0 * temporal(image),
    }
    assert (terms["range"] > 0).all()
    for name, value in expected.items():
        assert torch.allclose(terms[name], value, rtol=1e-4), name
    # Each image's terms are its own: the same as with the image alone.
    alone = stylizer.objective(contents[1:], {"temporal": lambda image: 7.0 * temporal(image)})(image[1:])
    for name in expected:
        assert torch.allclose(terms[name][1:], alone[name], rtol=1e-5), name
    # By default the layers with fewer positions than channels weigh positions / channels.
    by_default = Stylizer([style], dataclasses.replace(settings, full_layer_weights=False), vgg=tiny_vgg)
    shapes = [features[layer].shape for layer in settings.style_layers]
    scaled = [weight * min(1, shape[2] * shape[3] / shape[1]) for weight, shape in zip(weights, shapes)]
    style_loss = sum(weight * loss for weight, loss in zip(scaled, layer_losses))
    assert scaled[-1] < weights[-1]
    assert torch.allclose(by_default.objective(contents)(image)["style"], 5.0 * style_loss, rtol=1e-4)


def test_luminance_only_objective_optimizes_y_and_takes_colour_from_the_content(tiny_vgg):
    style, content = load_image("samples/ihc.png", 32), load_image("samples/chelsea.png", 32)
    stylizer = Stylizer([style], StyleSettings(preserve_color="luminance"), vgg=tiny_vgg)
    objective = stylizer.objective(content)
    variable = objective.variable_from(content)
    assert variable.shape == (1, 1, *content.shape[-2:])
    assert torch.allclose(objective.image_of(variable), content, atol=1e-5)
    # A flat grey Y keeps the content's chroma: the output is not grey.
    coloured = objective.image_of(torch.full_like(variable, 0.5))
    assert (coloured[:, 0] - coloured[:, 2]).abs().mean() > 0.01


@pytest.mark.parametrize(
    "losses, tolerance, window, stops",
    [
        ([10.0, 9.0, 8.99], 0.01, 2, False),  # fell by 10.1% over the window: keep going
        ([10.0, 9.995, 9.99], 0.01, 2, True),  # fell by 0.1% < 1%
        ([10.0, 9.995], 0.01, 2, False),  # a window not yet seen
        ([10.0, 10.0, 10.0], 0.0, 2, False),  # tolerance 0: never
    ],
)
def test_early_stop_compares_the_loss_a_window_apart(losses, tolerance, window, stops):
    assert EarlyStop(tolerance, window).reached(losses) is stops


@pytest.mark.parametrize(
    "styles, stops",
    [
        ([5.0, 4.5, 4.4], False),  # the total settled, the style term still fell by 12% over the window
        ([5.0, 4.95, 4.91], True),  # it fell by 1.8% < 2%
        ([], True),  # an objective without a style term: the total's rule alone
    ],
)
def test_early_stop_with_a_style_tolerance_also_waits_for_the_style_term(styles, stops):
    settled = [10.0, 9.995, 9.99]  # the total fell by 0.1% over the window
    assert EarlyStop(0.01, 2, style_tolerance=0.02).reached(settled, styles) is stops
    assert EarlyStop(0.01, 2).reached(settled, styles)  # style_tolerance 0: the total alone
    assert not EarlyStop(0.01, 2, style_tolerance=0.02).reached([10.0, 9.0, 8.99], [5.0, 5.0, 5.0])  # total first


def test_a_style_tolerance_runs_a_warm_start_on_while_the_style_term_falls(content):
    """In a real run: where the total's rule alone stops a warm start (here at 54 iterations), a
    tighter rule on the style term runs it on (to 130), to a lower style term."""
    stylizer = Stylizer([load_image("samples/ihc.png", 32)], StyleSettings(style_weight=1e2, full_layer_weights=True))
    start = stylizer.stylize(content, iterations=5).image
    total = stylizer.stylize(content, init=start, iterations=300, stop=EarlyStop(0.01, 5))
    both = stylizer.stylize(content, init=start, iterations=300, stop=EarlyStop(0.01, 5, style_tolerance=1e-3))
    assert total.iterations < both.iterations
    assert both.per_image[0]["style"] < total.per_image[0]["style"]
