"""A video job's report: WORK/report.html, its thumbnails and plot in WORK/report-files/.

`write_video_report(work_dir)` is what a running job calls (every 30 s and at the end) and what
`stylize report WORK` calls for any job, running or not: everything comes from the job's own
records (report_video_data.py), so a killed job's report is current up to its last finished frame.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import numpy as np

from .fades import record_texts
from .letterbox import bars_text
from .report_flicker import pair_figures, worst_pairs, worst_thumbnails
from .report_frames import content_thumb, strip_indices, styled_thumb
from .report_html import FILES_DIR as FILES
from .report_html import REPORT_FILE, esc, img, link_from, page, progress_bar, state_badge, table, write_text
from .report_plots import LOSS_TERMS, video_plot
from .report_thumbs import THUMB_SIZE, prune, thumbnail
from .report_video_data import VideoLayout, VideoState, read_state
from .shots import counted, frames_text, runs_text

RATE_WINDOW = 50  # frames/s over the last this many finished frames
# Seconds of new flicker measurements per rewrite of a running job's report (the rest waits for
# the next rewrite); `stylize report` measures everything.
JOB_FLICKER_BUDGET = 2.0
HIDDEN_SETTINGS = ("decode", "flow", "stylize", "input", "output", "styles")


def write_video_report(
    work_dir: Path | str,
    *,
    running: bool | None = None,
    flicker_budget: float | None = JOB_FLICKER_BUDGET,
    layout: VideoLayout | None = None,
) -> Path:
    """Rewrite WORK/report.html from the job's records; returns its path.

    running: whether the page refreshes itself; None decides from the work directory's lock
    (held, and the output not yet encoded). A job calling this while it still holds its lock
    after it stopped passes False. flicker_budget: seconds of new per-pair flicker measurement
    (None: every pair now)."""
    layout = layout or VideoLayout(Path(work_dir))
    state = read_state(layout)
    if running is None:
        running = state.holder is not None and not state.finished
    layout.files.mkdir(parents=True, exist_ok=True)
    figures = pair_figures(state, budget_s=flicker_budget)
    worst = worst_pairs(figures)
    strip, kept = strip_thumbnails(state)
    worst_thumbs = worst_thumbnails(state, worst)
    kept += [p for pair in worst_thumbs.values() for p in pair if p is not None]
    prune(layout.files, kept)
    plot(state, figures)
    body = "\n".join((
        header(state, running), progress(state, running), inputs(state), flicker_summary(state, figures),
        strip_html(state, strip), ('<h2>Iterations, loss and flicker per frame</h2>'
        f'<img class="plot" src="{FILES}/video.svg" alt="iterations, loss and flicker over the frame index">'),
        worst_html(state, figures, worst_thumbs),
    ))  # fmt: skip
    path = layout.work_dir / REPORT_FILE
    write_text(path, page(f"stylize video: {Path(inputs_of(state).get('video') or '').name}", body, running=running))
    return path


def inputs_of(state: VideoState) -> dict:
    return state.data.get("inputs") or {}


def state_text(state: VideoState, running: bool) -> str:
    done, total = len(state.frames), state.total
    if state.finished:
        return "finished"
    if running:
        return f"running (process {state.holder})" if state.holder else "running"
    if total and done:
        return f"stopped after {done} of {total} frames; run the same command again to resume"
    return "stopped before the first frame; run the same command again to resume"


def header(state: VideoState, running: bool) -> str:
    video = Path(inputs_of(state).get("video") or "?").name
    output = inputs_of(state).get("output")
    link = (
        f' &rarr; <a href="{link_from(state.layout.work_dir, output)}">{esc(Path(output).name)}</a>' if output else ""
    )
    now = datetime.now().isoformat(sep=" ", timespec="seconds")
    log = link_from(state.layout.work_dir, state.layout.work_dir / "job.log")
    return (
        f"<h1>Video: {esc(video)}{link}</h1><p>{state_badge(state_text(state, running))} "
        f'<span class="muted">report written {esc(now)}; <a href="{log}">job.log</a></span></p>'
    )


def frame_rate(state: VideoState) -> float | None:
    """Frames per second over the last RATE_WINDOW finished frames (their finish times), else
    from their own optimization seconds."""
    times = [t for _, t in state.times()[-RATE_WINDOW:]]
    if len(times) >= 2 and (span := (times[-1] - times[0]).total_seconds()) > 0:
        return (len(times) - 1) / span
    seconds = [f.get("seconds") for _, f in sorted(state.frames.items())[-RATE_WINDOW:] if f.get("seconds")]
    return len(seconds) / sum(seconds) if seconds else None


def duration_text(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


def progress(state: VideoState, running: bool) -> str:
    done, total = len(state.frames), state.total
    rate = frame_rate(state)
    rows = [("frames", f"{done} of {total} stylized" if total else f"{done} stylized")]
    if rate:
        rows.append(("speed", f"{rate:.3g} frames/s ({1 / rate:.3g} s per frame)"))
    if running and rate and total > done:
        eta = datetime.now().timestamp() + (total - done) / rate
        rows.append(
            ("ETA", f"{duration_text((total - done) / rate)} left, about {datetime.fromtimestamp(eta):%Y-%m-%d %H:%M}")
        )
    for name in ("decode", "flow", "stylize", "encode"):
        status = state.stage(name).get("status", "pending")
        rows.append((f"{name} stage", "interrupted" if status == "running" and not running else status))
    return f"<h2>Progress</h2><p>{progress_bar(done, total)}</p>{table(rows)}"


def inputs(state: VideoState) -> str:
    given, video = inputs_of(state), state.data.get("video") or {}
    rows = [
        ("input", given.get("video")),
        ("styles", ", ".join(given.get("styles") or [])),
        ("output", given.get("output")),
    ]
    if given.get("init"):
        rows.append(("init image", given["init"]))
    if video:
        rate = float(Fraction(str(video.get("frame_rate", "0"))))
        rows.append(
            (
                "input video",
                f"{video.get('width')}x{video.get('height')}, {rate:.3f} fps, {video.get('duration', 0):.2f} s",
            )
        )
    width, height = state.frame_size
    if width:
        rows.append(("frames", f"{width}x{height}"))
    if bars := bars_text(state.stage("stylize")):  # letterbox.py: drawn black over the stylized frames
        rows.append(("letterbox", bars))
    merged = {}
    for name in ("decode", "flow", "stylize", "encode"):
        merged |= state.stage(name).get("settings") or {}
    shown = sorted((k, v) for k, v in merged.items() if k not in HIDDEN_SETTINGS)
    return f"<h2>Inputs and settings</h2>{table(rows)}<details><summary>all settings</summary>{table(shown)}</details>"


def flicker_summary(state: VideoState, figures: dict[int, dict]) -> str:
    measured = [f for f in figures.values() if not f.get("cut") and "output" in f]
    mean = (state.data.get("report") or {}).get("flicker")
    rows = []
    if mean:
        rows.append(
            ("job's measure", f"output {mean['output']:.4g}, input {mean['input']:.4g} over {mean['pairs']} pairs")
        )
    if measured:
        out, inp = (float(np.mean([f[k] for f in measured])) for k in ("output", "input"))
        rows.append(("per pair, so far", f"output {out:.4g}, input {inp:.4g} over {counted(len(measured), 'pair')}"))
    cuts = state.cuts()
    rows.append(("scene cuts", ", ".join(map(str, cuts)) if cuts else "none"))
    if flashes := state.flashes():  # their pairs are not measured either
        rows.append(("flashes (no cuts)", ", ".join(frames_text(first, last) for first, last in flashes)))
    if relit := state.relit():  # the same picture in another light (shotplan.py): their pairs not measured either
        rows.append(("changes of light (no cuts)", ", ".join(runs_text(relit))))
    if moves := state.moves():  # the flow failed as at a cut, but not suddenly (cuts.py): not measured either
        rows.append(("fast moves (no cuts)", ", ".join(runs_text(moves))))
    if faded := record_texts(state.stage("stylize")):  # fades.py: their frames faded on output
        rows.append(("fades (faded on output)", ", ".join(faded)))
    note = (
        '<p class="muted">Masked warping error between consecutive frames (squared 0..255 RGB, lower is steadier).</p>'
    )
    return f"<h2>Flicker</h2>{table(rows)}{note}"


def strip_thumbnails(state: VideoState) -> tuple[list[tuple[int, Path | None, Path | None]], list[Path]]:
    """The strip's frames and their thumbnails. A pick whose frame is gone and was not kept as a
    thumbnail (the decode found another count than the probe the job picked from) shows the
    nearest frame that was."""
    files, decode, stylize = state.layout.files, state.stage("decode").get("hash") or "", state.stylize_hash
    kept_frames = sorted(
        int(m.group(1)) for p in files.glob(f"{stylize[:8]}-s*.webp") if (m := re.search(r"-s(\d{6,})\.webp$", p.name))
    )
    strip, kept, used = [], [], set()
    for pick in strip_indices(state.total):
        index = pick
        if not state.layout.stylized(pick).exists() and not styled_thumb(files, stylize, pick).is_file():
            near = [i for i in kept_frames if i not in used and content_thumb(files, decode, i).is_file()]
            index = min(near, key=lambda i: abs(i - pick)) if near else pick
        used.add(index)
        if index not in state.frames:
            strip.append((index, None, None))
            continue
        content, styled = content_thumb(files, decode, index), styled_thumb(files, stylize, index)
        content = content if thumbnail(state.layout.content(index), content) else None
        styled = styled if thumbnail(state.layout.stylized(index), styled) else None
        kept += [p for p in (content, styled) if p]
        strip.append((index, content, styled))
    return strip, kept


def thumb_dims(state: VideoState) -> tuple[int, int]:
    width, height = state.frame_size
    if not width or not height:
        return THUMB_SIZE, THUMB_SIZE
    scale = THUMB_SIZE / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def thumb_img(state: VideoState, path: Path | None, alt: str) -> str:
    width, height = thumb_dims(state)
    if path is None:
        return f'<div class="muted" style="width:{width}px;height:{height}px">{esc(alt)}: not available</div>'
    return img(f"{FILES}/{path.name}", width=width, height=height, alt=alt)


def strip_html(state: VideoState, strip: list) -> str:
    figures = []
    for index, content, styled in strip:
        if content is None and styled is None and index not in state.frames:
            continue
        pictures = thumb_img(state, content, f"content {index}") + thumb_img(state, styled, f"stylized {index}")
        figures.append(f"<figure>{pictures}<figcaption>frame {index}</figcaption></figure>")
    waiting = len(strip) - len(figures)
    note = f'<p class="muted">{waiting} more to come as the job reaches them.</p>' if waiting else ""
    if state.stage("stylize").get("fades"):
        note += (
            "<p class=\"muted\">A fade's frames as the stylizer saw and made them, at the picture's full light: "
            "the output shows them faded.</p>"
        )
    return f'<h2>Frames: content above, stylized below</h2><div class="strip">{"".join(figures)}</div>{note}'


def plot(state: VideoState, figures: dict[int, dict]) -> None:
    frames = sorted(state.frames.items())
    series = {
        "index": [i for i, _ in frames],
        "iterations": [f.get("iterations", math.nan) for _, f in frames],
        "loss": [f.get("loss", math.nan) for _, f in frames],
        **{term: [(f.get("terms") or {}).get(term, math.nan) for _, f in frames] for term in LOSS_TERMS},
    }
    pairs = sorted(figures.items())
    pair_series = {"index": [i for i, _ in pairs]}
    for name in ("output", "input"):
        pair_series[name] = [math.nan if f.get("cut") else f.get(name, math.nan) for _, f in pairs]
    cuts = state.cuts()
    shots = [int(a) for a, _ in (state.stage("stylize").get("shots") or [])[1:]]
    marks = {
        "scene cut": cuts, "shot start": [s for s in shots if s not in cuts], "chunk start": state.chunk_starts(),
        "flash": [first for first, _ in state.flashes()],
    }  # fmt: skip
    video_plot(state.layout.files / "video.svg", series, pair_series, marks, state.total)


def worst_html(state: VideoState, figures: dict[int, dict], thumbs: dict) -> str:
    if not thumbs:
        return '<h2>Worst flicker</h2><p class="muted">No frame pair measured yet.</p>'
    items = []
    for index, (warped, current) in thumbs.items():
        f = figures[index]
        pictures = thumb_img(state, warped, f"frame {index - 1} warped") + thumb_img(state, current, f"frame {index}")
        caption = f"frames {index - 1}&rarr;{index}: output {f['output']:.4g}, input {f['input']:.4g}"
        items.append(f'<figure><div class="pair">{pictures}</div><figcaption>{caption}</figcaption></figure>')
    note = "Left: the previous stylized frame warped by the flow onto the next; right: the next stylized frame."
    return f'<h2>Worst flicker</h2><p class="muted">{note}</p><div class="gallery">{"".join(items)}</div>'
