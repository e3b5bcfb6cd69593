"""A video job against a hostile world (issue 12, "Nothing lost, nothing overwritten, nothing
hangs"): Ctrl-C and SIGTERM sent to the whole process group at every stage, a hard exit right
after the output is placed, a --clean killed halfway, another job writing the same output, a
--work-dir that is a folder of the user's, a FIFO as the input, absurd range options.

The CLI runs as a real process where signals or hard exits are the point (the real VGG-19 at
32 px, as in test_crash_resume.py); the rest runs in-process with helpers.py's tiny network.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ffmpeg
import pytest

from helpers import Recorder, build_tiny_vgg, decoded_frames, make_clip, make_job, tree_state
from pipeline import signals
from pipeline.cli import main
from pipeline.decode import ffmpeg_binary, probe, run_ffmpeg
from pipeline.errors import InputError
from pipeline.manifest import read_json
from pipeline.status import status_lines
from pipeline.video import JobEvents, run_video

ROOT = Path(__file__).resolve().parents[1]
STYLE = ROOT / "samples" / "ihc.png"
ARGS = ["--size", 32, "--iterations", 2, "--iterations-first", 3, "--seed", 3, "--device", "cpu", "-q"]
ARGS += ["--flow-workers", 1]
DEADLINE = 180  # seconds; the machine running the tests may be shared and slow


def stylize(*args) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", *map(str, args)]


def run(command: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    options = {"cwd": ROOT, "stdin": subprocess.DEVNULL, "capture_output": True, "text": True, "timeout": 600}
    return subprocess.run(command, env=env, **options)


def wait_for(condition, process: subprocess.Popen, what: str) -> None:
    """Poll `condition` until it holds; fail (with the process's stderr) if the process ends first
    or DEADLINE passes."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the job ended (status {process.returncode}) before {what}: {process.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {DEADLINE} s")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("hostile-clip") / "clip.mp4", frames=6, audio="aac")


@pytest.fixture(scope="module")
def reference(clip, tmp_path_factory) -> Path:
    """An uninterrupted CLI run: what every interrupted and resumed one must equal."""
    out = tmp_path_factory.mktemp("hostile-reference") / "out.mp4"
    done = run(stylize("video", clip, "-s", STYLE, "-o", out, *ARGS))
    assert done.returncode == 0, done.stderr
    return out


# --- Ctrl-C and SIGTERM to the process group at each stage --------------------------------------

STALLING_FFMPEG = """#!/bin/sh
# Stands for an ffmpeg that takes long at one stage: tells the test it started, then waits before running.
case "$*" in
  *{pattern}*) touch "{marks}/{stage}" ;;
  *) exec "{real}" "$@" ;;
esac
sleep 60
exec "{real}" "$@"
"""
STALLED = {"encode": "libx264", "decode": "rgb24"}  # what the stage's ffmpeg command line holds


def stalling_ffmpeg(folder: Path, stage: str) -> Path:
    """An FFMPEG_BINARY that stalls the stage's decodes or encodes (the other calls run at once),
    so that the test can signal the job while its ffmpeg runs; the process group's signal kills
    it as it would ffmpeg (which gets it too when the user presses Ctrl-C)."""
    marks = folder / "marks"
    marks.mkdir(parents=True)
    script = folder / "ffmpeg"
    script.write_text(STALLING_FFMPEG.format(marks=marks, real=ffmpeg_binary(), stage=stage, pattern=STALLED[stage]))
    script.chmod(0o755)
    return script


def stylized_once(work: Path) -> bool:
    # A frame's statistics file is its commit record (job.json is not rewritten per frame).
    return (work / "styled" / "000001.json").exists()


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("stage", ["decode", "stylize", "encode"])
def test_a_signal_to_the_process_group_at_any_stage_stops_the_job_and_the_same_command_finishes_it(
    clip, reference, tmp_path, stage, signum, status
):
    out = tmp_path / "out.mp4"
    work = tmp_path / "out.mp4.work"
    command = stylize("video", clip, "-s", STYLE, "-o", out, *ARGS)
    env = None
    if stage != "stylize":
        wrapper = stalling_ffmpeg(tmp_path / "bin", stage)
        env = os.environ | {"FFMPEG_BINARY": str(wrapper)}
        reached = lambda: (wrapper.parent / "marks" / stage).exists()
    else:
        reached = lambda: stylized_once(work)  # flow workers and the optimization both running
    # A session of its own: the job, its ffmpeg and its flow workers form one process group, as
    # in a terminal, and the signal goes to all of them.
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        wait_for(reached, process, f"the {stage} stage")
        os.killpg(process.pid, signum)
        process.wait(timeout=DEADLINE)
        err = process.stderr.read()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        process.stderr.close()
    what = "stopped by SIGTERM" if signum == signal.SIGTERM else "interrupted"
    assert process.returncode == status, err
    assert err.strip().splitlines() == [f"{what}; finished work is kept, run the same command again to resume"], err
    assert not out.exists()
    stopped = (work / "job.log").read_text().splitlines()[-1]
    assert stopped.endswith(f"stopped: {'Terminated' if signum == signal.SIGTERM else 'KeyboardInterrupt'}"), stopped
    if stage == "encode":  # the first encode is the shot's last chunk: every frame finished, and kept
        assert sorted(p.name for p in (work / "styled").glob("*.json")) == [f"{i:06d}.json" for i in range(1, 7)]

    done = run(command)
    assert done.returncode == 0, done.stderr
    assert decoded_frames(out) == decoded_frames(reference)
    assert sorted(p.name for p in tmp_path.rglob(".*") if p.name != ".lock") == []


# --- a hard exit right after the output is placed ----------------------------------------------


def test_killed_right_after_the_output_is_placed_the_same_command_knows_it_as_its_own(clip, reference, tmp_path):
    """The job records the output's fingerprint before the rename: a kill right after it leaves
    an output the next run recognises (exit 0, already done), not one it refuses to replace."""
    out = tmp_path / "killed" / "out.mp4"
    out.parent.mkdir()
    command = stylize("video", clip, "-s", STYLE, "-o", out, *(a for a in ARGS if a != "-q"))  # "already done" is shown
    killed = run(command, os.environ | {"PIPELINE_EXIT_AFTER_RENAME_TO": str(out)})
    assert killed.returncode == 99 and out.exists(), killed.stderr
    work = out.with_name("out.mp4.work")
    assert read_json(work / "job.json")["stages"]["encode"]["status"] == "placing"
    assert any(line.startswith("encode: done, 6 frames") for line in status_lines(work)), status_lines(work)
    before = out.stat().st_mtime_ns
    again = run(command)
    assert again.returncode == 0 and "already done" in again.stderr, again.stderr
    assert out.stat().st_mtime_ns == before and decoded_frames(out) == decoded_frames(reference)
    assert read_json(work / "job.json")["stages"]["encode"]["status"] == "done"


# --- --clean killed halfway ---------------------------------------------------------------------


def test_a_clean_killed_halfway_is_finished_by_the_next_run_and_status_says_what_is_there(clip, tmp_path):
    count = tmp_path / "renames.txt"
    out = tmp_path / "counted" / "out.mp4"
    out.parent.mkdir()
    counted = os.environ | {"PIPELINE_COUNT_RENAMES": str(count)}
    done = run(stylize("video", clip, "-s", STYLE, "-o", out, *ARGS, "--clean"), counted)
    assert done.returncode == 0, done.stderr
    renames = [line.split(" ", 1)[1] for line in count.read_text().splitlines()]
    # The first folder's removal: renamed to a stale name, and the process dies before its rmtree.
    first_removal = next(i for i, path in enumerate(renames, 1) if "-stale-" in path)

    out = tmp_path / "killed" / "out.mp4"
    out.parent.mkdir()
    work = out.with_name("out.mp4.work")
    command = stylize("video", clip, "-s", STYLE, "-o", out, *ARGS, "--clean")
    killed = run(command, os.environ | {"PIPELINE_EXIT_AFTER_RENAMES": str(first_removal)})
    assert killed.returncode == 99, killed.stderr
    assert not (work / "frames").exists() and (work / "styled").exists() and list(work.glob(".frames-stale-*"))
    code = main(["status", str(work)])
    assert code == 0
    # The record said "cleaned" before anything was removed; status tells the folders still there.
    report = status_lines(work)
    assert any(line.startswith("stylize: cleaning (styled/ is still there") for line in report), report
    assert any(line.startswith("decode: cleaned") for line in report), report

    again = run(command)
    assert again.returncode == 0, again.stderr
    # What stays: the records (the job's, the cut scan's, the shots') and the report (its thumbnails
    # are what is left to look at).
    kept = [".lock", "cuts", "job.json", "job.log", "report-files", "report.html", "shots"]
    assert sorted(p.name for p in work.iterdir()) == kept
    report = status_lines(work)
    for name in ("decode", "flow", "stylize"):
        assert any(line.startswith(f"{name}: cleaned") for line in report), report
    assert any(line.startswith("encode: done") for line in report), report


# --- runs in-process with the tiny network ------------------------------------------------------


def cli(args: list, capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.strip()


def test_a_work_dir_that_is_a_folder_of_the_users_is_refused_and_nothing_in_it_is_touched(clip, tmp_path, capsys):
    mine = tmp_path / "mine"
    for folder in ("frames", "styled", "flow"):
        (mine / folder).mkdir(parents=True)
        (mine / folder / "000001.png").write_bytes(b"the user's own frame")
    (mine / "job.log").write_text("the user's notes\n")
    (mine / ".lock").write_text("")
    state = tree_state(tmp_path)
    code, err = cli(["video", clip, "-s", STYLE, "-o", tmp_path / "out.mp4", "--work-dir", mine, "--size", 32], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err == (
        f"error: {mine}: --work-dir is a folder with other files in it (no video job's job.json); "
        "give a new or empty directory"
    )
    assert tree_state(tmp_path) == state


def test_a_work_dir_left_by_a_job_killed_before_its_first_record_is_taken_over(clip, tmp_path):
    """What a job leaves between taking its lock and writing job.json: only the .lock."""
    job = make_job(clip, tmp_path, work_dir=tmp_path / "work")
    job.work.mkdir()
    (job.work / ".lock").write_text("12345")
    result = run_video(job, vgg=build_tiny_vgg())
    assert result.frames == 6 and read_json(job.work / "job.json")["kind"] == "video"


class Stranger(JobEvents):
    """Writes `path` when the encode starts: another program (another job) placing the same output."""

    def __init__(self, path: Path):
        self.path = path

    def stage(self, name, total=None, done=0):
        if name == "encode":
            self.path.write_bytes(b"another job's video")


def test_a_job_replaces_only_an_output_it_wrote_itself(clip, tmp_path):
    first = run_video(make_job(clip, tmp_path, work_dir=tmp_path / "a.work"), vgg=build_tiny_vgg())
    output = first.output.read_bytes()
    # Another job (another work directory) with the same output: refused, the file untouched.
    other = make_job(clip, tmp_path, work_dir=tmp_path / "b.work", settings={"style_weight": 1e3})
    with pytest.raises(InputError, match=r"out.mp4: output exists \(use --overwrite to replace it\)"):
        run_video(other, vgg=build_tiny_vgg())
    assert first.output.read_bytes() == output
    # With --overwrite it replaces it; the first job then no longer takes the file for its own.
    other = make_job(clip, tmp_path, work_dir=tmp_path / "b.work", settings={"style_weight": 1e3}, overwrite=True)
    run_video(other, vgg=build_tiny_vgg())
    replaced = first.output.read_bytes()
    assert replaced != output
    with pytest.raises(InputError, match="output exists and is no longer the file this job wrote"):
        run_video(make_job(clip, tmp_path, work_dir=tmp_path / "a.work"), vgg=build_tiny_vgg())
    assert first.output.read_bytes() == replaced
    # Its own output, once more under its name, is "already done" again.
    (tmp_path / "out.mp4").write_bytes(output)
    assert run_video(make_job(clip, tmp_path, work_dir=tmp_path / "a.work"), vgg=build_tiny_vgg()).already_done


def test_an_output_written_by_someone_else_while_the_job_runs_is_not_replaced(clip, tmp_path):
    job = make_job(clip, tmp_path)
    with pytest.raises(InputError, match=r"out.mp4: output exists \(use --overwrite"):
        run_video(job, events=Stranger(job.output), vgg=build_tiny_vgg())
    assert job.output.read_bytes() == b"another job's video"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # The job's frames are kept: with --overwrite it only encodes.
    events = Recorder()
    run_video(make_job(clip, tmp_path, overwrite=True), events=events, vgg=build_tiny_vgg())
    assert events.started == [] and probe(job.output).frames == 6


@pytest.mark.parametrize("every_nth, frames", [(10, 3), (250, 1), (25, 1), (24, 2)])
def test_a_preview_lasts_as_long_as_the_range_it_previews(tmp_path, every_nth, frames):
    clip = make_clip(tmp_path / "second.mp4", frames=25, audio="aac")  # 1 s at 25 fps
    result = run_video(make_job(clip, tmp_path, every_nth=every_nth), vgg=build_tiny_vgg())
    info = probe(result.output)
    assert result.frames == frames == info.frames
    assert abs(info.video_duration - 1.0) <= 0.04, info


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--duration", "1e300", "--duration 1e+300: must be at most 1e+09 seconds"),
        ("--start", "1e300", "--start 1e+300: must be at most 1e+09 seconds"),
    ],
)
def test_absurd_range_options_are_blamed_on_the_option(clip, tmp_path, capsys, option, value, message):
    code, err = cli(["video", clip, "-s", STYLE, "-o", tmp_path / "out.mp4", "--size", 32, option, value], capsys)
    assert code == 2 and err == f"error: {message}", err
    assert list(tmp_path.iterdir()) == []


def test_a_fifo_as_the_input_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    # A subprocess with a time limit: a job that opened the FIFO would wait for a writer for ever.
    command = stylize("video", fifo, "-s", STYLE, "-o", tmp_path / "out.mp4", "--size", 32)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: {fifo}: is a FIFO (named pipe), not a regular video file", done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


# --- the signal plumbing underneath -------------------------------------------------------------


def test_an_ffmpeg_stopped_by_the_signal_the_job_holds_back_means_interrupted_not_failed(tmp_path):
    """Inside a write (signals.deferred) the job holds Ctrl-C back; ffmpeg, in the same process
    group, gets it too and stops (the real ffmpeg exits 255). That is an interruption."""
    source = ffmpeg.input("testsrc2=size=32x32:rate=25", f="lavfi", re=None)
    endless = source.output(str(tmp_path / "x.mp4"), vcodec="libx264")
    sent = []

    def ctrl_c_to_both(frames: int) -> None:
        if not sent:
            sent.append(frames)
            os.kill(os.getpid(), signal.SIGINT)  # held back: we are inside deferred()
            for child in Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split():
                os.kill(int(child), signal.SIGINT)

    with signals.handled():
        with pytest.raises(KeyboardInterrupt) as raised, signals.deferred():
            run_ffmpeg(endless, what="test", on_progress=ctrl_c_to_both)
    assert sent and type(raised.value) is KeyboardInterrupt


def test_an_ffmpeg_killed_by_sigterm_means_terminated(tmp_path, monkeypatch):
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\nkill -TERM $$\n")
    fake.chmod(0o755)
    monkeypatch.setenv("FFMPEG_BINARY", str(fake))
    with pytest.raises(signals.Terminated):
        run_ffmpeg(ffmpeg.input("x.png").output(str(tmp_path / "y.png")), what="test")


def test_a_write_that_fails_while_a_signal_is_held_back_stops_the_job_as_interrupted():
    with signals.handled():
        with pytest.raises(signals.Terminated) as raised, signals.deferred():
            os.kill(os.getpid(), signal.SIGTERM)  # held back
            raise OSError("the child that got the same signal failed")
    assert isinstance(raised.value.__cause__, OSError)


def test_clean_on_a_finished_job_removes_its_folders_once(clip, tmp_path):
    job = make_job(clip, tmp_path)
    run_video(job, vgg=build_tiny_vgg())
    output = job.output.read_bytes()
    cleaning = make_job(clip, tmp_path, clean=True)
    assert run_video(cleaning, vgg=build_tiny_vgg()).already_done
    kept = [".lock", "cuts", "job.json", "job.log", "report-files", "report.html", "shots"]
    assert sorted(p.name for p in job.work.iterdir()) == kept
    assert job.output.read_bytes() == output
    log = (job.work / "job.log").read_text()
    assert log.count("cleaned: ") == 1
    assert run_video(cleaning, vgg=build_tiny_vgg()).already_done
    assert (job.work / "job.log").read_text() == log  # nothing left to do, nothing logged
