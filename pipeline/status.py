"""`stylize status`: what a job has done, what remains, and its settings, for either kind of job
(a video job's work directory, a photo archive's output directory)."""

from __future__ import annotations

import textwrap
from datetime import datetime
from fractions import Fraction
from pathlib import Path

from . import archive_status
from .errors import InputError
from .fades import record_texts, scene_cuts
from .letterbox import bars_text
from .manifest import JobManifest, WorkDirLock, read_json
from .outputs import output_is_recorded
from .shots import at_frames, counted, frames_text, read_shot_records, runs_text
from .workdir import STAGES, FrameStore, human_bytes, is_work_dir


def status_lines(work_dir: Path | str) -> list[str]:
    """What `stylize status` prints for a job's directory."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        raise InputError(f"{work_dir}: not a directory")
    if is_work_dir(work_dir):
        return video_status_lines(work_dir)
    if archive_status.is_archive(work_dir):  # the output directory of `stylize images`
        return archive_status.status_lines(work_dir)
    raise InputError(f"{work_dir}: not the work directory of a stylize job (no job.json)")


def video_status_lines(work_dir: Path) -> list[str]:
    """What `stylize status` prints for a video work directory."""
    data = read_json(work_dir / JobManifest.FILE)
    holder = WorkDirLock.holder(work_dir)
    inputs = data.get("inputs") or {}
    lines = [f"video job in {work_dir}: " + (f"running (process {holder})" if holder else "not running")]
    if data.get("video"):
        lines.append(input_line(inputs.get("video"), data["video"]))
    lines.append(f"output: {inputs.get('output')}")
    lines.append(f"work directory: {human_bytes(tree_bytes(work_dir))} on disk (frames, flow pairs, chunks, records)")
    store = FrameStore(work_dir)
    chunks = chunk_line(store)
    if chunks:
        lines.append(chunks)
    for name in STAGES:
        stage = data.get("stages", {}).get(name, {})
        status = stage_status(name, stage, data, store, running=bool(holder))
        settings = f" (settings {stage['hash']})" if stage.get("hash") else ""
        lines.append(f"{name}: {status}{stage_detail(name, stage, status, store)}{settings}")
    lines += shot_lines(work_dir, data, store, running=bool(holder))
    lines += settings_lines(shown_settings(data.get("stages", {})))
    flicker = (data.get("report") or {}).get("flicker")
    if flicker:
        lines.append(flicker_line(flicker))
    return lines


MAX_SHOT_LINES = 40


def flicker_line(flicker: dict) -> str:
    """A job report's flicker in one line, as `stylize video` and `stylize status` show it. Its
    "cuts" are the pairs it left out: over the scene threshold, a scene cut's, a flash's, a fast move's."""
    count = len(flicker.get("cuts") or [])
    left_out = f", {counted(count, 'pair')} across scene cuts, flashes, fades or fast moves left out" if count else ""
    return (
        f"flicker: output {flicker['output']:.4g}, input {flicker['input']:.4g} "
        f"(mean masked warping error over {counted(flicker['pairs'], 'frame pair')}{left_out})"
    )


def shot_lines(work_dir: Path, data: dict, store: FrameStore, *, running: bool) -> list[str]:
    """Each shot (videoshots.py): its frames, its state, frames finished, and where it ran."""
    records = {record.get("first"): record for record in read_shot_records(work_dir)}
    stage = data.get("stages", {}).get("stylize", {})
    planned = {first: last for first, last in stage.get("segments") or stage.get("shots") or []}
    firsts = sorted({*planned, *(first for first in records if isinstance(first, int))})
    if len(firsts) <= 1 and not records:
        return []
    states = [shot_state(first, records.get(first), planned.get(first), store, running=running) for first in firsts]
    counts = {state: sum(1 for _, s in states if s == state) for state in ("running", "done", "stopped", "waiting")}
    lines = ["shots: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n) + f" (of {len(firsts)})"]
    if running:
        lines[0] += speed(records.values(), store, total=stage.get("total"))
    lines += [f"  {text}" for text, _ in states[:MAX_SHOT_LINES]]
    if len(states) > MAX_SHOT_LINES:
        lines.append(f"  ... and {len(states) - MAX_SHOT_LINES} more shots")
    return lines


def shot_state(first: int, record: dict | None, last: int | None, store: FrameStore, *, running: bool) -> tuple:
    """One shot's line and its state (running, done, stopped: its run was killed, waiting)."""
    if record is None:
        return f"shot {first}-{last}: waiting", "waiting"
    last = record.get("last", last)
    state = record.get("state", "running")
    if state == "running":
        state = "running" if running else "stopped"
    done = record.get("done", 0) if state == "done" else finished_from(store, first, last)
    where = f" on {record.get('device')} at {record.get('where')}" if record.get("where") else ""
    redone = f", {len(record['redone'])} redone" if record.get("redone") else ""
    return f"shot {first}-{last}: {state}, {done} of {last - first + 1} frames{redone}{where}", state


def speed(records, store: FrameStore, *, total: int | None) -> str:
    """Frames per second over the shots running now (each since it started) and the time left."""
    now, rate = datetime.now(), 0.0
    for record in records:
        if record.get("state") != "running" or "started" not in record:
            continue
        seconds = (now - datetime.fromisoformat(record["started"])).total_seconds()
        finished = finished_from(store, record["first"], record["last"]) - record.get("done", 0)
        rate += finished / seconds if seconds > 0 else 0.0
    if rate <= 0 or not total:
        return ""
    left = max(0, total - min(total, store.stats_count())) / rate
    return f"; {rate:.3g} frames/s, " + (f"about {left / 60:.0f} min left" if left >= 60 else f"{left:.0f} s left")


def finished_from(store: FrameStore, first: int, last: int) -> int:
    """Frames of first..last with a statistics file, counted in order from the first."""
    index = first
    while index <= last and store.stats(index).exists():
        index += 1
    return index - first


def chunk_line(store: FrameStore) -> str | None:
    """The chunks encoded so far (chunks.py): how many, which frames, their size."""
    records = [read_json(path, default={}) for path in sorted(store.chunks_dir.glob("[0-9]*.json"))]
    done = [r for r in records if (store.chunks_dir / f"{r.get('first', 0):06d}.mp4").exists()]
    if not done:
        return None
    size = sum((store.chunks_dir / f"{r['first']:06d}.mp4").stat().st_size for r in done)
    frames = sum(r["last"] - r["first"] + 1 for r in done)
    return (
        f"chunks: {len(done)} done, {frames} frames encoded (frames {done[0]['first']}-{done[-1]['last']}), "
        f"{human_bytes(size)}"
    )


def tree_bytes(folder: Path) -> int:
    """The size of every file under `folder` (a file removed while we look counts nothing)."""
    total = 0
    for path in folder.rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:
            pass
    return total


def input_line(path: str | None, video: dict) -> str:
    audio = ", ".join(f"{a['codec']} {a['channels']}" for a in video.get("audio", [])) or "none"
    rate = float(Fraction(video["frame_rate"]))
    return (
        f"input: {path} ({video['width']}x{video['height']}, {rate:.3f} fps"
        f"{' variable' if video.get('variable_frame_rate') else ''}, {video['duration']:.2f} s, audio {audio})"
    )


def stage_status(name: str, stage: dict, data: dict, store: FrameStore, *, running: bool) -> str:
    """A stage's status as recorded, corrected by what the directory and the output show."""
    status = stage.get("status", "pending")
    if status == "running" and not running:
        status = "interrupted"
    if name == "encode" and status in ("placing", "done"):
        # "placing": stopped between recording the output and renaming it into place, or
        # right after; the output's fingerprint tells which.
        if output_is_recorded(data):
            status = "done"
        else:
            status = "interrupted" if status == "placing" else "done, but the output is gone or was replaced since"
    folder = dict(store.folders()).get(name)
    if folder is not None and status == "cleaned" and folder.exists():
        status = f"cleaning ({folder.name}/ is still there; the next run removes it)"
    elif folder is not None and stage.get("status") == "done" and not folder.exists():
        status += f" ({folder.name}/ is gone; the next run makes it again)"
    return status


def stage_detail(name: str, stage: dict, status: str, store: FrameStore) -> str:
    """How far a stage got, in words (after its status)."""
    if name == "decode" and "frames" in stage:
        # A job killed under a release before has the size in its settings only.
        width, height = stage.get("width"), stage.get("height")
        if width is None:
            width, height = (stage.get("settings") or {}).get("frame_size") or ("?", "?")
        return f", {stage['frames']} frames at {width}x{height}"
    if name == "flow" and "total" in stage:
        # The streaming job deletes each pair once its later frame is finished: a finished stage
        # counts them all; a running one counts those on disk (computed, not used yet).
        done = stage["total"] if stage.get("status") in ("done", "cleaned") else store.pair_count()
        return f", {done}/{stage['total']} frame pairs"
    if name == "stylize" and "total" in stage:
        # The job records its count at the start and end of a run, not per frame: the frames'
        # statistics files (their commit records) say how far a running or killed job got.
        total = stage["total"]
        done = stage.get("done", 0) if status in ("done", "cleaned") else min(total, store.stats_count())
        detail = f", {done}/{total} frames done, {total - done} remaining"
        if len(stage.get("shots", [])) > 1:  # a shot also begins where blank frames begin and end (fades.py)
            cuts = scene_cuts(stage)
            detail += f", {len(stage['shots'])} shots"
            detail += f" ({at_frames(cuts, 'scene cut', 'scene cuts')})" if cuts else ""
        if stage.get("flashes"):  # cuts.py: the shots go on through them
            flashes = [frames_text(first, last) for first, last in stage["flashes"]]
            detail += f", {at_frames(flashes, 'flash', 'flashes')} (no cuts)"
        if stage.get("relit"):  # shotplan.py: the same picture in another light
            detail += f", {at_frames(runs_text(stage['relit']), 'change of light', 'changes of light')} (no cuts)"
        if stage.get("moves"):  # cuts.py: the flow failed as at a cut, but not suddenly
            detail += f", {at_frames(runs_text(stage['moves']), 'fast move', 'fast moves')} (no cuts)"
        if stage.get("fades") or stage.get("blanks"):  # fades.py: faded on output
            detail += f", {', '.join(record_texts(stage))} (faded on output)"
        if bars := bars_text(stage):  # letterbox.py
            detail += f", {bars}"
        if stage.get("redone"):
            detail += f", {counted(len(stage['redone']), 'frame')} redone after stopping too early"
        return detail
    if name == "encode" and stage.get("status") in ("placing", "done"):
        return f", {stage.get('frames')} frames, audio {stage.get('audio') or 'none'}"
    return ""


def settings_lines(settings: dict, width: int = 100) -> list[str]:
    """ "settings:" and under it, indented and wrapped to `width`, key=value in the keys' order: a
    nested table's entries as table.key=value, a list's items joined by commas."""
    if not settings:
        return []

    def pairs(table: dict, prefix: str = "") -> list[str]:
        found = []
        for key, value in sorted(table.items()):
            if isinstance(value, dict):
                found += pairs(value, f"{prefix}{key}.")
            else:
                shown = (",".join(map(str, value)) or "none") if isinstance(value, list | tuple) else value
                found.append(f"{prefix}{key}={shown}")
        return found

    wrapped = textwrap.wrap(
        " ".join(pairs(settings)), width, initial_indent="  ", subsequent_indent="  ",
        break_long_words=False, break_on_hyphens=False,
    )  # fmt: skip
    return ["settings:", *wrapped]


def shown_settings(stages: dict) -> dict:
    """Every stage's settings in one table, without the hashes of the stages before."""
    merged = {}
    for name in STAGES:
        merged |= (stages.get(name) or {}).get("settings") or {}
    return {k: v for k, v in merged.items() if k not in ("decode", "flow", "stylize", "input", "output")}
