"""A video job: decode -> flow -> stylize -> report -> encode, each stage checkpointed so that a
killed job resumes. The work directory's layout is in workdir.py; the job itself in videojob.py.

Each stage's hash covers everything its outputs depend on, the previous stage's hash included:
a changed style setting invalidates the stylized frames and the output but not the decoded
frames; a changed --size invalidates everything; a changed --crf only the output. A stylized
frame counts as finished once its statistics file exists (written after the frame, atomically).
The flow stage depends on the decoded frames and its DIS preset; the stylize stage depends on the
flow stage only under --flow dis. The flow pairs are computed on CPU workers while the frames are
stylized (flowstage.py). Once frames and flow are complete, the flicker of the output and of the
input (flicker.py) goes into job.json under "report".
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from .decode import VideoInfo, count_frames, extract_frames, frame_size, probe
from .devices import pick_device
from .encode import encode_video, output_rate
from .errors import WriteError
from .flicker import measure_flicker, pair_flicker, recorded_flicker
from .flowstage import FlowStage
from .hashing import file_fingerprint, file_sha256
from .hashing import settings_hash as hash_settings
from .images import load_image, load_styles, save_image
from .manifest import JobManifest, WorkDirLock, timestamp, write_json
from .outputs import OutputRecord
from .stylize import StyleResult, Stylizer
from .temporal import FrameStart, Pairs, WarmStart, make_starter, redo_if_stalled
from .vgg import VGG19
from .videojob import JobEvents, VideoJob, VideoResult, check_paths
from .workdir import (
    KIND,
    CreatedByThisRun,
    FrameStore,
    JobLog,
    Kept,
    check_disk_space,
    clean,
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
    # The flow is computed on the decoded frames: their size comes with the decode hash.
    flow = {
        "decode": hash_settings(decode),
        "flow_method": "dis",
        "flow_preset": job.flow_preset,
        "frame_size": list(size),
    }
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


class VideoRun:
    """One run of a video job. What every stage needs is on self: the job, its probed input and
    frame size, the frame starter, the frame store, and once the work directory is locked the
    manifest, each stage's settings and hash, and the log."""

    manifest: JobManifest
    output: OutputRecord
    log: JobLog

    def __init__(self, job: VideoJob, events: JobEvents, vgg: VGG19 | None):
        """Everything that can be checked before the work directory is locked."""
        self.job, self.events, self.vgg = job, events, vgg
        self.device = pick_device(job.device)
        self.info = probe(job.input)
        job.frame_range.check_within(job.input, self.info.duration)
        check_paths(job)
        self.size = frame_size(self.info, job.settings.size)
        init_image = load_image(job.init_path) if job.init_path else None
        self.starter = make_starter(job, init_image=init_image, device=self.device)
        self.store = FrameStore(job.work)

    def run(self) -> VideoResult:
        """In the locked work directory: what is left of the job, after checking that the disk
        holds it. Nothing is deleted before every check has passed."""
        self.manifest = JobManifest(self.job.work, KIND)
        self.output = OutputRecord(self.manifest, self.job.output, overwrite=self.job.overwrite)
        self.settings = stage_settings(self.job, self.info, self.size, self.starter)
        self.hashes = {name: hash_settings(values) for name, values in self.settings.items()}
        if self.output.is_finished(self.hashes["encode"]):
            return self.already_done()
        self.output.refuse_to_replace()
        kept = self.kept()
        expected = (
            self.manifest.stage("decode")["frames"] if kept.decoded else count_frames(self.info, self.job.frame_range)
        )
        check_disk_space(self.store, kept, expected, self.size)
        with self.logged():
            remove_leftovers(self.store, self.job.output)
            self.record_inputs()
            self.invalidate()
            return self.stages(kept)

    def stages(self, kept: Kept) -> VideoResult:
        """The stages still to do, in order."""
        stylized = []
        if not (kept.stylize_complete and self.report_current()):
            if not kept.decoded:
                self.decode()
            with self.flow() as flows:
                if not kept.stylize_complete:
                    stylized = self.stylize(flows.wait)
                self.finish_flow(flows)
            self.report()
        frames = self.manifest.stage("stylize")["total"]
        audio = self.encode(frames)
        if self.job.clean:
            clean(self.store, self.manifest, self.log)
        return VideoResult(
            self.job.output, self.job.work, frames, stylized, audio, report=self.manifest.data.get("report")
        )

    # --- before the stages: what is done, what is still valid ----------------------------------

    def already_done(self) -> VideoResult:
        """The output is this job's: finish what a run killed after placing it left to do (the
        record that it is done, an interrupted --clean or a new one, the leftovers)."""
        self.output.settle()
        folders = self.store.folders()
        pending = any(
            self.manifest.stage(name).get("status") == "cleaned" and folder.exists() for name, folder in folders
        )
        asked = self.job.clean and any(self.manifest.stage(name).get("status") != "cleaned" for name, _ in folders)
        remove_leftovers(self.store, self.job.output)
        if pending or asked:
            log = JobLog(self.job.work / "job.log")
            try:
                clean(self.store, self.manifest, log)
            finally:
                log.close()
        self.events.message(f"{self.job.output}: already done (work directory {self.job.work})")
        stage = self.manifest.stage("encode")
        frames, audio, report = stage.get("frames", 0), stage.get("audio"), self.manifest.data.get("report")
        return VideoResult(self.job.output, self.job.work, frames, [], audio, already_done=True, report=report)

    def current(self, name: str) -> bool:
        """Whether the stage's record is for the current settings, and its folder not cleaned."""
        return (
            self.manifest.is_current(name, self.hashes[name]) and self.manifest.stage(name).get("status") != "cleaned"
        )

    def kept(self) -> Kept:
        """Which stages' outputs stay valid, and how far they got."""
        stylize, decode = self.manifest.stage("stylize"), self.manifest.stage("decode")
        stylized = self.current("stylize")
        complete = stylized and stylize.get("status") == "done" and self.store.styled_count() == stylize.get("total")
        decoded = (
            self.manifest.is_current("decode", self.hashes["decode"])
            and decode.get("status") == "done"
            and self.store.decoded_count() == decode.get("frames")
        )
        flow = self.current("flow")
        return Kept(
            decoded=decoded, flow=flow, stylized=stylized, stylize_complete=complete,
            styled_done=stylize.get("done", 0) if stylized else 0, pairs_done=self.store.pair_count() if flow else 0,
        )  # fmt: skip

    @contextlib.contextmanager
    def logged(self) -> Iterator[None]:
        """The job's files from here on: job.json first (the folder is now a job's), then the log,
        which gets the reason whenever the run stops."""
        if not self.manifest.path.exists():
            self.manifest.save()
        self.log = JobLog(self.job.work / "job.log")
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
        folder goes, its record is reset to the new settings."""
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

    # --- the stages --------------------------------------------------------------------------

    def decode(self) -> None:
        job, (width, height) = self.job, self.size
        expected = count_frames(self.info, job.frame_range)
        self.events.stage("decode", total=expected)
        self.manifest.update("decode", status="running", started=timestamp())
        self.log(f"decode: {job.input} -> frames/ at {width}x{height}, about {expected} frames")
        count = extract_frames(
            self.info,
            self.store.frames_dir,
            size=self.size,
            frames=job.frame_range,
            on_progress=self.events.stage_progress,
        )
        self.manifest.update("decode", status="done", frames=count, width=width, height=height, finished=timestamp())
        self.log(f"decode: done, {count} frames")

    def flow(self) -> FlowStage:
        """Start computing the missing flow pairs in the background; its `wait` gives each pair."""
        job, total = self.job, self.manifest.stage("decode")["frames"]
        flows = FlowStage(
            frames_dir=self.store.frames_dir,
            flow_dir=self.store.flow_dir,
            total=total,
            preset=job.flow_preset,
            workers=job.flow_workers,
        )
        flows.start()
        missing = total - 1 - len(flows.ready_before)
        if missing:
            self.manifest.update("flow", status="running", total=total - 1, started=timestamp())
            self.log(
                f"flow: {len(flows.ready_before)} of {total - 1} pairs there before, {missing} to compute "
                f"(DIS {job.flow_preset}, {flows.workers} workers)"
            )
        return flows

    def finish_flow(self, flows: FlowStage) -> None:
        """Wait for the last pairs; record the scene cuts, and the shots they made under --flow dis."""
        scores = flows.finish()
        cuts = [index for index, score in scores.items() if score > self.job.scene_threshold]
        if self.manifest.stage("flow").get("status") != "done":
            self.manifest.update("flow", status="done", total=flows.total - 1, finished=timestamp())
            self.log(f"flow: done, {flows.total - 1} pairs ({len(flows.computed)} computed by this run)")
        if self.starter.uses_flow:
            # Each shot is [first frame, last frame]; a cut at frame i ends a shot at i-1.
            firsts = [1, *cuts]
            self.manifest.update("stylize", shots=[[a, b - 1] for a, b in zip(firsts, [*cuts, flows.total + 1])])

    def stylize(self, pairs: Pairs) -> list[int]:
        """Stylize every unfinished frame in order; return the indices stylized by this call."""
        total = self.manifest.stage("decode")["frames"]
        self.store.styled_dir.mkdir(exist_ok=True)
        recorded = self.manifest.stage("stylize").get("done", 0)
        done = self.store.finished_count(total, recorded, self.hashes["stylize"])
        self.manifest.update("stylize", status="running", total=total, done=done)
        self.events.stage("stylize", total=total, done=done)
        if done == total:
            self.manifest.update("stylize", status="done", finished=timestamp())
            return []
        self.log(f"stylize: {done} of {total} frames finished before, starting at frame {done + 1}")
        settings = self.job.settings
        # One Stylizer per job: the network is loaded and the style targets computed once.
        styles = load_styles(self.job.styles, settings)
        stylizer = Stylizer(styles, settings, device=self.device, vgg=self.vgg)
        previous = load_image(self.store.styled(done)) if done else None
        for index in range(done + 1, total + 1):
            self.stylize_frame(stylizer, index, total, previous, pairs)
            # The next frame starts from this one as saved, so a resumed run starts from the same image.
            previous = load_image(self.store.styled(index))
        self.manifest.update("stylize", status="done", finished=timestamp())
        return list(range(done + 1, total + 1))

    def stylize_frame(
        self, stylizer: Stylizer, index: int, total: int, previous: torch.Tensor | None, pairs: Pairs
    ) -> None:
        content = load_image(self.store.content(index))
        start = self.starter.start(index, content, previous, pairs)
        self.events.frame_started(index, start.iterations)
        began = time.perf_counter()
        result = stylizer.stylize(
            content, init=start.init, iterations=start.iterations, extra_losses=start.extra_losses,
            callback=self.events.iteration, stop_tolerance=start.stop_tolerance, stop_window=start.stop_window,
        )  # fmt: skip
        result, redone = redo_if_stalled(stylizer, content, start, result, self.recorded_loss(index - 1))
        seconds = time.perf_counter() - began
        save_image(result.image, self.store.styled(index))
        stats = self.frame_stats(index, start, result, seconds) | ({"redone": True} if redone else {})
        if index > 1:
            stats["flicker"] = self.pair_record(index, pairs(index))
        # The statistics file is the frame's commit record: written last, atomically.
        write_json(self.store.stats(index), stats)
        self.log(
            f"frame {index:06d}/{total:06d} start={start.source} iterations={result.iterations} "
            f"loss={stats['loss']:.5g} "
            + " ".join(f"{k}={v:.4g}" for k, v in stats["terms"].items())
            + f" seconds={seconds:.2f}"
        )
        redone_frames = sorted({*self.manifest.stage("stylize").get("redone", []), *([index] if redone else [])})
        self.manifest.update("stylize", done=index, **({"redone": redone_frames} if redone_frames else {}))
        self.events.frame_finished(index, stats)

    def recorded_loss(self, index: int) -> float | None:
        """Frame `index`'s final loss as its statistics record it (None before the first frame)."""
        path = self.store.stats(index)
        return json.loads(path.read_text()).get("loss") if index >= 1 and path.exists() else None

    def pair_record(self, index: int, pair) -> dict:
        """The pair (index - 1, index)'s flicker figures, recorded with the frame as it finishes so
        the report needs no frames or flow kept to the end; the flow hash says which flow made them."""
        store = self.store
        sequences = {
            "output": (store.styled(index - 1), store.styled(index)),
            "input": (store.content(index - 1), store.content(index)),
        }
        return pair_flicker(pair, sequences) | {"flow": self.hashes["flow"]}

    def recorded_report(self, total: int) -> dict | None:
        """The report summed from the frames' per-pair records; None if any is missing or was
        made with another flow (then the report is measured from the files)."""
        records = []
        for index in range(2, total + 1):
            path = self.store.stats(index)
            record = json.loads(path.read_text()).get("flicker") if path.exists() else None
            records.append(record if record and record.get("flow") == self.hashes["flow"] else None)
        return recorded_flicker(records, ["output", "input"], self.job.scene_threshold)

    def frame_stats(self, index: int, start: FrameStart, result: StyleResult, seconds: float) -> dict:
        final = result.final_terms
        return {
            "frame": index,
            "stage_hash": self.hashes["stylize"],
            "start": start.source,
            **start.stats,
            "iterations": result.iterations,
            "loss": final.get("loss"),
            "terms": {k: v for k, v in final.items() if k != "loss"},
            "loss_history": [record["loss"] for record in result.history],
            "seconds": round(seconds, 3),
            "device": str(self.device),
            "finished": timestamp(),
        }

    def report(self) -> None:
        """The flicker of the stylized frames and of the content frames into job.json's "report"."""
        job, total = self.job, self.manifest.stage("decode")["frames"]
        flicker = self.recorded_report(total)
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
        job, info = self.job, self.info
        rate = output_rate(info, frames, job.frame_range)
        self.events.stage("encode", total=frames)
        self.manifest.update("encode", status="running", started=timestamp())
        # The record first, then the rename (outputs.py): a kill right after the rename leaves an
        # output the next run knows, by fingerprint, as its own.
        audio = encode_video(
            self.store.styled_dir, job.output, frame_rate=rate, crf=job.crf,
            audio_source=job.input if info.audio else None, audio=info.audio, trim=job.frame_range,
            on_progress=self.events.stage_progress,
            before_commit=lambda finished, audio: self.output.placing(finished, frames=frames, audio=audio),
            after_commit=self.output.placed,
        )  # fmt: skip
        self.log(f"encode: done, {job.output} ({frames} frames at {float(rate):.3f} fps, audio {audio or 'none'})")
        return audio
