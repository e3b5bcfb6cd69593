"""Writing the stylized frames as a video: H.264 yuv420p at the input's frame rate, with its audio.

The audio is stream-copied from the input (same range as the frames) when the output container
accepts the codec, else re-encoded to AAC. The file appears under its name only when complete.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import ffmpeg

from .decode import AudioStream, ProgressHook, run_ffmpeg, trim_options
from .errors import InputError, PipelineError, WriteError
from .atomic import atomic_path

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
        raise InputError(f"{output}: unsupported video format {suffix or '(no extension)'}; use one of {', '.join(CONTAINERS)}")
    return CONTAINERS[suffix]


def audio_codec_for(container: str, audio: tuple[AudioStream, ...]) -> str | None:
    """'copy' when the container takes every input audio stream as it is, 'aac' otherwise."""
    if not audio:
        return None
    if container == "matroska" or all(a.codec in COPYABLE_AUDIO[container] for a in audio):
        return "copy"
    return "aac"


def encode_video(
    frames: Path,
    output: Path,
    *,
    frame_rate: Fraction | str,
    crf: int = DEFAULT_CRF,
    audio_source: Path | str | None = None,
    audio: tuple[AudioStream, ...] = (),
    start: float = 0.0,
    duration: float | None = None,
    on_progress: ProgressHook | None = None,
) -> str | None:
    """Encode frames/000001.png, ... into `output`; return how the audio went in (copy, aac, None).

    `start` and `duration` select the same range of the audio as was decoded for the frames.
    """
    container = container_for(output)
    if not 0 <= crf <= 51:
        raise InputError(f"--crf {crf}: must be between 0 (lossless) and 51")
    audio_codec = audio_codec_for(container, audio) if audio_source is not None else None
    try:
        _encode(frames, output, container, str(frame_rate), crf, audio_source, audio_codec, start, duration, on_progress)
    except WriteError:
        raise  # the disk, not the codec
    except PipelineError:
        if audio_codec != "copy":
            raise
        # A codec the table let through but this muxer refuses after all: re-encode instead.
        audio_codec = "aac"
        _encode(frames, output, container, str(frame_rate), crf, audio_source, audio_codec, start, duration, on_progress)
    return audio_codec


def _encode(frames, output, container, frame_rate, crf, audio_source, audio_codec, start, duration, on_progress) -> None:
    streams = [ffmpeg.input(str(Path(frames) / "%06d.png"), framerate=frame_rate, start_number=1)]
    options = {"vcodec": "libx264", "pix_fmt": "yuv420p", "crf": crf, "f": container}
    if audio_codec is not None:
        # '?' keeps ffmpeg going if the source lost its audio since it was probed.
        streams.append(ffmpeg.input(str(audio_source), **trim_options(start, duration))["a?"])
        options["acodec"] = audio_codec
    if container in ("mp4", "mov"):
        options["movflags"] = "+faststart"  # playable while still downloading
    output = Path(output)
    try:
        with atomic_path(output) as tmp:
            run_ffmpeg(ffmpeg.output(*streams, str(tmp), **options), what=output, on_progress=on_progress)
    except OSError as exc:  # the temporary file could not be made or renamed
        raise WriteError(output, exc) from None
