"""What a photo archive's report reads from OUTPUT/.stylize, and the cache that keeps rereading
50,000 records every 30 s cheap.

Where things are (archive_records holds the names; the job, `stylize status` and this module
all read them from there):

    OUTPUT/.stylize/archive.json   input, output, styles, settings, settings_hash, inputs (count),
                                   started, finished, state (running, finished, interrupted, failed)
    OUTPUT/.stylize/records/*.json one per source image: source (relative path), status (done or
                                   failed), output (relative path), error, sha256 (of the source),
                                   output_sha256, settings_hash, finished (UTC), seconds, transient
    OUTPUT/.stylize/log.txt        the run's log
    OUTPUT/.stylize/.lock          held while a run works (manifest.WorkDirLock)

A record is rewritten only when its image is redone, so the report keeps each record's figures in
OUTPUT/.stylize/report-files/records.json under the record file's size and mtime, and reads again
only the records that are new or changed since the last rewrite.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .archive_records import INFO_FILE, STATE_DIR, info_path, is_record_name, log_path, records_dir, state_dir
from .errors import InputError
from .manifest import WorkDirLock, read_json
from .report_html import FILES_DIR, write_text

KEPT = (
    "source",
    "status",
    "output",
    "error",
    "sha256",
    "output_sha256",
    "settings_hash",
    "finished",
    "seconds",
    "transient",
)


@dataclass(frozen=True)
class ArchiveLayout:
    """Where an archive job keeps its state: archive_records' paths, and the report's own."""

    output_dir: Path

    @property
    def state_dir(self) -> Path:
        return state_dir(self.output_dir)

    @property
    def info(self) -> Path:
        return info_path(self.output_dir)

    @property
    def records(self) -> Path:
        return records_dir(self.output_dir)

    @property
    def log(self) -> Path:
        return log_path(self.output_dir)

    @property
    def files(self) -> Path:
        return self.state_dir / FILES_DIR


@dataclass
class ArchiveState:
    layout: ArchiveLayout
    info: dict
    holder: str | None
    records: list[dict] = field(default_factory=list)  # of the current settings only

    @property
    def done(self) -> list[dict]:
        """Finished images in the order they finished (a gallery page, once full, never changes)."""
        done = [r for r in self.records if r.get("status") == "done"]
        return sorted(done, key=lambda r: (r.get("finished") or "", r.get("source") or ""))

    @property
    def failed(self) -> list[dict]:
        return sorted((r for r in self.records if r.get("status") == "failed"), key=lambda r: r.get("source") or "")

    @property
    def inputs(self) -> int:
        return int(self.info.get("inputs") or 0)


def archive_layout(path: Path | str) -> ArchiveLayout | None:
    """The layout of the archive whose output directory (or its .stylize folder) is `path`."""
    path = Path(path)
    for output_dir in (path, path.parent):
        layout = ArchiveLayout(output_dir)
        if layout.info.is_file() and (output_dir == path or path.name == STATE_DIR):
            return layout
    return None


def parse_time(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def read_state(layout: ArchiveLayout) -> ArchiveState:
    info = read_json(layout.info)
    if not isinstance(info, dict) or "settings_hash" not in info:
        raise InputError(f"{layout.output_dir}: not an archive output directory (no {STATE_DIR}/{INFO_FILE})")
    state = ArchiveState(layout, info, WorkDirLock.holder(layout.state_dir))
    cache_path = layout.files / "records.json"
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    fresh, changed = {}, False
    try:
        entries = list(os.scandir(layout.records))
    except OSError:
        entries = []
    for entry in entries:
        if not is_record_name(entry.name):
            continue
        try:
            stat = entry.stat()
        except OSError:
            continue
        stamp = [stat.st_size, stat.st_mtime_ns]
        cached = cache.get(entry.name)
        if cached and cached[0] == stamp:
            fresh[entry.name] = cached
            continue
        try:
            record = json.loads(Path(entry.path).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # never half written (atomic); a failing disk: next time
            continue
        fresh[entry.name] = [stamp, {k: record.get(k) for k in KEPT if record.get(k) is not None}]
        changed = True
    if changed or len(fresh) != len(cache):
        layout.files.mkdir(parents=True, exist_ok=True)
        write_text(cache_path, json.dumps(fresh, separators=(",", ":")))
    state.records = [r for _, r in fresh.values() if r.get("settings_hash") == info["settings_hash"]]
    return state
