"""What a video job is: its inputs and settings with their checks (the defaults: video_defaults.py), what it reports
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
from .manifest import writable_directory
from .optimize import Progress
from .settings import HISTORY_SIZE, MAX_ITERATIONS, StyleSettings
from .shots import DEFAULT_SEGMENT_OVERLAP
from .video_defaults import (
    DEFAULT_FIRST_ROUNDS,
    DEFAULT_FIRST_STOP_TOLERANCE,
    DEFAULT_FLASH_FRAMES,
    DEFAULT_FLOW,
    DEFAULT_FLOW_PRESET,
    DEFAULT_ITERATIONS_TRACKED,
    DEFAULT_LBFGS_HISTORY,
    DEFAULT_LONG_TERM,
    DEFAULT_OVERLAY_SHARE,
    DEFAULT_SCENE_THRESHOLD,
    DEFAULT_SETTLE,
    DEFAULT_SETTLE_SHIFT,
    DEFAULT_STOP_CHANGE,
    DEFAULT_STOP_STYLE_TOLERANCE,
    DEFAULT_STOP_TOLERANCE,
    DEFAULT_TEMPORAL_WEIGHT,
    DEFAULT_TRACKED_SHARE,
    DEFAULT_UNRELIABLE_START,
    DEFAULT_WARP,
    DIS_ONLY,
    FLOW_MODES,
    LBFGS_HISTORY_BYTES,
    MAX_FIRST_ROUNDS,
    MAX_FLOW_WORKERS,
    MAX_LBFGS_HISTORY,
    MAX_LONG_TERM,
    MAX_OVERLAY_SHARE,
    MAX_PASSES,
    MAX_SEGMENT_OVERLAP,
    MAX_SETTLE_SHIFT,
    MAX_SHOT_FRAMES,
    MIN_FIRST_ITERATIONS,
    SETTLE_MODES,
    UNRELIABLE_STARTS,
    WARP_MODES,
    check_flow_options,
)
from .workdir import refuse_foreign_work_dir


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
    iterations_tracked: int = DEFAULT_ITERATIONS_TRACKED  # a warm frame (see tracked_share), at most; 0: off
    tracked_share: float = DEFAULT_TRACKED_SHARE  # ... with at least this share of its pixels reliable
    first_stop_tolerance: float = DEFAULT_FIRST_STOP_TOLERANCE  # a shot's first frame stops at this change; 0: never
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
    settle: str = DEFAULT_SETTLE  # how each run after the cold one goes: held (as a warm frame) or free
    settle_shift: float = DEFAULT_SETTLE_SHIFT  # pixels each settling run's start is moved by and back
    passes: int = 1  # passes over each shot, in alternating directions (passes.py)
    flash_frames: int = DEFAULT_FLASH_FRAMES  # a change of light this short is a flash, not a cut (cuts.py)
    free_flashes: bool = False  # a flash's frames free of the temporal term, as the release before (temporal.py)
    ignore_fades: bool = False  # fades stylized as they come, the output in the style's light (fades.py)
    overlay_share: float = DEFAULT_OVERLAY_SHARE  # a caption may cover this much of a blank frame (fades.py)
    stylize_bars: bool = False  # letterbox bars stylized as any black, as the releases before (letterbox.py)
    crop_bars: bool = False  # the stylizer sees the picture between the kept bars alone (letterbox.py)
    light_cuts: bool = False  # cuts by the frames' scores as they are, whatever their light, as the release before
    motion_cuts: bool = False  # every pair over the threshold a cut, fast moves too, as the releases before
    lbfgs_history: int | None = None  # L-BFGS's curvature pairs for each frame; None: history_pairs decides
    # Of OWN_DEFAULTS, those the command line left unset: a resumed job may keep its own values for them.
    defaulted: frozenset[str] = frozenset()

    def __post_init__(self):
        self.frame_range  # noqa: B018  (checks --start, --duration and --every-nth)
        if self.iterations_first is not None and not 1 <= self.iterations_first <= MAX_ITERATIONS:
            raise InputError(f"--iterations-first {self.iterations_first}: must be between 1 and {MAX_ITERATIONS}")
        if not 0 <= self.first_stop_tolerance < 1:
            raise InputError(
                f"--first-stop-tolerance {self.first_stop_tolerance}: must be >= 0 (0: all --iterations-first) and < 1"
            )
        if not 0 <= self.iterations_tracked <= MAX_ITERATIONS:
            raise InputError(
                f"--iterations-tracked {self.iterations_tracked}: must be between 0 (off) and {MAX_ITERATIONS}"
            )
        if not 0 <= self.tracked_share <= 1:
            raise InputError(
                f"--tracked-share {self.tracked_share}: must be between 0 (every later frame) and 1 (all reliable)"
            )
        if not 0 <= self.crf <= 51:
            raise InputError(f"--crf {self.crf}: must be between 0 (lossless) and 51")
        if not self.styles:
            raise InputError("at least one --style image is needed")
        self._check_flow()
        self._check_shots()
        # Given together, one undoes the other: nothing is kept black to crop. A job begun before the
        # bars were kept (video_defaults.OWN_DEFAULTS) resumes with --stylize-bars left unset: no conflict.
        if self.crop_bars and self.stylize_bars and "stylize_bars" not in self.defaulted:
            raise InputError(
                "--crop-bars and --stylize-bars: the first stylizes the picture between the bars alone and keeps "
                "the bars black, the second stylizes the bars; give one of them"
            )

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
        check_flow_options(self.flow_preset, self.scene_threshold, self.flash_frames)
        if not math.isfinite(self.temporal_weight) or self.temporal_weight < 0:
            raise InputError(f"--temporal-weight {self.temporal_weight}: must be a finite number >= 0")
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
        if self.settle not in SETTLE_MODES:
            raise InputError(f"--settle {self.settle!r}: must be one of {', '.join(SETTLE_MODES)}")
        if not 0 <= self.settle_shift <= MAX_SETTLE_SHIFT:
            raise InputError(f"--settle-shift {self.settle_shift}: must be between 0 and {MAX_SETTLE_SHIFT} pixels")
        if not 0 <= self.overlay_share <= MAX_OVERLAY_SHARE:
            raise InputError(f"--overlay-share {self.overlay_share}: must be between 0 and {MAX_OVERLAY_SHARE}")
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
    def lit_flashes(self) -> bool:
        """Whether the flow stage computes the pairs into a flash's frames with the flash's light
        matched to the frame before's (flowstage.PairPlan.lit), unless --free-flashes."""
        return self.flow == "dis" and self.flash_frames > 0 and not self.free_flashes

    @property
    def cuts_in_own_light(self) -> bool:
        """Whether the cut scan looks again, with the light matched, at the pairs whose light changed
        (cuts.py, shotplan.py; --flow dis, unless --light-cuts)."""
        return self.flow == "dis" and not self.light_cuts

    @property
    def keeps_bars(self) -> bool:
        """Whether the range's black bars stay black in the output (letterbox.py; unless --stylize-bars)."""
        return not self.stylize_bars

    @property
    def crops_bars(self) -> bool:
        """Whether the stylizer sees the picture between the kept bars alone (letterbox.py; --crop-bars)."""
        return self.keeps_bars and self.crop_bars

    @property
    def tells_moves(self) -> bool:
        """Whether a pair over the scene threshold by its flow alone is a cut only where it is
        sudden (cuts.Scan.sudden; --flow dis, unless --motion-cuts)."""
        return self.flow == "dis" and not self.motion_cuts

    @property
    def reads_back(self) -> int:
        """How many frames back a frame's start reads as it goes forward: --long-term's farthest,
        and the frame after a flash reads the frame before it (cuts.py)."""
        return max(self.long_term[-1], self.flash_frames + 1 if self.flow == "dis" else 1)

    @property
    def reach(self) -> int:
        """What the work directory keeps of a shot as it goes: reads_back frames, or with
        --passes > 1, whose later passes read every frame of the shot again, all of it."""
        return self.reads_back if self.passes == 1 else MAX_SHOT_FRAMES

    @property
    def first_iterations(self) -> int:
        if self.iterations_first is not None:
            return self.iterations_first
        return min(MAX_ITERATIONS, max(2 * self.settings.iterations, MIN_FIRST_ITERATIONS))


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
