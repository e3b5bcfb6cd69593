"""Crash-resume torture: the `stylize video` and `stylize images` commands, each run a process of
its own, are SIGKILLed at random (seeded) moments and run again until they finish. After every kill the
job's records must parse and every file under a final name must be complete; at the end the
results must equal those of an uninterrupted run byte for byte (the mp4 by its decoded frames),
no finished frame, flow pair or image may have been written twice, and nothing temporary may be
left. CI runs the short version (at least MIN_KILLS kills per job); `make torture` runs the long
one (pytest -m torture). TORTURE_SEED picks other kill moments.

The jobs are tiny (a 48x32 clip of 8 frames, 8 photos, 32 px, 2-3 iterations) with the real
VGG-19 weights: a separate process cannot use conftest's random network, and 32 px costs little.
Each run is forked from one server process (tests/cli_server.py) that imported torch once: a
fresh interpreter would spend three times the job's own time importing, outside the window the
kills fall in (from taking the job's lock to its end).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ffmpeg
import numpy as np
import pytest
from PIL import Image

from helpers import decoded_frames
from pipeline import archive
from pipeline.decode import ffmpeg_binary

ROOT = Path(__file__).resolve().parents[1]
STYLE = ROOT / "samples" / "ihc.png"
SEED = int(os.environ.get("TORTURE_SEED", "8"))
MIN_KILLS = 8  # every commit point is stopped at in test_commit_points.py; these add random instants
LONG_KILLS = 60
VIDEO_ARGS = ["--size", 32, "--iterations", 2, "--iterations-first", 3, "--seed", 3, "--device", "cpu", "-q"]
IMAGES_ARGS = ["--size", 32, "--iterations", 2, "--seed", 3, "--devices", "cpu", "-q"]


def lock_holder(lock: Path) -> str:
    """The pid written in a WorkDirLock file. Read without flock: WorkDirLock.holder takes a
    shared lock for a moment, which a job starting at that moment would find taken."""
    try:
        return lock.read_text().strip()
    except OSError:
        return ""


DEADLINE = 300  # seconds for one run of a tiny job, on a shared and loaded machine
SERVER_DEADLINE = 120  # seconds for the server to import torch and the package, or to fork


class CliServer:
    """tests/cli_server.py: every run of a test is a process forked from this one server, which
    imported torch and the package once (a run's own work is a fraction of an interpreter's start).
    A thread reads its replies; the server's stderr goes to a file, shown when it fails."""

    def __init__(self):
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "cli_server.py")],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
        )  # fmt: skip
        self.replies = threading.Condition()
        self.started: list[int] = []
        self.ended: dict[int, int] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            message = json.loads(line)
            with self.replies:
                if "started" in message:
                    self.started.append(message["started"])
                else:
                    self.ended[message["ended"]] = message["status"]
                self.replies.notify_all()

    def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Whether condition() (checked under the lock) came true within `timeout`, the server alive."""
        deadline = time.monotonic() + timeout
        with self.replies:
            while not condition():
                if self.process.poll() is not None or time.monotonic() > deadline:
                    return False
                self.replies.wait(0.5)
        return True

    def state(self) -> str:
        """For failure messages: the server's exit status (None: running) and its stderr."""
        self.stderr.seek(0)
        return f"server exit {self.process.poll()}, its stderr: {self.stderr.read().decode(errors='replace')}"

    def start(self, argv: list[str], output: Path) -> Forked:
        self.process.stdin.write(json.dumps({"argv": argv, "output": str(output)}).encode() + b"\n")
        self.process.stdin.flush()
        if not self.wait_for(lambda: bool(self.started), SERVER_DEADLINE):
            pytest.fail(f"stylize {' '.join(argv)} not started within {SERVER_DEADLINE} s; {self.state()}")
        with self.replies:
            return Forked(self, self.started.pop(0))

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=SERVER_DEADLINE)
        self.stderr.close()


class Forked:
    """One run on the CliServer, with the part of subprocess.Popen's interface the tests use."""

    def __init__(self, server: CliServer, pid: int):
        self.server, self.pid = server, pid

    @property
    def returncode(self) -> int | None:
        with self.server.replies:
            return self.server.ended.get(self.pid)

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float = DEADLINE) -> int | None:
        """The exit status, or None if the run had not ended within `timeout`."""
        self.server.wait_for(lambda: self.pid in self.server.ended, timeout)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:  # not yet reported ended, so the pid is still this run's
            with contextlib.suppress(ProcessLookupError):  # reaped a moment ago: its status is on its way
                os.kill(self.pid, signum)


@pytest.fixture(scope="module")
def server():
    server = CliServer()
    yield server
    server.close()


@dataclass(frozen=True)
class Command:
    """`stylize ARGV`, run on a CliServer."""

    server: CliServer
    argv: list[str]


def stylize(server: CliServer, *args) -> Command:
    return Command(server, [*map(str, args)])


class Job:
    """A run of a command, its stdout and stderr going to a file: readable at any moment, for the
    failure messages."""

    def __init__(self, command: Command):
        descriptor, name = tempfile.mkstemp(prefix="stylize-", suffix=".err")
        os.close(descriptor)
        self.output = Path(name)
        self.process = command.server.start(command.argv, self.output)

    def err(self) -> str:
        return self.output.read_text(errors="replace")

    def wait(self) -> int:
        status = self.process.wait(DEADLINE)
        if status is None:
            pytest.fail(
                f"the job did not end within {DEADLINE} s; its stderr: {self.err()}\n{self.process.server.state()}"
            )
        return status

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.wait()
        self.output.unlink(missing_ok=True)


def time_to_lock_and_end(command: Command, lock: Path) -> tuple[int, float, str]:
    """Exit status, the seconds from taking the lock to the end (the window kills fall in), stderr."""
    job = Job(command)
    try:
        locked, deadline = None, time.monotonic() + DEADLINE
        while job.process.poll() is None:
            if locked is None and lock_holder(lock) == str(job.process.pid):
                locked = time.monotonic()
            assert time.monotonic() < deadline, f"the job did not end within {DEADLINE} s; its stderr: {job.err()}"
            time.sleep(0.005)
        err = job.err()
        assert locked is not None and "Traceback" not in err, err
        return job.process.returncode, time.monotonic() - locked, err
    finally:
        job.close()


@dataclass
class Kills:
    """What one round of kill-and-resume did, for the failure messages."""

    delays: list[float] = field(default_factory=list)
    landed: int = 0
    states: list[str] = field(default_factory=list)  # what each kill left, from after_kill
    exit_status: int | None = None
    stderr: str = ""  # of the run that ended by itself


def kill_and_resume(
    command: Command, lock: Path, rng: random.Random, window: float, after_kill: Callable[[], str], max_kills: int
) -> Kills:
    """Start `command`; once it holds the lock, wait a random part of `window` and SIGKILL it;
    check the invariants; start it again; ... until a run ends by itself (or max_kills is
    reached, then one last run is left to finish)."""
    kills = Kills()
    while True:
        job = Job(command)
        process = job.process
        try:
            deadline = time.monotonic() + DEADLINE
            while process.poll() is None and lock_holder(lock) != str(process.pid):
                assert time.monotonic() < deadline, f"the job never took its lock; its stderr: {job.err()}"
                time.sleep(0.002)
            if kills.landed < max_kills:
                # Skewed towards the start, where a resumed run does its bookkeeping, and so that
                # a round takes several kills before a run gets through.
                delay = window * rng.random() ** 2
                kills.delays.append(round(delay, 3))
                end = time.monotonic() + delay
                while process.poll() is None and time.monotonic() < end:
                    time.sleep(0.001)
                if process.poll() is None:
                    process.send_signal(signal.SIGKILL)
                    job.wait()
                    kills.landed += 1
                    kills.states.append(after_kill())
                    continue
            kills.exit_status = job.wait()
            kills.stderr = job.err()
            assert "Traceback" not in kills.stderr, kills.stderr
            return kills
        finally:
            job.close()


Round = tuple[Command, Path, Callable[[], str], Callable[[Kills], None]]  # command, lock, after_kill, finished


def torture(new_round: Callable[[int], Round], min_kills: int, seed: str, window: float) -> list[Kills]:
    """Rounds of kill_and_resume, each on fresh directories and checked by its `finished`
    callback, until at least `min_kills` kills landed."""
    rng = random.Random(seed)
    rounds: list[Kills] = []
    while sum(k.landed for k in rounds) < min_kills:
        command, lock, after_kill, finished = new_round(len(rounds))
        kills = kill_and_resume(
            command, lock, rng, window, after_kill, max_kills=min_kills - sum(k.landed for k in rounds)
        )
        rounds.append(kills)
        finished(kills)
    for index, kills in enumerate(rounds):  # shown with pytest -s, and on failure
        print(f"round {index}: killed after {kills.delays} s, leaving {kills.states}")
    return rounds


# --- what must hold -----------------------------------------------------------------------------


def complete_image(path: Path) -> bytes:
    """The file's bytes, after checking that it decodes to the end (a torn write would not)."""
    with Image.open(path) as image:
        image.load()
    return path.read_bytes()


def leftovers(folder: Path, allowed: set[str]) -> list[str]:
    """Names a finished job must not leave: temporaries of atomic writes, temporary and stale
    directories (all start with a dot), other than the job's own `allowed` ones."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if p.name not in allowed)


class Unchanged:
    """Files that were finished at some point, with their modification times: finished work
    must never be written again."""

    def __init__(self, *, may_delete: bool = False):
        self.mtimes: dict[Path, int] = {}
        # The streaming video job deletes finished files no resume needs: gone is fine, but one
        # that comes back (written again) is caught.
        self.may_delete = may_delete

    def check_and_add(self, paths) -> None:
        for path in self.mtimes:
            if self.may_delete and not path.exists():
                continue
            assert path.stat().st_mtime_ns == self.mtimes[path], f"{path} was written again after it was finished"
        for path in paths:
            self.mtimes.setdefault(path, path.stat().st_mtime_ns)


# --- the video job ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("torture-clip") / "clip with spaces.mp4"
    video = ffmpeg.input("testsrc2=size=48x32:rate=25", f="lavfi")
    audio = ffmpeg.input("sine=frequency=440:sample_rate=44100:duration=0.32", f="lavfi")
    ffmpeg.output(
        video, audio, str(path), vcodec="libx264", pix_fmt="yuv420p", acodec="aac", **{"frames:v": 8}
    ).global_args("-nostdin").run(cmd=ffmpeg_binary(), quiet=True, overwrite_output=True)
    return path


@pytest.fixture(scope="module")
def video_reference(clip, server, tmp_path_factory) -> tuple[Path, float]:
    """An uninterrupted run, and how long it held its lock."""
    out = tmp_path_factory.mktemp("torture-video-reference") / "out.mp4"
    command = stylize(server, "video", clip, "-s", STYLE, "-o", out, *VIDEO_ARGS)
    status, window, err = time_to_lock_and_end(command, out.with_name("out.mp4.work") / ".lock")
    assert status == 0, err
    return out, window


def video_files(work: Path) -> dict[str, list[Path]]:
    return {
        "frames": sorted((work / "frames").glob("[0-9]*.png")),
        "styled": sorted((work / "styled").glob("[0-9]*.png")),
        "stats": sorted((work / "styled").glob("[0-9]*.json")),
        "flow": sorted((work / "flow").glob("[0-9]*.npz")),
        "chunks": sorted((work / "chunks").glob("[0-9]*.mp4")),
    }


def check_video_after_kill(work: Path, output: Path, unchanged: Unchanged) -> str:
    """Records parse, files under final names are complete, finished ones were not redone;
    returns what the killed run left, e.g. 'decode:done flow:running stylize:running 3/8'."""
    manifest = json.loads((work / "job.json").read_text()) if (work / "job.json").exists() else None
    assert manifest is None or manifest["kind"] == "video"
    files = video_files(work)
    for path in files["frames"] + files["styled"]:
        complete_image(path)
    # The streaming job keeps only what a resume needs: a finished frame's stylized image goes once
    # it is in a chunk, its content frame and flow pair once the next frame is finished. Whatever
    # is under a final name is complete and never written again (a deleted file never comes back).
    finished = []
    for stats_path in files["stats"]:
        stats = json.loads(stats_path.read_text())
        png = stats_path.with_suffix(".png")
        if stats["stage_hash"] == manifest["stages"]["stylize"].get("hash"):
            finished += [stats_path, *([png] if png.exists() else [])]
    for path in files["flow"]:
        with np.load(path) as pair:
            [pair[key] for key in pair.files]
    for path in files["chunks"]:
        assert decoded_frames(path), f"{path}: an unreadable chunk"
    if output.exists():
        assert decoded_frames(output)
    unchanged.check_and_add(finished + files["frames"] + files["flow"] + files["chunks"])
    stages = (manifest or {}).get("stages", {})
    return (
        " ".join(f"{name}:{stage['status']}" for name, stage in stages.items()) + f" {len(files['stats'])}/8"
        if stages
        else "no job.json"
    )


def check_video_finished(work: Path, output: Path, reference: Path, unchanged: Unchanged) -> None:
    ref_work = reference.with_name("out.mp4.work")
    manifest = json.loads((work / "job.json").read_text())
    assert {name: stage["status"] for name, stage in manifest["stages"].items()} == {
        n: "done" for n in manifest["stages"]
    }
    files, ref_files = video_files(work), video_files(ref_work)
    # What the finished job keeps: every frame's statistics and the chunks, no frames or flow.
    assert len(files["stats"]) == 8 and files["frames"] == files["styled"] == files["flow"] == []
    for kind in ("frames", "styled"):
        assert [p.name for p in files[kind]] == [p.name for p in ref_files[kind]]
    assert [p.name for p in files["chunks"]] == [p.name for p in ref_files["chunks"]] != []
    for path, ref in zip(files["chunks"], ref_files["chunks"]):
        assert path.read_bytes() == ref.read_bytes(), f"{path} differs from the uninterrupted run's chunk"
    for path, ref in zip(files["flow"], ref_files["flow"], strict=True):
        with np.load(path) as a, np.load(ref) as b:
            assert all(np.array_equal(a[key], b[key]) for key in b.files), path
    assert decoded_frames(output) == decoded_frames(reference)
    measured = json.loads((ref_work / "job.json").read_text()).get("report", {}).get("flicker", {})
    assert {k: v for k, v in manifest["report"]["flicker"].items() if k != "measured"} == {
        k: v for k, v in measured.items() if k != "measured"
    }
    # Each frame is logged once, by the run that finished it (a run killed after finishing a
    # frame but before its log line leaves none).
    logged = Counter(re.findall(r" frame (\d{6})/", (work / "job.log").read_text()))
    assert max(logged.values()) == 1, logged
    unchanged.check_and_add([])
    assert leftovers(work, {".lock"}) == [] and leftovers(output.parent, {".lock"}) == []


@pytest.mark.parametrize(
    "kills", [pytest.param(MIN_KILLS, id="short"), pytest.param(LONG_KILLS, id="long", marks=pytest.mark.torture)]
)
def test_video_job_killed_at_random_moments_resumes_to_the_same_result(clip, server, video_reference, tmp_path, kills):
    reference, window = video_reference

    def new_round(index: int):
        output = tmp_path / f"round {index}" / "out.mp4"
        work = output.with_name("out.mp4.work")
        unchanged = Unchanged(may_delete=True)
        command = stylize(server, "video", clip, "-s", STYLE, "-o", output, *VIDEO_ARGS)

        def finished(kills: Kills) -> None:
            assert kills.exit_status == 0, f"after kills at {kills.delays} s leaving {kills.states}: {kills.stderr}"
            check_video_finished(work, output, reference, unchanged)

        return command, work / ".lock", lambda: check_video_after_kill(work, output, unchanged), finished

    rounds = torture(new_round, kills, f"{SEED}-video-{kills}", window)
    assert sum(r.landed for r in rounds) >= kills, [r.delays for r in rounds]


# --- the photo archive job ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """8 photos in nested folders, three shapes, odd names, and one truncated file."""
    root = tmp_path_factory.mktemp("torture-photos") / "in"
    (root / "a b" / "c").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sizes = [(48, 32), (32, 48), (40, 40)]
    names = [
        "0.png",
        "a b/1.jpg",
        "a b/2 'x'.png",
        "a b/c/3;.png",
        "a b/c/4.webp",
        "5 ü.png",
        "a b/6.png",
        "a b/c/7.jpg",
    ]
    for i, name in enumerate(names):
        small = Image.fromarray((rng.random((4, 4, 3)) * 255).astype(np.uint8))
        small.resize(sizes[i % 3], Image.BICUBIC).save(root / name)
    data = (root / "0.png").read_bytes()
    (root / "a b" / "broken.png").write_bytes(data[: len(data) // 2])
    return root


@pytest.fixture(scope="module")
def archive_reference(photos, server, tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("torture-archive-reference") / "out"
    command = stylize(server, "images", photos, "-s", STYLE, "-o", out, *IMAGES_ARGS)
    status, window, err = time_to_lock_and_end(command, out / ".stylize" / ".lock")
    assert status == 1, err  # the truncated file
    return out, window


def check_archive_after_kill(out: Path, unchanged: Unchanged) -> str:
    state = out / ".stylize"
    info = json.loads((state / "archive.json").read_text()) if (state / "archive.json").exists() else None
    finished = []
    for path in sorted((state / "records").glob("[0-9a-f]*.json")):  # not the temporaries of a killed write
        record = json.loads(path.read_text())
        finished.append(path)
        if record["status"] == "done":
            complete_image(out / record["output"])
            finished.append(out / record["output"])
    unchanged.check_and_add(finished)
    records = len(list((state / "records").glob("[0-9a-f]*.json")))
    return f"{info['state']} {records}/9" if info else "no archive.json"


def check_archive_finished(out: Path, reference: Path, unchanged: Unchanged) -> None:
    records, expected = archive.read_records(out), archive.read_records(reference)
    assert len(records) == 9
    assert {k: (r["status"], r["output"]) for k, r in records.items()} == {
        k: (r["status"], r["output"]) for k, r in expected.items()
    }
    for record in expected.values():
        if record["status"] == "done":
            assert complete_image(out / record["output"]) == (reference / record["output"]).read_bytes(), record[
                "source"
            ]
    assert json.loads((out / ".stylize" / "archive.json").read_text())["state"] == "finished"
    done = Counter(re.findall(r" INFO done (.+) -> ", (out / ".stylize" / "log.txt").read_text()))
    assert max(done.values()) == 1, done
    unchanged.check_and_add([])
    assert leftovers(out, {".stylize", ".lock"}) == []


@pytest.mark.parametrize(
    "kills", [pytest.param(MIN_KILLS, id="short"), pytest.param(LONG_KILLS, id="long", marks=pytest.mark.torture)]
)
def test_archive_job_killed_at_random_moments_resumes_to_the_same_result(
    photos, server, archive_reference, tmp_path, kills
):
    reference, window = archive_reference

    def new_round(index: int):
        out = tmp_path / f"round {index}"
        unchanged = Unchanged()
        command = stylize(server, "images", photos, "-s", STYLE, "-o", out, *IMAGES_ARGS)

        def finished(kills: Kills) -> None:
            # The truncated file, as in the uninterrupted run.
            assert kills.exit_status == 1, f"after kills at {kills.delays} s leaving {kills.states}: {kills.stderr}"
            check_archive_finished(out, reference, unchanged)

        return command, out / ".stylize" / ".lock", lambda: check_archive_after_kill(out, unchanged), finished

    rounds = torture(new_round, kills, f"{SEED}-archive-{kills}", window)
    assert sum(r.landed for r in rounds) >= kills, [r.delays for r in rounds]
