"""How each video frame starts, after Ruder, Dosovitskiy and Brox (2016): the temporal concern
of a video job.

`--flow dis`: the previous stylized frame is warped onto the current one by the backward optical
flow of the content frames. The optimization starts there and adds `--temporal-weight` x
TemporalLoss (losses.py) against the warped frame, masked by the flow's reliability, so that the
reliable pixels stay put while those where the flow cannot be trusted (occlusions, motion
boundaries, pixels from outside the frame) are free to follow the content loss. Those pixels start
from the warped frame too (`--unreliable-start warped`, as Ruder et al. initialize), or from the
content frame (`content`, the releases before: a cold start's work on them in every frame). A
pair whose cut score exceeds `--scene-threshold` starts a new shot: first-frame iterations from
--init, no temporal term. `--flow none` is the plain warm start (WarmStart); `--flow
independent` stylizes every frame on its own (the baseline flicker is measured against).

`--long-term 1,2,4` (Ruder, Dosovitskiy and Brox 2018, "long-term consistency") adds the same
temporal loss against the stylized frames i-2 and i-4, each warped by the flow from its content
frame to frame i, with "closest first" masks: frame i-k counts for a pixel only as far as nearer
frames do not cover it, c_long(i-k) = max(c(i-k) - sum_{j<k} c(i-j), 0). Where the previous frame
is reliable nothing changes; a pixel disoccluded for a frame or two (a passing hand, the border of
a pan) is held to how it was stylized before, instead of restyled from the content. Never across a
cut, nor before the range's first frame (it starts from --init, like a cut): frames of another
shot are not there to read.

A flash (cuts.py: a change of light that goes within `--flash-frames` frames) is no cut: its
frames start from the frame before it warped, held to it (`through_flash`), and the frame after
it starts from the frame before the flash, by the pair between those two
(`EarlierFrames.across`; videorange.RangeRun decides which frame is which).

`--warp` chooses the interpolation that carries a stylized frame onto the next (bilinear, or
bicubic: sharper, at some flicker on real motion). `--first-rounds` settles a shot's first frame:
a cold run, then short runs, each from the image resampled as a warm start is, so the shot
starts in the look its warm successors keep (see "Settling" below). `optimize_frame` runs one
frame as its start says, then the guard against frames that stop too early.

A starter sees the frame index, its content, the previous stylized frame and `pairs`: a callable
giving the flow pair that carries frame i-1 onto frame i (the running flow stage's `wait`); for
--long-term, an `EarlierFrames`, which also reads the earlier frames and their pairs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from .flow import FramePair, warp
from .flowstage import FlowStage
from .images import load_image, resize_to
from .lbfgs import HISTORY_SIZE
from .letterbox import Letterbox, picture_share
from .losses import TemporalLoss
from .manifest import read_json
from .objective import Scale, SumLoss
from .optimize import EarlyStop, StyleResult
from .stylize import ExtraLoss, Stylizer
from .video_defaults import (
    DEFAULT_LONG_TERM,
    DEFAULT_SCENE_THRESHOLD,
    FIRST_STOP_WINDOW,
    SETTLE_ITERATIONS,
    STOP_WINDOW,
)
from .videojob import VideoJob
from .workdir import FrameStore

Pairs = Callable[[int], FramePair]  # frame index -> the pair carrying frame index-1 onto it
# A frame record's `start` where a shot (or a segment of a long one, shots.py) begins: the frames
# before it are not this chain's.
SHOT_STARTS = ("init", "cut", "segment")


@dataclass(frozen=True, kw_only=True)
class StartPlan:
    """How the frames of a shot start and when they stop: the job's temporal settings (their
    defaults are in video_defaults.py, their checks VideoJob's, videojob.py)."""

    iterations_first: int  # a shot's first frame, from --init
    first_stop_tolerance: float = 0.0  # its cold run stops at this change over FIRST_STOP_WINDOW; 0: never
    iterations: int  # each later frame, at most
    iterations_tracked: int = 0  # a later frame with at least tracked_share of it reliable, at most; 0: off
    tracked_share: float = 0.9  # the release before's: 90% of its pixels (video_defaults.DEFAULT_TRACKED_SHARE)
    stop_tolerance: float = 0.0
    stop_style_tolerance: float = 0.0
    stop_change: float = 0.0
    temporal_weight: float = 0.0
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD
    long_term: tuple[int, ...] = DEFAULT_LONG_TERM
    warp: str = "bilinear"  # how a stylized frame is carried onto the next: grid_sample's mode
    unreliable_start: str = "content"  # where the flow is unreliable, a warm frame starts from: warped or content
    first_rounds: int = 1  # a shot's first frame settles in this many rounds (settle)
    settle: str = "free"  # how each round after the cold run goes: held (as a warm frame) or free (SettleRound)
    settle_shift: float = 0.5  # pixels each of those rounds' start is moved by and back (resample)
    passes: int = 1  # --passes: passes over each shot (passes.py)
    flash_frames: int = 0  # --flash-frames: the shots go on through changes of light this short (cuts.py)
    free_flashes: bool = True  # --free-flashes: a flash's frames free of the temporal term (the release before's)
    lbfgs_history: int = HISTORY_SIZE  # L-BFGS's curvature pairs for every frame

    @classmethod
    def of(cls, job: VideoJob, size: tuple[int, int]) -> StartPlan:
        """The plan for the job's frames of `size` (H, W): the L-BFGS history depends on it."""
        return cls(
            iterations_first=job.first_iterations, first_stop_tolerance=job.first_stop_tolerance,
            iterations=job.settings.iterations,
            iterations_tracked=job.iterations_tracked, tracked_share=job.tracked_share,
            stop_tolerance=job.stop_tolerance, stop_style_tolerance=job.stop_style_tolerance,
            stop_change=job.stop_change, temporal_weight=job.temporal_weight,
            scene_threshold=job.scene_threshold, long_term=job.long_term, warp=job.warp,
            unreliable_start=job.unreliable_start,
            first_rounds=job.first_rounds, settle=job.settle, settle_shift=job.settle_shift, passes=job.passes,
            flash_frames=job.flash_frames,
            free_flashes=job.free_flashes, lbfgs_history=job.history_pairs(size),
        )  # fmt: skip


class EarlierFrames:
    """The frames before the current one, as --long-term reads them: a `Pairs` (the adjacent
    pair, from the flow stage) that also gives the pair from any earlier frame, that frame's
    stylized image as saved (so a resumed run reads what an uninterrupted one did), and whether
    it began a shot (its statistics record its start). With a `picture` (the bars cropped off the
    frames the stylizer sees, letterbox.py), each pair as the picture alone would have it."""

    def __init__(self, store: FrameStore, flows: FlowStage, picture: Letterbox | None = None):
        self.store, self.flows, self.picture = store, flows, picture

    def __call__(self, index: int) -> FramePair:
        return self.confined(self.flows.wait(index))

    def pair(self, earlier: int, later: int) -> FramePair:
        return self.confined(self.flows.pair(earlier, later))

    def confined(self, pair: FramePair) -> FramePair:
        return self.picture.confine(pair) if self.picture else pair

    def styled(self, index: int) -> torch.Tensor:
        return load_image(self.store.styled(index))

    def began_shot(self, index: int) -> bool:
        path = self.store.stats(index)
        return not path.exists() or read_json(path).get("start") in SHOT_STARTS

    def across(self, before: int) -> EarlierFrames:
        """The same frames, but the pair given for a frame carries frame `before` onto it: the frame
        after a flash continues from the frame before the flash (cuts.py)."""
        return Across(self.store, self.flows, before, self.picture)


class Across(EarlierFrames):
    """EarlierFrames whose pair for the current frame comes from frame `before` (EarlierFrames.across)."""

    def __init__(self, store: FrameStore, flows: FlowStage, before: int, picture: Letterbox | None = None):
        super().__init__(store, flows, picture)
        self.before = before

    def __call__(self, index: int) -> FramePair:
        return self.pair(self.before, index)


def framed_picture(pairs: Pairs) -> Letterbox | None:
    """The letterbox cropped off the frames whose pairs `pairs` gives (EarlierFrames.picture), if any."""
    return pairs.picture if isinstance(pairs, EarlierFrames) else None


def closest_first(masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Ruder et al.'s long-term masks, nearest frame first: each keeps what the nearer ones' masks
    leave uncovered, c_long(k) = max(c(k) - sum_{j<k} c(j), 0)."""
    out, covered = [], torch.zeros_like(masks[0])
    for mask in masks:
        out.append((mask - covered).clamp(min=0))
        covered = covered + mask
    return out


def held_to(targets: list[tuple[torch.Tensor, torch.Tensor]], weight: float) -> dict[str, ExtraLoss]:
    """The extra term that holds a frame to stylized frames carried onto it (Ruder et al.'s temporal
    loss): `weight` x the sum of TemporalLoss over the (target, reliability mask) pairs, under the name
    the frames' records and the report show; none where the weight is 0 or no pair holds the frame."""
    if weight <= 0 or not targets:
        return {}
    return {"temporal": Scale(SumLoss(TemporalLoss(target, mask) for target, mask in targets), weight)}


@dataclass(frozen=True)
class SettleRound:
    """How each settling round after a shot's cold run goes (settle; --settle): free, SETTLE_ITERATIONS
    iterations and no other term (the releases before); held, as a warm frame of a still shot goes,
    held to the resampled image it starts from by `temporal_weight` x TemporalLoss and stopped by
    `stop`, within `iterations`."""

    iterations: int = SETTLE_ITERATIONS
    temporal_weight: float = 0.0
    stop: EarlyStop = EarlyStop()

    def losses(self, start: torch.Tensor) -> dict[str, ExtraLoss]:
        # Every pixel reliable: the resampling moved the image by a known shift and back.
        return held_to([(start, torch.ones_like(start[:, :1]))], self.temporal_weight)


def warm_iterations(plan: StartPlan, reliable: float) -> int:
    """A flow-warped frame's iterations at most: --iterations, or --iterations-tracked (0: off) where
    `reliable`, its reliable share, is at least --tracked-share (0, the default: every warm frame)."""
    tracked = plan.iterations_tracked and reliable >= plan.tracked_share
    return min(plan.iterations, plan.iterations_tracked) if tracked else plan.iterations


@dataclass
class FrameStart:
    """How one frame's optimization begins: the start image (None: the settings' --init),
    the iterations it gets, the stylized frames it is held to (the temporal loss), and early
    stopping; with `picture`, on the picture between a letterbox's bars alone (`within`)."""

    init: torch.Tensor | None
    iterations: int
    # (target, reliability mask) pairs the temporal term holds the frame to, at `temporal_weight`.
    held: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    temporal_weight: float = 0.0
    source: str = "init"  # for the log and the statistics: where the start image came from
    stop: EarlyStop = EarlyStop()  # Stylizer.stylize's early stopping; the default: all iterations
    stats: dict = field(default_factory=dict)  # added to the frame's statistics (cut score, ...)
    rounds: int = 1  # a cold run, then short runs from the image resampled (settle_shares)
    resample: str = "bilinear"  # how: --warp's interpolation, as a warm start is carried
    shift: float = 0.5  # by how many pixels, diagonally, and back (--settle-shift)
    settle: SettleRound = SettleRound()  # how each of those short runs goes
    history: int = HISTORY_SIZE  # L-BFGS's curvature pairs
    picture: Letterbox | None = None  # the frame's picture alone is optimized (letterbox.py)

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """The (H, W) of the frame whose picture alone is optimized (Stylizer.stylize), or None."""
        return self.picture.cropped_from if self.picture else None

    @property
    def extra_losses(self) -> dict[str, ExtraLoss]:
        """The terms beside the objective's: the temporal loss against the frames it is held to."""
        return held_to(self.held, self.temporal_weight)

    def within(self, letterbox: Letterbox | None) -> FrameStart:
        """This start on the picture between the bars (None: on the whole frame, as it is): the
        start image and the temporal terms' targets and masks cropped as the content will be."""
        if letterbox is None:
            return self
        crop = lambda image: letterbox.crop(image).contiguous()  # noqa: E731  (the optimizer's own copy)
        held = [(crop(target), crop(mask)) for target, mask in self.held]
        init = self.init
        if init is not None and letterbox.cropped_from and tuple(init.shape[-2:]) != letterbox.cropped_from:
            init = resize_to(init, letterbox.cropped_from)  # an --init-image of its own size: the frame's first
        init = None if init is None else crop(init)
        return replace(self, init=init, held=held, picture=letterbox)


class WarmStart:
    """The first frame starts from --init with --iterations-first; each later frame starts from
    the previous stylized frame (as saved, 8 bits) with --iterations (--flow none).

    The other starters below replace this one: `start` sees the frame index, its content, the
    previous stylized frame and the flow pairs, and `settings` goes into the stylize stage's hash.
    """

    name = "previous-frame"
    uses_flow = False  # True: the stylize stage depends on the flow stage

    def __init__(self, plan: StartPlan, *, init_image: torch.Tensor | None = None, device: torch.device | str = "cpu"):
        self.plan, self.init_image, self.device = plan, init_image, torch.device(device)

    def settings(self) -> dict:
        plan = self.plan
        settings = {
            "warm_start": self.name,
            "iterations_first": plan.iterations_first,
            "stop_tolerance": plan.stop_tolerance,
            "stop_window": STOP_WINDOW,
        }
        # Only where set: the jobs of the releases before --stop-change and --stop-style-tolerance
        # keep their stylize stage's hash.
        optional = {"stop_style_tolerance": plan.stop_style_tolerance, "stop_change": plan.stop_change}
        optional = {name: value for name, value in optional.items() if value}
        return settings | optional | self.first_stop_setting() | self.history_setting()

    def first_stop_setting(self) -> dict:
        """--first-stop-tolerance for the stage's hash, where set (the releases before ran every
        --iterations-first)."""
        tolerance = self.plan.first_stop_tolerance
        return {"first_stop_tolerance": tolerance} if tolerance else {}

    def history_setting(self) -> dict:
        """--lbfgs-history for the stage's hash, where it is not the releases' before it (20)."""
        history = self.plan.lbfgs_history
        return {"lbfgs_history": history} if history != HISTORY_SIZE else {}

    def first(self, source: str = "init", stats: dict | None = None) -> FrameStart:
        """A shot's first frame: from --init with --iterations-first (its cold run stopped by
        --first-stop-tolerance), no temporal term."""
        plan = self.plan
        return FrameStart(
            self.init_image, plan.iterations_first, source=source, stop=self.first_stop(), stats=stats or {},
            history=plan.lbfgs_history,
        )  # fmt: skip

    def first_stop(self) -> EarlyStop:
        """When a shot's first frame's cold run stops: its loss and its style term hardly fell over
        FIRST_STOP_WINDOW (a cold start's loss falls slowly for long; a window of 10 would stop it
        in the middle of laying out its texture)."""
        tolerance = self.plan.first_stop_tolerance
        return EarlyStop(tolerance, FIRST_STOP_WINDOW, style_tolerance=tolerance)

    def warm(self, init: torch.Tensor, source: str, *, iterations: int | None = None, **more) -> FrameStart:
        """A later frame: from `init` with `iterations` (default --iterations) and the early stops,
        held to any targets given (`held`) at --temporal-weight."""
        plan = self.plan
        iterations = iterations or plan.iterations
        return FrameStart(
            init, iterations, source=source, stop=self.warm_stop(), history=plan.lbfgs_history,
            temporal_weight=plan.temporal_weight, **more,
        )  # fmt: skip

    def warm_stop(self) -> EarlyStop:
        """When a warm frame stops: the loss's change (and the style term's, the image's) over STOP_WINDOW."""
        plan = self.plan
        return EarlyStop(plan.stop_tolerance, STOP_WINDOW, plan.stop_change, plan.stop_style_tolerance)

    def start(
        self, index: int, content: torch.Tensor, previous: torch.Tensor | None, pairs: Pairs, *, may_cut: bool = True
    ) -> FrameStart:  # fmt: skip
        """Frame `index`'s start; `may_cut` False: never afresh for its pair's cut score (a fade's
        frame, or the same picture in another light: the score is the light's, which the cut scan
        has told from a cut, shotplan.py)."""
        return self.first() if previous is None else self.warm(previous, "previous")

    def through_flash(self, index: int, content: torch.Tensor, previous: torch.Tensor, pairs: Pairs) -> FrameStart:
        """A frame of a flash (cuts.py; --flow dis only): see FlowWarmStart."""
        return self.start(index, content, previous, pairs)


class IndependentStart(WarmStart):
    """Every frame from --init with --iterations-first: each frame is its own shot."""

    name = "independent"

    def settings(self) -> dict:
        settings = {"warm_start": self.name, "iterations_first": self.plan.iterations_first}
        return settings | self.first_stop_setting() | self.history_setting()

    def start(
        self, index: int, content: torch.Tensor, previous: torch.Tensor | None, pairs: Pairs, *, may_cut: bool = True
    ) -> FrameStart:  # fmt: skip
        return self.first()


class FlowWarmStart(WarmStart):
    """The previous stylized frame warped by the optical flow, plus the masked temporal loss."""

    name = "flow"
    uses_flow = True  # the stylize stage's hash includes the flow stage's

    def settings(self) -> dict:
        plan = self.plan
        settings = {"temporal_weight": plan.temporal_weight, "scene_threshold": plan.scene_threshold}
        # Only where set: the jobs of the releases before --long-term, --warp, ... keep their stylize stage's hash.
        if plan.long_term != DEFAULT_LONG_TERM:
            settings["long_term"] = list(plan.long_term)
        if plan.warp != "bilinear":
            settings["warp"] = plan.warp
        if plan.unreliable_start != "content":
            settings["unreliable_start"] = plan.unreliable_start
        if plan.first_rounds != 1:  # and the cold run first, whole: the releases before split them equally
            settings["first_rounds"] = plan.first_rounds
            settings["settle_iterations"] = SETTLE_ITERATIONS
            if plan.settle != "free":  # only where so: the jobs of the release before keep their hash
                settings["settle"] = plan.settle
            if plan.settle_shift != 0.5:  # likewise: the releases before moved it by half a pixel
                settings["settle_shift"] = plan.settle_shift
        if plan.passes > 1:
            settings["passes"] = plan.passes
        if plan.iterations_tracked:  # only where set: the jobs of the releases before keep their hash
            settings["iterations_tracked"] = plan.iterations_tracked
            settings["tracked_share"] = plan.tracked_share
        if plan.flash_frames:
            settings["flash_frames"] = plan.flash_frames
            if not plan.free_flashes:  # only where so: the jobs of the release before keep their hash
                settings["free_flashes"] = False
        return super().settings() | settings

    def first(self, source: str = "init", stats: dict | None = None) -> FrameStart:
        """A shot's first frame settles into the look its warm successors keep (settle)."""
        plan = self.plan
        start = super().first(source, stats)
        start.rounds, start.resample, start.shift = plan.first_rounds, plan.warp, plan.settle_shift
        if plan.settle == "held":
            start.settle = SettleRound(
                iterations=plan.iterations, temporal_weight=plan.temporal_weight, stop=self.warm_stop()
            )
        return start

    def start(
        self, index: int, content: torch.Tensor, previous: torch.Tensor | None, pairs: Pairs, *, may_cut: bool = True
    ) -> FrameStart:  # fmt: skip
        if previous is None:
            return self.first()
        waited = time.perf_counter()
        pair = pairs(index)
        # Seconds the device sat idle for the flow stage: near 0 unless the CPUs are far too slow.
        waited = round(time.perf_counter() - waited, 3)
        stats = {"cut_score": round(pair.cut_score, 4), "flow_wait": waited}
        if may_cut and pair.cut_score > self.plan.scene_threshold:
            return self.first("cut", stats)
        # On the stylizer's device: the warp and the blend are a few kernels there.
        warped = self.warp(previous.to(self.device, torch.float32), pair)
        reliability = torch.from_numpy(pair.reliability).to(self.device)[None, None]
        init = warped
        if self.plan.unreliable_start == "content":  # the content frame only where the flow is unreliable
            init = reliability * warped + (1 - reliability) * content.to(self.device, torch.float32)
        # Over the picture alone where a letterbox is cropped off (letterbox.py): --tracked-share goes by it.
        picture = framed_picture(pairs)
        reliable = picture_share(pair.reliability, picture)
        stats["reliable"] = round(reliable, 4)
        iterations = warm_iterations(self.plan, reliable)
        held = []
        if self.plan.temporal_weight > 0:
            targets = [(warped, reliability), *self.earlier(index, pairs)]
            masks = closest_first([mask for _, mask in targets])
            held = [(target, mask) for (target, _), mask in zip(targets, masks)]
            if len(held) > 1:  # how far back it reached, and what the earlier frames hold beyond frame i-1
                stats["long_term"] = list(self.plan.long_term[: len(held)])
                stats["reliable_long"] = round(picture_share(sum(masks[1:]), picture), 4)
        return self.warm(init, "warped", iterations=iterations, held=held, stats=stats)

    def through_flash(self, index: int, content: torch.Tensor, previous: torch.Tensor, pairs: Pairs) -> FrameStart:
        """A frame of a flash (cuts.py): from the frame before it warped, whatever its cut score,
        held to it by the temporal term as a warm frame is, through the pair the flow stage
        computed with the flash's light matched to the frame before's (flowstage.PairPlan.lit:
        77% of the pixels reliable on the sample clip's flash at 64 px, against 27% by the flow of
        the frames as they are, which left the frame patched where it held it). The content loss
        gives what of the light shows in a stylized frame. With --free-flashes, no temporal term:
        the frame lays out its texture anew, in some 250 iterations (docs/video-quality.md). Its
        unreliable pixels start from the warped frame too: the content there is the flash's."""
        pair = pairs(index)
        warped = self.warp(previous.to(self.device, torch.float32), pair)
        reliable = picture_share(pair.reliability, framed_picture(pairs))
        stats = {"cut_score": round(pair.cut_score, 4), "reliable": round(reliable, 4)}
        reliability = torch.from_numpy(pair.reliability).to(self.device)[None, None]
        held = [] if self.plan.free_flashes else [(warped, reliability)]
        return self.warm(warped, "flash", held=held, stats=stats)

    def warp(self, stylized: torch.Tensor, pair: FramePair) -> torch.Tensor:
        """A stylized frame carried onto the current one by the pair's flow, with --warp's
        interpolation (bicubic overshoots a little at edges: clamped to the image's range)."""
        return warp(stylized, pair.flow_back, mode=self.plan.warp).clamp(0, 1)

    def earlier(self, index: int, frames: Pairs) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """For --long-term: frame i-k's stylized image warped onto frame `index` and its pair's
        reliability, for each k > 1 whose frame is in this frame's shot (nearest first)."""
        back = [k for k in self.plan.long_term[1:] if index - k >= 1]
        if not back:
            return []
        # The shot's first frame among the frames read (frame 1 began one): the farthest back i-k may be.
        first = next((j for j in range(index - 1, max(index - back[-1], 1), -1) if frames.began_shot(j)), 1)
        out = []
        for k in (k for k in back if index - k >= first):
            pair = frames.pair(index - k, index)
            styled = frames.styled(index - k).to(self.device, torch.float32)
            out.append((self.warp(styled, pair), torch.from_numpy(pair.reliability).to(self.device)[None, None]))
        return out


# The guard against frames that stop too early (artistic-videos #52: L-BFGS can stop after a couple
# of iterations and leave one blurry frame in fifteen). A warm frame that stopped within
# STALL_ITERATIONS with a final loss above STALL_RATIO x its neighbour's (the previous frame's, as
# recorded) is run again from where it stopped with a fresh L-BFGS history and no early stop. Its
# loss should be close to the neighbour's: consecutive frames of a shot differ by a few pixels.
STALL_ITERATIONS = 2 * STOP_WINDOW
STALL_RATIO = 1.5


def stalled(start: FrameStart, result: StyleResult, neighbour_loss: float | None) -> bool:
    """Whether a warm-started frame stopped too early: few iterations, loss far above its neighbour's."""
    if start.source not in ("warped", "previous") or not neighbour_loss or neighbour_loss <= 0:
        return False
    loss = result.final_terms.get("loss", 0.0)
    return result.iterations <= STALL_ITERATIONS and loss > STALL_RATIO * neighbour_loss


def redo_if_stalled(
    stylizer: Stylizer, content: torch.Tensor, start: FrameStart, result: StyleResult, neighbour_loss: float | None
) -> tuple[StyleResult, bool]:
    """The frame's result, run again with fresh optimizer state if it stalled; and whether it was."""
    if not stalled(start, result, neighbour_loss):
        return result, False
    again = stylizer.stylize(
        content, init=result.image, iterations=start.iterations, extra_losses=start.extra_losses,
        history_size=start.history, frame_size=start.frame_size,
    )  # fmt: skip
    return chained(result, again), True


def chained(before: StyleResult, after: StyleResult) -> StyleResult:
    """`after`, a run that started where `before` ended, with both runs' iterations and history."""
    after.iterations += before.iterations
    after.history = before.history + after.history
    return after


# Settling a shot's first frame. Each warm frame of a moving shot starts from its predecessor
# resampled by the flow, and the optimization from there lands in a smoother optimum than a cold
# start does: at 64 px on the pan, warm frames keep about a third of the first frame's Laplacian
# variance (a bilinear warp) at a lower style loss. The cold frame's extra high-frequency grain is
# residue of its start from the content image, which the chain sheds within its first ~5-10 frames:
# a crisp-then-soft "pop" at every cut. So the first frame runs cold to (near) its optimum, then
# `rounds` - 1 short runs, the image resampled before each by a half-pixel shift and back with the
# warm starts' interpolation: it starts the shot where its successors will stay
# (docs/video-quality.md). The cold run comes first and whole because the warm frames keep the
# texture the first frame laid out: resampling it while it was still forming (the releases before
# split the iterations equally) left a layout whose style loss the whole shot kept, 2% higher at
# 128 px. For the same reason it keeps a cold start's iterations whatever the warm frames' budget
# (video_defaults.MIN_FIRST_ITERATIONS). A free round (50 iterations, nothing but the objective) lands
# where a cold start does: its grain comes back, and the warm frames still shed it over the shot's
# first frames. A held round (the default, --settle) runs as a warm frame of a still shot runs, held
# by the temporal term to the resampled image it starts from and stopped by the warm frames' rule,
# so that a few rounds reach the look the warm frames keep: on the shake at 64 px, after two held
# rounds, the first frame's Laplacian variance 940 against the tenth frame's 1020 (after a free
# round: 2322 against 1088). How far each round's start is moved and back: --settle-shift
# (video_defaults.DEFAULT_SETTLE_SHIFT).


def settle_shares(iterations: int, rounds: int) -> list[int]:
    """A first frame's iterations by run: the cold run, then up to `rounds` - 1 settling runs of
    SETTLE_ITERATIONS, as many as leave the cold run at least half."""
    settling = min(rounds - 1, iterations // (2 * SETTLE_ITERATIONS))
    return [iterations - settling * SETTLE_ITERATIONS] + [SETTLE_ITERATIONS] * settling


def resample(image: torch.Tensor, mode: str, shift: float) -> torch.Tensor:
    """The image moved by `shift` pixels diagonally and back with `mode`'s interpolation, as warm starts are."""
    flow = torch.full((*image.shape[-2:], 2), shift, device=image.device)
    return warp(warp(image, flow, mode=mode).clamp(0, 1), -flow, mode=mode).clamp(0, 1)


def optimize_frame(
    stylizer: Stylizer, content: torch.Tensor, start: FrameStart, callback, neighbour_loss: float | None
) -> tuple[StyleResult, bool]:
    """One frame's optimization as `start` says (in its rounds), then the stall guard; the
    result, and whether the guard ran it again. A start `within` a letterbox optimizes the picture
    alone: its result is the content frame with the stylized picture pasted between the bars."""
    frame = content
    if start.picture is not None:
        content = start.picture.crop(content)
    result = None
    shares = settle_shares(start.iterations, start.rounds)
    if len(shares) > 1:
        start.stats["rounds"] = len(shares)
    for share in shares:
        init, iterations, extra, stop = start.init, share, start.extra_losses, start.stop
        if result is not None:  # a settling round, from the image resampled
            init = resample(result.image, start.resample, start.shift)
            iterations, extra, stop = start.settle.iterations, start.settle.losses(init), start.settle.stop
        run = stylizer.stylize(
            content, init=init, iterations=iterations, extra_losses=extra, callback=callback, stop=stop,
            history_size=start.history, frame_size=start.frame_size,
        )  # fmt: skip
        result = run if result is None else chained(result, run)
    # A warm frame that stopped far too early is run again with a fresh optimizer.
    result, redone = redo_if_stalled(stylizer, content, start, result, neighbour_loss)
    if start.picture is not None:  # the bars as they came: black (the chunks draw them black too)
        result.image = start.picture.paste(result.image, frame)
    return result, redone


def make_starter(
    job: VideoJob, size: tuple[int, int], *, init_image: torch.Tensor | None, device: torch.device | str
) -> WarmStart:
    """The frame starter for the job's --flow, for frames of `size` (H, W)."""
    kind = {"independent": IndependentStart, "none": WarmStart}.get(job.flow, FlowWarmStart)
    return kind(StartPlan.of(job, size), init_image=init_image, device=device)
