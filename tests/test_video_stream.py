"""The streaming video job (issue 15): a work directory of bounded size whatever the video's length.

A 230-frame clip with a hard cut at frame 151 (testsrc2, then mandelbrot), with sound, stylized at
32 px by the tiny network: the work directory is sampled as each frame finishes; the chunks are
at most CHUNK_FRAMES frames and never span the cut; the output keeps the input's frame count,
rate, duration and sound; a run stopped halfway resumes to the same output without encoding a
finished chunk again. The streaming decode is checked against extract_frames on a clip with
B-frames, from the start and from frames in the middle.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers import Recorder, build_tiny_vgg, decoded_frames, make_clip, make_job, mtimes
from pipeline import framestream
from pipeline.chunks import ChunkPlan
from pipeline.decode import ffmpeg_binary, probe
from pipeline.errors import PipelineError
from pipeline.flowstage import read_rgb
from pipeline.framerange import FrameRange
from pipeline.framestream import FrameStream, extract_frames, fingerprint
from pipeline.manifest import read_json
from pipeline.status import status_lines
from pipeline.video import run_video
from pipeline.workdir import CHUNK_FRAMES, DECODE_WINDOW

FRAMES, CUT = 230, 151  # frame CUT starts the second shot


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("long-clip") / "long.mp4"
    first, second = CUT - 1, FRAMES - CUT + 1
    graph = (
        f"[0:v]trim=end_frame={first}[a];[1:v]trim=end_frame={second},setpts=PTS-STARTPTS[b];[a][b]concat=n=2:v=1[v]"
    )
    seconds = FRAMES / 25
    subprocess.run(
        [ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=48x32:rate=25",
         "-f", "lavfi", "-i", "mandelbrot=size=48x32:rate=25", "-f", "lavfi", "-i", f"sine=duration={seconds}",
         "-filter_complex", graph, "-map", "[v]", "-map", "2:a", "-c:v", "libx264", "-pix_fmt", "yuv420p",
         "-c:a", "aac", str(path)],
        check=True,
    )  # fmt: skip
    return path


class Sampler(Recorder):
    """Counts the work directory's files of each kind as every frame finishes."""

    def __init__(self, work: Path, stop_at: int | None = None):
        super().__init__(stop_at)
        self.work, self.peaks = work, {"frames": 0, "styled": 0, "flow": 0}

    def frame_finished(self, index: int, stats: dict) -> None:
        counts = {
            "frames": len(list((self.work / "frames").glob("[0-9]*.png"))),
            "styled": len(list((self.work / "styled").glob("[0-9]*.png"))),
            "flow": len(list((self.work / "flow").glob("[0-9]*.npz"))),
        }
        self.peaks = {k: max(v, counts[k]) for k, v in self.peaks.items()}


@pytest.fixture(scope="module")
def uninterrupted(long_clip, tmp_path_factory) -> tuple[Path, Sampler]:
    out = tmp_path_factory.mktemp("long-reference")
    job = make_job(long_clip, out, settings={"iterations": 1}, iterations_first=1, flow_workers=1)
    events = Sampler(job.work)
    result = run_video(job, events=events, vgg=build_tiny_vgg())
    assert result.frames == FRAMES and result.stylized == list(range(1, FRAMES + 1))
    return job.work, events


def test_the_work_directory_stays_bounded_and_only_stats_and_chunks_outlive_the_job(uninterrupted):
    work, events = uninterrupted
    # A window of decoded frames and pairs ahead, at most one chunk's stylized frames (+ the warm start).
    assert events.peaks["frames"] <= DECODE_WINDOW + 2, events.peaks
    assert events.peaks["flow"] <= DECODE_WINDOW + 2, events.peaks
    assert events.peaks["styled"] <= CHUNK_FRAMES + 2, events.peaks
    assert not list(work.glob("frames/*.png")) and not list(work.glob("styled/*.png")) and not list(work.glob("flow/*"))
    assert len(list(work.glob("styled/[0-9]*.json"))) == FRAMES


def test_chunks_hold_at_most_a_hundred_frames_and_end_at_the_cut(uninterrupted):
    work, _ = uninterrupted
    records = [read_json(p) for p in sorted((work / "chunks").glob("[0-9]*.json"))]
    assert [(r["first"], r["last"]) for r in records] == [(1, 100), (101, CUT - 1), (CUT, FRAMES)]
    assert [probe(work / "chunks" / f"{r['first']:06d}.mp4").frames for r in records] == [100, 50, 80]
    assert all(probe(work / "chunks" / f"{r['first']:06d}.mp4").audio == () for r in records)
    manifest = read_json(work / "job.json")
    assert manifest["stages"]["encode"]["chunks"] == [[1, 100], [101, CUT - 1], [CUT, FRAMES]]
    # The flicker report summed from the frames' records: the cut skipped, no frames needed.
    flicker = manifest["report"]["flicker"]
    assert flicker["cuts"] == [CUT] and flicker["pairs"] == FRAMES - 2
    status = status_lines(work)
    assert any(line.startswith(f"chunks: 3 done, {FRAMES} frames encoded (frames 1-{FRAMES})") for line in status)
    assert any(f"stylize: done, {FRAMES}/{FRAMES} frames done" in line for line in status), status
    assert "disk: about " in (work / "job.log").read_text()


def test_the_output_keeps_the_inputs_frames_rate_duration_and_sound(uninterrupted, long_clip):
    work, _ = uninterrupted
    got, want = probe(work.parent / "out.mp4"), probe(long_clip)
    assert (got.frames, got.rate) == (want.frames, want.rate) == (FRAMES, 25)
    assert abs(got.video_duration - want.video_duration) <= 1 / 25
    assert [a.codec for a in got.audio] == ["aac"]


def test_a_stopped_run_resumes_to_the_same_output_and_keeps_its_finished_chunk(uninterrupted, long_clip, tmp_path):
    reference, _ = uninterrupted
    job = make_job(long_clip, tmp_path, settings={"iterations": 1}, iterations_first=1, flow_workers=1)
    with pytest.raises(Recorder.Stop):
        run_video(job, events=Sampler(job.work, stop_at=130), vgg=build_tiny_vgg())
    chunks = mtimes(job.work / "chunks")
    assert sorted(chunks) == ["000001.json", "000001.mp4"]
    # Only what the resume needs: the last finished frame's content frame and stylized frame,
    # and the frames since the chunk; the frames decoded ahead.
    styled = sorted(int(p.stem) for p in (job.work / "styled").glob("*.png"))
    assert styled == list(range(101, 130))
    assert min(int(p.stem) for p in (job.work / "frames").glob("*.png")) == 129

    events = Recorder()
    run_video(job, events=events, vgg=build_tiny_vgg())
    assert events.started == list(range(130, FRAMES + 1))
    assert {k: v for k, v in mtimes(job.work / "chunks").items() if k in chunks} == chunks
    assert (job.work / "chunks" / "000001.mp4").read_bytes() == (reference / "chunks" / "000001.mp4").read_bytes()
    assert decoded_frames(job.output) == decoded_frames(reference.parent / "out.mp4")


def test_chunk_plan_cuts_at_scene_cuts_and_every_hundred_frames():
    plan, chunks = ChunkPlan(1, 0.6, size=4), []
    scores = {3: 0.9, 4: 0.1, 9: 0.7}
    for index in range(1, 12):
        chunks += [(c.first, c.last) for c in plan.finished(index, scores.get(index, 0.0 if index > 1 else None))]
    chunks += [(c.first, c.last) for c in plan.end(11)]
    assert chunks == [(1, 2), (3, 6), (7, 8), (9, 11)]
    # Replayed from any point (a resume), the same decisions.
    replay = ChunkPlan(3, 0.6, size=4)
    again = [(c.first, c.last) for i in range(3, 12) for c in replay.finished(i, scores.get(i, 0.0))]
    assert again + [(c.first, c.last) for c in replay.end(11)] == chunks[1:]


@pytest.mark.parametrize("frames", [FrameRange(), FrameRange(start=0.2, every_nth=3)], ids=["all", "range"])
def test_the_streamed_decode_gives_the_frames_of_a_whole_decode_from_any_first_frame(tmp_path, frames):
    clip = make_clip(tmp_path / "bframes.mp4", frames=40, size="64x48", bf=3, g=12)
    info = probe(clip)
    whole = tmp_path / "whole"
    count = extract_frames(info, whole, size=(32, 24), frames=frames)
    for first in (1, 5, count - 1):
        folder = tmp_path / f"from-{first}"
        with FrameStream(info, folder, size=(32, 24), frames=frames, first=first, window=4) as stream:
            stream.start()
            index = first
            while stream.wait(index):
                stream.consumed(index)
                index += 1
            assert stream.total == count and stream.written == count - first + 1
        names = sorted(p.name for p in folder.glob("*.png"))
        assert names == [f"{i:06d}.png" for i in range(first, count + 1)]
        for name in names:
            assert np.array_equal(read_rgb(folder / name), read_rgb(whole / name)), (first, name)


@pytest.mark.parametrize(
    "frames", [FrameRange(), FrameRange(start=0.2), FrameRange(start=0.13, duration=1.1)], ids=["all", "start", "odd"]
)
def test_a_shot_seeks_to_its_first_frame_and_gets_the_frames_of_a_whole_decode(tmp_path, frames, monkeypatch):
    """Issue 16: a shot deep into a film seeks (shots start anywhere); every frame is checked
    against the cut scan's fingerprint, and a seek that lands elsewhere falls back to the start."""
    clip = make_clip(tmp_path / "bframes.mp4", frames=40, size="64x48", bf=3, g=12)
    info = probe(clip)
    whole = tmp_path / "whole"
    count = extract_frames(info, whole, size=(32, 24), frames=frames)
    prints = {i: fingerprint(read_rgb(whole / f"{i:06d}.png")) for i in range(1, count + 1)}
    seek = framestream.seek_range
    for first, last, astray in ((2, count, False), (13, 20, False), (count - 1, count, False), (9, 15, True)):
        # astray: a seek that lands a frame late (as on a file whose timestamps lie)
        monkeypatch.setattr(framestream, "seek_range", lambda i, f, n: seek(i, f, n + 1) if astray else seek(i, f, n))
        folder = tmp_path / f"from-{first}"
        with FrameStream(info, folder, size=(32, 24), frames=frames, first=first, last=last, fingerprints=prints) as s:
            s.start()
            index = first
            while s.wait(index):
                s.consumed(index)
                index += 1
            assert s.sought is (not astray) and s.total == last and s.written == last - first + 1
        names = sorted(p.name for p in folder.glob("*.png"))
        assert names == [f"{i:06d}.png" for i in range(first, last + 1)]
        for name in names:
            assert np.array_equal(read_rgb(folder / name), read_rgb(whole / name)), (first, name)


def test_a_frame_that_decodes_differently_from_its_scan_stops_the_job(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", frames=10)
    info = probe(clip)
    prints = {3: "0" * 16}  # not frame 3's
    with FrameStream(info, tmp_path / "frames", size=(32, 24), frames=FrameRange(), fingerprints=prints) as stream:
        stream.start()
        with pytest.raises(PipelineError, match="frame 3 decodes differently"):
            for index in range(1, 11):
                stream.wait(index)
                stream.consumed(index)


def test_the_streamed_decode_stays_a_window_ahead_of_the_consumer(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", frames=30)
    folder = tmp_path / "frames"
    with FrameStream(probe(clip), folder, size=(48, 32), frames=FrameRange(), window=3) as stream:
        stream.start()
        for consumed in (0, 10, 20):
            stream.consumed(consumed)
            assert stream.wait(consumed + 3)
            # Whenever we look, nothing is written past the window (the decode waits for the job).
            assert max(int(p.stem) for p in folder.glob("*.png")) == consumed + 3
        stream.consumed(30)
        assert not stream.wait(31) and stream.total == 30
