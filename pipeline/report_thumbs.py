"""Thumbnails for the reports: small WebP files beside the page, each made once.

A thumbnail's name carries a key of what it shows (a frame's stage hash and index, a photo's
SHA-256 from its record), so a report rewritten every 30 s finds the ones it made before by name
and decodes no image twice; a redone frame or a changed photo gets a new name, never a stale
picture. Names the current pages no longer use are removed by `prune`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .atomic import atomic_path

THUMB_SIZE = 160  # long side, CSS pixels: the strip and the gallery show them at this size
SUFFIX = ".webp"
QUALITY = 70
log = logging.getLogger("pipeline.report")


def _save(image: Image.Image, dest: Path) -> tuple[int, int]:
    image = image.convert("RGB")
    # Tiny frames (tests, 32 px) are scaled up so that a person sees something: nearest
    # neighbour keeps their pixels honest; large ones are scaled down with a good filter.
    scale = THUMB_SIZE / max(image.size)
    if scale != 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(
            size, Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS, reducing_gap=2.0
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        image.save(tmp, "WEBP", quality=QUALITY, method=4)
    return image.size


def thumbnail(source: Path, dest: Path, *, orient: bool = False) -> bool:
    """Make `dest` from the image file `source` unless it exists; False when it cannot be had
    (source gone or unreadable: the page shows the caption alone)."""
    if dest.is_file():
        return True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a huge photo's DecompressionBombWarning: it was stylized
            with Image.open(source) as image:
                image.draft("RGB", (THUMB_SIZE * 2, THUMB_SIZE * 2))  # JPEG: decode at a reduced scale
                loaded = ImageOps.exif_transpose(image) if orient else image.copy()
                _save(loaded, dest)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        log.debug("no thumbnail of %s: %s", source, exc)
        return False
    return True


def thumbnail_of(make: Callable[[], np.ndarray | None], dest: Path) -> bool:
    """Make `dest` from the RGB array `make()` returns (a warped frame), once; False if None."""
    if dest.is_file():
        return True
    array = make()
    if array is None:
        return False
    _save(Image.fromarray(np.ascontiguousarray(array)), dest)
    return True


def prune(folder: Path, keep: Iterable[Path], pattern: str = f"*{SUFFIX}") -> int:
    """Remove the thumbnails in `folder` (and its subfolders) that are not in `keep`."""
    keep = {Path(p).resolve() for p in keep}
    removed = 0
    for path in folder.rglob(pattern) if folder.is_dir() else ():
        if path.resolve() not in keep and not path.name.startswith("."):
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    return removed
