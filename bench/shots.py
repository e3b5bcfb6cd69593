"""Shots in parallel (issue 16), `make bench`'s "shots" section; not a test.

1. Speedup: a synthetic clip of four shots joined at hard cuts (testsrc2, mandelbrot, rgbtestsrc,
   smptebars; generated on the fly) is stylized by `stylize video --backend dask` on a local Dask
   cluster of one worker, then of two (one thread each), as separate processes; it prints the
   wall times and the speedup, and checks that both outputs decode to the same frames. Where
   CUDA is available the workers share the GPU (two processes on one device).
2. Seams: the sample clip (one long shot) with --max-shot-frames and --segment-overlap, against
   the same job without: the masked warping error (flicker, Ruder et al. 2016) of each output
   frame pair, measured on the input's flow, at the seams (the pairs in a cross-fade and the one
   after it) and elsewhere.

    python bench/shots.py [--frames-per-shot 30] [--size 96] [--iterations 20] [--out bench-results/shots]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
STYLE = ROOT / "samples" / "ihc.png"
sys.path.insert(0, str(ROOT))

from pipeline.decode import ffmpeg_binary, probe  # noqa: E402  (after the path above)
from pipeline.flicker import pair_errors  # noqa: E402
from pipeline.flowstage import FlowStage  # noqa: E402
from pipeline.framestream import extract_frames  # noqa: E402
from pipeline.seams import cross_fade  # noqa: E402
from pipeline.shots import plan_shots  # noqa: E402
from pipeline.workdir import frame_name  # noqa: E402

SOURCES = ["testsrc2", "mandelbrot", "rgbtestsrc", "smptebars"]


def make_clip(path: Path, frames_per_shot: int) -> Path:
    inputs = [arg for source in SOURCES for arg in ("-f", "lavfi", "-i", f"{source}=size=320x180:rate=25")]
    trims = [f"[{i}:v]trim=end_frame={frames_per_shot},setpts=PTS-STARTPTS[s{i}]" for i in range(len(SOURCES))]
    graph = ";".join(trims) + ";" + "".join(f"[s{i}]" for i in range(len(SOURCES))) + f"concat=n={len(SOURCES)}:v=1[v]"
    subprocess.run(
        [ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-y", *inputs, "-filter_complex", graph, "-map", "[v]",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path


def stylize(clip: Path, output: Path, args: argparse.Namespace, *extra: str) -> float:
    """One `stylize video` process; its wall time in seconds."""
    command = [
        sys.executable, "-m", "pipeline.cli", "video", str(clip), "-s", str(STYLE), "-o", str(output),
        "--size", str(args.size), "--iterations", str(args.iterations), "--keep-frames", "-q", "--overwrite",
        "--iterations-first", str(2 * args.iterations), *extra,  # a short first frame: this bench times the shots
    ]  # fmt: skip
    began = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    return time.perf_counter() - began


def decoded(video: Path) -> bytes:
    return subprocess.run(
        [ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "rgb24",
         "pipe:1"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip


def speedup(args: argparse.Namespace) -> None:
    from distributed import LocalCluster

    clip = make_clip(args.out / "cuts.mp4", args.frames_per_shot)
    times = {}
    for workers in (1, 2):
        with LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1",
            env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        ) as cluster:  # fmt: skip
            output = args.out / f"dask-{workers}.mp4"
            times[workers] = stylize(clip, output, args, "--backend", "dask", "--scheduler", cluster.scheduler_address)
            print(f"  {workers} worker(s): {times[workers]:.1f} s wall", flush=True)
    same = decoded(args.out / "dask-1.mp4") == decoded(args.out / "dask-2.mp4")
    print(f"  speedup of two workers over one: {times[1] / times[2]:.2f}x; outputs identical: {same}")


def pair_figures(output: Path, reference: Path, size: tuple[int, int], work: Path, frames: Path | None = None):
    """The masked warping error of each pair (frame i-1, frame i), i = 2.., on the input's flow:
    of the output video's frames, or of the PNGs in `frames` (the stylized frames before encoding)."""
    folders = {name: work / name for name in ("output", "input", "flow")}
    work.mkdir(parents=True, exist_ok=True)
    total = extract_frames(probe(reference), folders["input"], size=size)
    if frames is None:
        extract_frames(probe(output), folders["output"], size=size)
    with FlowStage(frames_dir=folders["input"], flow_dir=folders["flow"], total=total, preset="medium") as flows:
        flows.start().finish()
    source = frames or folders["output"]
    figures = []
    for index in range(2, total + 1):
        pair = (source / frame_name(index - 1), source / frame_name(index))
        figures.append(pair_errors(folders["flow"] / frame_name(index, ".npz"), [pair])[1][0])
    return figures


def cross_faded(work: Path, segments: list, folder: Path) -> Path:
    """The segments job's frames as the output holds them, before encoding: each frame's own
    version, and over each overlap the cross-fade of both (kept by --keep-frames)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted((work / "styled").glob("[0-9]*.png")):
        index = int(path.stem)
        later = next((s for s in segments if s.overlap and s.first <= index < s.first + s.overlap), None)
        target = folder / path.name
        if later is None:
            shutil.copyfile(path, target)
        else:
            cv2.imwrite(str(target), cross_fade(path, work / "seams" / path.name, later.fade_weight(index)))
    return folder


def seams(args: argparse.Namespace) -> None:
    clip = ROOT / "samples" / "carphone.mp4"
    total = probe(clip).frames
    split = ("--max-shot-frames", str(args.max_shot_frames), "--segment-overlap", str(args.segment_overlap))
    outputs = {"one shot": args.out / "carphone-one.mp4", "segments": args.out / "carphone-segments.mp4"}
    stylize(clip, outputs["one shot"], args, "--device", "cpu")
    stylize(clip, outputs["segments"], args, "--device", "cpu", *split)
    segments = plan_shots([], total, max_frames=args.max_shot_frames, overlap=args.segment_overlap)
    # Pair i (frames i-1, i) is at a seam when frame i is in a cross-fade or is the first after one.
    at_seam = {i for s in segments if s.overlap for i in range(s.first, s.first + s.overlap + 1)}
    info = probe(outputs["one shot"])
    size = (info.width, info.height)
    print(f"  sample clip: {total} frames, segments {[(s.first, s.last) for s in segments]}; mean masked warping "
          "error of the pairs at the seams (in a cross-fade or just after) and of the other pairs:")  # fmt: skip
    work = {name: Path(f"{output}.work") for name, output in outputs.items()}
    measured = {
        "one shot, stylized frames": (outputs["one shot"], work["one shot"] / "styled"),
        "segments, stylized frames cross-faded": (
            outputs["segments"],
            cross_faded(work["segments"], segments, args.out / "faded"),
        ),
        "one shot, output video": (outputs["one shot"], None),
        "segments, output video": (outputs["segments"], None),
    }
    for name, (output, frames) in measured.items():
        figures = pair_figures(output, clip, size, args.out / f"pairs-{name.replace(' ', '-')}", frames)
        seam = [e for i, e in enumerate(figures, 2) if i in at_seam]
        other = [e for i, e in enumerate(figures, 2) if i not in at_seam]
        print(f"  {name}: seams {np.mean(seam):.1f} (max {np.max(seam):.1f}, {len(seam)} pairs), "
              f"others {np.mean(other):.1f} (max {np.max(other):.1f}, {len(other)} pairs)", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames-per-shot", type=int, default=30)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--max-shot-frames", type=int, default=30)
    parser.add_argument("--segment-overlap", type=int, default=12)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "shots")
    parser.add_argument("--only", choices=("speedup", "seams"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"shots (issue 16): --size {args.size}, --iterations {args.iterations}", flush=True)
    if args.only != "seams":
        speedup(args)
    if args.only != "speedup":
        seams(args)


if __name__ == "__main__":
    main()
