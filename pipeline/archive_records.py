"""What the photo archive job is made of and what it leaves: the Job (sent to every worker), its
Items and Batches, and one small JSON record per source image under OUT/.stylize/records/.

A record says what became of one source under one set of settings (done, with its output and
the output's fingerprint, or failed and why). Each is written atomically by whichever worker
finished the image, so no file is shared between workers and a crash loses no record."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import is_temporary
from .errors import InputError, one_line
from .hashing import file_sha256, settings_hash
from .manifest import read_json, write_json
from .settings import StyleSettings

if TYPE_CHECKING:  # annotations only: `stylize status` reads these records without torch
    import torch

# Where an archive job keeps its state, inside the output directory (the report, status and the
# job read it through these names and the functions below).
STATE_DIR = ".stylize"  # archive.json, records/, outputs/ (tree.LEDGER_DIR), log.txt, .lock
INFO_FILE = "archive.json"  # the last run: input, output, styles, settings, counts, state
RECORDS_DIR = "records"  # one JSON record per source image (record_path)
LOG_FILE = "log.txt"

# One logger for every archive module: the job's log.txt collects all of them (archive.log_file).
log = logging.getLogger("pipeline.archive")


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
    run: str = ""  # this run's id: its tasks stop once it is over (archive_worker.Cancelled)
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


def job_hash(settings: StyleSettings, style_hashes: Sequence[str | None], out_format: str | None, quality: int) -> str:
    values = {"settings": settings.hash(), "styles": list(style_hashes), "format": out_format, "quality": quality}
    return settings_hash(values)


def state_dir(output_dir: Path | str) -> Path:
    return Path(output_dir) / STATE_DIR


def info_path(output_dir: Path | str) -> Path:
    return state_dir(output_dir) / INFO_FILE


def records_dir(output_dir: Path | str) -> Path:
    return state_dir(output_dir) / RECORDS_DIR


def log_path(output_dir: Path | str) -> Path:
    return state_dir(output_dir) / LOG_FILE


def record_path(output_dir: Path | str, rel: str) -> Path:
    # Named by a hash of the relative path: any file name (quotes, newlines, bytes that are not
    # UTF-8) maps to a plain record name.
    return records_dir(output_dir) / f"{hashlib.sha256(os.fsencode(rel)).hexdigest()[:24]}.json"


def is_record_name(name: str) -> bool:
    """Whether a file in records_dir is a finished record (not one being written: status and
    the report read beside a running job)."""
    return name.endswith(".json") and not is_temporary(name)


def read_records(output_dir: Path | str) -> dict[str, dict]:
    records = {}
    folder = records_dir(output_dir)
    if folder.is_dir():
        for path in folder.glob("*.json"):
            if not is_record_name(path.name):
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
        "sha256": file_sha256(Path(job.input_dir) / item.rel),  # None for a FIFO: never read
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


def failure(job: Job, item: Item, error: str, *, transient: bool = False) -> dict:
    """Write and return the record of an image that failed. `transient`: not the file's fault
    (memory, a file in the output's way): the next run tries it again without --retry-failed."""
    return write_record(job, new_record(job, item, error=error, **({"transient": True} if transient else {})))


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
