"""Shots stylized in parallel (issue 16): the schedule changes, never the frames.

A clip of four sources joined at three hard cuts (testsrc2 for 16 frames, then mandelbrot,
rgbtestsrc and smptebars for 4 each) is stylized with the real network (Dask workers load their
own) at 32 px: once in this process, as the reference; on a Dask cluster of two worker processes
started by the test on 127.0.0.1; and there again with the worker running the long shot killed
mid-shot. The stylized frames (kept with --keep-frames) and the outputs' decoded frames must be
the same. --max-shot-frames splits the long shot into overlapping segments whose seams are
cross-faded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import decoded_frames, local_cluster, make_job
from pipeline.decode import ffmpeg_binary
from pipeline.display import JobDisplay
from pipeline.flowstage import read_rgb
from pipeline.manifest import read_json
from pipeline.seams import cross_fade
from pipeline.shots import plan_shots, read_shot_records
from pipeline.status import status_lines
from pipeline.video import run_video
from pipeline.videojob import JobEvents
from pipeline.workdir import frame_name

SHOTS = [(1, 16), (17, 20), (21, 24), (25, 28)]
FRAMES = SHOTS[-1][1]
DEADLINE = 300  # seconds: generous, on two shared cores


@pytest.fixture(scope="module")
def cut_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cut-clip") / "cuts.mp4"
    sources = ["testsrc2", "mandelbrot", "rgbtestsrc", "smptebars"]
    inputs = [arg for source in sources for arg in ("-f", "lavfi", "-i", f"{source}=size=48x32:rate=25")]
    trims = [f"[{i}:v]trim=end_frame={b - a + 1},setpts=PTS-STARTPTS[s{i}]" for i, (a, b) in enumerate(SHOTS)]
    graph = ";".join(trims) + ";" + "".join(f"[s{i}]" for i in range(len(SHOTS))) + f"concat=n={len(SHOTS)}:v=1[v]"
    subprocess.run(
        [ffmpeg_binary(), "-nostdin", "-loglevel", "error", *inputs, "-filter_complex", graph, "-map", "[v]",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path


def shot_job(clip: Path, out: Path, **overrides):
    """The flow-warped start (shots begin at its cuts), frames kept to compare, the real network."""
    options = {"flow": "dis", "keep_frames": True, "flow_workers": 1, "iterations_first": 3} | overrides
    return make_job(clip, out, settings={"iterations": 2}, **options)


def styled(work: Path) -> dict[int, np.ndarray]:
    return {int(p.stem): read_rgb(p) for p in sorted((work / "styled").glob("[0-9]*.png"))}


def assert_same_frames(work: Path, reference: Path) -> None:
    mine, theirs = styled(work), styled(reference)
    assert sorted(mine) == list(range(1, FRAMES + 1))
    different = [i for i in mine if not np.array_equal(mine[i], theirs[i])]
    assert not different, f"frames stylized differently: {different}"
    assert decoded_frames(work.parent / "out.mp4") == decoded_frames(reference.parent / "out.mp4")


@pytest.fixture(scope="module")
def reference(cut_clip, tmp_path_factory) -> Path:
    job = shot_job(cut_clip, tmp_path_factory.mktemp("one-process"))
    result = run_video(job)
    assert result.frames == FRAMES
    return job.work


def test_the_shots_are_planned_at_the_cuts_before_stylizing_and_listed_by_status(reference):
    stage = read_json(reference / "job.json")["stages"]["stylize"]
    assert stage["shots"] == [[first, last] for first, last in SHOTS]
    # The cut scan ran before the first frame was stylized: its records were written first.
    scan_done = max(p.stat().st_mtime_ns for p in (reference / "cuts").glob("*.json"))
    first_frame = (reference / "styled" / frame_name(1, ".json")).stat().st_mtime_ns
    assert scan_done <= first_frame
    # Each shot's first frame started afresh; its chunks start there too.
    for first, _ in SHOTS[1:]:
        assert read_json(reference / "styled" / frame_name(first, ".json"))["start"] == "cut"
    chunks = sorted((r["first"], r["last"]) for r in map(read_json, (reference / "chunks").glob("*.json")))
    assert all(any(a <= first and last <= b for a, b in SHOTS) for first, last in chunks)
    lines = status_lines(reference)
    assert "shots: 4 done (of 4)" in lines
    for first, last in SHOTS:
        assert any(line.strip().startswith(f"shot {first}-{last}: done") and " on cpu at " in line for line in lines)


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(2) as (cluster, client):
        yield cluster, client


def test_two_dask_workers_give_the_frames_of_one_process(cut_clip, reference, cluster, tmp_path):
    cluster, _ = cluster
    job = shot_job(cut_clip, tmp_path, device="auto", backend="dask", scheduler=cluster.scheduler_address)
    assert run_video(job).frames == FRAMES
    assert_same_frames(job.work, reference)
    places = {record["where"] for record in read_shot_records(job.work)}
    assert places and all(place.startswith("tcp://127.0.0.1:") for place in places), places


def test_a_worker_killed_mid_shot_loses_only_its_unfinished_frame(cut_clip, reference, cluster, tmp_path):
    cluster, client = cluster
    job = shot_job(cut_clip, tmp_path, device="auto", backend="dask", scheduler=cluster.scheduler_address)
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(result=run_video(job)), daemon=True)
    runner.start()
    # The long shot (handed out first) has a few frames finished: kill the worker running it.
    deadline, killed = time.monotonic() + DEADLINE, None
    while killed is None and time.monotonic() < deadline and runner.is_alive():
        record = read_json(job.work / "shots" / frame_name(1, ".json"), default=None) if job.work.exists() else None
        if record and record.get("state") == "running" and (job.work / "styled" / frame_name(3, ".json")).exists():
            lines = status_lines(job.work)  # while it runs: each shot's state, where, how fast
            assert any(line.strip().startswith("shot 1-16: running") and " at tcp://" in line for line in lines)
            assert "frames/s" in next(line for line in lines if line.startswith("shots: ")), lines
            pids = client.run(os.getpid)
            killed = record["where"]
            os.kill(pids[killed], signal.SIGKILL)
        time.sleep(0.05)
    assert killed is not None, "the long shot was never seen running: make its frames slower"
    runner.join(DEADLINE)
    assert not runner.is_alive() and outcome["result"].frames == FRAMES
    assert_same_frames(job.work, reference)
    # The shot went on from its last finished frame, elsewhere: not from its first.
    starts = [line for line in (job.work / "job.log").read_text().splitlines() if "shot 1-16:" in line]
    assert len(starts) == 2 and "0 frames finished before" in starts[0]
    assert "0 frames finished before" not in starts[1], starts
    assert read_json(job.work / "shots" / frame_name(1, ".json"))["where"] != killed


def test_shots_on_two_local_devices_give_the_frames_of_one_process(cut_clip, reference, tmp_path, monkeypatch):
    """Two devices of this process, one thread each (here the CPU twice, as no GPU is at hand)."""
    monkeypatch.setattr("pipeline.video.parse_devices", lambda text: ("cpu", "cpu"))
    job = shot_job(cut_clip, tmp_path, device="cpu")
    events = Counter()
    assert run_video(job, events=events).frames == FRAMES
    assert_same_frames(job.work, reference)
    # Two shots ran at once: the watcher saw every frame, and shots running side by side.
    assert sorted(events.finished) == list(range(1, FRAMES + 1))
    assert max(running for running, _, _ in events.running) == 2


class Counter(JobEvents):
    def __init__(self):
        self.finished, self.running = [], []

    def frame_finished(self, index: int, stats: dict) -> None:
        self.finished.append(index)

    def shots(self, running: int, finished: int, total: int) -> None:
        self.running.append((running, finished, total))


def test_long_shots_split_into_segments_are_cross_faded_at_their_seams(cut_clip, tmp_path):
    job = shot_job(cut_clip, tmp_path, max_shot_frames=7, segment_overlap=2)
    assert run_video(job).frames == FRAMES
    segments = [s for s in plan_shots([17, 21, 25], FRAMES, max_frames=7, overlap=2) if s.overlap]
    assert [(s.first, s.last) for s in segments] == [(6, 12), (11, 16)]
    height, width, _ = read_rgb(job.work / "styled" / frame_name(1)).shape
    frames = np.frombuffer(decoded_frames(job.output), np.uint8).reshape(FRAMES, height, width, 3).astype(float)
    for segment in segments:
        for index in range(segment.first, segment.first + segment.overlap):
            before = read_rgb(job.work / "styled" / frame_name(index))  # the earlier segment's version
            after = read_rgb(job.work / "seams" / frame_name(index))  # the later segment's, started afresh
            blend = cross_fade(job.work / "styled" / frame_name(index), job.work / "seams" / frame_name(index),
                               segment.fade_weight(index))[..., ::-1]  # fmt: skip
            output = frames[index - 1]
            error = {name: np.abs(output - image).mean() for name, image in
                     {"blend": blend, "before": before, "after": after}.items()}  # fmt: skip
            assert error["blend"] < min(error["before"], error["after"]), (index, error)
        seam = read_json(job.work / "chunks" / frame_name(segment.first, ".json"))
        assert (seam["first"], seam["last"]) == (segment.first, segment.first + segment.overlap - 1)
    lines = status_lines(job.work)
    assert any(line.strip().startswith("shot 11-16: done") for line in lines), lines


def test_the_display_counts_frames_across_shots_and_names_the_shots_running():
    with JobDisplay("a job", disable=True) as display:
        display.stage("stylize", total=10, done=2)
        display.frame_finished(7, {"loss": 1.0})  # shots finish frames in any order: counted, not indexed
        display.frame_finished(3, {"loss": 1.0})
        display.shots(2, 1, 4)
        task = display.progress.tasks[-1]
        assert task.completed == 4 and task.total == 10
        assert task.description == "stylize (2 shots running, 1 of 4 done)"
        display.shots(1, 3, 4)
        assert display.progress.tasks[-1].description == "stylize (1 shot running, 3 of 4 done)"
