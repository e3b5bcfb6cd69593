"""Scale benchmark of the streaming video job (issue 15), `make bench`'s "long video" section; not a test.

For each length, a synthetic clip with motion and a hard cut every 250 frames (testsrc2, mandelbrot,
testsrc2 mirrored, mandelbrot elsewhere, in turn; generated on the fly, 320x180 at 25 fps) is stylized by
`stylize video` at --size 96 with one iteration a frame on the CPU, as a separate process. While
it runs, the work directory is sampled every 0.2 s. It prints, for each length:

  - the peak size of the work directory's window (frames/, styled/ images, flow/, temporaries):
    what the issue bounds; and, apart, the records (job.json, job.log, the frames' statistics)
    and the chunks, which grow with the length (they are the output being made, a few hundred
    bytes of record per frame); the output itself is not in the work directory;
  - frames/s of everything but the optimizer: frames / (wall time - the frames' own optimizer
    seconds, from their statistics), and the time per frame in the first and the last third of
    the video, from the job log, in all and outside the optimizer (does bookkeeping grow with the
    frame index?);
  - the peak resident memory of the job's process.

    python bench/long_video.py [--frames 1000 3000] [--size 96] [--out bench-results/long-video]
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


def make_clip(path: Path, frames: int) -> Path:
    """Shots of SHOT frames joined at hard cuts, cycling through four moving sources."""
    sources = [
        "testsrc2=size=320x180:rate=25",
        "mandelbrot=size=320x180:rate=25",
        "testsrc2=size=320x180:rate=25,hflip,hue=h=90",
        "mandelbrot=size=320x180:rate=25:start_x=-0.75:start_y=0.1",
    ]
    lengths = [min(SHOT, frames - first) for first in range(0, frames, SHOT)]
    inputs = [arg for i in range(len(lengths)) for arg in ("-f", "lavfi", "-i", sources[i % len(sources)])]
    trims = [f"[{i}:v]trim=end_frame={n},setpts=PTS-STARTPTS[s{i}]" for i, n in enumerate(lengths)]
    graph = ";".join(trims) + ";" + "".join(f"[s{i}]" for i in range(len(lengths)))
    graph += f"concat=n={len(lengths)}:v=1[v]"
    subprocess.run(
        [ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-y", *inputs, "-filter_complex", graph, "-map", "[v]",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path


def sizes(work: Path) -> dict[str, int]:
    """The work directory's bytes: the window, the chunks, the records."""
    found = {"window": 0, "chunks": 0, "records": 0}
    for path in work.rglob("*"):
        try:
            if not path.is_file():
                continue
            size = path.stat().st_size
        except OSError:  # removed while we looked
            continue
        relative = path.relative_to(work)
        if relative.parts[0] == "chunks" and path.suffix == ".mp4":
            found["chunks"] += size
        elif path.suffix in (".png", ".npz") or path.name.startswith("."):
            found["window"] += size
        else:
            found["records"] += size
    return found


def frame_times(log: str) -> list[float]:
    """Seconds from the job's start of each frame's log line."""
    stamps = []
    for line in log.splitlines():
        if " frame " in line and " start=" in line:
            stamps.append(datetime.fromisoformat(line.split(" ", 1)[0]).timestamp())
    return stamps


def run_one(out: Path, frames: int, size: int) -> dict:
    clip = make_clip(out / f"clip-{frames}.mp4", frames)
    output = out / f"styled-{frames}.mp4"
    work = output.with_name(output.name + ".work")
    command = [
        sys.executable, "-m", "pipeline.cli", "video", str(clip), "-s", str(STYLE), "-o", str(output),
        "--size", str(size), "--iterations-first", "1", "--iterations", "1", "--device", "cpu", "-q", "--overwrite",
    ]  # fmt: skip
    peaks = {"window": 0, "chunks": 0, "records": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            if work.is_dir():
                now = sizes(work)
                for key in peaks:
                    peaks[key] = max(peaks[key], now[key])
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    began = time.perf_counter()
    sampler.start()
    process = subprocess.Popen(command, cwd=ROOT)
    # The job's own usage (wait4): its peak resident memory, with that of the flow workers it waited for.
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - began
    done.set()
    sampler.join()
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

    return {
        "frames": len(stats),
        "wall_s": round(wall, 1),
        "optimizer_s": round(optimizer, 1),
        "frames_per_s_without_optimizer": round(len(stats) / max(1e-9, wall - optimizer), 2),
        "s_per_frame_first_third": per_frame(0, third)[0],
        "s_per_frame_last_third": per_frame(2 * third, len(stamps) - 1)[0],
        "overhead_s_per_frame_first_third": per_frame(0, third)[1],
        "overhead_s_per_frame_last_third": per_frame(2 * third, len(stamps) - 1)[1],
        "peak_window_bytes": peaks["window"],
        "peak_chunks_bytes": peaks["chunks"],
        "peak_records_bytes": peaks["records"],
        "frame_data_bytes": frame_data_bytes(work),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
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
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "long-video")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for frames in args.frames:
        rows.append(run_one(args.out, frames, args.size))
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "long-video.json").write_text(json.dumps(rows, indent=1))
    print(f"\nlong video (streaming job, --size {args.size}, 1 iteration a frame, CPU)")
    print("| frames | peak window | 150 frames' data | chunks | records | peak RSS MB | frames/s w/o optimizer "
          "| s/frame first third | last third | overhead s/frame first third | last third |")  # fmt: skip
    print("|" + " --- |" * 11)
    for r in rows:
        print(
            f"| {r['frames']} | {r['peak_window_bytes'] / 1e6:.2f} MB | {150 * r['frame_data_bytes'] / 1e6:.2f} MB "
            f"| {r['peak_chunks_bytes'] / 1e6:.2f} MB | {r['peak_records_bytes'] / 1e6:.2f} MB | {r['peak_rss_mb']} "
            f"| {r['frames_per_s_without_optimizer']} | {r['s_per_frame_first_third']} "
            f"| {r['s_per_frame_last_third']} | {r['overhead_s_per_frame_first_third']} "
            f"| {r['overhead_s_per_frame_last_third']} |"
        )


if __name__ == "__main__":
    main()
