"""The worker side of the photo archive: one task per batch, in a thread of this process or on a
Dask worker. A task decodes its batch (no device held), waits for a free device, stylizes, then
encodes and writes each image and its record.

What a process keeps across its tasks is one WorkerState: its pools of devices, one Stylizer
per device (the VGG and the style targets, built once per job), and which runs are over."""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from .archive_records import Batch, Item, Job, failure, log, new_record, state_dir, write_record
from .devices import is_out_of_memory, out_of_memory_message
from .devices import parse_devices as devices_from_text
from .errors import InputError, WriteError, one_line
from .hashing import file_sha256
from .images import Metadata, load_photo, save_image
from .optimize import StyleResult
from .stylize import Stylizer
from .tree import output_target, read_ledger, replaceable, write_ledger

# After Ctrl-C or SIGTERM, how long to wait for batches on a device to reach their next
# iteration (where they stop) or to finish writing their images and records.
STOP_TIMEOUT = 60.0


def parse_devices(text: str) -> tuple[str, ...]:
    """'auto': every CUDA device, else MPS or the CPU; or a comma-separated list (devices.parse_devices)."""
    return tuple(str(device) for device in devices_from_text(text))


class Cancelled(Exception):
    """The run this task belongs to is over (Ctrl-C in the parent): stop at the next iteration.
    joblib's threads cannot be stopped from outside and would otherwise finish their batches."""


class WorkerState:
    """What one process keeps across the tasks it runs, shared by its threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.finished_runs: set[str] = set()
        self.tasks_changed = threading.Condition()
        self.tasks_running: dict[str, int] = defaultdict(int)  # run id -> its tasks running here
        self.device_pools: dict[tuple[str, ...], queue.Queue] = {}
        self.stylizers: dict[str, tuple[str, Stylizer]] = {}  # device -> (job hash, its stylizer)

    def check_cancelled(self, job: Job, *_) -> None:
        if job.run in self.finished_runs:
            raise Cancelled(job.run)

    def stop(self, run: str, timeout: float = STOP_TIMEOUT) -> None:
        """End a run: its tasks stop at their next iteration. Returns once this process's tasks
        of that run have stopped: a stopped run has finished the writes it was doing, and nothing
        is written after it says it stopped."""
        self.finished_runs.add(run)
        with self.tasks_changed:
            self.tasks_changed.wait_for(lambda: self.tasks_running[run] == 0, timeout)
            self.tasks_running.pop(run, None)

    @contextmanager
    def task(self, job: Job) -> Iterator[None]:
        with self.tasks_changed:
            self.tasks_running[job.run] += 1
        try:
            yield
        finally:
            with self.tasks_changed:
                self.tasks_running[job.run] -= 1
                self.tasks_changed.notify_all()

    @contextmanager
    def device_slot(self, devices: tuple[str, ...] | None) -> Iterator[str]:
        """Hold one of the devices, for the optimization only; decoding and encoding happen outside."""
        key = devices or parse_devices("auto")
        with self.lock:
            if key not in self.device_pools:
                self.device_pools[key] = queue.Queue()
                for device in key:
                    self.device_pools[key].put(device)
            pool = self.device_pools[key]
        device = pool.get()
        try:
            yield device
        finally:
            pool.put(device)

    def stylizer_for(self, job: Job, device: str) -> Stylizer:
        """One Stylizer per device and job, kept across batches (the VGG and the style targets)."""
        cached = self.stylizers.get(device)
        if cached is None or cached[0] != job.settings_hash:
            cached = (job.settings_hash, Stylizer(list(job.styles), job.settings, device=device))
            self.stylizers[device] = cached
        return cached[1]


WORKER = WorkerState()  # this process's: Dask runs run_batch in each worker's process


def run_batch(job: Job, batch: Batch) -> list[dict]:
    """One task: decode (no device held), stylize, encode. Returns the records written."""
    with WORKER.task(job):
        records, items, images, metadata = [], [], [], []
        for item in batch.items:
            path = Path(job.input_dir) / item.rel
            try:
                image, meta = load_photo(path, job.settings.size)
                if tuple(image.shape[-2:]) != batch.shape:
                    raise InputError(f"{path}: changed while the archive was being processed; run again")
            except InputError as exc:
                records.append(failure(job, item, str(exc)))
                continue
            items.append(item)
            images.append(image)
            metadata.append(meta)
        if items:
            records += stylize_batch(job, items, images, metadata)
        return records


def stylize_batch(
    job: Job, items: list[Item], images: list[torch.Tensor], metadata: Sequence[Metadata | None] | None = None
) -> list[dict]:
    """Optimize images of one shape together, write them (with their sources' `metadata`) and
    their records; a batch that does not fit in memory is split in halves, and one whose loss
    diverged is retried image by image."""
    metadata = list(metadata) if metadata is not None else [None] * len(items)
    start, device = time.perf_counter(), None
    try:
        with WORKER.device_slot(job.devices) as device:
            WORKER.check_cancelled(job)
            callback = functools.partial(WORKER.check_cancelled, job)
            # Alone and still too big: keep the finest scale that fits, upsampled (recorded).
            stylizer = WORKER.stylizer_for(job, device)
            optimize = stylizer.stylize_within_memory if len(items) == 1 else stylizer.stylize
            result = optimize(torch.cat(images), callback=callback)
            result.image = result.image.cpu()  # before the device is another batch's
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(items) == 1:
            # Not the file's fault: `transient` has the next run try it again (after the user
            # freed memory, or with --device cpu, which does not change the settings).
            message = out_of_memory_message(job.settings.size, device or "auto", tuple(images[0].shape[-2:]))
            return [failure(job, items[0], f"{Path(job.input_dir) / items[0].rel}: {message}", transient=True)]
        half = len(items) // 2
        return stylize_batch(job, items[:half], images[:half], metadata[:half]) + stylize_batch(
            job, items[half:], images[half:], metadata[half:]
        )
    except FloatingPointError as exc:
        if len(items) == 1:
            return [failure(job, items[0], f"{Path(job.input_dir) / items[0].rel}: {exc}")]
        records = []
        for item, image, meta in zip(items, images, metadata):
            records += stylize_batch(job, [item], [image], [meta])
        return records
    seconds = (time.perf_counter() - start) / len(items)
    fields = {"device": device, "batch_size": len(items), "seconds": round(seconds, 3)}
    return write_results(job, items, metadata, result, fields)


def write_results(
    job: Job, items: list[Item], metadata: list[Metadata | None], result: StyleResult, fields: dict
) -> list[dict]:
    """Write each image of a stylized batch and its record, with `fields` (where, how fast)."""
    outputs = result.image
    shape = tuple(outputs.shape[-2:])  # the batch's: an image optimized smaller is upsampled
    # The core scores each image of a batch separately (StyleResult.per_image).
    losses = getattr(result, "per_image", None) or [None] * len(items)
    records = []
    for index, item in enumerate(items):
        record = new_record(job, item, losses=losses[index], **fields)
        if result.optimized_size is not None and result.optimized_size != shape:
            record["optimized_size"] = list(result.optimized_size)  # out of memory at full size
        try:
            write_output(job, item, outputs[index : index + 1], metadata[index], record)
        except InputError as exc:  # the output tree changed under the run: a file in the way
            records.append(failure(job, item, str(exc), transient=True))
            continue
        except WriteError as exc:
            if exc.stops_the_job:  # a full disk fails every image after this one: stop here
                raise
            records.append(failure(job, item, str(exc)))
            continue
        if record.get("metadata"):  # the image is done; its EXIF or ICC profile could not be kept
            log.warning("%s: %s", one_line(item.rel), record["metadata"])
        records.append(write_record(job, record))
    return records


def write_output(job: Job, item: Item, image: torch.Tensor, metadata: Metadata | None, record: dict) -> None:
    """Place one stylized image under its name, inside the output tree only, over nothing but
    the job's own files (or anything, with --overwrite). Its ledger records the finished file's
    fingerprint and `record` before the rename; the caller writes `record` after it."""
    output_dir = Path(job.output_dir)
    target = output_target(output_dir, item.output, create=True)
    ledger = read_ledger(state_dir(output_dir), item.output)
    previous = replaceable(target, known=[item.replaces, *ledger.get("sha256", ())], overwrite=job.overwrite)

    def before_rename(tmp: Path, note: str | None) -> None:
        if note is not None:
            record["metadata"] = one_line(note)
        record["output_sha256"] = file_sha256(tmp)
        write_ledger(state_dir(output_dir), item.output, [previous, record["output_sha256"]], record)

    save_image(image, target, quality=job.quality, metadata=metadata, before_rename=before_rename)
