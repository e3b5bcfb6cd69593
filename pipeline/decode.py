"""Reading video files with ffmpeg: finding the binary, probing without ffprobe, extracting frames.

The `imageio-ffmpeg` wheel ships ffmpeg but no ffprobe, so probing runs ffmpeg itself once with
two outputs: the video packets stream-copied into `framecrc` (timestamps of every frame, cheap
because nothing is decoded) and one decoded frame through `showinfo` (the exact frame rate as a
fraction, and the frame size after rotation). The stream list comes from ffmpeg's stderr header.
Commands are built with ffmpeg-python and run as argument lists, never through a shell.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import shlex
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import ffmpeg

from .errors import InputError, PipelineError, WriteError
from .framerange import ALL, FrameRange
from .images import fit_long_side
from .signals import child_signal, exception_for, pending

# Common rates that ffmpeg's header prints rounded (29.97, 23.98, ...); timestamps are snapped to
# these when they agree within STANDARD_RATE_TOLERANCE, so 29.97 fps stays exactly 30000/1001.
STANDARD_RATES = tuple(
    Fraction(r) for r in ("24000/1001", "24", "25", "30000/1001", "30", "48", "50", "60000/1001", "60", "120")
)
STANDARD_RATE_TOLERANCE = 0.005
# ffmpeg's demuxers report a file that stops early with one of these.
TRUNCATION_MESSAGES = re.compile(r"partial file|ended prematurely|truncat", re.IGNORECASE)
IMAGE_FORMATS = re.compile(r"^(image2|\w+_pipe)$")
INPUT_NAME = "INPUT"  # stands for the input's path in ffmpeg's messages while they are parsed

ProgressHook = Callable[[int], None]  # frames written so far


def ffmpeg_binary() -> str:
    """FFMPEG_BINARY when set, then `ffmpeg` on PATH, then the binary in the imageio-ffmpeg wheel."""
    configured = os.environ.get("FFMPEG_BINARY")
    if configured:
        found = shutil.which(configured)
        if not found:
            raise PipelineError(f"{configured}: FFMPEG_BINARY does not name an executable ffmpeg")
        return found
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # the wheel raises RuntimeError when its binary is missing
        raise PipelineError(f"ffmpeg not found: install ffmpeg or the imageio-ffmpeg package ({exc})") from None


@functools.cache
def ffmpeg_version(binary: str) -> tuple[int, int]:
    """(major, minor) from `ffmpeg -version`; a build without a release number (a git snapshot)
    counts as recent."""
    try:
        first = subprocess.run([binary, "-version"], capture_output=True, text=True, timeout=30).stdout.partition("\n")[
            0
        ]
    except (OSError, subprocess.SubprocessError):
        return (99, 0)
    match = re.match(r"ffmpeg version n?(\d+)\.(\d+)", first)
    return (int(match[1]), int(match[2])) if match else (99, 0)


def passthrough_timestamps() -> dict:
    """The output option that keeps every decoded frame as it is (no frames duplicated or dropped):
    -fps_mode since ffmpeg 5.1, -vsync before (the ffmpeg of Ubuntu 22.04 and imageio-ffmpeg 0.5 is 4.x)."""
    return {"fps_mode": "passthrough"} if ffmpeg_version(ffmpeg_binary()) >= (5, 1) else {"vsync": "passthrough"}


@dataclass(frozen=True)
class AudioStream:
    codec: str  # ffmpeg's codec name: aac, ac3, opus, pcm_s16le, ...
    channels: str  # as ffmpeg prints it: mono, stereo, 5.1(side), ...


@dataclass(frozen=True)
class VideoInfo:
    path: str
    container: str  # ffmpeg's demuxer name(s), e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str
    width: int  # as displayed: after rotation, in square pixels
    height: int
    rotation: float  # degrees from the display matrix; ffmpeg applies it when decoding
    sar: str  # sample aspect ratio of the coded frames, e.g. "1/1"
    frame_rate: str  # exact fraction as text, e.g. "30000/1001"
    variable_frame_rate: bool  # True: frames are resampled to `frame_rate` when decoded
    frames: int  # video packets in the file
    duration: float  # seconds: the container's, else the video stream's
    video_duration: float  # seconds from the first to the end of the last video frame
    audio: tuple[AudioStream, ...]

    @property
    def rate(self) -> Fraction:
        return Fraction(self.frame_rate)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> VideoInfo:
        return cls(**data | {"audio": tuple(AudioStream(**a) for a in data["audio"])})


def _linux_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
    except (OSError, AttributeError):
        return None


_PRCTL = _linux_prctl()  # looked up here, not in the forked child
_PR_SET_PDEATHSIG = 1


def dies_with(parent: int):
    """A preexec_fn making the child get SIGKILL when this process dies (Linux). The closed
    progress pipe does not stop ffmpeg 9 (it ignores SIGPIPE and the failed writes), so a SIGKILLed
    job would leave its ffmpeg decoding into a folder the resumed job deletes, or encoding for an
    hour into a temporary file nobody will rename."""
    if _PRCTL is None:
        return None

    def set_death_signal() -> None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # the job died before the line above: no signal will come
            os._exit(1)

    return set_death_signal


def run_ffmpeg(
    stream_spec, *, what: Path | str, on_progress: ProgressHook | None = None, total: int | None = None
) -> None:
    """Run an ffmpeg-python graph, reporting frames written; raise with ffmpeg's last error line."""
    spec = stream_spec.global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-nostats", "-progress", "pipe:1")
    args = spec.compile(cmd=ffmpeg_binary(), overwrite_output=True)
    # stderr goes to a file: a pipe left unread while we follow stdout could fill up and stall ffmpeg.
    with tempfile.TemporaryFile() as stderr:
        # A SIGKILLed job takes its ffmpeg along (dies_with), so no orphan decodes on into a
        # folder that the resumed job is deleting.
        with subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, preexec_fn=dies_with(os.getpid())
        ) as process:
            try:
                for line in process.stdout:
                    if line.startswith(b"frame=") and on_progress is not None:
                        on_progress(int(line.split(b"=", 1)[1]))
            except BaseException:
                # Ctrl-C, SIGTERM or a failing progress hook: stop ffmpeg now rather than wait
                # for it to decode or encode the rest of the video.
                process.kill()
                raise
        stderr.seek(0)
        errors = stderr.read().decode(errors="replace").strip().splitlines()
    if process.returncode != 0:
        # Ctrl-C or SIGTERM to the process group reached ffmpeg too: it stops (exit 255, after
        # finishing its file) or dies of it. Either way the job was interrupted, not ffmpeg broken.
        signum = child_signal(process.returncode) or pending()
        if signum is not None:
            raise exception_for(signum)
        reason = errors[-1].strip() if errors else f"ffmpeg exited with status {process.returncode}"
        if any("No space left on device" in line for line in errors):
            raise WriteError(what, OSError(errno.ENOSPC, reason))
        raise PipelineError(f"{what}: ffmpeg failed: {reason}")


def _run_capture(stream_spec, path: Path) -> tuple[subprocess.CompletedProcess, str]:
    """Run ffmpeg; return it and its stderr with the input's name replaced by INPUT_NAME: the
    parsing below must not trip over a name holding a newline, or the word 'truncated'."""
    args = stream_spec.global_args("-nostdin", "-hide_banner").compile(cmd=ffmpeg_binary())
    done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True)
    return done, done.stderr.replace(os.fsencode(path), INPUT_NAME.encode()).decode(errors="replace")


def _header(stderr: str) -> list[str]:
    """The lines describing input #0, up to ffmpeg's stream mapping."""
    lines = stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Input #0")), None)
    if start is None:
        return []
    header = [lines[start]]
    for line in lines[start + 1 :]:
        if line.startswith("["):  # a demuxer's or decoder's message in between
            continue
        if not line.startswith(" "):
            break
        header.append(line)
    return header


def ffmpeg_reason(stderr: str) -> str:
    """ffmpeg's most specific complaint, without its `[demuxer @ 0x...]` prefix."""
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", line).strip() for line in stderr.splitlines()]
    lines = [
        line for line in lines if line and not line.startswith(("Error opening input", "Input #", "Stream ", "  "))
    ]
    for line in lines:
        if "moov atom not found" in line or "Invalid data" in line:
            return line
    return lines[-1] if lines else "unreadable"


def _parse_timestamp(text: str) -> float | None:
    match = re.match(r"(\d+):(\d+):(\d+(?:\.\d+)?)", text)
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _snap_rate(rate: float) -> Fraction:
    for standard in STANDARD_RATES:
        if abs(rate - float(standard)) <= STANDARD_RATE_TOLERANCE * float(standard):
            return standard
    return Fraction(rate).limit_denominator(100)


def special_file(path: Path) -> str | None:
    """What a path that is not a regular file is, in words ("a FIFO (named pipe)", ...), or None."""
    mode = path.stat().st_mode
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):  # fmt: skip
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "not a regular file"


def check_file(path: Path) -> None:
    """Refuse, from stat alone, a path that cannot be a readable video file."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a video file")
    kind = special_file(path)
    if kind:
        # Opening a FIFO blocks until someone writes to it, and a device never ends: refused
        # from stat alone, before anything opens it.
        raise InputError(f"{path}: is {kind}, not a regular video file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes), not a video")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: permission denied")


@dataclass
class Streams:
    """What ffmpeg's header says about input #0."""

    container: str
    video: str  # the first video stream's description (codec, pixel format, size, ...)
    rotation: float
    audio: list[AudioStream]
    duration: float | None


def parse_header(path: Path, header: list[str]) -> Streams:
    """The container and streams from ffmpeg's header; refuse still images and files without video."""
    container = re.match(r"Input #0, (.+), from ", header[0])
    container = container.group(1) if container else "unknown"
    if IMAGE_FORMATS.match(container):
        raise InputError(f"{path}: is a still image, not a video (use `stylize image`)")
    video_line, rotation, audio, duration = None, 0.0, [], None
    in_video = False
    for line in header:
        if line.lstrip().startswith("Duration:"):
            duration = _parse_timestamp(line.split("Duration:", 1)[1].strip())
        stream = re.match(r"\s+Stream #0:\d+\S*: (\w+): (.*)", line)
        if stream:
            kind, rest = stream.groups()
            in_video = kind == "Video" and video_line is None and "(attached pic)" not in rest
            if in_video:
                video_line = rest
            elif kind == "Audio":
                codec = rest.split(",")[0].split()[0]
                fields = [f.strip() for f in rest.split(",")]
                audio.append(AudioStream(codec=codec, channels=fields[2] if len(fields) > 2 else "unknown"))
            continue
        turn = re.search(r"rotation of (-?[\d.]+) degrees", line, re.IGNORECASE)
        if turn and in_video:
            rotation = float(turn.group(1))
    if video_line is None:
        kinds = sorted({m.group(1).lower() for m in re.finditer(r"Stream #0:\d+\S*: (\w+):", "\n".join(header))})
        found = f"only {' and '.join(kinds)}" if kinds else "no streams"
        raise InputError(f"{path}: has no video stream ({found})")
    return Streams(container, video_line, rotation, audio, duration)


def packet_timestamps(path: Path) -> tuple[list[int], Fraction, int]:
    """The timestamps of every video packet (sorted), their time base and the longest packet
    duration, from the packets stream-copied into framecrc; refuse a truncated file."""
    listing, listing_errors = _run_capture(
        ffmpeg.input(str(path))["V:0"].output("pipe:1", c="copy", f="framecrc"), path
    )
    truncated = TRUNCATION_MESSAGES.search(listing_errors)
    if truncated or listing.returncode != 0:
        reason = truncated.group(0) if truncated else ffmpeg_reason(listing_errors)
        raise InputError(f"{path}: truncated or incomplete file ({reason}); re-download or re-export it")
    time_base, stamps, last_duration, packets = None, [], 0, 0
    for line in listing.stdout.decode(errors="replace").splitlines():
        if line.startswith("#tb 0:"):
            time_base = Fraction(line.split(":", 1)[1].strip())
        elif line and not line.startswith("#"):
            fields = [f.strip() for f in line.split(",")]  # stream, dts, pts, duration, size, crc
            packets += 1
            pts = int(fields[2])
            if pts > -(2**62):  # AV_NOPTS_VALUE prints as INT64_MIN
                stamps.append(pts)
                last_duration = max(last_duration, int(fields[3]))
    if packets and not stamps:
        # A raw elementary stream (.h264, .hevc: a Raspberry Pi's camera, a drone's): ffmpeg can
        # neither seek in it nor cut a range of it by time, which shots and --start need. The
        # remedy re-encodes losslessly: a stream copy into MP4 drops the leading B-frames (18 of
        # a 20-frame x264 stream came through).
        raise InputError(
            f"{path}: a raw video stream without timestamps (no container around it); put it in one "
            f"first, e.g. ffmpeg -i {shlex.quote(path.name)} -c:v libx264 -qp 0 {shlex.quote(path.stem + '.mp4')}"
        )
    if not stamps or time_base is None:
        raise InputError(f"{path}: the video stream holds no frames")
    return sorted(stamps), time_base, last_duration


def first_frame_size(path: Path, stderr: str) -> tuple[int, int, Fraction]:
    """Width and height in square pixels, and the sample aspect ratio, of the frame showinfo printed."""
    frame = re.search(r"\bn:\s*0 .*?\bsar:(\d+)/(\d+) s:(\d+)x(\d+)", stderr)
    if not frame:
        raise InputError(f"{path}: the first video frame cannot be decoded ({ffmpeg_reason(stderr)})")
    sar_num, sar_den, width, height = (int(g) for g in frame.groups())
    sar = Fraction(sar_num, sar_den) if sar_num and sar_den else Fraction(1)
    # Square pixels, as players show the frame (ffmpeg's own convention: scale the width).
    return max(1, round(width * sar)), height, sar


def frame_timing(
    stamps: list[int], time_base: Fraction, last_duration: int, stderr: str
) -> tuple[Fraction, bool, float]:
    """The frame rate, whether it is variable, and the video's duration in seconds."""
    shown = re.search(r"config in time_base: \S+ frame_rate: (\d+)/(\d+)", stderr)
    nominal = Fraction(int(shown.group(1)), int(shown.group(2))) if shown and int(shown.group(2)) else None
    video_duration = float((stamps[-1] - stamps[0] + last_duration) * time_base)
    rate, variable = nominal or Fraction(25), False
    if len(stamps) >= 2:
        deltas = [b - a for a, b in zip(stamps, stamps[1:])]
        # One tick of jitter is rounding in a coarse time base (33/34 ms for 30 fps in Matroska).
        variable = max(deltas) - min(deltas) > max(1, 0.01 * statistics.median(deltas))
        measured = (len(stamps) - 1) / float((stamps[-1] - stamps[0]) * time_base)
        if variable or nominal is None or abs(measured - float(nominal)) > 0.01 * float(nominal):
            # Resample to the average rate, so that the frame count and the duration both hold.
            rate, variable = _snap_rate(len(stamps) / video_duration), True
    return rate, variable, video_duration


def probe(path: Path | str) -> VideoInfo:
    """Describe a video file or raise InputError naming the file and the problem."""
    path = Path(path)
    check_file(path)
    # Two runs: one decoded frame through showinfo (ffmpeg would go on decoding every frame if
    # this shared a command with the packet listing), then the packets, stream-copied.
    first_frame = ffmpeg.input(str(path))["V:0"].filter("showinfo").output("-", f="null", **{"frames:v": 1})
    done, stderr = _run_capture(first_frame, path)
    header = _header(stderr)
    if not header:
        raise InputError(f"{path}: not a video file or truncated ({ffmpeg_reason(stderr)})")
    streams = parse_header(path, header)
    if done.returncode != 0:
        raise InputError(f"{path}: video stream cannot be read ({ffmpeg_reason(stderr)})")
    stamps, time_base, last_duration = packet_timestamps(path)
    width, height, sar = first_frame_size(path, stderr)
    rate, variable, video_duration = frame_timing(stamps, time_base, last_duration, stderr)
    return VideoInfo(
        path=str(path),
        container=streams.container,
        codec=streams.video.split(",")[0].split()[0],
        width=width,
        height=height,
        rotation=streams.rotation,
        sar=f"{sar.numerator}/{sar.denominator}",
        frame_rate=f"{rate.numerator}/{rate.denominator}",
        variable_frame_rate=variable,
        frames=len(stamps),
        duration=streams.duration if streams.duration else video_duration,
        video_duration=video_duration,
        audio=tuple(streams.audio),
    )


def frame_size(info: VideoInfo, long_side: int) -> tuple[int, int]:
    """Width and height for --size: the long side given, the aspect kept, both even (yuv420p)."""
    width, height = fit_long_side(info.width, info.height, long_side)
    return max(2, width - width % 2), max(2, height - height % 2)


def count_frames(info: VideoInfo, frames: FrameRange = ALL) -> int:
    """How many frames extraction will produce (an estimate, exact for constant-rate sources)."""
    count = max(0, round((frames.end(info.video_duration) - frames.start) * float(info.rate)))
    if not info.variable_frame_rate and frames.start == 0 and frames.duration is None:
        count = info.frames
    return -(-count // frames.every_nth)
