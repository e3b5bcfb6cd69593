"""A video job: cut scan -> shots (decode -> flow -> stylize -> chunks, each) -> report -> output,
streamed so that the work directory stays the same size whatever the video's length, and
checkpointed so that a killed job resumes. The work directory's layout is in workdir.py; the
job itself in videojob.py; the scan that decides the shots in cuts.py and shots.py; the shots on
devices or a Dask cluster in videoshots.py; the streaming loop over a shot's frames (decode
window, flow, stylize, chunks) in videorange.py.

Each stage's hash covers everything its outputs depend on, the previous stage's hash included:
a changed style setting invalidates the stylized frames and the output but not the decoded
frames; a changed --size invalidates everything; a changed --crf the chunks and the output (and,
as the stylized frames were deleted once encoded, those too unless --keep-frames kept them). A
stylized frame counts as finished once its statistics file exists (written after the frame,
atomically), or once it is in a finished chunk. The stylized frames' records carry their flow
pair's flicker figures, so the stylize stage depends on the flow stage's settings; the flicker of
the output and of the input goes into job.json under "report", summed from those records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from .backends import connect
from .chunks import ChunkStore, chunk_key
from .cuts import CutScan, Scan
from .decode import VideoInfo, count_frames, frame_size, probe
from .devices import parse_devices, pick_device
from .encode import AudioInput, CommitHooks, VideoInput, encode_video, output_rate
from .errors import PipelineError, WriteError
from .flicker import measure_flicker, recorded_flicker
from .flowstage import default_workers
from .hashing import file_fingerprint, file_sha256
from .hashing import settings_hash as hash_settings
from .images import load_image
from .manifest import JobManifest, WorkDirLock, timestamp
from .outputs import OutputRecord
from .report_live import LiveReport
from .report_video import JOB_FLICKER_BUDGET, write_video_report
from .seams import Seams
from .settings import StyleSettings, resuming_text
from .shotprogress import ShotProgress
from .shots import Shot, longest_first, plan_shots
from .temporal import WarmStart, make_starter
from .vgg import VGG19
from .video_defaults import DIS_ONLY, OWN_DEFAULTS
from .videojob import JobEvents, VideoJob, VideoResult, check_paths
from .videoshots import Listener, ShotTask, run_shots
from .workdir import (
    KIND,
    CreatedByThisRun,
    FrameStore,
    Holding,
    JobLog,
    Kept,
    check_disk_space,
    clean,
    prune,
    remove_dir,
    remove_leftovers,
)

__all__ = ["JobEvents", "VideoJob", "VideoResult", "run_video"]


def run_video(job: VideoJob, *, events: JobEvents | None = None, vgg: VGG19 | None = None) -> VideoResult:
    """Run (or resume) a video job. Bad input raises InputError before anything is changed; a
    refused job removes the folders and files it made on the way (CreatedByThisRun)."""
    created = CreatedByThisRun(job.work, job.output)  # before check_paths makes the output's and work folders
    with created.directories_removed_on_refusal():
        run = VideoRun(job, events or JobEvents(), vgg)
        with WorkDirLock(job.work), created.own_files_removed_on_refusal():
            return run.run()


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
    # The flow is computed on the decoded frames: their size comes with the decode hash. The
    # stylize stage depends on it whatever the starter: each frame's record holds its pair's
    # flicker figures, and the frames they were measured on are gone once the job moves on.
    flow = {
        "decode": hash_settings(decode),
        "flow_method": "dis",
        "flow_preset": job.flow_preset,
        "frame_size": list(size),
    }
    stylize = {
        "decode": hash_settings(decode),
        "flow": hash_settings(flow),
        **job.settings.checkpoint_dict(),
        "styles": [file_hash(p) for p in job.styles],
        "init_image": file_hash(job.init_path) if job.init_path else None,
        **starter.settings(),
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
    have theirs, the starter's plan the ones the job resolves (such as the first frame's iterations)."""
    return {
        name: getattr(job.settings if name in STYLE_FIELDS else starter.plan, name) for name in OWN_DEFAULTS
    }  # fmt: skip


class VideoRun:
    """One run of a video job. What every stage needs is on self: the job, its probed input and
    frame size, the frame starter, the frame store, and once the work directory is locked the
    manifest, each stage's settings and hash, the chunks and the log."""

    manifest: JobManifest
    output: OutputRecord
    log: JobLog

    def __init__(self, job: VideoJob, events: JobEvents, vgg: VGG19 | None):
        """Everything that can be checked before the work directory is locked."""
        self.job, self.events, self.vgg = job, events, vgg
        # Local: the devices the shots run on (the first also builds the starter, for its settings).
        self.devices = tuple(str(d) for d in parse_devices(job.device)) if job.backend == "local" else None
        self.device = pick_device(self.devices[0] if self.devices else "auto")
        self.info = probe(job.input)
        job.frame_range.check_within(job.input, self.info.duration)
        check_paths(job)
        self.size = frame_size(self.info, job.settings.size)
        init_image = load_image(job.init_path) if job.init_path else None
        self.starter = make_starter(job, self.size, init_image=init_image, device=self.device)
        self.store = FrameStore(job.work)
        self.estimate = count_frames(self.info, job.frame_range)
        # The output's rate: from the probed count, as the chunks are encoded before the decode
        # has counted the frames (exact for constant-rate sources; encode.output_rate).
        self.rate = output_rate(self.info, self.estimate, job.frame_range)

    def run(self) -> VideoResult:
        """In the locked work directory: what is left of the job, after checking that the disk
        holds it. Nothing is deleted before every check has passed."""
        self.manifest = JobManifest(self.job.work, KIND)
        self.output = OutputRecord(self.manifest, self.job.output, overwrite=self.job.overwrite)
        self.keep_own_defaults()
        self.settings = stage_settings(self.job, self.info, self.size, self.starter)
        self.hashes = {name: hash_settings(values) for name, values in self.settings.items()}
        self.chunks = ChunkStore(self.job.work, chunk_key(self.hashes["stylize"], self.job.crf, self.rate))
        if self.output.is_finished(self.hashes["encode"]):
            return self.already_done()
        self.output.refuse_to_replace()
        kept = self.kept()
        total = self.manifest.stage("decode").get("frames") if kept.decoded else None
        frames = total or self.estimate
        with connect(self.job.backend, self.devices, self.job.scheduler) as self.workers:
            holding = Holding(
                keep_frames=self.job.keep_frames, shots_at_once=self.workers.count, held=self.job.held_frames(frames)
            )
            disk = check_disk_space(self.store, kept, frames, self.size, holding)
            with self.logged(), self.live.last_page(lambda: JOB_FLICKER_BUDGET):
                return self.stages_after_checks(disk)

    def stages_after_checks(self, disk: str) -> VideoResult:
        """Every check passed: from here on, the run changes the work directory."""
        self.log(f"disk: {disk}")
        remove_leftovers(self.store, self.job.output)
        self.record_inputs()
        self.invalidate()
        return self.stages()

    def stages(self) -> VideoResult:
        """The stages still to do, in order: the cut scan, the shots, the report, the output."""
        scan = self.scan()
        shots = self.plan(scan)
        stylized = self.stylize_shots(shots, scan)
        if not self.report_current():
            self.report(scan.total)
        audio = self.encode(scan.total)
        self.live.finish(JOB_FLICKER_BUDGET)  # before the last frames its thumbnails come from go
        if not self.job.keep_frames:
            prune(self.store, done=scan.total, chunked=scan.total, over=True)
        if self.job.clean:
            clean(self.store, self.manifest, self.log)
        return VideoResult(
            self.job.output, self.job.work, scan.total, stylized, audio, report=self.manifest.data.get("report"),
            report_page=self.job.work / "report.html",
        )  # fmt: skip

    def scan(self) -> Scan:
        """Every frame of the range counted and, under --flow dis, every pair's cut score, before
        any frame is stylized (cuts.py): the shots are known before they start."""
        scan = self.cut_scan()
        recorded = scan.recorded()
        if recorded is not None:
            return recorded
        self.events.stage("scan", total=self.estimate)
        self.log(f"scan: counting the frames{' and scoring cuts' if scan.preset else ''} ({scan.workers} workers)")
        result = scan.run(self.info, self.size, self.job.frame_range, self.events.stage_progress)
        cuts = result.cuts(self.job.scene_threshold) if scan.preset else []
        self.log(f"scan: {result.total} frames, {len(cuts)} scene cuts{' at ' + str(cuts) if cuts else ''}")
        return result

    def cut_scan(self) -> CutScan:
        preset = self.job.flow_preset if self.starter.uses_flow else None
        key = hash_settings({"decode": self.hashes["decode"], "flow_preset": preset})
        return CutScan(self.job.work, key=key, preset=preset, workers=self.job.flow_workers or default_workers())

    def plan(self, scan: Scan) -> list[Shot]:
        """The shots: at the scan's cuts under --flow dis (else the range is one shot: a frame of
        --flow none starts from the one before, whatever it shows), long ones split into
        segments by --max-shot-frames. The job's record keeps both (the report marks the shots)."""
        job, stage = self.job, self.manifest.stage("stylize")
        cuts = scan.cuts(job.scene_threshold) if self.starter.uses_flow else []
        shots = plan_shots(cuts, scan.total)
        if self.starter.uses_flow:
            stage["shots"] = [[shot.first, shot.last] for shot in shots]
        if not job.max_shot_frames:
            return shots
        segments = plan_shots(cuts, scan.total, max_frames=job.max_shot_frames, overlap=job.segment_overlap)
        stage["segments"] = [[shot.first, shot.last] for shot in segments]
        return segments

    def stylize_shots(self, shots: list[Shot], scan: Scan) -> list[int]:
        """The shots not finished yet, longest first, on the workers (videoshots.py); the stages'
        records once at the start and once at the end, never per frame."""
        total = scan.total
        progress = ShotProgress(self.store, self.chunks, self.hashes["stylize"], shots, reach=self.job.reach)
        for name in ("decode", "flow"):
            if self.manifest.stage(name).get("status") != "done":
                self.manifest.stage(name).update(status="running", started=timestamp())
        self.manifest.stage("decode").update(frames=total)
        self.manifest.update("stylize", status="running", total=total, done=progress.done)
        if not self.job.keep_frames:
            progress.prune()
        todo = longest_first(shot for shot in shots if not progress.finished(shot))
        self.events.stage("stylize", total=total, done=progress.done)
        self.log(
            f"stylize: {progress.done} of {total} frames finished before; {len(todo)} of {len(shots)} shots to do "
            f"on {self.workers.count} {'Dask workers' if self.job.backend == 'dask' else 'devices'}"
        )
        task = ShotTask(
            job=self.job, info=self.info, size=self.size, hashes=self.hashes, rate=self.rate, total=total,
            run=f"{os.getpid()}-{time.time_ns()}", devices=self.devices, scan_key=self.cut_scan().key,
            starts={shot.first: scan.scores.get(shot.first, 0.0) for shot in shots if shot.first > 1},
        )  # fmt: skip
        results = []
        try:
            listener = Listener(self.events, self.live.when_due, progress, vgg=self.vgg)
            results = run_shots(task, todo, self.workers, listener)
            remove_leftovers(self.store, self.job.output)  # of a Dask worker that died mid-write
            Seams(
                self.job.work, self.chunks, self.hashes["stylize"], rate=self.rate, crf=self.job.crf,
                keep=self.job.keep_frames,
            ).make_missing(shots)  # fmt: skip
        finally:
            # One record of how far it got, also when stopped (Ctrl-C, an error): `stylize status`.
            if self.manifest.stage("stylize").get("status") != "done":
                with contextlib.suppress(WriteError):
                    self.manifest.update("stylize", done=progress.count())
        self.shots_finished(total, results)
        return sorted(index for result in results for index in result.get("stylized_frames", []))

    def shots_finished(self, total: int, results: list[dict]) -> None:
        """Every frame is stylized and every chunk encoded."""
        width, height = self.size
        self.manifest.stage("decode").update(status="done", frames=total, width=width, height=height)
        self.manifest.stage("flow").update(status="done", total=total - 1, finished=timestamp())
        redone = sorted({*self.manifest.stage("stylize").get("redone", []), *(i for r in results for i in r["redone"])})
        self.manifest.update(
            "stylize", status="done", total=total, done=total, finished=timestamp(),
            **({"redone": redone} if redone else {}),
        )  # fmt: skip
        self.log(f"stylize: done, {total} frames ({sum(r['stylized'] for r in results)} by this run)")

    # --- before the stages: what is done, what is still valid ----------------------------------

    def already_done(self) -> VideoResult:
        """The output is this job's: finish what a run killed after placing it left to do (the
        record that it is done, the pruning, an interrupted --clean or a new one, the leftovers)."""
        self.output.settle()
        folders = self.store.folders()
        pending = any(
            self.manifest.stage(name).get("status") == "cleaned" and folder.exists() for name, folder in folders
        )
        asked = self.job.clean and any(self.manifest.stage(name).get("status") != "cleaned" for name, _ in folders)
        remove_leftovers(self.store, self.job.output)
        stage = self.manifest.stage("encode")
        frames, audio, report = stage.get("frames", 0), stage.get("audio"), self.manifest.data.get("report")
        if not self.job.keep_frames:
            prune(self.store, done=frames, chunked=frames, over=True)
        if pending or asked:
            log = JobLog(self.job.work / "job.log")
            try:
                clean(self.store, self.manifest, log)
            finally:
                log.close()
        self.events.message(f"{self.job.output}: already done (work directory {self.job.work})")
        return VideoResult(self.job.output, self.job.work, frames, [], audio, already_done=True, report=report)

    def keep_own_defaults(self) -> None:
        """A job begun under other defaults (a release changed them since, video_defaults.OWN_DEFAULTS)
        resumes with the values it began with for the options this run left unset, where that
        leaves its stylize stage's settings as recorded: its stylized frames stay valid. Any other
        change starts the stage over under this release's defaults."""
        recorded = self.manifest.stage("stylize").get("settings")
        if not recorded or not self.job.defaulted:
            return
        # --flow dis's own options are refused with another --flow (video_defaults.DIS_ONLY).
        names = [name for name in self.job.defaulted if self.job.flow == "dis" or name not in DIS_ONLY]
        implied = {name: recorded.get(name, OWN_DEFAULTS[name]) for name in names}
        own = {name: value for name, value in implied.items() if value is not None}
        style = {name: own.pop(name) for name in STYLE_FIELDS & own.keys()}
        job = dataclasses.replace(self.job, settings=dataclasses.replace(self.job.settings, **style), **own)
        starter = make_starter(job, self.size, init_image=self.starter.init_image, device=self.device)
        if self.manifest.changed_settings("stylize", stage_settings(job, self.info, self.size, starter)["stylize"]):
            return
        # What differs from this run's: the options as they were given, and as they are now.
        before, now = own_options(job, starter), own_options(self.job, self.starter)
        kept = {name: (before[name], now[name]) for name in OWN_DEFAULTS if before[name] != now[name]}
        if kept:
            self.events.message(f"{self.job.work}: {resuming_text(kept, 'job', 'start its stylizing over')}")
        self.job, self.starter = job, starter

    def current(self, name: str) -> bool:
        """Whether the stage's record is for the current settings, and its folder not cleaned."""
        return (
            self.manifest.is_current(name, self.hashes[name]) and self.manifest.stage(name).get("status") != "cleaned"
        )

    def kept(self) -> Kept:
        """Which stages' outputs stay valid, and how far they got."""
        stylized = self.current("stylize")
        chunks = self.chunks.done() if stylized else []
        return Kept(
            decoded=self.current("decode"), flow=self.current("flow"), stylized=stylized,
            chunks=not self.chunks.stale(), chunked=sum(chunk.frames for chunk in chunks),
        )  # fmt: skip

    @contextlib.contextmanager
    def logged(self) -> Iterator[None]:
        """The job's files from here on: job.json first (the folder is now a job's), then the log,
        which gets the reason whenever the run stops."""
        if not self.manifest.path.exists():
            self.manifest.save()
        self.log = JobLog(self.job.work / "job.log")
        # WORK/report.html, kept current from the stylize loop and written once more at the end.
        self.live = LiveReport(
            lambda running, budget: write_video_report(self.job.work, running=running, flicker_budget=budget),
            budget=JOB_FLICKER_BUDGET, warn=lambda message: self.log(f"warning: {message}"),
        )  # fmt: skip
        try:
            yield
        except BaseException as exc:
            with contextlib.suppress(WriteError):  # on a full disk, the error itself says why
                self.log(f"stopped: {type(exc).__name__}: {exc}".rstrip(": "))
            raise
        finally:
            self.log.close()

    def record_inputs(self) -> None:
        job = self.job
        self.manifest.data["inputs"] = {
            "video": str(job.input.resolve()),
            "styles": [str(p.resolve()) for p in job.styles],
            "init": str(job.init_path.resolve()) if job.init_path else None,
            "output": str(job.output.resolve()),
        }
        self.manifest.data["video"] = self.info.to_dict()
        self.manifest.data["device"] = str(self.device)

    def invalidate(self) -> None:
        """Each stage whose settings changed (or whose folder was cleaned) starts over: its
        folder goes, its record is reset to the new settings. Chunks of other settings go too."""
        folders = dict(self.store.folders())
        for name in ("decode", "flow", "stylize", "encode"):
            if self.current(name):
                continue
            folder = folders.get(name)
            changed = [
                k for k in self.manifest.changed_settings(name, self.settings[name]) if k not in ("decode", "stylize")
            ]
            if self.manifest.stage(name).get("hash") and changed:
                discarded = f"; discarding {folder.name}/" if folder is not None and folder.exists() else ""
                note = f"{name}: settings changed ({', '.join(changed)}){discarded}"
                self.events.message(note)
                self.log(note)
            if folder is not None:
                remove_dir(folder)
            self.manifest.reset(name, self.hashes[name], self.settings[name])
        if self.chunks.stale():
            self.log("chunks: made with other settings; discarding chunks/")
            remove_dir(self.chunks.dir)
        if self.cut_scan().stale():
            remove_dir(self.cut_scan().dir)
        if not self.current("stylize"):
            remove_dir(self.job.work / "shots")  # the shots' records: of the frames just discarded
        self.manifest.save()

    @property
    def report_key(self) -> dict:
        return {
            "stylize": self.hashes["stylize"],
            "flow": self.hashes["flow"],
            "scene_threshold": self.job.scene_threshold,
        }

    def report_current(self) -> bool:
        return (self.manifest.data.get("report") or {}).get("key") == self.report_key

    # --- after the loop: the report and the output ---------------------------------------------

    def flicker_records(self, total: int) -> list[dict | None]:
        """Each frame's record of its pair's flicker (frames 2..total); None where missing or made
        with another flow. Read once, at the end of the job."""
        records = []
        for index in range(2, total + 1):
            path = self.store.stats(index)
            record = json.loads(path.read_text()).get("flicker") if path.exists() else None
            records.append(record if record and record.get("flow") == self.hashes["flow"] else None)
        return records

    def report(self, total: int) -> None:
        """The flicker of the stylized frames and of the content frames into job.json's "report",
        summed from the frames' records; the shots they make under --flow dis."""
        job, records = self.job, self.flicker_records(total)
        flicker = recorded_flicker(records, ["output", "input"], job.scene_threshold, partial=not job.keep_frames)
        if flicker and flicker.get("unmeasured"):
            # Frames of a release before the per-frame records (a job resumed with the settings it
            # began with, keep_own_defaults): their content frames and flow pairs are gone.
            unmeasured = flicker["unmeasured"]
            note = f"flicker: {unmeasured} frame pairs stylized by an earlier release have no record; not measured"
            self.events.message(note)
            self.log(note)
        if flicker is None:
            self.events.message(f"measuring flicker over {total - 1} frame pairs")
            flicker = measure_flicker(
                flow_dir=self.store.flow_dir,
                sequences={"output": self.store.styled_dir, "input": self.store.frames_dir},
                total=total, scene_threshold=job.scene_threshold, workers=job.flow_workers,
            )  # fmt: skip
        self.manifest.data["report"] = {
            "key": self.report_key,
            "flicker": flicker,
            "flow": job.flow,
            "measured": timestamp(),
        }
        self.manifest.save()
        self.log(
            f"flicker: output {flicker['output']:.4g}, input {flicker['input']:.4g} (mean masked warping error over "
            f"{flicker['pairs']} pairs; scene cuts at {flicker['cuts'] or 'none'})"
        )

    def encode(self, frames: int) -> str | None:
        """The chunks joined into the output (stream copy), with the audio of the whole range."""
        job, info, done = self.job, self.info, self.chunks.done()
        covered = self.chunks.chunked_from(1, frames, done)
        if covered != frames:
            raise PipelineError(f"{self.chunks.dir}: no chunk of frame {covered + 1} on; run again")
        done = [chunk for chunk in done if chunk.last <= frames]
        chunks = [self.chunks.video(chunk.first) for chunk in done]
        self.events.stage("encode", total=frames)
        ranges = [[chunk.first, chunk.last] for chunk in done]  # the report marks their starts
        self.manifest.update("encode", status="running", started=timestamp(), chunks=ranges)
        # The record first, then the rename (outputs.py): a kill right after the rename leaves an
        # output the next run knows, by fingerprint, as its own.
        audio = encode_video(
            VideoInput(chunks, self.rate), job.output, crf=job.crf,
            audio=AudioInput(job.input, info.audio, job.frame_range),
            on_progress=self.events.stage_progress,
            commit=CommitHooks(
                before=lambda finished, audio: self.output.placing(finished, frames=frames, audio=audio),
                after=self.output.placed,
            ),
        )  # fmt: skip
        self.log(
            f"encode: done, {job.output} ({frames} frames at {float(self.rate):.3f} fps in {len(chunks)} chunks, "
            f"audio {audio or 'none'})"
        )
        return audio
