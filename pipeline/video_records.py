"""A video job's record of its stages in job.json, and what a run keeps of the runs before it,
decided before anything is changed.

Each stage's settings include the previous stage's hash, so that a changed setting invalidates its
own stage and every one after it (video.py says which); a stage whose record is for other
settings, or whose folder was cleaned, starts over (`StageRecords`, which also records how far the
stages got, for `stylize status` and the next run). A job begun under other defaults resumes with
the values it began with (`keep_own_defaults`), and an output this job already placed is finished
off, not made again (`finish_placed_output`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from . import fades, letterbox
from .chunks import ChunkStore
from .cuts import MOVE_SETTINGS, CutScan
from .decode import VideoInfo
from .errors import WriteError
from .hashing import file_fingerprint, file_sha256
from .hashing import settings_hash as hash_settings
from .manifest import JobManifest, timestamp
from .outputs import OutputRecord
from .settings import StyleSettings
from .temporal import WarmStart, make_starter
from .video_defaults import DIS_ONLY, OWN_DEFAULTS
from .videojob import JobEvents, VideoJob, VideoResult
from .workdir import STAGES, FrameStore, JobLog, Kept, clean, prune, remove_dir, remove_leftovers


def file_hash(path: Path) -> str:
    """A style or init image's content, as stage settings record it (16 hex digits)."""
    return file_sha256(path)[:16]


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
    if not job.ignore_fades:  # a fade's frames are decoded at the picture's full light (fades.py)
        decode["fades"] = fades.SETTINGS | (fades.CUT_SETTINGS if job.cuts_in_own_light else {})  # where fades end
        if job.overlay_share:  # blank frames and fades measured without a caption's pixels (fades.frame_light)
            decode["fades"]["overlay_share"] = job.overlay_share
    # The flow is computed on the decoded frames: their size comes with the decode hash. The
    # stylize stage depends on it whatever the starter: each frame's record holds its pair's
    # flicker figures, and the frames they were measured on are gone once the job moves on.
    flow = {
        "decode": hash_settings(decode),
        "flow_method": "dis",
        "flow_preset": job.flow_preset,
        "frame_size": list(size),
    }
    if job.lit_flashes:  # which pairs are computed with the light matched: a flash's (cuts.py)
        flow["lit_flashes"] = {"flash_frames": job.flash_frames, "scene_threshold": job.scene_threshold}
    stylize = {
        "decode": hash_settings(decode),
        "flow": hash_settings(flow),
        **job.settings.checkpoint_dict(),
        "styles": [file_hash(p) for p in job.styles],
        "init_image": file_hash(job.init_path) if job.init_path else None,
        **starter.settings(),
        **({} if job.ignore_fades else {"ignore_fades": False}),  # as recorded: video_defaults.OWN_DEFAULTS
        **({"overlay_share": job.overlay_share} if job.overlay_share and not job.ignore_fades else {}),  # likewise
        **({"stylize_bars": False, "bars": letterbox.SETTINGS} if job.keeps_bars else {}),  # the chunks' bars
        **({"crop_bars": True} if job.crops_bars else {}),  # and the stylizer's frames without them
        **({"light_cuts": False, "cuts": fades.CUT_SETTINGS} if job.cuts_in_own_light else {}),  # which frames go on
        **({"motion_cuts": False, "moves": MOVE_SETTINGS} if job.tells_moves else {}),  # and which, for fast moves
        # Segments start afresh and are cross-faded (shots.py): other frames. Off: the hash as before.
        **(
            {"max_shot_frames": job.max_shot_frames, "segment_overlap": job.segment_overlap}
            if job.max_shot_frames
            else {}
        ),
    }
    encode = {"stylize": hash_settings(stylize), "crf": job.crf, "output": str(job.output.resolve())}
    return {"decode": decode, "flow": flow, "stylize": stylize, "encode": encode}


# The style settings' names: an option of video_defaults.OWN_DEFAULTS is one of these or a VideoJob field.
STYLE_FIELDS = frozenset(field.name for field in dataclasses.fields(StyleSettings))


def own_options(job: VideoJob, starter: WarmStart) -> dict:
    """The values a job runs with of the options in video_defaults.OWN_DEFAULTS: the style settings
    have theirs, the starter's plan the ones the job resolves (such as the first frame's iterations),
    the job the others."""
    owner = {name: job.settings if name in STYLE_FIELDS else starter.plan for name in OWN_DEFAULTS}
    return {name: getattr(owner[name] if hasattr(owner[name], name) else job, name) for name in OWN_DEFAULTS}


def keep_own_defaults(
    job: VideoJob, starter: WarmStart, manifest: JobManifest, info: VideoInfo, size: tuple[int, int]
) -> tuple[VideoJob, WarmStart, dict]:
    """A job begun under other defaults (a release changed them since, video_defaults.OWN_DEFAULTS)
    resumes with the values it began with for the options this run left unset, where that leaves
    its stylize stage's settings as recorded: its stylized frames stay valid. Any other change
    starts the stage over under this release's defaults. Returns the job and starter to run, and
    {option: (the value kept, this release's)} where they differ."""
    recorded = manifest.stage("stylize").get("settings")
    if not recorded or not job.defaulted:
        return job, starter, {}
    # --flow dis's own options are refused with another --flow (video_defaults.DIS_ONLY).
    names = [name for name in job.defaulted if job.flow == "dis" or name not in DIS_ONLY]
    implied = {name: recorded.get(name, OWN_DEFAULTS[name]) for name in names}
    own = {name: value for name, value in implied.items() if value is not None}
    begun, begun_starter = with_options(job, own, size, starter)
    stylize = stage_settings(begun, info, size, begun_starter)["stylize"]
    if manifest.changed_settings("stylize", stylize):
        return job, starter, {}
    # What differs from this run's: the options as they were given, and as they are now, of those
    # whose value now would change the stage (not --free-flashes where no frame is a flash).
    before, now = own_options(begun, begun_starter), own_options(job, starter)
    differ = [name for name in OWN_DEFAULTS if before[name] != now[name]]
    counts = []
    for name in differ:
        flipped, flipped_starter = with_options(begun, {name: now[name]}, size, starter)
        if stage_settings(flipped, info, size, flipped_starter)["stylize"] != stylize:
            counts.append(name)
    return begun, begun_starter, {name: (before[name], now[name]) for name in counts}


def with_options(job: VideoJob, values: dict, size: tuple[int, int], starter: WarmStart) -> tuple[VideoJob, WarmStart]:
    """`job` with these options' values (style settings among them), and its starter (on `starter`'s
    device, from its init image)."""
    values = dict(values)
    style = {name: values.pop(name) for name in STYLE_FIELDS & values.keys()}
    changed = dataclasses.replace(job, settings=dataclasses.replace(job.settings, **style), **values)
    return changed, make_starter(changed, size, init_image=starter.init_image, device=starter.device)


class StageRecords:
    """Each stage's settings and hash for this run, held against job.json's record of them: which
    stages' outputs stay valid, and what a changed setting discards; then how far the stages got
    (what `stylize status` and the next run read), written once as the stylize stage starts and
    once as it ends, never per frame."""

    def __init__(self, manifest: JobManifest, store: FrameStore, settings: dict[str, dict]):
        self.manifest, self.store, self.settings = manifest, store, settings
        self.hashes = {name: hash_settings(values) for name, values in settings.items()}

    def record_inputs(self, job: VideoJob, info: VideoInfo, device: torch.device) -> None:
        """The paths this run reads and writes, the probed input and the device, for `stylize status`
        and the report (saved with the stages' records, by `invalidate`)."""
        self.manifest.data["inputs"] = {
            "video": str(job.input.resolve()),
            "styles": [str(p.resolve()) for p in job.styles],
            "init": str(job.init_path.resolve()) if job.init_path else None,
            "output": str(job.output.resolve()),
        }
        self.manifest.data["video"] = info.to_dict()
        self.manifest.data["device"] = str(device)

    def current(self, name: str) -> bool:
        """Whether the stage's record is for the current settings, and its folder not cleaned."""
        stage = self.manifest.stage(name)
        return self.manifest.is_current(name, self.hashes[name]) and stage.get("status") != "cleaned"

    def kept(self, chunks: ChunkStore) -> Kept:
        """Which stages' outputs stay valid, and how far they got."""
        stylized = self.current("stylize")
        done = chunks.done() if stylized else []
        return Kept(
            decoded=self.current("decode"), flow=self.current("flow"), stylized=stylized,
            chunks=not chunks.stale(), chunked=sum(chunk.frames for chunk in done),
        )  # fmt: skip

    def invalidate(self, chunks: ChunkStore, cut_scan: CutScan, *, tell: Callable[[str], None], log: JobLog) -> None:
        """Each stage whose settings changed (or whose folder was cleaned) starts over: its folder
        goes, its record is reset to the new settings (`tell`: what was discarded, and why). Chunks
        and cut scores of other settings go too."""
        folders = dict(self.store.folders())
        for name in STAGES:
            if self.current(name):
                continue
            folder = folders.get(name)
            changed = [
                k for k in self.manifest.changed_settings(name, self.settings[name]) if k not in ("decode", "stylize")
            ]
            if self.manifest.stage(name).get("hash") and changed:
                discarded = f"; discarding {folder.name}/" if folder is not None and folder.exists() else ""
                tell(f"{name}: settings changed ({', '.join(changed)}){discarded}")
            if folder is not None:
                remove_dir(folder)
            self.manifest.reset(name, self.hashes[name], self.settings[name])
        if chunks.stale():
            log("chunks: made with other settings; discarding chunks/")
            remove_dir(chunks.dir)
        if cut_scan.stale():
            remove_dir(cut_scan.dir)
        if not self.current("stylize"):
            remove_dir(self.store.work_dir / "shots")  # the shots' records: of the frames just discarded
        self.manifest.save()

    def stylize_started(self, total: int, size: tuple[int, int], done: int) -> None:
        """The cut scan counted `total` frames of `size`; the decode and flow run with the stylizer."""
        for name in ("decode", "flow"):
            if self.manifest.stage(name).get("status") != "done":
                self.manifest.stage(name).update(status="running", started=timestamp())
        width, height = size
        self.manifest.stage("decode").update(frames=total, width=width, height=height)
        self.manifest.update("stylize", status="running", total=total, done=done)

    def stylize_stopped(self, done: int) -> None:
        """How far it got, also when stopped (Ctrl-C, an error): `stylize status` reads it."""
        if self.manifest.stage("stylize").get("status") != "done":
            with contextlib.suppress(WriteError):  # on a full disk, the error itself says why
                self.manifest.update("stylize", done=done)

    def stylize_finished(self, total: int, size: tuple[int, int], redone: list[int]) -> None:
        """Every frame is stylized and every chunk encoded; `redone`: frames this run stylized
        again after stopping too early (temporal.optimize_frame), added to the earlier runs'."""
        width, height = size
        self.manifest.stage("decode").update(status="done", frames=total, width=width, height=height)
        self.manifest.stage("flow").update(status="done", total=total - 1, finished=timestamp())
        redone = sorted({*self.manifest.stage("stylize").get("redone", []), *redone})
        self.manifest.update(
            "stylize", status="done", total=total, done=total, finished=timestamp(),
            **({"redone": redone} if redone else {}),
        )  # fmt: skip


def finish_placed_output(
    job: VideoJob, store: FrameStore, manifest: JobManifest, output: OutputRecord, events: JobEvents
) -> VideoResult:
    """The output is this job's: finish what a run killed after placing it left to do (the record
    that it is done, the pruning, an interrupted --clean or a new one, the leftovers)."""
    output.settle()
    folders = store.folders()
    pending = any(manifest.stage(name).get("status") == "cleaned" and folder.exists() for name, folder in folders)
    asked = job.clean and any(manifest.stage(name).get("status") != "cleaned" for name, _ in folders)
    remove_leftovers(store, job.output)
    stage = manifest.stage("encode")
    frames, audio, report = stage.get("frames", 0), stage.get("audio"), manifest.data.get("report")
    if not job.keep_frames:
        prune(store, done=frames, chunked=frames, over=True)
    if pending or asked:
        log = JobLog(job.work / "job.log")
        try:
            clean(store, manifest, log)
        finally:
            log.close()
    events.message(f"{job.output}: already done (work directory {job.work})")
    return VideoResult(job.output, job.work, frames, [], audio, already_done=True, report=report)
