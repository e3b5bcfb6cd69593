"""A video job's work directory: where its frames live, its log, and keeping it tidy.

    WORK_DIR/job.json            the job record (manifest.JobManifest)
    WORK_DIR/job.log             one line per stylized frame, and the stage events (JobLog)
    WORK_DIR/frames/000001.png   decoded content frames, a window ahead of the stylizer (framestream.py)
    WORK_DIR/flow/000002.npz     optical flow from frame 2 back to frame 1 (flowstage.py)
    WORK_DIR/styled/000001.png   stylized frames, each with styled/000001.json (its statistics)
    WORK_DIR/chunks/000001.mp4   stylized frames encoded, up to CHUNK_FRAMES a chunk (chunks.py)

Only what a resume needs is kept (prune, videorange.Retention): the content frames from the last
finished one on, the flow pairs not used yet, the stylized frames not yet in a chunk and the last
finished one (the next frame's warm start), every frame's statistics file and the chunks. With
--keep-frames, everything stays.

Frame files are named by `frame_name` alone (ffmpeg gets the same names from `frame_pattern`).
Also here: what a killed run leaves behind, what a refused run must take back, and whether the
disk holds what is left to do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

from .atomic import is_temporary, replace
from .errors import InputError, WriteError
from .manifest import JobManifest, read_json
from .report_html import FILES_DIR

KIND = "video"  # job.json's "kind" in a video job's work directory
DIGITS = 6
# Frame files start with a digit; atomic writes' temporary files start with a dot.
FRAME_GLOB = "[0-9]*.png"
PAIR_GLOB = "[0-9]*.npz"
# What one frame costs on disk, per pixel: a PNG of RGB rarely beats raw size by much for
# stylized (textured) frames, so raw size is the estimate; the statistics file is small.
BYTES_PER_PIXEL = 3
STATS_BYTES = 16 * 1024
# A flow pair: a compressed float32 flow and mask, measured at 7-8 bytes per pixel of a frame.
PAIR_BYTES_PER_PIXEL = 8
# The streaming job's bounds: content frames decoded ahead of the stylizer, stylized frames a chunk holds.
DECODE_WINDOW = 16
CHUNK_FRAMES = 100
# A work directory holds at least one of these from the moment a job first locks it.
OWN_FILES = (JobManifest.FILE, ".lock", "job.log")


def frame_name(index: int, suffix: str = ".png") -> str:
    """The name of frame `index` (from 1) in any of the job's frame folders: 000001.png, ..."""
    return f"{index:0{DIGITS}d}{suffix}"


def frame_pattern(suffix: str = ".png") -> str:
    """frame_name's names as ffmpeg's image sequence pattern (%06d.png)."""
    return f"%0{DIGITS}d{suffix}"


# A video job's stages, in order: job.json records each (manifest.py), `stylize status` lists them.
STAGES = ("decode", "flow", "stylize", "encode")


class FrameStore:
    """Where a job's frames live."""

    def __init__(self, work_dir: Path):
        self.work_dir = Path(work_dir)
        self.frames_dir = self.work_dir / "frames"
        self.styled_dir = self.work_dir / "styled"
        self.flow_dir = self.work_dir / "flow"
        self.chunks_dir = self.work_dir / "chunks"
        self.seams_dir = self.work_dir / "seams"  # a segment's versions of the frames it shares (seams.py)

    def content(self, index: int) -> Path:
        return self.frames_dir / frame_name(index)

    def styled(self, index: int) -> Path:
        return self.styled_dir / frame_name(index)

    def stats(self, index: int) -> Path:
        return self.styled_dir / frame_name(index, ".json")

    def pair(self, index: int) -> Path:
        """The flow pair carrying frame index-1 onto frame index."""
        return self.flow_dir / frame_name(index, ".npz")

    def finished(self, index: int, stage_hash: str) -> bool:
        if not self.styled(index).exists():
            return False
        stats = read_json(self.stats(index), default=None)
        # A frame of --passes > 1 is finished once final: its last pass and that pass's flicker record (passes.py).
        return stats is not None and stats.get("stage_hash") == stage_hash and stats.get("final", True)

    def finished_count(self, stage_hash: str, chunked: int, total: int | None) -> int:
        """How many frames, from the first, are finished: those in finished chunks (up to
        `chunked`), then each whose stylized frame is there with a statistics file of this
        `stage_hash`, in order. Only the frames after the last chunk are looked at (at most a
        chunk's worth), so this costs the same at any point of a long video."""
        done = chunked
        while (total is None or done < total) and self.finished(done + 1, stage_hash):
            done += 1
        return done

    def decoded_count(self) -> int:
        return sum(1 for _ in self.frames_dir.glob(FRAME_GLOB))

    def stats_count(self) -> int:
        """Frames with a statistics file (finished, of whatever settings: the folder goes when they change)."""
        return sum(1 for _ in self.styled_dir.glob("[0-9]*.json"))

    def styled_count(self) -> int:
        return sum(1 for _ in self.styled_dir.glob(FRAME_GLOB))

    def pair_count(self) -> int:
        """Adjacent pairs (NNNNNN.npz); --long-term's others (EEEEEE-NNNNNN.npz) do not count."""
        return sum(1 for path in self.flow_dir.glob(PAIR_GLOB) if path.stem.isdigit())

    def folders(self) -> tuple[tuple[str, Path], ...]:
        """Each stage's folder, by stage name: what --clean removes."""
        return (("decode", self.frames_dir), ("flow", self.flow_dir), ("stylize", self.styled_dir))


class JobLog:
    """WORK_DIR/job.log: appended, one line per event, flushed so a kill loses nothing."""

    def __init__(self, path: Path):
        self.file: TextIO = open(path, "a", encoding="utf-8")

    def __call__(self, text: str) -> None:
        try:
            self.file.write(f"{datetime.now().isoformat(timespec='seconds')} {text}\n")
            self.file.flush()
        except OSError as exc:  # a full disk: one clear line, not a traceback
            raise WriteError(self.file.name, exc) from None

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a line that could not be flushed was reported already
            self.file.close()


def is_work_dir(path: Path) -> bool:
    data = read_json(Path(path) / JobManifest.FILE, default=None) if Path(path).is_dir() else None
    return isinstance(data, dict) and data.get("kind") == KIND


def remove_dir(path: Path) -> None:
    """Rename first, so that a kill halfway through never leaves a half-emptied directory under
    the name the job trusts."""
    if path.exists():
        doomed = path.with_name(f".{path.name}-stale-{os.getpid()}")
        replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def remove_leftovers(store: FrameStore, output: Path) -> None:
    """What a killed run leaves behind: a decode never renamed, a half-deleted stale directory,
    half-written files, an encode never renamed (its ffmpeg may still be running: unlinking is
    safe, it writes on into nothing)."""
    work = store.work_dir
    folders = (*work.glob(".frames-*"), *work.glob(".*-stale-*"), *store.seams_dir.glob(".fade-*"))
    for leftover in (*folders, *store.chunks_dir.glob(".fade-*")):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in (
        *work.glob(".*.tmp*"),
        *store.frames_dir.glob(".*.tmp*"),
        *store.styled_dir.glob(".*.tmp*"),
        *store.flow_dir.glob(".*.tmp*"),
        *store.chunks_dir.glob(".*.tmp*"),
        *store.seams_dir.glob(".*.tmp*"),
        *store.seams_dir.glob(".lock-*"),  # a seam's: no segment runs before the run starts (seams.py)
        *(work / "cuts").glob(".*.tmp*"),
        *(work / "shots").glob(".*.tmp*"),
        *(work / FILES_DIR).glob(".*.tmp*"),  # the report's thumbnails and plots
        *output.parent.glob(f".{output.name}.*.tmp{output.suffix}"),
    ):
        leftover.unlink(missing_ok=True)


def clean(store: FrameStore, manifest: JobManifest, log: JobLog) -> None:
    """--clean: the record says the folders are gone before they go, so that a kill halfway
    leaves a job whose next run finishes the removal, and `stylize status` never reports as
    finished work folders that are no longer there."""
    folders = store.folders()
    if any(manifest.stage(name).get("status") != "cleaned" for name, _ in folders):
        for name, _ in folders:
            manifest.stage(name)["status"] = "cleaned"
        manifest.save()
    for _, folder in folders:
        remove_dir(folder)
    remove_dir(store.chunks_dir)  # what the output was joined from; an encode stage's output is the file
    remove_dir(store.seams_dir)
    log("cleaned: frames/, flow/, styled/, seams/ and chunks/ removed")


def prune(
    store: FrameStore, *, done: int, chunked: int, over: bool = False, reach: int = 1,
    own: tuple[int, int | None] = (1, None),
) -> None:  # fmt: skip
    """Delete what no resume needs, after a kill or once the job is `over` (its output placed):
    content frames before the last finished one (`done`; it is the next pair's first frame), the
    flow pairs up to it, the stylized frames in chunks (up to `chunked`) but the last finished;
    of the frames `own` (first, last) only (one shot's: shotprogress.py prunes shot by shot).
    The last `reach` content and stylized frames stay (VideoJob.reach: 4 with --long-term 1,2,4,
    for the next frames' long-term pairs and terms; 3 for a flash of 2 frames, whose frame after
    reads its frame before, cuts.py). Lists the folders, so it runs at the start and the end of
    a run; while frames finish, videorange.Retention deletes file by file."""
    first, last = own

    def mine(path: Path) -> int | None:
        """A frame's number, or a pair's later frame's (NNNNNN.npz, or EEEEEE-NNNNNN.npz long-term),
        if the frame is one of `own`'s."""
        stem = path.stem.rpartition("-")[2]
        index = int(stem) if stem.isdigit() else 0
        return index if over or first <= index <= (last if last is not None else index) else None

    for path in store.frames_dir.glob(FRAME_GLOB):
        if (index := mine(path)) is not None and (over or index <= done - reach):
            path.unlink(missing_ok=True)
    for path in store.flow_dir.glob(PAIR_GLOB):
        if (index := mine(path)) is not None and (over or index <= done):
            path.unlink(missing_ok=True)
    for path in store.styled_dir.glob(FRAME_GLOB):
        if (index := mine(path)) is not None and (over or index <= min(chunked, done - reach)):
            path.unlink(missing_ok=True)
    for path in store.seams_dir.glob(FRAME_GLOB) if over else ():
        path.unlink(missing_ok=True)


def refuse_foreign_work_dir(work: Path) -> None:
    """A folder is a video job's work directory only if its job.json says so: a stage whose
    settings changed deletes its folder (frames/, styled/, ...) in there, so a folder of the
    user's that merely holds a job.log or a .lock must not pass for one. What the first instants
    of a job leave before its job.json (a .lock, job.json's temporary) is taken over; a job.json
    of another kind of job is left to JobManifest, which names that kind."""
    if not work.is_dir() or is_work_dir(work):
        return
    for entry in work.iterdir():
        first_instants = entry.name.startswith(f".{JobManifest.FILE}.") and is_temporary(entry.name)
        if entry.name not in (".lock", JobManifest.FILE) and not first_instants:
            raise InputError(
                f"{work}: --work-dir is a folder with other files in it (no video job's job.json); "
                "give a new or empty directory"
            )


def missing_directories(path: Path) -> list[Path]:
    """`path` and those of its parents that do not exist yet, deepest first."""
    path, missing = Path(os.path.abspath(path)), []
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


class CreatedByThisRun:
    """What a run makes before its job starts (the output's and the work directory's missing
    folders, our own files in the work directory), so that a refused job (InputError: bad
    settings, no room, an input that turns out unusable) leaves the file system as it found it.

    Only what this run created goes, and only while the work directory holds nothing but our own
    files: a resumable job's directory (its files were there before) and one holding decoded
    frames are left as they are. Folders are removed with rmdir, so never one holding anything.
    """

    def __init__(self, work: Path, output: Path):
        self.work = Path(os.path.abspath(work))
        new = {*missing_directories(self.work), *missing_directories(output.parent)}
        self.directories = sorted(new, key=lambda path: len(path.parts), reverse=True)
        self.own_before = {name for name in OWN_FILES if os.path.lexists(self.work / name)}

    @contextlib.contextmanager
    def directories_removed_on_refusal(self):
        try:
            yield
        except InputError:
            for directory in self.directories:
                with contextlib.suppress(OSError):  # not empty (another job's lock, ...): kept
                    directory.rmdir()
            raise

    @contextlib.contextmanager
    def own_files_removed_on_refusal(self):
        """Around the locked part of a run: its .lock goes while this process still holds it."""
        try:
            yield
        except InputError:
            with contextlib.suppress(OSError):
                if {entry.name for entry in self.work.iterdir()} <= set(OWN_FILES):
                    for name in OWN_FILES:
                        if name not in self.own_before:
                            (self.work / name).unlink(missing_ok=True)
            raise


@dataclass(frozen=True)
class Kept:
    """What of a work directory a run keeps: which stages' folders are still valid, and how far
    the kept ones got."""

    decoded: bool  # frames/ holds frames made with the current settings
    flow: bool  # flow/'s pairs were made with the current settings
    stylized: bool  # styled/'s frames were made with the current settings
    chunks: bool = True  # chunks/ holds chunks of the current settings only
    chunked: int = 0  # frames in finished chunks


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*") if f.is_file()) if path.is_dir() else 0


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


@dataclass(frozen=True)
class Holding:
    """How much of a job is on disk at once: every frame and pair (`keep_frames`, --keep-frames),
    or a streaming window for each of the `shots_at_once` shots running at once (videoshots.py),
    plus, with --passes, the `held` frames of a whole shot and their pairs both ways until its
    last pass."""

    keep_frames: bool = False
    shots_at_once: int = 1
    held: int = 0


def check_disk_space(
    store: FrameStore, kept: Kept, expected: int, size: tuple[int, int], holding: Holding = Holding()
) -> str:
    """Refuse, before anything is deleted or decoded, a job the disk cannot hold: `expected`
    frames of `size`, less what is kept, against the free space plus what invalidation frees.
    The streaming job needs a bounded window (decoded frames ahead, flow pairs, the stylized
    frames of one chunk), plus what grows with the video: the statistics files, the chunks and
    the output joined from them. With --passes a shot holds all its frames (up to `holding.held`)
    and their pairs both ways until its last pass. Returns the estimate, in words, for the log."""
    keep_frames, shots_at_once, held = holding.keep_frames, holding.shots_at_once, holding.held
    pixels = size[0] * size[1]
    frame_bytes = pixels * BYTES_PER_PIXEL
    remaining = max(0, expected - kept.chunked)
    # Encoded H.264 at the default quality: well under a tenth of the raw frames.
    encoded = expected * frame_bytes // 10
    if keep_frames:
        window = remaining * (2 * frame_bytes + pixels * PAIR_BYTES_PER_PIXEL)
        what = f"{remaining} frames kept (--keep-frames)"
    else:
        # One window for each shot running at once (videoshots.py).
        window = (DECODE_WINDOW + 2) * frame_bytes + (CHUNK_FRAMES + 2) * frame_bytes
        window = shots_at_once * (window + (DECODE_WINDOW + 1) * pixels * PAIR_BYTES_PER_PIXEL)
        what = f"a window of {DECODE_WINDOW} decoded and {CHUNK_FRAMES} stylized frames"
        if held:
            window += shots_at_once * held * (2 * frame_bytes + 2 * pixels * PAIR_BYTES_PER_PIXEL)
            what += f" and {held} frames of a shot held for --passes"
        what += f" for each of {shots_at_once} shots at once" if shots_at_once > 1 else ""
    needed = window + remaining * STATS_BYTES + encoded * 2 - (kept.chunked * frame_bytes // 10)
    freed = dir_bytes(store.frames_dir) if not kept.decoded else 0
    freed += (0 if kept.stylized else dir_bytes(store.styled_dir)) + (0 if kept.flow else dir_bytes(store.flow_dir))
    freed += 0 if kept.chunks else dir_bytes(store.chunks_dir)
    free = shutil.disk_usage(store.work_dir).free + freed
    estimate = (
        f"about {human_bytes(needed)} needed ({what} at {size[0]}x{size[1]}, the chunks and the output), "
        f"{human_bytes(free)} free"
    )
    if needed > free:
        raise InputError(
            f"{store.work_dir}: not enough disk space for {expected} frames of {size[0]}x{size[1]}: {estimate}; "
            "free some space or use a smaller --size, --duration, --every-nth, or another --work-dir"
        )
    return estimate
