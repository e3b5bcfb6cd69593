"""`stylize status OUT_DIR` for a photo archive's output directory: what the last run did, what
is left, and why images failed. Read-only, and safe to run beside a job (records are atomic)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from .archive_records import INFO_FILE, STATE_DIR, info_path, log_path, read_records, state_dir
from .errors import InputError
from .manifest import WorkDirLock, read_json


def is_archive(path: Path | str) -> bool:
    return info_path(path).is_file()


def running_pid(output_dir: Path | str) -> str | None:
    """The pid of a run holding the output directory's lock, or None (read as for every job)."""
    return WorkDirLock.holder(state_dir(output_dir))


def status_lines(output_dir: Path | str, *, failures: int = 10) -> list[str]:
    """What `stylize status OUT_DIR` prints for an archive output directory."""
    output_dir = Path(output_dir)
    info = read_json(info_path(output_dir))
    if info is None:
        raise InputError(f"{output_dir}: not an archive output directory (no {STATE_DIR}/{INFO_FILE})")
    records = [r for r in read_records(output_dir).values() if r.get("settings_hash") == info["settings_hash"]]
    done = [r for r in records if r["status"] == "done"]
    failed = sorted((r for r in records if r["status"] == "failed"), key=lambda r: r["source"])
    pending = max(0, info["inputs"] - len(done) - len(failed))
    pid = running_pid(output_dir)
    ended = f", ended {info['finished']}" if info["finished"] and not pid else ""
    s = info["settings"]
    styles = ", ".join(Path(p).name for p in info["styles"])
    lines = [
        f"archive: {info['input']} -> {info['output']}",
        f"state: {run_state(info['state'], pid)}; last run started {info['started']}{ended}",
        f"images: {info['inputs']} in the tree; {len(done)} done, {len(failed)} failed, {pending} to do",
        (
            f"settings {info['settings_hash']}: style {styles}, size {s['size']}, {s['iterations']} iterations "
            f"({s['optimizer']}), format {info['format'] or 'as input'}"
        ),
    ]
    lines += last_run_rate(info, done, running=pid is not None)
    lines += [f"failed: {record['error']}" for record in failed[:failures]]
    if len(failed) > failures:
        lines.append(f"... and {len(failed) - failures} more failures")
    lines.append(f"log: {log_path(output_dir)}")
    return lines


def run_state(state: str, pid: str | None) -> str:
    """archive.json's state, told apart from a run that was killed (it still says running)."""
    if pid:
        return f"running (process {pid})"
    if state == "running":
        return "stopped (the run was killed); run the same command again to resume"
    if state == "failed":
        return "stopped by an error (see the log); run the same command again to resume"
    return state


def last_run_rate(info: dict, done: list[dict], *, running: bool) -> list[str]:
    this_run = [r for r in done if r["finished"] >= info["started"]]
    if not this_run:
        return []
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    end = info["finished"] if info["finished"] and not running else now
    hours = max(1.0, (datetime.fromisoformat(end) - datetime.fromisoformat(info["started"])).total_seconds()) / 3600
    return [f"last run: {len(this_run)} done ({len(this_run) / hours:.0f} images/hour)"]
