"""Failures of the machine, not of the input: out of (GPU) memory, a full disk, Ctrl-C and SIGTERM.
Each stops the job with one line on stderr and exit status 1 (130, 143 for the signals), keeps
every finished frame and image, leaves its records readable and nothing half written, and the
same command resumes once the cause is gone.

Out of memory is injected on CPU by replacing VGG19.forward (the one place every optimization,
batch and style target goes through) with one that raises torch.OutOfMemoryError as CUDA does,
above a pixel budget or once a condition holds. A full disk is made two ways: atomic writes that
raise ENOSPC (always), and a real tmpfs filled by another thread mid-job (root only). Signals are
sent to `stylize` subprocesses. Real VGG-19 weights at 32 px, 2-3 iterations.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

import pipeline.encode
import pipeline.images
import pipeline.manifest
from pipeline import archive, signals
from pipeline.atomic import atomic_path
from pipeline.cli import main
from pipeline.decode import ffmpeg_binary, run_ffmpeg
from pipeline.errors import WriteError
from pipeline.vgg import VGG19

ROOT = Path(__file__).resolve().parents[1]
STYLE = ROOT / "samples" / "ihc.png"
# --keep-frames: the resumed runs' stylized frames are compared, file by file, with the reference's.
VIDEO_ARGS = ["--size", 32, "--iterations", 2, "--iterations-first", 3, "--seed", 3, "--device", "cpu", "-q",
              "--keep-frames"]  # fmt: skip
IMAGES_ARGS = ["--size", 32, "--iterations", 2, "--seed", 3, "--devices", "cpu", "-q"]


def run(argv, capsys) -> tuple[int, list[str]]:
    """main() in this process: exit status and the non-empty lines on stderr."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, [line for line in err.splitlines() if line.strip()]


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def temporaries(folder: Path, allowed=(".lock", ".stylize")) -> list[str]:
    """Anything a stopped job must not leave: all temporary names start with a dot."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if p.name not in allowed)


def image_bytes(path: Path) -> bytes:
    with Image.open(path) as image:
        image.load()  # complete, not torn
    return path.read_bytes()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("failures-clip") / "clip.mp4"
    video = ffmpeg.input("testsrc2=size=48x32:rate=25", f="lavfi")
    ffmpeg.output(video, str(path), vcodec="libx264", pix_fmt="yuv420p", **{"frames:v": 6}).global_args("-nostdin").run(
        cmd=ffmpeg_binary(), quiet=True
    )
    return path


@pytest.fixture(scope="module")
def video_reference(clip, tmp_path_factory) -> Path:
    """The uninterrupted run every resumed one must equal; returns its styled/ folder."""
    out = tmp_path_factory.mktemp("failures-video-reference") / "out.mp4"
    assert main([str(a) for a in ["video", clip, "-s", STYLE, "-o", out, *VIDEO_ARGS]]) == 0
    return out.with_name("out.mp4.work") / "styled"


def photo(path: Path, width: int, height: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((4, 4, 3)) * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC).save(path)
    return path


@pytest.fixture
def photos(tmp_path) -> Path:
    """Five photos: four 48x36 (32x24 at --size 32) and one square, 32x32."""
    root = tmp_path / "in"
    root.mkdir()
    for i in range(4):
        photo(root / f"{i}.png", 48, 36, i)
    photo(root / "square.png", 40, 40, 9)
    return root


def assert_resumed_video_equals_reference(out: Path, reference: Path, finished: dict[str, int]) -> None:
    styled = out.with_name("out.mp4.work") / "styled"
    now = snapshot(styled)
    assert {name: now[name] for name in finished} == finished  # finished frames not redone
    assert sorted(p.name for p in styled.glob("*.png")) == sorted(p.name for p in reference.glob("*.png"))
    for path in reference.glob("*.png"):
        assert image_bytes(styled / path.name) == path.read_bytes(), path.name
    assert out.exists() and temporaries(out.parent) == []


# --- out of memory ----------------------------------------------------------------------------------


@contextmanager
def memory_cap(monkeypatch, *, pixels: int | None = None, when=None):
    """VGG19.forward raises torch.OutOfMemoryError, as on a GPU, for inputs of more than `pixels`
    pixels (batch included), or while `when()` is true. Leaving the block lifts the cap."""
    real = VGG19.forward
    calls = {"refused": 0}

    def forward(self, rgb):
        if (pixels is not None and rgb.numel() // 3 > pixels) or (when is not None and when()):
            calls["refused"] += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB (injected by the test)")
        return real(self, rgb)

    monkeypatch.setattr(VGG19, "forward", forward)
    try:
        yield calls
    finally:
        monkeypatch.setattr(VGG19, "forward", real)


def test_out_of_memory_in_image_names_the_size_and_what_to_try(tmp_path, capsys, monkeypatch):
    content = photo(tmp_path / "content.png", 48, 36, 1)
    with memory_cap(monkeypatch, pixels=100) as cap:
        code, err = run(
            [
                "image",
                content,
                "-s",
                STYLE,
                "-o",
                tmp_path / "out.png",
                "--size",
                32,
                "--iterations",
                2,
                "--device",
                "cpu",
                "-q",
            ],
            capsys,
        )
    assert cap["refused"] >= 1
    assert code == 1 and err == ["error: --size 32 needs more memory than this machine has free; try --size 16"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content.png"]


def test_out_of_memory_in_video_stops_with_one_line_keeps_frames_and_resumes(
    clip, video_reference, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out.mp4"
    work = tmp_path / "out.mp4.work"
    # The GPU fills up (another process took memory) once two frames are finished.
    with memory_cap(monkeypatch, when=lambda: (work / "styled" / "000002.json").exists()):
        code, err = run(["video", clip, "-s", STYLE, "-o", out, *VIDEO_ARGS], capsys)
    assert code == 1 and len(err) == 1
    assert err[0] == "error: --size 32 needs more memory than this machine has free; try --size 16"
    manifest = json.loads((work / "job.json").read_text())
    assert manifest["stages"]["stylize"]["done"] == 2 and not out.exists()
    assert "stopped: OutOfMemoryError" in (work / "job.log").read_text()
    finished = snapshot(work / "styled")
    assert sorted(finished) == ["000001.json", "000001.png", "000002.json", "000002.png"]
    assert temporaries(tmp_path) == []

    code, err = run(["video", clip, "-s", STYLE, "-o", out, *VIDEO_ARGS], capsys)
    assert code == 0, err
    assert_resumed_video_equals_reference(out, video_reference, finished)


def test_out_of_memory_in_archive_halves_the_batch_then_records_the_image_and_retries_it_next_run(
    photos, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out"
    # A batch of three 32x24 images holds 2304 pixels: over the budget of 1600, which takes a
    # batch of two, the square photo (1024) and the style image at --style-scale 0.5 (16x16).
    with memory_cap(monkeypatch, pixels=1600) as cap:
        code, err = run(
            ["images", photos, "-s", STYLE, "-o", out, "--batch-size", 3, "--style-scale", 0.5, *IMAGES_ARGS], capsys
        )
    assert code == 0, err
    records = archive.read_records(out)
    assert cap["refused"] >= 1 and all(r["status"] == "done" for r in records.values())
    assert sorted(r["batch_size"] for r in records.values() if r["source"] != "square.png") == [1, 1, 2, 2]

    out = tmp_path / "out2"
    with memory_cap(monkeypatch, pixels=1000):  # the square photo alone is too big
        code, err = run(["images", photos, "-s", STYLE, "-o", out, "--style-scale", 0.5, *IMAGES_ARGS], capsys)
    assert code == 1 and err[-1].startswith("error: 1 of 5 images failed")
    square = archive.read_records(out)["square.png"]
    assert square["status"] == "failed" and square["transient"]
    assert (
        square["error"]
        == f"{photos / 'square.png'}: --size 32 (32x32) needs more memory than this machine has free; try --size 16"
    )
    finished = {k: v for k, v in snapshot(out).items() if not k.startswith(".stylize") and "square" not in k}
    assert len(finished) == 4

    # Memory is back: the same command, without --retry-failed, does the square photo only.
    code, err = run(["images", photos, "-s", STYLE, "-o", out, "--style-scale", 0.5, *IMAGES_ARGS], capsys)
    assert code == 0, err
    assert archive.read_records(out)["square.png"]["status"] == "done"
    assert {k: v for k, v in snapshot(out).items() if k in finished} == finished
    assert temporaries(out) == []


# --- a full disk --------------------------------------------------------------------------------------


@contextmanager
def disk_full(monkeypatch, when):
    """Every atomic write (images, records, job.json) fails with ENOSPC while `when()` is true,
    after writing part of its temporary file, as a full disk would make it. (The mp4 is ffmpeg's
    own write: the tmpfs test below fills a real disk under it.)"""
    real = atomic_path
    failures = {"writes": 0}

    @contextmanager
    def failing(path):
        with real(path) as tmp:
            yield tmp
            if when():
                failures["writes"] += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    for module in (pipeline.images, pipeline.manifest):
        monkeypatch.setattr(module, "atomic_path", failing)
    try:
        yield failures
    finally:
        for module in (pipeline.images, pipeline.manifest):
            monkeypatch.setattr(module, "atomic_path", real)


def test_full_disk_stops_the_video_job_cleanly_and_it_resumes_once_there_is_space(
    clip, video_reference, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out.mp4"
    work = tmp_path / "out.mp4.work"
    with disk_full(monkeypatch, when=lambda: (work / "styled" / "000003.json").exists()) as failures:
        code, err = run(["video", clip, "-s", STYLE, "-o", out, *VIDEO_ARGS], capsys)
    assert failures["writes"] >= 1
    assert code == 1 and len(err) == 1
    assert re.fullmatch(
        r"error: \S+: no space left on the device; free some space and run the same command again", err[0]
    ), err
    # The write that failed came after frame 3's statistics (its commit record); job.json, not
    # rewritten per frame, is the last good one and says the stage is still running.
    manifest = json.loads((work / "job.json").read_text())
    assert manifest["stages"]["stylize"]["status"] == "running"
    finished = snapshot(work / "styled")
    assert sorted(finished) == [f"{i:06d}.{ext}" for i in (1, 2, 3) for ext in ("json", "png")]
    assert temporaries(tmp_path) == []

    code, err = run(["video", clip, "-s", STYLE, "-o", out, *VIDEO_ARGS], capsys)
    assert code == 0, err
    assert_resumed_video_equals_reference(out, video_reference, finished)
    # The shot's record still said running (the full disk refused the mark): the stopped run's
    # task was known gone, not waited for as if it might still be writing.
    assert "waiting for the task" not in (work / "job.log").read_text()


def test_full_disk_stops_the_archive_instead_of_failing_every_image_and_it_resumes(
    photos, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out"
    done = lambda: sum(r["status"] == "done" for r in archive.read_records(out).values())
    with disk_full(monkeypatch, when=lambda: done() >= 2):
        code, err = run(["images", photos, "-s", STYLE, "-o", out, *IMAGES_ARGS], capsys)
    assert code == 1 and len(err) == 1 and "no space left on the device" in err[0], err
    records = archive.read_records(out)
    assert [r["status"] for r in records.values()] == ["done", "done"]  # no image blamed for the disk
    finished = snapshot(out)
    assert temporaries(out) == []

    code, err = run(["images", photos, "-s", STYLE, "-o", out, *IMAGES_ARGS], capsys)
    assert code == 0, err
    assert len(archive.read_records(out)) == 5
    assert {k: v for k, v in snapshot(out).items() if k in finished and ".stylize/records" in k} == {
        k: v for k, v in finished.items() if ".stylize/records" in k
    }


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (needs root; skipped elsewhere), unmounted after the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.decode().strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill_when(disk: Path, trigger) -> threading.Thread:
    """A thread that fills `disk` up to the last byte once `trigger()` is true."""

    def fill() -> None:
        deadline = time.monotonic() + 60
        while not trigger() and time.monotonic() < deadline:
            time.sleep(0.002)
        # Closing the full file fails too (what the last write left buffered): inside the try.
        try:
            with open(disk / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC

    thread = threading.Thread(target=fill, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("kind", ["video", "images"])
def test_a_really_full_disk_mid_job_stops_cleanly_and_the_job_resumes_after_space_is_freed(
    kind, clip, photos, small_disk, capsys
):
    """Whichever write meets the full disk (a frame, a record, the manifest, the log, ffmpeg's
    output), the job ends with one line and exit 1, and resumes when the filler is deleted."""
    if kind == "video":
        out = small_disk / "out.mp4"
        argv = ["video", clip, "-s", STYLE, "-o", out, *VIDEO_ARGS]
        trigger = lambda: (small_disk / "out.mp4.work" / "styled" / "000002.json").exists()
    else:
        out = small_disk / "out"
        argv = ["images", photos, "-s", STYLE, "-o", out, *IMAGES_ARGS]
        trigger = lambda: len(list((out / ".stylize" / "records").glob("*.json"))) >= 2
    filler = fill_when(small_disk, trigger)
    code, err = run(argv, capsys)
    filler.join()
    assert code == 1 and len(err) == 1 and "no space left on the device" in err[0], err
    for path in small_disk.rglob("*.json"):
        json.loads(path.read_text())
    for path in small_disk.rglob("[0-9]*.png"):
        image_bytes(path)
    # Records of finished work; job.json, archive.json, the shots' records (their state) and the
    # report's caches are rewritten by design.
    rewritten = ("job.json", "archive.json", "report-files", "/shots/")
    finished = {
        k: v for k, v in snapshot(small_disk).items() if k.endswith(".json") and not any(r in k for r in rewritten)
    }
    assert finished

    (small_disk / "filler").unlink()
    code, err = run(argv, capsys)
    assert code == 0, err
    now = snapshot(small_disk)
    assert {k: now[k] for k in finished} == finished
    assert temporaries(small_disk) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, where every write fails with ENOSPC")
def test_log_lines_on_a_full_disk_give_one_clear_error_or_are_dropped_never_a_traceback(capsys):
    from pipeline.workdir import JobLog

    log = JobLog(Path("/dev/full"))
    with pytest.raises(WriteError, match="/dev/full: no space left on the device"):
        log("frame 000001/000008 ...")
    log.close()  # the unflushed line fails again: already reported
    with archive.log_file(Path("/dev/full")):  # the photo archive's log.txt
        archive.log.info("done a.png -> a.png")
    assert capsys.readouterr().err == ""


# --- signals -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, signum, status",
    [
        ("video", signal.SIGTERM, 143),
        ("video", signal.SIGINT, 130),
        ("images", signal.SIGTERM, 143),
        ("images", signal.SIGINT, 130),
    ],
    ids=["video-SIGTERM", "video-SIGINT", "images-SIGTERM", "images-SIGINT"],
)
def test_signals_stop_after_the_current_write_record_progress_and_say_how_to_resume(
    kind, signum, status, clip, photos, video_reference, tmp_path, capsys
):
    if kind == "video":
        out = tmp_path / "out.mp4"
        argv = ["video", clip, "-s", STYLE, "-o", out, *VIDEO_ARGS]
        # A frame's statistics file is its commit record (job.json is not rewritten per frame).
        progressed = lambda: (tmp_path / "out.mp4.work" / "styled" / "000001.json").exists()
    else:
        out = tmp_path / "out"
        argv = ["images", photos, "-s", STYLE, "-o", out, *IMAGES_ARGS, "--iterations", 40]
        progressed = lambda: any(r["status"] == "done" for r in archive.read_records(out).values())
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *map(str, argv)], cwd=ROOT, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 90
        while not progressed():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(signum)
        assert process.wait(timeout=60) == status
        err = [line for line in process.stderr.read().decode().splitlines() if line.strip()]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
    what = "stopped by SIGTERM" if signum == signal.SIGTERM else "interrupted"
    assert err == [f"{what}; finished work is kept, run the same command again to resume"]
    assert temporaries(tmp_path) == []
    if kind == "video":
        work = tmp_path / "out.mp4.work"
        stage = json.loads((work / "job.json").read_text())["stages"]["stylize"]
        assert 1 <= stage["done"] < 6 and stage["status"] == "running"
        assert (
            (work / "job.log")
            .read_text()
            .splitlines()[-1]
            .endswith(f"stopped: {'Terminated' if signum == signal.SIGTERM else 'KeyboardInterrupt'}")
        )
        # Progress is recorded: each finished frame has its statistics file (its commit record),
        # and the manifest's count may lag the last one, as the resumed run expects.
        recorded = sorted(p.name for p in (work / "styled").glob("*.json"))
        assert recorded[: stage["done"]] == [f"{i:06d}.json" for i in range(1, stage["done"] + 1)]
        assert len(recorded) in (stage["done"], stage["done"] + 1)
        finished = snapshot(work / "styled")
        finished = {k: v for k, v in finished.items() if k.replace(".png", ".json") in recorded}
        code, errors = run(argv, capsys)
        assert code == 0, errors
        assert_resumed_video_equals_reference(out, video_reference, finished)
    else:
        assert json.loads((out / ".stylize" / "archive.json").read_text())["state"] == "interrupted"
        records = archive.read_records(out)
        assert 1 <= len(records) < 5
        for record in records.values():
            image_bytes(out / record["output"])  # every recorded image is there, complete


def test_a_signal_during_an_atomic_write_waits_for_the_write_to_finish(tmp_path):
    path = tmp_path / "record.json"
    with signals.handled():
        with pytest.raises(signals.Terminated), atomic_path(path) as tmp:
            tmp.write_text('{"half": ')
            os.kill(os.getpid(), signal.SIGTERM)  # delivered here, raised after the rename
            tmp.write_text('{"whole": true}')
        assert json.loads(path.read_text()) == {"whole": True}
        with pytest.raises(KeyboardInterrupt):  # outside a write: at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the caller's handlers are back
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_an_interrupted_ffmpeg_is_stopped_and_a_killed_job_takes_its_ffmpeg_with_it(tmp_path, monkeypatch):
    """Ctrl-C while ffmpeg runs stops ffmpeg at once; SIGKILL of the job ends ffmpeg too (its
    progress pipe closes), instead of leaving it decoding into a folder the resumed job deletes."""
    started = []
    real_popen = subprocess.Popen

    def recording_popen(args, **kwargs):
        assert isinstance(args, list) and not kwargs.get("shell")  # never through a shell
        started.append(real_popen(args, **kwargs))
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    endless = ffmpeg.input("testsrc2=size=32x32:rate=25", f="lavfi", re=None).output("-", f="null")

    def interrupt(frames: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_ffmpeg(endless, what="test", on_progress=interrupt)
    assert started[0].poll() is not None
    monkeypatch.undo()

    if not Path("/proc/self/task").exists():
        return  # finding the child needs Linux's /proc
    script = (
        "import ffmpeg; from pipeline.decode import run_ffmpeg; "
        "run_ffmpeg(ffmpeg.input('testsrc2=size=32x32:rate=25', f='lavfi', re=None).output('-', f='null'), what='test')"
    )
    job = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    children = Path(f"/proc/{job.pid}/task/{job.pid}/children")

    def decoding_child() -> int | None:
        """The job's ffmpeg reading the test source: not a child that comes and goes before it (the
        imageio-ffmpeg wheel runs `ffmpeg -version` to check its binary), nor a fork not yet ffmpeg
        (its command line still the job's, the source's name in it)."""
        for pid in children.read_text().split():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                program, *args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"ffmpeg" in Path(program.decode()).name.encode() and any(b"testsrc2" in a for a in args):
                    return int(pid)
        return None

    deadline = time.monotonic() + 30
    while (child := decoding_child()) is None:
        assert time.monotonic() < deadline and job.poll() is None, f"no ffmpeg child (job status {job.poll()})"
        time.sleep(0.01)
    job.kill()
    job.wait()

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except FileNotFoundError:
            return False

    # ffmpeg meets the closed pipe at its next progress line (every 0.5 s of its clock); on a
    # loaded 2-core machine that has taken over 5 s.
    deadline = time.monotonic() + 30
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(child), "ffmpeg outlived the job that started it"
