"""Video quality benchmark (issue 17; not a test): runs `stylize video` on the sample clip, on a
synthetic long shot of camera motion and on synthetic handheld shake, once per mode, and prints
per mode the mean iterations per warm-started frame, wall seconds per frame, flicker (the job's
own report: mean masked warping error, as `stylize flicker`; the same with a bicubic warp; the same
with Farneback's flow; and Lai et al.'s E_warp, whose mask comes from the input frames), the mean
style and content loss of the frames (pipeline/score.py, the evaluator of `stylize score`, at the
frames' own size and at its reference size of 512 px, as `stylize score` gives them), style drift
(that style loss over the last 20 frames / over the first 20), sharpness and sharpness retention.

Sharpness = the mean Laplacian variance of the stylized frames (the input's beside it): how crisp
the frames are, which retention, a ratio of the shot's ends, does not say.

Sharpness retention = (mean Laplacian variance of the last 20 stylized frames / that of the first
20) / (the same ratio for the input frames): 1 means the texture stays as crisp as the footage
allows; the bilinear warp of each warm start, compounded over a long shot, pulls it below 1.

    python bench/video_quality.py [--size 128] [--frames 150] [--modes default,none,independent | all]
        [--clips carphone,pan,shake,zoom,flash,fade,relit,path/to/own.mp4] [--style art.png] [--tree DIR]
        [--out bench-results/video] [--decoded]

`--tree DIR` runs the stylizer of another checkout of this project (an earlier release: `git
worktree add DIR REV`) with this one's clips and scoring, so that releases compare as measured
alike; options of the modes that its `stylize video` does not know are refused before any job
runs, and it keeps its frames without being asked if it predates --keep-frames.

`--decoded` scores the output files' frames as a player decodes them (H.264 at --crf 18, chroma
at half resolution) instead of the stylizer's own lossless frames, every column alike (the flicker
column then by the job's own pairs over the decoded frames): what a viewer, or a scorer given the
file alone, sees. Rerun on finished jobs, it costs the scoring alone; its results go to
OUT/video_quality-decoded.md (and .json).

Results go to OUT/video_quality.md (and .json) too. Deterministic: the same command gives the same
frames (each job runs with --seed 0 on the CPU), so rerunning resumes the finished jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
STYLE = ROOT / "samples/ihc.png"  # the default --style
SHAKE_FRAMES = 75
ZOOM = 2.0  # the zoom clip's magnification from its first frame to its last
# Extra `stylize video` options per mode; "default" is the CLI's defaults.
MODES = {
    "independent": ["--flow", "independent"],
    "none": ["--flow", "none"],
    "default": [],
    # The release before issue 17 (18ed178), exactly: 20 curvature pairs, warm frames stopped at a
    # 0.1% loss change, the pixels where the flow is unreliable started from the content, a shot's
    # first frame in one cold run of 600 iterations, no range term, every style layer at its full
    # weight. Run so, frames 1-9 of carphone at 128 px matched that release's own tree (--tree) to
    # every digit its job log prints.
    "previous-default": (
        "--lbfgs-history 20 --stop-tolerance 0.001 --stop-style-tolerance 0 --unreliable-start content"
        " --first-rounds 1 --range-weight 0 --iterations-first 600 --full-layer-weights --iterations-tracked 0"
        " --first-stop-tolerance 0"
    ).split(),
    # The releases before the range term (losses.RangeLoss): the image free to leave 0..1 while optimized.
    "range-0": ["--range-weight", "0"],
    # The release before the first frame's 1500 iterations: 600, warm frames stopped at 3e-3.
    "last-release": (
        "--iterations-first 600 --stop-tolerance 0.003 --stop-style-tolerance 0 --full-layer-weights --settle free"
        " --first-rounds 2 --iterations-tracked 0 --first-stop-tolerance 0"
    ).split(),
    # The default before warm frames waited for the style term too: the total's change alone.
    "total-stop": ["--stop-style-tolerance", "0"],
    # Each of its two settings alone.
    "first-600": ["--iterations-first", "600"],
    "stop-3e-3": ["--stop-tolerance", "0.003"],
    # The release before --unreliable-start: the default but for those pixels, started from the content.
    "content-start": ["--unreliable-start", "content"],
    # The default's 50 pairs with the previous stopping rule.
    "stop-1e-3": ["--stop-tolerance", "0.001"],
    # Warm frames stopped at a 3% loss change over 10 iterations (default 0.3%): ~4x fewer iterations.
    "stop-3e-2": ["--stop-tolerance", "0.03"],
    # Ruder et al.'s long-term temporal loss against frames i-1, i-2 and i-4, closest-first masks.
    "long-term": ["--long-term", "1,2,4"],
    # Warm frames also stop once the image moved less than 1 level (0..255) over 10 iterations.
    "change-1": ["--stop-change", "1.0"],
    # The releases before the settled first frame: a shot's first frame in one run from the content.
    "first-rounds-1": ["--first-rounds", "1"],
    # The stylized frame carried onto the next with a bicubic warp instead of a bilinear one.
    "bicubic": ["--warp", "bicubic"],
    # Warm frames also stopped once the image moves less than 3 levels over 10 iterations (~25).
    "change-3": ["--stop-change", "3"],
    # Ruder et al.'s multi-pass: 2 more passes over each shot, alternating direction.
    "passes-3": ["--passes", "3"],
    # Every warm frame capped at 40 iterations (issue 17's target), those with many unreliable
    # pixels too, and a shot's first frame's settling rounds; its cold run keeps its 1500.
    "cap-40": ["--iterations", "40"],
    "cap-60": ["--iterations", "60"],
    # The stopping rule loosened: 41.5-49.4 iterations a warm frame on the pan (128, 64 px), 44.2 on bikes.mp4.
    "stop-1.5e-2": ["--stop-tolerance", "0.015"],
    # A flash as the releases before took it: two scene cuts (the `flash` clip shows the difference).
    "flash-cuts": ["--flash-frames", "0"],
    # The release before: a flash's frames free of the temporal term.
    "flash-free": ["--free-flashes"],
    # The releases before: a fade's frames stylized as they come (the `fade` clip shows the difference).
    "fades-ignored": ["--ignore-fades"],
    # The releases before: a change of light that scores as a cut is one (the `relit` clip shows the difference).
    "light-cuts": ["--light-cuts"],
    # The releases before: a fast move that fails the flow as a cut does is one (cockatoo.mp4 at 64 px).
    "motion-cuts": ["--motion-cuts"],
    # Every style layer at its full weight (the releases before b820d38), at the bench's sizes the
    # deep layers copying the style image's layout (objective.texture_weights).
    "full-layers": ["--full-layer-weights"],
    # Five releases before this one (b820d38 exactly): a shot's first frame settled by one free round
    # of 50 iterations, crisper than the warm frames after it (temporal.SettleRound).
    "settle-free": (
        "--settle free --first-rounds 2 --stop-tolerance 0.005 --iterations-tracked 0 --first-stop-tolerance 0"
    ).split(),
    # One held settling round after the cold run instead of two.
    "rounds-2": ["--first-rounds", "2"],
    # Four releases before this one (d741b88 exactly): warm frames stopped at a 0.5% loss change.
    "stop-5e-3": "--stop-tolerance 0.005 --iterations-tracked 0 --first-stop-tolerance 0".split(),
    # Three releases before this one (185861d exactly): every warm frame had --iterations, however
    # much of it the flow tracked.
    "untracked": ["--iterations-tracked", "0", "--first-stop-tolerance", "0"],
    # Two releases before this one (f413ee3 exactly): a shot's first frame ran every --iterations-first.
    "first-unstopped": ["--first-stop-tolerance", "0", "--tracked-share", "0.9"],
    # The release before this one (ce0daa2 exactly): only a warm frame with 90% of its pixels reliable
    # or more was capped at --iterations-tracked; the others ran to the stopping rule.
    "tracked-0.9": ["--tracked-share", "0.9"],
}
# What runs unless --modes names others: issue 17's set (each frame on its own, warm starts without
# the flow, the default), the release before issue 17 that the default is measured against, and
# Ruder et al.'s two schemes the issue added as options. The other modes are the releases and
# settings that docs/video-quality.md measured on the way (--modes all: every one, days on a CPU).
DEFAULT_MODES = ("independent", "none", "default", "previous-default", "long-term", "passes-3")
EDGE = 20  # frames at each end of the shot for style drift and sharpness retention
# A shot's opening (its first frame's sharpness against the shot's) is read against its frames from
# this one on: a settled first frame's shot sharpens over 3-12 frames, a cold one's sheds its grain
# over 2-9 (docs/video-quality.md, "Sharpness frame by frame").
OPENING_AFTER = 10


def make_pan(path: Path, frames: int) -> Path:
    """A long shot of steady camera motion, 25 fps: a 320x240 window panned at a constant speed
    across the cat photo and its mirror image, side by side (seamless), over exactly one period
    (two photo widths). The last frames show what the first did, so the input's own sharpness is
    the same at both ends of the shot and sharpness retention measures the stylization alone (a
    one-way pan across the photo went from smooth fur to the eye: its input sharpness rose
    6-fold while the style's texture keeps its own level)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    photo = cv2.imread(str(ROOT / "samples/chelsea.png"))
    strip = path.with_suffix(".strip.png")
    cv2.imwrite(str(strip), np.hstack([photo, photo[:, ::-1], photo]))
    seconds, period = frames / 25, 2 * photo.shape[1]
    render_crop(strip, f"crop=320:240:x='{period}*t/{seconds:.3f}':y='(ih-240)/2'", frames, path)
    strip.unlink()
    return path


def make_shake(path: Path) -> Path:
    """Handheld camera shake, 25 fps, SHAKE_FRAMES frames: a 300x200 window over the coffee photo
    moved by two sines in each direction at unrelated frequencies (up to 12 px, turning back and
    forth, never repeating within the clip): motion like the sample clip's, but of the whole frame."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    x = "30+8*sin(2*PI*0.9*t)+4*sin(2*PI*2.3*t+1)"
    y = "20+5*sin(2*PI*0.7*t+2)+3*sin(2*PI*1.7*t)"
    render_crop(ROOT / "samples/photos/coffee.jpg", f"crop=300:200:x='{x}':y='{y}'", SHAKE_FRAMES, path)
    return path


def make_zoom(path: Path, frames: int) -> Path:
    """A long dolly-in, 25 fps: a 4:3 window on the cat photo, centred, narrowing at a constant
    rate from 400x300 to 1 / ZOOM of that over `frames` frames, shown at 320x240. Unlike a pan or
    shake, its flow expands: what a warm start carries from the frame before is magnified by
    ZOOM ** (1 / (frames - 1)) at every frame (0.47% a frame over 150 frames), so a texture held to
    the warped frame grows along the shot unless each frame restyles it at the style's own scale
    (style drift measures that; a real clip of this: a subject walking up to the lens). Rendered in
    OpenCV with sub-pixel windows, not ffmpeg's zoompan, whose whole-pixel windows jitter."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    photo = cv2.imread(str(ROOT / "samples/chelsea.png"))
    centre_x, centre_y = photo.shape[1] / 2, photo.shape[0] / 2
    raw = bytearray()
    for i in range(frames):
        scale = 320 / 400 * ZOOM ** (i / max(frames - 1, 1))  # output pixels per photo pixel
        to_frame = np.float32([[scale, 0, 160 - scale * centre_x], [0, scale, 120 - scale * centre_y]])
        frame = cv2.warpAffine(photo, to_frame, (320, 240), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        raw += frame.tobytes()
    source = ["-f", "rawvideo", "-pix_fmt", "bgr24", "-s", "320x240", "-r", "25", "-i", "-"]
    encode(path, [*source, "-pix_fmt", "yuv420p", "-c:v", "libx264", "-crf", "12"], stdin=bytes(raw))
    return path


def make_flash(path: Path) -> Path:
    """The sample clip with one frame (31) under a camera's flash (brightness +0.5, contrast 0.6):
    a flash scores as two scene cuts, which --flash-frames (cuts.py) goes through."""
    return filtered_sample(path, "eq=brightness=0.5:contrast=0.6:enable='eq(n,30)'")


def make_fade(path: Path) -> Path:
    """The sample clip faded in from black over its first half second and out to black over 0.8 s
    from 1.5 s (black from frame 70 on), as an editor's fade does it (ffmpeg's fade filter: every
    pixel's level scaled toward black): fades.py stylizes it at full light."""
    return filtered_sample(path, "fade=t=in:st=0:d=0.5,fade=t=out:st=1.5:d=0.8")


def make_relit(path: Path) -> Path:
    """The sample clip at 60% of its light from frame 39 on (1.5 s), as a lamp switched off: its
    pair scores as a scene cut (0.62 at 64 and 128 px), the same picture in another light
    (shotplan.py) to the default."""
    return filtered_sample(path, "colorchannelmixer=rr=0.6:gg=0.6:bb=0.6:enable='gte(n,38)'")


def filtered_sample(path: Path, filters: str) -> Path:
    """The sample clip through ffmpeg's `filters`, losslessly, into `path`; made once."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    encode(path, ["-i", str(ROOT / "samples/carphone.mp4"), "-vf", filters, "-c:v", "libx264", "-qp", "0"])
    return path


def render_crop(still: Path, crop: str, frames: int, path: Path) -> None:
    """`frames` frames at 25 fps of ffmpeg's `crop` filter moving over a still image, encoded
    near-losslessly into `path`."""
    source = ["-loop", "1", "-i", str(still), "-vf", f"{crop},format=yuv420p", "-r", "25", "-frames:v", str(frames)]
    encode(path, [*source, "-c:v", "libx264", "-crf", "12"])


def encode(path: Path, arguments: list[str], stdin: bytes | None = None) -> None:
    """ffmpeg with `arguments` (its input, filters and codec; `stdin` what it reads from "-"),
    writing `path` whole or not at all (the jobs' atomic_path: beside it, then renamed; removed
    if ffmpeg fails)."""
    from pipeline.atomic import atomic_path

    with atomic_path(path) as partial:
        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *arguments, str(partial)]
        subprocess.run(command, input=stdin, check=True)


# Each clip, given the output folder and --frames: the sample clip, or one synthesized into OUT.
CLIPS = {
    "carphone": lambda out, frames: ROOT / "samples/carphone.mp4",
    "pan": lambda out, frames: make_pan(out / f"pan-{max(frames, 150)}.mp4", max(frames, 150)),
    "shake": lambda out, frames: make_shake(out / "shake.mp4"),
    "zoom": lambda out, frames: make_zoom(out / f"zoom-{max(frames, 150)}.mp4", max(frames, 150)),
    "flash": lambda out, frames: make_flash(out / "carphone-flash.mp4"),
    "fade": lambda out, frames: make_fade(out / "carphone-fade.mp4"),
    "relit": lambda out, frames: make_relit(out / "carphone-relit.mp4"),
}


def clip_of(name: str, out: Path, frames: int) -> tuple[str, Path]:
    """A --clips entry and its video: one of CLIPS, or the path of a video file of one's own
    (held-out footage), named by its file name."""
    if name in CLIPS:
        return name, CLIPS[name](out, frames)
    path = Path(name)
    if not path.is_file():
        raise SystemExit(f"{name}: neither a clip of the benchmark ({', '.join(CLIPS)}) nor a video file")
    return path.stem, path.resolve()


def as_shown(styled: list[Path], record: dict) -> list[Path]:
    """The stylized frames as the output shows them, where the job kept a letterbox's bars black
    (the chunks draw them black, letterbox.py): copies under WORK/shown with the bars black. The
    stylizer's own frames hold what it made of the bars, a texture with --uncropped-bars, which no
    output shows and every figure below would count. The frames themselves where no bars were kept."""
    bars = record.get("stages", {}).get("stylize", {}).get("bars")
    if not bars or not styled:
        return styled
    top, bottom, left, right = bars
    shown = styled[0].parent.parent / "shown"
    shown.mkdir(exist_ok=True)
    for path in styled:
        frame = cv2.imread(str(path))
        height, width = frame.shape[:2]
        frame[:top], frame[height - bottom :], frame[:, :left], frame[:, width - right :] = 0, 0, 0, 0
        cv2.imwrite(str(shown / path.name), frame)
    return [shown / path.name for path in styled]


def decoded_frames(output: Path, styled: list[Path]) -> list[Path]:
    """The output file's frames as a player decodes them (H.264 at --crf, chroma at half
    resolution), at the stylized frames' size, under WORK/decoded by their names: what a viewer,
    and a scorer given the file alone, sees of them. The stylizer's own frames are lossless; at
    small sizes the encoding takes a good part of their pixel-scale grain."""
    from pipeline.decode import probe
    from pipeline.framestream import ALL, RawDecode

    height, width = cv2.imread(str(styled[0])).shape[:2]
    folder = styled[0].parent.parent / "decoded"
    folder.mkdir(exist_ok=True)
    decoded = []
    for path, frame in zip(styled, RawDecode(probe(output), (width, height), ALL)):
        cv2.imwrite(str(folder / path.name), frame[..., ::-1])
        decoded.append(folder / path.name)
    if len(decoded) < len(styled):
        raise SystemExit(f"{output}: {len(decoded)} frames decoded of the {len(styled)} stylized")
    return decoded


def laplacian_variances(paths: list[Path]) -> list[float]:
    """Each grey frame's variance of the Laplacian: a standard focus/blur measure."""
    values = []
    for p in paths:
        grey = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2GRAY).astype(np.float64)
        values.append(float(cv2.Laplacian(grey, cv2.CV_64F).var()))
    return values


def sharpness(paths: list[Path]) -> float:
    """The frames' mean variance of the Laplacian."""
    return float(np.mean(laplacian_variances(paths)))


def retention(styled: list[float], content: list[float]) -> float:
    """Sharpness retention from the frames' Laplacian variances (laplacian_variances), stylized and input."""
    edge = min(EDGE, len(styled) // 2)
    out = np.mean(styled[-edge:]) / np.mean(styled[:edge])
    src = np.mean(content[-edge:]) / np.mean(content[:edge])
    return float(out / src)


def opening(crisp: list[float], stats: list[dict]) -> float:
    """How sharp the shots open: each shot's first frame's Laplacian variance over the mean of its
    frames from the OPENING_AFTER-th on, where its opening has passed (1: it opens at its level;
    below, softer, sharpening over its first frames; above, a pop of grain it sheds), averaged over
    the shots with at least OPENING_AFTER frames after that; nan where none has."""
    from pipeline.temporal import SHOT_STARTS

    starts = [i for i, s in enumerate(stats) if s.get("start") in SHOT_STARTS] + [len(stats)]
    ratios = [
        crisp[a] / np.mean(crisp[a + OPENING_AFTER : b])
        for a, b in zip(starts, starts[1:])
        if b - a >= 2 * OPENING_AFTER
    ]
    return float(np.mean(ratios)) if ratios else float("nan")


def farneback_pairs(content: list[Path]) -> list:
    """Each content frame's pair with the one before, by Farneback's flow and its own masks (None
    for the first). The cut score is the stylizer's (frame_pair's, as its cut scan has it), so
    that the measures skip the clip's cuts and nothing else: Farneback's flow fails Ruder et al.'s
    checks on half the pixels of some of carphone's and bikes.mp4's pairs, and a cut score of its
    own would skip exactly the hardest pairs."""
    from dataclasses import replace

    from pipeline.flow import frame_pair, pair_of_flows
    from pipeline.flowstage import read_rgb

    def flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        grey = [cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (a, b)]
        # 3 levels, 7 px windows: frames of 64-256 px; 5 px polynomials smoothed by 1.1 (OpenCV's advice).
        return cv2.calcOpticalFlowFarneback(*grey, None, 0.5, 3, 7, 5, 5, 1.1, 0)

    frames = [read_rgb(p) for p in content]
    return [None] + [
        replace(pair_of_flows(a, b, flow(b, a), flow(a, b)), cut_score=frame_pair(a, b).cut_score)
        for a, b in zip(frames, frames[1:])
    ]


def farneback_flicker(styled: list[Path], pairs: list) -> float:
    """Flicker as `stylize flicker` measures it (the masked warping error, cuts skipped), but with
    Farneback's flow instead of the DIS flow the stylizer itself was held to: a stylizer could
    look steady by its own flow's masks alone, not by this one's."""
    from pipeline.flow import flicker
    from pipeline.flowstage import read_rgb
    from pipeline.video_defaults import DEFAULT_SCENE_THRESHOLD

    return flicker((read_rgb(p) for p in styled), pairs, scene_threshold=DEFAULT_SCENE_THRESHOLD)


def job_flow_flicker(styled: list[Path], work: Path, mode: str) -> float:
    """The flicker column's measure, the job's own DIS pairs and masks with its cuts skipped, the
    frame before warped by `mode`: "bilinear" is what the job's report gives of its own frames,
    "bicubic" the `flicker, bicubic` column. The bilinear warp blurs what it moves by a fraction
    of a pixel, so it scores a fine texture carried exactly from frame to frame (`--warp bicubic`)
    as flicker, and one laid out anew each frame barely worse; the bicubic one tells them apart
    (docs/video-quality.md, "Flicker by the measure's interpolation"). Every flow mode keeps its
    pairs for the report's flicker; NaN where a work directory holds none."""
    from pipeline.flow import FramePair, flicker
    from pipeline.flowstage import pair_name, read_rgb
    from pipeline.video_defaults import DEFAULT_SCENE_THRESHOLD

    numbers = [int(p.stem) for p in styled]
    # A pair carries frame n-1 onto frame n: none where frame n-1 is not listed (a blank left out).
    paths = [
        work / "flow" / pair_name(n - 1, n) if i and numbers[i - 1] == n - 1 else None for i, n in enumerate(numbers)
    ]
    pairs = [FramePair.load(path) if path and path.exists() else None for path in paths]
    if not any(pairs):
        return float("nan")
    return flicker((read_rgb(p) for p in styled), pairs, scene_threshold=DEFAULT_SCENE_THRESHOLD, mode=mode)


# The colours' distance (flow.histogram_distance) over which warp_error(blind=True) takes a pair
# for a cut: bikes.mp4's five cuts at 64-256 px stand at 0.49-0.88, its moves and cockatoo.mp4's
# at most 0.34.
COLOUR_CUT = 0.45


def warp_error(styled: list[Path], content: list[Path], pairs: list, *, blind: bool = False) -> float:
    """E_warp of Lai et al. (2018, "Learning Blind Video Temporal Consistency"), the measure of
    the video consistency literature, in units of 1e-3: the mean squared difference (RGB, 0..1,
    summed over the channels) between each output frame and the one before warped onto it, over
    a mask made from the input alone, M = exp(-50 |I_t - W(I_t-1)|^2). Farneback's flow; the
    same cuts skipped, or (`blind`) only the pairs whose colours change wholesale (COLOUR_CUT),
    whatever the stylizer took for a cut: a mode that cuts mid-shot (at a fast move, cuts.py)
    is scored on the pop it makes there. Neither the stylizer's flow nor its masks enter it:
    `stylize flicker`'s measure (flow.flicker) with M in place of the reliability mask, rescaled
    from 0..255."""
    from dataclasses import replace

    import torch

    from pipeline.flow import flicker, histogram_distance, to_tensor, warp
    from pipeline.flowstage import read_rgb
    from pipeline.video_defaults import DEFAULT_SCENE_THRESHOLD

    rgb = [read_rgb(p) for p in content]
    if blind:
        pairs = [pairs[0]] + [
            replace(pair, cut_score=float(histogram_distance(before, now) > COLOUR_CUT))
            for pair, before, now in zip(pairs[1:], rgb, rgb[1:])
        ]
    frames = [to_tensor(frame) for frame in rgb]
    masked = [None] + [
        replace(pair, reliability=torch.exp(-50 * (now - warp(before, pair.flow_back)).pow(2).sum(1))[0].numpy())
        for pair, before, now in zip(pairs[1:], frames, frames[1:])
    ]
    error = flicker((read_rgb(p) for p in styled), masked, scene_threshold=DEFAULT_SCENE_THRESHOLD)
    return 1e3 * error / 255**2


def flash_figures(work: Path, stats: list[dict]) -> dict:
    """The flashes a job went on through (its stylize stage's record; the `flash` clip has one at
    frame 31): their frames' mean iterations, and what they keep of the frames around them: the
    masked warping error from the frame before into the flash and from the flash into the frame
    after (by the flow of the content frames computed in the earlier one's light, as the stylizer
    computes a flash's pairs: flow.frame_pair(lit=True)), and the flash frames' grain (Laplacian
    variance) over that of the frames before and after. None without a flash."""
    from pipeline.flow import frame_pair, warping_error
    from pipeline.flowstage import read_rgb

    flashes = json.loads((work / "job.json").read_text())["stages"]["stylize"].get("flashes")
    if not flashes:
        return {}
    frame = {name: lambda i, name=name: work / name / f"{i:06d}.png" for name in ("styled", "frames")}
    figures: dict[str, list[float]] = {"iterations": [], "into": [], "out": [], "grain": []}
    for first, last in flashes:
        for key, (a, b) in {"into": (first - 1, first), "out": (last, last + 1)}.items():
            pair = frame_pair(read_rgb(frame["frames"](a)), read_rgb(frame["frames"](b)), lit=True)
            figures[key].append(warping_error(read_rgb(frame["styled"](a)), read_rgb(frame["styled"](b)), pair))
        figures["iterations"] += [stats[i - 1]["iterations"] for i in range(first, last + 1)]
        inside = sharpness([frame["styled"](i) for i in range(first, last + 1)])
        figures["grain"].append(inside / sharpness([frame["styled"](first - 1), frame["styled"](last + 1)]))
    return {key: float(np.mean(values)) for key, values in figures.items()}


def levels(video: Path, size: int) -> list[float]:
    """Each frame's mean luma, decoded at the jobs' size as the jobs decode."""
    from pipeline.decode import frame_size, probe
    from pipeline.fades import frame_light
    from pipeline.framestream import ALL, RawDecode

    info = probe(video)
    return [frame_light(frame)[0] for frame in RawDecode(info, frame_size(info, size), ALL)]


def input_fades(clip: Path, size: int):
    """The clip's fades and blank frames as a job at `size` with the default --overlay-share finds
    them (fades.py), whatever the job then does with them."""
    from pipeline.decode import frame_size, probe
    from pipeline.fades import frame_light, plan_fades
    from pipeline.framestream import ALL, RawDecode
    from pipeline.video_defaults import DEFAULT_OVERLAY_SHARE

    info = probe(clip)
    frames = RawDecode(info, frame_size(info, size), ALL)
    light = dict(enumerate((frame_light(frame, DEFAULT_OVERLAY_SHARE) for frame in frames), 1))
    return plan_fades(light, len(light))


def fade_figures(clip: Path, output: Path, size: int, stats: list[dict], plan) -> dict:
    """How the output follows the input's fades (`plan`: input_fades): the mean gap, over the
    fades' and the blank frames, between the output's level (mean luma over the median of its
    frames at full light) and the input's; the mean iterations of the fade frames that are no
    shot's first; the job's cold starts. None where the input has no fade or blank frame."""
    fading = sorted(plan.through() & set(range(1, len(stats) + 1)) | set(plan.blanks))
    if not fading:
        return {}
    shown, seen = levels(output, size)[: len(stats)], levels(clip, size)[: len(stats)]
    full = [i for i in range(1, len(stats) + 1) if i not in fading]
    out_full, in_full = (float(np.median([v[i - 1] for i in full])) for v in (shown, seen))
    gaps = [abs(shown[i - 1] / out_full - seen[i - 1] / in_full) for i in fading]
    cold = ("init", "cut", "blank")
    inside = [stats[i - 1]["iterations"] for i in fading if i not in plan.blanks and stats[i - 1]["start"] not in cold]
    return {
        "light_gap": float(np.mean(gaps)), "iterations": float(np.mean(inside)) if inside else float("nan"),
        "cold": sum(1 for s in stats if s.get("start") in ("init", "cut")), "frames": len(fading),
    }  # fmt: skip


def frame_losses(styled: list[Path], content: list[Path], style_path: Path, step: int) -> dict[str, float]:
    """The evaluator's losses (score.py), each frame loaded once and scored twice: the mean content
    and style loss of every step-th frame at the frames' own size and at the evaluator's reference
    size of 512 px, as `stylize score` gives them, and the style drift, the mean style loss (own
    size) of the last EDGE frames over that of the first EDGE (every one of them scored).

    At the frames' own size, under 128 px, the style loss is mostly relu4_1's term over a few dozen
    positions, which a copy of the style image's own layout meets best (objective.texture_weights);
    at 512 px every layer has as many positions as channels, and the loss is the texture's. Under a
    cap on the iterations a warm frame hands the next a texture short of its restyling, and the
    temporal loss holds the next to it: the texture fades along the shot, and the mean over a shot
    depends on its length. Drift shows it; the adaptive stopping rule keeps it near 1."""
    from pipeline.images import load_image
    from pipeline.score import REFERENCE_SIZE, Scorer

    scorer = Scorer([load_image(style_path)])
    edge = min(EDGE, len(styled) // 2)
    sampled, first, last = range(0, len(styled), step), range(edge), range(len(styled) - edge, len(styled))
    own, reference = {}, {}
    for i in sorted({*sampled, *first, *last}):
        out_image, content_image = load_image(styled[i]), load_image(content[i])
        own[i] = scorer(out_image, content_image, size=max(out_image.shape[-2:]))
        if i in sampled:
            reference[i] = scorer(out_image, content_image, size=REFERENCE_SIZE)

    def mean(scored: dict, term: str, frames: range) -> float:
        return float(np.mean([scored[i][term] for i in frames]))

    return {
        "content": mean(own, "content", sampled),
        "style": mean(own, "style", sampled),
        "style_drift": mean(own, "style", last) / mean(own, "style", first),
        "content_512": mean(reference, "content", sampled),
        "style_512": mean(reference, "style", sampled),
    }


def video_options(tree: Path) -> set[str]:
    """The long options of the `stylize video` of the checkout in `tree`."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "video", "--help"], cwd=tree, capture_output=True, text=True,
        env=os.environ | {"PYTHONPATH": str(tree), "COLUMNS": "200"},
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"--tree {tree}: `stylize video --help` failed:\n{done.stderr[-2000:]}")
    return set(re.findall(r"--[a-z][a-z0-9-]*", done.stdout))


def frame_rate(clip: Path) -> float:
    """The clip's frame rate as the job's own probe reads it (exact, a variable rate as the job
    resamples it), so that --frames N is N frames of any clip (the sample clip runs at 29.97 fps,
    the synthetic ones at 25)."""
    from pipeline.decode import probe
    from pipeline.errors import InputError

    try:
        return float(probe(clip).rate)
    except InputError as exc:
        raise SystemExit(str(exc)) from None


def run_mode(clip_name: str, clip: Path, mode: str, args: argparse.Namespace) -> dict:
    """One job, the clip stylized with the mode's options (and --'s), and its figures."""
    extra, job = MODES[mode], f"{clip_name}-{mode}"
    output = args.out / f"{job}.mp4"
    command = [
        sys.executable, "-m", "pipeline.cli", "video", str(clip), "--style", str(args.style), "-o", str(output),
        "--size", str(args.size), "--seed", "0", "--device", args.device, "--flow-workers", "1",
        *(["--keep-frames"] if "--keep-frames" in args.tree_options else []),
        *(["--duration", f"{args.frames / frame_rate(clip):.4f}"] if args.frames else []), *extra, *args.extra,
    ]  # fmt: skip
    began = time.perf_counter()
    tree = str(args.tree)
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": tree})
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{job}: stylize video failed ({done.returncode}):\n{done.stderr[-3000:]}")
    work = Path(str(output) + ".work")
    record = json.loads((work / "job.json").read_text())
    styled = as_shown(sorted((work / "styled").glob("[0-9]*.png")), record)
    content = sorted((work / "frames").glob("[0-9]*.png"))[: len(styled)]
    stats = [json.loads((work / "styled" / p.name).with_suffix(".json").read_text()) for p in styled]
    if args.decoded:
        styled = decoded_frames(output, styled)
    fades = input_fades(clip, args.size)
    fade = fade_figures(clip, output, args.size, stats, fades)
    # The input's blank frames (black or white, fades.py) are left out of the figures below, in
    # every mode alike: the default writes them as they are, after 1 iteration, where the
    # releases before stylized them. A fade's frames stay: as the stylizer saw and made them.
    # The job's time is over all its frames (a cold start on a blank frame costs what any does).
    seconds = float(np.mean([s["seconds"] for s in stats]))
    kept = [i for i in range(len(styled)) if i + 1 not in fades.blanks]
    styled, content, stats = [styled[i] for i in kept], [content[i] for i in kept], [stats[i] for i in kept]
    warm = [s for s in stats if s.get("start") not in ("init", "cut")]
    flicker = record.get("report", {}).get("flicker", {})
    losses = frame_losses(styled, content, args.style, args.score_every)
    pairs = farneback_pairs(content)
    crisp, crisp_input = laplacian_variances(styled), laplacian_variances(content)  # each frame read once
    return {
        "mode": mode, "frames": len(styled),
        "iterations_warm": float(np.mean([s["iterations"] for s in warm])) if warm else float("nan"),
        "seconds_per_frame": seconds,
        "wall_per_frame": wall / max(1, len(styled)),
        "redone": sum(1 for s in stats if s.get("redone")),
        "flicker": job_flow_flicker(styled, work, "bilinear") if args.decoded else flicker.get("output", float("nan")),
        "flicker_input": flicker.get("input", float("nan")),
        "flicker_bicubic": job_flow_flicker(styled, work, "bicubic"),
        "flicker_farneback": farneback_flicker(styled, pairs), "warp_error": warp_error(styled, content, pairs),
        "warp_error_blind": warp_error(styled, content, pairs, blind=True),
        **losses, "sharpness": float(np.mean(crisp)), "sharpness_input": float(np.mean(crisp_input)),
        "sharpness_retention": retention(crisp, crisp_input), "opening": opening(crisp, stats),
        "flash": flash_figures(work, stats),
        "fade": fade,
    }  # fmt: skip


def table(clip: str, rows: list[dict]) -> str:
    head = (
        "| mode | frames | iters/warm frame | redone | s/frame | flicker (input) | flicker, bicubic"
        " | flicker, Farneback | E_warp (1e-3) | E_warp, colour cuts only | content | style | content, 512 px"
        " | style, 512 px | style drift | sharpness (input) | sharpness ret. | opening |"
    )
    lines = [f"**{clip}**", "", head, "|" + "---|" * 18]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['frames']} | {r['iterations_warm']:.1f} | {r['redone']} | "
            f"{r['seconds_per_frame']:.2f} | "
            f"{r['flicker']:.4g} ({r['flicker_input']:.4g}) | {r['flicker_bicubic']:.4g} | "
            f"{r['flicker_farneback']:.4g} | {r['warp_error']:.4g} | {r.get('warp_error_blind', float('nan')):.4g} | "
            f"{r['content']:.4g} | {r['style']:.4g} | {r['content_512']:.4g} | {r['style_512']:.4g} | "
            f"{r['style_drift']:.3f} | {r['sharpness']:.4g} ({r['sharpness_input']:.4g}) | "
            f"{r['sharpness_retention']:.3f} | {r['opening']:.2f} |"
        )
    # The flashes the jobs went on through (flash_figures), how the output follows the input's fades (fade_figures).
    extra = {
        "flash": (
            "| mode | flash frames: iterations | warping error into the flash | out of it | grain / neighbours' |",
            lambda f: f"{f['iterations']:.1f} | {f['into']:.4g} | {f['out']:.4g} | {f['grain']:.2f}",
        ),
        "fade": (
            "| mode | fade, blank frames | output's level off the input's | fade frames: iterations | cold starts |",
            lambda f: f"{f['frames']} | {f['light_gap']:.3f} | {f['iterations']:.1f} | {f['cold']}",
        ),
    }
    for key, (head, figures) in extra.items():
        if any(r.get(key) for r in rows):
            lines += ["", head, "|" + "---|" * 5]
            lines += [f"| {r['mode']} | {figures(r[key])} |" for r in rows if r.get(key)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=150, help="frames per clip (0: the whole clip)")
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES), help="names in MODES, or all (every one)")
    parser.add_argument(
        "--clips",
        default="carphone,pan,shake",
        help=f"clip names ({', '.join(CLIPS)}), or paths of video files of your own",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--score-every", type=int, default=5, help="score every n-th frame's losses")
    parser.add_argument("--style", type=Path, default=STYLE, help="the style image (default: samples/ihc.png)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose stylizer runs (default: this one)")
    parser.add_argument("--out", type=Path, help="default: bench-results/video/SIZEpx-FRAMESf")
    parser.add_argument(
        "--decoded", action="store_true",
        help="score the output files' frames as decoded (OUT/video_quality-decoded.md), not the stylizer's own",
    )  # fmt: skip
    parser.add_argument("extra", nargs="*", help="more `stylize video` options for every mode (after --)")
    args = parser.parse_args()
    if not args.style.is_file():
        raise SystemExit(f"--style {args.style}: no such file")
    modes = list(MODES) if args.modes == "all" else args.modes.split(",")
    if unknown := [m for m in modes if m not in MODES]:
        raise SystemExit(f"--modes: unknown {', '.join(unknown)} (known: {', '.join(MODES)})")
    args.tree = args.tree.resolve()
    args.tree_options = video_options(args.tree)
    wanted = {o for m in modes for o in [*MODES[m], *args.extra] if o.startswith("--")}
    if missing := sorted(wanted - args.tree_options):
        raise SystemExit(f"--tree {args.tree}: its stylize video has no {', '.join(missing)}")
    args.out = args.out or ROOT / f"bench-results/video/{args.size}px-{args.frames}f"
    args.out.mkdir(parents=True, exist_ok=True)
    report, results = [f"`{' '.join(sys.argv)}`", ""], {}
    # Every clip found or made before the first job runs: a mistyped path fails at once, not hours in.
    clips = [clip_of(name, args.out, args.frames) for name in args.clips.split(",")]
    names = [name for name, _ in clips]
    if twice := sorted({name for name in names if names.count(name) > 1}):
        # Their jobs and rows would be one another's: OUT/NAME-MODE.mp4, results[NAME].
        raise SystemExit(f"--clips: two clips named {', '.join(twice)} (a video is named by its file name)")
    for clip_name, clip in clips:
        rows = [run_mode(clip_name, clip, m, args) for m in modes]
        results[clip_name] = rows
        report += [table(clip_name, rows), ""]
        print(report[-2], "\n", flush=True)
    name = "video_quality-decoded" if args.decoded else "video_quality"
    (args.out / f"{name}.md").write_text("\n".join(report))
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
