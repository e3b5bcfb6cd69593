"""Scale benchmark of the streaming video job (issue 15), `make bench`'s "long video" section; not a test.

Every length is the first N frames of one synthetic clip (320x180 at 25 fps, generated on the
fly for the longest length): a hard cut every 250 frames, the shots cycling through testsrc2,
mandelbrot, testsrc2 mirrored and mandelbrot elsewhere, each shot from its source's start, so
1,000 frames are one whole cycle and 3,000 frames three of them: the lengths differ in nothing
but their length. Each is stylized by `stylize video` at --size 96 with one iteration a frame on
the CPU, as a separate process. While it runs, the work directory and the job's memory are
sampled every 0.2 s (the timeline goes to OUT/timeline-N.jsonl as it is taken). It prints, for
each length:

  - the peak size of the work directory's window (frames/, styled/ images, flow/, temporaries):
    what the issue bounds, with each part's peak and the parts at the window's peak; and, apart,
    the records (job.json, job.log, the frames' statistics, the report's files) and the chunks,
    which grow with the length (they are the output being made, a few hundred bytes of record per
    frame); the output itself is not in the work directory;
  - frames/s of everything but the optimizer: frames / (wall time - the frames' own optimizer
    seconds, from their statistics), and the time per frame in the first and the last third of
    the video, from the job log, in all and outside the optimizer (does bookkeeping grow with the
    frame index?);
  - the peak resident memory (VmRSS) of the job's process, and of it with its children (the
    decoder, the chunk encoder, flow workers), and the peak up to frame 100, 250, 500, 1000, ...:
    a plateau, or growth with the frame count? wait4's ru_maxrss is printed too: it also holds
    transient peaks between samples (loading the network) and those of reaped children.

    python bench/long_video.py [--frames 1000 3000] [--longest N] [--size 96] [--out bench-results/long-video]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STYLE = ROOT / "samples" / "ihc.png"
sys.path.insert(0, str(ROOT))

from pipeline.decode import ffmpeg_binary  # noqa: E402  (after the path above)

SHOT = 250  # frames between hard cuts: longer than a chunk, so that every length fills its chunks


def make_clip(path: Path, frames: int, longest: int) -> Path:
    """The first `frames` frames of one clip of `longest` frames: shots of SHOT frames joined at
    hard cuts, cycling through four moving sources (each shot from its source's start). Every
    length is a prefix of the longest, so the lengths differ in nothing but their length."""
    sources = [
        "testsrc2=size=320x180:rate=25",
        "mandelbrot=size=320x180:rate=25",
        "testsrc2=size=320x180:rate=25,hflip,hue=h=90",
        "mandelbrot=size=320x180:rate=25:start_x=-0.75:start_y=0.1",
    ]
    lengths = [min(SHOT, longest - first) for first in range(0, longest, SHOT)]
    inputs = [arg for i in range(len(lengths)) for arg in ("-f", "lavfi", "-i", sources[i % len(sources)])]
    trims = [f"[{i}:v]trim=end_frame={n},setpts=PTS-STARTPTS[s{i}]" for i, n in enumerate(lengths)]
    graph = ";".join(trims) + ";" + "".join(f"[s{i}]" for i in range(len(lengths)))
    graph += f"concat=n={len(lengths)}:v=1[v]"
    subprocess.run(
        [ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-y", *inputs, "-filter_complex", graph, "-map", "[v]",
         "-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path


def sizes(work: Path, full: bool) -> tuple[dict[str, int], int]:
    """The work directory's bytes (the window, and apart its decoded frames, stylized frames, flow
    pairs and temporaries; with `full`, the chunks and the records too, which only grow) and the
    frames finished (their statistics files). The records are not sized on
    every sample: stat-ing thousands of them five times a second would load the CPU the job shares."""
    found, finished, pending, parts = {"window": 0, "chunks": 0, "records": 0}, 0, [work], {}
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:  # removed while we looked
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
                continue
            parent, name = Path(entry.path).parent.name, entry.name
            if parent == "styled" and name.endswith(".json") and name[:1].isdigit():
                finished += 1
            if name.endswith((".png", ".npz")) or name.startswith("."):
                key = "window"
                part = "temporaries" if name.startswith(".") else parent  # frames, styled, flow
                try:
                    parts[part] = parts.get(part, 0) + entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
            elif not full:
                continue
            else:
                key = "chunks" if parent == "chunks" and name.endswith(".mp4") else "records"
            try:
                found[key] += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    found["window"] = sum(parts.values())
    return found | {f"window {part}": size for part, size in parts.items()}, finished


def tree_rss(pid: int) -> tuple[int, int]:
    """Resident kB of process `pid` and of it with all its descendants (the flow workers): VmRSS
    from /proc, summed (pages shared after a fork are counted in each, so the sum is an upper bound)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    family, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in family} - family
        family, grew = family | more, bool(more)
    rss = {}
    for member in family:
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        rss[member] = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return rss.get(pid, 0), sum(rss.values())


class Sampler:
    """Samples the work directory and the job's memory every 0.2 s in a thread, keeping the peaks
    and a timeline (seconds, frames finished, window bytes, RSS kB of the job and of its tree),
    appended to `log` as it is sampled, so that a run stopped before its end still leaves it."""

    def __init__(self, work: Path, log: Path):
        self.work, self.peaks = work, {"window": 0, "chunks": 0, "records": 0, "rss_kb": 0, "tree_rss_kb": 0}
        self.timeline: list[tuple[float, int, int, int, int]] = []
        self.log = log
        self.pid, self.done, self.at_peak = 0, threading.Event(), {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self, pid: int) -> None:
        self.pid, self.began = pid, time.perf_counter()
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join()

    def _run(self) -> None:
        count, log = 0, self.log.open("w", encoding="utf-8")
        while not self.done.is_set():
            now, finished = sizes(self.work, full=count % 25 == 0) if self.work.is_dir() else ({}, 0)
            rss, tree = tree_rss(self.pid)
            if now.get("window", 0) > self.peaks["window"]:  # what the window holds at its peak
                self.at_peak = {key: value for key, value in now.items() if key.startswith("window ")} | {
                    "frames finished": finished
                }
            for key, value in [*now.items(), ("rss_kb", rss), ("tree_rss_kb", tree)]:
                self.peaks[key] = max(self.peaks.get(key, 0), value)
            if rss:
                self.timeline.append(
                    (round(time.perf_counter() - self.began, 1), finished, now.get("window", 0), rss, tree)
                )
                log.write(json.dumps([*self.timeline[-1], now]) + "\n")
                log.flush()
            count += 1
            self.done.wait(0.2)
        log.close()

    def rss_at(self, frames: int) -> tuple[int, int]:
        """Peak RSS kB (job, tree) over the samples up to `frames` frames finished."""
        upto = [(rss, tree) for _, finished, _, rss, tree in self.timeline if finished <= frames]
        return max(r for r, _ in upto) if upto else 0, max(t for _, t in upto) if upto else 0


def frame_times(log: str) -> list[float]:
    """Seconds from the job's start of each frame's log line."""
    stamps = []
    for line in log.splitlines():
        if " frame " in line and " start=" in line:
            stamps.append(datetime.fromisoformat(line.split(" ", 1)[0]).timestamp())
    return stamps


def run_one(out: Path, frames: int, longest: int, size: int) -> dict:
    clip = make_clip(out / f"clip-{frames}.mp4", frames, longest)
    output = out / f"styled-{frames}.mp4"
    work = output.with_name(output.name + ".work")
    command = [
        sys.executable, "-m", "pipeline.cli", "video", str(clip), "-s", str(STYLE), "-o", str(output),
        "--size", str(size), "--iterations-first", "1", "--iterations", "1", "--device", "cpu", "-q", "--overwrite",
    ]  # fmt: skip
    sampler = Sampler(work, out / f"timeline-{frames}.jsonl")
    began = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT)
    sampler.start(process.pid)
    # The job's own usage (wait4): its peak resident memory, with that of the flow workers it waited for.
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - began
    sampler.stop()
    if status != 0:
        raise SystemExit(f"stylize video failed on the {frames}-frame clip (status {status})")
    stats = [json.loads(p.read_text()) for p in sorted((work / "styled").glob("[0-9]*.json"))]
    optimizer = sum(s["seconds"] for s in stats)
    stamps = frame_times((work / "job.log").read_text())
    third = len(stamps) // 3
    seconds = [s["seconds"] for s in stats]

    def per_frame(a: int, b: int) -> tuple[float, float]:
        """Wall seconds a frame from log line a to b, and of them outside the optimizer."""
        wall = (stamps[b] - stamps[a]) / (b - a)
        return round(wall, 3), round(wall - sum(seconds[a + 1 : b + 1]) / (b - a), 3)

    marks = sorted({m for m in (100, 250, 500, 1000, 2000, 3000, len(stats)) if m <= len(stats)})
    return {
        "frames": len(stats),
        "wall_s": round(wall, 1),
        "optimizer_s": round(optimizer, 1),
        "frames_per_s_without_optimizer": round(len(stats) / max(1e-9, wall - optimizer), 2),
        "s_per_frame_first_third": per_frame(0, third)[0],
        "s_per_frame_last_third": per_frame(2 * third, len(stamps) - 1)[0],
        "overhead_s_per_frame_first_third": per_frame(0, third)[1],
        "overhead_s_per_frame_last_third": per_frame(2 * third, len(stamps) - 1)[1],
        "peak_window_bytes": sampler.peaks["window"],
        "peak_chunks_bytes": sampler.peaks["chunks"],
        "peak_records_bytes": sampler.peaks["records"],
        # What drives the window: each part's own peak, and the parts at the window's peak.
        "peak_window_parts_bytes": {k[7:]: v for k, v in sampler.peaks.items() if k.startswith("window ")},
        "window_at_peak_bytes": sampler.at_peak,
        "frame_data_bytes": frame_data_bytes(work),
        "peak_rss_mb": round(sampler.peaks["rss_kb"] / 1024, 1),
        "peak_tree_rss_mb": round(sampler.peaks["tree_rss_kb"] / 1024, 1),
        "wait4_maxrss_mb": round(usage.ru_maxrss / 1024, 1),
        # Peak RSS (job; job and flow workers) up to each mark: a plateau, or growth with the frame count?
        "rss_mb_up_to_frame": {m: [round(kb / 1024, 1) for kb in sampler.rss_at(m)] for m in marks},
    }


def frame_data_bytes(work: Path) -> int:
    """One frame's data at this size: a content frame, a stylized frame and a flow pair, as the
    job's own estimate counts them (workdir.py: 3 + 3 bytes a pixel for the images, 8 for the pair)."""
    job = json.loads((work / "job.json").read_text())
    decode = job["stages"]["decode"]
    return decode["width"] * decode["height"] * (3 + 3 + 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[1000, 3000])
    parser.add_argument("--longest", type=int, help="the clip every length is a prefix of (default: the longest)")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "long-video")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for frames in args.frames:
        rows.append(run_one(args.out, frames, args.longest or max(args.frames), args.size))
        print(json.dumps(rows[-1]), flush=True)
    (args.out / f"long-video-{'-'.join(map(str, args.frames))}.json").write_text(json.dumps(rows, indent=1))
    print(f"\nlong video (streaming job, --size {args.size}, 1 iteration a frame, CPU)")
    print("| frames | peak window | 150 frames' data | chunks | records | peak RSS MB (job / with flow workers) "
          "| frames/s w/o optimizer | s/frame first third | last third "
          "| overhead s/frame first third | last third |")  # fmt: skip
    print("|" + " --- |" * 11)
    for r in rows:
        print(
            f"| {r['frames']} | {r['peak_window_bytes'] / 1e6:.2f} MB | {150 * r['frame_data_bytes'] / 1e6:.2f} MB "
            f"| {r['peak_chunks_bytes'] / 1e6:.2f} MB | {r['peak_records_bytes'] / 1e6:.2f} MB "
            f"| {r['peak_rss_mb']} / {r['peak_tree_rss_mb']} "
            f"| {r['frames_per_s_without_optimizer']} | {r['s_per_frame_first_third']} "
            f"| {r['s_per_frame_last_third']} | {r['overhead_s_per_frame_first_third']} "
            f"| {r['overhead_s_per_frame_last_third']} |"
        )


if __name__ == "__main__":
    main()
