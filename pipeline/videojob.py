"""What a video job is: its inputs and settings with their defaults and checks, what it reports
while it runs (JobEvents) and what it returns (VideoResult). video.py runs it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .backends import check_backend
from .encode import DEFAULT_CRF, container_for
from .errors import InputError
from .framerange import FrameRange
from .images import open_rgb
from .lbfgs import HISTORY_SIZE
from .manifest import writable_directory
from .settings import OWN_DEFAULTS as STYLE_OWN_DEFAULTS
from .shots import DEFAULT_SEGMENT_OVERLAP
from .stylize import MAX_ITERATIONS, Progress, StyleSettings
from .workdir import refuse_foreign_work_dir

FLOW_MODES = ("dis", "none", "independent")
DEFAULT_FLOW = "dis"
DEFAULT_FLOW_PRESET = "medium"
# Measured (README, "Flicker"): our loss terms are large (content ~1e12, style ~1e12 per frame,
# both independent of the size) while TemporalLoss is a mean of squared 0..255 differences
# (~1e2), so the weight is large too. Measured at 64-96 px (all three terms are independent of
# the size): 3e9 brings flicker down to about the input's own warping error, the output follows
# the motion as closely as the input does, and the style loss stays within ~15% of the warped
# start alone; 1e10 and more hold the output to the flow's prediction tighter than the input
# itself follows it (changes the flow misses are suppressed) and cost 40% or more style loss.
DEFAULT_TEMPORAL_WEIGHT = 3e9
# Cut scores of consecutive frames of one shot stay well below this, those across a cut above.
DEFAULT_SCENE_THRESHOLD = 0.6
# Warm-started frames stop once the loss fell by less than this fraction over STOP_WINDOW
# iterations: a still shot then costs a few iterations, a moving one up to its --iterations.
# With DEFAULT_LBFGS_HISTORY's 50 pairs, 3e-3 took a third fewer iterations than the releases
# before (20 pairs, 1e-3) at style loss within 2%. A shot's first frame at MIN_FIRST_ITERATIONS'
# 1500 lowers the whole shot's style loss, and 5e-3 spends some of that on speed: against the
# previous default (3e-3, the first frame at 600), on four clips at 64 px and two at 128 px,
# 13-17% fewer iterations, 4-17% less flicker, style loss from 0.4% above (the shake) to 10.6%
# below; against the release before issue 17, 31-49% of its iterations at 0.0-6.8% less style
# loss (docs/video-quality.md, first section). 1.5e-2 with a first frame of 600 cost 6.6% style
# loss on bikes.mp4.
DEFAULT_STOP_TOLERANCE = 5e-3
STOP_WINDOW = 10
# And only once the style term too fell by less than this fraction over STOP_WINDOW iterations.
# The total alone stops a frame while its style term still falls wherever the content term is the
# larger: with gravel.png (content ~15 times style) the defaults above left 9.7% more style loss
# than the release before on the pristine clip at 64 px, and 2e-2 on the style term gives -1.6%
# at 36.1 iterations a frame, still less flicker by all three measures; with ihc.png (style 0.6-2
# times content) the total's rule is met later than this one and nothing changes
# (docs/video-quality.md, "Another style"). 0: the total alone, as the releases before.
DEFAULT_STOP_STYLE_TOLERANCE = 2e-2
# The options whose defaults releases changed, each with the value a job's stylize settings imply
# where they leave it out (the releases that added a setting leave it out at its earlier value, so
# that the jobs begun before keep their hash; None: always recorded where it applies). A rerun
# that leaves such an option unset resumes a job begun under other defaults with the values it
# began with, where that keeps its stylize stage's settings as recorded (video.py,
# VideoRun.keep_own_defaults): an upgrade mid-job does not discard hours of stylized frames for a
# default nobody asked to change. Issue 17 changed these from the release before it (18ed178):
# 20 curvature pairs, the unreliable pixels started from the content, the first frame in one run
# of 600 iterations, warm frames stopped at 1e-3 (then 3e-3), and the style settings' own
# (settings.OWN_DEFAULTS: no range term).
OWN_DEFAULTS = {
    "iterations_first": None,
    "stop_tolerance": None,
    "stop_style_tolerance": 0.0,
    "lbfgs_history": HISTORY_SIZE,
    "unreliable_start": "content",
    "first_rounds": 1,
    **STYLE_OWN_DEFAULTS,  # StyleSettings fields; the others are VideoJob's
}
# And once the image moved by less than this many 0..255 levels (mean per value) over STOP_WINDOW
# iterations; 0: off (docs/video-quality.md).
DEFAULT_STOP_CHANGE = 0.0
# --long-term: the temporal loss applies against these earlier stylized frames (Ruder et al. 2016,
# "long-term consistency"; 1: the previous frame alone). Each frame further back keeps its content
# frame, stylized frame and flow pair on disk that much longer, hence a bound.
DEFAULT_LONG_TERM = (1,)
# How a stylized frame is carried onto the next (the warm start and the temporal loss's target):
# a bilinear warp by a half pixel halves the Laplacian variance of a stylized texture, and the
# temporal loss then holds the next frame to that blur (docs/video-quality.md).
WARP_MODES = ("bilinear", "bicubic")
DEFAULT_WARP = "bilinear"
# What a warm frame starts from where the flow cannot be trusted (disocclusions, motion boundaries,
# the frame's border): the warped previous frame, as Ruder et al. initialize (its temporal loss is
# masked there all the same, so the content loss restyles those pixels), or the content frame, as
# the releases before did. Starting from the content costs each frame a cold start's work on those
# pixels: on the sample clip at 128 px (4-9% of the pixels unreliable) the warped start took 39.8
# iterations a warm frame against 64.4, 14-38% fewer on three clips, at 16-23% less flicker; the
# price is a softer texture (the content start's grain) and up to 2.6% more style loss
# (docs/video-quality.md).
UNRELIABLE_STARTS = ("warped", "content")
DEFAULT_UNRELIABLE_START = "warped"
# A shot's first frame settles: a cold run, then this many rounds in all, each later one from the
# image resampled as a warm start is (temporal.py, "Settling"); 1: the cold run alone. Measured on
# the sample clip at 64 and 128 px and the shake (docs/video-quality.md): 2 rounds gave the
# lowest style loss, sharpness retention nearest 1 on the sample clip and flicker within 3% of the
# lowest; after 4, the first frame came out softer than the shot's later frames.
DEFAULT_FIRST_ROUNDS = 2
# Each settling round after the cold run: enough for L-BFGS to gather curvature and restore the
# grain the resampling took (measured with the first frame at 600: 550 cold and one run of 50).
SETTLE_ITERATIONS = 50
MAX_FIRST_ROUNDS = 16
# The curvature pairs L-BFGS keeps for every frame of a video job (lbfgs.py; images keep
# lbfgs.HISTORY_SIZE, 20). A warm frame starts near its optimum, where the slow tail of the
# descent is what costs iterations, and a longer history models that tail better: on the sample
# clip at 64 px, 50 pairs reached a lower style loss than 20 in 5% fewer iterations, 100 no better
# than 50. Memory: two frame-sized float32 buffers a pair. Unless --lbfgs-history is given, the
# pairs are bounded by LBFGS_HISTORY_BYTES (50 pairs at 1080p) and never fewer than the releases
# before kept: a 4K job's history takes the memory it took then, not 2.5 times more.
DEFAULT_LBFGS_HISTORY = 50
LBFGS_HISTORY_BYTES = 2.5e9
MAX_LBFGS_HISTORY = 200
MAX_LONG_TERM = 16
# A shot's first frame, unless --iterations-first is given: twice --iterations, and never fewer
# than this. It is a cold start, whatever the warm frames' budget, and the warm frames keep the
# texture it lays out, so its style loss is the shot's: at 1500 iterations instead of the
# releases before's 600 the shots' style loss was 1.0-13% lower on four clips at 64 px (the shake,
# the pan, carphone and its pristine cut) and 1.4-7.5% below the release before's, at 2-11% less
# flicker and as many warm-frame iterations; 1000 got about two thirds of the gain on carphone
# (docs/video-quality.md, first section). The 900 iterations more a shot cost about 9 s at 720p
# at the 10 ms an iteration on an H200. Capped warm frames need it most: with
# --iterations 40 and the first frame at twice that (80), the style loss was 21% above the
# default's on the pan and 26% on bikes.mp4; with the first frame at 600, 10.5% and 12.5% ("A cap
# of 40, the first frame at 600").
MIN_FIRST_ITERATIONS = 1500
# --passes: Ruder, Dosovitskiy and Brox's multi-pass algorithm (2018, passes.py); each pass costs
# about what the first does, hence a bound.
MAX_PASSES = 8
# The options that shape how --flow dis carries one frame onto the next, with their defaults: any
# other value is refused with another --flow, where it would be silently ignored.
DIS_ONLY = {
    "temporal_weight": DEFAULT_TEMPORAL_WEIGHT,
    "long_term": DEFAULT_LONG_TERM,
    "warp": DEFAULT_WARP,
    "unreliable_start": DEFAULT_UNRELIABLE_START,
    "first_rounds": DEFAULT_FIRST_ROUNDS,
    "passes": 1,
}
# Absurd values are refused rather than run: a typo'd count would spawn processes or iterate for ever.
MAX_FLOW_WORKERS = 256
MAX_SHOT_FRAMES = 10_000_000
MAX_SEGMENT_OVERLAP = 1000


@dataclass(frozen=True, kw_only=True)
class VideoJob:
    """Everything a video job is made of; `video.run_video` does it (or what is left of it)."""

    input: Path
    styles: tuple[Path, ...]
    output: Path
    settings: StyleSettings
    init_path: Path | None = None
    work_dir: Path | None = None  # default: OUTPUT.work beside the output
    iterations_first: int | None = None  # default: twice settings.iterations, at least MIN_FIRST_ITERATIONS
    start: float = 0.0  # seconds
    duration: float | None = None  # seconds; None: to the end
    every_nth: int = 1
    crf: int = DEFAULT_CRF
    clean: bool = False
    keep_frames: bool = False  # keep every decoded and stylized frame and flow pair (for inspection)
    overwrite: bool = False
    device: str = "auto"
    flow: str = DEFAULT_FLOW  # dis: flow-warped start + temporal loss; none: previous frame; independent
    flow_preset: str = DEFAULT_FLOW_PRESET
    temporal_weight: float = DEFAULT_TEMPORAL_WEIGHT
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD
    stop_tolerance: float = DEFAULT_STOP_TOLERANCE
    stop_style_tolerance: float = DEFAULT_STOP_STYLE_TOLERANCE  # and the style term's change (fraction)
    flow_workers: int | None = None  # default: flowstage.default_workers()
    backend: str = "local"  # local: shots on --devices' threads; dask: on the cluster at `scheduler`
    scheduler: str | None = None  # the Dask scheduler's address
    max_shot_frames: int | None = None  # longer shots are split into segments (shots.py); None: never
    segment_overlap: int = DEFAULT_SEGMENT_OVERLAP  # frames two segments share, cross-faded
    long_term: tuple[int, ...] = DEFAULT_LONG_TERM  # frames i-k the temporal loss applies against
    stop_change: float = DEFAULT_STOP_CHANGE  # warm frames also stop once the image moves less (levels)
    warp: str = DEFAULT_WARP  # the interpolation that carries a stylized frame onto the next
    unreliable_start: str = DEFAULT_UNRELIABLE_START  # a warm frame's start where the flow is unreliable
    first_rounds: int = DEFAULT_FIRST_ROUNDS  # a shot's first frame settles in this many runs
    passes: int = 1  # passes over each shot, in alternating directions (passes.py)
    lbfgs_history: int | None = None  # L-BFGS's curvature pairs for each frame; None: history_pairs decides
    # Of OWN_DEFAULTS, those the command line left unset: a resumed job may keep its own values for them.
    defaulted: frozenset[str] = frozenset()

    def __post_init__(self):
        self.frame_range  # noqa: B018  (checks --start, --duration and --every-nth)
        if self.iterations_first is not None and not 1 <= self.iterations_first <= MAX_ITERATIONS:
            raise InputError(f"--iterations-first {self.iterations_first}: must be between 1 and {MAX_ITERATIONS}")
        if not 0 <= self.crf <= 51:
            raise InputError(f"--crf {self.crf}: must be between 0 (lossless) and 51")
        if not self.styles:
            raise InputError("at least one --style image is needed")
        self._check_flow()
        self._check_shots()

    def _check_shots(self) -> None:
        check_backend(self.backend, self.device, self.scheduler)
        if self.max_shot_frames is not None and not 2 <= self.max_shot_frames <= MAX_SHOT_FRAMES:
            raise InputError(f"--max-shot-frames {self.max_shot_frames}: must be between 2 and {MAX_SHOT_FRAMES}")
        limit = (self.max_shot_frames or 2 * MAX_SEGMENT_OVERLAP) // 2
        if not 0 <= self.segment_overlap <= limit:
            raise InputError(
                f"--segment-overlap {self.segment_overlap}: must be between 0 and half of --max-shot-frames ({limit})"
            )

    def _check_flow(self) -> None:
        if self.flow not in FLOW_MODES:
            raise InputError(f"--flow {self.flow!r}: must be one of {', '.join(FLOW_MODES)}")
        if self.flow_preset not in ("ultrafast", "fast", "medium"):
            raise InputError(f"--flow-preset {self.flow_preset!r}: must be ultrafast, fast or medium")
        if not math.isfinite(self.temporal_weight) or self.temporal_weight < 0:
            raise InputError(f"--temporal-weight {self.temporal_weight}: must be a finite number >= 0")
        if not 0 <= self.scene_threshold <= 1:
            raise InputError(f"--scene-threshold {self.scene_threshold}: must be between 0 and 1 (1: never cut)")
        if not 0 <= self.stop_tolerance < 1:
            raise InputError(f"--stop-tolerance {self.stop_tolerance}: must be >= 0 (0: never stop early) and < 1")
        if not 0 <= self.stop_style_tolerance < 1:
            raise InputError(
                f"--stop-style-tolerance {self.stop_style_tolerance}: must be >= 0 (0: the total loss alone) and < 1"
            )
        if not math.isfinite(self.stop_change) or not 0 <= self.stop_change < 255:
            raise InputError(f"--stop-change {self.stop_change}: must be >= 0 (0: off) and < 255 levels")
        if self.flow_workers is not None and not 1 <= self.flow_workers <= MAX_FLOW_WORKERS:
            raise InputError(f"--flow-workers {self.flow_workers}: must be between 1 and {MAX_FLOW_WORKERS}")
        if self.warp not in WARP_MODES:
            raise InputError(f"--warp {self.warp!r}: must be one of {', '.join(WARP_MODES)}")
        if self.unreliable_start not in UNRELIABLE_STARTS:
            raise InputError(
                f"--unreliable-start {self.unreliable_start!r}: must be one of {', '.join(UNRELIABLE_STARTS)}"
            )
        if self.lbfgs_history is not None and not 1 <= self.lbfgs_history <= MAX_LBFGS_HISTORY:
            raise InputError(f"--lbfgs-history {self.lbfgs_history}: must be between 1 and {MAX_LBFGS_HISTORY}")
        if not 1 <= self.first_rounds <= MAX_FIRST_ROUNDS:
            raise InputError(f"--first-rounds {self.first_rounds}: must be between 1 and {MAX_FIRST_ROUNDS}")
        self._check_long_term()
        self._check_passes()
        for name, default in DIS_ONLY.items():
            if self.flow != "dis" and getattr(self, name) != default:
                raise InputError(f"--{name.replace('_', '-')} applies to --flow dis only, not --flow {self.flow}")

    def history_pairs(self, size: tuple[int, int]) -> int:
        """The curvature pairs L-BFGS keeps for frames of `size` (H, W): --lbfgs-history, or
        DEFAULT_LBFGS_HISTORY within LBFGS_HISTORY_BYTES and at least lbfgs.HISTORY_SIZE."""
        if self.lbfgs_history is not None:
            return self.lbfgs_history
        pair = 2 * 4 * 3 * size[0] * size[1]  # a step and a gradient change, float32 RGB
        return max(HISTORY_SIZE, min(DEFAULT_LBFGS_HISTORY, int(LBFGS_HISTORY_BYTES // pair)))

    def _check_passes(self) -> None:
        if not 1 <= self.passes <= MAX_PASSES:
            raise InputError(f"--passes {self.passes}: must be between 1 and {MAX_PASSES}")

    def _check_long_term(self) -> None:
        text = ",".join(str(k) for k in self.long_term)
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in self.long_term):
            raise InputError(f"--long-term {text}: must be whole numbers such as 1,2,4")
        if not self.long_term or self.long_term[0] != 1:
            raise InputError(f"--long-term {text}: must start with 1 (the previous frame), as in 1,2,4")
        if any(b <= a for a, b in zip(self.long_term, self.long_term[1:])):
            raise InputError(f"--long-term {text}: must increase, as in 1,2,4")
        if self.long_term[-1] > MAX_LONG_TERM:
            raise InputError(f"--long-term {text}: frames at most {MAX_LONG_TERM} back")

    @property
    def frame_range(self) -> FrameRange:
        return FrameRange(self.start, self.duration, self.every_nth)

    @property
    def work(self) -> Path:
        return self.work_dir if self.work_dir is not None else self.output.with_name(self.output.name + ".work")

    def held_frames(self, frames: int) -> int:
        """Frames one shot keeps on disk whole (--passes > 1): at most a segment's, or the range's."""
        return min(frames, self.max_shot_frames or frames) if self.passes > 1 else 0

    @property
    def reach(self) -> int:
        """How many frames back a frame's start reads: what the work directory keeps that long.
        With --passes > 1 a later pass reads every frame of the shot again: all of it is kept."""
        return self.long_term[-1] if self.passes == 1 else MAX_SHOT_FRAMES

    @property
    def first_iterations(self) -> int:
        if self.iterations_first is not None:
            return self.iterations_first
        return min(MAX_ITERATIONS, max(2 * self.settings.iterations, MIN_FIRST_ITERATIONS))


def parse_long_term(text: str) -> tuple[int, ...]:
    """--long-term's comma-separated list ("1,2,4"); VideoJob checks the values."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"--long-term {text}: must be whole numbers separated by commas, such as 1,2,4") from None


def check_paths(job: VideoJob) -> None:
    """Refuse, before any work, inputs and outputs that cannot work or would destroy something."""
    if not job.input.exists():
        raise InputError(f"{job.input}: file not found")
    if job.output.exists() and job.output.resolve() == job.input.resolve():
        raise InputError(f"{job.output}: output is the same file as the input")
    if job.output.is_dir():
        raise InputError(f"{job.output}: output is a directory; give a file name such as {job.output / 'stylized.mp4'}")
    container_for(job.output)
    if job.work.resolve() in (job.output.resolve(), job.input.resolve()):
        which = "output" if job.work.resolve() == job.output.resolve() else "input"
        raise InputError(f"--work-dir {job.work}: is the {which} file's own path")
    for path in (*job.styles, *([job.init_path] if job.init_path else [])):
        # Decoded now, not after the frames are: a broken style image must not cost a decode.
        open_rgb(path)
    refuse_foreign_work_dir(job.work)
    if job.settings.style_blend and len(job.settings.style_blend) != len(job.styles):
        raise InputError(
            f"--style-blend has {len(job.settings.style_blend)} weights for {len(job.styles)} style images"
        )
    writable_directory(job.output.parent, "output")
    writable_directory(job.work, "work")


class JobEvents:
    """What a job reports while it runs; the CLI's display overrides these. Raising from any of
    them stops the job at once, keeping every finished frame."""

    def message(self, text: str) -> None: ...

    def stage(self, name: str, total: int | None = None, done: int = 0) -> None: ...

    def stage_progress(self, done: int) -> None: ...

    def frame_started(self, index: int, iterations: int) -> None: ...

    def iteration(self, progress: Progress) -> None: ...

    def frame_finished(self, index: int, stats: dict) -> None: ...

    def shots(self, running: int, finished: int, total: int) -> None: ...


@dataclass
class VideoResult:
    output: Path
    work_dir: Path
    frames: int
    stylized: list[int]  # frames stylized by this run (the others were finished before)
    audio: str | None  # copy, aac or None
    already_done: bool = False
    report: dict | None = None  # job.json's "report": the flicker of output and input
    report_page: Path | None = None  # WORK/report.html, as the run left it
