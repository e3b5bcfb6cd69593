"""Photo archives: a directory tree in, the same tree out, stylized in batches on every device.

The parent process walks the tree, compares it with the records of earlier runs, reads only the
header of each image still to do, and buckets the images by output shape. Batches of one shape
are joblib tasks: threads here (two slots per device, so one batch decodes or encodes while the
other holds the device), or the workers of a Dask cluster through joblib's dask backend.

A task decodes its batch, waits for a free device, stylizes, then encodes and writes one small
JSON record per image under OUT/.stylize/records/. Each image takes three renames: its output
name's ledger (OUT/.stylize/outputs/, the finished file's fingerprint and record), the image,
its record. A kill after any of them leaves a state the same command finishes from: the ledger
tells the job's own files from the user's (which are never replaced without --overwrite), and an
image placed but not yet recorded is recorded without being stylized again. No file is shared
between workers, so workers finishing at once cannot corrupt the manifest, and a crash loses at
most the batches in progress.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import queue
import socket
import threading
import time
import uuid
import warnings
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from joblib import Parallel, delayed, parallel_config

from .devices import is_out_of_memory, out_of_memory_message
from .devices import parse_devices as devices_from_text
from .errors import InputError, WriteError
from .atomic import is_temporary
from .images import Metadata, load_image, load_photo, regular_sha256, save_image
from .manifest import WorkDirLock, read_json, write_json
from .stylize import StyleSettings, Stylizer
from .tree import (
    LEDGER_DIR, OUTPUT_FORMATS, one_line, output_names, output_target, probe, read_ledger, replaceable, walk, write_ledger,
)  # fmt: skip

STATE_DIR = ".stylize"  # inside the output directory: archive.json, records/, log.txt, .lock
SLOTS_PER_DEVICE = 2  # one batch on the device, one decoding or encoding beside it
# Rough GPU bytes per output pixel and image: L-BFGS keeps 100 (s, y) pairs of 3 floats per
# pixel (2.4 KB), VGG-19 activations and gradients up to relu5_1 take about as much again; the
# rest is headroom for cuDNN workspaces and fragmentation. Too high only costs speed; a batch
# that does not fit anyway is split in halves (see stylize_batch).
BYTES_PER_PIXEL = 8 * 1024
RESERVED_BYTES = 1 << 30
MAX_BATCH = 64
# After Ctrl-C or SIGTERM, how long to wait for batches on a device to reach their next
# iteration (where they stop) or to finish writing their images and records.
STOP_TIMEOUT = 60.0
# Seconds to wait for the Dask scheduler at --scheduler before refusing the job.
CONNECT_TIMEOUT = 30

log = logging.getLogger("pipeline.archive")


# --- the job, records and batches ----------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """Everything a worker needs, small enough to send to every Dask worker once."""

    input_dir: str
    output_dir: str
    settings: StyleSettings
    styles: tuple[torch.Tensor, ...]
    settings_hash: str  # of the settings, the style files' contents, format and quality
    out_format: str | None
    quality: int
    devices: tuple[str, ...] | None  # None: the worker's own (Dask)
    run: str = ""  # this run's id: its tasks stop once it is over (see Cancelled)
    overwrite: bool = False  # --overwrite: replace files in the output tree that this job did not write


@dataclass(frozen=True)
class Item:
    rel: str
    output: str | None  # None: no name left for it (tree.output_names)
    size: int | None  # of the source, at planning time; None if it could not be read
    mtime_ns: int | None
    attempt: int = 1
    replaces: str | None = None  # SHA-256 of the job's own file under `output`, seen when planning


@dataclass(frozen=True)
class Batch:
    shape: tuple[int, int]
    items: tuple[Item, ...]


def job_hash(settings: StyleSettings, style_hashes: Sequence[str], out_format: str | None, quality: int) -> str:
    values = {"settings": settings.hash(), "styles": list(style_hashes), "format": out_format, "quality": quality}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def file_sha256(path: Path | str) -> str | None:
    """None for what is not a regular file (a FIFO, /dev/zero): those are never read."""
    return regular_sha256(path)


def state_dir(output_dir: Path | str) -> Path:
    return Path(output_dir) / STATE_DIR


def record_path(output_dir: Path | str, rel: str) -> Path:
    # Named by a hash of the relative path: any file name (quotes, newlines, bytes that are not
    # UTF-8) maps to a plain record name.
    return state_dir(output_dir) / "records" / f"{hashlib.sha256(os.fsencode(rel)).hexdigest()[:24]}.json"


def read_records(output_dir: Path | str) -> dict[str, dict]:
    records = {}
    folder = state_dir(output_dir) / "records"
    if folder.is_dir():
        for path in folder.glob("*.json"):
            if is_temporary(path.name):  # a record being written (status runs beside the job)
                continue
            try:
                record = read_json(path)
            except InputError as exc:  # never written half (atomic), but a disk can fail
                log.warning("ignoring %s", exc)
                continue
            records[record["source"]] = record
    return records


def new_record(job: Job, item: Item, *, error: str | None = None, **fields) -> dict:
    return {
        "source": item.rel,
        "size": item.size,
        "mtime_ns": item.mtime_ns,
        "sha256": file_sha256(Path(job.input_dir) / item.rel),
        "settings_hash": job.settings_hash,
        "status": "failed" if error else "done",
        "output": None if error else item.output,
        "error": one_line(error) if error else None,
        "losses": None,
        "attempts": item.attempt,
        "host": socket.gethostname(),  # on a cluster: which machine did it
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **fields,
    }


def write_record(job: Job, record: dict) -> dict:
    write_json(record_path(job.output_dir, record["source"]), record)
    return record


# --- devices and batch size ------------------------------------------------------------------


def parse_devices(text: str) -> tuple[str, ...]:
    """'auto': every CUDA device, else MPS or the CPU; or a comma-separated list (devices.parse_devices)."""
    return tuple(str(device) for device in devices_from_text(text))


def free_memory(devices: Sequence[str] | None = None) -> int | None:
    """Least free memory over these CUDA devices (default: all of this process's; Dask workers
    run it through Client.run), None without CUDA."""
    cuda = [torch.device(d) for d in (devices or parse_devices("auto")) if torch.device(d).type == "cuda"]
    return min(torch.cuda.mem_get_info(d)[0] for d in cuda) if cuda else None


def auto_batch_size(shape: tuple[int, int], free_bytes: int | None) -> int:
    """From free GPU memory; 1 on CPU, where a batch is no faster than its images one by one."""
    if free_bytes is None:
        return 1
    per_image = shape[0] * shape[1] * BYTES_PER_PIXEL
    return max(1, min(MAX_BATCH, (free_bytes - RESERVED_BYTES) // per_image))


def make_batches(shapes: dict[Item, tuple[int, int]], batch_size: Callable[[tuple[int, int]], int], workers: int = 1) -> list[Batch]:
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


# --- the worker side: runs in a thread here or on a Dask worker --------------------------------

_lock = threading.Lock()
_finished_runs: set[str] = set()
_tasks_changed = threading.Condition()
_tasks_running: dict[str, int] = defaultdict(int)  # run id -> its tasks running in this process
_device_pools: dict[tuple[str, ...], queue.Queue] = {}
_stylizers: dict[str, tuple[str, Stylizer, set]] = {}  # device -> (job hash, stylizer, shapes seen)


class Cancelled(Exception):
    """The run this task belongs to is over (Ctrl-C in the parent): stop at the next iteration.
    joblib's threads cannot be stopped from outside and would otherwise finish their batches."""


def check_cancelled(job: Job, *_) -> None:
    if job.run in _finished_runs:
        raise Cancelled(job.run)


@contextmanager
def task_running(job: Job) -> Iterator[None]:
    with _tasks_changed:
        _tasks_running[job.run] += 1
    try:
        yield
    finally:
        with _tasks_changed:
            _tasks_running[job.run] -= 1
            _tasks_changed.notify_all()


def wait_for_tasks(run: str, timeout: float = STOP_TIMEOUT) -> None:
    """Until this run's tasks in this process have stopped: a stopped run has finished the
    writes it was doing, and nothing is written after it says it stopped."""
    with _tasks_changed:
        _tasks_changed.wait_for(lambda: _tasks_running[run] == 0, timeout)
        _tasks_running.pop(run, None)


@contextmanager
def device_slot(devices: tuple[str, ...] | None) -> Iterator[str]:
    """Hold one of the devices, for the optimization only; decoding and encoding happen outside."""
    key = devices or parse_devices("auto")
    with _lock:
        if key not in _device_pools:
            _device_pools[key] = queue.Queue()
            for device in key:
                _device_pools[key].put(device)
        pool = _device_pools[key]
    device = pool.get()
    try:
        yield device
    finally:
        pool.put(device)


def stylizer_for(job: Job, device: str) -> Stylizer:
    """One Stylizer per device and job, kept across batches (the VGG and the style targets)."""
    cached = _stylizers.get(device)
    if cached is None or cached[0] != job.settings_hash:
        cached = (job.settings_hash, Stylizer(list(job.styles), job.settings, device=device))
        _stylizers[device] = cached
    return cached[1]


def stylize_batch(job: Job, items: list[Item], images: list[torch.Tensor], metadata: Sequence[Metadata | None] | None = None) -> list[dict]:
    """Optimize images of one shape together, write them (with their sources' `metadata`) and
    their records; a batch that does not fit in memory is split in halves, and one whose loss
    diverged is retried image by image."""
    metadata = list(metadata) if metadata is not None else [None] * len(items)
    shape = tuple(images[0].shape[-2:])
    start = time.perf_counter()
    device = None
    try:
        with device_slot(job.devices) as device:
            check_cancelled(job)
            callback = functools.partial(check_cancelled, job)
            # Alone and still too big: keep the finest scale that fits, upsampled (recorded).
            result = stylizer_for(job, device).stylize(torch.cat(images), callback=callback, shrink_on_out_of_memory=len(items) == 1)
            outputs = result.image.cpu()
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(items) == 1:
            # Not the file's fault: `transient` has the next run try it again (after the user
            # freed memory, or with --device cpu, which does not change the settings).
            message = f"{Path(job.input_dir) / items[0].rel}: {out_of_memory_message(job.settings.size, device or 'auto', shape)}"
            return [write_record(job, new_record(job, items[0], error=message, transient=True))]
        half = len(items) // 2
        return stylize_batch(job, items[:half], images[:half], metadata[:half]) + stylize_batch(job, items[half:], images[half:], metadata[half:])
    except FloatingPointError as exc:
        if len(items) == 1:
            return [write_record(job, new_record(job, items[0], error=f"{Path(job.input_dir) / items[0].rel}: {exc}"))]
        return [record for item, image, meta in zip(items, images, metadata) for record in stylize_batch(job, [item], [image], [meta])]
    seconds = (time.perf_counter() - start) / len(items)
    # The core scores each image of a batch separately (StyleResult.per_image).
    losses = getattr(result, "per_image", None) or [None] * len(items)
    records = []
    for index, item in enumerate(items):
        record = new_record(
            job, item, losses=losses[index], device=device, batch_size=len(items), seconds=round(seconds, 3)
        )  # fmt: skip
        if result.optimized_size is not None and result.optimized_size != shape:
            record["optimized_size"] = list(result.optimized_size)  # out of memory at full size
        try:
            write_output(job, item, outputs[index : index + 1], metadata[index], record)
        except InputError as exc:  # the output tree changed under the run: a file in the way
            records.append(write_record(job, new_record(job, item, error=str(exc), transient=True)))
            continue
        except WriteError as exc:
            if exc.stops_the_job:  # a full disk fails every image after this one: stop here
                raise
            records.append(write_record(job, new_record(job, item, error=str(exc))))
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
        record["output_sha256"] = regular_sha256(tmp)
        write_ledger(state_dir(output_dir), item.output, [previous, record["output_sha256"]], record)

    save_image(image, target, quality=job.quality, metadata=metadata, before_rename=before_rename)


def run_batch(job: Job, batch: Batch) -> list[dict]:
    """One joblib task: decode (no device held), stylize, encode. Returns the records written."""
    with task_running(job):
        return _run_batch(job, batch)


def _run_batch(job: Job, batch: Batch) -> list[dict]:
    records, items, images, metadata = [], [], [], []
    for item in batch.items:
        path = Path(job.input_dir) / item.rel
        try:
            image, meta = load_photo(path, job.settings.size)
            if tuple(image.shape[-2:]) != batch.shape:
                raise InputError(f"{path}: changed while the archive was being processed; run again")
        except InputError as exc:
            records.append(write_record(job, new_record(job, item, error=str(exc))))
            continue
        items.append(item)
        images.append(image)
        metadata.append(meta)
    if items:
        records += stylize_batch(job, items, images, metadata)
    return records


# --- the parent: plan, run, report --------------------------------------------------------


@dataclass
class Plan:
    inputs: int = 0  # image files in the tree (after --include/--exclude)
    done_before: int = 0  # skipped: finished earlier with these settings
    failed_before: list[dict] = field(default_factory=list)  # skipped: failed earlier (no --retry-failed)
    todo: int = 0  # to process in this run
    unlisted: list[str] = field(default_factory=list)  # directories that could not be listed


@dataclass
class Summary:
    plan: Plan
    done: int = 0
    failed: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    log_path: Path | None = None

    @property
    def all_failed(self) -> list[dict]:
        return self.failed + self.plan.failed_before

    @property
    def images_per_hour(self) -> float:
        return 3600 * self.done / self.seconds if self.seconds > 0 else 0.0


def is_current(record: dict | None, item: Item, job: Job) -> bool:
    """Whether a record still describes this source under these settings. A source touched but
    unchanged (same size and content hash) counts as unchanged."""
    if record is None or record.get("settings_hash") != job.settings_hash:
        return False
    if record.get("status") == "done" and record.get("output") != item.output:
        return False
    if (record.get("size"), record.get("mtime_ns")) == (item.size, item.mtime_ns):
        return True
    if record.get("size") != item.size or item.size is None or not record.get("sha256"):
        return False
    if file_sha256(Path(job.input_dir) / item.rel) != record["sha256"]:
        return False
    write_record(job, record | {"mtime_ns": item.mtime_ns})
    return True


def clean_temporary_files(output_dir: Path) -> None:
    """Remove what atomic writes of a killed run left behind (we hold the lock: none is live)."""
    for root, _, files in os.walk(output_dir):
        for name in files:
            if is_temporary(name):
                Path(root, name).unlink(missing_ok=True)


class LogFileHandler(logging.FileHandler):
    """A log line that cannot be written (disk full) is dropped, not printed to stderr with a
    traceback: the error that stops the job says what happened, in one line."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass

    def close(self) -> None:
        with contextlib.suppress(OSError):  # flushing the dropped lines fails again
            super().close()


@contextmanager
def log_file(path: Path) -> Iterator[None]:
    handler = LogFileHandler(path, encoding="utf-8", errors="backslashreplace")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()


def make_job(
    input_dir: Path,
    output_dir: Path,
    style_paths: Sequence[Path | str],
    settings: StyleSettings,
    *,
    out_format: str | None,
    quality: int,
    devices: tuple[str, ...] | None,
) -> Job:
    """Check the options and load the style images: every mistake is refused before any work."""
    if not input_dir.is_dir():
        raise InputError(f"{input_dir}: " + ("not a directory (give the folder that holds the photos)" if input_dir.exists() else "input directory not found"))
    if input_dir.resolve().is_relative_to(output_dir.resolve()):
        raise InputError(f"{output_dir}: the output directory must not hold the input directory (originals could be overwritten)")
    if output_dir.resolve().is_relative_to(input_dir.resolve()):
        # The archive would change, and a later run with another output would take these results for photos.
        raise InputError(f"{output_dir}: the output directory must not be inside the input directory {input_dir}")
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"{output_dir}: output is a file, not a directory")
    if out_format is not None and out_format not in OUTPUT_FORMATS:
        raise InputError(f"--format {out_format!r}: must be one of {', '.join(OUTPUT_FORMATS)}")
    if not 1 <= quality <= 100:
        raise InputError(f"--quality {quality}: must be between 1 and 100")
    if settings.init == "image":
        raise InputError("--init with an image is not supported for archives; use content or noise")
    if not style_paths:
        raise InputError("at least one --style image is needed")
    if settings.style_blend and len(settings.style_blend) != len(style_paths):
        raise InputError(f"--style-blend has {len(settings.style_blend)} weights for {len(style_paths)} style images")
    styles = tuple(load_image(path, round(settings.size * settings.style_scale)) for path in style_paths)
    style_hashes = [file_sha256(path) for path in style_paths]
    return Job(
        input_dir=str(input_dir),
        output_dir=str(output_dir),
        settings=settings,
        styles=styles,
        settings_hash=job_hash(settings, style_hashes, out_format, quality),
        out_format=out_format,
        quality=quality,
        devices=devices,
        run=uuid.uuid4().hex,
    )


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
            item = Item(rel, names[rel], size, mtime_ns, attempt=record.get("attempts", 0) + 1)
        if recover_placed(job, item):
            plan.done_before += 1
            continue
        todo.append(item)
    plan.todo = len(todo)
    # Outputs recorded by versions before the ledger: the file under that name is the job's.
    legacy = {r["output"] for r in records.values() if r.get("status") == "done" and "output_sha256" not in r}
    return plan, [replace(item, replaces=legacy_fingerprint(job, item)) if item.output in legacy else item for item in todo]


def legacy_fingerprint(job: Job, item: Item) -> str | None:
    return regular_sha256(Path(job.output_dir) / item.output, follow_links=False)


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
    if regular_sha256(Path(job.output_dir) / item.output, follow_links=False) != record["output_sha256"]:
        return False
    write_record(job, record)
    note = "placed by an earlier run that stopped before recording it"
    log.info("done %s -> %s (%s)", one_line(item.rel), one_line(item.output), note)
    return True


def preflight(job: Job, item: Item) -> tuple[Item, tuple[int, int] | None, str | None, bool]:
    """probe, and where the output goes: (item with `replaces`, shape, None, False), or (item,
    None, reason, transient). A reason of the output's (no name left for it, a file of the
    user's in the way) is transient: the next run looks again, without --retry-failed."""
    path, output_dir = Path(job.input_dir) / item.rel, Path(job.output_dir)
    shape, error = probe(path, job.settings.size)
    if error is not None:
        return item, None, error, False
    try:
        if item.output is None:
            raise InputError(f"{path}: no output name is left for it (each name it could have is another file's output)")
        target = output_target(output_dir, item.output)
        known = [item.replaces, *read_ledger(state_dir(output_dir), item.output).get("sha256", ())]
        return replace(item, replaces=replaceable(target, known=known, overwrite=job.overwrite)), shape, None, False
    except InputError as exc:
        return item, None, one_line(str(exc)), True


def execute(job: Job, todo: list[Item], *, batch_size: int | None, cluster) -> Iterator[dict]:
    """Probe, batch and stylize; yield every record as its image finishes, in any order."""
    # Header reads in threads: on a network share they are mostly waiting.
    probed = Parallel(n_jobs=min(16, os.cpu_count() or 1), prefer="threads")(
        delayed(preflight)(job, item) for item in todo
    )
    shapes = {}
    for item, shape, error, transient in probed:
        if error is None:
            shapes[item] = shape
        else:
            yield write_record(job, new_record(job, item, error=error, **({"transient": True} if transient else {})))
    if job.devices is not None:  # local: threads, SLOTS_PER_DEVICE per device
        free = free_memory(job.devices)
        batches = make_batches(shapes, lambda shape: batch_size or auto_batch_size(shape, free), len(job.devices))
        try:
            with parallel_config(backend="threading", n_jobs=SLOTS_PER_DEVICE * len(job.devices)):
                yield from run_batches(job, batches)
        finally:
            _finished_runs.add(job.run)
            wait_for_tasks(job.run)
        return
    per_worker = cluster.run(free_memory)  # {worker address: its least free GPU memory or None}
    on_gpus = [f for f in per_worker.values() if f is not None]
    free = min(on_gpus) if on_gpus else None
    batches = make_batches(shapes, lambda shape: batch_size or auto_batch_size(shape, free), len(per_worker))
    # scatter: the job (style images included) goes to each worker once, not with every task.
    with parallel_config(backend="dask", client=cluster, scatter=[job]):
        yield from run_batches(job, batches)


def run_batches(job: Job, batches: list[Batch]) -> Iterator[dict]:
    with warnings.catch_warnings():
        # On Ctrl-C joblib warns that it cancelled tasks in flight: that is what was asked for.
        warnings.filterwarnings("ignore", "[0-9]+ tasks which were still being processed", UserWarning)
        for records in Parallel(return_as="generator_unordered")(delayed(run_batch)(job, batch) for batch in batches):
            yield from records


def run_archive(
    input_dir: Path | str,
    output_dir: Path | str,
    style_paths: Sequence[Path | str],
    settings: StyleSettings,
    *,
    out_format: str | None = None,
    quality: int = 95,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    retry_failed: bool = False,
    overwrite: bool = False,
    batch_size: int | None = None,
    devices: str = "auto",
    backend: str = "local",
    scheduler: str | None = None,
    client=None,
    on_plan: Callable[[Plan], None] | None = None,
    on_record: Callable[[dict], None] | None = None,
) -> Summary:
    """Stylize every image under input_dir into output_dir (same relative paths), resuming.

    batch_size None: automatic (free GPU memory, 1 on CPU). backend 'dask' runs on the cluster
    at `scheduler`, or on `client` (a distributed.Client), or on the default client. `overwrite`:
    replace files in the output tree that this job did not write (otherwise those images fail).
    """
    if backend not in ("local", "dask"):
        raise InputError(f"--backend {backend!r}: must be 'local' or 'dask'")
    if backend == "dask" and devices != "auto":
        raise InputError("--device applies to --backend local; Dask workers use their own devices")
    if backend == "local" and scheduler:
        raise InputError("--scheduler applies to --backend dask; add --backend dask to run on that cluster")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be at least 1 (or auto)")
    input_dir, output_dir = Path(input_dir).absolute(), Path(output_dir).absolute()
    out_format = out_format.lower().lstrip(".") if out_format else None
    local_devices = parse_devices(devices) if backend == "local" else None
    job = make_job(input_dir, output_dir, style_paths, settings, out_format=out_format, quality=quality, devices=local_devices)
    job = replace(job, overwrite=overwrite)
    info = {
        "input": str(input_dir),
        "output": str(output_dir),
        "styles": [str(Path(p).absolute()) for p in style_paths],
        "settings": settings.to_dict(),
        "settings_hash": job.settings_hash,
        "format": out_format,
        "quality": quality,
        "include": list(include),
        "exclude": list(exclude),
    }
    with contextlib.ExitStack() as stack:
        # The cluster before anything is made: a refused job leaves the file system as it found it.
        cluster = stack.enter_context(dask_client(scheduler, client)) if backend == "dask" else None
        state = make_state_dir(output_dir)
        stack.enter_context(WorkDirLock(state))
        make_state_dir(output_dir, LEDGER_DIR, "records")  # only once the directory is this run's
        stack.enter_context(log_file(state / "log.txt"))
        clean_temporary_files(output_dir)
        plan, todo = plan_run(job, include, exclude, retry_failed)
        for folder in plan.unlisted:
            log.warning("could not list %s", folder)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        info |= {"inputs": plan.inputs, "started": started, "finished": None, "state": "running"}
        write_json(state / "archive.json", info)
        log.info(
            "run: %s -> %s, settings %s, %d images: %d done before, %d failed before, %d to do",
            input_dir, output_dir, job.settings_hash, plan.inputs, plan.done_before, len(plan.failed_before), plan.todo,
        )  # fmt: skip
        if on_plan is not None:
            on_plan(plan)
        return run_plan(job, plan, todo, info, batch_size=batch_size, cluster=cluster, on_record=on_record)


def make_state_dir(output_dir: Path, *folders: str) -> Path:
    """OUTPUT/.stylize (and the output directory), or these folders in it, made where missing.
    None of them, nor the lock or the log, may be a symbolic link: the job would write through
    it, out of the output tree."""
    state = state_dir(output_dir)
    folders = tuple(state / name for name in folders) or (state,)
    for path in (*folders, state / ".lock", state / "log.txt"):
        if path.is_symlink():
            raise InputError(f"{path}: is a symbolic link; the job's records are never written through one")
    try:
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{output_dir}: cannot create the output directory ({exc.strerror or exc})") from None
    return state


def run_plan(
    job: Job, plan: Plan, todo: list[Item], info: dict, *, batch_size: int | None, cluster, on_record
) -> Summary:
    """Run what plan_run left to do; archive.json says how the run ended, and the log why."""
    state = state_dir(job.output_dir)
    summary = Summary(plan, log_path=state / "log.txt")
    start = time.perf_counter()
    try:
        for record in execute(job, todo, batch_size=batch_size, cluster=cluster):
            if record["status"] == "done":
                summary.done += 1
                log.info("done %s -> %s (%s, batch of %s)", one_line(record["source"]), one_line(record["output"]), record.get("device"), record.get("batch_size"))
            else:
                summary.failed.append(record)
                log.info("failed %s", record["error"])
            if on_record is not None:
                on_record(record)
        info["state"] = "finished"
    except KeyboardInterrupt:
        info["state"] = "interrupted"
        raise
    except Exception as exc:  # e.g. a full disk: status should not say the run was killed
        info["state"] = "failed"
        log.error("stopped: %s", one_line(str(exc)))
        raise
    finally:
        summary.seconds = time.perf_counter() - start
        info["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            write_json(state / "archive.json", info)
        except WriteError:
            if info["state"] == "finished":
                raise
            # Already stopping with its own error (on a full disk, the image that met it first).
        log.info(
            "%s: %d done, %d failed in this run (%.0f images/hour); %d failed in all",
            info["state"], summary.done, len(summary.failed), summary.images_per_hour, len(summary.all_failed),
        )  # fmt: skip
    return summary


@contextmanager
def dask_client(scheduler: str | None, client=None):
    """The given client, a new one connected to `scheduler`, or the current default client."""
    try:
        from distributed import Client, get_client
    except ImportError:
        raise InputError("--backend dask needs dask.distributed: pip install 'dask[distributed]'") from None
    if client is not None:
        yield client
        return
    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            raise InputError(f"--scheduler {scheduler}: cannot connect to the Dask scheduler ({exc})") from None
        with client:
            yield client
        return
    try:
        yield get_client()
    except ValueError:
        raise InputError("--backend dask needs --scheduler tcp://HOST:8786 (the address of a running Dask scheduler)") from None


# --- status of an output directory -------------------------------------------------------


def is_archive(path: Path | str) -> bool:
    return (state_dir(path) / "archive.json").is_file()


def running_pid(output_dir: Path | str) -> str | None:
    """The pid of a run holding the output directory's lock, or None."""
    path = state_dir(output_dir) / ".lock"
    try:
        with open(path, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return f.read().decode(errors="replace").strip() or "?"
            fcntl.flock(f, fcntl.LOCK_UN)
    except FileNotFoundError:
        pass
    return None


def status_lines(output_dir: Path | str, *, failures: int = 10) -> list[str]:
    """What `stylize status OUT_DIR` prints for an archive output directory."""
    output_dir = Path(output_dir)
    info = read_json(state_dir(output_dir) / "archive.json")
    if info is None:
        raise InputError(f"{output_dir}: not an archive output directory (no {STATE_DIR}/archive.json)")
    records = [r for r in read_records(output_dir).values() if r.get("settings_hash") == info["settings_hash"]]
    done = [r for r in records if r["status"] == "done"]
    failed = sorted((r for r in records if r["status"] == "failed"), key=lambda r: r["source"])
    pending = max(0, info["inputs"] - len(done) - len(failed))
    pid = running_pid(output_dir)
    state = f"running (process {pid})" if pid else info["state"]
    if state == "running":
        state = "stopped (the run was killed); run the same command again to resume"
    elif state == "failed":
        state = "stopped by an error (see the log); run the same command again to resume"
    s = info["settings"]
    styles = ", ".join(Path(p).name for p in info["styles"])
    lines = [
        f"archive: {info['input']} -> {info['output']}",
        f"state: {state}; last run started {info['started']}" + (f", ended {info['finished']}" if info["finished"] and not pid else ""),
        f"images: {info['inputs']} in the tree; {len(done)} done, {len(failed)} failed, {pending} to do",
        f"settings {info['settings_hash']}: style {styles}, size {s['size']}, {s['iterations']} iterations ({s['optimizer']}), "
        f"format {info['format'] or 'as input'}",
    ]
    this_run = [r for r in done if r["finished"] >= info["started"]]
    if this_run:
        end = info["finished"] if info["finished"] and not pid else datetime.now(timezone.utc).isoformat(timespec="seconds")
        hours = max(1.0, (datetime.fromisoformat(end) - datetime.fromisoformat(info["started"])).total_seconds()) / 3600
        lines.append(f"last run: {len(this_run)} done ({len(this_run) / hours:.0f} images/hour)")
    for record in failed[:failures]:
        lines.append(f"failed: {record['error']}")
    if len(failed) > failures:
        lines.append(f"... and {len(failed) - failures} more failures")
    lines.append(f"log: {state_dir(output_dir) / 'log.txt'}")
    return lines
