"""Reading and writing still images: EXIF orientation, resizing, atomic writes, clear errors."""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError, WriteError
from .signals import deferred

MIN_SIDE = 16
# Pillow's own bomb guard is a warning below 2x this; we make any image above it an error.
MAX_PIXELS = 20000 * 20000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# Read once at import: os.umask can only be read by setting it, which races with other threads.
UMASK = os.umask(0o022)
os.umask(UMASK)
SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}


def open_rgb(path: Path | str) -> Image.Image:
    """Open an image file as RGB with its EXIF orientation applied, or raise InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise InputError(f"{path}: image is {image.width}x{image.height}, too large to process")
                image = ImageOps.exif_transpose(image)
                if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                    # Composite transparency over white rather than dropping alpha into black.
                    image = image.convert("RGBA")
                    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                    image = Image.alpha_composite(background, image)
                image = image.convert("RGB")
                image.load()
    except InputError:
        raise
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise InputError(f"{path}: not an image file (or a format that cannot be read)") from None
        raise InputError(f"{path}: image is too large to process ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: corrupt or truncated image ({exc})") from None
    if min(image.size) < 1 or max(image.size) < MIN_SIDE:
        raise InputError(f"{path}: image is {image.width}x{image.height}, too small (need at least {MIN_SIDE} px)")
    return image


def fit_long_side(width: int, height: int, long_side: int) -> tuple[int, int]:
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> (1, 3, H, W) float32 in 0..1."""
    array = np.asarray(image, dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).float().div_(255)


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) in 0..1 -> PIL RGB."""
    if tensor.dim() == 4:
        tensor = tensor[0]
    array = tensor.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def load_image(path: Path | str, long_side: int | None = None) -> torch.Tensor:
    """Load an image as (1, 3, H, W) RGB 0..1, resized so that its long side is `long_side`."""
    image = open_rgb(path)
    if long_side is not None and max(image.size) != long_side:
        width, height = fit_long_side(image.width, image.height, long_side)
        if min(width, height) < 1:
            raise InputError(f"{path}: aspect ratio too extreme for {long_side} px")
        image = image.resize((width, height), Image.LANCZOS)
    return to_tensor(image)


def save_format(path: Path | str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SAVE_FORMATS:
        raise InputError(f"{path}: unsupported output format {suffix or '(no extension)'}; use one of {', '.join(sorted(SAVE_FORMATS))}")
    return SAVE_FORMATS[suffix]


# atomic_path's temporary names: .NAME.<8 random characters>.tmp.SUFFIX
TEMPORARY_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")


def is_temporary(name: str) -> bool:
    """Whether a file name is one of atomic_path's temporaries (left behind by a killed run)."""
    return TEMPORARY_NAME.match(name) is not None


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    Ctrl-C and SIGTERM wait for the block to end (signals.deferred): a stopped job has finished
    the write it was doing, and its record of that write can follow."""
    path = Path(path)
    with deferred():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
        # mkstemp makes the file 0600; give the result the usual permissions of a new file.
        os.fchmod(fd, 0o666 & ~UMASK)
        os.close(fd)
        try:
            yield Path(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def save_image(tensor: torch.Tensor, path: Path | str, *, quality: int = 95) -> None:
    """Write atomically: a crash never leaves a half-written file under the final name."""
    image_format = save_format(path)
    try:
        with atomic_path(path) as tmp:
            options = {"quality": quality} if image_format in ("JPEG", "WEBP") else {}
            to_pil(tensor).save(tmp, format=image_format, **options)
    except OSError as exc:
        raise WriteError(path, exc) from None


def side_by_side(images: list[torch.Tensor], height: int = 256, gap: int = 4) -> torch.Tensor:
    """Images (1, 3, H, W) scaled to one height and laid out left to right on white."""
    import torch.nn.functional as F

    scaled = []
    for image in images:
        h, w = image.shape[-2:]
        size = (height, max(1, round(w * height / h)))
        scaled.append(F.interpolate(image.float().cpu(), size=size, mode="bicubic", antialias=True).clamp(0, 1))
    width = sum(i.shape[-1] for i in scaled) + gap * (len(scaled) - 1)
    sheet = torch.ones(1, 3, height, width)
    x = 0
    for image in scaled:
        sheet[..., x : x + image.shape[-1]] = image
        x += image.shape[-1] + gap
    return sheet
