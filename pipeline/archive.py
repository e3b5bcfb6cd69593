"""Photo archives (`stylize images`): a directory tree in, the same tree out, stylized in batches
on every device. This module is the job; each stage lives in a module named after it:

  check      the options and the style images, before anything is made (make_job here)
  plan       archive_plan: the tree against the records of earlier runs (archive_records) and
             the output names (tree); each image's shape from its header; batches of one shape
  execute    archive_backends: the batches on local threads or a Dask cluster (backends.py), each one run by
             archive_worker (decode, stylize on a free device, encode, write its record)
  summarize  here: count and log each record as it comes, say in archive.json how the run ended,
             and keep OUTPUT/.stylize/report.html (report_archive) current: at most every
             REPORT_SECONDS while the run goes on, and once at its end

Each image takes three renames: its output name's ledger (OUT/.stylize/outputs/, the finished
file's fingerprint and record), the image, its record. A kill after any of them leaves a state
the same command finishes from: the ledger tells the job's own files from the user's (which are
never replaced without --overwrite), and an image placed but not yet recorded is recorded without
being stylized again. No file is shared between workers, so workers finishing at once cannot
corrupt the manifest, and a crash loses at most the batches in progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .archive_backends import run_batches
from .archive_plan import Plan, auto_batch_size, make_batches, plan_run, preflight_all
from .archive_records import (
    RECORDS_DIR,
    STATE_DIR,
    Item,
    Job,
    failure,
    info_path,
    job_hash,
    log,
    log_path,
    read_records,
    record_path,
    state_dir,
)
from .archive_status import is_archive, running_pid, status_lines
from .archive_worker import parse_devices
from .atomic import is_temporary
from .backends import Workers, check_backend, connect
from .errors import InputError, WriteError, one_line
from .hashing import file_sha256
from .images import load_styles
from .manifest import WorkDirLock, read_json, write_json
from .report_archive import JOB_THUMB_BUDGET, write_archive_report
from .report_html import FILES_DIR
from .report_live import LiveReport
from .settings import OWN_DEFAULTS, StyleSettings
from .tree import LEDGER_DIR, OUTPUT_FORMATS

# Imported from here by the CLI and the tests.
__all__ = [
    "STATE_DIR",
    "ArchiveOptions",
    "Item",
    "Plan",
    "Summary",
    "auto_batch_size",
    "is_archive",
    "log",
    "log_file",
    "make_batches",
    "parse_devices",
    "read_records",
    "record_path",
    "run_archive",
    "running_pid",
    "state_dir",
    "status_lines",
]


@dataclass(frozen=True)
class ArchiveOptions:
    """The options of `stylize images` besides its paths and style settings."""

    out_format: str | None = None  # png, jpg or webp; None: each input's own format
    quality: int = 95
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    retry_failed: bool = False
    overwrite: bool = False  # replace files in the output tree that this job did not write
    batch_size: int | None = None  # None: automatic (free GPU memory, 1 on CPU)
    devices: str = "auto"
    backend: str = "local"  # a name in backends.BACKENDS
    scheduler: str | None = None  # the Dask scheduler's address
    # Of settings.OWN_DEFAULTS, those the command line left unset: a rerun keeps the archive's own.
    defaulted: frozenset[str] = frozenset()


@dataclass
class Summary:
    plan: Plan
    done: int = 0
    failed: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    log_path: Path | None = None
    report_path: Path | None = None  # None: the report could not be written (the log says why)

    @property
    def all_failed(self) -> list[dict]:
        return self.failed + self.plan.failed_before

    @property
    def images_per_hour(self) -> float:
        return 3600 * self.done / self.seconds if self.seconds > 0 else 0.0


def run_archive(
    input_dir: Path | str,
    output_dir: Path | str,
    style_paths: Sequence[Path | str],
    settings: StyleSettings,
    options: ArchiveOptions | None = None,
    *,
    client=None,
    on_plan: Callable[[Plan], None] | None = None,
    on_record: Callable[[dict], None] | None = None,
) -> Summary:
    """Stylize every image under input_dir into output_dir (same relative paths), resuming.

    Backend 'dask' runs on the cluster at `options.scheduler`, or on `client` (a
    distributed.Client), or on the default client."""
    options = options or ArchiveOptions()
    job = make_job(Path(input_dir).absolute(), Path(output_dir).absolute(), style_paths, settings, options)
    job, kept = keep_own_defaults(job, options.defaulted, style_paths)
    with contextlib.ExitStack() as stack:
        # The workers before anything is made: a refused job leaves the file system as it found it.
        workers = stack.enter_context(connect(options.backend, job.devices, options.scheduler, client))
        stack.enter_context(output_dir_of_this_run(job))
        plan, todo = plan_run(job, options.include, options.exclude, options.retry_failed)
        plan.kept = kept
        info = start(job, plan, options, style_paths)
        if on_plan is not None:
            on_plan(plan)
        report = LiveReport(
            lambda running, budget: write_archive_report(job.output_dir, running=running, thumb_budget=budget),
            budget=JOB_THUMB_BUDGET, warn=log.warning,
        )  # fmt: skip
        final_budget = lambda: FINAL_THUMB_BUDGET.get(info["state"], JOB_THUMB_BUDGET)  # noqa: E731
        # The last page once the batches in flight are stopped (closing), and archive.json says how.
        with report.last_page(final_budget), contextlib.closing(execute(job, todo, workers, options)) as records:
            summary = summarize(job, plan, info, records, on_record, report.when_due)
        summary.report_path = report.path
        return summary


# --- check ---------------------------------------------------------------------------------


def check_options(options: ArchiveOptions) -> None:
    check_backend(options.backend, options.devices, options.scheduler)
    if options.batch_size is not None and options.batch_size < 1:
        raise InputError(f"--batch-size {options.batch_size}: must be at least 1 (or auto)")


def check_paths(input_dir: Path, output_dir: Path) -> None:
    if not input_dir.is_dir():
        if input_dir.exists():
            raise InputError(f"{input_dir}: not a directory (give the folder that holds the photos)")
        raise InputError(f"{input_dir}: input directory not found")
    if input_dir.resolve().is_relative_to(output_dir.resolve()):
        raise InputError(
            f"{output_dir}: the output directory must not hold the input directory (originals could be overwritten)"
        )
    if output_dir.resolve().is_relative_to(input_dir.resolve()):
        # The archive would change, and a later run with another output would take these results for photos.
        raise InputError(f"{output_dir}: the output directory must not be inside the input directory {input_dir}")
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"{output_dir}: output is a file, not a directory")


def make_job(
    input_dir: Path,
    output_dir: Path,
    style_paths: Sequence[Path | str],
    settings: StyleSettings,
    options: ArchiveOptions,
) -> Job:
    """Check the options and load the style images: every mistake is refused before any work."""
    check_options(options)
    devices = parse_devices(options.devices) if options.backend == "local" else None
    check_paths(input_dir, output_dir)
    out_format = options.out_format.lower().lstrip(".") if options.out_format else None
    if out_format is not None and out_format not in OUTPUT_FORMATS:
        raise InputError(f"--format {out_format!r}: must be one of {', '.join(OUTPUT_FORMATS)}")
    if not 1 <= options.quality <= 100:
        raise InputError(f"--quality {options.quality}: must be between 1 and 100")
    if settings.init == "image":
        raise InputError("--init with an image is not supported for archives; use content or noise")
    if not style_paths:
        raise InputError("at least one --style image is needed")
    if settings.style_blend and len(settings.style_blend) != len(style_paths):
        raise InputError(f"--style-blend has {len(settings.style_blend)} weights for {len(style_paths)} style images")
    styles = tuple(load_styles(style_paths, settings))
    return Job(
        input_dir=str(input_dir),
        output_dir=str(output_dir),
        settings=settings,
        styles=styles,
        settings_hash=job_hash(settings, [file_sha256(path) for path in style_paths], out_format, options.quality),
        out_format=out_format,
        quality=options.quality,
        devices=devices,
        run=uuid.uuid4().hex,
        overwrite=options.overwrite,
    )


def keep_own_defaults(job: Job, defaulted: frozenset[str], style_paths: Sequence[Path | str]) -> tuple[Job, dict]:
    """An archive begun under other defaults (a release changed them since, settings.OWN_DEFAULTS)
    goes on with the values it began with for the options this run left unset, where that makes
    its settings hash the one its last run recorded: the images it finished stay finished. Any
    other change restyles them under this release's defaults. Returns the job and what it keeps
    (name: the value it began with, the default now)."""
    names = defaulted & OWN_DEFAULTS.keys()
    if not names:
        return job, {}
    try:
        info = read_json(info_path(job.output_dir))
    except InputError:  # archive.json unreadable: the run rewrites it, under the defaults now
        return job, {}
    recorded = info.get("settings") if isinstance(info, dict) else None
    if not isinstance(recorded, dict):
        return job, {}
    now = {name: getattr(job.settings, name) for name in sorted(names)}
    kept = {name: (recorded.get(name, OWN_DEFAULTS[name]), value) for name, value in now.items()}
    kept = {name: values for name, values in kept.items() if values[0] != values[1]}
    if not kept:
        return job, {}
    try:
        settings = dataclasses.replace(job.settings, **{name: value for name, (value, _) in kept.items()})
    except (InputError, TypeError):  # a value this release refuses
        return job, {}
    hashed = job_hash(settings, [file_sha256(path) for path in style_paths], job.out_format, job.quality)
    if hashed != info.get("settings_hash"):
        return job, {}
    return dataclasses.replace(job, settings=settings, settings_hash=hashed), kept


# --- the output directory, its lock and its log ------------------------------------------------


@contextmanager
def output_dir_of_this_run(job: Job) -> Iterator[None]:
    """Take the output directory: its lock, the job's folders (only once the lock is held), the
    log, and what atomic writes of a killed run left behind."""
    output_dir = Path(job.output_dir)
    state = make_state_dir(output_dir)
    with WorkDirLock(state):
        make_state_dir(output_dir, LEDGER_DIR, RECORDS_DIR)
        with log_file(log_path(output_dir)):
            clean_temporary_files(output_dir)
            yield


def make_state_dir(output_dir: Path, *folders: str) -> Path:
    """OUTPUT/.stylize (and the output directory), or these folders in it, made where missing.
    None of them, nor the lock or the log, may be a symbolic link: the job would write through
    it, out of the output tree."""
    state = state_dir(output_dir)
    folders = tuple(state / name for name in folders) or (state,)
    for path in (*folders, state / ".lock", log_path(output_dir), state / FILES_DIR):
        if path.is_symlink():
            raise InputError(f"{path}: is a symbolic link; the job's records are never written through one")
    try:
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{output_dir}: cannot create the output directory ({exc.strerror or exc})") from None
    return state


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


# --- plan (archive_plan), execute (archive_backends), summarize ---------------------------------


def start(job: Job, plan: Plan, options: ArchiveOptions, style_paths: Sequence[Path | str]) -> dict:
    """archive.json for a run that has started (status reads it), and the run's first log line."""
    for folder in plan.unlisted:
        log.warning("could not list %s", folder)
    info = {
        "input": job.input_dir,
        "output": job.output_dir,
        "styles": [str(Path(p).absolute()) for p in style_paths],
        "settings": job.settings.to_dict(),
        "settings_hash": job.settings_hash,
        "format": job.out_format,
        "quality": job.quality,
        "include": list(options.include),
        "exclude": list(options.exclude),
        "inputs": plan.inputs,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "finished": None,
        "state": "running",
    }
    write_json(info_path(job.output_dir), info)
    if plan.kept:
        log.info("run: %s", plan.resuming())
    log.info(
        "run: %s -> %s, settings %s, %d images: %d done before, %d failed before, %d to do",
        job.input_dir, job.output_dir, job.settings_hash,
        plan.inputs, plan.done_before, len(plan.failed_before), plan.todo,
    )  # fmt: skip
    return info


def execute(job: Job, todo: list[Item], workers: Workers, options: ArchiveOptions) -> Iterator[dict]:
    """Probe, batch and stylize; yield every record as its image finishes, in any order."""
    shapes = {}
    for probed in preflight_all(job, todo):
        if probed.error is None:
            shapes[probed.item] = probed.shape
        else:
            yield failure(job, probed.item, probed.error, transient=probed.transient)
    fixed, free = options.batch_size, workers.free_memory
    batches = make_batches(shapes, lambda shape: fixed or auto_batch_size(shape, free), workers.count)
    yield from run_batches(job, batches, workers)


def summarize(
    job: Job, plan: Plan, info: dict, records: Iterator[dict], on_record, report: Callable[[], None]
) -> Summary:
    """Count and log each record as it comes (and `report` after each); archive.json says how the
    run ended, and the log why."""
    summary = Summary(plan, log_path=log_path(job.output_dir))
    began = time.perf_counter()
    try:
        for record in records:
            count(summary, record)
            report()
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
        summary.seconds = time.perf_counter() - began
        finish(job, info, summary)
    return summary


def count(summary: Summary, record: dict) -> None:
    if record["status"] == "done":
        summary.done += 1
        source, output, device = one_line(record["source"]), one_line(record["output"]), record.get("device")
        log.info("done %s -> %s (%s, batch of %s)", source, output, device, record.get("batch_size"))
    else:
        summary.failed.append(record)
        log.info("failed %s", record["error"])


def finish(job: Job, info: dict, summary: Summary) -> None:
    info["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        write_json(info_path(job.output_dir), info)
    except WriteError:
        if info["state"] == "finished":
            raise
        # Already stopping with its own error (on a full disk, the image that met it first).
    log.info(
        "%s: %d done, %d failed in this run (%.0f images/hour); %d failed in all",
        info["state"], summary.done, len(summary.failed), summary.images_per_hour, len(summary.all_failed),
    )  # fmt: skip


# Seconds of thumbnails the last report of a run may make: a finished small job's gallery is
# whole; a huge one's is finished by `stylize report`. A stopped run's (Ctrl-C) makes none.
FINAL_THUMB_BUDGET = {"finished": 60.0, "failed": JOB_THUMB_BUDGET, "interrupted": 0.0}
