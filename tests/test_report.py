"""The job reports: built from the records of a small video job and a small archive job with
failures (both made with the CLI, real weights, 32 px), checked as files and rendered in headless
Chromium (no console errors, every image and plot loaded, a screenshot that is not blank).

Where no Chromium can be had, the browser tests are skipped and say why.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from helpers import build_tiny_vgg, make_clip, make_job
from pipeline import archive, report_archive, report_image, report_live, report_plots, video
from pipeline.decode import ffmpeg_binary
from pipeline.errors import WriteError
from pipeline.manifest import WorkDirLock, read_json, write_json
from pipeline.report_archive import write_archive_report
from pipeline.report_flicker import pair_figures
from pipeline.report_plots import MAX_POINTS, reduce, video_plot, wide_ranging
from pipeline.report_video import write_video_report
from pipeline.report_video_data import VideoLayout, read_state
from pipeline.settings import StyleSettings
from pipeline.video import run_video
from pipeline.videojob import JobEvents

ROOT = Path(__file__).resolve().parents[1]
STYLE = ROOT / "samples" / "ihc.png"
TINY = ["--size", "32", "--iterations", "2", "--device", "cpu", "--quiet"]
BROWSERS = ("chromium-headless-shell", "chromium")


def cli(*args, expect: int = 0) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == expect, f"stylize {' '.join(map(str, args))}: exit {run.returncode}\n{run.stderr}"
    return run


@pytest.fixture(scope="module")
def video_job(tmp_path_factory) -> Path:
    """A 12-frame clip with a scene cut after frame 6 (testsrc2, then mandelbrot), stylized."""
    d = tmp_path_factory.mktemp("video")
    clip = d / "clip.mp4"
    graph = "[0:v]trim=end_frame=6[a];[1:v]trim=end_frame=6,setpts=PTS-STARTPTS[b];[a][b]concat=n=2:v=1[v]"
    subprocess.run(
        [ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25",
         "-f", "lavfi", "-i", "mandelbrot=size=64x48:rate=25", "-filter_complex", graph, "-map", "[v]",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)],
        check=True,
    )  # fmt: skip
    # --keep-frames: the report's thumbnails and its own measure of the pairs need the frames and the flow.
    cli("video", clip, "--style", STYLE, "-o", d / "out.mp4", "--iterations-first", "3", "--keep-frames", *TINY)
    work = d / "out.mp4.work"
    assert "12 of 12 stylized" in (work / "report.html").read_text()  # the job's own last page
    run = cli("report", work)
    assert run.stdout.strip() == str(work / "report.html")
    return work


@pytest.fixture(scope="module")
def archive_job(tmp_path_factory) -> Path:
    """Five photos, two of them unreadable."""
    d = tmp_path_factory.mktemp("archive")
    photos, rng = d / "photos", np.random.default_rng(0)
    (photos / "sub").mkdir(parents=True)
    for name, shape in (("a.png", (32, 48)), ("b.jpg", (48, 32)), ("sub/c.png", (40, 40))):
        Image.fromarray((rng.random((*shape, 3)) * 255).astype(np.uint8)).save(photos / name)
    (photos / "sub" / "broken.jpg").write_text("not a photo")
    (photos / 'odd "name" <b>.png').write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = d / "out"
    cli("images", photos, "--style", STYLE, "-o", out, *TINY, expect=1)
    cli("report", out)
    return out


def test_video_report_from_records(video_job):
    html = (video_job / "report.html").read_text()
    assert 'http-equiv="refresh"' not in html  # finished: the page stays put
    assert "finished" in html and "12 of 12 stylized" in html
    strip = re.findall(r"<figcaption>frame (\d+)</figcaption>", html)
    assert strip == [str(i) for i in range(1, 13)]  # 12 frames: every one of them
    assert "not available" not in html
    for src in re.findall(r'src="([^"]+)"', html):
        assert (video_job / src).is_file(), src
    svg = (video_job / "report-files" / "video.svg").read_text()
    assert "scene cut" in svg and "output flicker" in svg and "iterations" in svg
    # The objective's terms beside the total: the style term shows a texture fading along a shot.
    assert "loss (total)" in svg and "style term" in svg and "temporal term" in svg
    # The per-pair figures agree with the job's own mean (same masks, same pairs, cut skipped).
    state = read_state(VideoLayout(video_job))
    figures = pair_figures(state)
    kept = [f["output"] for f in figures.values() if not f.get("cut")]
    assert [i for i, f in figures.items() if f.get("cut")] == [7]
    mean = read_json(video_job / "job.json")["report"]["flicker"]
    assert len(kept) == mean["pairs"] == 10
    assert np.mean(kept) == pytest.approx(mean["output"], rel=1e-5)
    assert len(re.findall(r"frames \d+&rarr;\d+: output", html)) == 6  # the worst pairs


def test_video_report_pictures_are_made_as_frames_finish_and_outlive_them(tmp_path, monkeypatch):
    """A streaming job deletes frames and flow pairs as it goes, long before the report's next
    rewrite: the pictures the report shows are made as each frame finishes (report_frames), so a
    page built after every frame is gone is still whole. Here the job writes no page at all."""
    monkeypatch.setattr(video, "write_video_report", lambda work_dir, **kwargs: Path(work_dir) / "report.html")
    job = make_job(make_clip(tmp_path / "clip.mp4", frames=8), tmp_path)
    run_video(job, vgg=build_tiny_vgg())
    for folder in ("frames", "flow"):
        shutil.rmtree(job.work / folder, ignore_errors=True)
    for frame in (job.work / "styled").glob("*.png"):
        frame.unlink()
    html = write_video_report(job.work).read_text()
    assert re.findall(r"<figcaption>frame (\d+)</figcaption>", html) == [str(i) for i in range(1, 9)]
    assert len(re.findall(r"frames \d+&rarr;\d+: output", html)) == 6 and "not available" not in html
    for src in re.findall(r'src="([^"]+)"', html):
        assert (job.work / src).is_file(), src


def test_video_report_rewrites_are_cheap_and_prefer_recorded_flicker(video_job, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(video_job, work)
    cache = work / "report-files" / "flicker.json"
    # The job recorded every pair's figures as its frames finished: the report measured nothing.
    assert not cache.exists()
    # Without the records (a job from before they were kept) the report measures the pairs itself.
    for stats in (work / "styled").glob("*.json"):
        write_json(stats, {k: v for k, v in read_json(stats).items() if k != "flicker"})
    (work / "report-files" / "frames.json").unlink()  # the statistics are read once: forget them
    write_video_report(work)
    thumbs = {p: p.stat().st_mtime_ns for p in (work / "report-files").glob("*.webp")}
    cached = cache.stat().st_mtime_ns
    write_video_report(work)
    # Thumbnails are made once; pairs measured once (their cache untouched); the page unchanged.
    assert {p: p.stat().st_mtime_ns for p in (work / "report-files").glob("*.webp")} == thumbs
    assert cache.stat().st_mtime_ns == cached
    # A figure the job recorded in a frame's statistics wins over the report's own measure.
    stats = work / "styled" / "000005.json"
    write_json(stats, read_json(stats) | {"flicker": {"output": 12345.0, "input": 6.0}})
    (work / "report-files" / "frames.json").unlink()  # the statistics are read once: forget them
    write_video_report(work)
    assert "output 1.234e+04, input 6" in (work / "report.html").read_text()


def test_a_report_cache_from_a_release_that_kept_fewer_figures_is_read_again(video_job, tmp_path):
    """report-files/frames.json holds each frame's figures once read; one written by a release
    that kept no loss terms must not hide them (the plot would lose its style and temporal lines)."""
    work = tmp_path / "work"
    shutil.copytree(video_job, work)
    cache = work / "report-files" / "frames.json"
    stylize_hash = read_json(work / "job.json")["stages"]["stylize"]["hash"]
    old = {k: {"iterations": 3, "loss": 1.0} for k in range(1, 13)}
    cache.write_text(json.dumps({"key": stylize_hash, "frames": old}))
    state = read_state(VideoLayout(work))
    assert all(frame.get("terms", {}).get("style", 0) > 0 for frame in state.frames.values())
    assert sum("temporal" in frame["terms"] for frame in state.frames.values()) == 10  # not the shots' first frames
    assert "style term" in (write_video_report(work), (work / "report-files" / "video.svg").read_text())[1]


def test_long_series_are_binned_for_the_plot_without_their_gaps_counting_as_zeros():
    x = np.arange(1, 5001)
    y = np.where(x % 100 == 1, np.nan, 10.0)  # a shot's first frame has no temporal term
    y[2000:2020] = np.nan  # a whole stretch without the figure
    bx, by = reduce(x, y)
    assert len(bx) == MAX_POINTS and bx[0] == 1
    assert np.nanmin(by) == 10.0 and np.nanmax(by) == 10.0  # a mean of the present values only
    assert np.isnan(by[400:404]).all() and not np.isnan(by[404])  # frames 2001-2020: a gap in the line
    peaks = np.where(np.arange(1, 5001) == 2500, 99.0, y)
    assert np.nanmax(reduce(x, peaks, "max")[1]) == 99.0 and np.isnan(reduce(x, peaks, "max")[1][400])


def test_iterations_on_a_log_axis_when_a_shots_cold_first_frame_dwarfs_the_warm_ones(tmp_path):
    """A default job's first frame runs 1500 iterations and its warm frames 30-90: on a linear
    axis they would lie flat on the floor, so the panel goes logarithmic, labelled in plain numbers."""
    warm = [1500.0] + [60.0 + (i % 7) for i in range(40)]
    assert wide_ranging(np.array(warm)) and not wide_ranging(np.array([3.0] + [2.0] * 11))
    assert not wide_ranging(np.array([np.nan, 0.0, 50.0]))  # nothing positive to take the log of
    svgs = {}
    short = [40.0] + [8.0] * 40  # the demo's: --iterations-first 40, --iterations 8
    for name, iterations in (("cold first", warm), ("even", [60.0] * 41), ("short", short)):
        index = list(range(1, 42))
        frames = {"index": index, "iterations": iterations, "loss": [1e12] * 41}
        pairs = {"index": index[1:], "output": [10.0] * 40, "input": [20.0] * 40}
        video_plot(tmp_path / f"{name}.svg", frames, pairs, {}, 41)
        svgs[name] = (tmp_path / f"{name}.svg").read_text()
    # Log ticks at 1, 1.5, 2, 3, 5 and 7 of each decade: 70, 100, 150, ... 500 for 60-600.
    assert all(f">{tick}<" in svgs["cold first"] for tick in (70, 100, 150, 500))
    top = svgs["short"][svgs["short"].index('id="axes_1"') : svgs["short"].index('id="axes_2"')]  # the iterations
    assert ">10<" in top and ">30<" in top and ".0<" not in top  # whole numbers, not 10.0
    assert ">150<" not in svgs["even"]


def test_every_plot_fits_its_fixed_margins_with_the_widest_labels(tmp_path, monkeypatch):
    """The plots are saved with fixed margins (one draw, not the tight bounding box's two): with
    the widest labels a job can give (iterations to 1e6, losses over 16 decades, slanted dates),
    nothing drawn may stand outside the figure, where the SVG would cut it off."""
    saved = []
    save_svg = report_plots.save_svg
    monkeypatch.setattr(
        report_plots, "save_svg", lambda figure, path, **kw: saved.append(figure) or save_svg(figure, path, **kw)
    )
    monkeypatch.setattr(report_image, "save_svg", report_plots.save_svg)
    index = list(range(1, 1001))
    frames = {
        "index": index,
        "iterations": [999_999.0] + [100_000.0] * 999,
        "loss": [1e-3] + [1e13] * 999,
        "style": [1e13] * 1000,
        "temporal": [np.nan] + [1e-2] * 999,
    }
    pairs = {"index": index[1:], "output": [0.0125] * 999, "input": [12345.678] * 999}
    video_plot(tmp_path / "video.svg", frames, pairs, {"scene cut": [500], "chunk start": [1, 17]}, 1000)
    start = datetime(2026, 12, 4, 23, 59, tzinfo=timezone.utc)
    report_plots.rate_plot(tmp_path / "rate.svg", [start + timedelta(minutes=7 * k) for k in range(300)])
    report_image.loss_plot(
        tmp_path / "loss.svg", [{"iteration": i, "loss": 1e14 / i, "range": 1e-4 * i} for i in range(1, 301)]
    )
    assert len(saved) == 3
    for figure in saved:
        width, height = figure.get_size_inches()
        drawn = figure.get_tightbbox(FigureCanvasAgg(figure).get_renderer())  # in inches, the SVG's font metrics
        assert drawn.x0 >= 0 and drawn.y0 >= 0 and drawn.x1 <= width and drawn.y1 <= height, (drawn, width, height)


def test_video_report_refreshes_only_while_the_job_holds_its_lock(video_job, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(video_job, work)
    job = read_json(work / "job.json")
    job["stages"]["encode"]["status"] = "pending"
    write_json(work / "job.json", job)
    with WorkDirLock(work):
        html = write_video_report(work).read_text()
        assert 'http-equiv="refresh"' in html and f"running (process {os.getpid()})" in html
    html = write_video_report(work).read_text()
    assert 'http-equiv="refresh"' not in html and "run the same command again" in html


def test_archive_report_failures_first_and_gallery(archive_job):
    state = archive_job / ".stylize"
    html = (state / "report.html").read_text()
    assert "2 failed" in html and "3 done" in html
    assert html.index("not an image") < html.index("Before and after")  # failures at the top
    assert "odd &quot;name&quot; &lt;b&gt;.png" in html  # names escaped, never markup
    links = re.findall(r'<a class="pair" href="([^"]+)"', html)
    assert sorted(links) == ["../a.png", "../b.jpg", "../sub/c.png"]
    for src in re.findall(r'src="([^"]+)"', html):
        assert (state / src).is_file(), src
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing from the network


def test_archive_report_pages(archive_job, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(archive_job, out)
    monkeypatch.setattr(report_archive, "PAGE", 2)
    write_archive_report(out)
    pages = sorted(p.name for p in (out / ".stylize").glob("report*.html"))
    assert pages == ["report-2.html", "report.html"]
    second = (out / ".stylize" / "report-2.html").read_text()
    assert '<a href="report.html">1</a>' in second and len(re.findall(r'class="pair"', second)) == 1
    monkeypatch.setattr(report_archive, "PAGE", 200)
    write_archive_report(out)
    assert not (out / ".stylize" / "report-2.html").exists()  # a page no longer in the gallery goes


# --- the video job writes its report ------------------------------------------------------------


def test_a_running_video_job_writes_its_report_and_rewrites_it(tmp_path, monkeypatch):
    monkeypatch.setattr(report_live, "REPORT_SECONDS", 0.0)  # rewritten after every frame
    job = make_job(make_clip(tmp_path / "clip.mp4", frames=4), tmp_path)
    page, seen = job.work / "report.html", {}

    class Watch(JobEvents):
        def frame_started(self, index: int, iterations: int) -> None:
            seen[index] = page.read_text()

    result = run_video(job, events=Watch(), vgg=build_tiny_vgg())
    assert sorted(seen) == [1, 2, 3, 4]
    for index, html in seen.items():  # the page as each frame starts: the frames before it
        assert 'http-equiv="refresh"' in html and f"running (process {os.getpid()})" in html
        assert f"{index - 1} of 4 stylized" in html
    html = page.read_text()
    assert result.report_page == page
    assert 'http-equiv="refresh"' not in html and "finished" in html and "4 of 4 stylized" in html
    for src in re.findall(r'src="([^"]+)"', html):
        assert (job.work / src).is_file(), src


def test_a_video_job_with_clean_keeps_a_whole_last_page(tmp_path):
    # --keep-frames: the streaming job deletes each frame once encoded; the thumbnails need them all.
    job = make_job(make_clip(tmp_path / "clip.mp4", frames=3), tmp_path, clean=True, keep_frames=True)
    run_video(job, vgg=build_tiny_vgg())
    assert not (job.work / "styled").exists()  # --clean took the frames, after the last page
    html = (job.work / "report.html").read_text()
    assert "finished" in html and "3 of 3 stylized" in html
    assert re.findall(r"<figcaption>frame (\d+)</figcaption>", html) == ["1", "2", "3"]  # the strip
    sources = re.findall(r'src="([^"]+)"', html)
    assert len(sources) > 6 and all((job.work / src).is_file() for src in sources)  # thumbnails and plot


def test_a_video_report_that_cannot_be_written_is_a_warning_and_the_job_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(report_live, "REPORT_SECONDS", 0.0)

    def disk_full(work_dir, **kwargs):
        raise WriteError(Path(work_dir) / "report.html", OSError(errno.ENOSPC, "No space left"))

    monkeypatch.setattr(video, "write_video_report", disk_full)
    job = make_job(make_clip(tmp_path / "clip.mp4", frames=2), tmp_path)
    result = run_video(job, vgg=build_tiny_vgg())
    assert result.frames == 2 and job.output.is_file() and not (job.work / "report.html").exists()
    log = (job.work / "job.log").read_text()
    warnings = [line for line in log.splitlines() if "warning: the report could not be written" in line]
    # Before frame 1, after frames 1 and 2, and the last page: each a warning, and the job finished.
    assert len(warnings) == 4 and "no space left" in warnings[0], log


# --- the archive job writes its report ----------------------------------------------------------


def three_photos(folder: Path) -> Path:
    """Three small photos of three shapes: three batches, so three records one after the other."""
    folder.mkdir()
    rng = np.random.default_rng(5)
    for name, shape in (("a.png", (24, 32)), ("b.png", (32, 24)), ("c.png", (32, 32))):
        Image.fromarray((rng.random((*shape, 3)) * 255).astype(np.uint8)).save(folder / name)
    return folder


def run_tiny_archive(tmp_path: Path, on_record) -> tuple[archive.Summary, Path]:
    out = tmp_path / "out"
    summary = archive.run_archive(
        three_photos(tmp_path / "photos"), out, [STYLE], StyleSettings(size=32, iterations=2),
        archive.ArchiveOptions(devices="cpu", batch_size=1), on_record=on_record,
    )  # fmt: skip
    return summary, out / ".stylize" / "report.html"


def test_a_running_archive_job_writes_its_report_and_rewrites_it(tmp_path, monkeypatch):
    monkeypatch.setattr(report_live, "REPORT_SECONDS", 0.0)  # rewritten after every record
    seen = []

    def on_record(record):  # called after the job has (or has not) rewritten its report
        html = (tmp_path / "out" / ".stylize" / "report.html").read_text()
        seen.append(html)

    summary, page = run_tiny_archive(tmp_path, on_record)
    assert len(seen) == 3
    for done, html in enumerate(seen, start=1):
        assert 'http-equiv="refresh"' in html and f"running (process {os.getpid()})" in html
        assert f"{done} done" in html and len(re.findall(r'class="pair"', html)) == done
    html = page.read_text()
    assert summary.report_path == page
    assert 'http-equiv="refresh"' not in html and "finished" in html and "3 done" in html
    links = re.findall(r'<a class="pair" href="([^"]+)"', html)
    assert sorted(links) == ["../a.png", "../b.png", "../c.png"]
    for src in re.findall(r'src="([^"]+)"', html):
        assert (page.parent / src).is_file(), src


def test_a_running_archive_job_rewrites_its_report_at_most_every_report_seconds(tmp_path, monkeypatch):
    monkeypatch.setattr(report_live, "REPORT_SECONDS", 3600.0)
    seen = []
    summary, page = run_tiny_archive(tmp_path, lambda record: seen.append(page_text(tmp_path)))
    # The first record writes the page; the next two come within the hour: no rewrite until the end.
    assert ["1 done" in html for html in seen] == [True, True, True]
    assert "3 done" in page.read_text() and summary.done == 3


def page_text(tmp_path: Path) -> str:
    return (tmp_path / "out" / ".stylize" / "report.html").read_text()


def test_a_report_that_cannot_be_written_is_a_warning_and_the_job_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(report_live, "REPORT_SECONDS", 0.0)

    def disk_full(output_dir, **kwargs):
        raise WriteError(Path(output_dir) / ".stylize" / "report.html", OSError(errno.ENOSPC, "No space left"))

    monkeypatch.setattr(archive, "write_archive_report", disk_full)
    summary, page = run_tiny_archive(tmp_path, None)
    assert summary.done == 3 and summary.report_path is None and not page.exists()
    assert read_json(tmp_path / "out" / ".stylize" / "archive.json")["state"] == "finished"
    log = (tmp_path / "out" / ".stylize" / "log.txt").read_text()
    warnings = [line for line in log.splitlines() if "WARNING the report could not be written" in line]
    assert len(warnings) == 4 and "no space left" in warnings[0], log  # three records and the end


def test_a_killed_archive_jobs_report_is_rebuilt_with_its_finished_images(tmp_path):
    """The running job's page appears (refreshing); after SIGKILL it still says running, and
    `stylize report` rebuilds it from the records: every finished image, the job stopped."""
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    rng = np.random.default_rng(6)
    for i in range(8):
        Image.fromarray((rng.random((32, 48, 3)) * 255).astype(np.uint8)).save(photos / f"{i}.png")
    page = out / ".stylize" / "report.html"
    args = ["images", photos, "-s", STYLE, "-o", out, "--size", 48, "--iterations", 100, "--batch-size", 1, "-q"]
    stderr = tmp_path / "stderr.txt"  # a file, not a pipe: nobody reads it while the run goes on
    with open(stderr, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=ROOT, stderr=err,
        )  # fmt: skip
    deadline = time.monotonic() + 300
    while not page.is_file():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no report.html while the job ran; its stderr:\n{stderr.read_text(errors='replace')}")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 'http-equiv="refresh"' in page.read_text()  # the last page the job wrote: running
    done = sorted(r["output"] for r in archive.read_records(out).values() if r["status"] == "done")
    assert 1 <= len(done) < 8, "the run finished before it was killed: make the images slower"

    run = cli("report", out)
    assert run.stdout.strip() == str(page)
    html = page.read_text()
    assert 'http-equiv="refresh"' not in html and "stopped; run the same command again to resume" in html
    assert f"{len(done)} done" in html
    assert sorted(re.findall(r'<a class="pair" href="\.\./([^"]+)"', html)) == done
    thumbs = re.findall(r'src="([^"]+-out\.webp)"', html)
    assert len(thumbs) == len(done) and all((page.parent / src).is_file() for src in thumbs)


def test_report_of_a_folder_that_is_no_job(tmp_path):
    run = cli("report", tmp_path, expect=2)
    assert (
        run.stderr.strip()
        == f"error: {tmp_path}: not the work directory of a stylize job (no job.json or .stylize/archive.json)"
    )


# --- in a real browser ---------------------------------------------------------------------

WRAPPER = """<!DOCTYPE html><html><body>
<iframe id="f" src="{url}" style="width:1200px;height:20000px"></iframe><pre id="result">pending</pre>
<script>
const f = document.getElementById('f');
f.addEventListener('load', () => {{
  const doc = f.contentDocument;
  if (!doc) {{ document.getElementById('result').textContent = '"no access to the page"'; return; }}
  const images = Array.from(doc.images);
  images.forEach(i => {{ i.loading = 'eager'; }});  // lazy images below the fold load too
  const check = () => {{
    if (images.every(i => i.complete)) {{
      document.getElementById('result').textContent =
        JSON.stringify(images.map(i => [i.getAttribute('src'), i.naturalWidth, i.naturalHeight]));
    }} else setTimeout(check, 50);
  }};
  check();
}});
</script></body></html>
"""


def chromium() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    pytest.skip(f"no Chromium found ({' or '.join(BROWSERS)}); .ci/run installs chromium-headless-shell")


def browse(page: Path, tmp_path: Path) -> tuple[list, list[str], Image.Image]:
    """Render `page`: (src, naturalWidth, naturalHeight) of each image, console messages, screenshot."""
    browser = chromium()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]
    wrapper = tmp_path / "wrapper.html"
    wrapper.write_text(WRAPPER.format(url=page.resolve().as_uri()))
    run = subprocess.run(
        [*flags, "--allow-file-access-from-files", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=20000",
         "--dump-dom", wrapper.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    found = re.search(r'<pre id="result">(.*?)</pre>', run.stdout, re.DOTALL)
    assert found and found.group(1) != "pending", (
        f"the page did not finish loading:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    )
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [*flags, "--window-size=1200,1600", f"--screenshot={shot}", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shot.is_file(), run.stderr[-2000:]
    return json.loads(found.group(1)), console, Image.open(shot).convert("RGB")


def check_rendering(page: Path, tmp_path: Path, *, plots: int, thumbnails: int) -> None:
    images, console, shot = browse(page, tmp_path)
    assert console == []
    broken = [src for src, width, height in images if not (width > 0 and height > 0)]
    assert broken == []
    assert sum(src.endswith(".svg") for src, _, _ in images) == plots
    assert sum(src.endswith(".webp") for src, _, _ in images) == thumbnails
    pixels = np.asarray(shot, dtype=np.float32)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500  # not blank


def test_video_report_in_chromium(video_job, tmp_path):
    # 12 frames, content and stylized; 6 worst pairs, previous warped and current.
    check_rendering(video_job / "report.html", tmp_path, plots=1, thumbnails=12 * 2 + 6 * 2)


def test_archive_report_in_chromium(archive_job, tmp_path):
    check_rendering(archive_job / ".stylize" / "report.html", tmp_path, plots=1, thumbnails=3 * 2)


def test_image_report_in_chromium(tmp_path):
    """`stylize image --report`: one file whose thumbnails and plot are data: URLs, all shown."""
    content = tmp_path / "content.png"
    Image.fromarray((np.random.default_rng(7).random((32, 48, 3)) * 255).astype(np.uint8)).save(content)
    cli("image", content, "--style", STYLE, "-o", tmp_path / "out.png", "--report", *TINY)
    images, console, shot = browse(tmp_path / "out-report.html", tmp_path)
    assert console == []
    assert [src.split(";")[0] for src, _, _ in images] == ["data:image/webp"] * 3 + ["data:image/svg+xml"]
    assert all(width > 0 and height > 0 for _, width, height in images), images
    pixels = np.asarray(shot, dtype=np.float32)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500  # not blank
