"""Reading and writing still images: EXIF orientation, resizing, atomic writes, clear errors,
and the photo's metadata (EXIF, ICC profile) carried from a source to its stylized copy."""

from __future__ import annotations

import math
import os
import stat
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_path
from .errors import InputError, WriteError, one_line

if TYPE_CHECKING:  # for annotations only
    from .settings import StyleSettings

# The fewest pixels an image may have on each side where the network sees it: VGG-19 halves it
# four times (2x2 pooling) before relu5_1, so under 16 px that layer has no position left.
MIN_SIDE = 16
# Pillow's own bomb guard is a warning below 2x this; we make any image above it an error.
MAX_PIXELS = 20000 * 20000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# Pixels decoded at once, after JPEG's reduced-size decoding (see plan_decode): Pillow keeps 4
# bytes per RGB pixel and open_photo makes a few copies, so this is about 2 GB at the peak. A
# header is 20 bytes, so without this a few tiny files could take a machine's memory.
DECODE_PIXELS = 1 << 27
SAVE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
# Output formats that hold EXIF and an ICC profile (BMP holds neither).
METADATA_FORMATS = {"JPEG", "PNG", "WEBP", "TIFF"}
# Tags of a source's first IFD that describe how its own file stores the pixels (a TIFF's whole
# directory comes back from getexif), or that are carried by other means or not at all: the ICC
# profile separately, XMP, IPTC and Photoshop blocks never (they may hold another orientation or
# a thumbnail of the original). Width and height of the output are not the source's either.
B = ExifTags.Base
NOT_COPIED = frozenset({
    B.NewSubfileType, B.SubfileType, B.ImageWidth, B.ImageLength, B.BitsPerSample, B.Compression,
    B.PhotometricInterpretation, B.FillOrder, B.StripOffsets, B.SamplesPerPixel, B.RowsPerStrip,
    B.StripByteCounts, B.PlanarConfiguration, B.Predictor, B.ColorMap, B.TileWidth, B.TileLength,
    B.TileOffsets, B.TileByteCounts, B.SubIFDs, B.ExtraSamples, B.SampleFormat, B.JPEGTables,
    B.JpegIFOffset, B.JpegIFByteCount, B.YCbCrCoefficients, B.YCbCrSubSampling, B.YCbCrPositioning,
    B.ReferenceBlackWhite, B.InterColorProfile, B.XMLPacket, B.IPTCNAA, B.ImageResources,
})  # fmt: skip
del B
METADATA_NAMES = {"exif": "EXIF", "icc_profile": "ICC profile"}


@dataclass(frozen=True)
class Metadata:
    """What of a photo's metadata its stylized copy keeps (read by open_photo, written by save_image)."""

    exif: bytes | None = None  # the EXIF block with Orientation 1 and without its thumbnail
    icc_profile: bytes | None = None  # an RGB profile only: the pixels are used as decoded, RGB
    problem: str | None = None  # why some of the source's metadata is missing here


def read_metadata(image: Image.Image) -> Metadata:
    """The EXIF and ICC profile of an open (already loaded) image; never raises: a photo is
    stylized whatever state its metadata is in.

    The pixels are rotated upright on load (open_photo), so Orientation becomes 1. Pillow writes
    EXIF without its second IFD, which holds the thumbnail (a picture of the unstylized photo)."""
    icc = image.info.get("icc_profile") or None
    # Bytes 16-19 of an ICC header name its colour space: a CMYK or grey profile does not
    # describe the RGB the pixels were converted to (without colour management).
    if icc is not None and (not isinstance(icc, bytes) or icc[16:20] != b"RGB "):
        icc = None
    try:
        source, exif = image.getexif(), Image.Exif()  # a copy: exif_transpose reads the source's
        for tag, value in source.items():
            if tag in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo):
                value = dict(source.get_ifd(tag))
                if ExifTags.IFD.Interop in value:
                    value[ExifTags.IFD.Interop] = dict(source.get_ifd(ExifTags.IFD.Interop))
            if tag not in NOT_COPIED:
                exif[tag] = value
        if ExifTags.Base.Orientation in exif:
            exif[ExifTags.Base.Orientation] = 1
        data = exif.tobytes() if len(exif) else None
    except Exception as exc:  # anything at all in a corrupt block; Pillow itself only warns
        return Metadata(
            icc_profile=icc,
            problem=f"its EXIF could not be read ({type(exc).__name__}: {one_line(str(exc))}); the output has none",
        )
    raw = image.info.get("exif")
    # 20 bytes: "Exif\0\0", the TIFF header, an empty directory. More, yet no tag: corrupt.
    if data is None and isinstance(raw, bytes) and len(raw) > 20:
        return Metadata(icc_profile=icc, problem="its EXIF is corrupt (no tag could be read); the output has none")
    return Metadata(exif=data, icc_profile=icc)


# What a path that is not a regular file is, for the message: a FIFO would block the reader
# forever and /dev/zero never ends, so neither is ever opened as an image.
FILE_KINDS = {
    stat.S_IFDIR: "a directory", stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket",
}  # fmt: skip


def not_regular(path: Path | str, mode: int) -> InputError | None:
    """The error for a path that is not a regular file (mode from os.stat), or None."""
    if stat.S_ISREG(mode):
        return None
    kind = FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
    return InputError(f"{path}: is {kind}, not an image file")


def open_regular(path: Path | str) -> BinaryIO:
    """Open a file for reading if it is a regular file, else raise InputError naming what it is.

    Checked with stat before the open and with fstat after it: the open is non-blocking, so a
    FIFO put in the file's place between the two is found by fstat instead of hanging the open."""
    try:
        if (error := not_regular(path, os.stat(path).st_mode)) is not None:
            raise error
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(f"{path}: " + ("broken symbolic link" if os.path.islink(path) else "file not found")) from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if (error := not_regular(path, os.fstat(fd).st_mode)) is not None:
        os.close(fd)
        raise error
    return os.fdopen(fd, "rb")


def plan_decode(path: Path | str, image: Image.Image, long_side: int | None) -> None:
    """Before any pixel is decoded: check the header's size, have a JPEG decoded at a reduced
    scale (1/2, 1/4 or 1/8 in libjpeg's DCT, Image.draft) when it is far larger than needed, and
    refuse what would still decode to more than DECODE_PIXELS.

    The reduced decode keeps at least twice the size asked for, so LANCZOS still does the last
    step (images up to 4x the size asked for are decoded as before)."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise InputError(f"{path}: image is {width}x{height}, too large to process")
    if max(width, height) < MIN_SIDE:
        raise InputError(f"{path}: image is {width}x{height}, too small (need at least {MIN_SIDE} px)")
    if long_side is not None:
        check_long_side(path, (width, height), long_side)
        image.draft(None, fit_long_side(width, height, 2 * long_side))  # a no-op for other formats
    if image.width * image.height > DECODE_PIXELS:
        raise InputError(
            f"{path}: image is {width}x{height}, too large to decode "
            f"(over {DECODE_PIXELS // 1_000_000} megapixels; only JPEGs are decoded at a reduced size)"
        )


# Greyscale of more than 8 bits: 16-bit scans (TIFF, PNG), 32-bit integer and float TIFFs. Pillow's
# convert("RGB") clips their values at 255 instead of scaling them, which made a 16-bit scan white.
WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_eight_bit(image: Image.Image) -> Image.Image:
    """A WIDE_GREY_MODES image as 8-bit greyscale ("L"), scaled from its range: 16 bits for I;16 and
    for integers above 255, 0..1 for floats that stay within it (else taken as 0..255)."""
    values = np.asarray(image, dtype=np.float32)
    if image.mode == "F":
        top = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0
    else:
        top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0.0) > 255 else 255.0
    return Image.fromarray(np.clip(values * (255.0 / top), 0, 255).round().astype(np.uint8), "L")


def open_rgb(path: Path | str) -> Image.Image:
    """Open an image file as RGB with its EXIF orientation applied, or raise InputError."""
    return open_photo(path, with_metadata=False)[0]


# How a loaded image is resized (load_photo) and how the evaluator resizes a style image
# (resize_style): one filter, so that the evaluator's style target is the jobs'.
RESIZE_FILTER = Image.LANCZOS


def open_photo(
    path: Path | str, *, with_metadata: bool = True, long_side: int | None = None, texture: bool = False
) -> tuple[Image.Image, Metadata | None]:
    """open_rgb, and the metadata to give its stylized copy (read_metadata; None without
    `with_metadata`: video frames, style images). With `long_side`, resized so that its long side
    is that, decoded at a reduced scale where the format allows (plan_decode); an image that would
    be under MIN_SIDE px on its short side is refused (check_long_side), or, a `texture` (a style
    image), made larger (texture_long_side)."""
    path = Path(path)
    try:
        with warnings.catch_warnings(), open_regular(path) as file:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                size = image.size
                if long_side is not None and texture:
                    long_side = texture_long_side(*size, long_side)
                plan_decode(path, image, long_side)
                # Pixels first: an error in them is the image's, never hidden by the metadata's.
                image.load()
                metadata = read_metadata(image) if with_metadata else None
                quarter_turn = image.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)
                image = ImageOps.exif_transpose(image)
                if image.mode in WIDE_GREY_MODES:
                    image = to_eight_bit(image)
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
    if long_side is not None:
        # The size from the header, not the decoded one: a reduced decode rounds its sides up,
        # and the output's shape must be what tree.output_shape promised from the header.
        width, height = fit_long_side(*size, long_side)
        if quarter_turn:  # exif_transpose turned it upright
            width, height = height, width
        if image.size != (width, height):
            image = image.resize((width, height), RESIZE_FILTER)
    return image, metadata


def fit_long_side(width: int, height: int, long_side: int) -> tuple[int, int]:
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def texture_long_side(width: int, height: int, long_side: int) -> int:
    """`long_side`, or more where the short side would be under MIN_SIDE px at it: for a style
    image, whose size sets the texture's scale, not an output's (a long strip of a painting)."""
    return max(long_side, math.ceil(MIN_SIDE * max(width, height) / min(width, height)))


def texture_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """fit_long_side at texture_long_side: a style image's size, never under MIN_SIDE a side."""
    return fit_long_side(width, height, texture_long_side(width, height, long_side))


def check_long_side(path: Path | str, size: tuple[int, int], long_side: int, *, what: str = "it") -> None:
    """Refuse an image (or video frames, `what`) of `size` (width, height) that at --size
    `long_side` would be under MIN_SIDE px on its short side: a panorama, a strip, a wide video at
    a small size. The message says the --size that fits."""
    width, height = fit_long_side(*size, long_side)
    if min(width, height) < MIN_SIDE:
        raise InputError(
            f"{path}: at --size {long_side} {what} would be {width}x{height}, under the {MIN_SIDE} px a side "
            f"that VGG-19 needs; use --size {texture_long_side(*size, long_side)} or more"
        )


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


def resize_to(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A (B, 3, H, W) tensor at `size` (H, W), by torch's antialiased bicubic, kept in 0..1: the
    optimization's scales and warm starts (stylize.py), and the evaluator's (score.py)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def resize_long_side(image: torch.Tensor, long_side: int) -> torch.Tensor:
    """Resize (B, 3, H, W) so that its longer side is `long_side`, keeping the aspect ratio, or
    more where its short side would be under MIN_SIDE px (texture_long_side): a style image, or an
    output the evaluator sees at its reference size."""
    width, height = texture_size(image.shape[-1], image.shape[-2], long_side)
    return resize_to(image, (height, width))


def resize_style(style: torch.Tensor, long_side: int) -> torch.Tensor:
    """A loaded style image (1, 3, H, W) with its long side at `long_side`, by the filter the jobs
    load their style images with (Lanczos, load_styles): the evaluator measures against the target
    the jobs optimize toward. (Torch's antialiased bicubic leaves less of the fine texture: against
    its target the style loss of the same frames came out twice as high, docs/video-quality.md.)"""
    width, height = texture_size(style.shape[-1], style.shape[-2], long_side)
    if (height, width) == tuple(style.shape[-2:]):
        return style
    return to_tensor(to_pil(style).resize((width, height), RESIZE_FILTER)).to(style.device)


def load_image(path: Path | str, long_side: int | None = None) -> torch.Tensor:
    """Load an image as (1, 3, H, W) RGB 0..1, resized so that its long side is `long_side`."""
    return load_photo(path, long_side, with_metadata=False)[0]


def load_styles(paths: Sequence[Path | str], settings: StyleSettings) -> list[torch.Tensor]:
    """The style images of a job, each with its long side at --style-scale times --size, or more
    where the short side would be under MIN_SIDE px (texture_long_side): one rule for the image,
    archive and video jobs. The Stylizer resizes them again to each output's size
    (style_targets.StyleTargets); this only bounds the decode."""
    long_side = round(settings.size * settings.style_scale)
    return [to_tensor(open_photo(path, with_metadata=False, long_side=long_side, texture=True)[0]) for path in paths]


def load_photo(
    path: Path | str, long_side: int | None = None, *, with_metadata: bool = True
) -> tuple[torch.Tensor, Metadata | None]:
    """load_image, and the metadata to give its stylized copy (save_image's `metadata`)."""
    image, metadata = open_photo(path, with_metadata=with_metadata, long_side=long_side)
    return to_tensor(image), metadata


def save_format(path: Path | str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SAVE_FORMATS:
        raise InputError(
            f"{path}: unsupported output format {suffix or '(no extension)'}; use one of "
            f"{', '.join(sorted(SAVE_FORMATS))}"
        )
    return SAVE_FORMATS[suffix]


def exif_for(exif: bytes, size: tuple[int, int]) -> bytes:
    """The source's EXIF with the pixel dimensions it records set to the output's."""
    data = Image.Exif()
    data.load(exif)
    sub = data.get_ifd(ExifTags.IFD.Exif)
    for tag, value in ((ExifTags.Base.ExifImageWidth, size[0]), (ExifTags.Base.ExifImageHeight, size[1])):
        if tag in sub:
            sub[tag] = value
    return data.tobytes()


def save_image(
    tensor: torch.Tensor,
    path: Path | str,
    *,
    quality: int = 95,
    metadata: Metadata | None = None,
    before_rename: Callable[[Path, str | None], None] | None = None,
) -> str | None:
    """Write atomically: a crash never leaves a half-written file under the final name.

    With `metadata` (from load_photo) and a format that holds it, the output gets the source's
    EXIF and ICC profile. Returns None, or why they are missing from the output in part or whole:
    the image itself is written all the same, and a failure to write it raises WriteError.
    `before_rename(finished temporary file, that note)` runs before the file takes its name: the
    archive records there what it is about to place (DESIGN.md, "Stages, checkpoints, resume")."""
    image_format = save_format(path)
    image = to_pil(tensor)
    options = {"quality": quality} if image_format in ("JPEG", "WEBP") else {}
    problems = [metadata.problem] if metadata and metadata.problem else []
    keep = {}
    if metadata and image_format in METADATA_FORMATS:
        keep = {
            name: value for name, value in (("exif", metadata.exif), ("icc_profile", metadata.icc_profile)) if value
        }
    # If the metadata cannot be written (EXIF too long for a JPEG marker, a tag Pillow cannot
    # encode), the EXIF goes first, then the ICC profile: the photo is never lost over them.
    attempts = [keep, {k: v for k, v in keep.items() if k != "exif"}, {}]
    attempts = [a for i, a in enumerate(attempts) if a not in attempts[:i]]
    try:
        with atomic_path(path) as tmp:
            for extra, fallback in zip(attempts, attempts[1:] + [None]):
                try:
                    if "exif" in extra:
                        extra = extra | {"exif": exif_for(extra["exif"], image.size)}
                    image.save(tmp, format=image_format, **options, **extra)  # truncates an earlier try
                    break
                except Exception as exc:
                    if fallback is None or (isinstance(exc, OSError) and exc.errno is not None):
                        raise  # the file's own failure (a full disk, ...), not the metadata's
                    dropped = " and ".join(METADATA_NAMES[k] for k in extra if k not in fallback)
                    problems.append(
                        f"its {dropped} could not be written ({type(exc).__name__}: {one_line(str(exc))}); the output "
                        "has none"
                    )
            if before_rename is not None:
                before_rename(tmp, "; ".join(problems) or None)
    except OSError as exc:
        raise WriteError(path, exc) from None
    return "; ".join(problems) or None


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
