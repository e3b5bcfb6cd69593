"""Flicker-free video on CPU (issue 5): the flow stage, the flow-warped start with the temporal
loss, scene cuts, early stopping, and the flicker metric, on synthetic clips with known motion: a
textured square moving SHIFT px to the right per frame over a static textured background, and a
hard cut to another such shot.

Plumbing tests use the tiny random VGG of helpers.py; the flicker comparison uses the real VGG-19 at
64 px, where the tiny network's style is too weak to flicker much.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from helpers import Recorder, build_tiny_vgg, decoded_frames, lbfgs_capacities, mtimes, write_clip
from pipeline.atomic import EXIT_STATUS, RENAME_COUNT_ENV
from pipeline.cli import main
from pipeline.cuts import Flash, Scan
from pipeline.errors import PipelineError
from pipeline.flow import FramePair, frame_pair, to_tensor, warp
from pipeline.flowstage import FlowStage, PairPlan
from pipeline.images import load_image
from pipeline.manifest import read_json
from pipeline.optimize import EarlyStop
from pipeline.settings import HISTORY_SIZE, option_text
from pipeline.status import status_lines
from pipeline.stylize import StyleSettings
from pipeline.temporal import (
    SETTLE_ITERATIONS,
    STALL_ITERATIONS,
    FlowWarmStart,
    IndependentStart,
    StartPlan,
    closest_first,
    resample,
    settle_shares,
)
from pipeline.video import VideoJob, run_video
from pipeline.video_defaults import (
    DEFAULT_FIRST_ROUNDS,
    DEFAULT_FIRST_STOP_TOLERANCE,
    DEFAULT_ITERATIONS_TRACKED,
    DEFAULT_LBFGS_HISTORY,
    DEFAULT_SCENE_THRESHOLD,
    DEFAULT_STOP_STYLE_TOLERANCE,
    DEFAULT_STOP_TOLERANCE,
    DEFAULT_TRACKED_SHARE,
    FIRST_STOP_WINDOW,
    LBFGS_HISTORY_BYTES,
    MAX_FLASH_FRAMES,
    MAX_LBFGS_HISTORY,
    MAX_OVERLAY_SHARE,
    MAX_SETTLE_SHIFT,
    MIN_FIRST_ITERATIONS,
    OWN_DEFAULTS,
    STOP_WINDOW,
    UNRELIABLE_STARTS,
    WARP_MODES,
)
from pipeline.workdir import FrameStore

STYLE = Path(__file__).resolve().parents[1] / "samples" / "ihc.png"
WIDTH, HEIGHT, SQUARE, SHIFT, TOP, LEFT = 64, 48, 20, 2, 14, 8


def texture(seed: int, height: int, width: int) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 1.5)


def shot(frames: int, seed: int) -> list[np.ndarray]:
    """The square moving SHIFT px per frame; each seed gives other textures (a new scene)."""
    background, square = texture(seed, HEIGHT, WIDTH), texture(seed + 1, SQUARE, SQUARE)
    out = []
    for i in range(frames):
        frame = background.copy()
        x = LEFT + SHIFT * i
        frame[TOP : TOP + SQUARE, x : x + SQUARE] = square
        out.append(frame)
    return out


def pan(shifts: list[int], seed: int = 0) -> list[np.ndarray]:
    """A camera panning across a wide texture, each frame shifts[i] px right of the one before:
    one shot, at whatever pace."""
    wide = texture(seed, HEIGHT, WIDTH + sum(shifts))
    return [wide[:, x : x + WIDTH].copy() for x in np.cumsum([0, *shifts])]


def flashed(frame: np.ndarray) -> np.ndarray:
    """The frame under a camera's flash: far brighter, its highlights burnt out."""
    return np.clip(frame * 2.0 + 60, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("temporal-clips")
    moving = shot(8, seed=0)
    return {
        "cut": write_clip(d / "cut.mp4", shot(4, seed=0) + shot(4, seed=10)),  # the cut: frame 5
        "flash": write_clip(d / "flash.mp4", moving[:4] + [flashed(moving[4])] + moving[5:]),  # the flash: frame 5
        "moving": write_clip(d / "moving.mp4", shot(6, seed=0)),
        "still": write_clip(d / "still.mp4", shot(1, seed=0) * 4),
        "short": write_clip(d / "short.mp4", shot(4, seed=0)),
        "whip": write_clip(d / "whip.mp4", pan([2, 2, 2, 10, 10, 10, 2, 2])),  # frames 5-7 10 px each
    }


def make_job(clip: Path, out_dir: Path, **overrides) -> VideoJob:
    settings = StyleSettings(**{"size": WIDTH, "iterations": 3, "seed": 1} | overrides.pop("settings", {}))
    options = {
        "iterations_first": 5,
        "device": "cpu",
        "flow": "dis",
        "flow_workers": 1,
        "stop_tolerance": 0.0,
    } | overrides
    return VideoJob(input=clip, styles=(STYLE,), output=out_dir / "out.mp4", settings=settings, **options)


def frame_stats(work: Path) -> list[dict]:
    return [read_json(p) for p in sorted((work / "styled").glob("[0-9]*.json"))]


def test_a_cut_starts_a_new_shot_with_first_frame_iterations_and_no_temporal_term(clips, tmp_path):
    job = make_job(clips["cut"], tmp_path, keep_frames=True)  # the flow pairs are looked at below
    result = run_video(job, vgg=build_tiny_vgg())
    stats = frame_stats(job.work)
    assert [(s["start"], s["iterations"]) for s in stats] == [
        ("init", 5), ("warped", 3), ("warped", 3), ("warped", 3),
        ("cut", 5), ("warped", 3), ("warped", 3), ("warped", 3),
    ]  # fmt: skip
    # The temporal term is in every warm-started frame, and not across the cut.
    assert ["temporal" in s["terms"] for s in stats] == [False, True, True, True, False, True, True, True]
    assert stats[4]["cut_score"] > DEFAULT_SCENE_THRESHOLD
    assert all(
        s["cut_score"] < DEFAULT_SCENE_THRESHOLD and s["reliable"] > 0.8 for i, s in enumerate(stats) if i not in (0, 4)
    )
    manifest = read_json(job.work / "job.json")
    assert manifest["stages"]["stylize"]["shots"] == [[1, 4], [5, 8]]
    assert manifest["stages"]["flow"]["status"] == "done"
    # A shot starts afresh: the pair across the cut (frame 5) is scored by the cut scan, not kept.
    assert sorted(p.name for p in (job.work / "flow").iterdir()) == [f"{i:06d}.npz" for i in (2, 3, 4, 6, 7, 8)]
    # The flicker report skips the cut and nothing else, and is what the run returned.
    flicker = result.report["flicker"]
    assert flicker["cuts"] == [5] and flicker["pairs"] == 6
    assert manifest["report"]["flicker"] == flicker and flicker["input"] > 0
    assert re.findall(r"frame (\d+)/000008 start=cut", (job.work / "job.log").read_text()) == ["000005"]
    status = "\n".join(status_lines(job.work))
    assert "flow: done, 7/7 frame pairs" in status and "2 shots (scene cut at frame 5)" in status
    assert f"flicker: output {flicker['output']:.4g}, input {flicker['input']:.4g}" in status
    assert "over 6 frame pairs, 1 pair across scene cuts, flashes, fades or fast moves left out)" in status


def test_a_whip_pan_goes_on_in_its_shot_and_motion_cuts_cut_it_as_before(clips, tmp_path, capsys):
    """Three frames panned 10 px each (at 64 px wide) fail the flow nearly everywhere, as a cut
    does, their colours alike: by default a fast move, the shot going on through it, each of its
    frames started from the one before (cuts.Scan.sudden); --motion-cuts, as the releases before:
    frame 5 a "flash" (frame 6 is back in frame 4's colours), frames 6 (whose flow from frame 4
    fails too) and 7 cold starts. (The cut between alike textures above is still a cut.)"""
    job = make_job(clips["whip"], tmp_path / "moves", keep_frames=True)
    result = run_video(job, vgg=build_tiny_vgg())
    stats = frame_stats(job.work)
    assert [i for i, s in enumerate(stats, 1) if s.get("cut_score", 0) > DEFAULT_SCENE_THRESHOLD] == [5, 6, 7]
    assert [s["start"] for s in stats] == ["init"] + ["warped"] * 8
    assert all("temporal" in s["terms"] for s in stats[1:])
    manifest = read_json(job.work / "job.json")
    stage = manifest["stages"]["stylize"]
    assert stage["shots"] == [[1, 9]] and stage["moves"] == [5, 6, 7]
    assert stage["settings"]["motion_cuts"] is False
    # Their flow pairs are the shot's, computed and kept; the flicker measure leaves them out.
    assert sorted(p.name for p in (job.work / "flow").iterdir()) == [f"{i:06d}.npz" for i in range(2, 10)]
    assert result.report["flicker"]["cuts"] == [5, 6, 7] and result.report["flicker"]["pairs"] == 5
    status = "\n".join(status_lines(job.work))
    assert "1 shot" not in status and "fast move at frames 5-7 (no cuts)" in status, status
    assert "3 pairs across scene cuts, flashes, fades or fast moves left out" in status, status
    assert "scan: 9 frames, no scene cuts, fast move at frames 5-7 (no cuts)" in (job.work / "job.log").read_text()
    page = (job.work / "report.html").read_text()
    assert "<tr><th>scene cuts</th><td>none</td></tr>" in page
    assert "<tr><th>fast moves (no cuts)</th><td>5-7</td></tr>" in page
    # `stylize flicker` finds them as the job did.
    code, out, err = cli(["flicker", job.output, "--reference", clips["whip"]], capsys)
    assert code == 0 and "over 5 frame pairs at 64x48; fast move at frames 5-7 skipped" in out, err
    code, out, err = cli(["flicker", job.output, "--reference", clips["whip"], "--motion-cuts"], capsys)
    assert code == 0 and "scene cut at frame 7 and flash at frame 5 skipped" in out, err

    before = make_job(clips["whip"], tmp_path / "cuts", motion_cuts=True)
    run_video(before, vgg=build_tiny_vgg())
    stage = read_json(before.work / "job.json")["stages"]["stylize"]
    assert stage["shots"] == [[1, 6], [7, 9]] and stage["flashes"] == [[5, 5]] and "moves" not in stage
    assert "motion_cuts" not in stage["settings"]  # the stylize stage's hash of the releases before
    assert [s["start"] for s in frame_stats(before.work)][4:7] == ["flash", "cut", "cut"]


def test_a_job_begun_with_every_pair_over_the_threshold_a_cut_goes_on_so(clips, tmp_path):
    """A job of the release before (--motion-cuts: its whip pan a flash and a cut), stopped and run
    again with the option left unset: its finished frames kept, its shots as it began."""
    began = make_job(clips["whip"], tmp_path, motion_cuts=True)
    with pytest.raises(Recorder.Stop):
        run_video(began, events=Recorder(stop_at=3), vgg=build_tiny_vgg())
    finished = {name: t for name, t in mtimes(began.work / "styled").items() if name.endswith(".json")}
    events = Recorder()
    run_video(make_job(clips["whip"], tmp_path, defaulted=frozenset(OWN_DEFAULTS)), events=events, vgg=build_tiny_vgg())
    assert finished and sorted(events.started) == [i for i in range(1, 10) if f"{i:06d}.json" not in finished]
    assert {k: v for k, v in mtimes(began.work / "styled").items() if k in finished} == finished
    assert read_json(began.work / "job.json")["stages"]["stylize"]["shots"] == [[1, 6], [7, 9]]
    assert any("--motion-cuts (the defaults now: off;" in m for m in events.messages), events.messages


def test_warped_start_takes_unreliable_pixels_from_the_content_and_the_temporal_loss_holds_the_rest(tmp_path):
    previous_content, content = shot(2, seed=0)
    store = FrameStore(tmp_path)
    store.flow_dir.mkdir()
    pair = frame_pair(previous_content, content)
    pair.save(store.flow_dir / "000002.npz")

    def pairs(index: int) -> FramePair:  # as the running flow stage's `wait` gives them to the job
        return FramePair.load(store.pair(index))

    stylized = to_tensor(texture(5, HEIGHT, WIDTH))  # stands for the stylized frame 1
    plan = StartPlan(iterations_first=9, iterations=4, temporal_weight=2.0, scene_threshold=0.6, stop_tolerance=1e-3)
    starter = FlowWarmStart(plan)
    start = starter.start(2, to_tensor(content), stylized, pairs)
    assert (start.source, start.iterations, start.stop.tolerance) == ("warped", 4, 1e-3)

    warped = warp(stylized, pair.flow_back)
    reliable, unreliable = pair.reliability == 1, pair.reliability == 0
    # The strip the square uncovered cannot come from the previous frame.
    assert unreliable[TOP + 4 : TOP + SQUARE - 4, LEFT : LEFT + SHIFT].all()
    init = start.init[0].permute(1, 2, 0).numpy()
    assert np.allclose(init[reliable], warped[0].permute(1, 2, 0).numpy()[reliable], atol=1e-6)
    assert np.allclose(init[unreliable], to_tensor(content)[0].permute(1, 2, 0).numpy()[unreliable], atol=1e-6)

    temporal = start.extra_losses["temporal"]
    assert temporal(warped).item() == pytest.approx(0, abs=1e-6)
    # Only reliable pixels count: changing the unreliable ones costs nothing.
    changed = warped.clone()
    changed[..., torch.from_numpy(unreliable)] = 0.5
    assert temporal(changed).item() == pytest.approx(0, abs=1e-6)
    shifted = (warped + 10 / 255).clamp(0, 1)
    assert temporal(shifted).item() > 2.0 * 10**2 * 0.5  # weight x (10 levels)^2 x most pixels

    # A cut: first-frame iterations from --init, no temporal term.
    other = shot(1, seed=10)[0]
    frame_pair(content, other).save(store.flow_dir / "000003.npz")
    cut = starter.start(3, to_tensor(other), stylized, pairs)
    assert (cut.source, cut.iterations, cut.init, cut.extra_losses) == ("cut", 9, None, {})


def frames_dir(tmp_path: Path, frames: list[np.ndarray]) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames, 1):
        cv2.imwrite(str(folder / f"{i:06d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


def test_flow_stage_on_joblib_workers_computes_only_missing_pairs(tmp_path):
    frames = frames_dir(tmp_path, shot(3, seed=0) + shot(3, seed=10))
    flow_dir = tmp_path / "flow"
    with FlowStage(frames_dir=frames, flow_dir=flow_dir, total=6, preset="fast", workers=2) as flows:
        scores = flows.start().finish()
    assert sorted(flows.computed) == [2, 3, 4, 5, 6]
    assert [i for i, score in scores.items() if score > DEFAULT_SCENE_THRESHOLD] == [4]
    expected = frame_pair(cv2.cvtColor(cv2.imread(str(frames / "000001.png")), cv2.COLOR_BGR2RGB),
                          cv2.cvtColor(cv2.imread(str(frames / "000002.png")), cv2.COLOR_BGR2RGB), "fast")  # fmt: skip
    assert np.allclose(FramePair.load(flow_dir / "000002.npz").flow_back, expected.flow_back)

    (flow_dir / "000005.npz").unlink()
    before = mtimes(flow_dir)
    with FlowStage(frames_dir=frames, flow_dir=flow_dir, total=6, preset="fast", workers=2) as flows:
        again = flows.start().finish()
    assert flows.computed == [5] and again == pytest.approx(scores)
    assert {k: v for k, v in mtimes(flow_dir).items() if k != "000005.npz"} == before


def test_flow_stage_computes_long_term_pairs_and_skips_those_whose_earlier_frame_is_gone(tmp_path):
    frames = frames_dir(tmp_path, shot(6, seed=0))
    flow_dir = tmp_path / "flow"
    (frames / "000001.png").unlink()  # as before a range's first frame: (1, 3) and (1, 5) cannot be made
    with FlowStage(
        frames_dir=frames,
        flow_dir=flow_dir,
        total=6,
        preset="fast",
        workers=1,
        pairs=PairPlan(first=3, offsets=(1, 2, 4)),
    ) as flows:
        flows.start()
        far = flows.pair(2, 6)
        assert far.flow_back.shape == (HEIGHT, WIDTH, 2)
        with pytest.raises(PipelineError, match="optical flow from frame 1 to frame 5 is missing"):
            flows.pair(1, 5)
        flows.finish()
    assert sorted(flows.computed_long) == [(2, 4), (2, 6), (3, 5), (4, 6)]
    names = sorted(p.name for p in flow_dir.iterdir())
    assert names == ["000002-000004.npz", "000002-000006.npz", "000003-000005.npz", "000003.npz", "000004-000006.npz",
                     "000004.npz", "000005.npz", "000006.npz"]  # fmt: skip
    assert FrameStore(tmp_path).pair_count() == 4  # what `stylize status` counts: the adjacent pairs
    # A shot starting at frame 3: no long-term pair reaches before it (the frames there are another shot's).
    with FlowStage(
        frames_dir=frames,
        flow_dir=tmp_path / "shot",
        total=6,
        preset="fast",
        workers=1,
        pairs=PairPlan(first=3, offsets=(1, 2, 4), earliest=3),
    ) as flows:
        flows.start().finish()
    assert sorted(flows.computed_long) == [(3, 5), (4, 6)] and sorted(flows.computed) == [3, 4, 5, 6]
    # The pair between the frames themselves: frame 2 carried onto frame 6, not onto frame 5.
    read = [cv2.cvtColor(cv2.imread(str(frames / f"{i:06d}.png")), cv2.COLOR_BGR2RGB) for i in (2, 5, 6)]
    assert np.allclose(far.flow_back, frame_pair(read[0], read[2], "fast").flow_back)
    assert not np.allclose(far.flow_back, frame_pair(read[0], read[1], "fast").flow_back)


def test_flow_stage_failure_is_raised_in_the_waiting_thread_not_a_hang(tmp_path):
    frames = frames_dir(tmp_path, shot(3, seed=0))
    (frames / "000003.png").write_bytes(b"not a png")
    with FlowStage(frames_dir=frames, flow_dir=tmp_path / "flow", total=3, preset="fast", workers=1) as flows:
        flows.start()
        assert flows.wait(2).flow_back.shape == (HEIGHT, WIDTH, 2)
        with pytest.raises(PipelineError, match="000003.png: cannot read the frame"):
            flows.wait(3)


def test_flow_stage_resumes_and_a_new_preset_redoes_flow_and_styled_frames_not_decoding(clips, tmp_path):
    job = make_job(clips["cut"], tmp_path, keep_frames=True)  # the pairs and frames are looked at below
    with pytest.raises(Recorder.Stop):
        run_video(job, events=Recorder(stop_at=3), vgg=build_tiny_vgg())
    flow_dir = job.work / "flow"
    assert {"000002.npz", "000003.npz"} <= set(mtimes(flow_dir))  # frames 2 and 3 needed them
    # As if killed before the flow stage got further: the rest must be computed, the rest only.
    for name in ("000006.npz", "000007.npz", "000008.npz"):
        (flow_dir / name).unlink(missing_ok=True)
    kept, decoded = mtimes(flow_dir), mtimes(job.work / "frames")
    assert read_json(job.work / "job.json")["stages"]["flow"]["status"] == "running"

    events = Recorder()
    run_video(job, events=events, vgg=build_tiny_vgg())
    assert events.started == list(range(3, 9))
    after = mtimes(flow_dir)
    assert sorted(after) == [f"{i:06d}.npz" for i in (2, 3, 4, 6, 7, 8)]  # frame 5 starts a shot
    assert {k: after[k] for k in kept} == kept
    # Each shot says what it found: the first resumes at frame 3 with its pairs on disk.
    assert "shot 1-4: 2 frames finished before, starting at frame 3" in (job.work / "job.log").read_text()
    styled = mtimes(job.work / "styled")
    decoded = mtimes(job.work / "frames")  # the second shot's frames too, decoded by this run

    events = Recorder()
    run_video(
        make_job(clips["cut"], tmp_path, flow_preset="ultrafast", keep_frames=True), events=events, vgg=build_tiny_vgg()
    )
    assert events.started == list(range(1, 9))
    assert mtimes(job.work / "frames") == decoded
    assert all(mtimes(flow_dir)[name] != after[name] for name in after)
    assert all(mtimes(job.work / "styled")[name] != styled[name] for name in styled)
    assert any("flow: settings changed (flow_preset)" in m for m in events.messages)
    assert any("stylize: settings changed (flow)" in m for m in events.messages)


def test_a_job_begun_under_the_release_before_issue_17_resumes_with_its_settings_when_left_unset(clips, tmp_path):
    """The release before issue 17's defaults (its stylize settings leave out what was added
    since at the value they had then) and its frame records (no flicker figures): a rerun with
    every such option unset goes on with those settings, the finished frames kept, names each
    option that differs from the defaults now, and reports the flicker of the pairs it can."""
    before = {
        "lbfgs_history": 20, "unreliable_start": "content", "first_rounds": 1, "stop_tolerance": 0.001,
        "stop_style_tolerance": 0.0, "flash_frames": 0, "iterations_tracked": 0, "first_stop_tolerance": 0.0,
    }  # fmt: skip
    settings = {"range_weight": 0, "full_layer_weights": True}
    began = make_job(clips["moving"], tmp_path, settings=settings, iterations_first=4, **before)
    with pytest.raises(Recorder.Stop):
        run_video(began, events=Recorder(stop_at=4), vgg=build_tiny_vgg())
    recorded = read_json(began.work / "job.json")["stages"]["stylize"]["settings"]
    added = {
        "lbfgs_history",
        "unreliable_start",
        "first_rounds",
        "range_weight",
        "full_layer_weights",
        "stop_style_tolerance",
        "flash_frames",
        "iterations_tracked",
        "first_stop_tolerance",
    }
    assert not added & recorded.keys(), recorded
    for index in (2, 3):  # as that release wrote them
        path = began.work / "styled" / f"{index:06d}.json"
        path.write_text(json.dumps({k: v for k, v in read_json(path).items() if k != "flicker"}))
    finished = {name: t for name, t in mtimes(began.work / "styled").items() if name.endswith(".json")}

    events = Recorder()
    rerun = make_job(
        clips["moving"],
        tmp_path,
        iterations_first=None,
        stop_tolerance=DEFAULT_STOP_TOLERANCE,
        defaulted=frozenset(OWN_DEFAULTS),
    )
    result = run_video(rerun, events=events, vgg=build_tiny_vgg())
    assert events.started == [4, 5, 6]
    assert {k: v for k, v in mtimes(began.work / "styled").items() if k in finished} == finished
    assert read_json(began.work / "job.json")["stages"]["stylize"]["settings"] == recorded
    # Not --free-flashes (that release's frames were free of flashes' holds too): with --flash-frames
    # 0 no frame is a flash, and giving it would change nothing.
    options = (
        "--iterations-first 4, --stop-tolerance 0.001, --stop-style-tolerance 0, --iterations-tracked 0, "
        "--first-stop-tolerance 0, --lbfgs-history 20, --unreliable-start content, --first-rounds 1, "
        "--flash-frames 0, --range-weight 0, --full-layer-weights (the defaults now: 1500, "
        f"{option_text(DEFAULT_STOP_TOLERANCE)}, 0.02, 40, {option_text(DEFAULT_FIRST_STOP_TOLERANCE)}, 50, warped, "
        "3, 2, 3e+09, off;"
    )
    assert any(options in m for m in events.messages), events.messages
    assert (result.report["flicker"]["pairs"], result.report["flicker"]["unmeasured"]) == (3, 2)
    assert (
        "flicker: 2 frame pairs stylized by an earlier release have no record" in (began.work / "job.log").read_text()
    )


def test_warm_started_frames_of_a_still_shot_stop_early(clips, tmp_path):
    job = make_job(clips["still"], tmp_path, settings={"iterations": 60}, iterations_first=60, stop_tolerance=1e-2)
    run_video(job, vgg=build_tiny_vgg())
    stats = frame_stats(job.work)
    assert stats[0]["iterations"] == 60  # the first frame of a shot always gets all of them
    assert all(s["start"] == "warped" and s["iterations"] < 30 for s in stats[1:]), [s["iterations"] for s in stats]


def test_stop_change_stops_warm_frames_of_a_still_shot_once_the_image_settles(clips, tmp_path):
    job = make_job(clips["still"], tmp_path, settings={"iterations": 60}, iterations_first=60, stop_change=2.0)
    run_video(job, vgg=build_tiny_vgg())
    stats = frame_stats(job.work)
    assert stats[0]["iterations"] == 60  # the first frame of a shot always gets all of them
    assert all(s["start"] == "warped" and s["iterations"] < 60 for s in stats[1:]), [s["iterations"] for s in stats]
    assert read_json(job.work / "job.json")["stages"]["stylize"]["settings"]["stop_change"] == 2.0


def test_a_warm_frame_that_stopped_early_far_above_its_neighbour_is_run_again(tmp_path):
    from pipeline.stylize import Stylizer
    from pipeline.temporal import FrameStart, redo_if_stalled

    stylizer = Stylizer([to_tensor(texture(3, 32, 32))], StyleSettings(size=WIDTH, seed=1), vgg=build_tiny_vgg())
    content = to_tensor(shot(1, seed=0)[0])
    start = FrameStart(content, 40, source="warped", stop=EarlyStop(tolerance=1.0, window=3))
    # A tolerance of 1 stops after the window: a frame that stopped within a few iterations.
    stopped = stylizer.stylize(content, init=start.init, iterations=40, stop=start.stop)
    loss = stopped.final_terms["loss"]
    assert stopped.iterations == 4
    kept, redone = redo_if_stalled(stylizer, content, start, stopped, neighbour_loss=loss)
    assert (kept, redone) == (stopped, False)  # as good as its neighbour: kept
    again, redone = redo_if_stalled(stylizer, content, start, stopped, neighbour_loss=loss / 10)
    assert redone and again.iterations == 4 + 40 and again.final_terms["loss"] < loss
    # First frames of a shot have no neighbour to compare with.
    first = FrameStart(None, 40, source="init")
    assert redo_if_stalled(stylizer, content, first, stopped, neighbour_loss=loss / 10)[1] is False


def test_redone_frames_are_counted_in_the_job_record_and_shown_by_status(clips, tmp_path, monkeypatch):
    monkeypatch.setattr("pipeline.temporal.STALL_RATIO", 0.0)  # every warm frame counts as stalled
    job = make_job(clips["short"], tmp_path, stop_tolerance=0.5)
    run_video(job, vgg=build_tiny_vgg())
    stats = frame_stats(job.work)
    assert [s.get("redone", False) for s in stats] == [False, True, True, True]
    assert all(s["iterations"] > 3 for s in stats[1:])  # the first run's iterations and the redo's
    assert read_json(job.work / "job.json")["stages"]["stylize"]["redone"] == [2, 3, 4]
    assert "3 frames redone after stopping too early" in "\n".join(status_lines(job.work))


@pytest.fixture(scope="module")
def three_ways(clips, tmp_path_factory, real_vgg) -> dict[str, Path]:
    """The moving clip stylized independently, with the plain warm start, and with flow + the
    temporal loss, at the same iterations per frame (real VGG-19, 64x48)."""
    outputs = {}
    for flow in ("independent", "none", "dis"):
        out = tmp_path_factory.mktemp(flow)
        job = make_job(clips["moving"], out, settings={"iterations": 20}, iterations_first=20, flow=flow)
        outputs[flow] = run_video(job, vgg=real_vgg).output
    return outputs


def test_flow_and_temporal_loss_flicker_far_less_than_independent_frames(three_ways):
    reports = {
        flow: read_json(output.with_name("out.mp4.work") / "job.json")["report"]["flicker"]
        for flow, output in three_ways.items()
    }
    flicker = {flow: report["output"] for flow, report in reports.items()}
    assert flicker["dis"] < 0.5 * flicker["independent"], flicker
    assert flicker["dis"] < 0.7 * flicker["none"], flicker
    # The input is the same clip each time, and it barely flickers: the flow follows the square.
    assert len({report["input"] for report in reports.values()}) == 1 and reports["dis"]["input"] < 20
    starts = {
        flow: [s["start"] for s in frame_stats(output.with_name("out.mp4.work"))] for flow, output in three_ways.items()
    }
    assert starts == {
        "independent": ["init"] * 6,
        "none": ["init"] + ["previous"] * 5,
        "dis": ["init"] + ["warped"] * 5,
    }


def cli(args: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out.strip(), captured.err.strip()


def test_flicker_command_measures_output_and_reference(clips, three_ways, capsys):
    code, out, err = cli(["flicker", three_ways["dis"], "--reference", clips["moving"], "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert (report["frames"], report["width"], report["height"], report["pairs"], report["cuts"]) == (6, 64, 48, 5, [])
    assert report["output"] > 2 * report["input"]
    independent = json.loads(cli(["flicker", three_ways["independent"], "-r", clips["moving"], "--json"], capsys)[1])
    assert report["output"] < 0.5 * independent["output"] and independent["input"] == report["input"]

    code, out, _ = cli(["flicker", clips["cut"], "--reference", clips["cut"], "--size", 48], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("output ") and lines[1].startswith("input ")
    assert lines[0].split()[1] == lines[1].split()[1]  # a video against itself: the same figure
    assert "over 6 frame pairs at 48x36; scene cut at frame 5 skipped" in lines[2]


def test_flicker_command_bad_inputs_are_one_line_errors_with_exit_2(clips, tmp_path, capsys):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    cases = [
        ([tmp_path / "missing.mp4", "-r", clips["moving"]], "missing.mp4: file not found"),
        ([clips["moving"], "-r", text], "not a video file"),
        ([clips["moving"], "-r", clips["short"]], "has 6 frames"),
        ([clips["moving"], "-r", clips["moving"], "--size", 8], "--size 8: must be between 16"),
        ([clips["moving"], "-r", clips["moving"], "--flow-preset", "slow"], "'--flow-preset': 'slow' is not one of"),
        ([clips["moving"], "-r", clips["moving"], "--scene-threshold", 2], "--scene-threshold 2.0"),
        ([clips["moving"]], "Missing option '--reference'"),
    ]
    for args, message in cases:
        code, out, err = cli(["flicker", *args], capsys)
        assert (
            code == 2 and out == "" and len(err.splitlines()) == 1 and err.startswith("error: ") and message in err
        ), (args, err)


def test_video_command_rejects_bad_temporal_options_with_exit_2(clips, tmp_path, capsys):
    for option, value, message in [
        ("--flow", "raft", "'--flow': 'raft' is not one of 'dis', 'none', 'independent'"),  # checked by click
        ("--flow-preset", "slow", "'--flow-preset': 'slow' is not one of"),
        ("--temporal-weight", -1, "--temporal-weight -1.0"),
        ("--scene-threshold", 1.5, "--scene-threshold 1.5"),
        ("--stop-tolerance", -0.1, "--stop-tolerance -0.1"),
        ("--stop-style-tolerance", 1.5, "--stop-style-tolerance 1.5: must be >= 0"),
        ("--first-stop-tolerance", -0.5, "--first-stop-tolerance -0.5: must be >= 0"),
        ("--first-stop-tolerance", 1, "--first-stop-tolerance 1.0: must be >= 0"),
        ("--iterations-tracked", -1, "--iterations-tracked -1: must be between 0 (off) and"),
        ("--tracked-share", 1.5, "--tracked-share 1.5: must be between 0 (every later frame) and 1"),
        ("--flow-workers", 0, "--flow-workers 0"),
        ("--stop-change", -1, "--stop-change -1.0"),
        ("--long-term", "2,4", "--long-term 2,4: must start with 1"),
        ("--long-term", "1,x", "--long-term 1,x: must be whole numbers"),
        ("--long-term", "1,2.5", "--long-term 1,2.5: must be whole numbers"),
        ("--long-term", "0,1", "--long-term 0,1: must start with 1"),
        ("--long-term", "1,4,2", "--long-term 1,4,2: must increase"),
        ("--long-term", "1,2,32", "--long-term 1,2,32: frames at most 16 back"),
        ("--warp", "nearest", "'--warp': 'nearest' is not one of 'bilinear', 'bicubic'"),  # checked by click
        ("--unreliable-start", "noise", "'--unreliable-start': 'noise' is not one of 'warped', 'content'"),
        ("--settle", "loose", "'--settle': 'loose' is not one of 'held', 'free'"),
        ("--settle-shift", 0.75, f"--settle-shift 0.75: must be between 0 and {MAX_SETTLE_SHIFT} pixels"),
        ("--settle-shift", -0.25, "--settle-shift -0.25: must be between 0 and"),
        ("--lbfgs-history", 0, f"--lbfgs-history 0: must be between 1 and {MAX_LBFGS_HISTORY}"),
        ("--lbfgs-history", MAX_LBFGS_HISTORY + 1, f"--lbfgs-history {MAX_LBFGS_HISTORY + 1}"),
        ("--flash-frames", -1, f"--flash-frames -1: must be between 0 (off) and {MAX_FLASH_FRAMES}"),
        ("--flash-frames", MAX_FLASH_FRAMES + 1, f"--flash-frames {MAX_FLASH_FRAMES + 1}: must be between 0"),
        ("--overlay-share", 0.5, f"--overlay-share 0.5: must be between 0 and {MAX_OVERLAY_SHARE}"),
        ("--overlay-share", -0.05, "--overlay-share -0.05: must be between 0 and"),
    ]:
        code, _, err = cli(["video", clips["short"], "-s", STYLE, "-o", tmp_path / "o.mp4", option, value], capsys)
        assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    for no_flow in (
        ["--flow", "none", "--long-term", "1,2"],
        ["--flow", "independent", "--warp", "bicubic"],
        ["--flow", "none", "--unreliable-start", "content"],
        ["--flow", "none", "--flash-frames", "0"],
        ["--flow", "independent", "--free-flashes"],
        ["--flow", "none", "--light-cuts"],
        ["--flow", "none", "--settle", "free"],
        ["--flow", "independent", "--settle-shift", "0.25"],
        ["--flow", "independent", "--tracked-share", "0.9"],
    ):
        code, _, err = cli(["video", clips["short"], "-s", STYLE, "-o", tmp_path / "o.mp4", *no_flow], capsys)
        assert code == 2 and len(err.splitlines()) == 1 and f"{no_flow[2]} applies to --flow dis only" in err, err
    assert not (tmp_path / "o.mp4.work").exists()


def laplacian_variance(image: torch.Tensor) -> float:
    gray = (image[0].mean(0) * 255).numpy().astype(np.float32)
    return float(cv2.Laplacian(gray, cv2.CV_32F).var())


def test_bicubic_warp_keeps_a_texture_sharper_than_bilinear_and_the_starter_uses_it():
    """The cause of the softening over a long shot: a bilinear warp by half a pixel averages
    neighbouring pixels, and every warm start and temporal target of a moving shot goes through it."""
    texture = to_tensor(np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8))
    flow = np.zeros((32, 48, 2), np.float32)
    flow[..., 0] = 0.5  # the whole picture moved by half a pixel
    sharp, bilinear = laplacian_variance(texture), laplacian_variance(warp(texture, flow))
    bicubic = laplacian_variance(warp(texture, flow, mode="bicubic"))
    assert bilinear < 0.5 * sharp and bicubic > 1.3 * bilinear, (sharp, bilinear, bicubic)
    # Whole-pixel motion moves the texture as it is, either way.
    flow[..., 0] = 1.0
    assert torch.allclose(warp(texture, flow, mode="bicubic")[..., 1:-2], texture[..., 2:-1], atol=1e-5)

    pair = FramePair(flow_back=flow * 0.5, reliability=np.ones((32, 48), np.float32), cut_score=0.0)
    plans = {mode: StartPlan(iterations_first=2, iterations=1, temporal_weight=1.0, warp=mode) for mode in WARP_MODES}
    inits = {mode: FlowWarmStart(plan).start(2, texture, texture, lambda i: pair).init for mode, plan in plans.items()}
    assert laplacian_variance(inits["bicubic"]) > 1.3 * laplacian_variance(inits["bilinear"])
    assert FlowWarmStart(plans["bicubic"]).settings()["warp"] == "bicubic"
    assert "warp" not in FlowWarmStart(plans["bilinear"]).settings()  # the hash of jobs before --warp


def test_unreliable_pixels_start_from_the_warped_frame_or_the_content_as_asked(clips, tmp_path):
    """--unreliable-start: where the flow cannot be trusted a warm frame starts from the warped
    previous frame (the default, as Ruder et al.) or from its content (the releases before); the
    reliable pixels start warped either way, and the temporal loss is masked the same way."""
    rng = np.random.default_rng(2)
    previous, content = (to_tensor(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)) for _ in range(2))
    flow = np.zeros((24, 32, 2), np.float32)
    flow[..., 0] = 1.0  # whole-pixel motion: the warp moves the texture as it is
    reliability = np.ones((24, 32), np.float32)
    reliability[:, 20:] = 0.0  # a disoccluded band
    pair = FramePair(flow_back=flow, reliability=reliability, cut_score=0.0)
    warped = warp(previous, flow)
    starts = {}
    for mode in UNRELIABLE_STARTS:
        plan = StartPlan(iterations_first=2, iterations=1, temporal_weight=1.0, unreliable_start=mode)
        starts[mode] = FlowWarmStart(plan).start(2, content, previous, lambda i: pair)
    for start in starts.values():
        assert torch.allclose(start.init[..., :20], warped[..., :20])
        temporal = start.extra_losses["temporal"]
        assert temporal(warped).item() == 0 and temporal(content).item() > 0
        masked_only = warped.clone()
        masked_only[..., 20:] = content[..., 20:]  # differs from the target where it is not trusted only
        assert temporal(masked_only).item() == 0
    assert torch.allclose(starts["warped"].init, warped)
    assert torch.allclose(starts["content"].init[..., 20:], content[..., 20:])
    # The default is the warped start, and it is in the stylize stage's hash; the releases before
    # started from the content and their jobs keep their hash.
    default = make_job(clips["short"], tmp_path / "default")
    assert StartPlan.of(default, (24, 32)).unreliable_start == "warped"
    assert FlowWarmStart(StartPlan.of(default, (24, 32))).settings()["unreliable_start"] == "warped"
    assert "unreliable_start" not in FlowWarmStart(StartPlan(iterations_first=2, iterations=1)).settings()


def test_the_style_term_rule_reaches_warm_frames_and_the_stylize_stage_hash(clips, tmp_path):
    """--stop-style-tolerance: warm frames stop on it (the first frame of a shot by its own rule,
    --first-stop-tolerance); the stylize stage's settings carry it unless it is 0, the releases
    before's rule."""
    job = make_job(clips["short"], tmp_path, stop_tolerance=5e-3)
    assert job.stop_style_tolerance == DEFAULT_STOP_STYLE_TOLERANCE == 2e-2
    starter = FlowWarmStart(StartPlan.of(job, (24, 32)))
    assert starter.warm(torch.zeros(1, 3, 4, 4), "warped").stop.style_tolerance == 2e-2
    first = DEFAULT_FIRST_STOP_TOLERANCE
    assert starter.first().stop == EarlyStop(first, FIRST_STOP_WINDOW, style_tolerance=first)
    assert starter.settings()["stop_style_tolerance"] == 2e-2
    before = make_job(clips["short"], tmp_path, stop_tolerance=5e-3, stop_style_tolerance=0.0)
    assert "stop_style_tolerance" not in FlowWarmStart(StartPlan.of(before, (24, 32))).settings()


def test_a_shots_first_frame_stops_on_first_stop_tolerance_and_the_stylize_stage_hash_carries_it(clips, tmp_path):
    """--first-stop-tolerance: a shot's first frame's cold run stops once its loss and its style
    term fell by less than that fraction over FIRST_STOP_WINDOW iterations, within
    --iterations-first; 0 runs them all, as the releases before; warm frames keep their own rule. The
    stylize stage's settings carry it unless it is 0, so that the jobs begun before keep their hash."""
    plan = StartPlan(iterations_first=500, iterations=3, temporal_weight=1.0, first_stop_tolerance=0.25)
    stop = FlowWarmStart(plan).first().stop
    assert (stop.tolerance, stop.window, stop.style_tolerance) == (0.25, FIRST_STOP_WINDOW, 0.25)
    assert FlowWarmStart(plan).warm(torch.zeros(1, 3, 4, 4), "warped").stop.window == STOP_WINDOW
    assert FlowWarmStart(plan).settings()["first_stop_tolerance"] == 0.25
    assert IndependentStart(plan).settings()["first_stop_tolerance"] == 0.25
    assert IndependentStart(plan).start(3, torch.zeros(1, 3, 4, 4), None, lambda i: None).stop == stop
    off = replace(plan, first_stop_tolerance=0.0)
    assert "first_stop_tolerance" not in FlowWarmStart(off).settings() | IndependentStart(off).settings()
    assert FlowWarmStart(off).first().stop.tolerance == 0

    # Whole jobs: with the rule, the first frame stops at a report where its loss fell by less than
    # the tolerance over the window (the history holds each iteration's loss), after the window.
    assert make_job(clips["short"], tmp_path).first_stop_tolerance == DEFAULT_FIRST_STOP_TOLERANCE
    budget = 4 * FIRST_STOP_WINDOW
    runs = {}
    for tolerance in (0.0, 0.25):
        job = make_job(
            clips["short"], tmp_path / str(tolerance), settings={"iterations": STALL_ITERATIONS + 1},
            iterations_first=budget, first_rounds=1, first_stop_tolerance=tolerance,
        )  # fmt: skip
        run_video(job, vgg=build_tiny_vgg())
        runs[tolerance] = frame_stats(job.work)
    assert runs[0.0][0]["iterations"] == budget
    first = runs[0.25][0]
    assert FIRST_STOP_WINDOW < first["iterations"] < budget, first["iterations"]
    losses = first["loss_history"]
    assert len(losses) == first["iterations"]
    assert (losses[-FIRST_STOP_WINDOW - 1] - losses[-1]) / losses[-FIRST_STOP_WINDOW - 1] < 0.25
    # The warm frames went as they go without it (the stopping rule off: their budget, above the
    # stall guard's few iterations).
    warm = [s["iterations"] for s in runs[0.25][1:]]
    assert warm == [s["iterations"] for s in runs[0.0][1:]] == [STALL_ITERATIONS + 1] * 3
    settings = read_json(job.work / "job.json")["stages"]["stylize"]["settings"]
    assert settings["first_stop_tolerance"] == 0.25


def test_every_warm_frame_gets_iterations_tracked_at_most_and_tracked_share_restricts_it(clips, tmp_path):
    """--iterations-tracked: a warm frame has at most that many iterations (a shot's first frame its
    own); with --tracked-share, only one with at least that share of its pixels reliable, the others
    --iterations (the stopping rule decides there), as the release before ran at 0.9, whose jobs keep
    their stylize stage's hash. 0 gives every warm frame --iterations, as the releases before it."""
    flow = np.zeros((24, 32, 2), np.float32)
    texture = to_tensor(np.random.default_rng(3).integers(0, 256, (24, 32, 3), dtype=np.uint8))

    def start(plan: StartPlan, reliable_columns: int):
        reliability = np.zeros((24, 32), np.float32)
        reliability[:, :reliable_columns] = 1.0
        pair = FramePair(flow_back=flow, reliability=reliability, cut_score=0.0)
        return FlowWarmStart(plan).start(2, texture, texture, lambda i: pair)

    plan = StartPlan(iterations_first=50, iterations=30, iterations_tracked=5, tracked_share=0.0, temporal_weight=1.0)
    assert [start(plan, columns).iterations for columns in (32, 16, 0)] == [5, 5, 5]  # however little is reliable
    assert start(replace(plan, iterations=3), 16).iterations == 3  # never more than --iterations
    assert start(replace(plan, iterations_tracked=0), 32).iterations == 30
    assert FlowWarmStart(plan).first().iterations == 50
    assert FlowWarmStart(plan).settings()["tracked_share"] == 0.0
    share = replace(plan, tracked_share=0.9)  # the release before's
    tracked = start(share, 31)  # 97% reliable
    assert (tracked.iterations, tracked.stats["reliable"]) == (5, pytest.approx(31 / 32, abs=1e-4))
    assert start(share, round(0.9 * 32)).iterations == 5  # 0.9 exactly: tracked
    assert start(share, 16).iterations == 30  # half of it unreliable: the rule decides within --iterations
    assert FlowWarmStart(share).settings()["tracked_share"] == 0.9 == OWN_DEFAULTS["tracked_share"]
    assert FlowWarmStart(share).settings()["iterations_tracked"] == 5
    assert "iterations_tracked" not in FlowWarmStart(replace(plan, iterations_tracked=0)).settings()
    assert "tracked_share" not in FlowWarmStart(replace(plan, iterations_tracked=0)).settings()

    # Whole jobs, the stopping rule off so that the budget is what ends a frame: the still shot's
    # warm frames are tracked whole, the moving square's (at 64x48 px) are 81-83% reliable.
    defaults = make_job(clips["moving"], tmp_path)
    assert (defaults.iterations_tracked, defaults.tracked_share) == (DEFAULT_ITERATIONS_TRACKED, DEFAULT_TRACKED_SHARE)
    assert (DEFAULT_ITERATIONS_TRACKED, DEFAULT_TRACKED_SHARE) == (40, 0.0)
    for clip, share, capped in (("moving", DEFAULT_TRACKED_SHARE, True), ("still", 0.9, True), ("moving", 0.9, False)):
        job = make_job(
            clips[clip], tmp_path / f"{clip}-{share}", settings={"iterations": 6}, iterations_tracked=2,
            tracked_share=share,
        )  # fmt: skip
        run_video(job, vgg=build_tiny_vgg())
        stats = frame_stats(job.work)
        assert stats[0]["iterations"] == 5, stats
        assert all((s["reliable"] >= 0.9) == (clip == "still") for s in stats[1:]), stats
        assert [s["iterations"] for s in stats[1:]] == [2 if capped else 6] * (len(stats) - 1)
        recorded = read_json(job.work / "job.json")["stages"]["stylize"]["settings"]
        assert (recorded["iterations_tracked"], recorded["tracked_share"]) == (2, share)
    untracked = make_job(clips["still"], tmp_path / "untracked", settings={"iterations": 6}, iterations_tracked=0)
    run_video(untracked, vgg=build_tiny_vgg())
    assert [s["iterations"] for s in frame_stats(untracked.work)[1:]] == [6] * 3


def test_a_job_begun_with_tracked_share_0_9_resumes_with_it_when_left_unset(clips, tmp_path):
    """The release before capped only the warm frames at 90% reliable or more: its job, run again
    without --tracked-share, goes on with 0.9 and keeps its frames, and says so; given, even as the
    default's value, it stylizes them again under it."""
    settings = {"iterations": 6}
    began = make_job(clips["moving"], tmp_path, settings=settings, iterations_tracked=2, tracked_share=0.9)
    with pytest.raises(Recorder.Stop):
        run_video(began, events=Recorder(stop_at=3), vgg=build_tiny_vgg())
    finished = {name: t for name, t in mtimes(began.work / "styled").items() if name.endswith(".json")}
    assert len(finished) == 2

    events = Recorder()
    unset = frozenset(OWN_DEFAULTS)
    run_video(
        make_job(clips["moving"], tmp_path, settings=settings, iterations_tracked=2, defaulted=unset),
        events=events, vgg=build_tiny_vgg(),
    )  # fmt: skip
    assert events.started == [3, 4, 5, 6]
    assert {k: v for k, v in mtimes(began.work / "styled").items() if k in finished} == finished
    assert [s["iterations"] for s in frame_stats(began.work)[1:]] == [6] * 5  # 81-83% reliable: not capped
    assert read_json(began.work / "job.json")["stages"]["stylize"]["settings"]["tracked_share"] == 0.9
    assert any("--tracked-share 0.9" in m and "the defaults now" in m for m in events.messages), events.messages

    events = Recorder()
    given = unset - {"tracked_share"}
    run_video(
        make_job(clips["moving"], tmp_path, settings=settings, iterations_tracked=2, defaulted=given),
        events=events, vgg=build_tiny_vgg(),
    )  # fmt: skip
    assert events.started == [1, 2, 3, 4, 5, 6]
    assert [s["iterations"] for s in frame_stats(began.work)[1:]] == [2] * 5


def test_lbfgs_history_reaches_every_frame_and_the_stylize_stage_hash(clips, tmp_path, monkeypatch):
    """--lbfgs-history: every frame's optimization (first, warm, and a stalled frame's rerun) keeps
    that many curvature pairs; the stylize stage's settings carry it unless it is the 20 of the
    releases before it (their jobs keep their hash)."""
    plan = StartPlan(iterations_first=5, iterations=3, temporal_weight=1.0, lbfgs_history=7)
    starter = FlowWarmStart(plan)
    assert starter.first().history == 7 and starter.warm(torch.zeros(1, 3, 4, 4), "warped").history == 7
    assert starter.settings()["lbfgs_history"] == 7
    assert "lbfgs_history" not in FlowWarmStart(StartPlan(iterations_first=5, iterations=3)).settings()
    # By default, DEFAULT_LBFGS_HISTORY pairs within LBFGS_HISTORY_BYTES, and never fewer than the 20 before.
    default = make_job(clips["short"], tmp_path / "default")
    assert default.history_pairs((1080, 1920)) == DEFAULT_LBFGS_HISTORY
    assert default.history_pairs((1440, 2560)) == int(LBFGS_HISTORY_BYTES // (24 * 1440 * 2560)) < DEFAULT_LBFGS_HISTORY
    assert default.history_pairs((2160, 3840)) == HISTORY_SIZE
    assert replace(default, lbfgs_history=7).history_pairs((2160, 3840)) == 7

    made = lbfgs_capacities(monkeypatch)
    job = make_job(clips["short"], tmp_path / "job", settings={"iterations": 4}, iterations_first=4, lbfgs_history=3)
    run_video(job, vgg=build_tiny_vgg())
    assert len(made) >= len(frame_stats(job.work)) and set(made) == {3}  # a stalled frame adds its rerun
    assert read_json(job.work / "job.json")["stages"]["stylize"]["settings"]["lbfgs_history"] == 3


def test_a_shots_first_frame_settles_in_rounds_within_its_iterations(clips, tmp_path):
    """--first-rounds: a shot's first frame runs cold, then short rounds, each from the image
    resampled (the cold start's grain shed before the shot starts); warm frames are not touched.
    Here --settle free, the releases before's rounds: 50 iterations each (held rounds: the next test)."""
    # The cold run first and whole, the settling runs of SETTLE_ITERATIONS after it, never more
    # than half of the iterations.
    assert settle_shares(600, 4) == [450, SETTLE_ITERATIONS, SETTLE_ITERATIONS, SETTLE_ITERATIONS] == [450, 50, 50, 50]
    assert settle_shares(160, 4) == [110, 50] and settle_shares(99, 4) == [99] and settle_shares(600, 1) == [600]
    plan = StartPlan(iterations_first=7, iterations=3, temporal_weight=1.0, first_rounds=3, warp="bicubic")
    start = FlowWarmStart(plan).first()
    assert (start.rounds, start.resample, start.iterations) == (3, "bicubic", 7)
    texture = to_tensor(np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8))
    assert laplacian_variance(resample(texture, "bilinear", 0.5)) < 0.5 * laplacian_variance(texture)

    runs = {}
    for rounds in (1, 4):
        options = {"first_rounds": rounds, "iterations_first": 160, "keep_frames": True, "settle": "free"}
        job = make_job(clips["cut"], tmp_path / str(rounds), **options)
        run_video(job, vgg=build_tiny_vgg())
        runs[rounds] = job
    settled, plain = frame_stats(runs[4].work), frame_stats(runs[1].work)
    # Both shot starts (frame 1 and the cut) keep --iterations-first in all, their history whole;
    # 110 cold and one settling round of 50 (of the 4 asked for: the cold run keeps at least half).
    assert [(s["start"], s["iterations"], len(s["loss_history"]), s.get("rounds")) for s in settled[:1]] == [
        ("init", 160, 160, 2)
    ]
    assert settled[1]["start"] == "warped" and "rounds" not in settled[1]  # warm frames: one run
    assert (settled[4]["start"], settled[4]["iterations"], settled[4]["rounds"]) == ("cut", 160, 2)
    settings = read_json(runs[4].work / "job.json")["stages"]["stylize"]["settings"]
    assert (settings["first_rounds"], settings["settle_iterations"]) == (4, SETTLE_ITERATIONS)
    assert "settle" not in settings  # free: as the release before recorded it, its jobs keep their hash
    assert not {"first_rounds", "settle_iterations"} & set(
        read_json(runs[1].work / "job.json")["stages"]["stylize"]["settings"]
    )
    # The cold run is the one-round run's first 110 iterations, to the bit; the settling starts after it.
    assert settled[0]["loss_history"][:110] == plain[0]["loss_history"][:110]
    assert settled[0]["loss_history"][110] != plain[0]["loss_history"][110]
    first = [load_image(job.work / "styled" / "000001.png") for job in runs.values()]
    assert not torch.equal(*first)
    assert settled[0]["loss"] != plain[0]["loss"]


def test_a_held_settling_round_runs_as_a_warm_frame_of_a_still_shot(clips, tmp_path):
    """--settle held (the default): each settling round after the cold run is held to the resampled
    image it starts from by the temporal term and stopped by the warm frames' rule, so the first
    frame stays where a warm frame would; a free round runs its 50 iterations on the objective
    alone, back toward the cold start's look (the grain the warm frames then shed: a "pop")."""
    from pipeline.stylize import Stylizer
    from pipeline.temporal import SettleRound, optimize_frame

    stylizer = Stylizer([to_tensor(texture(3, 32, 32))], StyleSettings(size=WIDTH, seed=1), vgg=build_tiny_vgg())
    content = to_tensor(shot(1, seed=0)[0])
    plan = StartPlan(iterations_first=160, iterations=40, temporal_weight=3e9, stop_tolerance=1e-3, first_rounds=2)
    held = FlowWarmStart(replace(plan, settle="held")).first()
    assert held.settle == SettleRound(iterations=40, temporal_weight=3e9, stop=EarlyStop(1e-3, STOP_WINDOW))
    assert FlowWarmStart(plan).first().settle == SettleRound()  # free: 50 iterations, nothing else
    still = held.settle.losses(content)["temporal"]
    assert still(content).item() == 0 < still(content.flip(-1)).item()

    runs = {name: optimize_frame(stylizer, content, start, None, None)[0] for name, start in
            (("held", held), ("free", FlowWarmStart(plan).first()))}  # fmt: skip
    cold = optimize_frame(
        stylizer, content, FlowWarmStart(replace(plan, iterations_first=110, first_rounds=1)).first(), None, None
    )[0]
    assert cold.iterations == 110 and cold.history == runs["free"].history[:110] == runs["held"].history[:110]
    settled_from = resample(cold.image, "bilinear", 0.5)
    moved = {name: (run.image - settled_from).abs().mean().item() for name, run in runs.items()}
    assert moved["held"] < 0.5 * moved["free"], moved
    assert runs["free"].iterations == 160 and 110 < runs["held"].iterations < 110 + 40
    assert "temporal" in runs["held"].final_terms and "temporal" not in runs["free"].final_terms

    # --settle-shift: how far each round's start is moved and back, so how soft the first frame
    # comes out; held to that start, the round stays nearer its own start than the other's.
    assert torch.allclose(resample(cold.image, "bilinear", 0.0), cold.image, atol=1e-6)
    assert laplacian_variance(resample(cold.image, "bilinear", 0.25)) > 1.2 * laplacian_variance(settled_from)
    quarter = FlowWarmStart(replace(plan, settle="held", settle_shift=0.25))
    assert (quarter.first().shift, held.shift) == (0.25, 0.5)  # a plan of its own: the releases before's
    job = make_job(clips["moving"], tmp_path, settle_shift=0.25)
    assert StartPlan.of(job, (48, 64)).settle_shift == 0.25 and make_job(clips["moving"], tmp_path).settle_shift == 0.5
    assert quarter.settings()["settle_shift"] == 0.25 and "settle_shift" not in FlowWarmStart(plan).settings()
    runs["quarter"] = optimize_frame(stylizer, content, quarter.first(), None, None)[0]
    assert runs["quarter"].history[:110] == cold.history
    quarter_from = resample(cold.image, "bilinear", 0.25)
    near = {name: {start: (runs[name].image - image).abs().mean().item() for start, image in
                   (("half", settled_from), ("quarter", quarter_from))} for name in ("held", "quarter")}  # fmt: skip
    assert near["quarter"]["quarter"] < near["held"]["quarter"] and near["held"]["half"] < near["quarter"]["half"], near


def test_a_job_begun_with_free_settling_rounds_resumes_with_them_when_left_unset(clips, tmp_path):
    """A job begun under the release before --settle (its first frames settled by free rounds, no
    "settle" in its stylize settings) goes on with them when --settle is left unset, its finished
    frames kept; a held job records the mode and the stage's hash changes with it."""
    began = make_job(clips["moving"], tmp_path, first_rounds=2, settle="free", iterations_first=120)
    with pytest.raises(Recorder.Stop):
        run_video(began, events=Recorder(stop_at=3), vgg=build_tiny_vgg())
    recorded = read_json(began.work / "job.json")["stages"]["stylize"]["settings"]
    assert recorded["first_rounds"] == 2 and "settle" not in recorded
    finished = {name: t for name, t in mtimes(began.work / "styled").items() if name.endswith(".json")}

    events = Recorder()
    rerun = make_job(clips["moving"], tmp_path, first_rounds=2, iterations_first=120, defaulted=frozenset({"settle"}))
    assert rerun.settle == "held"
    run_video(rerun, events=events, vgg=build_tiny_vgg())
    assert events.started == [3, 4, 5, 6]
    assert {k: v for k, v in mtimes(began.work / "styled").items() if k in finished} == finished
    assert any("--settle free (the defaults now: held" in m for m in events.messages), events.messages

    held = make_job(clips["moving"], tmp_path / "held", first_rounds=2, iterations_first=120)
    run_video(held, vgg=build_tiny_vgg())
    assert read_json(held.work / "job.json")["stages"]["stylize"]["settings"]["settle"] == "held"
    assert frame_stats(held.work)[0]["terms"]["temporal"] > 0  # its last round held


def test_a_shots_first_frame_keeps_a_cold_starts_iterations_whatever_the_warm_frames_budget(clips, tmp_path):
    """Unless --iterations-first is given, a shot's first frame runs twice --iterations and never
    fewer than MIN_FIRST_ITERATIONS: the warm frames keep the texture it lays out, so lowering
    --iterations for speed must not shorten the one cold start of the shot."""

    def first(iterations: int, given: int | None) -> int:
        job = make_job(clips["short"], tmp_path, settings={"iterations": iterations}, iterations_first=given)
        return job.first_iterations

    assert first(40, None) == MIN_FIRST_ITERATIONS == 1500
    assert (first(300, None), first(800, None), first(40, 12), first(400, 12)) == (1500, 1600, 12, 12)

    job = make_job(clips["short"], tmp_path / "job", settings={"iterations": 2}, iterations_first=None)
    run_video(job, vgg=build_tiny_vgg())
    stats = frame_stats(job.work)
    # The cold run, then held settling rounds of at most --iterations each (the free rounds' 50 off the cold run).
    cold, *rounds = settle_shares(MIN_FIRST_ITERATIONS, DEFAULT_FIRST_ROUNDS)
    assert (cold, len(rounds)) == (1400, 2)
    assert stats[0]["start"] == "init" and cold < stats[0]["iterations"] <= cold + 2 * 2 and len(stats) == 4
    assert all(s["start"] == "warped" and s["iterations"] < 1500 for s in stats[1:])
    assert read_json(job.work / "job.json")["stages"]["stylize"]["settings"]["iterations_first"] == 1500


# --- long-term consistency (--long-term) --------------------------------------------------------


def test_long_term_masks_are_closest_first():
    near = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.5, 0.0])
    middle = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.3])
    far = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    masks = closest_first([near, middle, far])
    assert torch.equal(masks[0], near)  # the previous frame keeps its whole mask
    # Frame i-2 counts only where frame i-1 does not; frame i-4 only where neither does.
    assert torch.allclose(masks[1], torch.tensor([0.0, 0.0, 1.0, 0.0, 0.5, 0.3]))
    assert torch.allclose(masks[2], torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.7]))
    # Where the masks are 0/1, the pixels are shared out: each counts once at most.
    assert torch.all(sum(masks) <= 1.0 + 1e-6) and torch.all(sum(masks) >= far - 1e-6)


def test_long_term_terms_reach_back_within_the_shot_only(clips, tmp_path):
    job = make_job(clips["cut"], tmp_path / "cut", long_term=(1, 2, 4))
    run_video(job, vgg=build_tiny_vgg())
    stats = frame_stats(job.work)
    assert [s["start"] for s in stats] == ["init", "warped", "warped", "warped", "cut", "warped", "warped", "warped"]
    # Frame 4 has no frame 0; frame 6 reaches frame 5 only (frame 4 is the other shot's); 7 and 8
    # reach two back, never four (frames 3 and 4 are across the cut).
    assert [s.get("long_term") for s in stats] == [None, None, [1, 2], [1, 2], None, None, [1, 2], [1, 2]]
    assert all(0 <= s["reliable_long"] <= 1 for s in stats if "long_term" in s)
    assert "temporal" in stats[2]["terms"] and "temporal" not in stats[4]["terms"]
    manifest = read_json(job.work / "job.json")
    assert manifest["stages"]["stylize"]["settings"]["long_term"] == [1, 2, 4]
    # Nothing of the earlier frames is left once the job is over.
    assert not list((job.work / "flow").glob("*.npz")) and not list((job.work / "frames").glob("*.png"))

    moving = make_job(clips["moving"], tmp_path / "moving", long_term=(1, 2, 4))
    run_video(moving, vgg=build_tiny_vgg())
    assert [s.get("long_term") for s in frame_stats(moving.work)] == [None, None, [1, 2], [1, 2], [1, 2, 4], [1, 2, 4]]
    # Without --long-term the stylize stage's settings (its hash) are those of the releases before it.
    plain = FlowWarmStart(StartPlan(iterations_first=2, iterations=1, temporal_weight=1.0, scene_threshold=0.6))
    assert "long_term" not in plain.settings()


def cli_run(args: list, env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pipeline.cli", *map(str, args)]
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)


def resumes_to_the_same_frames(args: list, tmp_path: Path, *, after: tuple[str, ...], same: tuple[str, ...] = ()):
    """`stylize` with `args` run through (the reference), then, for each file whose name ends in
    one of `after` (each renamed into place once), run again stopped right after that rename and
    resumed: the output must be the reference's frame for frame, and each frame's record the same
    in the keys `same`. Returns the reference's work directory."""
    log = tmp_path / "renames.txt"
    reference = cli_run([*args, "-o", tmp_path / "ref" / "out.mp4"], os.environ | {RENAME_COUNT_ENV: str(log)})
    assert reference.returncode == 0, reference.stderr
    renames = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
    # Stopped at a file, not at a count: the flow stage places its pairs from a thread of its own,
    # so the number of renames before a given file is not the same in every run.
    stops = [Path(path).relative_to(tmp_path / "ref") for path in renames if path.endswith(after)]
    assert len(stops) == len(after), renames
    ref_work = tmp_path / "ref" / "out.mp4.work"
    for n, stop in enumerate(stops):
        out = tmp_path / f"stop{n}" / "out.mp4"
        stopped = cli_run([*args, "-o", out], os.environ | {"PIPELINE_EXIT_AFTER_RENAME_TO": str(out.parent / stop)})
        assert stopped.returncode == EXIT_STATUS, stopped.stderr
        resumed = cli_run([*args, "-o", out], os.environ)
        assert resumed.returncode == 0, f"stopped right after {stop}: {resumed.stderr}"
        assert decoded_frames(out) == decoded_frames(tmp_path / "ref" / "out.mp4"), f"stopped right after {stop}"
        for ref, again in zip(frame_stats(ref_work), frame_stats(out.with_name("out.mp4.work")), strict=True):
            assert {k: ref.get(k) for k in same} == {k: again.get(k) for k in same}, f"stopped right after {stop}"
    return ref_work


def test_long_term_segments_finish_and_resume_inside_a_later_segments_head_to_the_same_output(tmp_path):
    """--long-term 1,2 with --max-shot-frames: segments 1-8, 6-13 (head 6-8) and 11-14 (head
    11-13). The frame after a seam holds to the later segment's last two versions of the shared
    frames, and pairs with their content frames: the seam must leave them (the uninterrupted run
    failed with 'seams/000007.png: file not found'). A run stopped inside a later segment's head,
    with the segment before it finished, resumes from those content frames: the resume's pruning
    of the earlier segment must leave its tail to the seam (it took frame 6, and the resumed run
    failed for want of the pair 6 -> 8)."""
    clip = write_clip(tmp_path / "long.mp4", shot(14, seed=0))
    args = [
        "video", clip, "-s", STYLE, "--size", 32, "--iterations", 2, "--iterations-first", 3, "--seed", 3,
        "--device", "cpu", "--flow-workers", 1, "--long-term", "1,2", "--max-shot-frames", 8,
        "--segment-overlap", 3, "-q",
    ]  # fmt: skip
    # Right after the later segments' second head frames: the one before each is finished by then.
    resumes_to_the_same_frames(args, tmp_path, after=("seams/000007.json", "seams/000012.json"))


def test_long_term_job_killed_after_a_frame_resumes_to_the_same_frames(clips, tmp_path):
    """Frames i-2 and i-4 must still be there after a kill: the resumed run makes the same frames."""
    args = [
        "video", clips["moving"], "-s", STYLE, "--size", 32, "--iterations", 2, "--iterations-first", 3,
        "--seed", 3, "--device", "cpu", "--flow-workers", 1, "--long-term", "1,2,4", "-q",
    ]  # fmt: skip
    # Right after frame 4's record: frame 5 then reads frames 4, 3 and 1, which must all be there.
    same = ("frame", "start", "iterations", "loss", "terms", "long_term", "reliable_long")
    resumes_to_the_same_frames(args, tmp_path, after=("styled/000004.json",), same=same)


# --- flashes (cuts.py) ----------------------------------------------------------------------------


def test_a_change_of_light_that_goes_within_the_limit_back_to_the_frame_before_is_a_flash():
    def scan(scores: dict[int, float], spans: dict[int, list[float]]) -> Scan:
        return Scan(10, {i: 0.1 for i in range(2, 11)} | scores, spans)

    high, low = 0.9, 0.1
    one = scan({3: high, 4: high}, {4: [low, high]})  # frame 3 flashed, frame 4 back to frame 2's colours
    assert one.flashes(0.6, longest=2) == [Flash(3, 3)] and one.cuts(0.6, one.flashes(0.6, 2)) == []
    assert one.flashes(0.6, longest=0) == [] and one.cuts(0.6) == [3, 4]
    two = scan({3: high, 5: high}, {5: [high, low]})  # frames 3-4 flashed: frame 5 against frame 2
    assert two.flashes(0.6, longest=2) == [Flash(3, 4)] and two.flashes(0.6, longest=1) == []
    assert (Flash(3, 4).before, Flash(3, 4).after) == (2, 5)
    elsewhere = scan({3: high, 4: high}, {4: [high, high]})  # two cuts: frame 4 is not frame 2's scene
    assert elsewhere.flashes(0.6, longest=2) == [] and elsewhere.cuts(0.6, []) == [3, 4]
    unscanned = scan({3: high, 4: high}, {})  # a scan of the releases before: no spans, no flashes
    assert unscanned.flashes(0.6, longest=2) == []
    strobe = scan({3: high, 4: high, 5: high, 6: high}, {4: [low], 6: [low]})  # flashes at 3 and 5
    assert strobe.flashes(0.6, longest=1) == [Flash(3, 3), Flash(5, 5)]
    cut_after = scan({3: high, 4: high, 8: high}, {4: [low]})  # a flash, then a cut
    assert cut_after.cuts(0.6, cut_after.flashes(0.6, 2)) == [8]


def test_the_shot_goes_on_through_a_flash_and_the_frame_after_continues_from_the_frame_before(clips, tmp_path):
    """A flash (frame 5) made two cuts, each a cold start and the second a new look for the rest
    of the shot: now frame 5 starts from frame 4, held to it by the temporal term through the flow
    computed in frame 4's light, and frame 6 from frame 4 by their own pair."""
    job = make_job(clips["flash"], tmp_path / "flash", keep_frames=True)
    result = run_video(job, vgg=build_tiny_vgg())
    stats = frame_stats(job.work)
    assert [(s["start"], s["iterations"]) for s in stats] == [("init", 5)] + [
        ("flash", 3) if i == 5 else ("warped", 3) for i in range(2, 9)
    ]
    assert ["temporal" in s["terms"] for s in stats] == [False] + [True] * 7
    assert stats[4]["cut_score"] > DEFAULT_SCENE_THRESHOLD and stats[5]["after_flash"] == [5, 5]
    # The flash's pair: the flow of frame 5 in frame 4's light, the cut score of the frames as they are.
    frames = [cv2.cvtColor(cv2.imread(str(job.work / "frames" / f"00000{i}.png")), cv2.COLOR_BGR2RGB) for i in (4, 5)]
    as_they_are, lit = frame_pair(*frames), FramePair.load(job.work / "flow" / "000005.npz")
    assert lit.cut_score == pytest.approx(as_they_are.cut_score, abs=1e-6)
    assert stats[4]["reliable"] == pytest.approx(float(lit.reliability.mean()), abs=1e-4)
    assert lit.reliability.mean() > as_they_are.reliability.mean() + 0.2
    # A flash that lifts the levels without burning any out DIS follows as it is: that flow is kept.
    before, lifted = shot(5, seed=0)[3], (shot(5, seed=0)[4] * 0.3 + 178).astype(np.uint8)
    assert frame_pair(before, lifted, lit=True).reliability.mean() == frame_pair(before, lifted).reliability.mean()
    flow_settings = read_json(job.work / "job.json")["stages"]["flow"]["settings"]
    assert flow_settings["lit_flashes"] == {"flash_frames": 2, "scene_threshold": DEFAULT_SCENE_THRESHOLD}
    assert stats[5]["cut_score"] < DEFAULT_SCENE_THRESHOLD and stats[5]["reliable"] > 0.7  # frame 4 onto 6 (4 px)
    assert (job.work / "flow" / "000004-000006.npz").exists()
    manifest = read_json(job.work / "job.json")
    assert manifest["stages"]["stylize"]["shots"] == [[1, 8]]
    assert manifest["stages"]["stylize"]["flashes"] == [[5, 5]]
    assert manifest["stages"]["stylize"]["settings"]["flash_frames"] == 2
    assert manifest["stages"]["stylize"]["settings"]["free_flashes"] is False
    assert result.report["flicker"]["cuts"] == [5, 6]  # the pairs into and out of the flash are not measured
    status = "\n".join(status_lines(job.work))
    assert "flash at frame 5 (no cuts)" in status
    assert "5 frame pairs, 2 pairs across scene cuts, flashes, fades or fast moves" in status
    log = (job.work / "job.log").read_text()
    assert "scan: 8 frames, no scene cuts, flash at frame 5" in log
    assert re.findall(r"chunk: frames (\d+-\d+) encoded", log) == ["1-8"]  # the shot's chunk goes on through it
    assert "fps in 1 chunk, audio none)" in log
    assert "over 5 pairs; the pairs into frames 5-6 left out (scene cuts, flashes, fades, fast moves))" in log
    # The report's flicker table: no cut (its pairs left out of the flicker are the flash's), the flash.
    page = (job.work / "report.html").read_text()
    assert "<tr><th>scene cuts</th><td>none</td></tr>" in page
    assert "<tr><th>flashes (no cuts)</th><td>5</td></tr>" in page
    assert re.search(r"<tr><th>per pair, so far</th><td>output [0-9.e+]+, input [0-9.e+]+ over 5 pairs</td>", page)
    assert "flash" in (job.work / "report-files" / "video.svg").read_text()

    # --free-flashes: frame 5 free of the temporal term, by the flow of the frames as they
    # are, as the release before; its settings (hash) too.
    free = make_job(clips["flash"], tmp_path / "free", keep_frames=True, free_flashes=True)
    run_video(free, vgg=build_tiny_vgg())
    assert ["temporal" in s["terms"] for s in frame_stats(free.work)][3:6] == [True, False, True]
    assert frame_stats(free.work)[4]["reliable"] == pytest.approx(float(as_they_are.reliability.mean()), abs=1e-4)
    manifest = read_json(free.work / "job.json")
    assert "free_flashes" not in manifest["stages"]["stylize"]["settings"]
    assert "lit_flashes" not in manifest["stages"]["flow"]["settings"]

    # --flash-frames 0: two cuts, as the releases before, and their stylize settings (hash). The
    # flash burnt frame 5 out white: no flash, it is a blank frame (fades.py), written as it is.
    cuts = make_job(clips["flash"], tmp_path / "cuts", flash_frames=0)
    run_video(cuts, vgg=build_tiny_vgg())
    assert [s["start"] for s in frame_stats(cuts.work)][3:7] == ["warped", "blank", "cut", "warped"]
    manifest = read_json(cuts.work / "job.json")
    assert manifest["stages"]["stylize"]["shots"] == [[1, 4], [5, 5], [6, 8]]
    chunks = re.findall(r"chunk: frames (\d+)-(\d+) encoded", (cuts.work / "job.log").read_text())
    assert sorted((int(a), int(b)) for a, b in chunks) == [(1, 4), (5, 5), (6, 8)]  # the shots' own, longest first
    assert "flash_frames" not in manifest["stages"]["stylize"]["settings"]
    assert "flashes" not in manifest["stages"]["stylize"]


def test_stylize_flicker_tells_a_flash_from_a_scene_cut(tmp_path, capsys):
    """`stylize flicker` leaves out the pairs over the scene threshold, as before, and names them
    as `stylize video` does: the flash (frame 5) apart from the scene cut (frame 9)."""
    moving = shot(8, seed=0)
    clip = write_clip(tmp_path / "both.mp4", moving[:4] + [flashed(moving[4])] + moving[5:] + shot(4, seed=10))

    def flicker(*extra) -> str:
        code = main([str(a) for a in ["flicker", clip, "-r", clip, *extra]])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        return captured.out

    report = json.loads(flicker("--json"))
    assert (report["flashes"], report["cuts"], report["pairs"]) == ([[5, 5]], [9], 11 - 3)
    assert "; scene cut at frame 9 and flash at frame 5 skipped)" in flicker()
    cuts = json.loads(flicker("--flash-frames", 0, "--json"))  # as the releases before: three cuts
    assert (cuts["flashes"], cuts["cuts"], cuts["pairs"]) == ([], [5, 6, 9], 11 - 3)
    assert cuts["output"] == report["output"] and cuts["input"] == report["input"]
    # Burnt out white and no flash, frame 5 is a blank frame, as `stylize video --flash-frames 0` finds it.
    assert "; scene cuts at frames 5, 6, 9 skipped; blank 5)" in flicker("--flash-frames", 0)
    assert (cuts["blanks"], report["blanks"]) == ([[5, 5]], [])


def test_a_job_of_the_release_before_goes_on_with_its_flash_frames_free_of_the_temporal_term(clips, tmp_path):
    """A job begun by the release before (its settings: the flash frames without
    the temporal term, their pairs of the frames as they are), stopped before its flash and run
    again with the option left unset: its finished frames kept, its flash frame as that release
    made it, and the option named beside the default now."""
    began = make_job(clips["flash"], tmp_path, free_flashes=True)
    with pytest.raises(Recorder.Stop):
        run_video(began, events=Recorder(stop_at=4), vgg=build_tiny_vgg())
    recorded = read_json(began.work / "job.json")["stages"]
    assert "free_flashes" not in recorded["stylize"]["settings"]
    finished = {name: t for name, t in mtimes(began.work / "styled").items() if name.endswith(".json")}

    events = Recorder()
    run_video(
        make_job(clips["flash"], tmp_path, defaulted=frozenset(OWN_DEFAULTS)), events=events, vgg=build_tiny_vgg()
    )
    assert events.started == [4, 5, 6, 7, 8]
    assert {k: v for k, v in mtimes(began.work / "styled").items() if k in finished} == finished
    assert read_json(began.work / "job.json")["stages"]["flow"]["hash"] == recorded["flow"]["hash"]
    flash = frame_stats(began.work)[4]
    assert (flash["start"], "temporal" in flash["terms"]) == ("flash", False)
    assert any("--free-flashes (the defaults now: off;" in m for m in events.messages), events.messages


def test_a_job_killed_around_a_flash_resumes_to_the_same_frames(clips, tmp_path):
    """The frame after a flash reads the frame before it, stylized and as content, after a kill too:
    the work directory keeps them (VideoJob.reach) until it is finished."""
    args = [
        "video", clips["flash"], "-s", STYLE, "--size", 32, "--iterations", 2, "--iterations-first", 3,
        "--seed", 3, "--device", "cpu", "--flow-workers", 1, "-q",
    ]  # fmt: skip
    # Right after the records of the frame before the flash and of the flash.
    same = ("frame", "start", "iterations", "loss", "terms", "after_flash")
    reference = resumes_to_the_same_frames(
        args, tmp_path, after=("styled/000004.json", "styled/000005.json"), same=same
    )
    assert read_json(reference / "job.json")["stages"]["stylize"]["flashes"] == [[5, 5]]


def test_a_segment_goes_on_through_a_flash_from_its_own_frame_before_only(clips, tmp_path):
    """--max-shot-frames 5: segments 1-5 and 4-8, sharing frames 4-5. The flash (frame 5) comes at
    the first one's end, where its frame after is not the segment's: there frame 5 starts afresh,
    as at a cut. The second begins at the frame before the flash and goes on through it."""
    job = make_job(clips["flash"], tmp_path, max_shot_frames=5, segment_overlap=2)
    run_video(job, vgg=build_tiny_vgg())
    head = [read_json(job.work / "seams" / f"{index:06d}.json") for index in (4, 5)]  # the later segment's
    assert [s["start"] for s in head] == ["segment", "flash"]
    assert read_json(job.work / "styled" / "000006.json")["after_flash"] == [5, 5]
    assert read_json(job.work / "styled" / "000005.json")["start"] == "cut"  # the earlier segment's
    assert read_json(job.work / "job.json")["stages"]["stylize"]["segments"] == [[1, 5], [4, 8]]
    assert job.output.exists()
