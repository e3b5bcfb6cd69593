"""Chunks: the stylized frames encoded as they finish, so that they need not be kept to the end.

    WORK/chunks/000001.mp4    frames 1..100 (named by the first), H.264 yuv420p, video only
    WORK/chunks/000001.json   its record: first, last, key, fingerprint

A chunk holds at most CHUNK_FRAMES frames and never spans a scene cut: it ends before a frame
whose cut score exceeds --scene-threshold (ChunkPlan; but for a flash's pairs, which are no cut:
videorange.RangeRun.chunk_cut), so that each shot's frames lie in chunks of their own (issue 16
stylizes shots concurrently and encodes each into its own chunks). The record is written before
the video's rename (DESIGN.md's commit rule: before a file is placed under a final name, the
records already say whose it will be); a chunk counts as done once both are there. A finished
chunk is never encoded again. At the end encode.encode_video joins them with ffmpeg's concat
demuxer (stream copy: no re-encode) and muxes the audio once over the range.

A fade's frames (fades.py) are encoded faded: each is written, faded by its gain, into a
folder of the chunk's own frames (WORK/chunks/.fade-*, links to the others) that goes once the
chunk is placed. A letterbox's bars (letterbox.py) are drawn black over every frame as it is
encoded (ffmpeg's drawbox).

The chunks' key covers what their pixels depend on: the stylize stage's hash, --crf and the frame
rate. Chunks of another key are discarded as a whole (their frames are then stylized again, as
their stylized frames were deleted once encoded, unless --keep-frames kept them).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import ffmpeg

from .atomic import UMASK, replace
from .decode import run_ffmpeg
from .errors import WriteError
from .fades import FadePlan
from .hashing import file_fingerprint, settings_hash
from .letterbox import Letterbox
from .manifest import read_json, write_json
from .signals import deferred
from .workdir import CHUNK_FRAMES, frame_name, frame_pattern

CHUNK_GLOB = "[0-9]*.json"
# No B-frames in chunks: x264 gives a chunk with B-frames a decoding delay (its first timestamps
# negative) and a chunk of a frame or two none, and the concat demuxer, joining the two by stream
# copy, then packs timestamps together: players and decoders drop and repeat frames around it.
# Short chunks are common (a shot of a few frames, a seam of --segment-overlap frames); at the
# same --crf the quality is the same and the file a little larger.
BFRAMES = 0


def chunk_key(stylize_hash: str, crf: int, rate: Fraction) -> str:
    return settings_hash(
        {"stylize": stylize_hash, "crf": crf, "frame_rate": str(rate), "codec": "libx264", "bframes": BFRAMES}
    )


@dataclass(frozen=True)
class Chunk:
    first: int
    last: int

    @property
    def frames(self) -> int:
        return self.last - self.first + 1


class ChunkPlan:
    """Where chunks end, decided frame by frame as frames finish (the same decisions whether the
    frames are finished in one run or replayed from their records after a resume): before a scene
    cut, and after CHUNK_FRAMES frames."""

    def __init__(self, start: int, scene_threshold: float, size: int = CHUNK_FRAMES):
        self.start, self.threshold, self.size = start, scene_threshold, size

    def finished(self, index: int, cut_score: float | None) -> list[Chunk]:
        """Frame `index` (with its pair's cut score, None for a first frame) is finished: the chunks
        to encode now."""
        ready = []
        if index > self.start and cut_score is not None and cut_score > self.threshold:
            ready.append(Chunk(self.start, index - 1))
            self.start = index
        if index - self.start + 1 >= self.size:
            ready.append(Chunk(self.start, index))
            self.start = index + 1
        return ready

    def end(self, total: int) -> list[Chunk]:
        """The video has `total` frames, all finished: the last chunk."""
        ready = [Chunk(self.start, total)] if self.start <= total else []
        self.start = total + 1
        return ready


class ChunkStore:
    """WORK/chunks/: the chunks of one key; with `fades`, their frames faded as the plan says; with
    `letterbox`, its bars drawn black over them."""

    def __init__(self, work_dir: Path, key: str, fades: FadePlan | None = None, letterbox: Letterbox | None = None):
        self.dir = Path(work_dir) / "chunks"
        self.key, self.fades, self.letterbox = key, fades or FadePlan(), letterbox

    def video(self, first: int) -> Path:
        return self.dir / frame_name(first, ".mp4")

    def record(self, first: int) -> Path:
        return self.dir / frame_name(first, ".json")

    def records(self) -> list[dict]:
        """Every chunk record in the folder, in frame order (whatever its key)."""
        if not self.dir.is_dir():
            return []
        return [read_json(path, default={}) for path in sorted(self.dir.glob(CHUNK_GLOB))]

    def stale(self) -> bool:
        """Whether the folder holds chunks of another key."""
        return any(record.get("key") != self.key for record in self.records())

    def finished(self, first: int) -> Chunk | None:
        """The chunk from frame `first`, if finished: its record (of this key) and its video (of the
        recorded size) are there."""
        record = read_json(self.record(first), default={})
        last, video = record.get("last"), self.video(first)
        if record.get("first") != first or not isinstance(last, int) or record.get("key") != self.key:
            return None
        if not video.exists() or str(video.stat().st_size) != str(record.get("fingerprint", "")).split(":")[0]:
            return None
        return Chunk(first, last)

    def done(self) -> list[Chunk]:
        """Every finished chunk, in frame order. Shots finish in any order, so the chunks done need
        not follow one another (`chunked_from` finds a shot's)."""
        paths = self.dir.glob(CHUNK_GLOB) if self.dir.is_dir() else ()
        firsts = sorted(int(path.stem) for path in paths if path.stem.isdigit())
        return [chunk for chunk in map(self.finished, firsts) if chunk is not None]

    def chunked_from(self, first: int, last: int, done: list[Chunk] | None = None) -> int:
        """The last frame of the finished chunks that follow one another from frame `first` on,
        within first..last (first - 1 if the first is not done). Looks up those chunks' records
        only, unless `done` (every finished chunk) is given."""
        known = {chunk.first: chunk for chunk in done} if done is not None else None
        end = first - 1
        while (chunk := known.get(end + 1) if known is not None else self.finished(end + 1)) and chunk.last <= last:
            end = chunk.last
        return end

    def encode(self, styled_dir: Path, chunk: Chunk, *, rate: Fraction, crf: int) -> None:
        """Encode styled_dir's frames chunk.first..chunk.last as the chunk; record, then place it."""
        self.dir.mkdir(exist_ok=True)
        video = self.video(chunk.first)
        try:
            fd, name = tempfile.mkstemp(prefix=f".{video.name}.", suffix=".tmp.mp4", dir=self.dir)
            os.fchmod(fd, 0o666 & ~UMASK)
            os.close(fd)
        except OSError as exc:
            raise WriteError(video, exc) from None
        tmp = Path(name)
        try:
            with self.shown(Path(styled_dir), chunk) as shown_dir:
                frames = ffmpeg.input(str(shown_dir / frame_pattern()), framerate=str(rate), start_number=chunk.first)
                for box in self.letterbox.boxes() if self.letterbox else []:
                    frames = frames.filter("drawbox", color="black", t="fill", **box)
                output = frames.output(
                    str(tmp), vcodec="libx264", pix_fmt="yuv420p", crf=crf, bf=BFRAMES, f="mp4",
                    **{"frames:v": chunk.frames},
                )  # fmt: skip
                run_ffmpeg(output, what=video)
            record = {
                "first": chunk.first, "last": chunk.last, "key": self.key, "fingerprint": file_fingerprint(tmp),
                "frame_rate": str(rate),
            }  # fmt: skip
            with deferred():
                # A run stopped between the record and the rename encodes the chunk again: the same
                # bytes (x264 is deterministic), so the record stands as it is.
                if read_json(self.record(chunk.first), default=None) != record:
                    write_json(self.record(chunk.first), record)
                try:
                    replace(tmp, video)
                except OSError as exc:
                    raise WriteError(video, exc) from None
        finally:
            tmp.unlink(missing_ok=True)

    @contextmanager
    def shown(self, styled_dir: Path, chunk: Chunk) -> Iterator[Path]:
        """The folder the chunk's frames are encoded from: `styled_dir`, or where the chunk has
        a fade's frames, a folder of its own with those faded (fades.py) and links to the others."""
        faded = {index for index in range(chunk.first, chunk.last + 1) if self.fades.gain(index) is not None}
        if not faded:
            yield styled_dir
            return
        try:
            folder = Path(tempfile.mkdtemp(prefix=".fade-", dir=self.dir))
            for index in range(chunk.first, chunk.last + 1):
                source, target = styled_dir / frame_name(index), folder / frame_name(index)
                if index not in faded:
                    os.symlink(source.resolve(), target)
                    continue
                image = cv2.imread(str(source), cv2.IMREAD_COLOR)
                if image is None:
                    raise OSError(f"cannot read {source}")
                rgb = self.fades.output(index, cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
                if not cv2.imwrite(str(target), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                    raise OSError(f"cannot write {target}")
        except OSError as exc:
            raise WriteError(self.dir, exc) from None
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def bytes(self) -> int:
        return sum(path.stat().st_size for path in self.dir.glob("[0-9]*.mp4")) if self.dir.is_dir() else 0
