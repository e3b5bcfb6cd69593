"""Planning a photo archive run, in the parent process: which images are still to do (the tree
compared with the records of earlier runs and the output-name ledger), the output shape of each
from its header alone, and the batches: images of one shape, as many as fit on a device."""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from joblib import Parallel, delayed

from . import lbfgs
from .archive_records import Batch, Item, Job, is_current, log, read_records, state_dir, write_record
from .errors import InputError, one_line
from .hashing import file_sha256
from .settings import resuming_text
from .tree import output_names, output_target, probe, read_ledger, replaceable, walk
from .vgg import LAYERS


@dataclass
class Plan:
    inputs: int = 0  # image files in the tree (after --include/--exclude)
    done_before: int = 0  # skipped: finished earlier with these settings
    failed_before: list[dict] = field(default_factory=list)  # skipped: failed earlier (no --retry-failed)
    todo: int = 0  # to process in this run
    unlisted: list[str] = field(default_factory=list)  # directories that could not be listed
    # Options the archive began with, kept where this run left them unset (archive.keep_own_defaults):
    # name -> (the value it began with, the default now).
    kept: dict[str, tuple] = field(default_factory=dict)

    def resuming(self) -> str:
        """What the run says of the options it kept, on screen and in the log."""
        return resuming_text(self.kept, "archive", "restyle its finished images")


# --- what is left to do ----------------------------------------------------------------------


def plan_run(job: Job, include: Sequence[str], exclude: Sequence[str], retry_failed: bool) -> tuple[Plan, list[Item]]:
    """Walk the tree and keep what is not finished: new or changed sources, new settings, and
    earlier failures with --retry-failed."""
    input_dir, output_dir = Path(job.input_dir), Path(job.output_dir)
    rels, unlisted = walk(input_dir, output_dir, include, exclude)
    names = output_names(rels, job.out_format)
    records = read_records(output_dir)
    plan, todo = Plan(inputs=len(rels), unlisted=unlisted), []
    for rel in rels:
        try:
            stat = (input_dir / rel).stat()
            size, mtime_ns = stat.st_size, stat.st_mtime_ns
        except OSError:  # a broken link: its probe records why
            size = mtime_ns = None
        item, record = Item(rel, names[rel], size, mtime_ns), records.get(rel)
        if is_current(record, item, job):
            if record["status"] == "done" and (output_dir / record["output"]).is_file():
                plan.done_before += 1
                continue
            if record["status"] == "failed" and not retry_failed and not record.get("transient"):
                plan.failed_before.append(record)
                continue
            item = replace(item, attempt=record.get("attempts", 0) + 1)
        if recover_placed(job, item):
            plan.done_before += 1
            continue
        todo.append(item)
    plan.todo = len(todo)
    # Outputs recorded by versions before the ledger: the file under that name is the job's.
    legacy = {r["output"] for r in records.values() if r.get("status") == "done" and "output_sha256" not in r}
    return plan, [replace(item, replaces=output_sha256(job, item)) if item.output in legacy else item for item in todo]


def output_sha256(job: Job, item: Item) -> str | None:
    return file_sha256(Path(job.output_dir) / item.output, follow_links=False)


def recover_placed(job: Job, item: Item) -> bool:
    """Whether an earlier run placed this image under its name and was killed before writing
    its record: the ledger holds that record, and the file there is the one it describes. Then
    the record is written now, and the image is not stylized again."""
    if item.output is None:
        return False
    record = read_ledger(state_dir(job.output_dir), item.output).get("record")
    if not record or record.get("source") != item.rel or not record.get("output_sha256"):
        return False
    if not is_current(record, item, job):
        return False
    if output_sha256(job, item) != record["output_sha256"]:
        return False
    write_record(job, record)
    note = "placed by an earlier run that stopped before recording it"
    log.info("done %s -> %s (%s)", one_line(item.rel), one_line(item.output), note)
    return True


# --- output shapes, from the headers -----------------------------------------------------------


@dataclass(frozen=True)
class Probed:
    """An item after its header was read and its output's place checked: its shape, or why not."""

    item: Item  # with `replaces`: the job's own file under its output name
    shape: tuple[int, int] | None
    error: str | None = None
    transient: bool = False  # the output's fault, not the file's: the next run looks again


def preflight(job: Job, item: Item) -> Probed:
    """probe, and where the output goes. A reason of the output's (no name left for it, a file
    of the user's in the way) is transient: the next run looks again, without --retry-failed."""
    path, output_dir = Path(job.input_dir) / item.rel, Path(job.output_dir)
    shape, error = probe(path, job.settings.size)
    if error is not None:
        return Probed(item, None, error)
    try:
        if item.output is None:
            why = "each name it could have is another file's output"
            raise InputError(f"{path}: no output name is left for it ({why})")
        target = output_target(output_dir, item.output)
        known = [item.replaces, *read_ledger(state_dir(output_dir), item.output).get("sha256", ())]
        return Probed(replace(item, replaces=replaceable(target, known=known, overwrite=job.overwrite)), shape)
    except InputError as exc:
        return Probed(item, None, one_line(str(exc)), transient=True)


def preflight_all(job: Job, todo: Sequence[Item]) -> list[Probed]:
    # Header reads in threads: on a network share they are mostly waiting.
    parallel = Parallel(n_jobs=min(16, os.cpu_count() or 1), prefer="threads")
    return parallel(delayed(preflight)(job, item) for item in todo)


# --- batches ---------------------------------------------------------------------------------


def make_batches(
    shapes: dict[Item, tuple[int, int]], batch_size: Callable[[tuple[int, int]], int], workers: int = 1
) -> list[Batch]:
    """Bucket by output shape (a batch is one tensor), biggest buckets first. A bucket is cut
    into at least `workers` batches where it can be, so that no device idles beside a big one."""
    buckets: dict[tuple[int, int], list[Item]] = defaultdict(list)
    for item, shape in shapes.items():
        buckets[shape].append(item)
    batches = []
    for shape in sorted(buckets, key=lambda s: (-len(buckets[s]), s)):
        items = buckets[shape]
        size = max(1, min(batch_size(shape), math.ceil(len(items) / workers)))
        batches += [Batch(shape, tuple(items[i : i + size])) for i in range(0, len(items), size)]
    return batches


# How many images of one shape fit on a device at once, from what one image holds there per
# output pixel, counted from the buffers' shapes in fp32 (--precision fp32; under bf16 autocast
# the activations halve but the losses keep fp32 copies of the style layers: about as much):
#   L-BFGS (lbfgs.BatchedLBFGS): lbfgs.HISTORY_SIZE pairs (s, y) of 3-channel image-sized
#     buffers, the previous gradient and step, and about 8 image-sized temporaries of one update:
#     (2 * 20 + 2 + 8) * 3 channels * 4 bytes = 600 bytes (the 20 x 20 inner products are nothing).
#   VGG-19 to relu5_1 (vgg_bytes_per_pixel): what autograd keeps for the backward pass, 2.3 KB.
# That is 2.9 KB; HEADROOM covers cuDNN's workspaces, the allocator's fragmentation and the CUDA
# graphs of the coarser scales (a third more at most). Too high only costs speed; a batch that
# does not fit anyway is split in halves (archive_worker.stylize_batch).
FLOAT_BYTES = 4
LBFGS_TEMPORARIES = 8  # image-sized buffers alive during one update besides the history
HEADROOM = 1.5
RESERVED_BYTES = 1 << 30  # the CUDA context, the VGG weights, the style targets
MAX_BATCH = 64
VGG_CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}  # per block; block b has 1/4**(b-1) of the pixels


def vgg_bytes_per_pixel(last: str = "relu5_1") -> float:
    """What autograd keeps of VGG-19 up to `last`, per input pixel: the 3-channel input (and its
    channels-last copy); each conv's output, which its in-place ReLU reuses (64 + 64 channels at
    full resolution, 2 x 128 at a quarter, 4 x 256 at 1/16, 4 x 512 at 1/64, 512 at 1/256: 290
    values); each max pool's output and int64 argmax indices (30 values and 30 indices); and the
    largest gradients alive at once in the backward pass: three of 64 channels at full size.
    290 + 30 + 6 values and 3 x 64 gradients of 4 bytes, 30 indices of 8: 2312 bytes."""
    values, indices = 2 * 3, 0.0
    for name in LAYERS[: LAYERS.index(last) + 1]:
        block = int(re.search(r"\d", name).group())
        if name.startswith("conv"):
            values += VGG_CHANNELS[block] / 4 ** (block - 1)
        elif name.startswith("pool"):
            values += VGG_CHANNELS[block] / 4**block
            indices += VGG_CHANNELS[block] / 4**block
    gradients = 3 * VGG_CHANNELS[1]
    return (values + gradients) * FLOAT_BYTES + indices * 8


def lbfgs_bytes_per_pixel(history: int) -> float:
    return (2 * history + 2 + LBFGS_TEMPORARIES) * 3 * FLOAT_BYTES


def bytes_per_pixel() -> float:
    """GPU bytes one image of a batch takes per output pixel, headroom included (read at each
    call: the L-BFGS history is lbfgs.HISTORY_SIZE as it is now)."""
    return HEADROOM * (lbfgs_bytes_per_pixel(lbfgs.HISTORY_SIZE) + vgg_bytes_per_pixel())


def auto_batch_size(shape: tuple[int, int], free_bytes: int | None) -> int:
    """From free GPU memory; 1 on CPU, where a batch is no faster than its images one by one."""
    if free_bytes is None:
        return 1
    per_image = shape[0] * shape[1] * bytes_per_pixel()
    return int(max(1, min(MAX_BATCH, (free_bytes - RESERVED_BYTES) // per_image)))
