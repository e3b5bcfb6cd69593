"""Fades to and from black or white (fades.py): found from the cut scan's light records, their
frames stylized at the picture's full light and faded on output, blank frames left black or
white, on synthetic clips whose fades are known frame by frame.

The jobs use the tiny random VGG of helpers.py (this is about the plumbing: which frame is seen,
started and written how); what a fade does to a real stylization is measured by the benchmark's
`fade` clip (docs/video-quality.md)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import Recorder, build_tiny_vgg, decoded_frames, mtimes, write_clip
from pipeline.cli import main
from pipeline.cuts import CutScan
from pipeline.decode import frame_size, probe
from pipeline.fades import LIT_CUT, MIN_GAIN, Fade, FadePlan, frame_light, plan_fades
from pipeline.framerange import FrameRange
from pipeline.manifest import read_json, write_json
from pipeline.report_video import write_video_report
from pipeline.status import status_lines
from pipeline.stylize import StyleSettings
from pipeline.video import VideoJob, run_video
from pipeline.video_defaults import DEFAULT_SCENE_THRESHOLD, OWN_DEFAULTS

STYLE = Path(__file__).resolve().parents[1] / "samples" / "ihc.png"
WIDTH, HEIGHT = 64, 48
# Frame 1 black, a fade in over frames 2-4, full light 5-10, a fade out over 11-13, black 14-15.
GAINS = [0.0, 0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25, 0.0, 0.0]


# Frames 1-3 black but for a caption, a fade in over frames 4-6 under the caption, full light 7-10.
CAPTION_GAINS = [0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1, 1, 1, 1]


def captioned(rgb: np.ndarray) -> np.ndarray:
    """A frame with a caption over it at full light, whatever the picture's: a bar of 2 x 60 px
    at level 220 near the bottom, 3.9% of the frame (a copyright line on a title card)."""
    frame = rgb.copy()
    frame[42:44, 2:62] = 220
    return frame


# Frames 1-2 black (the second a dark blue), a fade in over frames 3-8 cut before it reaches full
# light (at frame 9) to another, brighter picture at full light (frames 9-13).
CUT_GAINS = [0.15, 0.3, 0.45, 0.6, 0.75, 0.9]
CUT_FRAMES = 13


def picture(index: int, seed: int = 5, low: int = 40, grain: float = 1.5) -> np.ndarray:
    """A textured background with a textured square moving 2 px a frame (frame `index`, from 1),
    its levels from `low` to 215, its noise blurred by a Gaussian of sigma `grain` px (0: not)."""
    rng = np.random.default_rng(seed)
    background, square = (rng.integers(low, 216, (h, w, 3), dtype=np.uint8) for h, w in ((HEIGHT, WIDTH), (20, 20)))
    if grain:
        background, square = (cv2.GaussianBlur(image, (0, 0), grain) for image in (background, square))
    frame = background.copy()
    x = 8 + 2 * (index - 1)
    frame[14:34, x : x + 20] = square
    return frame


def faded(rgb: np.ndarray, gain: float, colour: int = 0) -> np.ndarray:
    """What an editor's fade makes of a frame: every pixel's distance to `colour` times `gain`."""
    return np.clip(np.rint(colour + (rgb.astype(np.float32) - colour) * gain), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def fade_clip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fade-clips")
    return write_clip(folder / "fade.mp4", [faded(picture(i), g) for i, g in enumerate(GAINS, 1)])


@pytest.fixture(scope="module")
def caption_clip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("caption-clips")
    return write_clip(folder / "caption.mp4", [captioned(faded(picture(i), g)) for i, g in enumerate(CAPTION_GAINS, 1)])


@pytest.fixture(scope="module")
def cut_fade_clip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cut-fade-clips")
    frames = [np.zeros((HEIGHT, WIDTH, 3), np.uint8), np.full((HEIGHT, WIDTH, 3), (0, 0, 24), np.uint8)]
    frames += [faded(picture(i), g) for i, g in enumerate(CUT_GAINS, 3)]
    # Coarser blobs: DIS finds some flow between two fine noises at this size (a lit score of 0.6-0.9).
    frames += [picture(i, seed=3, low=100, grain=3) for i in range(len(frames) + 1, CUT_FRAMES + 1)]
    return write_clip(folder / "cut-fade.mp4", frames)


def make_job(clip: Path, out_dir: Path, **overrides) -> VideoJob:
    settings = StyleSettings(size=WIDTH, iterations=3, seed=1)
    options = {"iterations_first": 5, "device": "cpu", "flow": "dis", "flow_workers": 1, "stop_tolerance": 0.0}
    return VideoJob(input=clip, styles=(STYLE,), output=out_dir / "out.mp4", settings=settings, **options | overrides)


def frame_stats(work: Path) -> list[dict]:
    return [read_json(p) for p in sorted((work / "styled").glob("[0-9]*.json"))]


def frames_of(video: Path) -> list[np.ndarray]:
    """Every frame of a clip or output of WIDTH x HEIGHT, RGB."""
    return list(np.frombuffer(decoded_frames(video), np.uint8).reshape(-1, HEIGHT, WIDTH, 3))


def rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


# --- finding them ---------------------------------------------------------------------------------


def lights(levels: list[float], colour: int = 0) -> dict[int, list[float]]:
    """Frames' light records for frames at these fractions of a picture's light (mean 110, spread 50)."""
    return {
        i: [round(colour + (110 - colour) * g, 3), round(50 * g, 3)] for i, g in enumerate(levels, 1)
    }  # fmt: skip


def test_fades_are_the_frames_whose_light_rises_away_from_black_or_white_frames():
    # A fade out to black over frames 4-8, two black frames; its gains are the light's.
    levels = [1, 1, 1, 0.9, 0.7, 0.5, 0.3, 0.1, 0, 0]
    plan = plan_fades(lights(levels), len(levels))
    assert [(f.first, f.last, f.way) for f in plan.fades] == [(4, 8, "to black")]
    assert plan.fades[0].gains == pytest.approx([0.9, 0.7, 0.5, 0.3, 0.1], abs=1e-3)
    assert plan.blanks == {9: 0, 10: 0} and plan.cuts() == {9, 11} and plan.through() == {4, 5, 6, 7, 8, 9}
    assert plan.inside_blanks() == {10}
    assert plan.gain(6) == (pytest.approx(0.5, abs=1e-3), 0) and plan.gain(3) is None and plan.gain(10) == (0.0, 0)
    assert plan.texts() == ["fade 4-8 (to black)", "blank 9-10"]

    # From white: the light is the distance to 255.
    white = plan_fades(lights([0, 0.2, 0.5, 0.8, 1, 1], colour=255), 6)
    assert [(f.first, f.last, f.way) for f in white.fades] == [(2, 4, "from white")] and white.blanks == {1: 255}

    # A cut to black after two dimmer frames is no fade: too short to be one.
    cut = plan_fades(lights([1, 1, 0.8, 0.6, 0, 0, 1]), 7)
    assert cut.fades == () and cut.blanks == {5: 0, 6: 0} and cut.cuts() == {5, 7}

    # Light that dims without reaching black (a cloud, a dimmer) is the picture's own: nothing.
    assert not plan_fades(lights([1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]), 7)
    # A dark frame with detail in it (a night scene) is no blank frame.
    assert not plan_fades({1: [8.0, 6.0], 2: [8.0, 6.0]}, 2)


def test_a_scene_cut_inside_a_fades_rise_ends_the_fade():
    # A fade in over frames 3-6 cut at frame 7 to a brighter picture: across the cut the light
    # still rises, so without the cut the fade ran on to frame 7, its reference, and hid the cut.
    levels = [0, 0, 0.1, 0.2, 0.3, 0.4, 1, 1, 1]
    across = plan_fades(lights(levels), 9)
    assert [(f.first, f.last) for f in across.fades] == [(3, 6)] and 7 in across.through()
    plan = plan_fades(lights(levels), 9, cuts={7})
    assert [(f.first, f.last, f.way) for f in plan.fades] == [(3, 5, "from black")]
    assert plan.fades[0].gains == pytest.approx([0.25, 0.5, 0.75], abs=1e-3)  # of frame 6's light, the brightest
    assert 7 not in plan.through()
    # A fade out, walked back from the black frames, stops at a cut the same way: frame 3 (the
    # first of its shot) is its reference, frame 2 the shot before.
    levels = [1, 1, 0.5, 0.4, 0.3, 0.2, 0.1, 0, 0]
    assert [(f.first, f.last) for f in plan_fades(lights(levels), 9).fades] == [(3, 7)]
    plan = plan_fades(lights(levels), 9, cuts={3})
    assert [(f.first, f.last, f.way) for f in plan.fades] == [(4, 7, "to black")] and 3 not in plan.through()
    # A cut too near the black frames leaves too short a rise for a fade.
    assert plan_fades(lights(levels), 9, cuts={6}).fades == ()
    # A cut among the darkest frames (under LIT_LEVEL: frame 2's light is 8) is the noise's: the fade goes on.
    dark = plan_fades(lights([0, 0.05, 0.1, 0.2, 0.3, 1, 1]), 7, cuts={3})
    assert [(f.first, f.last) for f in dark.fades] == [(2, 5)]


def test_a_fade_frame_is_seen_at_full_light_and_shown_at_its_own():
    """content() undoes the fade to within its quantization; output() does it again."""
    picture_ = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for gain, colour in ((0.8, 0), (0.3, 0), (0.5, 255)):
        plan = FadePlan(fades=(Fade(2, 4, colour, (gain,) * 3),))
        light = plan.gain(2)
        assert light == (pytest.approx(gain, abs=1e-3), colour)
        seen = plan.content(2, faded(picture_, gain, colour)).astype(int)
        assert np.abs(seen - picture_).max() <= 0.5 / gain + 1
        assert np.abs(plan.output(2, picture_).astype(int) - faded(picture_, gain, colour)).max() <= 1
    # Under MIN_GAIN the picture is lifted by at most 1 / MIN_GAIN: a few levels of noise stay dark.
    deep = FadePlan(fades=(Fade(2, 4, 0, (0.02,) * 3),))
    assert deep.content(2, faded(picture_, 0.02)).mean() == pytest.approx(picture_.mean() * 0.02 / MIN_GAIN, rel=0.15)


def test_the_scan_records_each_frames_light(fade_clip):
    frames = frames_of(fade_clip)
    plan = plan_fades({i: frame_light(f) for i, f in enumerate(frames, 1)}, len(frames))
    assert plan.texts() == ["fade 2-4 (from black)", "fade 11-13 (to black)", "blank 1, 14-15"]
    assert [g for f in plan.fades for g in f.gains] == pytest.approx([0.25, 0.5, 0.75, 0.75, 0.5, 0.25], abs=0.02)


def test_a_caption_over_black_leaves_the_frames_blank_and_the_fade_the_pictures():
    """The light without its brightest 5% (--overlay-share): a caption over black frames leaves
    them blank, and over a fade it is no part of the fade's light, so the gains are the picture's.
    Measured over the whole frame (0, the releases before') the captioned frames are a dark picture
    with detail in it, and no fade starts from them."""
    frames = [captioned(faded(picture(i), g)) for i, g in enumerate(CAPTION_GAINS, 1)]
    plan = plan_fades({i: frame_light(f, 0.05) for i, f in enumerate(frames, 1)}, len(frames))
    assert plan.texts() == ["fade 4-6 (from black)", "blank 1-3"] and plan.cuts() == {1, 4}
    assert plan.fades[0].gains == pytest.approx([0.25, 0.5, 0.75], abs=0.01)
    assert not plan_fades({i: frame_light(f) for i, f in enumerate(frames, 1)}, len(frames))
    # Over white, a dark caption alike; a lit part over a twentieth of a black frame is the picture's.
    white = [255 - captioned(255 - faded(picture(i), g, 255)) for i, g in enumerate(CAPTION_GAINS, 1)]
    assert plan_fades({i: frame_light(f, 0.05) for i, f in enumerate(white, 1)}, 10).texts() == [
        "fade 4-6 (from white)", "blank 1-3"
    ]  # fmt: skip
    lamp = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    lamp[10:20, 10:26] = 200  # 5.2% of the frame
    assert frame_light(lamp, 0.05)[2:4] != [0.0, 0.0] and not plan_fades({1: frame_light(lamp, 0.05)}, 1)


# --- a job ----------------------------------------------------------------------------------------


def test_a_fade_is_stylized_at_full_light_and_faded_on_output(fade_clip, tmp_path):
    job = make_job(fade_clip, tmp_path / "fades", keep_frames=True)
    run_video(job, vgg=build_tiny_vgg())
    stage = read_json(job.work / "job.json")["stages"]["stylize"]
    assert stage["fades"] == [[2, 4, "from black"], [11, 13, "to black"]] and stage["blanks"] == [[1, 1], [14, 15]]
    # The blank frames are shots of their own: the fade in starts afresh from its first frame.
    assert stage["shots"] == [[1, 1], [2, 13], [14, 15]]
    assert stage["settings"]["ignore_fades"] is False
    stats = frame_stats(job.work)
    # Within the fades no cut, whatever their pairs score: the frames go on from the frame before.
    assert [(s["start"], s["iterations"]) for s in stats] == (
        [("blank", 1), ("cut", 5)] + [("warped", 3)] * 11 + [("blank", 1)] * 2
    )
    # The stylizer saw each fade frame at the picture's full light ...
    full = np.mean([rgb(job.work / "frames" / f"{i:06d}.png").mean() for i in range(5, 11)])
    for index in (2, 3, 4, 11, 12, 13):
        assert rgb(job.work / "frames" / f"{index:06d}.png").mean() == pytest.approx(full, rel=0.06)
    # ... and the output shows each at its own: the stylized frame faded by its gain, blank ones black.
    output = frames_of(job.output)
    plan = plan_fades(
        {i: v for i, v in enumerate((frame_light(faded(picture(i), g)) for i, g in enumerate(GAINS, 1)), 1)}, 15
    )
    for index in range(1, 16):
        expected = plan.output(index, rgb(job.work / "styled" / f"{index:06d}.png")).astype(float)
        shown = output[index - 1].astype(float)  # H.264's 4:2:0 smears the tiny network's grain: the levels
        assert np.abs(shown.mean(axis=(0, 1)) - expected.mean(axis=(0, 1))).max() < 3, index
    assert max(output[i].mean() for i in (0, 13, 14)) < 2
    assert output[11].mean() < 0.6 * output[7].mean() < output[7].mean()
    log = (job.work / "job.log").read_text()
    assert "scan: 15 frames, no scene cuts, fade 2-4 (from black), fade 11-13 (to black), blank 1, 14-15" in log
    status = "\n".join(status_lines(job.work))
    # The shots begun for blank frames are no scene cuts, in the status and on the report's page.
    assert "3 shots, fade 2-4 (from black), fade 11-13 (to black), blank 1, 14-15 (faded on output)" in status
    page = (job.work / "report.html").read_text()
    assert "<tr><th>fades (faded on output)</th><td>fade 2-4 (from black)" in page
    assert "<tr><th>scene cuts</th><td>none</td></tr>" in page
    assert "at the picture's full light: the output shows them faded." in page
    assert not list((job.work / "chunks").glob(".fade-*"))  # the chunks' faded frames are gone
    assert "warning" not in log
    # A shot that begins after blank frames records no figures for its pair, whatever its cut
    # score (here over the threshold; on the sample clip faded, 0.27 and 0.45): left out as a cut's.
    record = read_json(job.work / "styled" / "000014.json")
    assert record["flicker"]["output"] is None
    record["flicker"]["cut_score"] = 0.27
    write_json(job.work / "styled" / "000014.json", record)
    (job.work / "report-files" / "frames.json").unlink()  # the report's cache of the frames' records
    write_video_report(job.work)  # raised a TypeError on the pair's missing figures
    assert "<tr><th>per pair, so far</th>" in (job.work / "report.html").read_text()

    # --ignore-fades --light-cuts: every frame stylized as it comes, its cuts by the scores as they
    # are, as the releases before; their settings (hash).
    plain = make_job(fade_clip, tmp_path / "plain", keep_frames=True, ignore_fades=True, light_cuts=True)
    run_video(plain, vgg=build_tiny_vgg())
    stages = read_json(plain.work / "job.json")["stages"]
    assert "fades" not in stages["stylize"] and "ignore_fades" not in stages["stylize"]["settings"]
    assert "fades" not in stages["decode"]["settings"] and "light_cuts" not in stages["stylize"]["settings"]
    # The releases before took the fades' frames for scene cuts: each a cold start, its own look.
    assert [s["start"] for s in frame_stats(plain.work)].count("cut") >= 4
    assert rgb(plain.work / "frames" / "000003.png").mean() == pytest.approx(0.5 * full, rel=0.06)
    # --ignore-fades alone: the fade's frames as they come, but no cut between two of them (the
    # same picture in another light, shotplan.py); the black frame's pair is a cut all the same.
    dark = make_job(fade_clip, tmp_path / "dark", ignore_fades=True)
    run_video(dark, vgg=build_tiny_vgg())
    assert [s["start"] for s in frame_stats(dark.work)][1:13] == ["cut"] + ["warped"] * 11, frame_stats(dark.work)


def test_a_title_card_is_written_as_it_is_and_the_fade_in_under_its_caption_followed(caption_clip, tmp_path):
    """Black frames with a caption are blank: written as they are, caption and all, in one
    iteration, a shot of their own; the fade in under the caption is stylized at full light and
    faded on output. --overlay-share 0, as the releases before: the captioned black frames are
    stylized as a picture, in the style's light, and the fade in is none."""
    job = make_job(caption_clip, tmp_path / "card", keep_frames=True)
    run_video(job, vgg=build_tiny_vgg())
    stage = read_json(job.work / "job.json")["stages"]["stylize"]
    assert stage["blanks"] == [[1, 3]] and stage["fades"] == [[4, 6, "from black"]]
    assert stage["shots"] == [[1, 3], [4, 10]] and stage["settings"]["overlay_share"] == 0.05
    assert [(s["start"], s["iterations"]) for s in frame_stats(job.work)][:4] == [("blank", 1)] * 3 + [("cut", 5)]
    clip, output = frames_of(caption_clip), frames_of(job.output)
    for index in range(3):  # the caption as it was, the rest black
        assert np.abs(output[index].astype(int) - clip[index].astype(int)).mean() < 2
    assert output[0][42:44, 2:62].mean() > 180
    full = np.mean([rgb(job.work / "frames" / f"{i:06d}.png")[:40].mean() for i in range(7, 11)])
    assert rgb(job.work / "frames" / "000004.png")[:40].mean() == pytest.approx(full, rel=0.06)
    assert output[3][:40].mean() < 0.4 * output[8][:40].mean()
    assert "fade 4-6 (from black), blank 1-3 (faded on output)" in "\n".join(status_lines(job.work))

    plain = make_job(caption_clip, tmp_path / "plain", overlay_share=0.0)
    run_video(plain, vgg=build_tiny_vgg())
    stages = read_json(plain.work / "job.json")["stages"]
    assert "fades" not in stages["stylize"] and "overlay_share" not in stages["stylize"]["settings"]
    assert "overlay_share" not in stages["decode"]["settings"]["fades"]
    # The black under the caption stylized (the tiny network's light: 18 on average at the time), not kept.
    assert output[0][:40].mean() < 1 and frames_of(plain.output)[0][:40].mean() > 8


def test_the_flicker_command_names_the_fades_and_changes_of_light_a_job_finds(
    fade_clip, caption_clip, tmp_path, capsys
):  # fmt: skip
    """`stylize flicker` plans the reference's shots as a job with the defaults does (shotplan.py):
    the fades and blank frames, and a lasting change of light that is no cut (it listed it as one,
    and a fade's pairs over the threshold as cuts)."""
    step = write_clip(
        tmp_path / "step.mp4", [picture(i) for i in range(1, 6)] + [faded(picture(i), 0.5) for i in range(6, 11)]
    )
    found = {}
    for name, clip in (("fade", fade_clip), ("caption", caption_clip), ("step", step)):
        assert main(["flicker", str(clip), "--reference", str(clip), "--json"]) == 0
        found[name] = json.loads(capsys.readouterr().out)
    assert {k: found["fade"][k] for k in ("cuts", "relit", "fades", "blanks")} == {
        "cuts": [], "relit": [], "fades": [[2, 4, "from black"], [11, 13, "to black"]], "blanks": [[1, 1], [14, 15]]
    }  # fmt: skip
    assert (found["caption"]["fades"], found["caption"]["blanks"]) == ([[4, 6, "from black"]], [[1, 3]])
    assert (found["step"]["cuts"], found["step"]["relit"], found["step"]["pairs"]) == ([], [6], 8)
    assert main(["flicker", str(step), "--reference", str(step)]) == 0
    assert "over 8 frame pairs at 64x48; change of light at frame 6 skipped)" in capsys.readouterr().out
    assert main(["flicker", str(fade_clip), "--reference", str(fade_clip)]) == 0
    assert "; fade 2-4 (from black); fade 11-13 (to black); blank 1, 14-15)" in capsys.readouterr().out


def begun_before_and_resumed(clip: Path, tmp_path: Path, stop_at: int, **options) -> tuple[dict, list[str]]:
    """A job begun with `options` (a release before's defaults), stopped before frame `stop_at`
    and run again with every such option left unset (video_defaults.OWN_DEFAULTS): its finished
    frames kept, only the others stylized. Returns its stylize stage's record and the run's messages."""
    began = make_job(clip, tmp_path, **options)
    with pytest.raises(Recorder.Stop):
        run_video(began, events=Recorder(stop_at=stop_at), vgg=build_tiny_vgg())
    finished = {name: t for name, t in mtimes(began.work / "styled").items() if name.endswith(".json")}
    events = Recorder()
    run_video(make_job(clip, tmp_path, defaulted=frozenset(OWN_DEFAULTS)), events=events, vgg=build_tiny_vgg())
    total = len(frames_of(clip))
    assert finished and sorted(events.started) == [i for i in range(1, total + 1) if f"{i:06d}.json" not in finished]
    assert {k: v for k, v in mtimes(began.work / "styled").items() if k in finished} == finished
    return read_json(began.work / "job.json")["stages"]["stylize"], events.messages


def test_a_job_of_the_release_before_goes_on_measuring_the_whole_frame(caption_clip, tmp_path):
    """A job begun by the release before (the captioned frames stylized), stopped and run again
    with the option left unset: its finished frames kept, its plan as it began."""
    stage, messages = begun_before_and_resumed(caption_clip, tmp_path, 4, overlay_share=0.0)
    assert "blanks" not in stage
    assert any("--overlay-share 0 (the defaults now: 0.05;" in m for m in messages), messages


def test_a_job_killed_in_a_fade_resumes_to_the_same_output(fade_clip, tmp_path):
    whole = make_job(fade_clip, tmp_path / "whole")
    run_video(whole, vgg=build_tiny_vgg())
    job = make_job(fade_clip, tmp_path / "killed")
    with pytest.raises(Recorder.Stop):
        run_video(job, events=Recorder(stop_at=12), vgg=build_tiny_vgg())
    # A kill while a chunk's faded frames were being written leaves their folder: the next run removes it.
    leftover = job.work / "chunks" / ".fade-killed"
    leftover.mkdir(parents=True)
    (leftover / "000011.png").write_bytes(b"half")
    events = Recorder()
    run_video(job, events=events, vgg=build_tiny_vgg())
    assert events.started == [12, 13, 14, 15, 1]  # the longest shot first, then the others
    assert not leftover.exists()
    assert decoded_frames(job.output) == decoded_frames(whole.output)


def test_a_job_of_the_release_before_goes_on_ignoring_fades(fade_clip, tmp_path):
    """A job begun by the release before (its frames as they came), stopped and run again with the
    option left unset: its finished frames kept, the option named beside the default now."""
    stage, messages = begun_before_and_resumed(fade_clip, tmp_path, 6, ignore_fades=True, light_cuts=True)
    assert "fades" not in stage
    # And its cuts by the scores as they are, whatever the light: that release's too.
    assert any("--ignore-fades, --light-cuts (the defaults now: off, off;" in m for m in messages), messages


def scan_records(work: Path, name: str) -> list:
    """One of the cut scan's per-frame records (cuts.py), all blocks' in order."""
    return [value for path in sorted((work / "cuts").glob("[0-9]*.json")) for value in read_json(path).get(name, [])]


def test_a_scene_cut_inside_a_fade_starts_a_shot(cut_fade_clip, tmp_path):
    """The clip's fade in is cut, before it reaches full light, to a brighter picture: its light
    rises on across the cut. The cut scan's lit scores (the flow of each pair in the light of its
    first frame) tell the cut from the fade's steps, whose own scores are a cut's too: the fade
    ends before the cut, which starts a shot. --light-cuts: as the release before, the fade
    runs on to the picture after the cut and hides it."""
    job = make_job(cut_fade_clip, tmp_path / "cut", keep_frames=True)
    run_video(job, vgg=build_tiny_vgg())
    stage = read_json(job.work / "job.json")["stages"]["stylize"]
    # The two black frames are one shot, whatever their pair scores (here a cut's: 1.0).
    assert stage["fades"] == [[3, 7, "from black"]] and stage["shots"] == [[1, 2], [3, 8], [9, 13]]
    assert stage["settings"]["light_cuts"] is False
    assert [s["start"] for s in frame_stats(job.work)][7:9] == ["warped", "cut"]
    scores, lit = scan_records(job.work, "scores"), scan_records(job.work, "lit")
    assert len(lit) == CUT_FRAMES and lit[8] > LIT_CUT and scores[1] > LIT_CUT  # frame 9's pair; frame 2's
    # The fade's pairs that score as cuts as they are are scored in the light too, and are no cuts there.
    fade_pairs = [i for i in range(4, 9) if scores[i - 1] > DEFAULT_SCENE_THRESHOLD]
    assert fade_pairs and all(lit[i - 1] is not None and lit[i - 1] < LIT_CUT for i in fade_pairs), (scores, lit)
    log = (job.work / "job.log").read_text()
    assert "scan: 13 frames, scene cut at frame 9, fade 3-7 (from black), blank 1-2" in log
    # The frames of the fade at the light of frame 8, the brightest before the cut.
    full = rgb(job.work / "frames" / "000008.png").mean()
    assert rgb(job.work / "frames" / "000004.png").mean() == pytest.approx(full, rel=0.06)

    across = make_job(cut_fade_clip, tmp_path / "across", light_cuts=True)
    run_video(across, vgg=build_tiny_vgg())
    stage = read_json(across.work / "job.json")["stages"]["stylize"]
    assert stage["fades"] == [[3, 8, "from black"]] and stage["shots"] == [[1, 1], [2, 2], [3, 13]]
    assert "light_cuts" not in stage["settings"] and not scan_records(across.work, "lit")


def test_the_same_picture_in_another_light_is_no_scene_cut(tmp_path):
    """A lasting change of light (the picture at half its light from frame 6 on, as a lamp switched
    off): its pair scores as a cut (1.0), but in the light of frame 5 the flow finds the picture (a
    lit score of 0.2): the shot goes on, frame 6 from frame 5. --light-cuts: a cut there and a cold
    start, as the releases before."""
    frames = [picture(i) for i in range(1, 6)] + [faded(picture(i), 0.5) for i in range(6, 11)]
    clip = write_clip(tmp_path / "step.mp4", frames)
    job = make_job(clip, tmp_path / "relit")
    run_video(job, vgg=build_tiny_vgg())
    stage = read_json(job.work / "job.json")["stages"]["stylize"]
    assert stage["shots"] == [[1, 10]] and "fades" not in stage
    assert [s["start"] for s in frame_stats(job.work)] == ["init"] + ["warped"] * 9
    assert scan_records(job.work, "scores")[5] > DEFAULT_SCENE_THRESHOLD  # frame 6's pair, as it is
    assert "scan: 10 frames, no scene cuts, change of light at frame 6 (no cuts)" in (job.work / "job.log").read_text()
    assert "change of light at frame 6 (no cuts)" in "\n".join(status_lines(job.work))
    assert "<tr><th>changes of light (no cuts)</th><td>6</td></tr>" in (job.work / "report.html").read_text()

    cut = make_job(clip, tmp_path / "cut", light_cuts=True)
    run_video(cut, vgg=build_tiny_vgg())
    assert read_json(cut.work / "job.json")["stages"]["stylize"]["shots"] == [[1, 5], [6, 10]]
    assert "relit" not in read_json(cut.work / "job.json")["stages"]["stylize"]
    assert [s["start"] for s in frame_stats(cut.work)][5] == "cut"


def test_the_scans_lit_scores_are_the_same_from_several_workers(cut_fade_clip, tmp_path):
    """The cut scan's pairs go to a pool of workers in order: the records, the lit scores and each
    score's two parts among them, are the same from one worker and from two."""
    info = probe(cut_fade_clip)
    records = []
    for workers in (1, 2):
        scan = CutScan(tmp_path / str(workers), key="k", preset="medium", workers=workers, lit=True, parts=True)
        records.append(scan.run(info, frame_size(info, WIDTH), FrameRange(), lambda done: None))
    assert records[0] == records[1] and records[0].lit_cuts() == {9}
    scan = records[0]
    assert sorted(scan.colours) == sorted(scan.unreliable) == sorted(scan.scores) == list(range(2, scan.total + 1))
    assert all(score == pytest.approx(max(scan.colours[i], scan.unreliable[i])) for i, score in scan.scores.items())


def test_a_scan_killed_between_its_blocks_resumes_to_the_same_records(cut_fade_clip, tmp_path, monkeypatch):
    """Blocks of 4 frames: the last block's record lost (as by a kill before it was written), the
    next run looks at its frames only, and the scan's records (the lit scores among them, each
    block's in line with its frames) are the whole run's."""
    monkeypatch.setattr("pipeline.cuts.SCAN_BLOCK", 4)
    info, size = probe(cut_fade_clip), frame_size(probe(cut_fade_clip), WIDTH)
    scan = CutScan(tmp_path, key="k", preset="medium", lit=True, parts=True)
    whole = scan.run(info, size, FrameRange(), lambda done: None)
    blocks = sorted((tmp_path / "cuts").glob("[0-9]*.json"))
    assert [p.name for p in blocks] == ["000001.json", "000005.json", "000009.json", "000013.json"]
    blocks[-2].unlink(), blocks[-1].unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in blocks[:2]}
    assert scan.recorded() is None
    assert scan.run(info, size, FrameRange(), lambda done: None) == whole and whole.lit_cuts() == {9}
    assert len(whole.unreliable) == whole.total - 1  # the parts too, block by block
    assert {p.name: p.stat().st_mtime_ns for p in blocks[:2]} == kept  # frames 1-8 not looked at again


def test_a_job_of_the_release_before_goes_on_with_light_cuts(cut_fade_clip, tmp_path):
    """A job begun by the release before (its fades ran on across cuts), stopped and run again
    with the option left unset: its finished frames kept, its plan as it began."""
    stage, messages = begun_before_and_resumed(cut_fade_clip, tmp_path, 4, light_cuts=True)
    assert stage["shots"] == [[1, 1], [2, 2], [3, 13]]
    assert any("--light-cuts (the defaults now: off;" in m for m in messages), messages


@pytest.mark.parametrize("flow", ["none", "independent"])
def test_fades_are_followed_without_optical_flow_too(fade_clip, tmp_path, flow):
    """--flow none and independent have no shots to cut, but the same fades: seen at full light,
    faded on output, blank frames left black after one iteration."""
    job = make_job(fade_clip, tmp_path, keep_frames=True, flow=flow)
    run_video(job, vgg=build_tiny_vgg())
    stats = frame_stats(job.work)
    assert [i for i, s in enumerate(stats, 1) if s["start"] == "blank"] == [1, 14, 15]
    assert all(s["iterations"] == 1 for s in stats if s["start"] == "blank")
    full = np.mean([rgb(job.work / "frames" / f"{i:06d}.png").mean() for i in range(5, 11)])
    assert rgb(job.work / "frames" / "000012.png").mean() == pytest.approx(full, rel=0.06)
    output = frames_of(job.output)
    assert max(output[i].mean() for i in (0, 13, 14)) < 2 and output[11].mean() < 0.6 * output[7].mean()
