"""The project's hashes, one definition each: of settings (to tell whether outputs are current)
and of files (whole-file for photos and style images, a cheap fingerprint for long videos).

Their values are stored in job records and output directories; changing how one is computed
makes every earlier job start over, so they must stay byte-for-byte what they are."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any


def settings_hash(values: dict[str, Any]) -> str:
    """A short stable hash of JSON-able settings: sorted keys, SHA-256, 16 hex digits."""
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def file_sha256(path: Path | str, *, follow_links: bool = True) -> str | None:
    """The SHA-256 (64 hex digits) of a regular file; None for anything else (a FIFO, a device,
    a link when not `follow_links`) or a file that cannot be read. Never blocks on a FIFO."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            return hashlib.file_digest(f, "sha256").hexdigest()
        except OSError:
            return None


def file_fingerprint(path: Path, chunk: int = 1 << 20) -> str:
    """Size and the first and last MiB: tells files apart without reading hours of video, and
    survives the file being moved or copied (its path and mtime are not part of it)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(chunk, size - chunk))
            h.update(f.read(chunk))
    return f"{size}:{h.hexdigest()[:16]}"
