"""Writing the stylized frames as a video: H.264 yuv420p at the input's frame rate, with its audio.

The audio is stream-copied from the input (same range as the frames) when the output container
accepts the codec, else re-encoded to AAC. The file appears under its name only when complete,
and only after `CommitHooks.before` (the job's record of what it is about to place there) returned.

ffmpeg writes a temporary file beside the output. Only the commit (the job's records and the
rename) holds Ctrl-C and SIGTERM back (signals.deferred): the encode itself, which may take an
hour, stops at once.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import ffmpeg

from .atomic import UMASK, replace
from .decode import AudioStream, ProgressHook, VideoInfo, run_ffmpeg
from .errors import InputError, PipelineError, WriteError
from .framerange import ALL, FrameRange
from .signals import deferred
from .workdir import frame_pattern

# Output suffix -> ffmpeg muxer. libx264 output rules out WebM.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
# Audio codecs each muxer takes as they are; anything else is re-encoded (Matroska takes all).
COPYABLE_AUDIO = {
    "mp4": {"aac", "mp3", "ac3", "eac3", "alac", "flac", "opus"},
    "mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_f32le"},
}
DEFAULT_CRF = 18


def container_for(output: Path | str) -> str:
    suffix = Path(output).suffix.lower()
    if suffix not in CONTAINERS:
        raise InputError(
            f"{output}: unsupported video format {suffix or '(no extension)'}; use one of {', '.join(CONTAINERS)}"
        )
    return CONTAINERS[suffix]


def output_rate(info: VideoInfo, frames: int, trim: FrameRange = ALL) -> Fraction:
    """The output's frame rate: the input's, divided by --every-nth for a preview, so that each
    kept frame stays on screen as long as the frames it stands for.

    A preview must last as long as the range it previews (its sound does, and a demanding user
    checks the picture against it): when the frame count does not divide evenly, `frames` frames at
    rate/every_nth would overrun the range by up to every_nth - 1 input frames (a 1 s clip with
    --every-nth 250 became a 10 s still). Holding the last frame shorter is what we would want,
    but a constant-rate H.264 track cannot (its last frame lasts one frame period; ffmpeg's -t,
    concat durations and setts were tried). So the kept frames are spread evenly over the range
    instead: rate = frames / range duration, each frame within one output frame of its time."""
    rate = Fraction(info.frame_rate)
    if trim.every_nth == 1:
        return rate
    seconds = trim.end(info.video_duration) - trim.start
    preview = rate / trim.every_nth
    if seconds <= 0 or frames / preview <= seconds + 0.5 / rate:
        return preview
    return (frames / Fraction(seconds)).limit_denominator(100_000)


def audio_codec_for(container: str, audio: tuple[AudioStream, ...]) -> str | None:
    """'copy' when the container takes every input audio stream as it is, 'aac' otherwise."""
    if not audio:
        return None
    if container == "matroska" or all(a.codec in COPYABLE_AUDIO[container] for a in audio):
        return "copy"
    return "aac"


@dataclass(frozen=True)
class VideoInput:
    """The picture that goes in: a folder of frames/000001.png, ... shown at `frame_rate` and
    encoded with libx264, or a list of video-only chunk files (chunks.py), joined without
    re-encoding (ffmpeg's concat demuxer, stream copy): those keep the rate they were encoded at."""

    frames: Path | list[Path]
    frame_rate: Fraction | str


@dataclass(frozen=True)
class AudioInput:
    """The audio that goes in: the `streams` probed in `source` (none: the output has no audio),
    over `trim`, the same range of it as was decoded for the frames (its start and duration)."""

    source: Path | str
    streams: tuple[AudioStream, ...]
    trim: FrameRange = ALL


@dataclass(frozen=True)
class CommitHooks:
    """The job's part in placing the output. `before(finished_temporary_file, audio)` runs between
    the encode and the rename that places the file, `after()` right after the rename; Ctrl-C and
    SIGTERM wait for all three. Raising from `before` leaves the output as it was."""

    before: Callable[[Path, str | None], None] | None = None
    after: Callable[[], None] | None = None


@dataclass(frozen=True)
class AudioTrack:
    """The audio of one attempt at the encode: `audio` going in as `codec` ('copy' or 'aac')."""

    audio: AudioInput
    codec: str


def encode_video(
    video: VideoInput,
    output: Path,
    *,
    crf: int = DEFAULT_CRF,
    audio: AudioInput | None = None,
    on_progress: ProgressHook | None = None,
    commit: CommitHooks = CommitHooks(),
) -> str | None:
    """Encode `video` into `output`; return how the audio went in (copy, aac, None). Chunk files
    are joined as they are and the audio is muxed once over them. `commit` runs around the rename
    that places the file (CommitHooks)."""
    container = container_for(output)
    if not 0 <= crf <= 51:
        raise InputError(f"--crf {crf}: must be between 0 (lossless) and 51")
    audio_codec = audio_codec_for(container, audio.streams) if audio is not None else None

    def attempt() -> None:  # reads audio_codec when called: the retry below changes it
        track = None if audio_codec is None else AudioTrack(audio, audio_codec)  # a codec only with audio
        _encode(video, output, crf, track, on_progress, commit)

    try:
        attempt()
    except (WriteError, InputError):
        raise  # the disk, or the job's refusal to replace a file, not the codec
    except PipelineError:
        if audio_codec != "copy":
            raise
        # A codec the table let through but this muxer refuses after all: re-encode instead.
        audio_codec = "aac"
        attempt()
    return audio_codec


def concat_list(chunks: list[Path]) -> Path:
    """The concat demuxer's list of `chunks` (all in one folder), written beside them under a
    temporary's name. The entries are the chunks' own names, relative to the list: safe whatever
    the work directory's path holds (quotes, newlines)."""
    folder = chunks[0].parent
    fd, name = tempfile.mkstemp(prefix=".concat.", suffix=".tmp.txt", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as listing:
        for chunk in chunks:
            if chunk.parent != folder or not chunk.name.replace(".", "").isalnum():
                raise PipelineError(f"{chunk}: not a chunk of {folder}")
            listing.write(f"file '{chunk.name}'\n")
    return Path(name)


def _encode(
    video: VideoInput, output: Path, crf: int, track: AudioTrack | None, on_progress: ProgressHook | None,
    commit: CommitHooks,
) -> None:  # fmt: skip
    container = container_for(output)  # encode_video has checked the suffix
    frames = video.frames
    listing = concat_list(frames) if isinstance(frames, list) else None
    try:
        if listing is not None:
            streams = [ffmpeg.input(str(listing), f="concat", safe=0)["v"]]
            options = {"vcodec": "copy", "f": container}
        else:
            pattern = str(Path(frames) / frame_pattern())
            streams = [ffmpeg.input(pattern, framerate=str(video.frame_rate), start_number=1)]
            options = {"vcodec": "libx264", "pix_fmt": "yuv420p", "crf": crf, "f": container}
        _mux(streams, options, output, track, on_progress, commit)
    finally:
        if listing is not None:
            listing.unlink(missing_ok=True)


def _mux(
    streams: list, options: dict, output: Path, track: AudioTrack | None, on_progress: ProgressHook | None,
    commit: CommitHooks,
) -> None:  # fmt: skip
    if track is not None:
        # '?' keeps ffmpeg going if the source lost its audio since it was probed.
        streams.append(ffmpeg.input(str(track.audio.source), **track.audio.trim.trim_options())["a?"])
        options["acodec"] = track.codec
    if options["f"] in ("mp4", "mov"):
        options["movflags"] = "+faststart"  # playable while still downloading
    output = Path(output)
    try:
        # Named like atomic_path's temporaries, so that a killed run's is recognised and removed.
        fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp" + output.suffix, dir=output.parent)
        os.fchmod(fd, 0o666 & ~UMASK)  # mkstemp makes it 0600; the usual permissions of a new file
        os.close(fd)
    except OSError as exc:
        raise WriteError(output, exc) from None
    tmp = Path(name)
    try:
        run_ffmpeg(ffmpeg.output(*streams, str(tmp), **options), what=output, on_progress=on_progress)
        with deferred():
            if commit.before is not None:
                commit.before(tmp, track.codec if track is not None else None)
            try:
                replace(tmp, output)
            except OSError as exc:
                raise WriteError(output, exc) from None
            if commit.after is not None:
                commit.after()
    finally:
        tmp.unlink(missing_ok=True)
