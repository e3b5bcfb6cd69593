"""A video job: cut scan -> shots (decode -> flow -> stylize -> chunks, each) -> report -> output,
streamed so that the work directory stays the same size whatever the video's length, and
checkpointed so that a killed job resumes. The work directory's layout is in workdir.py; the
job itself in videojob.py; its stages' records, and what a run keeps of the runs before it, in
video_records.py; the scan that decides the shots in cuts.py and shots.py; the shots on devices
or a Dask cluster (the stylize stage) in videoshots.py; the streaming loop over a shot's frames
(decode window, flow, stylize, chunks) in videorange.py.

Each stage's hash covers everything its outputs depend on, the previous stage's hash included:
a changed style setting invalidates the stylized frames and the output but not the decoded
frames; a changed --size invalidates everything; a changed --crf the chunks and the output (and,
as the stylized frames were deleted once encoded, those too unless --keep-frames kept them). A
stylized frame counts as finished once its statistics file exists (written after the frame,
atomically), or once it is in a finished chunk. The stylized frames' records carry their flow
pair's flicker figures, so the stylize stage depends on the flow stage's settings; the flicker of
the output and of the input goes into job.json under "report", summed from those records
(flicker.job_flicker).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Iterator

from .backends import connect
from .chunks import ChunkStore, chunk_key
from .cuts import CutScan, Scan
from .decode import count_frames, frame_size, probe
from .devices import parse_devices, pick_device
from .encode import AudioInput, CommitHooks, VideoInput, encode_video, output_rate
from .errors import PipelineError, WriteError
from .flicker import job_flicker
from .flowstage import default_workers
from .images import check_long_side, load_image
from .manifest import JobManifest, WorkDirLock, timestamp
from .outputs import OutputRecord
from .report_live import LiveReport
from .report_video import JOB_FLICKER_BUDGET, write_video_report
from .settings import MIN_SCALE_SIDE, resuming_text
from .shotplan import ShotPlan
from .shotprogress import ShotProgress
from .shots import counted, runs_text
from .temporal import make_starter
from .vgg import VGG19
from .video_records import StageRecords, finish_placed_output, keep_own_defaults, stage_settings
from .videojob import JobEvents, VideoJob, VideoResult, check_paths
from .videoshots import Listener, ShotTask, stylize_shots
from .workdir import (
    KIND,
    CreatedByThisRun,
    FrameStore,
    Holding,
    JobLog,
    check_disk_space,
    clean,
    prune,
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
        check_long_side(job.input, (self.info.width, self.info.height), job.settings.size, what="its frames")
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
        # Options this run left unset keep the values the job began with, where its frames stay valid.
        self.job, self.starter, began = keep_own_defaults(self.job, self.starter, self.manifest, self.info, self.size)
        if began:
            self.events.message(f"{self.job.work}: {resuming_text(began, 'job', 'start its stylizing over')}")
        settings = stage_settings(self.job, self.info, self.size, self.starter)
        self.records = StageRecords(self.manifest, self.store, settings)
        self.hashes = self.records.hashes
        self.chunks = ChunkStore(self.job.work, chunk_key(self.hashes["stylize"], self.job.crf, self.rate))
        if self.output.is_finished(self.hashes["encode"]):
            return finish_placed_output(self.job, self.store, self.manifest, self.output, self.events)
        self.output.refuse_to_replace()
        kept = self.records.kept(self.chunks)
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
        self.records.record_inputs(self.job, self.info, self.device)
        self.records.invalidate(self.chunks, self.cut_scan, tell=self.tell, log=self.log)
        return self.stages()

    def stages(self) -> VideoResult:
        """The stages still to do, in order: the cut scan, the shots, the report, the output."""
        scan = self.scan()
        plan = self.plan(scan)
        stylized = self.stylize_shots(plan, scan)
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
        scan = self.cut_scan
        recorded = scan.recorded()
        if recorded is not None:
            return recorded
        self.events.stage("scan", total=self.estimate)
        scoring = " and scoring cuts" if scan.preset else ""
        self.log(f"scan: counting the frames{scoring} ({counted(scan.workers, 'worker')})")
        result = scan.run(self.info, self.size, self.job.frame_range, self.events.stage_progress)
        self.log(f"scan: {self.shot_plan(result).text()}")
        return result

    @functools.cached_property
    def cut_scan(self) -> CutScan:
        """The cut scan's records (cuts.py), keyed by the decode stage's hash and the job's options."""
        return CutScan.of(self.job, self.hashes["decode"], workers=self.job.flow_workers or default_workers())

    def plan(self, scan: Scan) -> ShotPlan:
        """The flashes, fades, cuts and shots (shotplan.py), into the job's record (the report marks the shots)."""
        plan = self.shot_plan(scan)
        self.manifest.stage("stylize").update(plan.record())
        if self.job.crops_bars and plan.letterbox and not plan.letterbox.cropped:
            self.log(
                f"--crop-bars: the picture between the bars is under {MIN_SCALE_SIDE} px a side: stylized with them"
            )
        return plan

    def shot_plan(self, scan: Scan) -> ShotPlan:
        """The scan's plan for this job: the bars cropped off the stylizer's frames unless kept (letterbox.py)."""
        height_width = (self.size[1], self.size[0])  # self.size is ffmpeg's (W, H)
        return ShotPlan.of(scan, self.job, crop_size=height_width if self.job.crops_bars else None)

    def stylize_shots(self, plan: ShotPlan, scan: Scan) -> list[int]:
        """The shots on the workers (videoshots.py); returns the frames this run stylized."""
        task = ShotTask(
            job=self.job, info=self.info, size=self.size, hashes=self.hashes, rate=self.rate, total=scan.total,
            run=f"{os.getpid()}-{time.time_ns()}", devices=self.devices, scan_key=self.cut_scan.key,
            starts={shot.first: scan.scores.get(shot.first, 0.0) for shot in plan.runs if shot.first > 1},
            flashes=plan.flashes, fades=plan.fades, goes_on=plan.goes_on, letterbox=plan.letterbox,
        )  # fmt: skip
        shots = list(plan.runs)
        progress = ShotProgress(self.store, self.chunks, self.hashes["stylize"], shots, reach=self.job.reach)
        listener = Listener(self.events, self.live.when_due, progress, vgg=self.vgg)
        results = stylize_shots(task, shots, self.workers, listener, self.records, self.log)
        return sorted(index for result in results for index in result.get("stylized_frames", []))

    # --- around the stages: the log, its notes, the report's key -------------------------------------

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

    def tell(self, note: str) -> None:
        """A note for the user that the log keeps too."""
        self.events.message(note)
        self.log(note)

    @property
    def report_key(self) -> dict:
        return {
            "stylize": self.hashes["stylize"],
            "flow": self.hashes["flow"],
            "scene_threshold": self.job.scene_threshold,
        }

    # --- after the loop: the report and the output ---------------------------------------------

    def report(self, total: int) -> None:
        """The flicker of the stylized frames and of the content frames into job.json's "report",
        summed from the frames' records; the shots they make under --flow dis. Once per settings:
        a rerun of a finished report has nothing new to read."""
        if (self.manifest.data.get("report") or {}).get("key") == self.report_key:
            return
        flicker = job_flicker(self.job, self.hashes["flow"], total, tell=self.tell)
        report = {"key": self.report_key, "flicker": flicker, "flow": self.job.flow, "measured": timestamp()}
        self.manifest.data["report"] = report
        self.manifest.save()
        # The pairs over the scene threshold are left out: scene cuts, a flash's way in and out, a fade's darkest,
        # fast moves.
        cuts = ", ".join(runs_text(flicker["cuts"]))
        left_out = "none left out"
        if cuts:
            left_out = f"the pairs into frames {cuts} left out (scene cuts, flashes, fades, fast moves)"
        self.log(
            f"flicker: output {flicker['output']:.4g}, input {flicker['input']:.4g} (mean masked warping error over "
            f"{counted(flicker['pairs'], 'pair')}; {left_out})"
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
            f"encode: done, {job.output} ({frames} frames at {float(self.rate):.3f} fps in "
            f"{counted(len(chunks), 'chunk')}, audio {audio or 'none'})"
        )
        return audio
