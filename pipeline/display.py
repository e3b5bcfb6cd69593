"""Rich progress displays driven by the core's progress callbacks, and the commands' help."""

from __future__ import annotations

import inspect
import re
import time
from typing import TYPE_CHECKING

from rich.columns import Columns
from rich.console import Console
from rich.padding import Padding
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from .shots import counted

if TYPE_CHECKING:  # annotations only: optimize loads torch, which the help never needs
    from . import optimize

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
    """A progress-bar task that advances on every `optimize.Progress` event."""

    def __init__(self, progress: Progress, description: str, total: int):
        self.progress = progress
        self.task = progress.add_task(description, total=total, speed="", loss="")

    def reset(self, description: str, total: int) -> None:
        self.progress.reset(self.task, description=description, total=total, speed="", loss="")

    def __call__(self, event: optimize.Progress) -> None:
        rate = event.iteration / event.elapsed if event.elapsed > 0 else 0.0
        self.progress.update(
            self.task,
            completed=event.iteration,
            total=event.iterations,
            speed=f"{rate:.2f} it/s",
            loss=f"loss {event.loss:.4g}",
        )


class ImageDisplay:
    """`stylize image`: one bar over the iterations. Implements image_job.ImageEvents; use it as a
    context manager. Warnings are shown even with --quiet, which hides the progress only."""

    def __init__(self, *, disable: bool = False):
        self.progress = iteration_progress(disable=disable)
        self.bar: IterationBar | None = None

    def __enter__(self) -> ImageDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def started(self, description: str, iterations: int) -> None:
        self.bar = IterationBar(self.progress, description, iterations)

    def iteration(self, event: optimize.Progress) -> None:
        if self.bar is not None:
            self.bar(event)

    def message(self, text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)


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

    def __enter__(self) -> ArchiveProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def start(self, plan) -> None:
        if not self.progress.disable:
            before = f"{plan.done_before} done before"
            if plan.failed_before:
                before += f", {len(plan.failed_before)} failed before (--retry-failed to try them again)"
            if plan.kept:
                console.print(plan.resuming(), markup=False, highlight=False, soft_wrap=True)
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
    if summary.report_path is not None:
        counts.add_row("report", str(summary.report_path))
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
        self.progress = Progress(
            *iteration_progress().columns, console=console, disable=disable, speed_estimate_period=3600
        )
        self.disable = disable
        self.jobs = None
        self.frame: IterationBar | None = None
        self.stage_name = ""
        self.session_started = 0.0
        self.session_frames = 0
        self.frames_done = 0

    def __enter__(self) -> JobDisplay:
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
        self.stage_name, self.session_started, self.session_frames = name, time.perf_counter(), 0
        self.frames_done = done

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

    def iteration(self, event: optimize.Progress) -> None:
        if self.frame is not None:
            self.frame(event)

    def frame_finished(self, index: int, stats: dict) -> None:
        # Counted, not the index: shots finish their frames in any order (videoshots.py).
        self.session_frames += 1
        self.frames_done += 1
        elapsed = time.perf_counter() - self.session_started
        rate = self.session_frames / elapsed if elapsed > 0 else 0.0
        self.progress.update(
            self.jobs, completed=self.frames_done, speed=f"{rate:.3g} frames/s",
            loss=f"loss {stats.get('loss') or 0:.4g}",
        )  # fmt: skip

    def shots(self, running: int, finished: int, total: int) -> None:
        if self.jobs is not None:
            description = f"{self.stage_name} ({counted(running, 'shot')} running, {finished} of {total} done)"
            self.progress.update(self.jobs, description=description)


# --- command help ------------------------------------------------------------------------------
# Typer's help table shares a narrow terminal out evenly among its six columns: at 80 columns
# option names were cut off ("--preserve-col…") and every help text squeezed into 15 characters.
# This layout has two columns: the option's names, never cut, and its help, which gets the rest.

HELP_PANELS = ("Input and output", "Style", "Optimization", "Video and flicker", "Performance and devices", "Options")
NAME_WIDTH = 28  # a longer "--name METAVAR" puts the metavar on its own line beneath the name
MAX_HELP_WIDTH = 100  # wider lines are hard to read
TYPE_WORDS = {"int": "INT", "int range": "INT", "float": "FLOAT", "float range": "FLOAT", "path": "PATH", "str": "TEXT"}


def human_number(value: object) -> str:
    """A default as a person writes it: 3e9, 1e4, 0.001, 1 (not 3000000000.0, 10000.0, 1.0)."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(getattr(value, "value", value))  # an Enum member by its value
    if value and value == int(value) and abs(value) >= 1e4:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"
    return f"{value:g}"


def metavar(param, ctx) -> str:
    """What an option takes: INT, PATH, ... or its choices, [dis|none|independent]; '' for a flag."""
    if param.metavar:
        return param.metavar
    if getattr(param, "is_flag", False):
        return ""
    if hasattr(param, "display_type"):  # typer >= 0.20: "<int>", "<list[Path]>", "<dis|none>"
        label = param.display_type(ctx).strip("<>").removesuffix("...")
        label = label[5:-1] if label.startswith("list[") else label
    else:  # older typer: a click type
        choices = getattr(param.type, "choices", None)
        label = "|".join(map(str, choices)) if choices else param.type.name
    return f"[{label}]" if "|" in label else TYPE_WORDS.get(label.lower(), label.upper())


def param_help(param) -> Columns:
    """The help text, then [default: ...] or [required]: beside it where they fit, else beneath."""
    text = Text(" ".join((param.help or "").split()))
    default, flag = param.default, getattr(param, "is_flag", False)
    if isinstance(param.show_default, str):
        shown = param.show_default
    elif param.show_default is False or default is None or (flag and not param.secondary_opts):
        shown = None  # a flag without a --no- twin is off unless given: nothing to say
    elif flag:
        shown = param.opts[0] if default else param.secondary_opts[0]
    else:
        shown = ", ".join(map(human_number, default)) if isinstance(default, (list, tuple)) else human_number(default)
    extras = [f"[default: {shown}]"] if shown not in (None, "") else []
    extras += ["[required]"] if param.required else []
    # Columns keeps "[default: 512]" whole: on the help's line where it fits, else on its own line.
    return Columns([text, Text("  ".join(extras), style="dim")] if extras else [text], padding=(0, 2))


def param_row(param, ctx) -> tuple[Text, Text, Text]:
    if param.param_type_name == "argument":
        names, value = (param.metavar or param.name).upper(), ""
    else:
        # click builds --help's names from a set, whose order changes from run to run: sort those.
        opts = sorted(param.opts, key=len) if param.name == "help" else param.opts
        names = ", ".join(opts) + (" / " + ", ".join(param.secondary_opts) if param.secondary_opts else "")
        value = metavar(param, ctx)
    cell = Text(names, style="bold cyan")
    if value:
        cell.append("\n  " if len(names) + 1 + len(value) > NAME_WIDTH else " ")
        cell.append(value, style="yellow")
    return Text("*" if param.required else "", style="bold red"), cell, param_help(param)


def help_panel(title: str, rows: list[tuple[Text, ...]], name_width: int) -> Panel:
    table = Table.grid(padding=(0, 1), expand=True)
    table.add_column(width=1)
    table.add_column(width=name_width, no_wrap=True, overflow="fold")
    table.add_column(ratio=1, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return Panel(table, title=title, title_align="left", border_style="dim")


def paragraphs(text: str) -> str:
    """A docstring's paragraphs, each joined into one line for the console to wrap."""
    return "\n\n".join(" ".join(part.split()) for part in inspect.cleandoc(text or "").split("\n\n"))


def render_help(command, ctx) -> str:
    """The whole help of a command or of the `stylize` group, as text for the terminal."""
    out = Console(highlight=False)  # stdout's colours and width (COLUMNS; 80 when piped)
    out.width = min(out.width, MAX_HELP_WIDTH)
    with out.capture() as captured:
        # Typer writes a required argument as {INPUT}; the usual convention is plain INPUT.
        usage = re.sub(r"\{([^{}\s]+)\}", r"\1", command.get_usage(ctx))
        out.print(Padding(Text(usage, style="bold"), (1, 1, 1, 1)))
        if command.help:
            out.print(Padding(Text(paragraphs(command.help)), (0, 1, 1, 1)))
        panels: dict[str, list] = {}
        for param in command.get_params(ctx):
            if not getattr(param, "hidden", False):
                default = "Arguments" if param.param_type_name == "argument" else "Options"
                panels.setdefault(getattr(param, "rich_help_panel", None) or default, []).append(param_row(param, ctx))
        widths = [len(line) for rows in panels.values() for row in rows for line in row[1].plain.splitlines()]
        order = ("Arguments", *HELP_PANELS)
        for title in sorted(panels, key=lambda t: order.index(t) if t in order else len(order) - 1):
            out.print(help_panel(title, panels[title], max(widths) + 1))  # one space more to the help
        if isinstance(command, TyperGroup):
            out.print(commands_panel(command, ctx))
        if command.epilog:  # kept as written: it is laid out in columns
            out.print(Padding(Text(command.epilog.strip("\n")), (0, 1)))
    return captured.get()


def commands_panel(group, ctx) -> Panel:
    """One line per command: its short help, or its help's first sentence."""
    table = Table.grid(padding=(0, 2), expand=True)
    table.add_column(no_wrap=True, style="bold cyan")
    table.add_column(ratio=1, overflow="fold")
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is not None and not command.hidden:
            table.add_row(name, command.short_help or paragraphs(command.help).split(". ")[0].split("\n")[0])
    return Panel(table, title="Commands", title_align="left", border_style="dim")


class HelpCommand(TyperCommand):
    """A typer command whose --help is render_help's."""

    def format_help(self, ctx, formatter) -> None:
        formatter.write(render_help(self, ctx))


class HelpGroup(TyperGroup):
    def format_help(self, ctx, formatter) -> None:
        formatter.write(render_help(self, ctx))
