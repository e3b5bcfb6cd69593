"""A video job: decode -> stylize -> encode, each stage checkpointed so that a killed job resumes.

    WORK_DIR/job.json            inputs, settings and their hash per stage, stage status
    WORK_DIR/job.log             one line per stylized frame, and the stage events
    WORK_DIR/frames/000001.png   decoded content frames at --size (square pixels, rotation applied)
    WORK_DIR/flow/000002.npz     optical flow from frame 2 back to frame 1, its reliability mask and
                                 scene-cut score (flowstage.py), computed while frames are stylized
    WORK_DIR/styled/000001.png   stylized frames, each with styled/000001.json (its statistics)

Each stage's hash covers everything its outputs depend on, the previous stage's hash included:
a changed style setting invalidates the stylized frames and the output but not the decoded
frames; a changed --size invalidates everything; a changed --crf only the output. A stylized
frame counts as finished once its statistics file exists (written after the frame, atomically).
The flow stage depends on the decoded frames and its DIS preset; the stylize stage depends on the
flow stage only under --flow dis. Once frames and flow are complete, the flicker of the output
and of the input (flowstage.measure_flicker) goes into job.json under "report".
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .atomic import is_temporary, replace
from .decode import VideoInfo, count_frames, extract_frames, frame_size, probe
from .encode import DEFAULT_CRF, container_for, encode_video
from .errors import InputError, WriteError
from .images import open_rgb
from .manifest import (
    JobManifest,
    WorkDirLock,
    file_fingerprint,
    hash_settings,
    read_json,
    writable_directory,
    write_json,
)
from .stylize import MAX_ITERATIONS, StyleSettings

if TYPE_CHECKING:
    import torch

    from .flow import FramePair
    from .flowstage import FlowStage
    from .stylize import ExtraLoss, Progress
    from .vgg import VGG19

KIND = "video"
# Frame files start with a digit; atomic writes' temporary files start with a dot.
FRAME_GLOB = "[0-9]*.png"
# What one frame costs on disk, per pixel: a PNG of RGB rarely beats raw size by much for
# stylized (textured) frames, so raw size is the estimate; the statistics file is small.
BYTES_PER_PIXEL = 3
STATS_BYTES = 16 * 1024

FLOW_MODES = ("dis", "none", "independent")
DEFAULT_FLOW = "dis"
DEFAULT_FLOW_PRESET = "medium"
# Measured (README, "Flicker"): our loss terms are large (content ~1e12, style ~1e12 per frame,
# both independent of the size) while TemporalLoss is a mean of squared 0..255 differences
# (~1e2), so the weight is large too. Measured at 64-96 px (all three terms are independent of
# the size): 3e9 brings flicker down to about the input's own warping error, the output follows
# the motion as closely as the input does, and the style loss stays within ~15% of the warped
# start alone; 1e10 and more hold the output to the flow's prediction tighter than the input
# itself follows it (changes the flow misses are suppressed) and cost 40% or more style loss.
DEFAULT_TEMPORAL_WEIGHT = 3e9
# Cut scores of consecutive frames of one shot stay well below this, those across a cut above.
DEFAULT_SCENE_THRESHOLD = 0.6
# Warm-started frames stop once the loss fell by less than this fraction over STOP_WINDOW
# iterations: a still shot then costs a few iterations, a moving one its full --iterations.
DEFAULT_STOP_TOLERANCE = 1e-3
STOP_WINDOW = 10
# Absurd values are refused rather than run: a typo'd count would spawn processes or iterate for ever.
MAX_FLOW_WORKERS = 256


MAX_EVERY_NTH = 10_000  # one frame in 400 s at 25 fps: a preview of a feature film
# Longer than any video (31 years): a larger --start or --duration is a typo, and ffmpeg, which
# gets both as decimal text, would fail on 1e300 with an error that seems to be the input's.
MAX_SECONDS = 1e9


def check_range(start: float, duration: float | None, every_nth: int) -> None:
    """--start, --duration and --every-nth, as `stylize video` and `stylize flicker` take them."""
    if not math.isfinite(start) or start < 0:
        raise InputError(f"--start {start}: must be a number of seconds >= 0")
    if start > MAX_SECONDS:
        raise InputError(f"--start {start}: must be at most {MAX_SECONDS:g} seconds")
    if duration is not None and (not math.isfinite(duration) or duration <= 0):
        raise InputError(f"--duration {duration}: must be a number of seconds > 0")
    if duration is not None and duration > MAX_SECONDS:
        raise InputError(f"--duration {duration}: must be at most {MAX_SECONDS:g} seconds")
    if not 1 <= every_nth <= MAX_EVERY_NTH:
        raise InputError(f"--every-nth {every_nth}: must be between 1 and {MAX_EVERY_NTH}")


@dataclass(frozen=True, kw_only=True)
class VideoJob:
    """Everything a video job is made of; `run_video` does it (or what is left of it)."""

    input: Path
    styles: tuple[Path, ...]
    output: Path
    settings: StyleSettings
    init_path: Path | None = None
    work_dir: Path | None = None  # default: OUTPUT.work beside the output
    iterations_first: int | None = None  # default: twice settings.iterations
    start: float = 0.0  # seconds
    duration: float | None = None  # seconds; None: to the end
    every_nth: int = 1
    crf: int = DEFAULT_CRF
    clean: bool = False
    overwrite: bool = False
    device: str = "auto"
    flow: str = DEFAULT_FLOW  # dis: flow-warped start + temporal loss; none: previous frame; independent
    flow_preset: str = DEFAULT_FLOW_PRESET
    temporal_weight: float = DEFAULT_TEMPORAL_WEIGHT
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD
    stop_tolerance: float = DEFAULT_STOP_TOLERANCE
    flow_workers: int | None = None  # default: flowstage.default_workers()

    def __post_init__(self):
        check_range(self.start, self.duration, self.every_nth)
        if self.iterations_first is not None and not 1 <= self.iterations_first <= MAX_ITERATIONS:
            raise InputError(f"--iterations-first {self.iterations_first}: must be between 1 and {MAX_ITERATIONS}")
        if not 0 <= self.crf <= 51:
            raise InputError(f"--crf {self.crf}: must be between 0 (lossless) and 51")
        if not self.styles:
            raise InputError("at least one --style image is needed")
        if self.flow not in FLOW_MODES:
            raise InputError(f"--flow {self.flow!r}: must be one of {', '.join(FLOW_MODES)}")
        if self.flow_preset not in ("ultrafast", "fast", "medium"):
            raise InputError(f"--flow-preset {self.flow_preset!r}: must be ultrafast, fast or medium")
        if not math.isfinite(self.temporal_weight) or self.temporal_weight < 0:
            raise InputError(f"--temporal-weight {self.temporal_weight}: must be a finite number >= 0")
        if self.flow != "dis" and self.temporal_weight != DEFAULT_TEMPORAL_WEIGHT:
            raise InputError(f"--temporal-weight applies to --flow dis only, not --flow {self.flow}")
        if not 0 <= self.scene_threshold <= 1:
            raise InputError(f"--scene-threshold {self.scene_threshold}: must be between 0 and 1 (1: never cut)")
        if not 0 <= self.stop_tolerance < 1:
            raise InputError(f"--stop-tolerance {self.stop_tolerance}: must be >= 0 (0: never stop early) and < 1")
        if self.flow_workers is not None and not 1 <= self.flow_workers <= MAX_FLOW_WORKERS:
            raise InputError(f"--flow-workers {self.flow_workers}: must be between 1 and {MAX_FLOW_WORKERS}")

    @property
    def work(self) -> Path:
        return self.work_dir if self.work_dir is not None else self.output.with_name(self.output.name + ".work")

    @property
    def first_iterations(self) -> int:
        return self.iterations_first if self.iterations_first is not None else 2 * self.settings.iterations


class FrameStore:
    """Where a job's frames live."""

    def __init__(self, work_dir: Path):
        self.work_dir = Path(work_dir)
        self.frames_dir = self.work_dir / "frames"
        self.styled_dir = self.work_dir / "styled"
        self.flow_dir = self.work_dir / "flow"
        self.flows: "FlowStage | None" = None  # the running flow stage, while frames are stylized

    def pair(self, index: int) -> "FramePair":
        """The flow pair carrying frame index-1 onto frame index; waits for the flow stage."""
        from .flow import FramePair

        if self.flows is not None:
            return self.flows.wait(index)
        return FramePair.load(self.flow_dir / f"{index:06d}.npz")

    def content(self, index: int) -> Path:
        return self.frames_dir / f"{index:06d}.png"

    def styled(self, index: int) -> Path:
        return self.styled_dir / f"{index:06d}.png"

    def stats(self, index: int) -> Path:
        return self.styled_dir / f"{index:06d}.json"

    def finished(self, index: int, stage_hash: str) -> bool:
        if not self.styled(index).exists():
            return False
        stats = read_json(self.stats(index), default=None)
        return stats is not None and stats.get("stage_hash") == stage_hash

    def decoded_count(self) -> int:
        return sum(1 for _ in self.frames_dir.glob(FRAME_GLOB))

    def styled_count(self) -> int:
        return sum(1 for _ in self.styled_dir.glob(FRAME_GLOB))

    def pair_count(self) -> int:
        from .flowstage import PAIR_GLOB

        return sum(1 for _ in self.flow_dir.glob(PAIR_GLOB))


@dataclass
class FrameStart:
    """How one frame's optimization begins: the start image (None: the settings' --init),
    the iterations it gets, any extra loss terms (the temporal loss), and early stopping."""

    init: "torch.Tensor | None"
    iterations: int
    extra_losses: "dict[str, ExtraLoss]" = field(default_factory=dict)
    source: str = "init"  # for the log and the statistics: where the start image came from
    stop_tolerance: float = 0.0  # Stylizer.stylize's early stopping; 0: all iterations
    stop_window: int = STOP_WINDOW
    stats: dict = field(default_factory=dict)  # added to the frame's statistics (cut score, ...)


class WarmStart:
    """The first frame starts from --init with --iterations-first; each later frame starts from
    the previous stylized frame (as saved, 8 bits) with --iterations (--flow none).

    Optical flow (warping the previous frame, a temporal loss, new shots at scene cuts) replaces
    this object (temporal.FlowWarmStart): `start` sees the frame index, its content, the previous
    stylized frame and the FrameStore, and `settings` goes into the stylize stage's hash.
    """

    name = "previous-frame"
    uses_flow = False  # True: the stylize stage depends on the flow stage

    def __init__(self, *, iterations_first: int, iterations: int, init_image: "torch.Tensor | None" = None, stop_tolerance: float = 0.0):
        self.iterations_first = iterations_first
        self.iterations = iterations
        self.init_image = init_image
        self.stop_tolerance = stop_tolerance

    def settings(self) -> dict:
        return {"warm_start": self.name, "iterations_first": self.iterations_first, "stop_tolerance": self.stop_tolerance, "stop_window": STOP_WINDOW}

    def start(self, index: int, content: "torch.Tensor", previous: "torch.Tensor | None", store: FrameStore) -> FrameStart:
        if previous is None:
            return FrameStart(self.init_image, self.iterations_first, source="init")
        return FrameStart(previous, self.iterations, source="previous", stop_tolerance=self.stop_tolerance)


class JobEvents:
    """What a job reports while it runs; the CLI's display overrides these. Raising from any of
    them stops the job at once, keeping every finished frame."""

    def message(self, text: str) -> None: ...

    def stage(self, name: str, total: int | None = None, done: int = 0) -> None: ...

    def stage_progress(self, done: int) -> None: ...

    def frame_started(self, index: int, iterations: int) -> None: ...

    def iteration(self, progress: "Progress") -> None: ...

    def frame_finished(self, index: int, stats: dict) -> None: ...


@dataclass
class VideoResult:
    output: Path
    work_dir: Path
    frames: int
    stylized: list[int]  # frames stylized by this run (the others were finished before)
    audio: str | None  # copy, aac or None
    already_done: bool = False
    report: dict | None = None  # job.json's "report": the flicker of output and input


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


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def stage_settings(job: VideoJob, info: VideoInfo, size: tuple[int, int], starter: WarmStart) -> dict[str, dict]:
    """Each stage's settings; each includes the previous stage's hash, so invalidation cascades."""
    decode = {
        "input": file_fingerprint(job.input),
        "size": job.settings.size,
        "frame_size": list(size),
        "frame_rate": info.frame_rate,
        "start": job.start,
        "duration": job.duration,
        "every_nth": job.every_nth,
    }
    # The flow is computed on the decoded frames: their size comes with the decode hash.
    flow = {"decode": hash_settings(decode), "flow_method": "dis", "flow_preset": job.flow_preset, "frame_size": list(size)}
    stylize = {
        "decode": hash_settings(decode),
        **({"flow": hash_settings(flow)} if starter.uses_flow else {}),
        **job.settings.to_dict(),
        "styles": [file_hash(p) for p in job.styles],
        "init_image": file_hash(job.init_path) if job.init_path else None,
        **starter.settings(),
    }
    encode = {"stylize": hash_settings(stylize), "crf": job.crf, "output": str(job.output.resolve())}
    return {"decode": decode, "flow": flow, "stylize": stylize, "encode": encode}


def remove_dir(path: Path) -> None:
    """Rename first, so that a kill halfway through never leaves a half-emptied directory under
    the name the job trusts."""
    if path.exists():
        doomed = path.with_name(f".{path.name}-stale-{os.getpid()}")
        replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*") if f.is_file()) if path.is_dir() else 0


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def remove_leftovers(job: VideoJob, store: FrameStore) -> None:
    """What a killed run leaves behind: a decode never renamed, a half-deleted stale directory,
    half-written files, an encode never renamed (its ffmpeg may still be running: unlinking is
    safe, it writes on into nothing)."""
    for leftover in (*job.work.glob(".frames-*"), *job.work.glob(".*-stale-*")):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in (
        *job.work.glob(".*.tmp*"),
        *store.styled_dir.glob(".*.tmp*"),
        *store.flow_dir.glob(".*.tmp*"),
        *job.output.parent.glob(f".{job.output.name}.*.tmp{job.output.suffix}"),
    ):
        leftover.unlink(missing_ok=True)


def finished_output(job: VideoJob, manifest: JobManifest, encode_hash: str) -> bool:
    """Whether the output is the file this job's current encode placed there, by fingerprint:
    a file that merely exists (another job's, the user's, an older encode's) is not."""
    stage = manifest.stage("encode")
    if not manifest.is_current("encode", encode_hash) or stage.get("status") not in ("placing", "done"):
        return False
    try:
        return job.output.is_file() and file_fingerprint(job.output) == stage.get("fingerprint")
    except OSError:
        return False


def finish_done_job(job: VideoJob, store: FrameStore, manifest: JobManifest) -> None:
    """What a run killed after placing the output left to do: the record that it is done, an
    interrupted --clean (or a new one) and the leftovers."""
    stage = manifest.stage("encode")
    if stage.get("status") == "placing":  # killed between the rename and its record
        manifest.placed(job.output, stage["fingerprint"])
        manifest.update("encode", status="done", finished=_now())
    folders = cleaned_folders(store)
    pending = any(manifest.stage(name).get("status") == "cleaned" and folder.exists() for name, folder in folders)
    asked = job.clean and any(manifest.stage(name).get("status") != "cleaned" for name, _ in folders)
    remove_leftovers(job, store)
    if pending or asked:
        log = JobLog(job.work / "job.log")
        try:
            clean(store, manifest, log)
        finally:
            log.close()


def refuse_to_replace(job: VideoJob, manifest: JobManifest) -> None:
    """A job replaces only files it placed itself (by fingerprint), unless --overwrite."""
    if job.overwrite or not job.output.exists() or manifest.owns(job.output):
        return
    if str(job.output.resolve()) in manifest.data.get("outputs", {}):
        raise InputError(
            f"{job.output}: output exists and is no longer the file this job wrote (use --overwrite to replace it)"
        )
    raise InputError(f"{job.output}: output exists (use --overwrite to replace it)")


def cleaned_folders(store: FrameStore) -> tuple[tuple[str, Path], ...]:
    return (("decode", store.frames_dir), ("flow", store.flow_dir), ("stylize", store.styled_dir))


def clean(store: FrameStore, manifest: JobManifest, log: JobLog) -> None:
    """--clean: the record says the folders are gone before they go, so that a kill halfway
    leaves a job whose next run finishes the removal, and `stylize status` never reports as
    finished work folders that are no longer there."""
    folders = cleaned_folders(store)
    if any(manifest.stage(name).get("status") != "cleaned" for name, _ in folders):
        for name, _ in folders:
            manifest.stage(name)["status"] = "cleaned"
        manifest.save()
    for _, folder in folders:
        remove_dir(folder)
    log("cleaned: frames/, flow/ and styled/ removed")


# A work directory holds at least one of these from the moment a job first locks it.
OWN_FILES = (JobManifest.FILE, ".lock", "job.log")


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

    def __init__(self, job: "VideoJob"):
        self.work = Path(os.path.abspath(job.work))
        new = {*missing_directories(self.work), *missing_directories(job.output.parent)}
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


def check_paths(job: VideoJob) -> None:
    """Refuse, before any work, inputs and outputs that cannot work or would destroy something."""
    if not job.input.exists():
        raise InputError(f"{job.input}: file not found")
    if job.output.exists() and job.output.resolve() == job.input.resolve():
        raise InputError(f"{job.output}: output is the same file as the input")
    if job.output.is_dir():
        raise InputError(f"{job.output}: output is a directory; give a file name such as {job.output / 'stylized.mp4'}")
    container_for(job.output)
    if job.work.resolve() in (job.output.resolve(), job.input.resolve()):
        raise InputError(f"--work-dir {job.work}: is the {'output' if job.work.resolve() == job.output.resolve() else 'input'} file's own path")
    for path in (*job.styles, *([job.init_path] if job.init_path else [])):
        # Decoded now, not after the frames are: a broken style image must not cost a decode.
        open_rgb(path)
    refuse_foreign_work_dir(job.work)
    if job.settings.style_blend and len(job.settings.style_blend) != len(job.styles):
        raise InputError(f"--style-blend has {len(job.settings.style_blend)} weights for {len(job.styles)} style images")
    writable_directory(job.output.parent, "output")
    writable_directory(job.work, "work")


def run_video(job: VideoJob, *, events: JobEvents | None = None, vgg: "VGG19 | None" = None) -> VideoResult:
    """Run (or resume) a video job. Bad input raises InputError before anything is changed; a
    refused job removes the folders and files it made on the way (CreatedByThisRun)."""
    created = CreatedByThisRun(job)  # before check_paths makes the output's and work folders
    with created.directories_removed_on_refusal():
        return _run_video(job, events or JobEvents(), vgg, created)


def _run_video(job: VideoJob, events: JobEvents, vgg: "VGG19 | None", created: CreatedByThisRun) -> VideoResult:
    from .devices import pick_device
    from .flowstage import PAIR_BYTES_PER_PIXEL
    from .images import load_image
    from .temporal import make_starter

    settings = job.settings
    device = pick_device(job.device)
    info = probe(job.input)
    if job.start >= info.duration:
        raise InputError(f"--start {job.start:g}: {job.input} is only {info.duration:.2f} s long")
    check_paths(job)
    size = frame_size(info, settings.size)
    init_image = load_image(job.init_path) if job.init_path else None
    starter = make_starter(job, init_image=init_image, device=device)
    store = FrameStore(job.work)

    with WorkDirLock(job.work), created.own_files_removed_on_refusal():
        manifest = JobManifest(job.work, KIND)
        stages = stage_settings(job, info, size, starter)
        hashes = {name: hash_settings(values) for name, values in stages.items()}
        if finished_output(job, manifest, hashes["encode"]):
            finish_done_job(job, store, manifest)
            events.message(f"{job.output}: already done (work directory {job.work})")
            encode_stage = manifest.stage("encode")
            frames = encode_stage.get("frames", 0)
            return VideoResult(job.output, job.work, frames, [], encode_stage.get("audio"), already_done=True, report=manifest.data.get("report"))
        refuse_to_replace(job, manifest)

        # What is still valid. Nothing is deleted before every check has passed.
        stylize_stage = manifest.stage("stylize")
        stylize_current = manifest.is_current("stylize", hashes["stylize"]) and stylize_stage.get("status") != "cleaned"
        stylize_complete = (
            stylize_current
            and stylize_stage.get("status") == "done"
            and store.styled_count() == stylize_stage.get("total")
        )
        decode_stage = manifest.stage("decode")
        decode_current = (
            manifest.is_current("decode", hashes["decode"])
            and decode_stage.get("status") == "done"
            and store.decoded_count() == decode_stage.get("frames")
        )
        flow_current = manifest.is_current("flow", hashes["flow"]) and manifest.stage("flow").get("status") != "cleaned"
        expected = decode_stage["frames"] if decode_current else count_frames(info, start=job.start, duration=job.duration, every_nth=job.every_nth)
        styled_done = stylize_stage.get("done", 0) if stylize_current else 0
        pairs_done = store.pair_count() if flow_current else 0
        frame_bytes = size[0] * size[1] * BYTES_PER_PIXEL
        needed = (0 if decode_current or stylize_complete else expected * frame_bytes)
        needed += max(0, expected - styled_done) * (frame_bytes + STATS_BYTES) + expected * frame_bytes // 10
        needed += max(0, expected - 1 - pairs_done) * size[0] * size[1] * PAIR_BYTES_PER_PIXEL
        freed = (0 if decode_current else dir_bytes(store.frames_dir)) + (0 if stylize_current else dir_bytes(store.styled_dir))
        freed += 0 if flow_current else dir_bytes(store.flow_dir)
        free = shutil.disk_usage(job.work).free + freed
        if needed > free:
            raise InputError(
                f"{job.work}: not enough disk space for {expected} frames of {size[0]}x{size[1]}: about "
                f"{human_bytes(needed)} needed, {human_bytes(free)} free; free some space or use a smaller "
                "--size, --duration, --every-nth, or another --work-dir"
            )

        if not manifest.path.exists():
            manifest.save()  # first of all the job's files after the lock: the folder is now a job's
        log = JobLog(job.work / "job.log")
        try:
            remove_leftovers(job, store)
            manifest.data["inputs"] = {
                "video": str(job.input.resolve()),
                "styles": [str(p.resolve()) for p in job.styles],
                "init": str(job.init_path.resolve()) if job.init_path else None,
                "output": str(job.output.resolve()),
            }
            manifest.data["video"] = info.to_dict()
            manifest.data["device"] = str(device)
            for name, folder in (("decode", store.frames_dir), ("flow", store.flow_dir), ("stylize", store.styled_dir), ("encode", None)):
                if manifest.is_current(name, hashes[name]) and manifest.stage(name).get("status") != "cleaned":
                    continue
                changed = [k for k in manifest.changed_settings(name, stages[name]) if k not in ("decode", "stylize")]
                if manifest.stage(name).get("hash") and changed:
                    discarded = f"; discarding {folder.name}/" if folder is not None and folder.exists() else ""
                    note = f"{name}: settings changed ({', '.join(changed)}){discarded}"
                    events.message(note)
                    log(note)
                if folder is not None:
                    remove_dir(folder)
                manifest.reset(name, hashes[name], stages[name])
            manifest.save()

            stylized = []
            report_key = {"stylize": hashes["stylize"], "flow": hashes["flow"], "scene_threshold": job.scene_threshold}
            report_current = (manifest.data.get("report") or {}).get("key") == report_key
            if not stylize_complete or not report_current:
                if not decode_current:
                    decode(job, info, size, store, manifest, events, log)
                total = manifest.stage("decode")["frames"]
                with run_flow_stage(job, store, manifest, total, log) as flows:
                    if not stylize_complete:
                        stylized = stylize_frames(job, store, manifest, hashes["stylize"], starter, device, vgg, events, log)
                    finish_flow_stage(job, flows, starter, manifest, log)
                flicker_report(job, store, manifest, report_key, total, events, log)
            frames = manifest.stage("stylize")["total"]
            audio = encode(job, info, store, manifest, frames, events, log)
            if job.clean:
                clean(store, manifest, log)
            return VideoResult(job.output, job.work, frames, stylized, audio, report=manifest.data.get("report"))
        except BaseException as exc:
            with contextlib.suppress(WriteError):  # on a full disk, the error itself says why
                log(f"stopped: {type(exc).__name__}: {exc}".rstrip(": "))
            raise
        finally:
            log.close()


def decode(job: VideoJob, info: VideoInfo, size: tuple[int, int], store: FrameStore, manifest: JobManifest, events: JobEvents, log: JobLog) -> int:
    expected = count_frames(info, start=job.start, duration=job.duration, every_nth=job.every_nth)
    events.stage("decode", total=expected)
    manifest.update("decode", status="running", started=_now())
    log(f"decode: {job.input} -> frames/ at {size[0]}x{size[1]}, about {expected} frames")
    count = extract_frames(
        info, store.frames_dir, size=size, start=job.start, duration=job.duration, every_nth=job.every_nth,
        on_progress=events.stage_progress,
    )  # fmt: skip
    manifest.update("decode", status="done", frames=count, width=size[0], height=size[1], finished=_now())
    log(f"decode: done, {count} frames")
    return count


def stylize_frames(
    job: VideoJob,
    store: FrameStore,
    manifest: JobManifest,
    stage_hash: str,
    starter: WarmStart,
    device: "torch.device",
    vgg: "VGG19 | None",
    events: JobEvents,
    log: JobLog,
) -> list[int]:
    """Stylize every unfinished frame in order; return the indices stylized by this call."""
    from .images import load_image, save_image
    from .stylize import Stylizer

    total = manifest.stage("decode")["frames"]
    store.styled_dir.mkdir(exist_ok=True)
    # Frames up to the manifest's count need only be there; beyond it (the frame in hand when a
    # run was killed) the statistics file decides. Either way each is checked once, in order.
    recorded, done = manifest.stage("stylize").get("done", 0), 0
    while done < total and (
        store.styled(done + 1).exists() and store.stats(done + 1).exists()
        if done < recorded
        else store.finished(done + 1, stage_hash)
    ):
        done += 1
    manifest.update("stylize", status="running", total=total, done=done)
    events.stage("stylize", total=total, done=done)
    if done == total:
        manifest.update("stylize", status="done", finished=_now())
        return []
    log(f"stylize: {done} of {total} frames finished before, starting at frame {done + 1}")
    settings = job.settings
    # One Stylizer per job: the network is loaded and the style targets computed once.
    styles = [load_image(path, max(16, round(settings.size * settings.style_scale))) for path in job.styles]
    stylizer = Stylizer(styles, settings, device=device, vgg=vgg)
    previous = load_image(store.styled(done)) if done else None
    stylized = []
    for index in range(done + 1, total + 1):
        content = load_image(store.content(index))
        start = starter.start(index, content, previous, store)
        events.frame_started(index, start.iterations)
        began = time.perf_counter()
        result = stylizer.stylize(
            content, init=start.init, iterations=start.iterations, extra_losses=start.extra_losses, callback=events.iteration,
            stop_tolerance=start.stop_tolerance, stop_window=start.stop_window,
        )  # fmt: skip
        seconds = time.perf_counter() - began
        save_image(result.image, store.styled(index))
        final = result.final_terms
        stats = {
            "frame": index,
            "stage_hash": stage_hash,
            "start": start.source,
            **start.stats,
            "iterations": result.iterations,
            "loss": final.get("loss"),
            "terms": {k: v for k, v in final.items() if k != "loss"},
            "loss_history": [record["loss"] for record in result.history],
            "seconds": round(seconds, 3),
            "device": str(device),
            "finished": _now(),
        }
        # The statistics file is the frame's commit record: written last, atomically.
        write_json(store.stats(index), stats)
        log(
            f"frame {index:06d}/{total:06d} start={start.source} iterations={result.iterations} "
            f"loss={stats['loss']:.5g} "
            + " ".join(f"{k}={v:.4g}" for k, v in stats["terms"].items())
            + f" seconds={seconds:.2f}"
        )
        manifest.update("stylize", done=index)
        stylized.append(index)
        events.frame_finished(index, stats)
        # The next frame starts from this one as saved, so a resumed run starts from the same image.
        previous = load_image(store.styled(index))
    manifest.update("stylize", status="done", finished=_now())
    return stylized


def run_flow_stage(job: VideoJob, store: FrameStore, manifest: JobManifest, total: int, log: JobLog) -> "FlowStage":
    """Start computing the missing flow pairs in the background; `store.pair` waits for them."""
    from .flowstage import FlowStage

    flows = FlowStage(frames_dir=store.frames_dir, flow_dir=store.flow_dir, total=total, preset=job.flow_preset, workers=job.flow_workers)
    flows.start()
    missing = total - 1 - len(flows.ready_before)
    if missing:
        manifest.update("flow", status="running", total=total - 1, started=_now())
        log(f"flow: {len(flows.ready_before)} of {total - 1} pairs there before, {missing} to compute (DIS {job.flow_preset}, {flows.workers} workers)")
    store.flows = flows
    return flows


def finish_flow_stage(job: VideoJob, flows: "FlowStage", starter: WarmStart, manifest: JobManifest, log: JobLog) -> None:
    """Wait for the last pairs; record the scene cuts, and the shots they made under --flow dis."""
    scores = flows.finish()
    cuts = [index for index, score in scores.items() if score > job.scene_threshold]
    if manifest.stage("flow").get("status") != "done":
        manifest.update("flow", status="done", total=flows.total - 1, finished=_now())
        log(f"flow: done, {flows.total - 1} pairs ({len(flows.computed)} computed by this run)")
    if starter.uses_flow:
        # Each shot is [first frame, last frame]; a cut at frame i ends a shot at i-1.
        firsts = [1, *cuts]
        manifest.update("stylize", shots=[[a, b - 1] for a, b in zip(firsts, [*cuts, flows.total + 1])])


def flicker_report(job: VideoJob, store: FrameStore, manifest: JobManifest, key: dict, total: int, events: JobEvents, log: JobLog) -> None:
    """The flicker of the stylized frames and of the content frames into job.json's "report"."""
    from .flowstage import measure_flicker

    events.message(f"measuring flicker over {total - 1} frame pairs")
    flicker = measure_flicker(
        flow_dir=store.flow_dir, sequences={"output": store.styled_dir, "input": store.frames_dir}, total=total,
        scene_threshold=job.scene_threshold, workers=job.flow_workers,
    )  # fmt: skip
    manifest.data["report"] = {"key": key, "flicker": flicker, "flow": job.flow, "measured": _now()}
    manifest.save()
    log(f"flicker: output {flicker['output']:.4g}, input {flicker['input']:.4g} (mean masked warping error over {flicker['pairs']} pairs; scene cuts at {flicker['cuts'] or 'none'})")


def output_rate(job: VideoJob, info: VideoInfo, frames: int) -> Fraction:
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
    if job.every_nth == 1:
        return rate
    end = info.video_duration if job.duration is None else min(info.video_duration, job.start + job.duration)
    seconds = end - job.start
    preview = rate / job.every_nth
    if seconds <= 0 or frames / preview <= seconds + 0.5 / rate:
        return preview
    return (frames / Fraction(seconds)).limit_denominator(100_000)


def encode(job: VideoJob, info: VideoInfo, store: FrameStore, manifest: JobManifest, frames: int, events: JobEvents, log: JobLog) -> str | None:
    rate = output_rate(job, info, frames)
    events.stage("encode", total=frames)
    manifest.update("encode", status="running", started=_now())
    output = str(job.output.resolve())

    def before_commit(finished: Path, audio: str | None) -> None:
        # The record first, then the rename (DESIGN.md, "Stages, checkpoints, resume"): a kill
        # right after the rename leaves an output the next run knows, by fingerprint, as its own.
        # The check is repeated here: another job may have written the output since we started.
        refuse_to_replace(job, manifest)
        fingerprint = file_fingerprint(finished)
        stage = manifest.stage("encode")
        stage.update(status="placing", output=output, fingerprint=fingerprint, frames=frames, audio=audio)
        manifest.placing(job.output, fingerprint)

    def after_commit() -> None:
        manifest.placed(job.output, manifest.stage("encode")["fingerprint"])
        manifest.update("encode", status="done", finished=_now())

    audio = encode_video(
        store.styled_dir, job.output, frame_rate=rate, crf=job.crf,
        audio_source=job.input if info.audio else None, audio=info.audio,
        start=job.start, duration=job.duration, on_progress=events.stage_progress,
        before_commit=before_commit, after_commit=after_commit,
    )  # fmt: skip
    log(f"encode: done, {job.output} ({frames} frames at {float(rate):.3f} fps, audio {audio or 'none'})")
    return audio


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def is_work_dir(path: Path) -> bool:
    data = read_json(Path(path) / JobManifest.FILE, default=None) if Path(path).is_dir() else None
    return isinstance(data, dict) and data.get("kind") == KIND


def status_lines(work_dir: Path) -> list[str]:
    """What `stylize status` prints for a video work directory."""
    work_dir = Path(work_dir)
    data = read_json(work_dir / JobManifest.FILE)
    holder = WorkDirLock.holder(work_dir)
    stages = data.get("stages", {})
    video = data.get("video") or {}
    inputs = data.get("inputs") or {}
    lines = [f"video job in {work_dir}: " + (f"running (process {holder})" if holder else "not running")]
    if video:
        audio = ", ".join(f"{a['codec']} {a['channels']}" for a in video.get("audio", [])) or "none"
        rate = float(Fraction(video["frame_rate"]))
        lines.append(
            f"input: {inputs.get('video')} ({video['width']}x{video['height']}, {rate:.3f} fps"
            f"{' variable' if video.get('variable_frame_rate') else ''}, {video['duration']:.2f} s, audio {audio})"
        )
    lines.append(f"output: {inputs.get('output')}")
    folders = dict(cleaned_folders(FrameStore(work_dir)))
    for name in ("decode", "flow", "stylize", "encode"):
        stage = stages.get(name, {})
        status = stage.get("status", "pending")
        if status == "running" and not holder:
            status = "interrupted"
        if name == "encode" and status in ("placing", "done"):
            # "placing": stopped between recording the output and renaming it into place, or
            # right after; the output's fingerprint tells which.
            if output_is_recorded(data):
                status = "done"
            else:
                status = "interrupted" if status == "placing" else "done, but the output is gone or was replaced since"
        folder = folders.get(name)
        if folder is not None and status == "cleaned" and folder.exists():
            status = f"cleaning ({folder.name}/ is still there; the next run removes it)"
        elif folder is not None and stage.get("status") == "done" and not folder.exists():
            status += f" ({folder.name}/ is gone; the next run makes it again)"
        detail = ""
        if name == "decode" and "frames" in stage:
            detail = f", {stage['frames']} frames at {stage.get('width')}x{stage.get('height')}"
        elif name == "flow" and "total" in stage:
            done = FrameStore(work_dir).pair_count() if status != "cleaned" else stage["total"]
            detail = f", {done}/{stage['total']} frame pairs"
        elif name == "stylize" and "total" in stage:
            done, total = stage.get("done", 0), stage["total"]
            detail = f", {done}/{total} frames done, {total - done} remaining"
            if len(stage.get("shots", [])) > 1:
                detail += f", {len(stage['shots'])} shots (scene cuts at frames {', '.join(str(a) for a, _ in stage['shots'][1:])})"
        elif name == "encode" and stage.get("status") in ("placing", "done"):
            detail = f", {stage.get('frames')} frames, audio {stage.get('audio') or 'none'}"
        lines.append(f"{name}: {status}{detail}" + (f" (settings {stage['hash']})" if stage.get("hash") else ""))
    settings = (stages.get("stylize") or {}).get("settings") or {}
    encode_settings = (stages.get("encode") or {}).get("settings") or {}
    decode_settings = (stages.get("decode") or {}).get("settings") or {}
    flow_settings = (stages.get("flow") or {}).get("settings") or {}
    merged = {**decode_settings, **flow_settings, **settings, **encode_settings}
    shown = {k: v for k, v in merged.items() if k not in ("decode", "flow", "stylize", "input", "output")}
    if shown:
        lines.append("settings: " + " ".join(f"{k}={v}" for k, v in sorted(shown.items())))
    flicker = (data.get("report") or {}).get("flicker")
    if flicker:
        lines.append(flicker_line(flicker))
    return lines


def output_is_recorded(data: dict) -> bool:
    """Whether the output named in a job record holds the file the job's encode placed there."""
    stage = (data.get("stages") or {}).get("encode") or {}
    path = Path(stage.get("output") or (data.get("inputs") or {}).get("output") or "")
    try:
        return path.is_file() and file_fingerprint(path) == stage.get("fingerprint")
    except OSError:
        return False


def flicker_line(flicker: dict) -> str:
    return (
        f"flicker: output {flicker['output']:.4g}, input {flicker['input']:.4g} "
        f"(mean masked warping error over {flicker['pairs']} frame pairs, scene cuts skipped)"
    )
