"""Rich progress displays driven by the core's progress callbacks."""

from __future__ import annotations

from rich.console import Console
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
