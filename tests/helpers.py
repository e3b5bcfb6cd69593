"""Helpers shared by test modules (a test module imports these, never another test module).

Importing this module pins torch to one thread (conftest imports it first thing, and so do the
scripts that tests run in a subprocess), so that every test process computes the same floats.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

# The test machines have 2 cores shared with other jobs. With more than one intra-op thread,
# OpenMP workers spin-wait for each other on oversubscribed cores and a 0.5 s optimization was
# measured to take 15-20 s; one thread per test process is both faster and predictable. The same
# holds for every process a test starts (the CLI, jobs killed and resumed, the commit-point
# driver's forks, Dask workers): they inherit the variables. PIPELINE_TEST_THREADS overrides this
# on a dedicated machine.
THREADS = os.environ.get("PIPELINE_TEST_THREADS", "1")
os.environ.update(OMP_NUM_THREADS=THREADS, MKL_NUM_THREADS=THREADS)
torch.set_num_threads(int(THREADS))
try:
    torch.set_num_interop_threads(1)
except RuntimeError:  # already set (e.g. torch used before this module was imported)
    pass

from pipeline.cli import app, main  # noqa: E402
from pipeline.decode import ffmpeg_binary  # noqa: E402  (after the thread settings above)
from pipeline.stylize import CONTENT_LAYER, STYLE_LAYERS, StyleSettings  # noqa: E402
from pipeline.vgg import VGG19, caffe_convention  # noqa: E402
from pipeline.video import JobEvents, VideoJob  # noqa: E402

TESTS = Path(__file__).resolve().parent
STYLE = TESTS.parent / "samples" / "ihc.png"
# The video job's plumbing tests: tiny frames, few iterations.
SETTINGS = {"size": 32, "iterations": 2, "seed": 3}
ITERATIONS_FIRST = 3

# The VGG-19 configuration of Simonyan & Zisserman (table 1, column E): output channels of each
# conv per block. Written out here independently of pipeline.vgg.
VGG19_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))


def build_tiny_vgg(*, width: int = 4, seed: int = 0, pooling: str = "max", layers=None):
    """A VGG-19-shaped network (same layers, names and pooling) with random weights and few
    channels: `width * 2**(block-1)` per conv of a block, so it runs in microseconds.

    For tests where the real weights are not the point (plumbing, shapes, batching, CLI-free core).
    """
    generator = torch.Generator().manual_seed(seed)
    weights, in_channels = {}, 3
    for b, convs in enumerate(VGG19_BLOCKS, 1):
        channels = width * min(2 ** (b - 1), 8)
        for c in range(1, len(convs) + 1):
            scale = (2.0 / (9 * in_channels)) ** 0.5
            weight = torch.randn(channels, in_channels, 3, 3, generator=generator) * scale
            bias = torch.randn(channels, generator=generator) * 0.01
            weights[f"conv{b}_{c}"] = (weight, bias)
            in_channels = channels
    return VGG19(weights, caffe_convention(), layers=layers or (CONTENT_LAYER, *STYLE_LAYERS), pooling=pooling)


def lbfgs_capacities(monkeypatch) -> list[int]:
    """The history size of every BatchedLBFGS made from now on (until `monkeypatch` is undone), in order."""
    from pipeline import lbfgs

    made, original = [], lbfgs.BatchedLBFGS.__init__

    def recording(self, image, **options):
        original(self, image, **options)
        made.append(self.capacity)

    monkeypatch.setattr(lbfgs.BatchedLBFGS, "__init__", recording)
    return made


def tree_state(folder: Path) -> dict[str, str]:
    """Every directory and every file's content hash: 'nothing existing changed' (and nothing added)."""
    state = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            state[os.path.relpath(os.path.join(root, name), folder)] = "dir"
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                state[os.path.relpath(os.path.join(root, name), folder)] = hashlib.sha256(f.read()).hexdigest()
    return state


def make_clip(
    path: Path,
    *,
    frames: int,
    rate: str = "25",
    audio: str | None = None,
    size: str = "48x32",
    faststart: bool = False,
    **video_options,
) -> Path:
    """A testsrc2 clip of `frames` frames at `rate`, with a sine tone encoded as `audio` if given."""
    streams = [ffmpeg.input(f"testsrc2=size={size}:rate={rate}", f="lavfi")]
    options = {"vcodec": "libx264", "pix_fmt": "yuv420p", "frames:v": frames, **video_options}
    if audio:
        seconds = float(frames / Fraction(rate))
        streams.append(ffmpeg.input(f"sine=frequency=440:sample_rate=44100:duration={seconds}", f="lavfi"))
        options["acodec"] = audio
    if faststart:
        options["movflags"] = "+faststart"
    ffmpeg.output(*streams, str(path), **options).global_args("-nostdin").run(
        cmd=ffmpeg_binary(), quiet=True, overwrite_output=True
    )
    return path


def make_job(clip: Path, out_dir: Path, **overrides) -> VideoJob:
    """A video job writing out_dir/out.mp4, with SETTINGS (and `settings`) and the other `overrides`."""
    settings = StyleSettings(**SETTINGS | overrides.pop("settings", {}))
    # The plain warm start: these tests are about the job's plumbing (the flow-warped start has
    # its own tests in test_video_temporal.py); the flow stage and the flicker report still run.
    options = {"iterations_first": ITERATIONS_FIRST, "device": "cpu", "flow": "none"} | overrides
    return VideoJob(input=clip, styles=(STYLE,), output=out_dir / "out.mp4", settings=settings, **options)


class Recorder(JobEvents):
    """Records the frames a run stylizes; raises Stop at the first iteration of frame `stop_at`."""

    class Stop(Exception):
        pass

    def __init__(self, stop_at: int | None = None):
        self.stop_at = stop_at
        self.started: list[int] = []
        self.messages: list[str] = []

    def message(self, text: str) -> None:
        self.messages.append(text)

    def frame_started(self, index: int, iterations: int) -> None:
        self.started.append(index)

    def iteration(self, progress) -> None:
        if self.started and self.started[-1] == self.stop_at:
            raise Recorder.Stop


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


# --- the image and archive commands ------------------------------------------------------------

FAST = ["--size", "32", "--iterations", "2"]  # `stylize image` at test size


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A smooth random picture (low-frequency noise), closer to a photo than white noise."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((4, 4, 3)) * 255).astype(np.uint8))
    return small.resize((width, height), Image.BICUBIC)


def stylize_images(*args) -> int:
    """`stylize images ARGS...` in this process; its exit status."""
    return main(["images", *map(str, args)])


def invoke(args, **kwargs):
    """A command through Typer's test runner, wide enough that no message wraps."""
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200", "NO_COLOR": "1"}, **kwargs)


def assert_ok(result):
    assert result.exception is None, f"{result.exception!r}\n{result.output}"
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


def write_clip(path: Path, frames: list[np.ndarray], rate: int = 25) -> Path:
    """RGB frames (all of one size) piped to ffmpeg: nearly lossless H.264 in full chroma."""
    height, width = frames[0].shape[:2]
    spec = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", r=rate)
    spec = spec.output(str(path), vcodec="libx264", pix_fmt="yuv444p", crf=4).global_args("-nostdin")
    spec.run(cmd=ffmpeg_binary(), input=np.stack(frames).tobytes(), quiet=True, overwrite_output=True)
    return path


def decoded_frames(video: Path) -> bytes:
    """Every frame of `video` as raw RGB: what two outputs must agree on, whatever their encoding."""
    out, _ = (
        ffmpeg.input(str(video))
        .output("pipe:", format="rawvideo", pix_fmt="rgb24")
        .run(cmd=ffmpeg_binary(), capture_stdout=True, quiet=True)
    )
    return out


# Loading any of these takes from a fraction of a second (OpenCV, matplotlib) to seconds (torch).
HEAVY_MODULES = ("torch", "cv2", "matplotlib")


def heavy_modules_loaded(*argv: str, env: dict[str, str] | None = None) -> tuple[list[str], str]:
    """Run `stylize ARGV` in a child process: which of HEAVY_MODULES it imported, and its stdout."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipeline.cli", *argv],
        capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )  # fmt: skip
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    # -X importtime writes a line for each module imported: "import time: self | cumulative | name".
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return sorted(imported & set(HEAVY_MODULES)), done.stdout


@contextmanager
def local_cluster(workers: int):
    """A Dask LocalCluster of `workers` worker processes of one thread each, and its client: as on a
    real cluster, the job and its tasks travel pickled and the network loads in the worker."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0", host="127.0.0.1",
        env={"OMP_NUM_THREADS": "1"},
    ) as cluster, distributed.Client(cluster) as client:  # fmt: skip
        yield cluster, client
