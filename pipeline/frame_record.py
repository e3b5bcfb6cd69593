"""A stylized frame's statistics file (WORK/styled/NNNNNN.json), its commit record: how it started
and was optimized, its pass (--passes), and the flicker figures of the pair before it. A resume
reads its recorded loss, the chunk plan its cut score, the report (report_video_data.py) the same keys.
"""

from __future__ import annotations

import json

import torch

from .flicker import pair_flicker
from .flow import FramePair
from .manifest import timestamp
from .optimize import StyleResult
from .temporal import FrameStart, Pairs
from .workdir import FrameStore


def frame_stats(
    index: int, start: FrameStart, result: StyleResult, seconds: float, *, stage_hash: str, device: torch.device
) -> dict:
    """Frame `index`'s statistics as its first (or only) pass commits them, less its marks
    (`first_pass_marks`) and its "flicker" (`flicker_field`)."""
    return {
        "frame": index,
        "stage_hash": stage_hash,
        "start": start.source,
        **start.stats,
        "iterations": result.iterations,
        **optimized(result),
        "seconds": round(seconds, 3),
        "device": str(device),
        "finished": timestamp(),
    }


def first_pass_marks(result: StyleResult, *, redone: bool, passes: int) -> dict:
    """How the first (or only) pass went, where it is not the plain case: `redone`, stylized again
    after stopping too early (temporal.optimize_frame); with --passes, the first of several, final
    after the last (passes.py)."""
    marks = {"redone": True} if redone else {}
    if passes > 1:
        marks |= {"pass": 1, "pass_iterations": [result.iterations], "final": False}
    return marks


def optimized(result: StyleResult) -> dict:
    """The optimization's part of a frame's record (each pass's, passes.py): the final loss and
    each of its terms, and the loss of every iteration."""
    final = result.final_terms
    return {
        "loss": final.get("loss"),
        "terms": {k: v for k, v in final.items() if k != "loss"},
        "loss_history": [record["loss"] for record in result.history],
    }


def flicker_field(
    store: FrameStore, index: int, first: int, pairs: Pairs, start_score: float | None, flow_hash: str
) -> dict:  # fmt: skip
    """Frame `index`'s "flicker" field, as a dict to add to its statistics ({} for the video's first
    frame), in a shot starting at frame `first` whose pair before it has the cut score `start_score`."""
    if index > first:
        return {"flicker": pair_record(store, index, pairs(index), flow_hash)}
    if index > 1:  # the pair across the shot's start: a cut, or a seam measured on the output
        return {"flicker": {"cut_score": start_score, "output": None, "input": None, "flow": flow_hash}}
    return {}


def pair_record(store: FrameStore, index: int, pair: FramePair, flow_hash: str) -> dict:
    """The pair (index - 1, index)'s flicker figures, recorded with the frame as it finishes so
    the report needs no frames or flow kept to the end; the flow hash says which flow made them."""
    sequences = {
        "output": (store.styled(index - 1), store.styled(index)),
        "input": (store.content(index - 1), store.content(index)),
    }
    return pair_flicker(pair, sequences) | {"flow": flow_hash}


def finished_line(stats: dict, estimate: int, seconds: float) -> str:
    """The log's line for a frame whose first (or only) pass is committed with `stats`."""
    return (
        f"frame {stats['frame']:06d}/{estimate:06d} start={stats['start']} "
        f"iterations={stats['iterations']} loss={stats['loss']:.5g} "
        + " ".join(f"{k}={v:.4g}" for k, v in stats["terms"].items())
        + f" seconds={seconds:.2f}"
    )


def recorded_loss(store: FrameStore, index: int) -> float | None:
    """Frame `index`'s final loss as its statistics record it (None before the first frame):
    read once, where a run resumes."""
    path = store.stats(index)
    return json.loads(path.read_text()).get("loss") if index >= 1 and path.exists() else None


def recorded_cut_score(store: FrameStore, index: int, first: int) -> float | None:
    """The cut score of the pair before frame `index` as its statistics record it, for the chunk
    plan's decisions replayed after a resume; None for the first frame of its shot (`first`)."""
    record = json.loads(store.stats(index).read_text()).get("flicker") or {}
    return record.get("cut_score") if index > first else None
