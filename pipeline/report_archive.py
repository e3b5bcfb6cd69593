"""A photo archive's report: OUTPUT/.stylize/report.html (counts, speed, failures, the first
gallery page), report-2.html ... (the next pages of PAGE images each), thumbnails and the plot in
OUTPUT/.stylize/report-files/.

`write_archive_report(output_dir)` is what a running job calls (every 30 s and at the end) and
what `stylize report OUTPUT` calls for any archive, running or not; everything comes from the
job's records (report_archive_data.py). The gallery lists images in the order they finished, so a
full page never changes again: a rewrite reads it back, finds it unchanged, and leaves it alone.
"""

from __future__ import annotations

import hashlib
import math
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .report_archive_data import ArchiveLayout, ArchiveState, parse_time, read_state
from .report_html import FILES_DIR, REPORT_FILE, esc, img, link_from, page, progress_bar, state_badge, table, write_text
from .report_plots import rate_plot
from .report_thumbs import THUMB_SIZE, prune, thumbnail

PAGE = 200  # images per gallery page: 50,000 images make 250 small pages, not one huge one
FAILURES_SHOWN = 500  # on the first page; the log has them all
JOB_THUMB_BUDGET = 10.0  # seconds of new thumbnails per rewrite of a running job's report
GALLERY_STYLE = (
    f"<style>.gallery img{{width:{THUMB_SIZE}px;height:{THUMB_SIZE}px;object-fit:contain;background:#eee}}</style>"
)


def write_archive_report(
    output_dir: Path | str,
    *,
    running: bool | None = None,
    thumb_budget: float | None = JOB_THUMB_BUDGET,
    layout: ArchiveLayout | None = None,
) -> Path:
    """Rewrite OUTPUT/.stylize/report.html and its gallery pages from the job's records; returns
    the first page's path.

    running: whether the pages refresh themselves; None decides from the lock and archive.json's
    state. thumb_budget: seconds spent making new thumbnails (None: all now); images still without
    one show their name until a later rewrite."""
    layout = layout or ArchiveLayout(Path(output_dir))
    state = read_state(layout)
    if running is None:
        running = state.holder is not None and state.info.get("state") == "running"
    layout.files.mkdir(parents=True, exist_ok=True)
    done = state.done
    thumbs = make_thumbnails(state, done, thumb_budget)
    prune(layout.files, [p for pair in thumbs.values() for p in pair if p])
    rate_plot(layout.files / "rate.svg", [t for r in done if (t := parse_time(r.get("finished")))])
    pages = max(1, math.ceil(len(done) / PAGE))
    for number in range(1, pages + 1):
        items = done[(number - 1) * PAGE : number * PAGE]
        body = summary(state, running) if number == 1 else header(state, running)
        body += gallery(state, items, thumbs, number, pages)
        write_text(
            layout.state_dir / page_name(number),
            page(f"stylize images: page {number}", GALLERY_STYLE + body, running=running),
        )
    for stale in layout.state_dir.glob("report-*.html"):  # pages of an earlier, longer gallery
        if stale.stem.removeprefix("report-").isdigit() and int(stale.stem.removeprefix("report-")) > pages:
            stale.unlink(missing_ok=True)
    return layout.state_dir / REPORT_FILE


def page_name(number: int) -> str:
    return REPORT_FILE if number == 1 else f"report-{number}.html"


def thumb_names(record: dict) -> tuple[str, str]:
    """Names by content (the records' SHA-256 of source and output): made once, never stale."""
    fallback = hashlib.sha256(
        f"{record.get('source')}|{record.get('finished')}".encode("utf-8", "surrogatepass")
    ).hexdigest()
    source, output = (record.get(k) or fallback for k in ("sha256", "output_sha256"))
    return f"{source[:2]}/{source[:20]}-in.webp", f"{output[:2]}/{output[:20]}-out.webp"


def make_thumbnails(
    state: ArchiveState, done: list[dict], budget: float | None
) -> dict[str, tuple[Path | None, Path | None]]:
    """source -> (before, after) thumbnail paths; None where not made (yet)."""
    layout, info = state.layout, state.info
    started, out = time.monotonic(), {}
    for record in done:
        names = thumb_names(record)
        paths = [layout.files / name for name in names]
        sources = (Path(info["input"]) / record["source"], layout.output_dir / record["output"])
        made = []
        for path, source, orient in zip(paths, sources, (True, False)):
            if (
                path.is_file()
                or (budget is None or time.monotonic() - started < budget)
                and thumbnail(source, path, orient=orient)
            ):
                made.append(path)
            else:
                made.append(None)
        out[record["source"]] = (made[0], made[1])
    return out


def state_text(state: ArchiveState, running: bool) -> str:
    recorded = state.info.get("state")
    if running:
        return f"running (process {state.holder})" if state.holder else "running"
    if recorded == "finished":
        return "finished"
    if recorded == "failed":
        return "stopped by an error (see the log); run the same command again to resume"
    return "stopped; run the same command again to resume"


def header(state: ArchiveState, running: bool) -> str:
    info = state.info
    now = datetime.now().isoformat(sep=" ", timespec="seconds")
    log = link_from(state.layout.state_dir, state.layout.log)
    return (
        f"<h1>Photos: {esc(info.get('input'))} &rarr; {esc(info.get('output'))}</h1>"
        f'<p>{state_badge(state_text(state, running))} <span class="muted">report written {esc(now)}; '
        f'<a href="{log}">log</a></span></p>'
    )


def speed_rows(state: ArchiveState, done: list[dict], running: bool, remaining: int) -> list[tuple[str, str]]:
    """Images/hour of the last run (from its start to now or its end), and the ETA while running."""
    started = parse_time(state.info.get("started"))
    ended = parse_time(state.info.get("finished")) if not running else None
    if started is None:
        return []
    this_run = [r for r in done if (t := parse_time(r.get("finished"))) and t >= started]
    end = ended or datetime.now(timezone.utc)
    hours = max(60.0, (end - started).total_seconds()) / 3600
    rows = [("last run", f"{len(this_run)} images in {hours:.2f} h ({len(this_run) / hours:.0f} images/hour)")]
    if running and this_run and remaining:
        left = remaining / (len(this_run) / hours)
        rows.append(("ETA", f"{left:.1f} h left, about {datetime.now() + timedelta(hours=left):%Y-%m-%d %H:%M}"))
    return rows


def summary(state: ArchiveState, running: bool) -> str:
    info, done, failed = state.info, state.done, state.failed
    remaining = max(0, state.inputs - len(done) - len(failed))
    counts = [("images", f"{state.inputs} in the tree: {len(done)} done, {len(failed)} failed, {remaining} to do")]
    counts += speed_rows(state, done, running, remaining)
    s = info.get("settings") or {}
    settings = [
        ("styles", ", ".join(info.get("styles") or [])),
        ("settings", (f"size {s.get('size')}, {s.get('iterations')} iterations ({s.get('optimizer')}), "
                     f"format {info.get('format') or 'as input'} (settings {info.get('settings_hash')})")),
    ]  # fmt: skip
    html = header(state, running) + failures(failed)
    html += f"<h2>Progress</h2><p>{progress_bar(len(done) + len(failed), state.inputs)}</p>{table(counts)}"
    html += f'<img class="plot" src="{FILES_DIR}/rate.svg" alt="images per hour over time">'
    html += f"<h2>Settings</h2>{table(settings)}"
    return html


def failures(failed: list[dict]) -> str:
    if not failed:
        return ""
    rows = "".join(
        f'<tr><td>{esc(r.get("source"))}</td><td class="bad">{esc(r.get("error"))}'
        f"{' (tried again on the next run)' if r.get('transient') else ''}</td></tr>"
        for r in failed[:FAILURES_SHOWN]
    )
    more = (
        f"<p>... and {len(failed) - FAILURES_SHOWN} more (all in the log).</p>" if len(failed) > FAILURES_SHOWN else ""
    )
    return f'<h2 class="bad">{len(failed)} failed</h2><table><tr><th>image</th><th>reason</th></tr>{rows}</table>{more}'


def nav(number: int, pages: int) -> str:
    if pages == 1:
        return ""
    links = [f"<b>{k}</b>" if k == number else f'<a href="{page_name(k)}">{k}</a>' for k in range(1, pages + 1)]
    return f"<nav>Pages: {' '.join(links)}</nav>"


def gallery(state: ArchiveState, items: list[dict], thumbs: dict, number: int, pages: int) -> str:
    """Before and after thumbnails, each linking to the full output; lazily loaded."""
    layout, figures = state.layout, []
    for record in items:
        before, after = thumbs.get(record["source"], (None, None))
        target = link_from(layout.state_dir, layout.output_dir / record["output"])
        pictures = "".join(
            img(link_from(layout.state_dir, path), alt=f"{what} {record['source']}", lazy=True) if path else
            f'<span class="muted" style="display:inline-block;width:{THUMB_SIZE}px">{what}: no thumbnail yet</span>'
            for what, path in (("before", before), ("after", after))
        )  # fmt: skip
        caption = esc(record["source"]) + (
            f" &rarr; {esc(record['output'])}" if record["output"] != record["source"] else ""
        )
        figures.append(
            f'<figure><a class="pair" href="{target}">{pictures}</a><figcaption>{caption}</figcaption></figure>'
        )
    first = (number - 1) * PAGE + 1
    title = f"Before and after: {first}-{first + len(items) - 1}" if items else "Before and after"
    empty = '<p class="muted">No image finished yet.</p>' if not items else ""
    return (
        f'<h2>{title}</h2>{nav(number, pages)}{empty}<div class="gallery">{"".join(figures)}</div>{nav(number, pages)}'
    )
