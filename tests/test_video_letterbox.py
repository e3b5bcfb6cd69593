"""A letterbox's black bars (letterbox.py): found from the cut scan's records of each frame's black
edges, cropped off the frames the stylizer sees and drawn black over the stylized frames as the
chunks are encoded, on synthetic clips whose bars are known. The jobs use the tiny random VGG of
helpers.py, which paints its own texture over black as the real network paints the style's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import Recorder, build_tiny_vgg, decoded_frames, mtimes, write_clip
from pipeline.flow import FramePair, warp
from pipeline.flowstage import pair_name
from pipeline.images import resize_to
from pipeline.letterbox import Letterbox, frame_bars
from pipeline.manifest import read_json
from pipeline.optimize import EarlyStop
from pipeline.report_video import write_video_report
from pipeline.status import status_lines
from pipeline.stylize import StyleSettings, Stylizer
from pipeline.temporal import FrameStart, held_to, optimize_frame
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
    settings = overrides.pop("settings", StyleSettings(size=WIDTH, iterations=3, seed=1))
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
    assert Letterbox((6, 0, 0, 0), cropped_from=(48, 64)).text() == "black bars 6 px top (kept black, not stylized)"
    # The picture between them is stylized alone only where VGG-19 has room (32 px a side).
    assert Letterbox((6, 6, 0, 0)).fits(HEIGHT, WIDTH) and not Letterbox((6, 6, 17, 16)).fits(HEIGHT, WIDTH)
    assert Letterbox((9, 8, 0, 0)).fits(49, 64) and not Letterbox((9, 8, 0, 0)).fits(48, 64)


def test_a_frame_within_its_bars_is_optimized_as_its_picture_alone():
    """The start cropped, its temporal term's targets and masks too, the content cropped: the same
    optimization as of the picture given alone with its frame's size (for the style's scale and
    the layers' weights), pasted between the content frame's own bars."""
    box = Letterbox((6, 4, 0, 3), cropped_from=(HEIGHT, WIDTH))
    generator = torch.Generator().manual_seed(3)
    content, init, target = (torch.rand(1, 3, HEIGHT, WIDTH, generator=generator) for _ in range(3))
    mask = (torch.rand(1, 1, HEIGHT, WIDTH, generator=generator) > 0.3).float()
    stylizer = Stylizer([torch.rand(1, 3, 32, 32, generator=generator)], StyleSettings(size=WIDTH, seed=1),
                        vgg=build_tiny_vgg())  # fmt: skip
    stop = EarlyStop(tolerance=1e-3, window=3)
    start = FrameStart(init, 12, held=[(target, mask)], temporal_weight=2.0, source="warped", stop=stop)
    result, redone = optimize_frame(stylizer, content, start.within(box), None, None)

    picture = (slice(None), slice(None), slice(6, HEIGHT - 4), slice(0, WIDTH - 3))
    alone = stylizer.stylize(
        content[picture], init=init[picture].contiguous(), iterations=12, stop=stop, history_size=start.history,
        extra_losses=held_to([(target[picture], mask[picture])], 2.0), frame_size=(HEIGHT, WIDTH),
    )  # fmt: skip
    assert not redone and result.iterations == alone.iterations
    assert torch.equal(result.image[picture], alone.image) and result.final_terms == alone.final_terms
    outside = torch.ones(HEIGHT, WIDTH, dtype=torch.bool)
    outside[6 : HEIGHT - 4, : WIDTH - 3] = False
    assert torch.equal(result.image[..., outside], content[..., outside])  # the bars as they came
    assert start.within(None) is start
    # An --init-image of its own size is brought to the frame's before its picture is taken.
    image = torch.rand(1, 3, 30, 40, generator=generator)
    assert torch.equal(FrameStart(image, 5).within(box).init, resize_to(image, (HEIGHT, WIDTH))[picture])


def test_a_pair_confined_to_the_picture_warps_as_the_cropped_film_would():
    """A pixel whose source the flow puts in a bar is unreliable, as one outside the frame is, and
    the warp takes its value from the picture's edge, as the warp of a cropped frame replicates its
    border: the bars' black never reaches the picture. Elsewhere the pair is as it was."""
    box = Letterbox((6, 4, 0, 3))
    generator = torch.Generator().manual_seed(5)
    flow = np.zeros((HEIGHT, WIDTH, 2), np.float32)
    flow[..., 0] = torch.rand(HEIGHT, WIDTH, generator=generator).numpy() * 4 - 2  # sideways, up to 2 px
    flow[..., 1] = -3.0  # each pixel's source 3 rows above it: the picture moves down
    pair = FramePair(flow, np.ones((HEIGHT, WIDTH), np.float32), 0.1)
    confined = box.confine(pair)
    reliable = confined.reliability[6 : HEIGHT - 4, : WIDTH - 3]
    assert (reliable[:3] == 0).all() and confined.reliability[:6].max() == 0  # sources in the top bar
    picture_x = np.arange(WIDTH - 3)[None, :] + flow[6 : HEIGHT - 4, : WIDTH - 3, 0]
    sideways = (picture_x >= -0.5) & (picture_x <= WIDTH - 3 - 0.5)  # the right bar's columns, likewise
    assert np.array_equal(reliable[3:] == 1, sideways[3:]) and confined.cut_score == 0.1
    image = torch.rand(1, 3, HEIGHT, WIDTH, generator=generator)
    cropped = warp(box.crop(image).contiguous(), np.ascontiguousarray(flow[6 : HEIGHT - 4, : WIDTH - 3]))
    assert torch.allclose(box.crop(warp(image, confined.flow_back)), cropped, atol=1e-5)
    assert not torch.allclose(box.crop(warp(image, pair.flow_back)), cropped, atol=1e-2)  # the bars in it


def test_a_picture_is_stylized_at_its_frames_style_scale_and_layer_weights(monkeypatch):
    """Cropping the bars changes the work, not the look: a pillarboxed frame's picture (48x48 of
    48x64) gets the style image at the frame's long side, not its own, and its style layers
    weighed by the frame's positions (objective.texture_weights)."""
    generator = torch.Generator().manual_seed(4)
    style, picture, image = (torch.rand(1, 3, *shape, generator=generator) for shape in ((40, 40), (48, 48), (48, 48)))

    def style_term(frame_size=None, **settings) -> float:
        stylizer = Stylizer(
            [style], StyleSettings(size=WIDTH, full_layer_weights=True, **settings), vgg=build_tiny_vgg()
        )
        return float(stylizer.objective(picture, frame_size=frame_size)(image)["style"])

    # The style image scaled to the frame's long side: as a style scale of 64/48 would for the picture alone.
    assert style_term((HEIGHT, WIDTH)) == pytest.approx(style_term(style_scale=WIDTH / 48), rel=1e-6)
    assert style_term((HEIGHT, WIDTH)) != pytest.approx(style_term(), rel=1e-3)
    counted = []
    monkeypatch.setattr(
        "pipeline.stylize.texture_weights", lambda *args: counted.append(args[-2:]) or tuple(args[1])
    )  # fmt: skip
    Stylizer([style], StyleSettings(size=WIDTH), vgg=build_tiny_vgg()).objective(picture, frame_size=(HEIGHT, WIDTH))
    assert counted == [(HEIGHT, WIDTH)]


def test_a_pictures_cold_start_runs_through_its_frames_scales():
    """A shot's cold first frame with --crop-bars: the picture (128x128 of a 128x170 frame) runs
    through as many coarse-to-fine scales as its frame would (3), not as its own long side gives (2)."""
    generator = torch.Generator().manual_seed(5)
    style, picture = (torch.rand(1, 3, *shape, generator=generator) for shape in ((40, 40), (128, 128)))
    stylizer = Stylizer([style], StyleSettings(size=170, iterations=3, multiscale_threshold=64), vgg=build_tiny_vgg())

    def scales(frame_size=None) -> set[int]:
        seen = []
        stylizer.stylize(picture, callback=lambda progress: seen.append(progress.scales), frame_size=frame_size)
        return set(seen)

    assert scales() == {2} and scales((128, 170)) == {3}


def test_the_bars_stay_black_in_the_output(bars_clip, tmp_path):
    """The stylizer paints its texture over the bars; the output shows them black, the picture
    between them stylized. --crop-bars: the stylizer sees the picture alone, its frames keep the
    bars black; --stylize-bars: the bars as the stylizer made them, as the releases before."""
    job = make_job(bars_clip, tmp_path / "kept", keep_frames=True)
    run_video(job, vgg=build_tiny_vgg())
    stage = read_json(job.work / "job.json")["stages"]["stylize"]
    assert stage["bars"] == [BAR, BAR, 0, 0] and stage["settings"]["stylize_bars"] is False
    assert "cropped" not in stage and "crop_bars" not in stage["settings"]
    output = frames_of(job.output)
    pictures = [i for i in range(FRAMES) if i != 4]
    styled = styled_frames(job.work, pictures)
    assert styled[:, : BAR - 1].mean() > 8  # the texture the stylizer laid over the bars
    # Black, but for H.264's ringing from the picture's edge within its 8x8 blocks.
    assert output[pictures][:, : BAR - 1].mean() < 1.5 and output[pictures][:, HEIGHT - BAR + 1 :].mean() < 1.5
    middle = slice(BAR + 2, HEIGHT - BAR - 2)  # clear of 4:2:0's chroma at the edges
    # H.264's 4:2:0 smears the tiny network's grain: the picture's levels.
    shown, made = (frames[:, middle].mean(axis=(0, 1, 2)) for frames in (output[pictures], styled))
    assert np.abs(shown - made).max() < 3
    kept = "black bars 6 px top, 6 px bottom (kept black)"
    assert kept in (job.work / "job.log").read_text()
    assert kept in "\n".join(status_lines(job.work))
    write_video_report(job.work)
    assert f"<tr><th>letterbox</th><td>{kept}</td></tr>" in (job.work / "report.html").read_text()

    cropped = make_job(bars_clip, tmp_path / "cropped", keep_frames=True, crop_bars=True)
    run_video(cropped, vgg=build_tiny_vgg())
    stage = read_json(cropped.work / "job.json")["stages"]["stylize"]
    assert stage["bars"] == [BAR, BAR, 0, 0] and stage["cropped"] == [HEIGHT, WIDTH]
    assert stage["settings"]["crop_bars"] is True
    alone = styled_frames(cropped.work, pictures)
    assert alone[:, :BAR].mean() < 1 and alone[:, HEIGHT - BAR :].mean() < 1  # the content's own black
    assert frames_of(cropped.output)[pictures][:, : BAR - 1].mean() < 1.5
    content = np.stack([picture(i + 1) for i in pictures])[:, middle].astype(float)
    assert np.abs(alone[:, middle] - content).mean() > 8  # the picture stylized, not passed through
    assert "black bars 6 px top, 6 px bottom (kept black, not stylized)" in "\n".join(status_lines(cropped.work))
    # A warm frame's reliable share is the picture's: the confined pair's bars, unreliable, are cropped off.
    confined = (
        Letterbox((BAR, BAR, 0, 0), cropped_from=(HEIGHT, WIDTH))
        .confine(FramePair.load(cropped.work / "flow" / "000003.npz"))
        .reliability
    )
    recorded = read_json(cropped.work / "styled" / "000003.json")["reliable"]
    assert recorded == round(float(confined[BAR : HEIGHT - BAR].mean()), 4) > confined.mean() + 0.1

    plain = make_job(bars_clip, tmp_path / "plain", keep_frames=True, stylize_bars=True)
    run_video(plain, vgg=build_tiny_vgg())
    stage = read_json(plain.work / "job.json")["stages"]["stylize"]
    assert "bars" not in stage and "stylize_bars" not in stage["settings"]
    bars_shown = frames_of(plain.output)
    assert bars_shown[pictures][:, : BAR - 1].mean() > 8
    # The stylizer made the same frames, bars and all: only the output differs.
    assert np.array_equal(styled_frames(plain.work, pictures), styled)


def test_a_later_pass_records_the_pictures_reliable_share(bars_clip, tmp_path):
    """--passes with --crop-bars: a frame's later pass records its neighbours' reliable shares over
    the picture alone, as a warm frame does, not over the whole frame whose confined bars are unreliable."""
    job = make_job(bars_clip, tmp_path, keep_frames=True, crop_bars=True, passes=2)
    run_video(job, vgg=build_tiny_vgg())
    letterbox = Letterbox((BAR, BAR, 0, 0), cropped_from=(HEIGHT, WIDTH))
    backward = letterbox.confine(FramePair.load(job.work / "flow" / pair_name(4, 3))).reliability  # n1 of pass 2
    recorded = read_json(job.work / "styled" / "000003.json")["pass_start"]["reliable_n1"]
    assert recorded == round(float(backward[BAR : HEIGHT - BAR].mean()), 4) > backward.mean() + 0.1


def styled_frames(work: Path, frames: list[int]) -> np.ndarray:
    """The stylized frames (0-based indices) as the job saved them."""
    return np.stack([read_rgb(work / "styled" / f"{i + 1:06d}.png") for i in frames]).astype(float)


def test_a_picture_too_small_to_stylize_alone_keeps_its_bars_and_the_log_says_so(bars_clip, tmp_path):
    """At 48 px wide (48x36) the picture between the bars is 28 rows: VGG-19's deepest layers need
    32, so --crop-bars stylizes the whole frame, and the log says why."""
    job = make_job(bars_clip, tmp_path, crop_bars=True, settings=StyleSettings(size=48, iterations=3, seed=1))
    run_video(job, vgg=build_tiny_vgg())
    stage = read_json(job.work / "job.json")["stages"]["stylize"]
    assert stage["bars"] and "cropped" not in stage and stage["settings"]["crop_bars"] is True
    assert "--crop-bars: the picture between the bars is under 32 px a side" in (job.work / "job.log").read_text()


def test_a_job_of_the_release_before_goes_on_stylizing_its_bars(bars_clip, tmp_path):
    """A job begun by the release before (its bars stylized), stopped and run again with the option
    left unset: its finished frames and chunks kept, its bars as that release made them. Given
    --crop-bars then, it is no conflict with the --stylize-bars the job keeps (there is nothing to
    crop), which the same options given together on the command line are (test_bad_inputs.py)."""
    began = make_job(bars_clip, tmp_path, stylize_bars=True)
    with pytest.raises(Recorder.Stop):
        run_video(began, events=Recorder(stop_at=4), vgg=build_tiny_vgg())
    finished = {name: t for name, t in mtimes(began.work / "styled").items() if name.endswith(".json")}
    events = Recorder()
    again = make_job(bars_clip, tmp_path, crop_bars=True, defaulted=frozenset(OWN_DEFAULTS))
    run_video(again, events=events, vgg=build_tiny_vgg())
    assert finished and sorted(events.started) == [i for i in range(1, FRAMES + 1) if f"{i:06d}.json" not in finished]
    assert "bars" not in read_json(began.work / "job.json")["stages"]["stylize"]
    assert any("--stylize-bars (the defaults now: off;" in m for m in events.messages), events.messages


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))
