"""What a video job's report reads from its work directory, and the cache that makes rereading
it every 30 s cheap.

Where things are (VideoLayout; change the names there when the job's files move):

    WORK/job.json              inputs, video, stages (decode: frames, width, height; stylize:
                               settings, total, done, shots), "report" (mean flicker), "chunks"
    WORK/styled/NNNNNN.json    one finished frame's statistics: iterations, loss, seconds,
                               finished, start, cut_score, stage_hash; its commit record
    WORK/styled/NNNNNN.png     the stylized frame;  WORK/frames/NNNNNN.png  the content frame
    WORK/flow/NNNNNN.npz       the flow pair carrying frame N-1 onto frame N (flow.FramePair)

A statistics file never changes once written, so each is read once: its figures go into
WORK/report-files/frames.json (keyed by the stylize stage's hash, so changed settings start
it afresh), which also keeps them after the job deletes its frames (--clean, bounded disk).

Recorded per-pair flicker: a frame's statistics may carry `"flicker": {"output": E_out,
"input": E_in}`, the masked warping error (flow.warping_error) of the pair carrying frame N-1
onto frame N, for the stylized and the content frames. The report uses those figures where
present and measures the others itself from the flow pairs (report_flicker.py).

Chunks: job.json's "chunks" (or stages.encode.chunks), a list of [first, last] frame ranges
or of objects with "first" and "last"; their starts are marked in the plots.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .errors import InputError
from .fades import scene_cuts
from .manifest import WorkDirLock, read_json
from .report_html import FILES_DIR, write_text

KIND = "video"
STATS_NAME = re.compile(r"^(\d{6,})\.json$")
# The figures of a frame's statistics the report keeps (in its cache, report-files/frames.json):
# "terms" is the objective's content, style and temporal term at the frame's end.
KEPT = ("iterations", "loss", "terms", "seconds", "finished", "start", "cut_score", "flicker")


@dataclass(frozen=True)
class VideoLayout:
    """Where a video job keeps its files (see the module's docstring)."""

    work_dir: Path
    job: str = "job.json"
    frames: str = "frames"
    styled: str = "styled"
    flow: str = "flow"

    def content(self, index: int) -> Path:
        return self.work_dir / self.frames / f"{index:06d}.png"

    def stylized(self, index: int) -> Path:
        return self.work_dir / self.styled / f"{index:06d}.png"

    def stats(self, index: int) -> Path:
        return self.work_dir / self.styled / f"{index:06d}.json"

    def pair(self, index: int) -> Path:
        return self.work_dir / self.flow / f"{index:06d}.npz"

    @property
    def files(self) -> Path:
        return self.work_dir / FILES_DIR


@dataclass
class VideoState:
    """One reading of a video job: its record and every finished frame's figures."""

    layout: VideoLayout
    data: dict
    holder: str | None  # the process holding the work directory's lock
    frames: dict[int, dict] = field(default_factory=dict)  # finished frame -> its KEPT figures

    @property
    def stages(self) -> dict:
        return self.data.get("stages") or {}

    def stage(self, name: str) -> dict:
        return self.stages.get(name) or {}

    @property
    def stylize_hash(self) -> str:
        return self.stage("stylize").get("hash") or ""

    @property
    def total(self) -> int:
        return int(self.stage("stylize").get("total") or self.stage("decode").get("frames") or 0)

    @property
    def frame_size(self) -> tuple[int, int]:
        decode = self.stage("decode")
        return int(decode.get("width") or 0), int(decode.get("height") or 0)

    @property
    def finished(self) -> bool:
        return self.stage("encode").get("status") == "done"

    def cuts(self) -> list[int]:
        """Frames that start a new shot at a scene cut (from the shots, but those begun for blank
        frames, fades.py; else the flicker record, whose "cuts" are the pairs it left out: a flash's too)."""
        if self.stage("stylize").get("shots") is not None:
            return scene_cuts(self.stage("stylize"))
        return list(((self.data.get("report") or {}).get("flicker") or {}).get("cuts") or [])

    def flashes(self) -> list[tuple[int, int]]:
        """The flashes the shots went on through (first, last frame; cuts.py)."""
        return [(int(first), int(last)) for first, last in self.stage("stylize").get("flashes") or []]

    def relit(self) -> list[int]:
        """The changes of light the shots went on through (shotplan.py)."""
        return [int(index) for index in self.stage("stylize").get("relit") or []]

    def moves(self) -> list[int]:
        """The fast moves the shots went on through (cuts.Scan.sudden)."""
        return [int(index) for index in self.stage("stylize").get("moves") or []]

    def chunk_starts(self) -> list[int]:
        chunks = self.data.get("chunks") or self.stage("encode").get("chunks") or []
        starts = [c.get("first") if isinstance(c, dict) else c[0] for c in chunks if c]
        return sorted(int(s) for s in starts if s is not None and int(s) > 1)

    def times(self) -> list[tuple[int, datetime]]:
        out = []
        for index, figures in sorted(self.frames.items()):
            try:
                out.append((index, datetime.fromisoformat(figures["finished"])))
            except (KeyError, TypeError, ValueError):
                continue
        return out


def is_video_dir(path: Path, layout: VideoLayout | None = None) -> bool:
    layout = layout or VideoLayout(Path(path))
    data = read_json(layout.work_dir / layout.job) if (layout.work_dir / layout.job).is_file() else None
    return isinstance(data, dict) and data.get("kind") == KIND


def finished_indices(layout: VideoLayout) -> list[int]:
    """Frames whose statistics file exists (temporary files start with a dot: never matched)."""
    try:
        with os.scandir(layout.work_dir / layout.styled) as entries:
            return sorted(int(m.group(1)) for e in entries if (m := STATS_NAME.match(e.name)))
    except OSError:
        return []


def read_state(layout: VideoLayout) -> VideoState:
    """The job record and the figures of every finished frame (cached ones plus new ones)."""
    data = read_json(layout.work_dir / layout.job)
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise InputError(f"{layout.work_dir}: not the work directory of a video job (no video job.json)")
    state = VideoState(layout, data, WorkDirLock.holder(layout.work_dir))
    cache_path = layout.files / "frames.json"
    cache = _read_cache(cache_path)
    # Keyed by the settings and by what it keeps: a report that keeps more reads every record again.
    key = f"{state.stylize_hash}/{','.join(KEPT)}"
    if cache.get("key") == key:
        state.frames = {int(k): v for k, v in (cache.get("frames") or {}).items()}
    new = 0
    for index in finished_indices(layout):
        if index in state.frames:
            continue
        try:
            stats = json.loads(layout.stats(index).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # removed since listed (a cleaning job): read next time
            continue
        if stats.get("stage_hash") not in (None, state.stylize_hash):
            continue  # left from other settings; the job replaces it
        state.frames[index] = {k: stats.get(k) for k in KEPT if stats.get(k) is not None}
        new += 1
    if new:
        layout.files.mkdir(parents=True, exist_ok=True)
        frames = {str(k): v for k, v in sorted(state.frames.items())}
        write_text(cache_path, json.dumps({"key": key, "frames": frames}, separators=(",", ":")))
    return state


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # missing or damaged: rebuilt from the records
        return {}
