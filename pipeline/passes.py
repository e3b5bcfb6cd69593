"""--passes N: the multi-pass algorithm of Ruder, Dosovitskiy and Brox (2018, IJCV, "Artistic
style transfer for videos and spherical images", sec. 3.3, "multi-pass algorithm").

The first pass is the usual one (videorange.RangeRun: each frame from the one before it). Then
the shot is processed again N-1 times, in alternating directions (pass 2 backward, pass 3
forward, ...). In pass p, frame i starts from a blend of its own image of pass p-1 and its
neighbour n1 already updated in this pass (i-1 going forward, i+1 going backward), warped onto
it and weighted by that pair's reliability c1:

    init = (1 - delta c1) x_i(p-1) + delta c1 W(x_n1(p)),   delta = BLEND

and its temporal loss holds it to both neighbours: W(x_n1(p)) where c1 trusts it, W(x_n2(p-1))
where c2 does (n2: the other neighbour, not yet updated in this pass). So what a frame learns
travels both ways along the shot, instead of only forward: the start of a pan is stylized
knowing what the end looks like, and errors made early are not carried to the end. Within a shot
only; a shot's end frames have one neighbour. The pairs carrying frame i+1 onto frame i are
computed (on the content frames, like the flow stage's) when the first later pass begins.

Commit records, for exact resume: a frame's statistics file records its "pass". Pass p of frame
i writes its image under PASS_IMAGE's name beside the frame first, then the statistics (the
commit), then renames the image over the frame's. A resumed run finishes that rename where the
statistics say pass p and the image of pass p is still under its own name, deletes any other,
and goes on at the first frame, in pass order, whose pass is below the current one. A frame is
finished (FrameStore.finished: "final") once its last pass is and so is its flicker record,
measured against the final images of it and the frame before it: the report measures what is
encoded, and seams and progress see only final frames.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from joblib.externals.loky import get_reusable_executor

from .atomic import replace
from .errors import PipelineError
from .flow import FramePair
from .flowstage import compute_pair, default_workers, pair_name
from .frame_record import optimized, pair_record
from .images import load_image, save_image
from .letterbox import picture_share
from .manifest import read_json, timestamp, write_json
from .shots import Shot, counted
from .stylize import Stylizer
from .temporal import FlowWarmStart, FrameStart, optimize_frame
from .workdir import FrameStore, frame_name

# delta: how much of the neighbour updated in this pass a frame starts from, where the flow
# trusts it (Ruder, Dosovitskiy and Brox 2018, sec. 3.3, use 0.5).
BLEND = 0.5
PASS_IMAGE = ".pass{}.png"  # NNNNNN.pass3.png: frame NNNNNN's image of pass 3, before its commit


def forward(p: int) -> bool:
    """Pass 1 goes forward, pass 2 backward, pass 3 forward, ..."""
    return p % 2 == 1


def pass_order(shot: Shot, p: int) -> range:
    return range(shot.first, shot.last + 1) if forward(p) else range(shot.last, shot.first - 1, -1)


def neighbours(shot: Shot, index: int, p: int) -> tuple[int | None, int | None]:
    """(n1, n2): the neighbour already updated in pass p, and the other one; None outside the shot."""
    step = -1 if forward(p) else 1
    inside = lambda n: n if shot.first <= n <= shot.last else None  # noqa: E731
    return inside(index + step), inside(index - step)


def blend(own: torch.Tensor, warped: torch.Tensor, reliability: torch.Tensor, delta: float = BLEND) -> torch.Tensor:
    """Ruder et al.'s multi-pass start: (1 - delta c) x_i(p-1) + delta c W(x_n1(p))."""
    weight = delta * reliability
    return (1 - weight) * own + weight * warped


def pass_image(store: FrameStore, index: int, p: int) -> Path:
    return store.styled(index).with_name(frame_name(index, PASS_IMAGE.format(p)))


def frame_pass(store: FrameStore, index: int, stage_hash: str) -> int:
    """The last pass frame `index` has committed (0: none, or of other settings)."""
    stats = read_json(store.stats(index), default=None)
    if not isinstance(stats, dict) or stats.get("stage_hash") != stage_hash:
        return 0
    return stats.get("pass", 1)


class Passes:
    """Passes 2..N over one shot whose first pass is done. `run` is the shot's RangeRun (its
    context `c`, its `shot`, its `finished`): duck-typed, as videorange imports this module."""

    def __init__(self, run):
        self.run, self.c, self.shot = run, run.c, run.shot
        self.store, self.total = run.c.store, run.c.job.passes
        self.starter: FlowWarmStart = run.c.starter
        self.hash = run.c.hashes["stylize"]

    def first_pass_done(self) -> int:
        """The last frame of the shot's unbroken run of frames with a committed pass (first - 1: none)."""
        index = self.shot.first
        while index <= self.shot.last and frame_pass(self.store, index, self.hash) >= 1:
            index += 1
        return index - 1

    def all(self, stylizer: Callable[[], Stylizer]) -> None:
        """Passes 2..N, resumed where a run stopped; then every frame's final record."""
        passes = {i: frame_pass(self.store, i, self.hash) for i in range(self.shot.first, self.shot.last + 1)}
        self.finish_renames(passes)
        current = min(passes.values()) + 1
        if current <= self.total:
            self.reverse_pairs([i for i in passes if passes[i] < self.total])
        while current <= self.total:
            todo = [i for i in pass_order(self.shot, current) if passes[i] < current]
            self.c.log(f"shot {self.shot.text()}: pass {current} of {self.total}, {counted(len(todo), 'frame')} to do")
            for index in todo:
                self.frame(stylizer(), index, current)
                passes[index] = current
                self.c.tick()
            current += 1
        for index in range(self.shot.first, self.shot.last + 1):  # any a stop left between commit and record
            self.make_final(index)

    def finish_renames(self, passes: dict[int, int]) -> None:
        """A pass image whose statistics are committed takes the frame's name; any other goes."""
        for index, done in passes.items():
            for p in range(2, self.total + 1):
                path = pass_image(self.store, index, p)
                if path.exists():
                    if p == done:
                        replace(path, self.store.styled(index))
                    else:
                        path.unlink()

    def reverse_pairs(self, frames: list[int]) -> None:
        """The pairs carrying frame i+1 onto frame i, computed once (FramePair.save is atomic), on
        the flow stage's workers: the device waits for them once per shot."""
        began = time.perf_counter()
        todo = [i for i in sorted(frames) if i < self.shot.last and not self.reverse_path(i).exists()]
        tasks = [
            ((i + 1, i), self.store.content(i + 1), self.store.content(i), self.reverse_path(i), self.c.job.flow_preset)
            for i in todo
        ]  # fmt: skip
        workers = min(self.c.job.flow_workers or default_workers(), len(tasks))
        if workers > 1:
            results = list(get_reusable_executor(max_workers=workers).map(compute_pair, *zip(*tasks)))
        else:
            results = [compute_pair(*task) for task in tasks]
        missing = [later for (_, later), score in results if score is None]
        if missing:  # compute_pair skips a pair whose frame is gone; these are all needed
            frame = self.store.content(missing[0] + 1)
            raise PipelineError(f"{frame}: a content frame a later pass needs is missing; run again")
        seconds = time.perf_counter() - began
        on = counted(workers, "worker")
        self.c.log(f"shot {self.shot.text()}: {len(todo)} reverse flow pairs in {seconds:.1f} s on {on}")

    def reverse_path(self, index: int) -> Path:
        return self.store.flow_dir / pair_name(index + 1, index)

    def pair(self, earlier: int, later: int) -> FramePair | None:
        """The pair carrying frame `earlier` onto `later`; None across a cut (not one frame to the other)."""
        pair = FramePair.load(self.store.flow_dir / pair_name(earlier, later))
        if self.c.picture:  # as the picture alone would have it (letterbox.py)
            pair = self.c.picture.confine(pair)
        return pair if pair.cut_score <= self.starter.plan.scene_threshold else None

    def start(self, index: int, p: int) -> FrameStart:
        """Frame `index`'s start in pass p: the blend with n1, the temporal terms against n1 and n2."""
        device = self.starter.device
        own = load_image(self.store.styled(index)).to(device, torch.float32)
        n1, n2 = neighbours(self.shot, index, p)
        init, targets, stats = own, [], {}
        for n in (n1, n2):
            pair = self.pair(n, index) if n is not None else None
            if pair is None:
                continue
            warped = self.starter.warp(load_image(self.store.styled(n)).to(device, torch.float32), pair)
            reliability = torch.from_numpy(pair.reliability).to(device)[None, None]
            if n == n1:
                init = blend(own, warped, reliability)
            targets.append((warped, reliability))
            share = picture_share(pair.reliability, self.c.picture)  # the picture's alone with --crop-bars
            stats[f"reliable_{'n1' if n == n1 else 'n2'}"] = round(share, 4)
        # Its source is no warm start's: the stall guard (temporal.stalled) compares a frame with the one
        # before it in a single pass, which a later pass has no equivalent of.
        return self.starter.warm(init, f"pass{p}", held=targets, stats=stats)

    def frame(self, stylizer: Stylizer, index: int, p: int) -> None:
        """Pass p of frame `index`: optimized, its image placed under its pass's name, committed, renamed."""
        c = self.c
        start = self.start(index, p).within(c.picture)
        content = load_image(self.store.content(index))
        c.events.frame_started(index, start.iterations)
        began = time.perf_counter()
        result, _ = optimize_frame(stylizer, content, start, c.events.iteration, None)  # no stall guard: see `start`
        seconds = time.perf_counter() - began
        save_image(result.image, pass_image(self.store, index, p))
        stats = read_json(self.store.stats(index))
        iterations = [*stats.get("pass_iterations", [stats["iterations"]]), result.iterations]
        stats |= {
            "pass": p, "pass_iterations": iterations, "iterations": sum(iterations), **optimized(result),
            "seconds": round(stats.get("seconds", 0) + seconds, 3), "pass_start": start.stats,
            "final": False, "finished": timestamp(),
        }  # fmt: skip
        write_json(self.store.stats(index), stats)  # the commit: pass p is this frame's
        replace(pass_image(self.store, index, p), self.store.styled(index))
        c.log(
            f"frame {index:06d}/{c.estimate:06d} pass {p}/{self.total} iterations={result.iterations} "
            f"loss={stats['loss']:.5g} seconds={seconds:.2f}"
        )
        if p == self.total:  # its flicker record, and its neighbour's, once both sides are final
            self.make_final(index)
            self.make_final(index + 1)

    def make_final(self, index: int) -> None:
        """Frame `index` of the last pass becomes final: its flicker record measured again against
        the final images of it and the frame before it (which must be of the last pass too)."""
        if not self.shot.first <= index <= self.shot.last:
            return
        stats = read_json(self.store.stats(index))
        if stats.get("final", True) or stats.get("pass", 1) < self.total:
            return
        if index > self.shot.first:
            if frame_pass(self.store, index - 1, self.hash) < self.total:
                return
            pair = FramePair.load(self.store.pair(index))
            stats["flicker"] = pair_record(self.store, index, pair, self.c.hashes["flow"])
        stats["final"] = True
        write_json(self.store.stats(index), stats)
        self.run.finished(index, stats)
