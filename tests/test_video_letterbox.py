"""A letterbox's black bars (letterbox.py): found from the cut scan's records of each frame's black
edges, drawn black over the stylized frames as the chunks are encoded, on synthetic clips whose
bars are known. The jobs use the tiny random VGG of helpers.py, which paints its own texture over
black as the real network paints the style's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import Recorder, build_tiny_vgg, decoded_frames, mtimes, write_clip
from pipeline.letterbox import Letterbox, frame_bars
from pipeline.manifest import read_json
from pipeline.report_video import write_video_report
from pipeline.status import status_lines
from pipeline.stylize import StyleSettings
from pipeline.video import VideoJob, run_video
from pipeline.video_defaults import OWN_DEFAULTS

STYLE = Path(__file__).resolve().parents[1] / "samples" / "ihc.png"
WIDTH, HEIGHT, BAR = 64, 48, 6
FRAMES = 8


def picture(index: int) -> np.ndarray:
    """A textured picture moving 1 px a frame, its levels 40..215, no black in it."""
    rng = np.random.default_rng(5)
    wide = rng.integers(40, 216, (HEIGHT, WIDTH + FRAMES, 3), dtype=np.uint8)
    return wide[:, index : index + WIDTH].copy()


def letterboxed(rgb: np.ndarray, top: int = BAR, bottom: int = BAR) -> np.ndarray:
    """The frame with black bars over its top and bottom rows."""
    frame = rgb.copy()
    frame[:top], frame[HEIGHT - bottom :] = 0, 0
    return frame


@pytest.fixture(scope="module")
def bars_clip(tmp_path_factory) -> Path:
    """Frames 1-8 letterboxed by 6 rows at the top and the bottom; frame 5 black (a blank frame,
    all bar), frame 7 with its top bar 9 rows high (a dark sky): the range's bars are 6 and 6."""
    frames = [letterboxed(picture(i)) for i in range(1, FRAMES + 1)]
    frames[4] = np.zeros_like(frames[4])
    frames[6] = letterboxed(picture(7), top=9)
    return write_clip(tmp_path_factory.mktemp("bars") / "bars.mp4", frames)


def make_job(clip: Path, out_dir: Path, **overrides) -> VideoJob:
    settings = StyleSettings(size=WIDTH, iterations=3, seed=1)
    options = {"iterations_first": 5, "device": "cpu", "flow": "dis", "flow_workers": 1, "stop_tolerance": 0.0}
    return VideoJob(input=clip, styles=(STYLE,), output=out_dir / "out.mp4", settings=settings, **options | overrides)


def frames_of(video: Path) -> np.ndarray:
    return np.frombuffer(decoded_frames(video), np.uint8).reshape(-1, HEIGHT, WIDTH, 3)


def test_a_frames_black_edges_and_the_ranges_bars():
    frame = letterboxed(picture(1))
    frame[:, :2] = 3  # a pillarbox's columns too, near black
    assert frame_bars(frame) == [BAR, BAR, 2, 0]
    assert frame_bars(picture(1)) == [0, 0, 0, 0]
    assert frame_bars(np.zeros((4, 6, 3), np.uint8)) == [4, 4, 6, 6]  # all bar
    # The fewest of each side over the frames that are not blank; none where a side has none.
    assert Letterbox.of({1: [6, 6, 0, 0], 2: [9, 6, 0, 0], 3: [48, 48, 64, 64]}, blanks={3}) == Letterbox((6, 6, 0, 0))
    assert Letterbox.of({1: [6, 6, 0, 0], 2: [0, 6, 0, 0]}) == Letterbox((0, 6, 0, 0))
    assert Letterbox.of({1: [0, 0, 0, 0]}) is None and Letterbox.of({1: [4, 4, 6, 6]}, blanks={1}) is None
    assert Letterbox((6, 6, 0, 0)).boxes() == [
        {"x": "0", "y": "0", "w": "iw", "h": "6"}, {"x": "0", "y": "ih-6", "w": "iw", "h": "6"}
    ]  # fmt: skip
    assert Letterbox((0, 0, 8, 8)).text() == "black bars 8 px left, 8 px right (kept black)"


def test_the_bars_stay_black_in_the_output(bars_clip, tmp_path):
    """The stylizer paints its texture over the bars; the output shows them black, the picture
    between them stylized. --stylize-bars: the bars as the stylizer made them, as the releases before."""
    job = make_job(bars_clip, tmp_path / "kept", keep_frames=True)
    run_video(job, vgg=build_tiny_vgg())
    stage = read_json(job.work / "job.json")["stages"]["stylize"]
    assert stage["bars"] == [BAR, BAR, 0, 0] and stage["settings"]["stylize_bars"] is False
    output = frames_of(job.output)
    pictures = [i for i in range(FRAMES) if i != 4]
    styled = np.stack([np.asarray(read_rgb(job.work / "styled" / f"{i + 1:06d}.png")) for i in pictures])
    assert styled[:, : BAR - 1].mean() > 8  # the texture the stylizer laid over the bars
    # Black, but for H.264's ringing from the picture's edge within its 8x8 blocks.
    assert output[pictures][:, : BAR - 1].mean() < 1.5 and output[pictures][:, HEIGHT - BAR + 1 :].mean() < 1.5
    middle = slice(BAR + 2, HEIGHT - BAR - 2)  # clear of 4:2:0's chroma at the edges
    # H.264's 4:2:0 smears the tiny network's grain: the picture's levels.
    shown, made = (frames[:, middle].mean(axis=(0, 1, 2)) for frames in (output[pictures], styled))
    assert np.abs(shown - made).max() < 3
    log = (job.work / "job.log").read_text()
    assert "black bars 6 px top, 6 px bottom (kept black)" in log
    assert "black bars 6 px top, 6 px bottom (kept black)" in "\n".join(status_lines(job.work))
    write_video_report(job.work)
    assert (
        "<tr><th>letterbox</th><td>black bars 6 px top, 6 px bottom (kept black)</td></tr>"
        in (job.work / "report.html").read_text()
    )

    plain = make_job(bars_clip, tmp_path / "plain", keep_frames=True, stylize_bars=True)
    run_video(plain, vgg=build_tiny_vgg())
    stage = read_json(plain.work / "job.json")["stages"]["stylize"]
    assert "bars" not in stage and "stylize_bars" not in stage["settings"]
    bars_shown = frames_of(plain.output)
    assert bars_shown[pictures][:, : BAR - 1].mean() > 8
    # The stylizer made the same frames, bars and all: only the output differs.
    again = np.stack([np.asarray(read_rgb(plain.work / "styled" / f"{i + 1:06d}.png")) for i in pictures])
    assert np.array_equal(again, styled)


def test_a_job_of_the_release_before_goes_on_stylizing_its_bars(bars_clip, tmp_path):
    """A job begun by the release before (its bars stylized), stopped and run again with the option
    left unset: its finished frames and chunks kept, its bars as that release made them."""
    began = make_job(bars_clip, tmp_path, stylize_bars=True)
    with pytest.raises(Recorder.Stop):
        run_video(began, events=Recorder(stop_at=4), vgg=build_tiny_vgg())
    finished = {name: t for name, t in mtimes(began.work / "styled").items() if name.endswith(".json")}
    events = Recorder()
    run_video(make_job(bars_clip, tmp_path, defaulted=frozenset(OWN_DEFAULTS)), events=events, vgg=build_tiny_vgg())
    assert finished and sorted(events.started) == [i for i in range(1, FRAMES + 1) if f"{i:06d}.json" not in finished]
    assert "bars" not in read_json(began.work / "job.json")["stages"]["stylize"]
    assert any("--stylize-bars (the defaults now: off;" in m for m in events.messages), events.messages


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))
