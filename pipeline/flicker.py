"""Flicker: the mean masked warping error between consecutive frames (Ruder et al. 2016, flow.py's
`warping_error`), measured from frame files on joblib workers. The video job's report measures
its stylized frames and its content frames; `stylize flicker` (`video_flicker`) two video files.

Pairs whose cut score is over the scene threshold are not measured: their flow is not motion.
`stylize flicker` tells which of them are scene cuts and which a flash (cuts.py: a change of
light of a frame or two, after which the picture is back), a fast move, a change of light or a
fade's (fades.py), by the shot plan a video job with its defaults makes (shotplan.py) of the same
scan records, computed from the reference's frame files.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from joblib import Parallel, delayed

from .cuts import Scan, colour_spans, lit_score
from .decode import VideoInfo, frame_size, probe
from .errors import InputError
from .fades import LIT_FLOOR, frame_light, light_changes
from .flow import FramePair, colour_histogram, histogram_gap, warping_error
from .flowstage import FlowStage, default_workers, read_rgb
from .framerange import ALL, FrameRange
from .framestream import extract_frames
from .shotplan import MeasureOptions, ShotPlan
from .video_defaults import (
    DEFAULT_FLASH_FRAMES,
    DEFAULT_FLOW_PRESET,
    DEFAULT_OVERLAY_SHARE,
    DEFAULT_SCENE_THRESHOLD,
    check_flow_options,
)
from .workdir import FrameStore, frame_name

if TYPE_CHECKING:  # annotations only: job_flicker reads four of the job's fields
    from .videojob import VideoJob


def pair_errors(pair_file: Path, sequences: Sequence[tuple[Path, Path]]) -> tuple[float, list[float]]:
    """A worker's task: the pair's cut score and, for each (previous, current) frame files, the
    masked warping error of current against previous warped by the pair's flow."""
    pair = FramePair.load(pair_file)
    return pair.cut_score, [warping_error(read_rgb(a), read_rgb(b), pair) for a, b in sequences]


def pair_flicker(pair: FramePair, sequences: dict[str, tuple[Path, Path]]) -> dict:
    """One pair's figures as a frame's statistics record them under "flicker" (report_video_data.py):
    each sequence's masked warping error and the pair's cut score. Read from the saved frame files,
    as measure_flicker reads them, so the job's report is the same figure whether it is summed from
    these records as frames finish or measured at the end."""
    return {name: warping_error(read_rgb(a), read_rgb(b), pair) for name, (a, b) in sequences.items()} | {
        "cut_score": pair.cut_score
    }


def summarize(results: list[tuple[float, list[float]]], names: list[str], scene_threshold: float) -> dict:
    """The mean masked warping error per sequence over the pairs (frames 2, 3, ...) that are not
    scene cuts; `results` holds each pair's (cut score, errors in the order of `names`)."""
    cuts = [i for i, (score, _) in enumerate(results, 2) if score > scene_threshold]
    # Errors of None: a pair across the seam of two segments of a shot (shots.py), not measured.
    kept = [errors for score, errors in results if score <= scene_threshold and None not in errors]
    report = {name: (float(np.mean([e[k] for e in kept])) if kept else 0.0) for k, name in enumerate(names)}
    return report | {"pairs": len(kept), "cuts": cuts, "scene_threshold": scene_threshold}


def recorded_flicker(
    records: list[dict | None], names: list[str], scene_threshold: float, *, partial: bool = False
) -> dict | None:
    """The report from per-pair records (frames 2..total, in order), or None if any is missing:
    nothing but the records is needed, no frames or flow kept to the end. `partial`: the pairs
    without a record are left out (neither measured nor cuts) and counted as "unmeasured"."""
    missing = [not record or any(name not in record for name in [*names, "cut_score"]) for record in records]
    if any(missing) and not partial:
        return None
    results = [
        (0.0, [None] * len(names)) if lacks else (record["cut_score"], [record[name] for name in names])
        for record, lacks in zip(records, missing)
    ]
    return summarize(results, names, scene_threshold) | ({"unmeasured": sum(missing)} if any(missing) else {})


def measure_flicker(
    *, flow_dir: Path, sequences: dict[str, Path], total: int, scene_threshold: float, workers: int | None = None
) -> dict:
    """The flicker of each frame sequence (name -> folder of 000001.png ...): the mean masked
    warping error over consecutive frames (the flow and masks of `flow_dir`), scene cuts skipped.
    Same figure as flow.flicker, read from files on joblib workers."""
    return summarize(pair_results(flow_dir, sequences, total, workers), list(sequences), scene_threshold)


def pair_results(
    flow_dir: Path, sequences: dict[str, Path], total: int, workers: int | None
) -> list[tuple[float, list[float]]]:
    """Each pair's (cut score, masked warping error of each sequence), frames 2..total."""
    names = list(sequences)
    tasks = (
        delayed(pair_errors)(
            Path(flow_dir) / frame_name(i, ".npz"),
            [(Path(sequences[name]) / frame_name(i - 1), Path(sequences[name]) / frame_name(i)) for name in names],
        )
        for i in range(2, total + 1)
    )
    return Parallel(n_jobs=workers or default_workers(), batch_size="auto")(tasks)


def job_flicker(job: VideoJob, flow_hash: str, total: int, tell: Callable[[str], None]) -> dict:
    """A video job's report: the flicker of its stylized frames and of its content frames, summed
    from each frame's record of its pair (frames 2..total; a record made with another flow, by
    `flow_hash`, counts as missing). Only with the frames kept (--keep-frames) are missing records
    measured from the frames; otherwise those pairs are counted as "unmeasured". `tell`: what the
    user should know (pairs left unmeasured, or a measurement that takes a while)."""
    store = FrameStore(job.work)
    records = []
    for index in range(2, total + 1):
        path = store.stats(index)
        record = json.loads(path.read_text()).get("flicker") if path.exists() else None
        records.append(record if record and record.get("flow") == flow_hash else None)
    flicker = recorded_flicker(records, ["output", "input"], job.scene_threshold, partial=not job.keep_frames)
    if flicker and flicker.get("unmeasured"):
        # Frames of a release before the per-frame records (a job resumed with the settings it
        # began with, video_records.keep_own_defaults): their content frames and flow pairs are gone.
        unmeasured = flicker["unmeasured"]
        tell(f"flicker: {unmeasured} frame pairs stylized by an earlier release have no record; not measured")
    if flicker is None:
        tell(f"measuring flicker over {total - 1} frame pairs")
        flicker = measure_flicker(
            flow_dir=store.flow_dir, sequences={"output": store.styled_dir, "input": store.frames_dir},
            total=total, scene_threshold=job.scene_threshold, workers=job.flow_workers,
        )  # fmt: skip
    return flicker


def frame_count_mismatch(
    output: tuple[Path, VideoInfo, int], reference: tuple[Path, VideoInfo, int], frames: FrameRange
) -> str:
    """One line: both files (path, probe, frame count) and which options would make them match."""
    (output, output_info, output_frames), (reference, reference_info, reference_frames) = output, reference
    ratio = reference_info.rate / output_info.rate
    step = round(ratio)
    hint = ""
    if step > 1 and step != frames.every_nth and abs(ratio - step) <= 0.01 * step:
        hint = f" (the frame rates suggest --every-nth {step})"
    return (
        f"{output}: has {output_frames} frames at {float(output_info.rate):.4g} fps, "
        f"{reference} has {reference_frames} at {float(reference_info.rate):.4g} fps "
        f"({frames.text() or 'the whole video'}); give stylize flicker the video the output was made from "
        f"and the --start, --duration and --every-nth stylize video was given{hint}"
    )


def reference_scan(
    frames_dir: Path, flow_dir: Path, scores: dict[int, float], job: MeasureOptions, workers: int | None
) -> Scan:
    """The cut scan (cuts.Scan) of the reference's frames, as `stylize video` records it, enough
    for its shot plan (shotplan.py) under `job`: each pair's cut score (`scores`, frames 2..total),
    each frame's light (the default --overlay-share's) and, where a pair's score and light
    call for it, its lit score; for the pairs over the threshold, each frame's colours against the
    frames before it and the score's two parts (and the flow's part of their neighbours')."""

    def histogram(index: int) -> np.ndarray:
        if index not in histograms:
            histograms[index] = colour_histogram(read_rgb(frames_dir / frame_name(index)))
        return histograms[index]

    total, histograms = len(scores) + 1, {}
    paths = [frames_dir / frame_name(index) for index in range(1, total + 1)]
    light = dict(enumerate(Parallel(n_jobs=workers or default_workers())(delayed(file_light)(p) for p in paths), 1))
    lit = {
        i: lit_score(read_rgb(paths[i - 2]), read_rgb(paths[i - 1]), job.flow_preset)
        for i, score in scores.items() if score > LIT_FLOOR and light_changes(light[i - 1], light[i])
    }  # fmt: skip
    over = [index for index, score in scores.items() if score > job.scene_threshold]
    near = sorted({k for index in over for k in (index - 1, index, index + 1) if 2 <= k <= total})
    pairs = {index: FramePair.load(flow_dir / frame_name(index, ".npz")) for index in near}
    # Frame i's spans: to frames i-2, i-3, ..., as the cut scan records them.
    spans = {
        i: colour_spans(histogram(i), [histogram(i - g) for g in range(2, job.flash_frames + 2) if g < i]) for i in over
    }  # fmt: skip
    colours = {i: histogram_gap(histogram(i - 1), histogram(i)) for i in over}
    unreliable = {i: pair.unreliable for i, pair in pairs.items()}
    return Scan(total, scores, spans, light, lit, colours, unreliable)


def file_light(path: Path) -> list[float]:
    """A worker's task: a frame file's light as a default job's cut scan records it (fades.frame_light)."""
    return frame_light(read_rgb(path), DEFAULT_OVERLAY_SHARE)


def check_options(preset: str, size: int | None, scene_threshold: float, flash_frames: int) -> None:
    check_flow_options(preset, scene_threshold, flash_frames)
    if size is not None and not 16 <= size <= 16384:
        raise InputError(f"--size {size}: must be between 16 and 16384 pixels")


def video_flicker(
    output: Path,
    *,
    reference: Path,
    frames: FrameRange = ALL,
    size: int | None = None,
    preset: str = DEFAULT_FLOW_PRESET,
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD,
    flash_frames: int = DEFAULT_FLASH_FRAMES,
    motion_cuts: bool = False,
    workers: int | None = None,
) -> dict:
    """`stylize flicker`: both videos decoded at the same frame size (the reference's aspect,
    `size` or the output's long side), flow and masks computed on the reference, and the mean
    masked warping error of the output and of the reference itself. The pairs over the scene
    threshold are left out: "cuts" lists the scene cuts, "flashes" the flashes of at most
    `flash_frames` frames (first, last), "moves" the fast moves (unless `motion_cuts`: cuts),
    "relit" the changes of light that are no cuts, "fades" and "blanks" the fades ([first, last,
    way]) and the runs of black or white frames ([first, last]), as `stylize video` with its
    defaults would find them.

    The reference is decoded over the part the output was made from: `frames`, the range of the
    --start, --duration and --every-nth `stylize video` was given, through the same
    extract_frames as the video job, so its frames are exactly the job's content frames. The
    output's timestamps cannot tell that part: `stylize video` writes its frames from 0 s
    whatever --start was, and a re-encoded output may have another rate; so the user says, and
    differing counts are refused."""
    check_options(preset, size, scene_threshold, flash_frames)
    output_info, reference_info = probe(output), probe(reference)
    frames.check_within(reference, reference_info.duration)
    dims = frame_size(reference_info, size or max(output_info.width, output_info.height))
    with tempfile.TemporaryDirectory(prefix="stylize-flicker-") as tmp:
        folders = {"output": Path(tmp) / "output", "input": Path(tmp) / "input"}
        counts = {
            "input": extract_frames(reference_info, folders["input"], size=dims, frames=frames),
            "output": extract_frames(output_info, folders["output"], size=dims),
        }
        if counts["output"] != counts["input"]:
            raise InputError(
                frame_count_mismatch(
                    (output, output_info, counts["output"]), (reference, reference_info, counts["input"]), frames
                )
            )
        if counts["input"] < 2:
            raise InputError(f"{reference}: one frame only ({frames.text() or 'all of it'}), no motion to measure")
        with FlowStage(
            frames_dir=folders["input"],
            flow_dir=Path(tmp) / "flow",
            total=counts["input"],
            preset=preset,
            workers=workers,
        ) as flows:
            flows.start().finish()
        results = pair_results(Path(tmp) / "flow", folders, counts["input"], workers)
        report = summarize(results, list(folders), scene_threshold)
        job = MeasureOptions(scene_threshold, flash_frames, motion_cuts, flow_preset=preset)
        scores = {index: score for index, (score, _) in enumerate(results, 2)}
        plan = ShotPlan.of(reference_scan(folders["input"], Path(tmp) / "flow", scores, job, workers), job)
    record = plan.fades.record() if plan.fades else {}
    return report | {
        "cuts": list(plan.cuts), "flashes": [[flash.first, flash.last] for flash in plan.flashes],
        "moves": list(plan.moves), "relit": list(plan.relit),
        "fades": record.get("fades", []), "blanks": record.get("blanks", []),
        "frames": counts["input"], "width": dims[0], "height": dims[1], "flow_preset": preset,
        "start": frames.start, "duration": frames.duration, "every_nth": frames.every_nth,
    }  # fmt: skip
