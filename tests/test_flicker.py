"""`stylize flicker` on an output made from part of its input: `stylize video --start --duration
--every-nth` writes its frames from 0 s at the reduced rate, so nothing in the output says which
frames of the input it was made from; the flicker command takes the same three options and
measures the reference on exactly those frames (the video job's own decoder), and refuses, in one
line, counts that still differ.

The output is made end to end by the CLI (real VGG-19, 32 px, one iteration per frame) from a
14-frame testsrc2 clip; the check on the reference frames is a copy of the same part cut by
ffmpeg's own trim and select filters, losslessly encoded.
"""

from __future__ import annotations

import json
from pathlib import Path

import ffmpeg
import pytest

from helpers import STYLE, make_clip
from pipeline.cli import main
from pipeline.decode import ffmpeg_binary, probe
from pipeline.errors import InputError
from pipeline.flicker import video_flicker
from pipeline.manifest import read_json
from pipeline.settings import StyleSettings
from pipeline.videojob import VideoJob

# Frames 2..11 of the clip (0.08 s to 0.48 s at 25 fps), every 2nd one: 2, 4, 6, 8, 10.
RANGE = ["--start", "0.08", "--duration", "0.4", "--every-nth", "2"]
FRAMES = 5


def cli(args: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out.strip(), captured.err.strip()


@pytest.fixture(scope="module")
def preview(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("flicker-range")
    clip = make_clip(d / "clip.mp4", frames=14)
    output = d / "preview.mp4"
    code = main(
        [
            str(a)
            for a in [
                "video",
                clip,
                "-s",
                STYLE,
                "-o",
                output,
                *RANGE,
                "--size",
                32,
                "--iterations",
                1,
                "--iterations-first",
                1,
                "--flow-workers",
                1,
                "--device",
                "cpu",
                "-q",
            ]
        ]
    )
    assert code == 0
    # The same frames cut by ffmpeg's filters instead of our decoder: trim keeps frames 2..11
    # (end_frame is the first one dropped), select every 2nd of those, timestamps made regular
    # again; lossless H.264 in the clip's own yuv420p, so decoding gives the very same pixels.
    video = ffmpeg.input(str(clip))["v"].trim(start_frame=2, end_frame=12).setpts("PTS-STARTPTS")
    video = video.filter("select", "not(mod(n,2))").setpts("N/FRAME_RATE/TB")
    cut = d / "cut.mkv"
    video.output(str(cut), vcodec="libx264", qp=0, pix_fmt="yuv420p").global_args("-nostdin").run(
        cmd=ffmpeg_binary(), quiet=True
    )
    return {"clip": clip, "output": output, "work": d / "preview.mp4.work", "cut": cut}


def test_flicker_measures_an_every_nth_preview_on_the_frames_it_was_made_from(preview, capsys):
    assert probe(preview["output"]).frames == FRAMES and probe(preview["cut"]).frames == FRAMES
    code, out, err = cli(["flicker", preview["output"], "-r", preview["clip"], *RANGE, "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert (report["frames"], report["pairs"], report["width"], report["height"]) == (FRAMES, FRAMES - 1, 32, 20)
    assert (report["start"], report["duration"], report["every_nth"]) == (0.08, 0.4, 2)

    # The reference frames are the job's own content frames: the job measured the same figure.
    job = read_json(preview["work"] / "job.json")
    assert job["stages"]["decode"]["frames"] == FRAMES
    assert report["input"] == pytest.approx(job["report"]["flicker"]["input"], rel=1e-9)
    # ... and the same part cut by ffmpeg, given as the whole reference, measures the same.
    code, out, err = cli(["flicker", preview["output"], "-r", preview["cut"], "--json"], capsys)
    assert code == 0, err
    cut = json.loads(out)
    assert cut["frames"] == FRAMES and (cut["start"], cut["duration"], cut["every_nth"]) == (0, None, 1)
    assert cut["input"] == pytest.approx(report["input"], rel=1e-9)
    assert cut["output"] == pytest.approx(report["output"], rel=1e-9)

    # The figure depends on the alignment: one frame later gives as many frames, another figure.
    shifted = ["--start", "0.12", "--duration", "0.4", "--every-nth", "2"]
    code, out, err = cli(["flicker", preview["output"], "-r", preview["clip"], *shifted, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["frames"] == FRAMES and json.loads(out)["input"] != pytest.approx(report["input"], rel=1e-3)

    # The text report says which part of the reference was measured.
    code, out, err = cli(["flicker", preview["output"], "-r", preview["clip"], *RANGE], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[1].split()[:2] == ["input", f"{report['input']:.4g}"]
    assert f"over {FRAMES - 1} frame pairs at 32x20; reference from 0.08 s, for 0.4 s, 1 frame in 2" in lines[2]


def test_counts_that_still_differ_are_one_line_naming_both_files_counts_and_what_to_do(preview, capsys):
    output, clip = preview["output"], preview["clip"]
    cases = [
        # The whole clip: the frame rates give the --every-nth away.
        (
            [],
            [
                f"{output}: has 5 frames at 12.5 fps",
                f"{clip} has 14 at 25 fps (the whole video)",
                "--start, --duration and --every-nth",
                "(the frame rates suggest --every-nth 2)",
            ],
        ),
        # --every-nth right, the range not given: no hint about the rate, the options still named.
        (
            ["--every-nth", 2],
            [f"{clip} has 7 at 25 fps (1 frame in 2)", "--start, --duration and --every-nth stylize video was given"],
        ),
        (
            ["--start", 0.08, "--every-nth", 3],
            [f"{clip} has 4 at 25 fps (from 0.08 s, 1 frame in 3)", "suggest --every-nth 2"],
        ),
    ]
    for extra, words in cases:
        code, out, err = cli(["flicker", output, "-r", clip, *extra], capsys)
        assert (
            code == 2
            and out == ""
            and len(err.splitlines()) == 1
            and err.startswith("error: ")
            and "Traceback" not in err
        ), err
        for word in words:
            assert word in err, (word, err)
    assert "suggest" not in cli(["flicker", output, "-r", clip, "--every-nth", 2], capsys)[2]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--start", -1], "--start -1.0: must be a number of seconds >= 0"),
        (["--start", "inf"], "--start inf"),
        (["--start", 5], "--start 5: "),  # the clip lasts 0.56 s
        (["--duration", 0], "--duration 0.0: must be a number of seconds > 0"),
        (["--duration", "nan"], "--duration nan"),
        (["--every-nth", 0], "--every-nth 0: must be between 1 and 10000"),
        (["--every-nth", 10**6], "--every-nth 1000000"),
    ],
)
def test_bad_range_options_are_one_line_errors_with_exit_2(preview, capsys, extra, message):
    reference = preview["clip"]
    code, out, err = cli(["flicker", reference, "-r", reference, *extra], capsys)
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err


@pytest.mark.parametrize(
    "preset, threshold, message",
    [
        ("slow", 0.6, "--flow-preset 'slow': must be ultrafast, fast or medium"),
        ("medium", 1.5, "--scene-threshold 1.5: must be between 0 and 1 (1: never cut)"),
    ],
)
def test_the_flicker_command_and_the_video_job_refuse_a_flow_option_in_the_same_words(
    preview, tmp_path, preset, threshold, message
):
    """The Python API reaches the checks the command line's choices stand in front of."""
    reference = preview["clip"]
    with pytest.raises(InputError) as flicker:
        video_flicker(reference, reference=reference, preset=preset, scene_threshold=threshold)
    with pytest.raises(InputError) as video:
        VideoJob(input=reference, styles=(STYLE,), output=tmp_path / "out.mp4", settings=StyleSettings(size=32),
                 flow_preset=preset, scene_threshold=threshold)  # fmt: skip
    assert str(flicker.value) == str(video.value) == message
