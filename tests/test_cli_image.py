"""`stylize image` end to end through typer's CliRunner (and `pipeline.cli.main`), at 32 px with a
few iterations: every option path, every bad input of the issue, help and usage errors.

A bad input must give exit status 2, exactly one non-empty line on stderr, no traceback (printed
or swallowed by the runner), and leave every existing file untouched."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import FAST, assert_ok, invoke
from pipeline import cli
from pipeline.cli import app, main
from pipeline.display import human_number
from pipeline.errors import InputError
from pipeline.stylize import StyleSettings


@pytest.fixture(scope="module")
def small_images(tmp_path_factory, chelsea_path, ihc_path) -> Path:
    """Small copies of the samples (loading them is then instant), a second style, a red init
    image, a flat grey photo, and a text file with an image name."""
    folder = tmp_path_factory.mktemp("images")
    Image.open(chelsea_path).convert("RGB").resize((96, 64), Image.LANCZOS).save(folder / "content.png")
    Image.open(ihc_path).convert("RGB").resize((64, 64), Image.LANCZOS).save(folder / "style.png")
    Image.open(ihc_path).convert("RGB").rotate(90).resize((48, 64), Image.LANCZOS).save(folder / "style2.jpg")
    Image.new("RGB", (20, 20), (255, 0, 0)).save(folder / "red.png")
    Image.new("RGB", (64, 48), (128, 128, 128)).save(folder / "grey.png")
    (folder / "notimage.png").write_text("this is a text file, not a PNG\n")
    return folder


@pytest.fixture
def ws(tmp_path, small_images) -> Path:
    """A fresh workspace with the small images (tests may not modify the module's copies)."""
    for path in small_images.iterdir():
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(result, *expected: str, code: int = 2) -> str:
    # CliRunner swallows an uncaught exception into result.exception (exit 1) and prints nothing:
    # that is a traceback for a real user.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("error:"), line
    for text in expected:
        assert text in line, f"{text!r} not in {line!r}"
    return line


def image_array(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


# --- success paths ----------------------------------------------------------------------------


def test_success_writes_the_output_and_prints_its_path(ws):
    out = ws / "out.png"
    before = set(os.listdir(ws))
    result = invoke(["image", ws / "content.png", "--style", ws / "style.png", "-o", out, *FAST])
    assert_ok(result)
    assert result.stdout.strip().splitlines()[-1] == str(out)
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (32, 21) or image.size == (32, 22)  # 96 x 64 content, long side 32
    # Atomic write: only the output is new, no temporary file is left behind.
    assert set(os.listdir(ws)) - before == {"out.png"}
    # Progress (iterations/s, current loss) and the final losses go to stderr, not into the
    # output that scripts read.
    assert "2/2" in result.stderr and "it/s" in result.stderr and "loss" in result.stderr
    assert re.search(r"content \S+\s+style \S+\s+total \S+", result.stderr)
    assert "loss" not in result.stdout


def test_quiet_prints_only_the_output_path(ws):
    out = ws / "quiet.png"
    result = invoke(["image", ws / "content.png", "-s", ws / "style.png", "-o", out, "--quiet", *FAST])
    assert_ok(result)
    assert result.stdout == f"{out}\n"
    assert result.stderr.strip() == ""


def test_default_output_is_beside_the_content(ws):
    result = invoke(["image", ws / "content.png", "--style", ws / "style.png", "-q", *FAST])
    assert_ok(result)
    expected = ws / "content-stylized.png"
    assert expected.is_file()
    assert result.stdout.strip() == str(expected)


@pytest.mark.parametrize("suffix, fmt", [(".jpg", "JPEG"), (".webp", "WEBP"), (".tif", "TIFF")])
def test_other_output_formats(ws, suffix, fmt):
    out = ws / f"out{suffix}"
    assert_ok(invoke(["image", ws / "content.png", "--style", ws / "style.png", "-o", out, "-q", *FAST]))
    with Image.open(out) as image:
        assert image.format == fmt


def test_output_into_a_new_directory(ws):
    out = ws / "new" / "deeper" / "out.png"
    assert_ok(invoke(["image", ws / "content.png", "--style", ws / "style.png", "-o", out, "-q", *FAST]))
    assert out.is_file()


def test_log_json_writes_the_history(ws):
    out = ws / "out.png"
    result = invoke(
        [
            "image",
            ws / "content.png",
            "--style",
            ws / "style.png",
            "-o",
            out,
            "-q",
            "--log-json",
            "--size",
            "32",
            "--iterations",
            "3",
        ]
    )
    assert_ok(result)
    log = json.loads(out.with_suffix(".json").read_text())
    history = log["history"]
    assert len(history) == 3
    assert [record["iteration"] for record in history] == [1, 2, 3]
    for record in history:
        assert math.isfinite(record["loss"]) and record["loss"] > 0
        assert record["loss"] == pytest.approx(record["content"] + record["style"], rel=1e-5)
    assert log["settings"]["size"] == 32 and log["settings"]["iterations"] == 3
    assert log["device"] == "cpu"


def test_several_styles_with_blend_weights(ws):
    out = ws / "out.png"
    args = ["image", ws / "content.png", "-s", ws / "style.png", "-s", ws / "style2.jpg", "--style-blend", "0.7,0.3"]
    assert_ok(invoke([*args, "-o", out, "-q", "--log-json", *FAST]))
    assert out.is_file()
    assert json.loads(out.with_suffix(".json").read_text())["settings"]["style_blend"] == [0.7, 0.3]
    # Equal weights when --style-blend is left out.
    out2 = ws / "equal.png"
    assert_ok(invoke([*args[:6], "-o", out2, "-q", *FAST]))
    assert out2.is_file()


def _expected_content(ws: Path, size: tuple[int, int]) -> np.ndarray:
    with Image.open(ws / "content.png") as image:
        return np.asarray(image.convert("RGB").resize(size, Image.BICUBIC), dtype=np.float64) / 255.0


# Adam with a negligible step for 1 iteration: the output is the start image.
STILL = ["--optimizer", "adam", "--learning-rate", "1e-7", "--iterations", "1", "--size", "32", "-q"]


def test_init_content_starts_from_the_content(ws):
    out = ws / "out.png"
    assert_ok(
        invoke(["image", ws / "content.png", "--style", ws / "style.png", "-o", out, "--init", "content", *STILL])
    )
    result = image_array(out)
    expected = _expected_content(ws, (result.shape[1], result.shape[0]))
    assert np.abs(result - expected).mean() < 0.03


def test_init_noise_starts_from_noise(ws):
    out = ws / "out.png"
    assert_ok(invoke(["image", ws / "content.png", "--style", ws / "style.png", "-o", out, "--init", "noise", *STILL]))
    result = image_array(out)
    expected = _expected_content(ws, (result.shape[1], result.shape[0]))
    assert np.abs(result - expected).mean() > 0.1
    # White noise: high pixel-to-pixel variation, mean near 0.5.
    assert abs(result.mean() - 0.5) < 0.1
    assert np.abs(np.diff(result, axis=1)).mean() > 0.2


def test_init_path_starts_from_that_image_resized(ws):
    out = ws / "out.png"
    assert_ok(
        invoke(["image", ws / "content.png", "--style", ws / "style.png", "-o", out, "--init", ws / "red.png", *STILL])
    )
    result = image_array(out)
    assert result.shape[:2] in ((21, 32), (22, 32))
    assert (result[..., 0] > 0.98).all() and (result[..., 1:] < 0.02).all()


def test_overwrite_replaces_an_existing_output(ws):
    out = ws / "out.png"
    Image.new("RGB", (5, 5), (0, 0, 255)).save(out)
    old = out.read_bytes()
    assert_ok(invoke(["image", ws / "content.png", "--style", ws / "style.png", "-o", out, "--overwrite", "-q", *FAST]))
    assert out.read_bytes() != old
    with Image.open(out) as image:
        assert max(image.size) == 32


def test_sheet_writes_content_style_result_side_by_side(ws):
    out = ws / "out.png"
    assert_ok(invoke(["image", ws / "content.png", "--style", ws / "style.png", "-o", out, "--sheet", "-q", *FAST]))
    sheet = ws / "out-sheet.png"
    with Image.open(sheet) as image, Image.open(out) as result:
        assert image.height == result.height
        assert image.width > 2 * result.width


def test_report_shows_content_styles_result_and_the_loss_curve(ws):
    out = ws / "out.png"
    before = set(os.listdir(ws))
    args = ["image", ws / "content.png", "-s", ws / "style.png", "-s", ws / "style2.jpg", "-o", out, "--report"]
    result = invoke([*args, "--size", "32", "--iterations", "4"])
    assert_ok(result)
    page = ws / "out-report.html"
    assert set(os.listdir(ws)) - before == {"out.png", "out-report.html"}  # one file, nothing beside it
    assert f"report: {page}" in result.stderr
    html = page.read_text()
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", html)
    assert captions == ["content: content.png", "style: style.png", "style: style2.jpg", "result: out.png"]
    assert re.findall(r'<figure><a href="([^"]+)"', html) == ["content.png", "style.png", "style2.jpg", "out.png"]
    thumbs = re.findall(r'src="data:image/webp;base64,([^"]+)"', html)
    assert len(thumbs) == 4
    with Image.open(io.BytesIO(base64.b64decode(thumbs[-1]))) as thumb:
        assert thumb.format == "WEBP" and max(thumb.size) == 160
        # The result's thumbnail is the result: its mean colour is the output's.
        assert (
            np.abs(np.asarray(thumb.convert("RGB"), float).mean((0, 1)) / 255 - image_array(out).mean((0, 1))).max()
            < 0.03
        )
    (plot,) = re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', html)
    svg = base64.b64decode(plot).decode()
    assert "iteration" in svg and "total" in svg and "content" in svg and "style" in svg
    assert 'http-equiv="refresh"' not in html and not re.search(r'(src|href)="(https?:)?//', html)


def test_existing_report_is_not_overwritten_without_overwrite(ws):
    (ws / "out-report.html").write_text("<p>mine</p>\n")
    before = snapshot(ws)
    result = invoke(["image", ws / "content.png", "--style", ws / "style.png", "-o", ws / "out.png", "--report", *FAST])
    assert_one_line_error(result, "out-report.html", "--overwrite")
    assert snapshot(ws) == before


def test_a_report_that_cannot_be_written_is_a_warning(ws, monkeypatch):
    """The image is the job; its report page is a view of it: a failed page does not fail the job."""
    import pipeline.image_job

    def broken(path, report):
        raise RuntimeError("the plot failed")

    monkeypatch.setattr(pipeline.image_job, "write_image_report", broken)
    out = ws / "out.png"
    result = invoke(["image", ws / "content.png", "--style", ws / "style.png", "-o", out, "--report", "-q", *FAST])
    assert_ok(result)
    assert out.is_file() and not (ws / "out-report.html").exists()
    assert (
        result.stderr.strip()
        == f"warning: the report was not written: {ws / 'out-report.html'}: RuntimeError: the plot failed"
    )


def test_image_job_as_a_library(ws):
    """What the command runs: image_job.run_image, the one style loader, the one output check."""
    from pipeline.image_job import ImageJob, run_image

    events = []

    class Events:
        def started(self, description, iterations):
            events.append(("started", description, iterations))

        def iteration(self, progress):
            events.append(("iteration", progress.iteration))

        def message(self, text):
            events.append(("message", text))

    job = ImageJob(ws / "content.png", (ws / "style.png",), ws / "lib.png", StyleSettings(size=32, iterations=3),
                   device="cpu", log_json=True)  # fmt: skip
    result = run_image(job, events=Events())
    assert result.output == ws / "lib.png" and result.files == {"log_json": ws / "lib.json"}
    assert events[0] == ("started", "content.png on cpu", 3) and ("iteration", 3) in events
    assert len(result.history) == 3 and result.terms["loss"] > 0 and result.device == "cpu"
    with pytest.raises(InputError, match="output exists"):
        run_image(job)


def test_style_images_are_loaded_at_style_scale_times_size_and_never_below_16_px(ws):
    from pipeline.images import load_styles

    (wide,) = load_styles([ws / "style2.jpg"], StyleSettings(size=200, style_scale=0.5))  # 48 x 64 -> long side 100
    assert tuple(wide.shape[-2:]) == (100, 75)
    (tiny,) = load_styles([ws / "style.png"], StyleSettings(size=16, style_scale=0.05))  # 0.8 px asked for
    assert tuple(tiny.shape[-2:]) == (16, 16)


def test_a_style_image_in_a_long_strip_is_made_large_enough_for_the_network(ws, capsys):
    """VGG-19 needs 16 px on each side: a style image's long side is raised until its short side
    has them (the style's size is a texture's scale), where the job and the evaluator look at it."""
    from pipeline.images import load_styles, resize_long_side

    Image.open(ws / "style.png").resize((200, 10), Image.LANCZOS).save(ws / "strip.png")
    (strip,) = load_styles([ws / "strip.png"], StyleSettings(size=32))  # 32x2 asked for
    assert tuple(strip.shape[-2:]) == (16, 320)
    assert tuple(resize_long_side(strip, 64).shape[-2:]) == (16, 320)
    assert tuple(resize_long_side(strip, 640).shape[-2:]) == (32, 640)
    out = ws / "out.png"
    assert main(["image", str(ws / "content.png"), "-s", str(ws / "strip.png"), "-o", str(out), *FAST]) == 0
    assert Image.open(out).size == (32, 21)
    capsys.readouterr()
    assert main(["score", str(out), "--content", str(ws / "content.png"), "-s", str(ws / "strip.png")]) == 0
    assert "style" in capsys.readouterr().out


@pytest.mark.parametrize(
    "mode, dtype, value, expected, suffix",
    [
        ("I;16", np.uint16, 30000, 117, ".png"),  # a 16-bit greyscale scan: 30000 / 257
        ("I;16", np.uint16, 65535, 255, ".tif"),
        ("I", np.int32, 30000, 117, ".tif"),  # 32-bit integers above 255: a 16-bit range
        ("I", np.int32, 200, 200, ".tif"),  # within 0..255: 8-bit values
        ("F", np.float32, 0.5, 128, ".tif"),  # floats within 0..1
        ("F", np.float32, 100.0, 100, ".tif"),
    ],
)
def test_greyscale_of_more_than_8_bits_loads_at_its_own_brightness(ws, mode, dtype, value, expected, suffix):
    """Pillow's convert("RGB") clips such values at 255: a 16-bit scan came out white."""
    from pipeline.images import load_image

    path = ws / f"scan{suffix}"
    ramp = np.full((24, 32), value, dtype=dtype)
    ramp[:, :16] = 0  # half black: the scaling is not a flat brightening
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == mode
    loaded = (load_image(path) * 255).round()
    assert loaded[..., :16].max() == 0 and loaded[..., 16:].eq(expected).all(), loaded[0, :, 0, 16]


def test_cpu_device_and_options_in_any_case(ws):
    out = ws / "out.png"
    args = [
        "--device",
        "cpu",
        "--optimizer",
        "LBFGS",
        "--pooling",
        "AVG",
        "--tv-weight",
        "1",
        "--style-scale",
        "0.5",
        "--seed",
        "3",
    ]
    assert_ok(
        invoke(["image", ws / "content.png", "--style", ws / "style.png", "-o", out, "-q", "--log-json", *args, *FAST])
    )
    settings = json.loads(out.with_suffix(".json").read_text())["settings"]
    assert settings["optimizer"] == "lbfgs" and settings["pooling"] == "avg"
    assert settings["tv_weight"] == 1.0 and settings["style_scale"] == 0.5 and settings["seed"] == 3


def test_same_seed_same_output_bytes(ws):
    args = ["image", ws / "content.png", "--style", ws / "style.png", "--init", "noise", "--seed", "5", "-q", *FAST]
    assert_ok(invoke([*args, "-o", ws / "a.png"]))
    assert_ok(invoke([*args, "-o", ws / "b.png"]))
    assert (ws / "a.png").read_bytes() == (ws / "b.png").read_bytes()


def test_a_flat_grey_content_image_is_stylized(ws):
    """A uniform photo is valid input; the run must finish (L-BFGS must not diverge to inf)."""
    out = ws / "out.png"
    result = invoke(
        ["image", ws / "grey.png", "--style", ws / "style.png", "-o", out, "-q", "--size", "32", "--iterations", "6"]
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert_ok(result)
    assert out.is_file()


# --- bad input -----------------------------------------------------------------------------------


def _under_a_file(ws: Path) -> Path:
    (ws / "afile").write_text("a regular file\n")
    return ws / "afile" / "out.png"


def _under_a_file_deeper(ws: Path) -> Path:
    (ws / "afile").write_text("a regular file\n")
    return ws / "afile" / "sub" / "out.png"


def _existing(ws: Path) -> Path:
    Image.new("RGB", (5, 5), (0, 0, 255)).save(ws / "existing.png")
    return ws / "existing.png"


def _directory(ws: Path) -> Path:
    (ws / "adir").mkdir()
    (ws / "adir" / "keep.txt").write_text("keep me\n")
    return ws / "adir"


# (id, content, [style, ...], output (a name or a function of the workspace), extra args, words in the message)
BAD_INPUTS = [
    ("missing-content", "missing.png", ["style.png"], "out.png", [], ["missing.png", "not found"]),
    ("missing-style", "content.png", ["nostyle.png"], "out.png", [], ["nostyle.png", "not found"]),
    ("missing-second-style", "content.png", ["style.png", "nostyle.png"], "out.png", [], ["nostyle.png"]),
    ("content-not-an-image", "notimage.png", ["style.png"], "out.png", [], ["notimage.png", "not an image"]),
    ("style-not-an-image", "content.png", ["notimage.png"], "out.png", [], ["notimage.png", "not an image"]),
    ("content-is-a-directory", ".", ["style.png"], "out.png", [], []),
    ("output-dir-under-a-file", "content.png", ["style.png"], _under_a_file, [], ["afile"]),
    ("output-dir-under-a-file-deeper", "content.png", ["style.png"], _under_a_file_deeper, [], ["afile"]),
    ("existing-output", "content.png", ["style.png"], _existing, [], ["existing.png", "--overwrite"]),
    ("output-is-a-directory", "content.png", ["style.png"], _directory, [], ["adir"]),
    ("size-below-16", "content.png", ["style.png"], "out.png", ["--size", "15"], ["--size", "15"]),
    ("size-zero", "content.png", ["style.png"], "out.png", ["--size", "0"], ["--size"]),
    ("size-negative", "content.png", ["style.png"], "out.png", ["--size", "-64"], ["--size"]),
    ("size-absurd", "content.png", ["style.png"], "out.png", ["--size", "1000000"], ["--size", "1000000"]),
    ("unknown-weights-name", "content.png", ["style.png"], "out.png", ["--weights", "vgg16"], ["vgg16"]),
    (
        "weights-not-a-weights-file",
        "content.png",
        ["style.png"],
        "out.png",
        ["--weights", "notimage.png"],
        ["notimage.png"],
    ),
    ("output-extension-gif", "content.png", ["style.png"], "out.gif", [], ["out.gif", ".gif"]),
    ("output-extension-txt", "content.png", ["style.png"], "out.txt", [], ["out.txt"]),
    ("output-no-extension", "content.png", ["style.png"], "out", [], ["out"]),
    ("output-is-the-content", "content.png", ["style.png"], "content.png", ["--overwrite"], ["content.png"]),
    ("output-is-the-style", "content.png", ["style.png"], "style.png", ["--overwrite"], ["style.png"]),
    ("output-is-the-init", "content.png", ["style.png"], "red.png", ["--overwrite", "--init", "red.png"], ["red.png"]),
    (
        "blend-not-numbers",
        "content.png",
        ["style.png", "style2.jpg"],
        "out.png",
        ["--style-blend", "a,b"],
        ["--style-blend"],
    ),
    (
        "blend-wrong-count",
        "content.png",
        ["style.png", "style2.jpg"],
        "out.png",
        ["--style-blend", "0.5"],
        ["--style-blend"],
    ),
    ("blend-too-many", "content.png", ["style.png"], "out.png", ["--style-blend", "0.5,0.3,0.2"], ["--style-blend"]),
    (
        "blend-all-zero",
        "content.png",
        ["style.png", "style2.jpg"],
        "out.png",
        ["--style-blend", "0,0"],
        ["--style-blend"],
    ),
    (
        "blend-negative",
        "content.png",
        ["style.png", "style2.jpg"],
        "out.png",
        ["--style-blend", "1.5,-0.5"],
        ["--style-blend"],
    ),
    ("device-unknown", "content.png", ["style.png"], "out.png", ["--device", "tpu"], ["--device", "tpu"]),
    ("init-missing", "content.png", ["style.png"], "out.png", ["--init", "noinit.png"], ["noinit.png"]),
    ("init-not-an-image", "content.png", ["style.png"], "out.png", ["--init", "notimage.png"], ["notimage.png"]),
    ("optimizer-unknown", "content.png", ["style.png"], "out.png", ["--optimizer", "sgd"], ["--optimizer", "sgd"]),
    ("pooling-unknown", "content.png", ["style.png"], "out.png", ["--pooling", "min"], ["--pooling"]),
    ("iterations-zero", "content.png", ["style.png"], "out.png", ["--iterations", "0"], ["--iterations"]),
    (
        "content-weight-negative",
        "content.png",
        ["style.png"],
        "out.png",
        ["--content-weight", "-1"],
        ["--content-weight"],
    ),
    ("style-weight-nan", "content.png", ["style.png"], "out.png", ["--style-weight", "nan"], ["--style-weight"]),
    ("style-scale-zero", "content.png", ["style.png"], "out.png", ["--style-scale", "0"], ["--style-scale"]),
    ("learning-rate-zero", "content.png", ["style.png"], "out.png", ["--learning-rate", "0"], ["--learning-rate"]),
    (
        "preserve-color-unknown",
        "content.png",
        ["style.png"],
        "out.png",
        ["--preserve-color", "sepia"],
        ["--preserve-color"],
    ),
    ("preset-unknown", "content.png", ["style.png"], "out.png", ["--preset", "ultra"], ["--preset"]),
]


@pytest.mark.parametrize(
    "content, styles, output, extra, words", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS]
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(ws, content, styles, output, extra, words):
    out = output(ws) if callable(output) else ws / output
    extra = [str(ws / a) if a.endswith(".png") and not a.startswith("-") else a for a in extra]
    args = ["image", ws / content, *[x for s in styles for x in ("--style", ws / s)], "-o", out, *FAST, *extra]
    before = snapshot(ws)
    result = invoke(args)
    assert_one_line_error(result, *words)
    assert snapshot(ws) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "CUDA"])
def test_device_cuda_without_cuda(ws, device):
    before = snapshot(ws)
    result = invoke(
        ["image", ws / "content.png", "--style", ws / "style.png", "-o", ws / "out.png", "--device", device, *FAST]
    )
    assert_one_line_error(result, "--device", "CUDA")
    assert snapshot(ws) == before


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write into any directory")
def test_output_directory_without_write_permission(ws):
    locked = ws / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        before = snapshot(ws)
        result = invoke(["image", ws / "content.png", "--style", ws / "style.png", "-o", locked / "out.png", *FAST])
        assert_one_line_error(result, "locked")
        assert snapshot(ws) == before
    finally:
        locked.chmod(0o700)


def test_existing_output_is_refused_before_any_work(ws, monkeypatch):
    """The refusal comes before loading the network: nothing is computed for nothing."""
    import pipeline.vgg

    def no_network(*args, **kwargs):
        raise AssertionError("the network was loaded although the output exists")

    monkeypatch.setattr(pipeline.vgg, "load_vgg19", no_network)
    monkeypatch.setattr("pipeline.stylize.load_vgg19", no_network)
    out = _existing(ws)
    before = snapshot(ws)
    assert_one_line_error(
        invoke(["image", ws / "content.png", "--style", ws / "style.png", "-o", out, *FAST]), "exists"
    )
    assert snapshot(ws) == before


def test_existing_json_log_is_not_overwritten_without_overwrite(ws):
    """--log-json writes a second output (OUTPUT.json); an existing file of that name is the
    user's and must be refused like an existing image, not silently replaced."""
    (ws / "out.json").write_text('{"mine": true}\n')
    before = snapshot(ws)
    result = invoke(
        ["image", ws / "content.png", "--style", ws / "style.png", "-o", ws / "out.png", "--log-json", *FAST]
    )
    assert_one_line_error(result, "out.json")
    assert snapshot(ws) == before


def test_existing_sheet_is_not_overwritten_without_overwrite(ws):
    Image.new("RGB", (5, 5), (0, 255, 0)).save(ws / "out-sheet.png")
    before = snapshot(ws)
    result = invoke(["image", ws / "content.png", "--style", ws / "style.png", "-o", ws / "out.png", "--sheet", *FAST])
    assert_one_line_error(result, "out-sheet.png")
    assert snapshot(ws) == before


def test_torchvision_weights_offline_is_one_line(ws, monkeypatch):
    import urllib.error
    import urllib.request

    monkeypatch.setenv("TORCH_HOME", str(ws / "empty-torch-home"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    before = snapshot(ws)
    result = invoke(
        [
            "image",
            ws / "content.png",
            "--style",
            ws / "style.png",
            "-o",
            ws / "out.png",
            "--weights",
            "torchvision",
            *FAST,
        ]
    )
    assert_one_line_error(result, "torchvision")
    assert snapshot(ws) == before


def test_interrupt_keeps_the_existing_output(ws, monkeypatch):
    import pipeline.stylize

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.stylize.Stylizer, "stylize_within_memory", interrupted)  # the image command's
    out = _existing(ws)
    before = snapshot(ws)
    result = invoke(["image", ws / "content.png", "--style", ws / "style.png", "-o", out, "--overwrite", "-q", *FAST])
    assert result.exit_code == 130
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0]
    assert snapshot(ws) == before


def test_a_failed_write_leaves_the_old_output_and_no_temporary_file(ws, monkeypatch):
    """Outputs are written atomically: a write that fails half way (disk full) changes nothing."""
    out = _existing(ws)
    real_save = Image.Image.save

    def disk_full(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)
        Path(fp).write_bytes(Path(fp).read_bytes()[:20])  # half written ...
        raise OSError(28, "No space left on device")  # ... then the disk is full

    monkeypatch.setattr(Image.Image, "save", disk_full)
    before = snapshot(ws)
    result = invoke(["image", ws / "content.png", "--style", ws / "style.png", "-o", out, "--overwrite", "-q", *FAST])
    assert_one_line_error(result, "existing.png", "no space left", code=1)  # a failure of the run, not of the input
    assert snapshot(ws) == before


# --- click-level usage errors through main() ------------------------------------------------------------


def _main_error(capsys, argv) -> str:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "Traceback" not in captured.out + captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error:")
    return lines[0]


def test_main_non_integer_size(capsys, ws):
    line = _main_error(capsys, ["image", ws / "content.png", "--style", ws / "style.png", "--size", "big"])
    assert "--size" in line


def test_main_unknown_option(capsys, ws):
    assert "--colour" in _main_error(
        capsys, ["image", ws / "content.png", "--style", ws / "style.png", "--colour", "red"]
    )


def test_main_missing_style(capsys, ws):
    assert "--style" in _main_error(capsys, ["image", ws / "content.png", "-o", ws / "out.png"])


def test_main_missing_content_argument(capsys, ws):
    _main_error(capsys, ["image", "--style", ws / "style.png"])


def test_main_unknown_command(capsys):
    assert "paint" in _main_error(capsys, ["paint"])


def test_main_input_error_is_also_one_line(capsys, ws):
    before = snapshot(ws)
    line = _main_error(capsys, ["image", ws / "missing.png", "--style", ws / "style.png", "-o", ws / "out.png", *FAST])
    assert "missing.png" in line
    assert snapshot(ws) == before


def test_main_version(capsys):
    import pipeline

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == pipeline.__version__


def test_main_success_returns_0(capsys, ws):
    out = ws / "out.png"
    assert main(["image", str(ws / "content.png"), "--style", str(ws / "style.png"), "-o", str(out), "-q", *FAST]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.is_file()


def test_warnings_from_the_engine_are_one_line(capsys, ws, monkeypatch):
    import warnings

    from pipeline.cudagraph import GraphCaptureWarning
    from pipeline.stylize import Stylizer

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main() replaces it

    def show_as_python_does(message, category, filename, lineno, file=None, line=None):  # not as pytest does
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    monkeypatch.setattr(warnings, "showwarning", show_as_python_does)
    stylize = Stylizer.stylize_within_memory  # what the image command runs

    def warning_stylize(self, *args, **kwargs):
        warnings.warn(
            "--cuda-graphs: recording the iteration failed (reason\nmore); continuing without", GraphCaptureWarning
        )
        return stylize(self, *args, **kwargs)

    monkeypatch.setattr(Stylizer, "stylize_within_memory", warning_stylize)
    out = ws / "out.png"
    assert (
        main(
            [
                "image",
                str(ws / "content.png"),
                "--style",
                str(ws / "style.png"),
                "-o",
                str(out),
                "-q",
                "--cuda-graphs",
                *FAST,
            ]
        )
        == 0
    )
    assert capsys.readouterr().err.splitlines() == [
        "warning: --cuda-graphs: recording the iteration failed (reason\\nmore); continuing without"
    ]
    assert out.is_file()


# --- help ------------------------------------------------------------------------------------------------


def test_top_level_help_lists_the_image_command(capsys):
    result = invoke(["--help"])
    assert_ok(result)
    assert re.search(r"\bimage\b", result.stdout)
    assert "Stylize one image" in result.stdout
    assert main(["--help"]) == 0
    assert "image" in capsys.readouterr().out


def test_no_arguments_shows_help(capsys):
    assert main([]) == 0
    assert "image" in capsys.readouterr().out


def _help_rows(text: str) -> str:
    """The help with box-drawing characters removed and each option's row on one line: a line
    that does not start with an option name (within the first columns) continues the row above."""
    rows: list[str] = []
    for line in re.sub(r"[│╭╮╰╯─]", " ", text).splitlines():
        if rows and not re.match(r" {1,4}(\* )?-", line):
            rows[-1] += " " + line.strip()
        else:
            rows.append(line)
    return "\n".join(rows)


def test_image_help_lists_every_option_with_its_default():
    result = invoke(["image", "--help"])
    assert_ok(result)
    text = _help_rows(result.stdout)
    command = cli.typer.main.get_command(app).commands["image"]
    for param in command.params:
        for opt in param.opts:
            if opt.startswith("--"):
                assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text), f"{opt} missing from help"
    # The brief's options, by name, with the defaults of StyleSettings (the single source).
    defaults = StyleSettings()
    expected = {
        "--size": defaults.size,
        "--iterations": defaults.iterations,
        "--optimizer": defaults.optimizer,
        "--learning-rate": defaults.learning_rate,
        "--content-weight": defaults.content_weight,
        "--style-weight": defaults.style_weight,
        "--tv-weight": defaults.tv_weight,
        "--range-weight": defaults.range_weight,
        "--init": defaults.init,
        "--style-scale": defaults.style_scale,
        "--pooling": defaults.pooling,
        "--weights": defaults.weights,
        "--seed": defaults.seed,
        "--device": "auto",
    }
    for option, value in expected.items():
        row = next(
            (line for line in text.splitlines() if re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", line)), ""
        )
        shown = human_number(value)  # as a person writes it: 1e4, not 10000.0
        assert f"[default: {shown}]" in row, f"{option}: no '[default: {shown}]' in {row!r}"
    for option in ("--style", "--output", "--overwrite", "--log-json", "--style-blend", "--quiet", "-o", "-s"):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), option
