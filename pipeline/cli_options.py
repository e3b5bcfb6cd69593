"""How the `stylize` commands are declared: help panels, each command's arguments and options as
named types (declared once here, so that a command's signature is its list of options), and the
decorator that turns the engine's errors into one line. The method's options, shared by every
command that stylizes, are in cli_style."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import typer

from . import video_defaults
from .display import HELP_PANELS, console
from .errors import PipelineError, one_line
from .settings import DEVICE_HELP, HISTORY_SIZE
from .signals import Terminated
from .signals import exit_code as signal_exit_code

MAX_BATCH_SIZE = 1024  # far beyond any GPU's memory at --size 16; more is a typo


def one_line_errors(command: Callable) -> Callable:
    """Turn the engine's errors into one line on stderr and an exit status, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
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
            raise fail(
                f"{what}; finished work is kept, run the same command again to resume", signal_exit_code(exc)
            ) from None
        except FloatingPointError as exc:
            raise fail(
                f"error: the optimization diverged ({exc}); try a lower --style-weight or --init noise", 1
            ) from None
        except Exception as exc:
            # Imported here, not above: devices loads torch (seconds), which --help, completion and
            # `stylize status` never need; a command that ran out of memory has loaded it already.
            from .devices import is_out_of_memory, out_of_memory_message

            if is_out_of_memory(exc):  # what is finished is on disk; the size is what to change
                raise fail(
                    f"error: {out_of_memory_message(kwargs.get('size'), kwargs.get('device') or 'auto')}", 1
                ) from None
            raise

    return wrapper


# Help panels (Typer's rich_help_panel), drawn in this order by display.render_help.
IO, STYLE, OPTIMIZATION, VIDEO, DEVICES = HELP_PANELS[:5]


def option(*names: str, panel: str | None = None, **kwargs) -> typer.models.OptionInfo:
    """typer.Option, case-insensitive for choices, in a help panel."""
    return typer.Option(*names, rich_help_panel=panel, case_sensitive=False, **kwargs)


def left_unset(context: typer.Context, name: str) -> bool:
    """Whether the command's option `name` took its default (the command line left it out): a
    resumed job then keeps the value it began with (settings.OWN_DEFAULTS, video_defaults.OWN_DEFAULTS)."""
    return context.get_parameter_source(name).name == "DEFAULT"  # Typer's own click, or click: by name


def argument(metavar: str, help: str, panel: str | None = IO) -> typer.models.ArgumentInfo:
    return typer.Argument(metavar=metavar, help=help, show_default=False, rich_help_panel=panel)


def no_default(*names: str, panel: str | None = IO, help: str) -> typer.models.OptionInfo:
    """An option whose default (None, or required) is not worth showing."""
    return option(*names, panel=panel, help=help, show_default=False)


# --- shared by several commands -------------------------------------------------------------------
StylesArg = Annotated[list[Path], no_default("--style", "-s", help="Style image; repeat for several.")]
DeviceOpt = Annotated[str, option("--device", panel=DEVICES, help=f"{DEVICE_HELP}.")]
OverwriteOpt = Annotated[bool, option("--overwrite", panel=IO, help="Replace an existing output.")]
QuietOpt = Annotated[bool, option("--quiet", "-q", panel=IO, help="No progress display.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
FlowPreset = Literal[video_defaults.FLOW_PRESETS]
FlowPresetOpt = Annotated[FlowPreset, option(help="OpenCV DIS optical flow preset.")]
VideoFlowPresetOpt = Annotated[FlowPreset, option(panel=VIDEO, help="OpenCV DIS optical flow preset.")]

# --- image ----------------------------------------------------------------------------------------
ContentArg = Annotated[Path, argument("CONTENT", "Content image.")]
ImageOutputOpt = Annotated[
    Path | None,
    no_default(
        "--output",
        "-o",
        help="Output image (.png, .jpg, .webp, .tif); default CONTENT-stylized.png beside the content.",
    ),
]
LogJsonOpt = Annotated[
    bool, option("--log-json", panel=IO, help="Write the loss history as JSON next to the output (OUTPUT.json).")
]
SheetOpt = Annotated[
    bool, option("--sheet", panel=IO, help="Also write content | style | result side by side (OUTPUT-sheet.png).")
]
ImageReportOpt = Annotated[
    bool,
    option("--report", panel=IO, help="Also write an HTML report: the images and the loss curve (OUTPUT-report.html)."),
]

# --- score ----------------------------------------------------------------------------------------
ScoredArg = Annotated[Path, argument("OUTPUT", "The stylized image to score.")]
ScoreContentOpt = Annotated[Path, no_default("--content", "-c", help="The content image it was made from.")]
ScoreBlendOpt = Annotated[str | None, typer.Option(help="Blend weights of the style images.", show_default=False)]
ScoreSizeOpt = Annotated[int, typer.Option(help="Reference long side; keep the default to compare results.")]

# --- images ---------------------------------------------------------------------------------------
InputDirArg = Annotated[
    Path, argument("INPUT_DIR", "Directory tree of photos (searched recursively; hidden files skipped).")
]
TreeOutputOpt = Annotated[
    Path,
    no_default(
        "--output", "-o", help="Output directory: the same tree, stylized. Records and log go to OUTPUT/.stylize."
    ),
]
FormatOpt = Annotated[
    str | None,
    no_default(
        "--format", help="png, jpg or webp (default: each input's own format where it can be written, else png)."
    ),
]
QualityOpt = Annotated[int, option(panel=IO, help="JPEG and WebP quality, 1-100.")]
IncludeOpt = Annotated[
    list[str] | None,
    no_default(
        "--include",
        help="Only files matching this glob (repeatable); without '/' it matches the file name, with '/' the path "
        "inside INPUT_DIR.",
    ),
]
ExcludeOpt = Annotated[
    list[str] | None, no_default("--exclude", help="Skip files matching this glob (repeatable), as for --include.")
]
RetryFailedOpt = Annotated[
    bool, option("--retry-failed", panel=IO, help="Try again the images that failed in an earlier run.")
]
TreeOverwriteOpt = Annotated[
    bool,
    option(
        "--overwrite",
        panel=IO,
        help="Replace files in the output tree this job did not write (else those images fail).",
    ),
]
BatchSizeOpt = Annotated[
    str, option(panel=DEVICES, help="Images optimized together: auto (from free GPU memory; 1 on CPU) or a number.")
]
DevicesOpt = Annotated[
    str,
    option(
        "--device",
        "--devices",
        panel=DEVICES,
        help="One device or a comma list, one worker each, e.g. cuda:0,cuda:1; auto: every GPU, else MPS or the CPU.",
    ),
]
BackendOpt = Annotated[
    Literal["local", "dask"], option(panel=DEVICES, help="local, or dask to run on the Dask cluster at --scheduler.")
]
SchedulerOpt = Annotated[
    str | None,
    no_default("--scheduler", panel=DEVICES, help="Dask scheduler address for --backend dask, e.g. tcp://host:8786."),
]

# --- video ----------------------------------------------------------------------------------------
VideoArg = Annotated[Path, argument("INPUT", "Video file (any format ffmpeg reads).")]
VideoOutputOpt = Annotated[
    Path | None,
    no_default(
        "--output",
        "-o",
        help="Output video (.mp4, .m4v, .mov, .mkv); default INPUT-stylized.mp4 beside the input.",
    ),
]
WorkDirOpt = Annotated[
    Path | None,
    no_default(
        "--work-dir",
        help="Frames, job record and log; default OUTPUT.work beside the output. Run the same command again to resume.",
    ),
]
IterationsFirstOpt = Annotated[
    int | None,
    no_default(
        "--iterations-first",
        panel=VIDEO,
        help=f"Iterations for a shot's first frame (default: twice --iterations, at least "
        f"{video_defaults.MIN_FIRST_ITERATIONS}: later frames keep the texture it lays out; --first-stop-tolerance "
        "may stop it sooner); later frames start from the previous one with --iterations.",
    ),
]
FirstStopToleranceOpt = Annotated[
    float,
    option(
        panel=VIDEO,
        help="A shot's first frame stops once its loss and style term fell by less than this fraction over "
        f"{video_defaults.FIRST_STOP_WINDOW} iterations, within --iterations-first; 0 runs them all.",
    ),
]
IterationsTrackedOpt = Annotated[
    int,
    option(
        panel=VIDEO,
        help="Iterations at most for a later frame (--flow dis; with --tracked-share, one the flow tracks that "
        "well): past them the stopping rule's tail changes it by a percent or two. 0: --iterations for every frame.",
    ),
]
TrackedShareOpt = Annotated[
    float,
    option(
        panel=VIDEO,
        help="The share of a later frame's pixels the flow must leave reliable for --iterations-tracked to cap it "
        "(--flow dis). 0: every later frame; 0.9 as the release before, where frames with more unreliable pixels "
        "ran to the stopping rule: on moving footage up to 37% more iterations for 0.5-1.5% less style loss at 512 px.",
    ),
]
StartOpt = Annotated[float, option(panel=VIDEO, help="Start this many seconds into the input.")]
DurationOpt = Annotated[float | None, no_default("--duration", panel=VIDEO, help="Stylize only this many seconds.")]
EveryNthOpt = Annotated[
    int, option(panel=VIDEO, help="Keep every n-th frame, for previews (the output keeps the input's duration).")
]
CrfOpt = Annotated[int, option(panel=IO, help="H.264 quality: 0 lossless ... 51 worst; 18 is visually lossless.")]
CleanOpt = Annotated[
    bool,
    option(
        "--clean",
        panel=IO,
        help="Delete the decoded frames, optical flow and stylized frames after a successful encode; the report stays.",
    ),
]
KeepFramesOpt = Annotated[
    bool,
    option(
        "--keep-frames",
        panel=IO,
        help=(
            "Keep every decoded and stylized frame and flow pair, for inspection; by default only what a resume "
            "needs is kept, so the work directory stays small whatever the video's length."
        ),
    ),
]
FlowOpt = Annotated[
    Literal["dis", "none", "independent"],
    option(
        panel=VIDEO,
        help="dis: start each frame from the previous stylized frame warped by optical flow, with a temporal loss and "
        "new shots at scene cuts; none: from the previous stylized frame as it is; independent: every frame on its own "
        "(the flicker baseline).",
    ),
]
TemporalWeightOpt = Annotated[
    float,
    option(
        panel=VIDEO,
        help="Weight of the temporal loss (--flow dis): higher holds still what the flow can follow, 0 keeps only the "
        "warped start.",
    ),
]
SceneThresholdOpt = Annotated[
    float,
    option(
        panel=VIDEO,
        help="Cut score (0..1, from colour histograms and flow reliability) above which a frame starts a new shot; 1 "
        "never cuts.",
    ),
]
StopToleranceOpt = Annotated[
    float,
    option(
        panel=VIDEO,
        help="Warm-started frames stop once the loss fell by less than this fraction over "
        f"{video_defaults.STOP_WINDOW} iterations; 0 runs all --iterations.",
    ),
]
StopStyleToleranceOpt = Annotated[
    float,
    option(
        panel=VIDEO,
        help="Warm-started frames stop only once the style term too fell by less than this fraction over "
        f"{video_defaults.STOP_WINDOW} iterations (with a style whose content term is the larger, the total stops "
        "moving first); 0: the total alone.",
    ),
]
StopChangeOpt = Annotated[
    float,
    option(
        panel=VIDEO,
        help="Warm-started frames also stop once the image moved by less than this many levels (0..255, mean) over "
        f"{video_defaults.STOP_WINDOW} iterations; 0: off.",
    ),
]
WarpOpt = Annotated[
    Literal["bilinear", "bicubic"],
    option(
        panel=VIDEO,
        help="How a stylized frame is carried onto the next by the flow (the warm start and the temporal loss's "
        "target): bilinear or bicubic (keeps the texture sharper over a long shot).",
    ),
]
UnreliableStartOpt = Annotated[
    Literal["warped", "content"],
    option(
        panel=VIDEO,
        help="Where the flow cannot be trusted (occlusions, motion boundaries, the frame's border), a frame starts "
        "from the warped previous frame (warped) or from its content frame (content: the look the releases before "
        "gave, at more iterations a frame).",
    ),
]
FirstRoundsOpt = Annotated[
    int,
    option(
        panel=VIDEO,
        help="A shot's first frame runs cold, then this many rounds in all: each later one from the image "
        "resampled as a warm start is (--settle: how), so the shot starts in the look its later frames keep "
        "(1: one run).",
    ),
]
SettleOpt = Annotated[
    Literal["held", "free"],
    option(
        panel=VIDEO,
        help="How a shot's first frame settles after its cold run (--first-rounds): held, each round as a warm frame "
        "of a still shot runs (held to the image resampled by the temporal loss, stopped by the warm frames' rule), "
        f"so the shot starts in the look its later frames keep; free, {video_defaults.SETTLE_ITERATIONS} iterations "
        "a round without the temporal loss (the releases before: a first frame crisper than the frames after it).",
    ),
]
SettleShiftOpt = Annotated[
    float,
    option(
        panel=VIDEO,
        help="Each settling round of a shot's first frame (--first-rounds) starts from it moved by this many pixels "
        "diagonally and back, as a warm start is carried: the larger, the softer the shot's first frames "
        f"(0 to {video_defaults.MAX_SETTLE_SHIFT}; {video_defaults.MAX_SETTLE_SHIFT}: the most a warp blurs; "
        "0.1 at 128 px opens a shot as sharp as its later frames, at some flicker).",
    ),
]
FlashFramesOpt = Annotated[
    int,
    option(
        panel=VIDEO,
        help="A change of light of at most this many frames after which the picture is back (a camera's flash, a "
        "strobe) is no scene cut: the shot goes on through it, and the frame after it continues from the frame "
        "before it (0: a cut, as before).",
    ),
]
FreeFlashesOpt = Annotated[
    bool,
    option(
        "--free-flashes",
        panel=VIDEO,
        help="A flash's frames free of the temporal loss, their texture laid out anew, as before (by default they "
        "are held to the frame before the flash, through optical flow computed in that frame's light).",
    ),
]
IgnoreFadesOpt = Annotated[
    bool,
    option(
        "--ignore-fades",
        panel=VIDEO,
        help="Stylize a fade's frames as they come, the output in the style's light to the end, as before (by "
        "default a fade to or from black or white is stylized at the picture's full light and faded on output, "
        "and black or white frames stay so).",
    ),
]
OverlayShareOpt = Annotated[
    float,
    option(
        panel=VIDEO,
        help="The share of a frame a caption, a logo or a subtitle may cover and the frame still be black or white "
        "(written as it is, a fade's end), and that a fade's light is measured without "
        f"(0 to {video_defaults.MAX_OVERLAY_SHARE}; 0: the whole frame, as before).",
    ),
]
StylizeBarsOpt = Annotated[
    bool,
    option(
        "--stylize-bars",
        panel=VIDEO,
        help="Stylize a letterbox's or pillarbox's black bars as any black, as before (by default the rows and "
        "columns at the frame's edges that every picture of the range leaves black stay black in the output).",
    ),
]
CropBarsOpt = Annotated[
    bool,
    option(
        "--crop-bars",
        panel=VIDEO,
        help="Stylize only the picture between a letterbox's or pillarbox's bars (13-16% less time a frame at "
        "128 px, at some flicker and style loss: docs/video-quality.md); by default the whole frame, the bars "
        "drawn black over it.",
    ),
]
LightCutsOpt = Annotated[
    bool,
    option(
        "--light-cuts",
        panel=VIDEO,
        help="Scene cuts by the cut scores of the frames as they are, whatever their light, as before (by default "
        "a pair that scores as a cut and changes light is looked at again in the light of its first frame: the "
        "same picture there is no cut, a cut inside a fade ends the fade, black frames in a row are one shot).",
    ),
]
MotionCutsOpt = Annotated[
    bool,
    option(
        "--motion-cuts",
        panel=VIDEO,
        help="A scene cut wherever a pair of frames scores over --scene-threshold, fast motion too, as before (by "
        "default a pair over it by its flow alone, its colours alike, is a cut only where the flow fails far more "
        "than in the pairs beside it: a whip pan or a shaken camera goes on in its shot).",
    ),
]
LbfgsHistoryOpt = Annotated[
    int | None,
    no_default(
        panel=VIDEO,
        help="Curvature pairs L-BFGS keeps for each frame: more reach a warm frame's optimum in fewer iterations; "
        f"each costs two frame-sized float32 buffers. Default: {video_defaults.DEFAULT_LBFGS_HISTORY} within "
        f"{video_defaults.LBFGS_HISTORY_BYTES / 1e9:g} GB (up to 1080p), never fewer than {HISTORY_SIZE}.",
    ),
]
PassesOpt = Annotated[
    int,
    option(
        panel=VIDEO,
        help="Passes over each shot, in alternating directions, each frame blended with its neighbours and held to "
        "both (Ruder et al. 2018's multi-pass; for strong camera motion). Keeps the shot's frames on disk until its "
        "last pass: bound it with --max-shot-frames.",
    ),
]
LongTermOpt = Annotated[
    str,
    option(
        panel=VIDEO,
        help="Earlier frames the temporal loss holds each frame to (--flow dis), e.g. 1,2,4: frame i-k where frames "
        "nearer do not cover a pixel (Ruder et al.'s long-term consistency). 1: the previous frame alone.",
    ),
]
FlowWorkersOpt = Annotated[
    int | None,
    no_default(
        "--flow-workers",
        panel=DEVICES,
        help="CPU processes computing optical flow beside the GPU (default: one per core but one, at most 8).",
    ),
]
MaxShotFramesOpt = Annotated[
    int | None,
    no_default(
        "--max-shot-frames",
        panel=DEVICES,
        help="Split shots longer than this into segments that run at once on several devices, each starting afresh "
        "and cross-faded into the next over --segment-overlap frames; default: never split.",
    ),
]
SegmentOverlapOpt = Annotated[
    int, option(panel=DEVICES, help="Frames two segments of a long shot share, cross-faded (--max-shot-frames).")
]

# --- flicker --------------------------------------------------------------------------------------
StylizedVideoArg = Annotated[Path, argument("OUTPUT", "The stylized video.", panel=None)]
ReferenceOpt = Annotated[
    Path,
    no_default(
        "--reference",
        "-r",
        panel=None,
        help="The video OUTPUT was made from: flow and occlusion masks are computed on it.",
    ),
]
MadeStartOpt = Annotated[
    float, typer.Option(help="The --start OUTPUT was made with: the reference is measured from this many seconds in.")
]
MadeDurationOpt = Annotated[float | None, typer.Option(help="The --duration OUTPUT was made with.", show_default=False)]
MadeEveryNthOpt = Annotated[
    int, typer.Option(help="The --every-nth OUTPUT was made with: every n-th frame of the reference is measured.")
]
DecodeSizeOpt = Annotated[
    int | None, typer.Option(help="Long side both videos are decoded at (default: OUTPUT's).", show_default=False)
]
MeasuredThresholdOpt = Annotated[
    float, typer.Option(help="Frame pairs with a higher cut score (0..1) are scene cuts and not measured.")
]
MeasuredFlashFramesOpt = Annotated[
    int,
    typer.Option(
        help="A change of light of at most this many frames after which the picture is back is called a flash, "
        "not two scene cuts, as stylize video calls it (its pairs are not measured either; 0: cuts)."
    ),
]
MeasuredMotionCutsOpt = Annotated[
    bool,
    typer.Option(
        "--motion-cuts",
        help="Call every pair over --scene-threshold a scene cut, fast motion too, as stylize video --motion-cuts "
        "does (by default a pair over it by its flow alone is a fast move unless the flow fails far more than in "
        "the pairs beside it; its pair is not measured either).",
    ),
]

# --- status, report -------------------------------------------------------------------------------
WorkDirArg = Annotated[
    Path, argument("WORK_DIR", "A job's work directory (e.g. OUTPUT.work of a video job).", panel=None)
]
JobDirArg = Annotated[
    Path, argument("DIR", "A video job's work directory, or the output directory of `stylize images`.", panel=None)
]
