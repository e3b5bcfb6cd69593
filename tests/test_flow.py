"""Optical flow, reliability masks, warping, scene cuts and the flicker metric on synthetic
moving content with known motion."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline.flow import (
    FramePair,
    flicker,
    frame_pair,
    histogram_distance,
    pair_of_flows,
    to_tensor,
    warp,
    warping_error,
)
from pipeline.flowstage import pair_name
from pipeline.workdir import frame_name

SIZE, SQUARE, SHIFT, START = 96, 32, 3, 20


def texture(seed: int, size: int, blur: float = 1.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), blur)


def moving_square(frames: int, seed: int = 0) -> list[np.ndarray]:
    """A textured square moving SHIFT px to the right per frame over a static textured background."""
    background, square = texture(seed, SIZE), texture(seed + 1, SQUARE)
    out = []
    for i in range(frames):
        frame = background.copy()
        x = START + SHIFT * i
        frame[32 : 32 + SQUARE, x : x + SQUARE] = square
        out.append(frame)
    return out


@pytest.fixture(scope="module")
def pair():
    previous, current = moving_square(2)
    return previous, current, frame_pair(previous, current)


def test_flow_recovers_the_known_shift(pair):
    _, _, p = pair
    x = START + SHIFT  # the square's left edge in the current frame
    inner = p.flow_back[32 + 6 : 32 + SQUARE - 6, x + 6 : x + SQUARE - 6]
    assert np.median(inner[..., 0]) == pytest.approx(-SHIFT, abs=0.3)
    assert np.median(inner[..., 1]) == pytest.approx(0, abs=0.3)
    background = p.flow_back[:20, :]
    assert np.abs(np.median(background, axis=(0, 1))).max() < 0.3


def test_mask_marks_the_disoccluded_strip(pair):
    _, _, p = pair
    rows = slice(32 + 4, 32 + SQUARE - 4)
    # Uncovered in the current frame: where the square's trailing edge was.
    strip = p.reliability[rows, START : START + SHIFT]
    assert strip.mean() < 0.3
    # Far from the square, everything is reliable.
    assert p.reliability[:16].mean() > 0.95
    assert p.reliability[rows, START + SHIFT + 8 : START + SHIFT + SQUARE - 8].mean() > 0.9


def test_warping_reproduces_the_next_frame_where_reliable(pair):
    previous, current, p = pair
    warped = warp(to_tensor(previous), p.flow_back)
    error = (warped - to_tensor(current)).abs().mean(1)[0].numpy() * 255
    reliable = p.reliability > 0.99
    assert reliable.mean() > 0.6
    assert error[reliable].mean() < 6
    # The warp is what does it: the unwarped previous frame is much further off there.
    unwarped = (to_tensor(previous) - to_tensor(current)).abs().mean(1)[0].numpy() * 255
    square = np.zeros_like(reliable)
    square[32 + 4 : 32 + SQUARE - 4, START + SHIFT + 4 : START + SHIFT + SQUARE - 4] = True
    assert error[square & reliable].mean() < 0.3 * unwarped[square & reliable].mean()


def test_a_pair_from_another_estimators_flows_masks_and_measures_the_same_way():
    """pair_of_flows takes flows from anywhere (the video benchmark scores flicker with Farneback's):
    given the exact motion, the strip the square uncovers is unreliable, the rest is trusted and
    the source frames themselves do not flicker."""
    previous, current = moving_square(2)
    back, forward = np.zeros((SIZE, SIZE, 2), np.float32), np.zeros((SIZE, SIZE, 2), np.float32)
    back[32 : 32 + SQUARE, START + SHIFT : START + SHIFT + SQUARE, 0] = -SHIFT
    forward[32 : 32 + SQUARE, START : START + SQUARE, 0] = SHIFT
    p = pair_of_flows(previous, current, back, forward)
    rows = slice(32 + 4, 32 + SQUARE - 4)
    assert p.reliability[rows, START : START + SHIFT].max() == 0
    assert p.reliability[:16].min() == 1 and p.reliability[rows, START + SHIFT + 4 : START + SQUARE - 4].min() > 0.99
    assert p.cut_score < 0.1
    assert flicker([previous, current], [None, p], scene_threshold=0.6) < 0.01
    assert flicker([previous, previous], [None, p], scene_threshold=0.6) > 10  # a square that did not move


def bench_module(name: str = "video_quality"):
    """bench/NAME.py, which is a script, not a package (registered, as its dataclasses need)."""
    path = Path(__file__).resolve().parent.parent / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def write_sequences(folder: Path, **sequences: list[np.ndarray]) -> dict[str, list[Path]]:
    """Each sequence of RGB frames as FOLDER/NAME/000001.png, ...: {name: the frames' paths}."""
    paths = {}
    for name, frames in sequences.items():
        (folder / name).mkdir()
        paths[name] = [folder / name / f"{i + 1:06d}.png" for i in range(len(frames))]
        for path, frame in zip(paths[name], frames):
            cv2.imwrite(str(path), frame[..., ::-1])
    return paths


def test_the_benchmarks_independent_measures_skip_the_cut_alone_and_see_flicker(tmp_path):
    """The benchmark's Farneback flicker and E_warp (Lai et al.) score every pair but the clip's
    cut, as the stylizer's cut scan finds it; an output that is its moving input scores near 0,
    one whose brightness jumps every other frame scores high."""
    vq = bench_module()
    clip = moving_square(4, seed=0) + moving_square(4, seed=10)  # a cut before the 5th frame
    brighter = [np.clip(f.astype(int) + (40 if i % 2 else 0), 0, 255).astype(np.uint8) for i, f in enumerate(clip)]
    paths = write_sequences(tmp_path, content=clip, flickering=brighter)
    pairs = vq.farneback_pairs(paths["content"])
    assert [i for i, p in enumerate(pairs) if p is not None and p.cut_score > 0.6] == [4]
    steady = vq.warp_error(paths["content"], paths["content"], pairs)
    flickering = vq.warp_error(paths["flickering"], paths["content"], pairs)
    assert flickering > 10 * max(steady, 1.0), (steady, flickering)  # (40/255)^2 x 3 channels: ~74e-3
    assert vq.farneback_flicker(paths["flickering"], pairs) > 10 * max(vq.farneback_flicker(paths["content"], pairs), 1)


def test_the_benchmarks_blind_e_warp_scores_the_pop_at_a_pair_the_stylizer_took_for_a_cut(tmp_path):
    """E_warp skips the pairs the stylizer's cut score calls cuts; its blind variant only those
    whose colours change wholesale, so a cold start mid-shot (a fast move taken for a cut) is
    scored on the pop it makes: here every frame from the 4th 40 levels brighter."""
    from dataclasses import replace

    vq = bench_module()
    clip = moving_square(6, seed=0)
    popped = clip[:3] + [np.clip(f.astype(int) + 40, 0, 255).astype(np.uint8) for f in clip[3:]]
    paths = write_sequences(tmp_path, content=clip, popped=popped)
    pairs = vq.farneback_pairs(paths["content"])
    assert all(p.cut_score < 0.6 for p in pairs[1:])
    taken = pairs[:3] + [replace(pairs[3], cut_score=0.9)] + pairs[4:]  # the stylizer's cut at frame 4
    skipped = vq.warp_error(paths["popped"], paths["content"], taken)
    blind = vq.warp_error(paths["popped"], paths["content"], taken, blind=True)
    assert blind > 5 * max(skipped, 1.0) and blind == vq.warp_error(paths["popped"], paths["content"], pairs)


def test_the_benchmarks_style_drift_sees_a_texture_fade_along_the_shot(tmp_path):
    """Style drift, the evaluator's style loss over the last frames over that over the first:
    exactly 1 for a shot that keeps its texture, well above 1 where the texture blurs away (as
    warm frames stopped short of their restyling do, one frame after another)."""
    vq = bench_module()
    style = cv2.imread(str(vq.STYLE))
    crop = cv2.resize(style, (64, 48), interpolation=cv2.INTER_AREA)
    faded = cv2.GaussianBlur(crop, (0, 0), 1.5)
    content = tmp_path / "content.png"
    cv2.imwrite(str(content), crop)
    frames = {"kept": [crop] * 8, "faded": [crop] * 4 + [faded] * 4}
    drift = {}
    for name, images in frames.items():
        (tmp_path / name).mkdir()
        paths = [tmp_path / name / f"{i + 1:06d}.png" for i in range(len(images))]
        for path, image in zip(paths, images):
            cv2.imwrite(str(path), image)
        losses = vq.frame_losses(paths, [content] * len(paths), vq.STYLE, step=3)
        assert losses["style"] > 0 and losses["content"] >= 0
        drift[name] = losses["style_drift"]
    assert drift["kept"] == pytest.approx(1.0)
    assert drift["faded"] > 1.5, drift


def test_the_benchmarks_opening_reads_each_shots_first_frame_against_its_later_frames():
    """The bench's opening figure: a shot's first frame's sharpness over the mean of its frames from
    OPENING_AFTER on (a settled first frame softer than them reads below 1, a cold one's pop above),
    averaged over the shots long enough for both; a short shot counts for nothing, and a clip of
    none such reads nan."""
    vq = bench_module()
    after = vq.OPENING_AFTER
    popped = [3.0] + [2.0] * (after - 1) + [1.0] * after  # a pop, shed by its OPENING_AFTER-th frame
    short = [9.0] * (2 * after - 1)  # too short to read its level
    ramped = [1.0, 1.5] + [2.0] * (2 * after)  # opens at half its level
    crisp = popped + short + ramped
    shots = [("init", len(popped)), ("cut", len(short)), ("segment", len(ramped))]
    stats = [{"start": start if i == 0 else "warped"} for start, frames in shots for i in range(frames)]
    assert vq.opening(crisp, stats) == pytest.approx((3.0 + 0.5) / 2)
    assert np.isnan(vq.opening(short, stats[len(popped) : len(popped) + len(short)]))


def test_the_benchmark_refuses_a_tree_whose_stylizer_lacks_a_modes_option(tmp_path):
    """--tree runs another checkout's stylizer (an earlier release); a mode whose options that
    release does not know is refused before any clip is made or job run, naming the option (`--modes
    all` takes every mode), and so are a --style that is not there and two clips of one name, whose
    jobs and rows would be one another's."""
    tree = tmp_path / "old-release"
    (tree / "pipeline").mkdir(parents=True)
    (tree / "pipeline" / "__init__.py").write_text("")
    (tree / "pipeline" / "cli.py").write_text('print("--size --style --seed --device --flow-workers --duration")\n')
    script = Path(__file__).resolve().parent.parent / "bench" / "video_quality.py"

    def bench(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, str(script), "--clips", "carphone", "--out", str(tmp_path / "out"), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=300)

    refused = bench("--tree", str(tree), "--modes", "default,stop-1e-3")
    assert refused.returncode != 0, refused.stderr
    assert f"--tree {tree}: its stylize video has no --stop-tolerance" in refused.stderr, refused.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    missing = bench("--style", str(tmp_path / "no-such.png"))
    assert missing.returncode != 0 and "no-such.png: no such file" in missing.stderr, missing.stderr
    unknown = bench("--modes", "default,no-such-mode")
    assert unknown.returncode != 0 and "unknown no-such-mode" in unknown.stderr, unknown.stderr
    six = bench("--tree", str(tree))  # the default modes: --passes (passes-3), not --warp (bicubic)
    assert six.returncode != 0 and "--passes" in six.stderr and "--warp" not in six.stderr, six.stderr
    every = bench("--tree", str(tree), "--modes", "all")
    assert every.returncode != 0 and "--passes" in every.stderr and "--warp" in every.stderr, every.stderr
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "street.mp4").write_bytes(b"")
    twice = bench("--clips", f"{tmp_path / 'a/street.mp4'},{tmp_path / 'b/street.mp4'}")  # the last --clips counts
    assert twice.returncode != 0 and "--clips: two clips named street" in twice.stderr, twice.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.mp4*"))


def test_the_benchmarks_frames_are_frames_of_any_frame_rate(tmp_path):
    """--frames N runs N frames of a clip at 29.97 fps, as of the synthetic clips at 25 (it
    turned N into seconds at 25 fps, and ran 48 of the sample clip's frames for --frames 40); a
    clip of one's own is named by its file name, hyphens and all, and each row by its mode (it
    took the mode from the job's name after its first hyphen: "30fps-default" for this one); its
    sharpness figures are the mean Laplacian variance of the job's stylized and input frames, and
    its flicker column the job's own measure. Rerun with --decoded, it scores the output file's
    frames as decoded instead, into a report of its own, the job's frames and report left as they
    were."""
    from helpers import make_clip

    clip = make_clip(tmp_path / "ntsc-30fps.mp4", frames=12, rate="30000/1001", size="64x48")
    script = Path(__file__).resolve().parent.parent / "bench" / "video_quality.py"
    command = [
        sys.executable, str(script), "--clips", str(clip), "--frames", "5", "--size", "32", "--modes", "default",
        "--out", str(tmp_path / "out"), "--", "--iterations", "1", "--iterations-first", "1",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "out" / "video_quality.json").read_text())
    assert [(row["mode"], row["frames"]) for row in results["ntsc-30fps"]] == [("default", 5)], results
    assert "| default | 5 |" in (tmp_path / "out" / "video_quality.md").read_text()
    assert np.isnan(results["ntsc-30fps"][0]["opening"])  # a shot of 5 frames: too short for its level
    # Sharpness: the mean Laplacian variance of the job's stylized frames, and of its input frames.
    work = tmp_path / "out" / "ntsc-30fps-default.mp4.work"
    for key, folder in (("sharpness", "styled"), ("sharpness_input", "frames")):
        paths = sorted((work / folder).glob("[0-9]*.png"))[:5]
        greys = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2GRAY) for p in paths]
        expected = np.mean([cv2.Laplacian(g.astype(np.float64), cv2.CV_64F).var() for g in greys])
        assert results["ntsc-30fps"][0][key] == pytest.approx(expected, rel=1e-9), key
    vq = bench_module()

    def vq_flicker(frames: list[Path], work: Path) -> float:  # the job's own pairs, as its report measures
        return vq.job_flow_flicker(frames, work, "bilinear")

    styled = sorted((work / "styled").glob("[0-9]*.png"))[:5]
    assert results["ntsc-30fps"][0]["flicker"] == pytest.approx(vq_flicker(styled, work), rel=1e-9)
    report = (tmp_path / "out" / "video_quality.md").read_text()
    rerun = [*command[: command.index("--")], "--decoded", *command[command.index("--") :]]
    again = subprocess.run(rerun, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr
    decoded = json.loads((tmp_path / "out" / "video_quality-decoded.json").read_text())["ntsc-30fps"][0]
    assert (tmp_path / "out" / "video_quality.md").read_text() == report
    frames = sorted((work / "decoded").glob("[0-9]*.png"))
    assert [p.name for p in frames] == [p.name for p in styled]
    shown = [cv2.imread(str(p)) for p in frames]
    assert all(a.shape == cv2.imread(str(b)).shape for a, b in zip(shown, styled))
    assert any(np.abs(a.astype(int) - cv2.imread(str(b)).astype(int)).max() > 0 for a, b in zip(shown, styled))
    greys = [cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float64) for frame in shown]
    expected = np.mean([cv2.Laplacian(g, cv2.CV_64F).var() for g in greys])
    assert decoded["sharpness"] == pytest.approx(expected, rel=1e-9)
    assert decoded["flicker"] == pytest.approx(vq_flicker(frames, work), rel=1e-9)
    assert decoded["sharpness_input"] == results["ntsc-30fps"][0]["sharpness_input"]


def test_the_benchmarks_zoom_clip_magnifies_its_picture_evenly(tmp_path):
    """The zoom clip (a dolly-in, its flow expanding) ends on its first frame's middle at ZOOM
    times the size, and every frame is the one before it magnified by the same factor: no
    whole-pixel jitter, which would read as shake to the flow and the flicker scores."""
    vq = bench_module()
    clip = vq.make_zoom(tmp_path / "zoom.mp4", 5)
    capture = cv2.VideoCapture(str(clip))
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1].astype(np.float32))
    assert len(frames) == 5 and frames[0].shape == (240, 320, 3)

    def magnified(frame: np.ndarray, factor: float) -> np.ndarray:
        to_frame = np.float32([[factor, 0, 160 * (1 - factor)], [0, factor, 120 * (1 - factor)]])
        return cv2.warpAffine(frame, to_frame, (320, 240), flags=cv2.INTER_CUBIC)

    def error(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a - b)[40:-40, 40:-40].mean())  # away from the border the warp fills

    # Measured: 2-3 levels where the factor is right, 9-12 where it is 3% off, 23-35 unmagnified.
    assert error(magnified(frames[0], vq.ZOOM), frames[-1]) < 5 < 20 < error(frames[0], frames[-1])
    step = vq.ZOOM ** (1 / 4)
    for before, after in zip(frames, frames[1:]):
        assert error(magnified(before, step), after) < 5 < error(magnified(before, step * 1.03), after)


def test_every_benchmark_mode_passes_options_this_stylizer_knows():
    """Each mode of the video benchmark (previous-default reproduces the release before issue 17
    with six of them) names only options of this checkout's `stylize video`: a misspelt or
    renamed one would be refused only when someone runs the benchmark, hours of jobs later."""
    bench = bench_module()
    known = bench.video_options(bench.ROOT)
    assert "--first-rounds" in known and "--lbfgs-history" in known
    for mode, options in bench.MODES.items():
        unknown = [o for o in options if o.startswith("--") and o not in known]
        assert not unknown, f"mode {mode}: {unknown}"


def test_warp_with_zero_flow_is_identity():
    image = torch.rand(2, 3, 7, 9)
    assert torch.allclose(warp(image, np.zeros((7, 9, 2), np.float32)), image, atol=1e-5)


def test_scene_cut_detected_at_the_right_frame_only():
    first, second = moving_square(4, seed=0), moving_square(4, seed=10)
    clip = first + second  # a hard cut between frame 3 and frame 4
    scores = [frame_pair(clip[i - 1], clip[i]).cut_score for i in range(1, len(clip))]
    threshold = 0.6
    cuts = [i + 1 for i, score in enumerate(scores) if score > threshold]
    assert cuts == [4], scores


def test_histogram_distance_bounds():
    a = texture(0, 32)
    assert histogram_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert histogram_distance(a, np.zeros_like(a)) > 0.9


def test_frame_pair_round_trips_through_disk(pair, tmp_path):
    _, _, p = pair
    p.save(tmp_path / "000002.npz")
    loaded = FramePair.load(tmp_path / "000002.npz")
    assert np.array_equal(loaded.flow_back, p.flow_back) and np.array_equal(loaded.reliability, p.reliability)
    assert loaded.cut_score == p.cut_score
    assert [f.name for f in tmp_path.iterdir()] == ["000002.npz"]  # no temporary left behind


def test_flicker_metric_separates_stable_from_flickering_outputs():
    frames = moving_square(5)
    pairs = [None] + [frame_pair(frames[i - 1], frames[i]) for i in range(1, len(frames))]
    stable = flicker(frames, pairs, scene_threshold=0.6)
    rng = np.random.default_rng(1)
    flickering = [np.clip(f.astype(int) + rng.integers(-30, 30, f.shape), 0, 255).astype(np.uint8) for f in frames]
    assert stable < 0.1 * flicker(flickering, pairs, scene_threshold=0.6)
    assert warping_error(frames[0], frames[1], pairs[1]) == pytest.approx(stable, rel=1.0)


def carried_grain(frames: int) -> tuple[list[np.ndarray], FramePair]:
    """A fine texture (a period of 4 px) moved half a pixel to the right a frame, exactly, and the
    pair of any two consecutive frames (reliable away from the border)."""
    h, w = 24, 40
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)

    def grain(shift: float) -> np.ndarray:
        value = 128 + 100 * np.sin(2 * np.pi * (xs + shift) / 4) * np.cos(2 * np.pi * ys / 7)
        return np.repeat(value[..., None], 3, axis=2).round().astype(np.uint8)

    flow_back = np.zeros((h, w, 2), np.float32)
    flow_back[..., 0] = -0.5  # frame t at x shows frame t-1 at x - 0.5
    reliability = np.zeros((h, w), np.float32)
    reliability[4:-4, 4:-4] = 1  # the warp's border aside
    return [grain(-0.5 * i) for i in range(frames)], FramePair(flow_back, reliability, 0.0)


def test_a_fine_texture_carried_exactly_flickers_by_the_bilinear_measure_not_by_the_bicubic():
    """The bilinear warp of the measure blurs the frame before and scores a fine texture's exact
    move by half a pixel as flicker, the bicubic one far less. What the benchmark's "flicker,
    bicubic" column shows of a stylizer that carries its grain along."""
    (before, after), pair = carried_grain(2)
    bilinear = flicker([before, after], [None, pair], scene_threshold=0.6)
    bicubic = flicker([before, after], [None, pair], scene_threshold=0.6, mode="bicubic")
    assert bilinear > 300, bilinear  # the half-pixel average takes 30% off the grain's amplitude: ~650
    assert bicubic < 0.1 * bilinear, (bicubic, bilinear)  # ~8
    assert warping_error(before, after, pair, "bicubic") == pytest.approx(bicubic)


def test_the_benchmarks_bicubic_flicker_reads_the_jobs_own_pairs_and_skips_a_gap(tmp_path):
    """The bench's `flicker, bicubic` column: the job's flow/NNNNNN.npz pairs, the frame before
    warped bicubically; no pair across a frame left out (a blank), NaN where there are no pairs.
    Bilinearly, the same pairs give the job's own measure (the flicker column of --decoded)."""
    vq = bench_module()
    frames, pair = carried_grain(4)
    (tmp_path / "styled").mkdir()
    styled = [tmp_path / "styled" / frame_name(i + 1) for i in range(4)]
    for path, frame in zip(styled, frames):
        cv2.imwrite(str(path), frame[..., ::-1])
    assert np.isnan(vq.job_flow_flicker(styled, tmp_path, "bicubic"))  # no flow/ at all
    (tmp_path / "flow").mkdir()
    for i in range(2, 5):
        pair.save(tmp_path / "flow" / pair_name(i - 1, i))  # as the flow stage names them
    measured = vq.job_flow_flicker(styled, tmp_path, "bicubic")
    assert measured == pytest.approx(flicker(frames, [None, pair, pair, pair], 0.6, mode="bicubic"), rel=1e-4)
    bilinear = vq.job_flow_flicker(styled, tmp_path, "bilinear")
    assert bilinear == pytest.approx(flicker(frames, [None, pair, pair, pair], 0.6), rel=1e-4)
    assert measured < 0.1 * bilinear
    # Frame 3 left out: frame 4's pair carries frame 3, not frame 2; frame 2's alone counts.
    gap = vq.job_flow_flicker([styled[0], styled[1], styled[3]], tmp_path, "bicubic")
    assert gap == pytest.approx(warping_error(frames[0], frames[1], pair, "bicubic"), rel=1e-4)


def test_frame_variants_lanczos_warp_moves_by_the_flow_as_the_stylizers_warp_does():
    """The bench's Lanczos warp (OpenCV's, which grid_sample lacks) leaves an image in place under
    zero flow and, by a whole pixel, moves it as pipeline.flow.warp does (the border repeated)."""
    fv = bench_module("frame_variants")
    image = torch.rand(1, 3, 12, 16)
    still = np.zeros((12, 16, 2), np.float32)
    assert torch.allclose(fv.warp_by(image, still, "lanczos"), image, atol=1e-5)
    one_left = still.copy()
    one_left[..., 0] = 1.0  # each pixel takes its right neighbour's value
    moved = fv.warp_by(image, one_left, "lanczos")
    assert torch.allclose(moved, warp(image, one_left), atol=1e-5)
    assert torch.allclose(moved[..., :-1], image[..., 1:], atol=1e-5)
    assert not torch.allclose(moved, image, atol=1e-2)


def test_frame_variants_runs_a_kept_jobs_frame_again_still_and_capped(tmp_path):
    """bench/frame_variants.py on a finished job's work directory: each variant of the frame runs
    (the cap of 2 stops at 2, `still=1` reruns the frame before with nothing to catch up, the
    Lanczos warp, a half-size pass first, Adam instead of L-BFGS), and a variant key it does not
    know is refused with the keys it does."""
    from helpers import STYLE, make_clip

    root = Path(__file__).resolve().parent.parent
    clip = make_clip(tmp_path / "clip.mp4", frames=3)
    out = tmp_path / "out.mp4"
    video = [
        "video", str(clip), "-s", str(STYLE), "-o", str(out), "--size", "64", "--iterations", "8",
        "--iterations-first", "4", "--iterations-tracked", "3", "--stop-tolerance", "0", "--device", "cpu",
        "--flow-workers", "1", "--keep-frames", "-q",
    ]  # fmt: skip
    job = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *video], cwd=root, capture_output=True, text=True, timeout=600
    )
    assert job.returncode == 0, job.stderr
    work = tmp_path / "out.mp4.work"
    script = [sys.executable, str(root / "bench" / "frame_variants.py"), str(work), "--frames", "3"]
    variants = "default,its=2,still=1,start=lanczos+target=lanczos,its=2+coarse=3,its=2+opt=adam+lr=0.01"
    run = subprocess.run([*script, "--variants", variants], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    lines = {line.split()[0]: line for line in run.stdout.splitlines() if "iterations  style" in line}
    assert set(lines) == {
        "default", "its=2", "still=1", "start=lanczos+target=lanczos", "its=2+coarse=3", "its=2+opt=adam+lr=0.01"
    }, run.stdout  # fmt: skip
    assert lines["its=2"].split()[1] == "2", lines["its=2"]
    # The frame's own budget, as the job recorded it: --iterations-tracked, whatever its reliable share.
    frame = json.loads((work / "styled" / "000003.json").read_text())
    assert frame["iterations"] == 3, frame
    assert lines["default"].split()[1] == str(frame["iterations"]), (frame, run.stdout)
    # Adam's two steps from the same start land elsewhere than L-BFGS's.
    adam = lines["its=2+opt=adam+lr=0.01"].split()
    assert adam[1] == "2" and adam[4] != lines["its=2"].split()[4], run.stdout
    half = int(lines["its=2+coarse=3"].split("after ")[1].split()[0])  # the half-size pass, under its cap
    assert 1 <= half <= 3 and "at half size" not in lines["its=2"], run.stdout
    assert all(1 <= int(line.split()[1]) <= 8 for line in lines.values()), run.stdout
    refused = subprocess.run([*script, "--variants", "speed=3"], capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "'speed=3' is not one of its=" in refused.stderr, refused.stderr
