"""The `stylize` command line: wires options to the engine modules, draws progress, maps errors."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

try:  # newer typer vendors click as typer._click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
    from typer.exceptions import Abort
except ImportError:  # pragma: no cover
    from click.exceptions import Abort, ClickException, NoArgsIsHelpError

from . import cli_options as opts
from . import video_defaults
from .cli_options import MAX_BATCH_SIZE, left_unset, one_line_errors
from .cli_style import parse_blend, style_options
from .display import HelpCommand, HelpGroup
from .errors import InputError, PipelineError, one_line
from .settings import OWN_DEFAULTS, StyleSettings
from .shots import DEFAULT_SEGMENT_OVERLAP, at_frames, counted, frames_text, runs_text
from .signals import exit_code as signal_exit_code
from .signals import handled as signals_handled


class StylizeGroup(HelpGroup):
    """The `stylize` group: click's own usage errors (an unknown option, a value not among the
    choices) are one line, `error: ...`, exit 2, like the engine's, however it is called: the
    `stylize` script, main(), or typer's CliRunner."""

    def main(self, args=None, prog_name=None, standalone_mode=True, **extra):
        try:
            result = super().main(args=args, prog_name=prog_name, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0
        except NoArgsIsHelpError as exc:  # `stylize` alone: the commands and where to start
            print(exc.ctx.get_help() if exc.ctx else "usage: stylize COMMAND --help")
            code = 0
        except ClickException as exc:
            # Typer >= 0.20 checks values with pydantic, whose messages start "Value error, ".
            print(f"error: {one_line(exc.format_message().replace(': Value error, ', ': '))}", file=sys.stderr)
            code = exc.exit_code
        except Abort as exc:  # Ctrl-C or SIGTERM outside a command, e.g. while parsing options
            print("interrupted", file=sys.stderr)
            code = signal_exit_code(exc.__context__)  # 130, or 143 after SIGTERM
        if standalone_mode:
            sys.exit(code)
        return code


# What a newcomer wants first, shown under the commands by `stylize` and `stylize --help`.
START_HERE = """\
Start here:
  stylize doctor                        checks the GPU, ffmpeg and the weights
  stylize video clip.mp4 -s art.jpg     writes clip-stylized.mp4, sound kept
  stylize images ~/Photos -s art.jpg -o ~/Photos-styled
  stylize COMMAND --help                every option of a command"""

app = typer.Typer(
    name="stylize",
    cls=StylizeGroup,
    help="Neural style transfer (Gatys et al.) for images, photo archives and videos.",
    epilog=START_HERE,
    no_args_is_help=True,
    add_completion=True,  # --install-completion and --show-completion
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=print_version, is_eager=True)
    ] = False,
) -> None:
    """Neural style transfer (Gatys et al.) for images, photo archives and videos."""


@app.command(cls=HelpCommand, short_help="Stylize one image in the style of one or more others.")
@one_line_errors
@style_options
def image(
    content: opts.ContentArg,
    style: opts.StylesArg,
    output: opts.ImageOutputOpt = None,
    device: opts.DeviceOpt = "auto",
    overwrite: opts.OverwriteOpt = False,
    log_json: opts.LogJsonOpt = False,
    sheet: opts.SheetOpt = False,
    report: opts.ImageReportOpt = False,
    quiet: opts.QuietOpt = False,
    *,
    settings: StyleSettings,
    init_path: Path | None,
) -> None:
    """Stylize one image with the style of one or more others."""
    from .display import ImageDisplay, console
    from .image_job import ImageJob, default_output, run_image

    job = ImageJob(
        content=content, styles=tuple(style), output=output or default_output(content), settings=settings,
        init_path=init_path, device=device, overwrite=overwrite, log_json=log_json, sheet=sheet, report=report,
    )  # fmt: skip
    with ImageDisplay(disable=quiet) as display:
        result = run_image(job, events=display)
    if not quiet:
        terms = result.terms
        console.print(
            f"content {terms.get('content', 0):.4g}  style {terms.get('style', 0):.4g}  total "
            f"{terms.get('loss', 0):.4g}",
            markup=False, highlight=False,
        )  # fmt: skip
        if "report" in result.files:
            console.print(f"report: {result.files['report']}", markup=False, highlight=False, soft_wrap=True)
    typer.echo(str(result.output))


@app.command(cls=HelpCommand, short_help="Score a result: content, style and total loss on one fixed scale.")
@one_line_errors
def score(
    output: opts.ScoredArg,
    content: opts.ScoreContentOpt,
    style: opts.StylesArg,
    style_blend: opts.ScoreBlendOpt = None,
    size: opts.ScoreSizeOpt = 512,
    device: opts.DeviceOpt = "auto",
    json_output: opts.JsonOpt = False,
) -> None:
    """Score an image: content, style and total loss under one fixed reference configuration
    (fp32, original VGG-19, the paper's losses, 512 px), comparable across settings and tools."""
    import json

    import torch

    from .devices import pick_device
    from .images import load_image
    from .score import reference_losses, reference_vgg

    blend = parse_blend(style_blend)
    if not 16 <= size <= 16384:
        raise InputError(f"--size {size}: must be between 16 and 16384 pixels")
    if blend and len(blend) != len(style):
        raise InputError(f"--style-blend has {len(blend)} weights for {len(style)} style images")
    torch_device = pick_device(device)
    images = [load_image(path) for path in (output, content, *style)]
    # The reference is fp32: no TF32 shortcuts in matmuls or convolutions.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    losses = reference_losses(
        images[0], images[1], images[2:], blend=blend, vgg=reference_vgg().to(torch_device), size=size
    )
    if json_output:
        typer.echo(json.dumps(losses))
    else:
        typer.echo(f"content {losses['content']:.6g}  style {losses['style']:.6g}  total {losses['total']:.6g}")


@app.command(cls=HelpCommand, short_help="Stylize a photo tree into the same tree; safe to stop and resume.")
@one_line_errors
@style_options
def images(
    input_dir: opts.InputDirArg,
    style: opts.StylesArg,
    output: opts.TreeOutputOpt,
    out_format: opts.FormatOpt = None,
    quality: opts.QualityOpt = 95,
    include: opts.IncludeOpt = None,
    exclude: opts.ExcludeOpt = None,
    retry_failed: opts.RetryFailedOpt = False,
    overwrite: opts.TreeOverwriteOpt = False,
    batch_size: opts.BatchSizeOpt = "auto",
    device: opts.DevicesOpt = "auto",
    backend: opts.BackendOpt = "local",
    scheduler: opts.SchedulerOpt = None,
    quiet: opts.QuietOpt = False,
    *,
    settings: StyleSettings,
    init_path: Path | None,
    context: typer.Context,
) -> None:
    """Stylize a directory tree of photos into the same tree; safe to stop and run again (an archive begun with
    an earlier release goes on with the settings it began with for the options left unset)."""
    from .archive import ArchiveOptions, run_archive
    from .display import ArchiveProgress, archive_summary, console

    if batch_size.strip().lower() == "auto":
        size = None
    elif batch_size.strip().isdigit() and 1 <= int(batch_size) <= MAX_BATCH_SIZE:
        size = int(batch_size)
    else:
        raise InputError(f"--batch-size {batch_size!r}: must be auto or a number from 1 to {MAX_BATCH_SIZE}")
    options = ArchiveOptions(
        out_format=out_format, quality=quality, include=include or (), exclude=exclude or (), retry_failed=retry_failed,
        overwrite=overwrite, batch_size=size, devices=device, backend=backend, scheduler=scheduler,
        defaulted=frozenset(name for name in OWN_DEFAULTS if left_unset(context, name)),
    )  # fmt: skip
    with ArchiveProgress(disable=quiet) as progress:
        summary = run_archive(input_dir, output, style, settings, options, on_plan=progress.start, on_record=progress)
    if not quiet:
        for table in archive_summary(summary):
            console.print(table)
    failed, unlisted = summary.all_failed, summary.plan.unlisted
    if failed or unlisted:
        folders = f"; {counted(len(unlisted), 'folder')} could not be read" if unlisted else ""
        raise PipelineError(
            f"{len(failed)} of {summary.plan.inputs} images failed{folders} (reasons in {summary.log_path})"
        )


@app.command(cls=HelpCommand, short_help="Stylize a video frame by frame, with little flicker, sound kept.")
@one_line_errors
@style_options
def video(
    input_file: opts.VideoArg,
    style: opts.StylesArg,
    output: opts.VideoOutputOpt = None,
    work_dir: opts.WorkDirOpt = None,
    iterations_first: opts.IterationsFirstOpt = None,
    iterations_tracked: opts.IterationsTrackedOpt = video_defaults.DEFAULT_ITERATIONS_TRACKED,
    tracked_share: opts.TrackedShareOpt = video_defaults.DEFAULT_TRACKED_SHARE,
    first_stop_tolerance: opts.FirstStopToleranceOpt = video_defaults.DEFAULT_FIRST_STOP_TOLERANCE,
    start: opts.StartOpt = 0.0,
    duration: opts.DurationOpt = None,
    every_nth: opts.EveryNthOpt = 1,
    crf: opts.CrfOpt = 18,
    clean: opts.CleanOpt = False,
    keep_frames: opts.KeepFramesOpt = False,
    flow: opts.FlowOpt = video_defaults.DEFAULT_FLOW,
    flow_preset: opts.VideoFlowPresetOpt = video_defaults.DEFAULT_FLOW_PRESET,
    temporal_weight: opts.TemporalWeightOpt = video_defaults.DEFAULT_TEMPORAL_WEIGHT,
    scene_threshold: opts.SceneThresholdOpt = video_defaults.DEFAULT_SCENE_THRESHOLD,
    stop_tolerance: opts.StopToleranceOpt = video_defaults.DEFAULT_STOP_TOLERANCE,
    stop_style_tolerance: opts.StopStyleToleranceOpt = video_defaults.DEFAULT_STOP_STYLE_TOLERANCE,
    stop_change: opts.StopChangeOpt = video_defaults.DEFAULT_STOP_CHANGE,
    warp: opts.WarpOpt = video_defaults.DEFAULT_WARP,
    unreliable_start: opts.UnreliableStartOpt = video_defaults.DEFAULT_UNRELIABLE_START,
    first_rounds: opts.FirstRoundsOpt = video_defaults.DEFAULT_FIRST_ROUNDS,
    settle: opts.SettleOpt = video_defaults.DEFAULT_SETTLE,
    settle_shift: opts.SettleShiftOpt = video_defaults.DEFAULT_SETTLE_SHIFT,
    flash_frames: opts.FlashFramesOpt = video_defaults.DEFAULT_FLASH_FRAMES,
    free_flashes: opts.FreeFlashesOpt = False,
    ignore_fades: opts.IgnoreFadesOpt = False,
    overlay_share: opts.OverlayShareOpt = video_defaults.DEFAULT_OVERLAY_SHARE,
    stylize_bars: opts.StylizeBarsOpt = False,
    crop_bars: opts.CropBarsOpt = False,
    light_cuts: opts.LightCutsOpt = False,
    motion_cuts: opts.MotionCutsOpt = False,
    passes: opts.PassesOpt = 1,
    lbfgs_history: opts.LbfgsHistoryOpt = None,
    flow_workers: opts.FlowWorkersOpt = None,
    long_term: opts.LongTermOpt = "1",
    device: opts.DevicesOpt = "auto",
    backend: opts.BackendOpt = "local",
    scheduler: opts.SchedulerOpt = None,
    max_shot_frames: opts.MaxShotFramesOpt = None,
    segment_overlap: opts.SegmentOverlapOpt = DEFAULT_SEGMENT_OVERLAP,
    overwrite: opts.OverwriteOpt = False,
    quiet: opts.QuietOpt = False,
    *,
    settings: StyleSettings,
    init_path: Path | None,
    context: typer.Context,
) -> None:
    """Stylize a video file frame by frame, keeping its frame rate and sound; safe to kill and run again (a job
    begun with an earlier release goes on with the settings it began with for the options left unset).

    Shots (between scene cuts) run at once, one per device of --devices or on a Dask cluster."""
    from .display import JobDisplay, console
    from .status import flicker_line
    from .video import VideoJob, run_video

    job = VideoJob(
        input=input_file, styles=tuple(style), output=output or input_file.with_name(f"{input_file.stem}-stylized.mp4"),
        settings=settings, init_path=init_path, work_dir=work_dir, iterations_first=iterations_first,
        iterations_tracked=iterations_tracked, tracked_share=tracked_share, first_stop_tolerance=first_stop_tolerance,
        start=start, duration=duration, every_nth=every_nth, crf=crf,
        clean=clean, keep_frames=keep_frames,
        overwrite=overwrite, device=device, lbfgs_history=lbfgs_history, unreliable_start=unreliable_start,
        flow=flow, flow_preset=flow_preset, temporal_weight=temporal_weight, scene_threshold=scene_threshold,
        stop_tolerance=stop_tolerance, stop_style_tolerance=stop_style_tolerance, stop_change=stop_change,
        flow_workers=flow_workers, backend=backend,
        scheduler=scheduler, max_shot_frames=max_shot_frames, segment_overlap=segment_overlap,
        long_term=video_defaults.parse_long_term(long_term), warp=warp, first_rounds=first_rounds, passes=passes,
        settle=settle, settle_shift=settle_shift, flash_frames=flash_frames, free_flashes=free_flashes,
        ignore_fades=ignore_fades, overlay_share=overlay_share, stylize_bars=stylize_bars,
        crop_bars=crop_bars, light_cuts=light_cuts, motion_cuts=motion_cuts,
        defaulted=frozenset(name for name in video_defaults.OWN_DEFAULTS if left_unset(context, name)),
    )  # fmt: skip
    with JobDisplay(f"{job.input} -> {job.output} (work directory {job.work})", disable=quiet) as display:
        result = run_video(job, events=display)
    flicker = (result.report or {}).get("flicker")
    if flicker and not quiet:
        console.print(flicker_line(flicker), markup=False, highlight=False, soft_wrap=True)
    if result.report_page is not None and result.report_page.is_file() and not quiet:
        console.print(f"report: {result.report_page}", markup=False, highlight=False, soft_wrap=True)
    typer.echo(str(result.output))


@app.command(cls=HelpCommand, short_help="Measure how much a stylized video flickers, beside its input.")
@one_line_errors
def flicker(
    output: opts.StylizedVideoArg,
    reference: opts.ReferenceOpt,
    start: opts.MadeStartOpt = 0.0,
    duration: opts.MadeDurationOpt = None,
    every_nth: opts.MadeEveryNthOpt = 1,
    size: opts.DecodeSizeOpt = None,
    flow_preset: opts.FlowPresetOpt = video_defaults.DEFAULT_FLOW_PRESET,
    scene_threshold: opts.MeasuredThresholdOpt = video_defaults.DEFAULT_SCENE_THRESHOLD,
    flash_frames: opts.MeasuredFlashFramesOpt = video_defaults.DEFAULT_FLASH_FRAMES,
    motion_cuts: opts.MeasuredMotionCutsOpt = False,
    json_output: opts.JsonOpt = False,
) -> None:
    """Measure flicker: the mean masked warping error between consecutive frames of OUTPUT (lower
    is steadier), using optical flow and occlusion masks of REFERENCE, and the same figure for
    REFERENCE itself. For an OUTPUT made with --start, --duration or --every-nth, give the same
    options: the reference is measured on the frames OUTPUT was made from."""
    import json

    from .fades import record_texts
    from .flicker import video_flicker
    from .framerange import FrameRange

    # Checked first, as `stylize video` checks them (VideoJob.frame_range): the same one-line errors.
    frames = FrameRange(start, duration, every_nth)
    report = video_flicker(
        output, reference=reference, frames=frames, size=size, preset=flow_preset, scene_threshold=scene_threshold,
        flash_frames=flash_frames, motion_cuts=motion_cuts,
    )  # fmt: skip
    if json_output:
        typer.echo(json.dumps(report))
        return
    part = frames.text()
    part = f"; reference {part}" if part else ""
    left_out = [at_frames(report["cuts"], "scene cut", "scene cuts")] if report["cuts"] else []
    if report["flashes"]:
        left_out.append(at_frames([frames_text(first, last) for first, last in report["flashes"]], "flash", "flashes"))
    if report["moves"]:
        left_out.append(at_frames(runs_text(report["moves"]), "fast move", "fast moves"))
    if report["relit"]:
        left_out.append(at_frames(runs_text(report["relit"]), "change of light", "changes of light"))
    cuts = f"; {' and '.join(left_out)} skipped" if left_out else ""
    # The fades' pairs are measured or not by their scores, as any pair: named, not said skipped.
    cuts += "".join(f"; {text}" for text in record_texts(report))
    typer.echo(f"output {report['output']:.4g}  {output}")
    typer.echo(f"input  {report['input']:.4g}  {reference}")
    typer.echo(
        f"(mean masked warping error, squared 0..255 RGB, over {report['pairs']} frame pairs at "
        f"{report['width']}x{report['height']}{part}{cuts})"
    )


@app.command(cls=HelpCommand, short_help="Show what a video or photo job has done and what remains.")
@one_line_errors
def status(
    work_dir: opts.WorkDirArg,
) -> None:
    """Show what a job has done, what remains, and its settings."""
    from .status import status_lines

    typer.echo("\n".join(status_lines(work_dir)))


@app.command(cls=HelpCommand, short_help="Write the HTML report of a video or photo job, running or not.")
@one_line_errors
def report(
    job_dir: opts.JobDirArg,
) -> None:
    """Rebuild a job's report.html from its records (thumbnails, plots, failures) and print its path."""
    from .report_archive import write_archive_report
    from .report_archive_data import archive_layout
    from .report_video import write_video_report
    from .report_video_data import is_video_dir

    if not job_dir.is_dir():
        raise InputError(f"{job_dir}: not a directory")
    if is_video_dir(job_dir):
        path = write_video_report(job_dir, flicker_budget=None)
    elif (layout := archive_layout(job_dir)) is not None:
        path = write_archive_report(layout.output_dir, thumb_budget=None, layout=layout)
    else:
        raise InputError(f"{job_dir}: not the work directory of a stylize job (no job.json or .stylize/archive.json)")
    typer.echo(str(path))


@app.command(cls=HelpCommand, short_help="Check the GPU, ffmpeg and the VGG-19 weights.")
def doctor() -> None:
    """Check the environment: GPU, ffmpeg and the VGG-19 weights. Exit 1 if something needed is missing."""
    from .environment import checks

    results = checks()
    for check in results:
        mark = "ok" if check.ok else ("MISSING" if check.essential else "no")
        typer.echo(f"{check.name:15} {mark:8} {check.detail}")
    if any(check.essential and not check.ok for check in results):
        raise typer.Exit(1)


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings (e.g. a failed CUDA graph recording) as one `warning: ...` line, not two with source."""
    return f"warning: {one_line(str(message))}\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point: the exit status; SIGINT and SIGTERM finish the write in progress first."""
    warnings.formatwarning = one_line_warning
    with signals_handled():
        return typer.main.get_command(app).main(args=argv, prog_name="stylize", standalone_mode=False)


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
