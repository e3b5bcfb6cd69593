"""Rich progress displays driven by the core's progress callbacks."""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import stylize

console = Console(stderr=True)


def iteration_progress(*, disable: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[loss]}"),
        console=console,
        disable=disable,
        transient=False,
    )


class IterationBar:
    """A progress-bar task that advances on every `stylize.Progress` event."""

    def __init__(self, progress: Progress, description: str, total: int):
        self.progress = progress
        self.task = progress.add_task(description, total=total, speed="", loss="")

    def reset(self, description: str, total: int) -> None:
        self.progress.reset(self.task, description=description, total=total, speed="", loss="")

    def __call__(self, event: stylize.Progress) -> None:
        rate = event.iteration / event.elapsed if event.elapsed > 0 else 0.0
        self.progress.update(
            self.task,
            completed=event.iteration,
            total=event.iterations,
            speed=f"{rate:.2f} it/s",
            loss=f"loss {event.loss:.4g}",
        )


class ArchiveProgress:
    """`stylize images`: one bar over the images to do, with failures, images/hour and ETA.

    Call `start(plan)` once the tree is planned, then call the object with every finished record.
    """

    def __init__(self, *, disable: bool = False):
        # Batches can take minutes on large images: estimate the speed over the last hour.
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            disable=disable,
            speed_estimate_period=3600,
        )
        self.task = None
        self.done = self.failed = 0

    def __enter__(self) -> "ArchiveProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def start(self, plan) -> None:
        if not self.progress.disable:
            before = f"{plan.done_before} done before"
            if plan.failed_before:
                before += f", {len(plan.failed_before)} failed before (--retry-failed to try them again)"
            console.print(f"{plan.inputs} images: {before}; {plan.todo} to do", markup=False, highlight=False)
        self.task = self.progress.add_task("images", total=plan.todo, failed=0, rate="")

    def __call__(self, record: dict) -> None:
        if record["status"] == "done":
            self.done += 1
        else:
            self.failed += 1
        elapsed = self.progress.tasks[self.task].elapsed or 0.0
        rate = f"{3600 * self.done / elapsed:.0f} images/h" if elapsed > 0 and self.done else ""
        self.progress.update(self.task, advance=1, failed=self.failed, rate=rate)


def archive_summary(summary, *, failures: int = 20) -> list[Table]:
    """The final tables of `stylize images`: counts, then the failures with their reasons."""
    plan = summary.plan
    counts = Table(title="stylize images", show_header=False, title_justify="left")
    counts.add_row("done in this run", str(summary.done))
    counts.add_row("done before", str(plan.done_before))
    counts.add_row("failed in this run", str(len(summary.failed)))
    if plan.failed_before:
        counts.add_row("failed before, not retried", f"{len(plan.failed_before)} (--retry-failed)")
    counts.add_row("images in the tree", str(plan.inputs))
    counts.add_row("images per hour", f"{summary.images_per_hour:.0f}")
    counts.add_row("log", str(summary.log_path))
    for folder in plan.unlisted:
        counts.add_row("could not list", folder)
    tables = [counts]
    failed = summary.all_failed
    if failed:
        table = Table("failed image", "reason", title=f"{len(failed)} failed", title_justify="left")
        for record in failed[:failures]:
            # The error names the file by its full path (escaped like this); the table shows it relative.
            source = record["source"].encode("utf-8", "backslashreplace").decode("utf-8")
            source = source.replace("\r", "\\r").replace("\n", "\\n")
            table.add_row(source, (record["error"] or "").split(f"{source}: ", 1)[-1])
        if len(failed) > failures:
            table.add_row(f"... and {len(failed) - failures} more", "see the log")
        tables.append(table)
    return tables


class JobDisplay:
    """A job's progress: one row for the frames (done / total, frames/s, ETA) and beneath it the
    current frame's iterations. Implements video.JobEvents; use it as a context manager."""

    def __init__(self, title: str, *, disable: bool = False):
        self.title = title
        # A frame can take minutes; rich's default 30 s speed window would never see two of them.
        self.progress = Progress(*iteration_progress().columns, console=console, disable=disable, speed_estimate_period=3600)
        self.disable = disable
        self.jobs = None
        self.frame: IterationBar | None = None
        self.session_started = 0.0
        self.session_frames = 0

    def __enter__(self) -> "JobDisplay":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def message(self, text: str) -> None:
        if not self.disable:
            self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def stage(self, name: str, total: int | None = None, done: int = 0) -> None:
        # One row per stage, so the finished ones stay on screen; the iteration row belongs to
        # the stylize stage and goes when it ends.
        if self.frame is not None:
            self.progress.update(self.frame.task, visible=False)
        if self.jobs is None:
            self.message(self.title)
        self.jobs = self.progress.add_task(name, total=total, completed=done, speed="", loss="")
        self.session_started, self.session_frames = time.perf_counter(), 0

    def stage_progress(self, done: int) -> None:
        if self.jobs is not None:
            self.progress.update(self.jobs, completed=done)

    def frame_started(self, index: int, iterations: int) -> None:
        description = f"  frame {index}"
        if self.frame is None:
            self.frame = IterationBar(self.progress, description, iterations)
        else:
            self.frame.reset(description, iterations)
            self.progress.update(self.frame.task, visible=True)

    def iteration(self, event: stylize.Progress) -> None:
        if self.frame is not None:
            self.frame(event)

    def frame_finished(self, index: int, stats: dict) -> None:
        self.session_frames += 1
        elapsed = time.perf_counter() - self.session_started
        rate = self.session_frames / elapsed if elapsed > 0 else 0.0
        self.progress.update(
            self.jobs, completed=index, speed=f"{rate:.3g} frames/s", loss=f"loss {stats.get('loss') or 0:.4g}"
        )
