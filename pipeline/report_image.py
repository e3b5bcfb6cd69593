"""The report of `stylize image --report`: OUTPUT-report.html beside the output, with the content,
the style images and the result as thumbnails (each linking to its full-size file), the loss over
the iterations, the final loss terms and the settings.

Unlike a video's or an archive's report, which sit beside folders of thumbnails a running job adds
to, this page is written once, when the image is finished, and is one file: the thumbnails are
data: URLs and the plot an SVG data: URL, so the page can be moved or mailed alone (DESIGN.md,
"Reports": plain HTML, no script, nothing fetched from the network)."""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from .report_html import esc, img, link_from, page, table, write_text
from .report_plots import SVG_STYLE, reduce, save_svg
from .report_thumbs import thumbnail

TERM_COLORS = {"loss": "#222222", "content": "#3a7bd5", "style": "#d62728", "tv": "#2ca02c"}


@dataclass(frozen=True)
class ImageReport:
    """What the page shows; the paths are those the job read and wrote."""

    content: Path
    styles: tuple[Path, ...]
    output: Path
    history: Sequence[dict]  # per iteration: iteration, loss and the weighted terms (optimize.StyleResult)
    facts: Sequence[tuple[str, object]]  # rows of the summary table: device, time, final terms ...
    settings: dict  # StyleSettings.to_dict()


def write_image_report(path: Path, report: ImageReport) -> Path:
    """Write the page to `path` (atomically; WriteError if it cannot be) and return `path`."""
    pictures = [("content", report.content), *(("style", s) for s in report.styles), ("result", report.output)]
    with tempfile.TemporaryDirectory(prefix="stylize-report-") as scratch:
        figures = [figure(path.parent, what, source, Path(scratch) / f"{k}.webp") for k, (what, source) in
                   enumerate(pictures)]  # fmt: skip
        plot = loss_plot(Path(scratch) / "loss.svg", report.history)
    body = (
        f"<h1>Image: {esc(report.content.name)} &rarr; {esc(report.output.name)}</h1>"
        f'<div class="strip">{"".join(figures)}</div>'
        f"<h2>Result</h2>{table(report.facts)}"
        f"<h2>Loss</h2>{plot}"
        f"<h2>Settings</h2>{table(sorted(report.settings.items()))}"
    )
    write_text(path, page(f"stylize image: {report.output.name}", body, running=False))
    return path


def data_url(path: Path, kind: str) -> str:
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def figure(page_dir: Path, what: str, source: Path, scratch: Path) -> str:
    """A thumbnail of `source` linking to the file itself (relative to the page)."""
    target = link_from(page_dir, source)
    if thumbnail(source, scratch, orient=True):  # upright, as the job read it
        picture = img(data_url(scratch, "image/webp"), alt=f"{what} {source.name}")
    else:  # moved or unreadable since: the caption alone
        picture = '<span class="muted">no thumbnail</span>'
    return f'<figure><a href="{target}">{picture}</a><figcaption>{esc(what)}: {esc(source.name)}</figcaption></figure>'


def loss_plot(path: Path, history: Sequence[dict]) -> str:
    """The total loss and each weighted term over the iterations (log scale), as an <img>."""
    if not history:
        return '<p class="muted">No iteration was recorded.</p>'
    with matplotlib.rc_context(SVG_STYLE):
        plot = Figure(figsize=(9, 3.2))
        axes = plot.subplots()
        x = [record["iteration"] for record in history]
        for name in dict.fromkeys(k for record in history for k in record if k != "iteration"):
            y = [record.get(name, np.nan) for record in history]
            if np.nanmax(np.abs(y)) > 0:
                label = "total" if name == "loss" else name
                axes.plot(*reduce(x, y), color=TERM_COLORS.get(name), linewidth=1.2, label=label)
        if all(value > 0 for record in history for key, value in record.items() if key == "loss"):
            axes.set_yscale("log")
        axes.set_xlabel("iteration")
        axes.set_ylabel("weighted loss")
        axes.legend(loc="upper right", fontsize=8)
        save_svg(plot, path)
    return img(data_url(path, "image/svg+xml"), alt="loss over the iterations", cls="plot")
