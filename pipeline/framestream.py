"""Decoding a video's frames to files: all at once (extract_frames, for `stylize flicker`), or
streamed, for the video job (FrameStream); both through one filter chain (decoded_video).

The video job's decode, streamed: frames are decoded a bounded window ahead of the stylizer.

ffmpeg decodes the range (decode.decoded_video: the same filter chain as extract_frames, so the
same pixels) as raw RGB into a pipe; a thread reads one frame at a time and writes it as
frames/NNNNNN.png (atomically) only while it is at most `window` frames ahead of the frame the
job is working on. Past that the thread stops reading, the pipe fills and ffmpeg waits: the
backpressure that keeps the work directory's frames/ at a window's size, whatever the video's
length.

Resume and any start frame: the stream decodes from the range's start and skips (does not
write) the frames before `first` and those already on disk. Decoding from the start is the one
way that gives exactly the frames an uninterrupted decode gives whatever the codec (B-frames,
open GOPs, variable frame rate resampled by the fps filter, --every-nth's framestep all count
frames from the range's start); it costs one decode of the skipped part, which at the job's
small sizes runs at hundreds of frames per second, next to a second or more per stylized frame.
A seek by timestamp would be faster for a resume deep into a film, but the fps and framestep
filters would then count from the seek point: not safe without a test on such clips (a note for
issue 16, whose shots start mid-range).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import ffmpeg
import numpy as np

from .atomic import atomic_path, replace
from .decode import (
    ProgressHook,
    VideoInfo,
    dies_with,
    ffmpeg_binary,
    ffmpeg_reason,
    passthrough_timestamps,
    run_ffmpeg,
)
from .errors import InputError, PipelineError, WriteError
from .framerange import ALL, FrameRange
from .signals import child_signal, exception_for, pending
from .workdir import DECODE_WINDOW, frame_name, frame_pattern

WAIT_POLL = 0.5  # seconds: a waiting stylize loop looks up this often (Ctrl-C stays responsive)


def decoded_video(info: VideoInfo, size: tuple[int, int], frames: FrameRange = ALL):
    """The ffmpeg-python graph of the range's frames at `size` (square pixels): the one chain that
    both extract_frames and the video job's streaming decode (framestream.py) use, so that both
    give the same pixels."""
    video = ffmpeg.input(info.path, **frames.trim_options())["V:0"]
    if info.variable_frame_rate:
        video = video.filter("fps", fps=info.frame_rate)
    if frames.every_nth > 1:
        video = video.filter("framestep", step=frames.every_nth)
    return video.filter("scale", size[0], size[1], flags="lanczos").filter("setsar", 1)


def no_frames_message(info: VideoInfo, frames: FrameRange) -> str:
    """Why a range gave no frames; the file may last longer than its video stream (a longer sound
    track): name both."""
    stream = f"{info.video_duration:.2f} s of video" + (
        f" in {info.duration:.2f} s" if info.duration - info.video_duration >= 0.01 else ""
    )
    return f"{info.path}: no video frames in the selected range (--start {frames.start:g}; it holds {stream})"


def extract_frames(
    info: VideoInfo,
    dest: Path,
    *,
    size: tuple[int, int],
    frames: FrameRange = ALL,
    on_progress: ProgressHook | None = None,
) -> int:
    """Decode the selected frames as dest/000001.png, ... (RGB, square pixels); return the count.

    The frames appear in `dest` only when all are written: ffmpeg writes into a temporary
    directory beside it, renamed at the end, so an interrupted decode leaves nothing half done.
    """
    dest = Path(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        video = decoded_video(info, size, frames)
        output = video.output(str(tmp / frame_pattern()), start_number=1, pix_fmt="rgb24", **passthrough_timestamps())
        try:
            run_ffmpeg(output, what=info.path, on_progress=on_progress)
        except WriteError:
            raise  # the disk, not the video
        except PipelineError as exc:
            raise InputError(str(exc)) from None
        count = len(list(tmp.glob("*.png")))
        if count == 0:
            raise InputError(no_frames_message(info, frames))
        if dest.exists():
            shutil.rmtree(dest)
        replace(tmp, dest)
        return count
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fingerprint(rgb: np.ndarray) -> str:
    """A frame's pixels in 16 hex digits (8 bytes of BLAKE2b): equal frames, equal fingerprints."""
    return hashlib.blake2b(np.ascontiguousarray(rgb).data, digest_size=8).hexdigest()


def seek_range(info: VideoInfo, frames: FrameRange, index: int) -> FrameRange | None:
    """The range from its frame `index` on, by a seek on the input: halfway between the
    timestamps of frames index-1 and index, so that rounding lands on neither side (ffmpeg's input
    seek decodes from the key frame before and drops what precedes it). Only where frames are
    the source's own at its constant rate: the fps and framestep filters count from where the
    decode starts. None: decode from the range's start."""
    if index <= 1 or frames.every_nth > 1 or info.variable_frame_rate:
        return None
    rate = info.rate
    first = math.ceil(frames.start * rate - Fraction(1, 1000)) / rate  # the range's first frame's time
    return FrameRange(float(first + (index - Fraction(3, 2)) / rate))


class RawDecode:
    """One ffmpeg decode of the range into a pipe, read frame by frame as RGB arrays: the frames
    of decoded_video, without files. The video job's stream writes them as PNGs as its window
    allows; the cut scan (cuts.py) only looks at them. `kill` (from any thread) ends it early, and
    the iteration then simply stops; a broken input or a signal raises at the end."""

    def __init__(self, info: VideoInfo, size: tuple[int, int], frames: FrameRange = ALL):
        self.info, self.size, self.frames = info, size, frames
        self.count = 0  # frames read so far
        self._process: subprocess.Popen | None = None
        self._killed = False

    def command(self) -> list[str]:
        output = decoded_video(self.info, self.size, self.frames).output(
            "pipe:1", f="rawvideo", pix_fmt="rgb24", **passthrough_timestamps()
        )
        return output.global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-nostats").compile(
            cmd=ffmpeg_binary()
        )

    def __iter__(self) -> Iterator[np.ndarray]:
        width, height = self.size
        frame_bytes = width * height * 3
        with tempfile.TemporaryFile() as stderr:
            # stderr to a file: a pipe nobody reads could fill and stall ffmpeg. A SIGKILLed job
            # takes its ffmpeg along (decode.dies_with).
            self._process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                preexec_fn=dies_with(os.getpid()),
            )  # fmt: skip
            with self._process as process:
                try:
                    while not self._killed:
                        data = process.stdout.read(frame_bytes)
                        if len(data) < frame_bytes:
                            break
                        self.count += 1
                        yield np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
                except GeneratorExit:  # the reader stopped early: ffmpeg must not wait on a full pipe
                    self.kill()
                    raise
            stderr.seek(0)
            errors = stderr.read().decode(errors="replace")
        if not self._killed:
            self._finish(process.returncode, errors)

    def _finish(self, returncode: int, errors: str) -> None:
        if returncode != 0:
            # Ctrl-C or SIGTERM to the process group reached ffmpeg too: the job was interrupted.
            signum = child_signal(returncode) or pending()
            if signum is not None:
                raise exception_for(signum)
            raise InputError(f"{self.info.path}: ffmpeg failed: {ffmpeg_reason(errors)}")
        if self.count == 0:
            raise InputError(no_frames_message(self.info, self.frames))

    def kill(self) -> None:
        self._killed = True
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()


class FrameStream:
    """Writes the range's frames `first`, first+1, ... as frames_dir/NNNNNN.png in a background
    thread, at most `window` frames past the last one the job `consumed`. `wait(i)` says whether
    frame i is there (blocking until it is, or until the video ended before it). Use as a
    context manager, or call `close`."""

    def __init__(
        self, info: VideoInfo, frames_dir: Path, *, size: tuple[int, int], frames: FrameRange, first: int = 1,
        window: int = DECODE_WINDOW, last: int | None = None, fingerprints: dict[int, str] | None = None,
        content: Callable[[int, np.ndarray], np.ndarray] | None = None,
    ):  # fmt: skip
        self.info, self.frames_dir, self.size, self.frames = info, Path(frames_dir), size, frames
        # Each frame as the stylizer is to see it (fades.FadePlan.content), once checked against the scan.
        self.content = content
        self.first, self.window = max(1, first), max(1, window)
        self.total: int | None = None  # frames in the range, once the decode reached its end
        self.written = 0  # frames this stream wrote (the others were there before, or skipped)
        self.last = last  # the last frame wanted (a shot's); None: to the range's end
        # The cut scan's fingerprints of the frames wanted (cuts.py): with them the decode may seek
        # to the first, and every frame is checked to be the one a decode from the start gives.
        self.fingerprints = fingerprints or {}
        self.sought: bool | None = None  # whether a seek was tried and landed right (None: not tried)
        self._consumed = self.first - 1
        self._decoded = 0  # frames decoded so far (written, found on disk, or skipped)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._raw: RawDecode | None = None

    def path(self, index: int) -> Path:
        return self.frames_dir / frame_name(index)

    def start(self) -> FrameStream:
        total = self.last
        if total is not None and all(self.path(i).exists() for i in range(self.first, total + 1)):
            self.total = self._decoded = total  # every frame still needed is on disk: nothing to decode
            return self
        self._thread = threading.Thread(target=self._run, name="frame-stream", daemon=True)
        self._thread.start()
        return self

    def consumed(self, index: int) -> None:
        """The job is done with frames up to `index`: the stream may run `window` frames past it."""
        with self._changed:
            self._consumed = max(self._consumed, index)
            self._changed.notify_all()

    def wait(self, index: int) -> bool:
        """Whether the range has a frame `index`; once this returns True its file is there."""
        with self._changed:
            while True:
                if index <= self._decoded:
                    return True
                if self.total is not None:
                    return index <= self.total
                if self._error is not None:
                    raise self._error
                if self._stop.is_set():  # closed: a flow thread waiting here must not wait for ever
                    return False
                self._changed.wait(WAIT_POLL)

    def _run(self) -> None:
        try:
            self._decode()
        except BaseException as exc:  # handed to the waiting thread, which raises it
            with self._changed:
                self._error = exc
                self._changed.notify_all()

    def _decode(self) -> None:
        seek = seek_range(self.info, self.frames, self.first) if self.fingerprints else None
        if seek is not None:
            self.sought = self._read(RawDecode(self.info, self.size, seek), offset=self.first - 1)
            if self.sought or self._stop.is_set():
                return
        self._read(RawDecode(self.info, self.size, self.frames), offset=0)

    def _read(self, raw: RawDecode, *, offset: int) -> bool:
        """Place the frames of `raw`, whose n-th is the range's frame offset + n; False where a
        frame is not the one the scan saw (a seek that landed elsewhere)."""
        self._raw, index = raw, offset
        for index, rgb in enumerate(raw, offset + 1):
            if self._stop.is_set() or (self.last is not None and index > self.last):
                raw.kill()  # closed, or past the frames wanted: the rest is not decoded
                break
            expected = self.fingerprints.get(index) if index >= self.first else None
            if expected is not None and fingerprint(rgb) != expected:
                raw.kill()
                if offset:
                    return False
                raise PipelineError(f"{self.info.path}: frame {index} decodes differently than when it was scanned")
            self._place(index, rgb)
        if self._stop.is_set():
            return True
        if self.last is not None and index < self.last:
            raise InputError(f"{self.info.path}: the video ended at frame {index}, before frame {self.last}")
        with self._changed:
            self.total = index if self.last is None else self.last
            self._changed.notify_all()
        return True

    def _place(self, index: int, rgb: np.ndarray) -> None:
        """Frame `index`: skipped before `first` and when on disk, else written once the window allows."""
        if index >= self.first and not self.path(index).exists():
            with self._changed:
                while index > self._consumed + self.window and not self._stop.is_set():
                    self._changed.wait(WAIT_POLL)
            if self._stop.is_set():
                return
            self._write(index, rgb)
            self.written += 1
        with self._changed:
            self._decoded = max(self._decoded, index)  # a decode from the start after a seek goes over them again
            self._changed.notify_all()

    def _write(self, index: int, rgb: np.ndarray) -> None:
        path = self.path(index)
        if self.content is not None:
            rgb = self.content(index, rgb)
        try:
            # Made with the first frame, not before: a range found empty leaves no folder behind.
            self.frames_dir.mkdir(exist_ok=True)
            with atomic_path(path) as tmp:
                if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                    raise OSError(f"cannot write {tmp}")
        except OSError as exc:
            raise WriteError(path, exc) from None

    def close(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._raw is not None:
            self._raw.kill()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
