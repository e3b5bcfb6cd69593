"""Walking a photo tree: which files are images, where each one's output goes, and the output
shape of each from its header alone (no decoding), so that bad files fail before they take a
batch slot."""

from __future__ import annotations

import fnmatch
import os
import warnings
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Sequence

from PIL import ExifTags, Image

from .errors import InputError, one_line  # one_line: archive imports it from here
from .images import MAX_PIXELS, MIN_SIDE, SAVE_FORMATS, fit_long_side

try:  # HEIC/HEIF where the plugin is installed; Pillow alone cannot read them.
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:
    pass

OUTPUT_FORMATS = {"png": ".png", "jpg": ".jpg", "webp": ".webp"}


def readable_suffixes() -> set[str]:
    """Every file extension that an installed Pillow plugin can open."""
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def selected(rel: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Globs, case-insensitive: one without '/' matches the file name, one with '/' the path
    relative to the input directory (where '*' also crosses '/')."""

    def match(pattern: str) -> bool:
        target = rel if "/" in pattern else rel.rsplit("/", 1)[-1]
        return fnmatch.fnmatchcase(target.lower(), pattern.lower())

    if include and not any(match(p) for p in include):
        return False
    return not any(match(p) for p in exclude)


def walk(input_dir: Path, output_dir: Path, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """Image files under input_dir as sorted relative POSIX paths, and the directories that
    could not be listed. Hidden files and folders and the output tree are skipped; directory
    symlinks are followed, each real directory once, so that a link loop ends."""
    suffixes = readable_suffixes()
    skip = output_dir.resolve()
    seen: set[tuple[int, int]] = set()
    found, errors = [], []
    for root, dirs, files in os.walk(input_dir, followlinks=True, onerror=lambda e: errors.append(one_line(f"{e.filename}: {e.strerror}"))):
        stat = os.stat(root)
        if (stat.st_dev, stat.st_ino) in seen or Path(root).resolve() == skip:
            dirs.clear()
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in suffixes:
                continue
            rel = Path(root, name).relative_to(input_dir).as_posix()
            if selected(rel, include, exclude):
                found.append(rel)
    return sorted(found), errors


def output_names(rels: Sequence[str], out_format: str | None) -> dict[str, str]:
    """Relative output path per input: the same path, in --format or else the input's own
    format where Pillow can write it (PNG otherwise). Inputs that would land on one name
    (a.jpg and a.png under --format png) keep their suffix in it: a.jpg.png."""
    wanted = {}
    for rel in rels:
        suffix = PurePosixPath(rel).suffix
        new = OUTPUT_FORMATS[out_format] if out_format else (suffix if suffix.lower() in SAVE_FORMATS else ".png")
        wanted[rel] = (PurePosixPath(rel).with_suffix(new).as_posix(), suffix.lower() == new)
    counts = defaultdict(int)
    for name, _ in wanted.values():
        counts[name.lower()] += 1
    return {
        rel: name if counts[name.lower()] == 1 or own else rel + PurePosixPath(name).suffix
        for rel, (name, own) in wanted.items()
    }


def output_shape(path: Path, long_side: int) -> tuple[int, int]:
    """(height, width) of the output for this file, from its header alone (EXIF orientation
    applied), with open_rgb's checks that need no decoding: bad files fail before a batch."""
    if path.is_symlink() and not path.exists():
        raise InputError(f"{path}: broken symbolic link")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{path}: image is too large to process ({exc})") from None
    except Image.UnidentifiedImageError:
        raise InputError(f"{path}: not an image file (or a format that cannot be read)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: corrupt or truncated image ({exc})") from None
    if width * height > MAX_PIXELS:
        raise InputError(f"{path}: image is {width}x{height}, too large to process")
    if max(width, height) < MIN_SIDE:
        raise InputError(f"{path}: image is {width}x{height}, too small (need at least {MIN_SIDE} px)")
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees for display
        width, height = height, width
    width, height = fit_long_side(width, height, long_side)
    return height, width


def probe(path: Path, long_side: int) -> tuple[tuple[int, int] | None, str | None]:
    """output_shape, or the reason the file cannot be used: (shape, None) or (None, reason)."""
    try:
        return output_shape(path, long_side), None
    except InputError as exc:
        return None, one_line(str(exc))
