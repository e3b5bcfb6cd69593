"""The reports' plots, drawn by matplotlib as SVG files (no display: a bare Figure and its SVG
canvas, never pyplot's interactive backends).

Long jobs have 100,000 frames; a line of that many points would make a multi-megabyte SVG that
shows nothing more than 1,000 points do at the width of a page. Series are therefore reduced to
at most MAX_POINTS bins before drawing: the mean for iterations and loss, the maximum for flicker
(a spike is what a person looks for, and a mean would hide it).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, MaxNLocator, StrMethodFormatter

from .atomic import atomic_path

MAX_POINTS = 1000
SVG_STYLE = {
    "svg.fonttype": "none",  # text as text: far smaller than glyph outlines, and selectable
    "svg.hashsalt": "stylize-report",  # the same data gives the same file (unchanged: not rewritten)
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
CUT_COLOR, SHOT_COLOR, CHUNK_COLOR, FLASH_COLOR = "#d62728", "#ff7f0e", "#7f7f7f", "#bcbd22"


def reduce(x: Sequence[float], y: Sequence[float], how: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """At most MAX_POINTS (x, y) pairs: consecutive points binned, y by `how` (mean or max),
    missing values (NaN) left out; a bin with none is NaN, a gap in the line."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) <= MAX_POINTS:
        return x, y
    edges = np.linspace(0, len(x), MAX_POINTS + 1).astype(int)[:-1]
    present = ~np.isnan(y)
    counts = np.add.reduceat(present.astype(float), edges)
    if how == "max":
        ys = np.fmax.reduceat(np.where(present, y, -np.inf), edges)
    else:
        ys = np.add.reduceat(np.where(present, y, 0.0), edges) / np.maximum(counts, 1)
    return x[edges], np.where(counts > 0, ys, np.nan)


def wide_ranging(values: np.ndarray, ratio: float = 4.0) -> bool:
    """Whether a positive series' largest value is over `ratio` times its median: drawn on a log
    axis, so that the many small values do not lie flat on the floor under the few large ones."""
    values = values[~np.isnan(values)]
    return len(values) > 0 and values.min() > 0 and values.max() > ratio * np.median(values)


# Margins around the axes, in inches: room at the left for the tick labels (up to "1e+06" or
# 10^12) and the axis label, below for the x axis's, at the right for half its last label. Fixed
# rather than matplotlib's tight bounding box, which draws the whole figure twice: a report is
# rewritten every report_html.REFRESH_SECONDS while a job runs, and drawing its plot twice was
# 0.45 of a 4-frame test job's 2.2 s.
LEFT, RIGHT, TOP, BOTTOM = 0.85, 0.3, 0.1, 0.5
# The panels' y labels this far left of their axes, in inches: aligned by construction. Figure's
# align_ylabels measured every panel's tick labels again at each draw, and unlabelled minor ticks
# on the log axes (Tick objects, each a few artists) drew more: together a fifth of a plot that is
# redrawn twice even in a 4-frame job.
YLABEL_INCHES = 0.6


def save_svg(figure: Figure, path: Path, *, bottom: float = BOTTOM) -> None:
    """The figure as an SVG file with fixed margins (`bottom`: inches below the axes); an
    unchanged file is left as it is."""
    width, height = figure.get_size_inches()
    figure.subplots_adjust(left=LEFT / width, right=1 - RIGHT / width, top=1 - TOP / height, bottom=bottom / height)
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "stylize-report"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _marks(axes, marks: dict[str, Sequence[int]]) -> None:
    """Vertical lines at scene cuts, shot starts that are not cuts, chunk starts and flashes (no cuts)."""
    styles = {
        "scene cut": (CUT_COLOR, "--"), "shot start": (SHOT_COLOR, ":"), "chunk start": (CHUNK_COLOR, ":"),
        "flash": (FLASH_COLOR, "-."),
    }  # fmt: skip
    for name, (color, style) in styles.items():
        for k, frame in enumerate(marks.get(name, ())):
            axes.axvline(frame - 0.5, color=color, linestyle=style, linewidth=1, label=name if k == 0 else None)


# The objective's terms plotted beside the total loss, and their colours: a style term that climbs
# along a shot is its texture fading (warm frames stopped short of their restyling, each held by
# the temporal loss to what the one before handed it; docs/video-quality.md).
LOSS_TERMS = {"style": "#e377c2", "temporal": "#17becf"}


def video_plot(
    path: Path, frames: dict[str, list], pairs: dict[str, list], marks: dict[str, Sequence[int]], total: int
) -> None:
    """Iterations, loss and per-pair flicker over the frame index, one panel each.

    frames: "index", "iterations", "loss" and optionally the objective's LOSS_TERMS (one entry
    per finished frame, NaN where a frame has none); pairs: "index" (the later
    frame of the pair), "output" and "input" (masked warping error)."""
    with matplotlib.rc_context(SVG_STYLE):
        figure = Figure(figsize=(9, 6.2))
        top, middle, bottom = figure.subplots(3, 1, sharex=True)
        x, iterations = reduce(frames["index"], frames["iterations"])
        top.plot(x, iterations, color="#3a7bd5", linewidth=1, drawstyle="steps-mid")
        top.set_ylabel("iterations")
        if wide_ranging(iterations):
            # A shot's first frame runs cold (1500 iterations by default), the warm frames 30-90.
            top.set_yscale("log")
            top.yaxis.set_major_locator(LogLocator(subs=(1, 1.5, 2, 3, 5, 7)))
            top.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))  # 10, not 10.0
            top.minorticks_off()
        else:
            top.yaxis.set_major_locator(MaxNLocator(integer=True))
        top.xaxis.set_major_locator(MaxNLocator(integer=True))
        plotted = []
        for name, color in {"loss": "#6a3d9a", **LOSS_TERMS}.items():
            x, y = reduce(frames["index"], frames.get(name, []) or [np.nan] * len(frames["index"]))
            if np.isnan(y).all():
                continue
            label = "loss (total)" if name == "loss" else f"{name} term"
            middle.plot(x, y, color=color, linewidth=1, label=label, marker="." if len(x) < 60 else None)
            plotted.append(y)
        values = np.concatenate(plotted) if plotted else np.array([])
        if len(values) and np.nanmin(values) > 0:
            middle.set_yscale("log")
            middle.minorticks_off()
        middle.set_ylabel("loss")
        if len(plotted) > 1:
            middle.legend(loc="best", fontsize=8, ncols=3)
        for name, color in (("output", "#d62728"), ("input", "#2ca02c")):
            x, y = reduce(pairs["index"], pairs[name], "max")
            bottom.plot(x, y, color=color, linewidth=1, label=f"{name} flicker", marker="." if len(x) < 60 else None)
        bottom.set_ylabel("warping error")
        bottom.set_xlabel("frame")
        for axes in (top, middle, bottom):
            _marks(axes, marks)
        bottom.set_xlim(0.5, max(total, 1) + 0.5)
        bottom.legend(loc="upper right", fontsize=8, ncols=5)
        width = figure.get_size_inches()[0] - LEFT - RIGHT
        for axes in (top, middle, bottom):
            axes.yaxis.set_label_coords(-YLABEL_INCHES / width, 0.5)
        save_svg(figure, path)


def rate_plot(path: Path, finished: Sequence[datetime]) -> None:
    """Images finished per hour over time, in bins of a round width (about 40 bins a run)."""
    with matplotlib.rc_context(SVG_STYLE):
        figure = Figure(figsize=(9, 2.6))
        axes = figure.subplots()
        if finished:
            times = sorted(finished)
            span = max((times[-1] - times[0]).total_seconds(), 60.0)
            width = min((w for w in (60, 300, 600, 1800, 3600, 7200, 21600) if span / w <= 40), default=86400)
            start = times[0].timestamp() // width * width
            counts = np.bincount([int((t.timestamp() - start) // width) for t in times])
            lefts = [datetime.fromtimestamp(start + k * width, tz=times[0].tzinfo) for k in range(len(counts))]
            axes.bar(lefts, counts * 3600 / width, width=timedelta(seconds=width), align="edge", color="#3a7bd5")
            figure.autofmt_xdate()
        axes.set_ylabel("images / hour")
        save_svg(figure, path, bottom=0.75)  # the dates, slanted
