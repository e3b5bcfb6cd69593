"""Video jobs on CPU with synthetic clips from ffmpeg's testsrc2: probing, decode/stylize/encode,
resume after an interruption or a SIGKILL, invalidation on changed settings, the lock, bad input.

Most jobs use the tiny random VGG of helpers.py (the plumbing is the point here); one runs the CLI
with the real weights. Clips are 48x32, a few frames; frames are stylized at 32 px.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np
import pytest
from PIL import Image

from helpers import (
    ITERATIONS_FIRST,
    SETTINGS,
    STYLE,
    TESTS,
    Recorder,
    build_tiny_vgg,
    heavy_modules_loaded,
    make_clip,
    make_job,
    mtimes,
    tree_state,
)
from pipeline.cli import main
from pipeline.decode import ffmpeg_binary, probe
from pipeline.errors import InputError
from pipeline.manifest import WorkDirLock, read_json
from pipeline.settings import option_text
from pipeline.status import status_lines
from pipeline.video import run_video
from pipeline.video_defaults import DEFAULT_STOP_TOLERANCE, OWN_DEFAULTS


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    clips = {
        "ntsc": make_clip(d / "ntsc.mp4", frames=6, rate="30000/1001", audio="aac"),
        "silent": make_clip(d / "silent.mp4", frames=10),
        "pcm": make_clip(d / "pcm.mkv", frames=6, audio="pcm_s16le"),
        "sound_only": d / "sound.m4a",
        "empty": d / "empty.mp4",
        "text": d / "notes.mp4",
    }
    ffmpeg.input("sine=duration=0.5", f="lavfi").output(str(clips["sound_only"]), acodec="aac").run(
        cmd=ffmpeg_binary(), quiet=True
    )
    clips["empty"].write_bytes(b"")
    clips["text"].write_text("this is not a video\n")
    whole = make_clip(d / "whole.mp4", frames=50, size="64x48", audio="aac", faststart=True)
    clips["truncated"] = d / "truncated.mp4"
    clips["truncated"].write_bytes(whole.read_bytes()[: whole.stat().st_size * 7 // 10])
    return clips


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def assert_same_frames(styled_a: Path, styled_b: Path) -> None:
    names = sorted(p.name for p in styled_a.glob("*.png"))
    assert names == sorted(p.name for p in styled_b.glob("*.png"))
    for name in names:
        assert np.array_equal(pixels(styled_a / name), pixels(styled_b / name)), name


def assert_matches_input(output: Path, source: Path, *, every_nth: int = 1) -> None:
    """Frame count, frame rate and duration (within one frame) of the output match the input."""
    got, want = probe(output), probe(source)
    assert got.rate == want.rate / every_nth
    assert got.frames == -(-want.frames // every_nth)
    assert abs(got.duration - want.duration) <= 1 / float(got.rate)
    assert len(got.audio) == len(want.audio)


@pytest.fixture(scope="module")
def reference(clips, tmp_path_factory) -> Path:
    """An uninterrupted run on the 29.97 fps clip with audio: the result resumed runs must equal."""
    out = tmp_path_factory.mktemp("reference")
    # --keep-frames: the tests below compare every decoded and stylized frame with this run's.
    result = run_video(make_job(clips["ntsc"], out, keep_frames=True), vgg=build_tiny_vgg())
    assert result.stylized == list(range(1, 7))
    return out


def test_probe_reads_rate_size_rotation_audio_and_variable_rate(clips, tmp_path):
    ntsc = probe(clips["ntsc"])
    assert (ntsc.width, ntsc.height, ntsc.rate, ntsc.frames) == (48, 32, Fraction(30000, 1001), 6)
    assert not ntsc.variable_frame_rate and [a.codec for a in ntsc.audio] == ["aac"]
    assert probe(clips["silent"]).audio == () and probe(clips["silent"]).rate == 25

    rotated = tmp_path / "rotated.mp4"
    ffmpeg.input(str(clips["silent"]), display_rotation=90).output(str(rotated), c="copy").run(
        cmd=ffmpeg_binary(), quiet=True
    )
    info = probe(rotated)
    assert (info.width, info.height, abs(info.rotation)) == (32, 48, 90)

    # Frame n shown at n^2/30 s: far from constant.
    vfr = make_clip(tmp_path / "vfr.mkv", frames=8, rate="30", vf="setpts=N*N/(30*TB)", fps_mode="passthrough")
    info = probe(vfr)
    assert info.variable_frame_rate
    assert abs(info.duration - (7 * 7 + 1) / 30) < 0.01
    assert 0.5 < float(info.rate) * info.duration / 8 < 1.5  # the average rate, not 30


def test_video_job_keeps_rate_duration_audio_and_records_every_frame(clips, reference):
    out = reference / "out.mp4"
    assert_matches_input(out, clips["ntsc"])
    assert [a.codec for a in probe(out).audio] == ["aac"]
    work = reference / "out.mp4.work"
    manifest = read_json(work / "job.json")
    assert {name: stage["status"] for name, stage in manifest["stages"].items()} == {
        "decode": "done",
        "flow": "done",
        "stylize": "done",
        "encode": "done",
    }
    assert manifest["stages"]["stylize"]["done"] == 6 and manifest["stages"]["encode"]["audio"] == "copy"
    stats = [read_json(work / "styled" / f"{i:06d}.json") for i in range(1, 7)]
    assert [(s["start"], s["iterations"]) for s in stats] == [("init", ITERATIONS_FIRST)] + [("previous", 2)] * 5
    assert all(s["stage_hash"] == manifest["stages"]["stylize"]["hash"] for s in stats)
    frame_lines = re.findall(
        r" frame (\d{6})/000006 start=(\w+) iterations=(\d+) loss=", (work / "job.log").read_text()
    )
    assert frame_lines == [("000001", "init", "3")] + [(f"{i:06d}", "previous", "2") for i in range(2, 7)]
    # A second run finds everything done and touches nothing.
    before = mtimes(work / "styled"), out.stat().st_mtime_ns
    assert run_video(make_job(clips["ntsc"], reference, keep_frames=True), vgg=build_tiny_vgg()).already_done
    assert (mtimes(work / "styled"), out.stat().st_mtime_ns) == before
    assert any("stylize: done, 6/6 frames done, 0 remaining" in line for line in status_lines(work))


def test_reencodes_audio_the_container_cannot_take_and_keeps_duration_with_every_nth(clips, tmp_path):
    result = run_video(make_job(clips["pcm"], tmp_path, every_nth=2), vgg=build_tiny_vgg())
    assert result.audio == "aac" and result.frames == 3
    assert_matches_input(result.output, clips["pcm"], every_nth=2)
    assert [a.codec for a in probe(result.output).audio] == ["aac"]


def test_variable_frame_rate_input_keeps_its_duration(tmp_path):
    clip = make_clip(tmp_path / "vfr.mkv", frames=8, rate="30", vf="setpts=N*N/(30*TB)", fps_mode="passthrough")
    result = run_video(make_job(clip, tmp_path), vgg=build_tiny_vgg())
    got, want = probe(result.output), probe(clip)
    assert got.rate == want.rate and not got.variable_frame_rate
    assert abs(got.duration - want.duration) <= 1 / float(got.rate)
    assert got.frames == result.frames == round(want.duration * float(want.rate))


def test_start_and_duration_select_the_frames_of_that_range(clips, tmp_path):
    # 25 fps: 0.12 s in, 0.2 s long -> frames 4..8 of 10.
    result = run_video(make_job(clips["silent"], tmp_path, start=0.12, duration=0.2), vgg=build_tiny_vgg())
    info = probe(result.output)
    assert result.frames == 5 and info.frames == 5 and info.audio == ()
    assert abs(info.duration - 0.2) <= 0.04


def test_interrupted_from_the_callback_resumes_without_recomputing_finished_frames(clips, reference, tmp_path):
    job = make_job(clips["ntsc"], tmp_path, keep_frames=True)
    work = job.work
    with pytest.raises(Recorder.Stop):
        run_video(job, events=Recorder(stop_at=3), vgg=build_tiny_vgg())
    stage = read_json(work / "job.json")["stages"]["stylize"]
    assert (stage["status"], stage["done"]) == ("running", 2)
    assert sorted(p.name for p in (work / "styled").iterdir()) == [
        "000001.json",
        "000001.png",
        "000002.json",
        "000002.png",
    ]
    assert not job.output.exists()
    finished, decoded = mtimes(work / "styled"), mtimes(work / "frames")

    events = Recorder()
    result = run_video(job, events=events, vgg=build_tiny_vgg())
    assert events.started == [3, 4, 5, 6] and result.stylized == [3, 4, 5, 6]
    assert {k: v for k, v in mtimes(work / "styled").items() if k in finished} == finished
    assert mtimes(work / "frames") == decoded
    assert read_json(work / "job.json")["stages"]["stylize"]["done"] == 6
    assert_same_frames(work / "styled", reference / "out.mp4.work" / "styled")
    assert job.output.read_bytes() == (reference / "out.mp4").read_bytes()


KILLED_RUN = """
import sys, time
sys.path.insert(0, {tests!r})
from helpers import build_tiny_vgg  # also pins torch to one thread, as in the tests
from pathlib import Path
from pipeline.stylize import StyleSettings
from pipeline.video import JobEvents, VideoJob, run_video

class Slow(JobEvents):
    def iteration(self, progress):
        time.sleep(0.3)  # time for the test to kill this process in the middle of a frame

job = VideoJob(input=Path({clip!r}), styles=(Path({style!r}),), output=Path({output!r}),
               settings=StyleSettings(**{settings!r}), iterations_first={first}, device="cpu", flow="none",
               keep_frames=True)
run_video(job, events=Slow(), vgg=build_tiny_vgg())
"""


def test_sigkilled_run_resumes_without_recomputing_finished_frames(clips, reference, tmp_path):
    job = make_job(clips["ntsc"], tmp_path, keep_frames=True)
    script = KILLED_RUN.format(
        tests=str(TESTS),
        clip=str(job.input),
        style=str(STYLE),
        output=str(job.output),
        settings=SETTINGS,
        first=ITERATIONS_FIRST,
    )
    # stderr into a file: readable for the failure message while the process still runs.
    stderr = tempfile.TemporaryFile()
    process = subprocess.Popen([sys.executable, "-c", script], cwd=TESTS.parent, stderr=stderr)

    def err() -> str:
        stderr.seek(0)
        return stderr.read().decode(errors="replace")

    try:
        deadline = time.monotonic() + 300
        while not (job.work / "styled" / "000002.json").exists():
            assert process.poll() is None, f"the job ended with status {process.returncode}: {err()}"
            assert time.monotonic() < deadline, f"the job never finished frame 2: {err()}"
            time.sleep(0.05)
        assert WorkDirLock.holder(job.work) == str(process.pid), err()
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stderr.close()
    # A frame is finished once its statistics file exists. job.json is not rewritten per frame (its
    # cost would grow with a long video's length): `stylize status` counts the statistics files.
    done = len(list((job.work / "styled").glob("*.json")))
    assert 2 <= done < 6 and any(f", {done}/6 frames done" in line for line in status_lines(job.work))
    decode = next(line for line in status_lines(job.work) if line.startswith("decode: "))
    assert re.search(r", 6 frames at [1-9][0-9]*x[1-9][0-9]* ", decode), decode  # the size known from the start
    finished = mtimes(job.work / "styled")
    assert f"{done:06d}.png" in finished and f"{done + 1:06d}.json" not in finished

    events = Recorder()  # the dead process's lock is taken over
    run_video(job, events=events, vgg=build_tiny_vgg())
    finished_before = {k: v for k, v in finished.items() if not k.startswith(".")}
    assert events.started == list(range(done + 1, 7))
    assert read_json(job.work / "job.json")["stages"]["stylize"]["done"] == 6
    assert {k: v for k, v in mtimes(job.work / "styled").items() if k in finished_before} == finished_before
    assert_same_frames(job.work / "styled", reference / "out.mp4.work" / "styled")
    assert job.output.read_bytes() == (reference / "out.mp4").read_bytes()


def test_changed_settings_invalidate_exactly_the_stages_that_depend_on_them(clips, tmp_path):
    clip = clips["silent"]
    first = run_video(make_job(clip, tmp_path, duration=0.16, keep_frames=True), vgg=build_tiny_vgg())
    work = first.work_dir
    decoded, styled, output = mtimes(work / "frames"), mtimes(work / "styled"), first.output.stat().st_mtime_ns
    assert first.frames == 4

    # --crf: only the encode.
    events = Recorder()
    run_video(make_job(clip, tmp_path, duration=0.16, crf=30, keep_frames=True), events=events, vgg=build_tiny_vgg())
    assert events.started == [] and mtimes(work / "frames") == decoded and mtimes(work / "styled") == styled
    assert first.output.stat().st_mtime_ns != output
    assert any("encode: settings changed (crf)" in m for m in events.messages)

    # A style setting: the stylized frames and the output, not the decoded frames.
    events = Recorder()
    run_video(
        make_job(clip, tmp_path, duration=0.16, crf=30, settings={"style_weight": 1e3}, keep_frames=True),
        events=events,
        vgg=build_tiny_vgg(),
    )
    assert events.started == [1, 2, 3, 4] and mtimes(work / "frames") == decoded
    assert all(mtimes(work / "styled")[name] != styled[name] for name in styled)
    assert any("stylize: settings changed (style_weight)" in m for m in events.messages)

    # --size: everything.
    events = Recorder()
    run_video(
        make_job(clip, tmp_path, duration=0.16, crf=30, settings={"style_weight": 1e3, "size": 24}, keep_frames=True),
        events=events,
        vgg=build_tiny_vgg(),
    )
    assert events.started == [1, 2, 3, 4]
    assert all(mtimes(work / "frames")[name] != decoded[name] for name in decoded)
    assert Image.open(work / "frames" / "000001.png").size == (24, 16)
    assert (probe(first.output).width, probe(first.output).height) == (24, 16)


def test_a_rerun_leaving_a_changed_default_unset_resumes_with_the_value_the_job_began_with(clips, tmp_path):
    """A job begun under another release's defaults (--iterations-first 3 and --stop-tolerance
    0.003 stand for them) and stopped: run again with the options left unset, it goes on with the
    values it began with, its stylized frames kept, and says so. With another setting changed as
    well, the stage starts over, under the defaults now."""
    clip, unset = clips["silent"], frozenset(OWN_DEFAULTS)
    began = make_job(clip, tmp_path, duration=0.16, keep_frames=True, stop_tolerance=0.003)
    with pytest.raises(Recorder.Stop):
        run_video(began, events=Recorder(stop_at=3), vgg=build_tiny_vgg())
    work, finished = began.work, mtimes(began.work / "styled")

    events = Recorder()
    rerun = make_job(clip, tmp_path, duration=0.16, keep_frames=True, iterations_first=None, defaulted=unset)
    run_video(rerun, events=events, vgg=build_tiny_vgg())
    assert events.started == [3, 4]
    assert {k: v for k, v in mtimes(work / "styled").items() if k in finished} == finished
    settings = read_json(work / "job.json")["stages"]["stylize"]["settings"]
    assert (settings["iterations_first"], settings["stop_tolerance"]) == (3, 0.003)
    resumed = "resuming with the settings the job began with, --iterations-first 3, --stop-tolerance 0.003"
    now = f" (the defaults now: 1500, {option_text(DEFAULT_STOP_TOLERANCE)};"
    assert any(resumed + now in m for m in events.messages), events.messages

    # One given as the defaults are now: every frame again, the others at the defaults now too.
    events = Recorder()
    given = make_job(clip, tmp_path, duration=0.16, iterations_first=None, defaulted=unset - {"stop_tolerance"})
    run_video(given, events=events, vgg=build_tiny_vgg())
    assert events.started == [1, 2, 3, 4]
    changed = "stylize: settings changed (iterations_first, stop_tolerance)"
    assert any(changed in m for m in events.messages), events.messages

    # Another setting changed: every frame again, under the defaults now.
    run_video(make_job(clip, tmp_path, duration=0.16, stop_tolerance=0.003), vgg=build_tiny_vgg())
    events = Recorder()
    restyled = make_job(
        clip, tmp_path, duration=0.16, iterations_first=None, settings={"style_weight": 1e3}, defaulted=unset
    )
    run_video(restyled, events=events, vgg=build_tiny_vgg())
    assert events.started == [1, 2, 3, 4]
    settings = read_json(work / "job.json")["stages"]["stylize"]["settings"]
    assert (settings["iterations_first"], settings["stop_tolerance"]) == (1500, DEFAULT_STOP_TOLERANCE)
    assert not any("resuming with" in m for m in events.messages), events.messages


def test_the_command_line_leaves_stop_tolerance_to_the_job_only_where_it_is_not_given(tmp_path):
    """`stylize video` without --stop-tolerance: a finished job begun with another value is already
    done (that value kept); given, even as the default's value, the frames are stylized again."""
    clip = make_clip(tmp_path / "clip.mp4", frames=3)
    out = tmp_path / "out.mp4"
    base = [sys.executable, "-m", "pipeline.cli", "video", clip, "-s", STYLE, "-o", out, "--size", 32]
    base += ["--iterations", 2, "--iterations-first", 3, "--seed", 3, "--device", "cpu", "--flow-workers", 1]
    options = {"stdin": subprocess.DEVNULL, "capture_output": True, "text": True, "timeout": 600}
    env = os.environ | {"COLUMNS": "300"}

    def stylize(*more) -> subprocess.CompletedProcess:
        result = subprocess.run([str(a) for a in base + list(more)], env=env, **options)
        assert result.returncode == 0, result.stderr
        return result

    stylize("--stop-tolerance", "0.003", "-q")
    placed = out.stat().st_mtime_ns
    again = stylize()
    now = f"--stop-tolerance 0.003 (the defaults now: {option_text(DEFAULT_STOP_TOLERANCE)};"
    assert "already done" in again.stderr and now in again.stderr, again.stderr
    assert out.stat().st_mtime_ns == placed
    given = stylize("--stop-tolerance", option_text(DEFAULT_STOP_TOLERANCE))
    assert "stylize: settings changed (stop_tolerance)" in given.stderr, given.stderr
    assert out.stat().st_mtime_ns != placed
    recorded = read_json(out.with_name("out.mp4.work") / "job.json")["stages"]["stylize"]["settings"]
    assert recorded["stop_tolerance"] == DEFAULT_STOP_TOLERANCE


def test_clean_removes_frames_after_encoding_and_the_job_stays_done(clips, tmp_path):
    job = make_job(clips["silent"], tmp_path, duration=0.08, clean=True)
    run_video(job, vgg=build_tiny_vgg())
    assert job.output.exists() and not (job.work / "frames").exists() and not (job.work / "styled").exists()
    assert run_video(job, vgg=build_tiny_vgg()).already_done
    assert any(line.startswith("stylize: cleaned") for line in status_lines(job.work))


def test_a_lock_won_on_a_removed_lock_file_is_taken_again_on_the_file_there_now(tmp_path, monkeypatch):
    """A refused run removes the .lock it made while holding it. A process that opened that file
    meanwhile and wins its flock once it is released must not believe it holds the directory."""
    import threading

    monkeypatch.setattr("pipeline.manifest.LOCK_TRIES", 500)  # the waiter retries for 10 s
    first = WorkDirLock(tmp_path).__enter__()
    waiter, opened = WorkDirLock(tmp_path), threading.Event()
    real_open = os.open

    def open_and_tell(*args, **kwargs):
        fd = real_open(*args, **kwargs)
        opened.set()
        return fd

    monkeypatch.setattr("pipeline.manifest.os.open", open_and_tell)
    thread = threading.Thread(target=waiter.__enter__)
    thread.start()
    assert opened.wait(10)  # the waiter has the old file open: it locks that one once it is free
    (tmp_path / ".lock").unlink()
    first.__exit__(None, None, None)
    thread.join(20)
    assert not thread.is_alive() and waiter.fd is not None
    assert os.path.samestat(os.stat(tmp_path / ".lock"), os.fstat(waiter.fd))  # the file there now
    assert WorkDirLock.holder(tmp_path) == str(os.getpid())
    monkeypatch.setattr("pipeline.manifest.LOCK_TRIES", 2)
    with pytest.raises(InputError, match="in use by process"):
        WorkDirLock(tmp_path).__enter__()
    waiter.__exit__(None, None, None)


def test_lock_refuses_a_second_process_on_the_same_work_dir(clips, tmp_path):
    job = make_job(clips["silent"], tmp_path)
    job.work.mkdir()
    with WorkDirLock(job.work):
        with pytest.raises(InputError, match="in use by process"):
            run_video(job, vgg=build_tiny_vgg())
    assert not (job.work / "job.json").exists()


def cli(args: list[str], capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err.strip()


@pytest.mark.parametrize(
    "case, message",
    [
        ("text", "not a video file"),
        ("sound_only", "has no video stream (only audio)"),
        ("empty", "empty file (0 bytes)"),
        ("truncated", "truncated or incomplete file"),
    ],
)
def test_bad_video_files_are_one_line_errors_with_exit_2(clips, tmp_path, capsys, case, message):
    code, err = cli(["video", clips[case], "-s", STYLE, "-o", tmp_path / "out.mp4", "--size", 32], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"error: {clips[case]}: ") and message in err
    assert not (tmp_path / "out.mp4.work").exists()


def test_bad_paths_are_one_line_errors_with_exit_2(clips, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cases = [
        (["-o", clips["ntsc"]], "output is the same file as the input"),
        (["-o", tmp_path / "out.mp4", "--work-dir", blocker / "work"], "cannot create the work directory"),
        (["-o", tmp_path / "out.avi"], "unsupported video format .avi"),
    ]
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases.append((["-o", tmp_path / "out.mp4", "--work-dir", locked], "work directory is not writable"))
    for extra, message in cases:
        code, err = cli(["video", clips["ntsc"], "-s", STYLE, "--size", 32, *extra], capsys)
        assert code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_too_little_disk_is_refused_up_front_and_finished_frames_are_kept(clips, tmp_path, capsys, monkeypatch):
    job = make_job(clips["ntsc"], tmp_path)
    with pytest.raises(Recorder.Stop):
        run_video(job, events=Recorder(stop_at=3), vgg=build_tiny_vgg())
    finished, manifest = mtimes(job.work / "styled"), (job.work / "job.json").read_bytes()

    before = tree_state(tmp_path)

    monkeypatch.setattr(shutil, "disk_usage", low_disk)
    code, err = cli(
        [
            "video",
            job.input,
            "-s",
            STYLE,
            "-o",
            job.output,
            "--size",
            32,
            "--iterations",
            2,
            "--iterations-first",
            ITERATIONS_FIRST,
            "--seed",
            3,
        ],
        capsys,
    )
    assert code == 2 and len(err.splitlines()) == 1
    assert "not enough disk space for 6 frames of 32x20" in err and str(job.work) in err
    # A changed input that turns out truncated is refused before anything of the job is touched.
    code, err = cli(
        ["video", clips["truncated"], "-s", STYLE, "-o", job.output, "--size", 32, "--work-dir", job.work], capsys
    )
    assert code == 2 and "truncated" in err
    assert mtimes(job.work / "styled") == finished and (job.work / "job.json").read_bytes() == manifest
    # The resumable job's directory is intact: its .lock, job.log and every frame, as they were.
    assert tree_state(tmp_path) == before


def low_disk(path):
    return shutil._ntuple_diskusage(10**9, 10**9 - 5000, 5000)


def test_a_refused_job_leaves_the_file_system_as_it_found_it(clips, tmp_path, capsys, monkeypatch):
    """Refusals after the work directory was made (no room, an output that exists, a range with no
    video frames found only by decoding) remove the folders and the files the run created: the
    tree is exactly as before. A folder that was there before stays, and so does anyone's file."""
    fast = ["-s", STYLE, "--size", 32, "--iterations", 1, "--device", "cpu", "-q"]
    clip = clips["silent"]
    (tmp_path / "mine").mkdir()  # an empty folder the user made for the job
    (tmp_path / "taken.mp4").write_bytes(b"someone else's video")
    state = tree_state(tmp_path)

    monkeypatch.setattr(shutil, "disk_usage", low_disk)
    for extra in (
        ["-o", tmp_path / "new" / "deeper" / "out.mp4"],  # new output folders, default work dir
        ["-o", tmp_path / "out.mp4", "--work-dir", tmp_path / "jobs" / "a" / "work"],
        ["-o", tmp_path / "out.mp4", "--work-dir", tmp_path / "mine"],
    ):
        code, err = cli(["video", clip, *fast, *extra], capsys)
        assert code == 2 and len(err.splitlines()) == 1 and "not enough disk space" in err, err
        assert tree_state(tmp_path) == state, extra
    assert (tmp_path / "mine").is_dir()

    # Someone else's file lands in the new work directory meanwhile: nothing there is removed.
    def disk_and_a_stranger(path):
        (tmp_path / "busy.mp4.work" / "theirs.txt").write_text("not the job's\n")
        return low_disk(path)

    monkeypatch.setattr(shutil, "disk_usage", disk_and_a_stranger)
    code, err = cli(["video", clip, *fast, "-o", tmp_path / "busy.mp4"], capsys)
    assert code == 2 and "not enough disk space" in err
    assert (tmp_path / "busy.mp4.work" / "theirs.txt").read_text() == "not the job's\n"
    shutil.rmtree(tmp_path / "busy.mp4.work")
    monkeypatch.undo()

    # An output that exists and is not the job's own, found once the (new) work dir is locked.
    code, err = cli(["video", clip, *fast, "-o", tmp_path / "taken.mp4"], capsys)
    assert code == 2 and "output exists (use --overwrite" in err, err
    assert tree_state(tmp_path) == state

    # A file whose sound outlasts its video: --start 1 passes the check on the file's duration,
    # and only decoding finds no frames, after job.json and job.log were written.
    longer = tmp_path / "sources" / "longer-sound.mp4"
    longer.parent.mkdir()
    streams = [
        ffmpeg.input("testsrc2=size=48x32:rate=25:duration=0.16", f="lavfi"),
        ffmpeg.input("sine=duration=2", f="lavfi"),
    ]
    ffmpeg.output(*streams, str(longer), vcodec="libx264", pix_fmt="yuv420p", acodec="aac").global_args("-nostdin").run(
        cmd=ffmpeg_binary(), quiet=True
    )
    state = tree_state(tmp_path)
    for extra in (["-o", tmp_path / "late" / "out.mp4"], ["-o", tmp_path / "out.mp4", "--work-dir", tmp_path / "mine"]):
        code, err = cli(["video", longer, *fast, "--start", 1, *extra], capsys)
        assert code == 2 and len(err.splitlines()) == 1, err
        assert "no video frames in the selected range (--start 1; it holds 0.16 s of video in 2.00 s)" in err
        assert tree_state(tmp_path) == state, extra


def test_cli_video_with_real_weights_then_status(clips, tmp_path, capsys):
    clip = make_clip(tmp_path / "three.mp4", frames=3, audio="aac")
    out = tmp_path / "styled.mp4"
    code = main(
        [
            str(a)
            for a in [
                "video",
                clip,
                "-s",
                STYLE,
                "-o",
                out,
                "--size",
                32,
                "--iterations",
                1,
                "--iterations-first",
                2,
                "--device",
                "cpu",
                "-q",
            ]
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() == str(out)
    assert_matches_input(out, clip)
    assert main(["status", str(tmp_path / "styled.mp4.work")]) == 0
    report = capsys.readouterr().out
    assert "stylize: done, 3/3 frames done, 0 remaining" in report and "encode: done, 3 frames, audio copy" in report
    assert "weights=original" in report and "iterations_first=2" in report
    code, err = cli(["status", tmp_path], capsys)
    assert code == 2 and "not the work directory of a stylize job" in err


@pytest.mark.parametrize(
    "banner, option",
    [
        ("ffmpeg version 4.2.2-static https://johnvansickle.com/ffmpeg/", "vsync"),  # imageio-ffmpeg 0.5
        ("ffmpeg version 4.4.2-0ubuntu0.22.04.1 Copyright (c) 2000-2021", "vsync"),
        ("ffmpeg version 5.1.6-0+deb12u1", "fps_mode"),
        ("ffmpeg version n7.1 Copyright (c) 2000-2024", "fps_mode"),
        ("ffmpeg version N-118000-gabcdef Copyright", "fps_mode"),  # a git snapshot
    ],
)
def test_frame_timing_option_follows_the_ffmpeg_version(tmp_path, monkeypatch, banner, option):
    from pipeline.decode import ffmpeg_version, passthrough_timestamps

    fake = tmp_path / "ffmpeg"
    fake.write_text(f"#!/bin/sh\necho '{banner}'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("FFMPEG_BINARY", str(fake))
    ffmpeg_version.cache_clear()
    try:
        assert passthrough_timestamps() == {option: "passthrough"}
    finally:
        ffmpeg_version.cache_clear()


def test_flicker_report_is_summed_from_per_pair_records_equal_to_measuring_the_files(reference):
    """Each finished frame records its pair's flicker figures, so the report needs no frames or flow
    kept to the end; summed, they give exactly what measuring the kept files gives."""
    from pipeline.flicker import measure_flicker

    work = reference / "out.mp4.work"
    manifest = read_json(work / "job.json")
    records = [read_json(work / "styled" / f"{i:06d}.json").get("flicker") for i in range(1, 7)]
    assert records[0] is None and all(set(r) >= {"output", "input", "cut_score", "flow"} for r in records[1:])
    assert all(r["flow"] == manifest["stages"]["flow"]["hash"] for r in records[1:])
    report = manifest["report"]["flicker"]
    measured = measure_flicker(
        flow_dir=work / "flow", sequences={"output": work / "styled", "input": work / "frames"}, total=6,
        scene_threshold=report["scene_threshold"], workers=1,
    )  # fmt: skip
    assert measured == report
    kept = [r for r in records[1:] if r["cut_score"] <= report["scene_threshold"]]
    assert report["output"] == pytest.approx(np.mean([r["output"] for r in kept]), rel=1e-12)


def test_status_shows_the_work_directory_size(reference):
    work = reference / "out.mp4.work"
    size = sum(f.stat().st_size for f in work.rglob("*") if f.is_file())
    lines = [line for line in status_lines(work) if line.startswith("work directory: ")]
    assert len(lines) == 1, status_lines(work)
    value, unit = lines[0].split()[2:4]
    scale = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit]
    assert abs(float(value) * scale - size) <= 0.06 * size, (lines[0], size)


def test_status_lists_every_setting_wrapped_under_its_heading(reference):
    # A person reads them in a terminal: key=value under "settings:", no line past 100 columns, a
    # nested table's entries as table.key=value.
    from pipeline.status import shown_settings

    work = reference / "out.mp4.work"
    lines = status_lines(work)
    at = lines.index("settings:")
    listed = []
    for line in lines[at + 1 :]:
        if not line.startswith("  "):
            break
        assert len(line) <= 100, line
        listed += line.split()
    shown = shown_settings(read_json(work / "job.json")["stages"])
    nested = {key for key, value in shown.items() if isinstance(value, dict)}
    assert nested, shown  # the cut scan's settings are a table: the case worth checking
    expected = {f"{key}.{inner}" for key in nested for inner in shown[key]} | set(shown) - nested
    assert {pair.split("=")[0] for pair in listed} == expected
    assert f"size={shown['size']}" in listed and f"frame_size={','.join(map(str, shown['frame_size']))}" in listed


def test_status_reads_the_records_without_loading_torch(reference):
    # `watch stylize status WORK` runs it every two seconds beside a job: records only, no torch.
    work = reference / "out.mp4.work"
    loaded, out = heavy_modules_loaded("status", str(work))
    assert out.splitlines() == status_lines(work)
    assert loaded == [], f"stylize status imported {loaded}"
