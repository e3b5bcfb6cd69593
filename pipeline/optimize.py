"""One scale's optimization, the loop of Gatys, Ecker and Bethge (2016): the image (or its
luminance) updated by L-BFGS (lbfgs.py; or projected Adam) from the gradient of the objective
(objective.py), the loss read back from the device every few iterations and handed to a callback
as `Progress`, and, for warm-started video frames, stopped early once the loss (`EarlyStop`) or
the image (`ImageSettled`) hardly changes. stylize.py runs it once per coarse-to-fine scale.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .cudagraph import GraphedStep
from .lbfgs import HISTORY_SIZE, BatchedLBFGS
from .objective import Objective, TermLog
from .settings import StyleSettings


@dataclass
class Progress:
    """One optimization step, as reported to the callback."""

    iteration: int  # 1-based, within this call
    iterations: int
    loss: float
    terms: dict[str, float]  # weighted loss terms: content, style, tv, plus any extra ones
    elapsed: float  # seconds since the start of this call
    scale: int = 1  # which coarse-to-fine scale (1-based) is being optimized
    scales: int = 1


@dataclass
class StyleResult:
    image: torch.Tensor  # (B, 3, H, W), RGB 0..1, on the stylizer's device
    history: list[dict] = field(default_factory=list)  # per iteration, summed over the batch
    iterations: int = 0
    per_image: list[dict] = field(default_factory=list)  # weighted loss terms of the result
    optimized_size: tuple[int, int] | None = None  # the finest scale optimized (see stylize)

    @property
    def final_terms(self) -> dict:
        """The result's loss terms summed over the batch."""
        totals: dict[str, float] = {}
        for record in self.per_image:
            for key, value in record.items():
                totals[key] = totals.get(key, 0.0) + value
        return totals


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class EarlyStop:
    """Stop once the loss fell by less than `tolerance` (a fraction) over the last `window`
    iterations; a tolerance of 0 never stops. For warm-started video frames. With
    `style_tolerance`, only once the style term too fell by less than that over the window: where
    the content term is the larger (gravel.png's is ~15 times its style term at a frame's end) the
    total has stopped moving while the style term still falls, and a frame stopped there is
    visibly less styled (docs/video-quality.md, "Another style"). With `change`, stop also once the
    image moved by less than that many 0..255 levels per value on average over the last `window`
    iterations (issue 17: a rule on the image, not the loss; see ImageSettled)."""

    tolerance: float = 0.0
    window: int = 10
    change: float = 0.0
    style_tolerance: float = 0.0

    def reached(self, losses: Sequence[float], styles: Sequence[float] = ()) -> bool:
        """`losses`: the total loss of each iteration so far; `styles`: the style term's (none: an
        objective without one, which the style rule does not hold back)."""
        if not self.fell_less(losses, self.tolerance):
            return False
        return self.style_tolerance <= 0 or not styles or self.fell_less(styles, self.style_tolerance)

    def fell_less(self, values: Sequence[float], tolerance: float) -> bool:
        """Whether the last value is less than `tolerance` (a fraction) below the one `window` before."""
        if tolerance <= 0 or len(values) <= self.window:
            return False
        before, now = values[-self.window - 1], values[-1]
        return (before - now) / max(abs(before), 1e-30) < tolerance


class ImageSettled:
    """EarlyStop's rule on the image: at every `window`-th iteration (looked at where the loss is
    read back, so `window` should be a multiple of report_every), the mean absolute change of the
    optimized values since the last look, in 0..255 levels, against `change`. A loss can keep
    falling slowly while the picture no longer changes visibly."""

    def __init__(self, stop: EarlyStop):
        self.stop, self.snapshot = stop, None

    def reached(self, variable: torch.Tensor, iteration: int) -> bool:
        if self.stop.change <= 0 or iteration % self.stop.window:
            return False
        current = variable.detach()
        moved = None if self.snapshot is None else float((current - self.snapshot).abs().mean()) * 255  # SYNC
        self.snapshot = current.clone()
        return moved is not None and moved < self.stop.change


@dataclass(kw_only=True)
class OptimizationRun:
    """What one `stylize` call hands to the optimization of each of its scales."""

    iterations: int  # over all scales
    result: StyleResult
    callback: ProgressCallback | None = None
    stop: EarlyStop = EarlyStop()  # the default: all iterations
    history_size: int = HISTORY_SIZE  # L-BFGS's curvature pairs
    scales: int = 1
    scale: int = 1  # 1-based, the one being optimized
    started: float = field(default_factory=time.perf_counter)

    def report(self, records: list[dict[str, float]], done: int) -> list[dict[str, float]]:
        """Add the records of this scale's iterations done+1, done+2, ... to the history and tell
        the callback about the last one; returns them as the history holds them ("loss" and each
        term's). A non-finite loss (bf16 overflow) raises FloatingPointError."""
        result = self.result
        for iteration, record in enumerate(records, start=done + 1):
            loss = record.pop("total")
            if not math.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss} at iteration {iteration}")
            result.history.append({"iteration": result.iterations + iteration, "loss": loss, **record})
        if self.callback is not None:
            elapsed = time.perf_counter() - self.started
            iteration += result.iterations
            event = Progress(iteration, self.iterations, loss, record, elapsed, scale=self.scale, scales=self.scales)
            self.callback(event)
        return result.history[-len(records) :]


class ProjectedAdam:
    """Adam (Kingma and Ba) on the image, projected back onto the 0..1 box after every step."""

    def __init__(self, variable: torch.Tensor, *, lr: float):
        self.variable = variable
        self.adam = torch.optim.Adam([variable], lr=lr)

    def update(self, grad: torch.Tensor) -> None:
        self.variable.grad = grad
        self.adam.step()
        self.variable.grad = None
        with torch.no_grad():
            self.variable.clamp_(0, 1)


def optimize(
    objective: Objective, start: torch.Tensor, iterations: int, run: OptimizationRun, *, settings: StyleSettings,
    report_every: int,
) -> torch.Tensor:  # fmt: skip
    """Optimize one scale from `start` for up to `iterations`; returns the image, RGB 0..1. The
    loss is read back every `report_every` iterations (and at the last); `settings` choose the
    optimizer (L-BFGS or Adam) and whether a CUDA graph replays each iteration.

    The host waits for the device at two points only, both marked SYNC: reading the loss log
    back at each report, and scoring the result."""
    # Set-up: the variable (the image, or its luminance) and the optimizer's state.
    variable = objective.variable_from(start).requires_grad_(True)
    if settings.optimizer == "lbfgs":
        # One curvature history per image, so that batchmates do not influence each other.
        optimizer = BatchedLBFGS(variable, lr=1, history_size=run.history_size)
    else:
        optimizer = ProjectedAdam(variable, lr=settings.learning_rate)
    log = TermLog(objective.names, min(report_every, iterations), start.device)

    def iteration() -> None:
        # Forward, backward and update, only queued on the device (what a CUDA graph records).
        with torch.enable_grad():
            terms = objective(variable)
            total = sum(t.sum() for t in terms.values())
            (grad,) = torch.autograd.grad(total, variable)
        optimizer.update(grad)
        log.write(total.detach(), terms)

    graphs = settings.cuda_graphs and settings.optimizer == "lbfgs" and start.device.type == "cuda"
    step = GraphedStep(iteration, enabled=graphs)
    losses: list[float] = []
    styles: list[float] = []  # the style term's, for EarlyStop's style_tolerance
    settled = ImageSettled(run.stop)
    try:
        for i in range(1, iterations + 1):
            # Step (with --cuda-graphs: one graph replay).
            step()
            if i % report_every and i != iterations:
                continue
            # Report. SYNC: the log of the iterations since the last report comes back in one read.
            records = run.report(log.read(i - len(losses)), len(losses))
            losses += [record["loss"] for record in records]
            styles += [record["style"] for record in records]  # every objective has a style term
            # Early stop: the loss (and the style term) hardly fell, or the image hardly moved,
            # over the last window.
            if run.stop.reached(losses, styles) or settled.reached(variable, i):
                iterations = i
                break
    finally:
        step.close()
    run.result.iterations += iterations
    # Score the returned image itself (the history holds each iteration's starting loss).
    variable = variable.detach().clamp(0, 1)
    with torch.no_grad():
        final = objective(variable)
    total = sum(final.values())
    run.result.per_image = [  # SYNC: float()
        {"loss": float(total[i]), **{k: float(v[i]) for k, v in final.items()}} for i in range(variable.shape[0])
    ]
    return objective.image_of(variable)
