"""The photo's metadata in its stylized copy: EXIF (date taken, camera, GPS) and the ICC profile are
carried over by `stylize images` and `stylize image` to JPEG, PNG, WebP and TIFF outputs, with
Orientation reset to 1 (the pixels are rotated upright on load) and without the EXIF thumbnail.
Metadata is best effort: a source without it, or with a corrupt EXIF block, is stylized all the
same; a failure to write the image itself is still an error.

Real VGG-19 at 32 px and 2 iterations where a command runs; the rest calls pipeline.images."""

from __future__ import annotations

import errno
import struct
from pathlib import Path

import pytest
import torch
from PIL import ExifTags, Image, ImageCms

from helpers import FAST, STYLE, assert_ok, invoke, photo
from helpers import stylize_images as stylize
from pipeline import archive
from pipeline.errors import InputError, WriteError
from pipeline.images import Metadata, load_photo, save_image

# Pillow warns about the corrupt EXIF blocks made here on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data")

ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
MAKE, MODEL, TAKEN = "Canon", "EOS 5D Mark IV", "2021:07:04 12:34:56"
LATITUDE = (47.0, 22.0, 30.0)
# An EXIF block whose first directory claims 500 entries but ends after the header: Pillow reads
# nothing from it (and warns).
BROKEN_EXIF = b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 500) + b"\x00" * 10


def camera_exif(orientation: int = 6) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = MAKE
    exif[ExifTags.Base.Model] = MODEL
    exif[ExifTags.Base.Orientation] = orientation
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = TAKEN
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.ExifImageWidth] = 48
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.ExifImageHeight] = 32
    exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitudeRef] = "N"
    exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitude] = LATITUDE
    return exif


def camera_jpeg(path: Path, seed: int = 1) -> Path:
    """48x32 as stored, Orientation 6: displayed (and stylized) as 32x48 portrait."""
    photo(48, 32, seed).save(path, exif=camera_exif(), icc_profile=ICC, quality=95)
    return path


def assert_camera_metadata(path: Path, size: tuple[int, int]) -> None:
    """The output at `path` is `size` (upright) and has the camera's metadata, Orientation 1."""
    with Image.open(path) as image:
        assert image.size == size
        exif = image.getexif()
        assert exif[ExifTags.Base.Make] == MAKE and exif[ExifTags.Base.Model] == MODEL
        assert exif[ExifTags.Base.Orientation] == 1  # not rotated a second time by viewers
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        assert sub[ExifTags.Base.DateTimeOriginal] == TAKEN
        assert (sub[ExifTags.Base.ExifImageWidth], sub[ExifTags.Base.ExifImageHeight]) == size
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        assert gps[ExifTags.GPS.GPSLatitudeRef] == "N" and tuple(map(float, gps[ExifTags.GPS.GPSLatitude])) == LATITUDE
        assert image.info.get("icc_profile") == ICC
        assert not exif.get_ifd(ExifTags.IFD.IFD1)  # no thumbnail


def assert_no_metadata(path: Path, size: tuple[int, int]) -> None:
    with Image.open(path) as image:
        assert image.size == size
        assert not image.getexif() and not image.info.get("icc_profile")


# --- pipeline.images: read on load, written on save --------------------------------------------


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_exif_and_icc_profile_go_to_every_format_that_holds_them(tmp_path, suffix):
    tensor, metadata = load_photo(camera_jpeg(tmp_path / "camera.jpg"), 24)
    assert tensor.shape[-2:] == (24, 16)  # rotated upright on load
    assert save_image(tensor, tmp_path / f"out{suffix}", metadata=metadata) is None
    assert_camera_metadata(tmp_path / f"out{suffix}", (16, 24))


@pytest.mark.parametrize("suffix", [".png", ".webp", ".tif"])
def test_metadata_is_read_from_every_format_that_holds_it(tmp_path, suffix):
    source = tmp_path / f"camera{suffix}"
    photo(48, 32, 2).save(source, exif=camera_exif(orientation=1).tobytes(), icc_profile=ICC)
    tensor, metadata = load_photo(source, 24)
    assert save_image(tensor, tmp_path / "out.jpg", metadata=metadata) is None
    assert_camera_metadata(tmp_path / "out.jpg", (24, 16))
    with Image.open(tmp_path / "out.jpg") as image:  # a TIFF's own layout tags stay behind
        assert not {ExifTags.Base.StripOffsets, ExifTags.Base.ImageWidth, ExifTags.Base.BitsPerSample} & set(
            image.getexif()
        )


def test_bmp_holds_no_metadata_and_that_is_not_a_problem(tmp_path):
    tensor, metadata = load_photo(camera_jpeg(tmp_path / "camera.jpg"), 24)
    assert save_image(tensor, tmp_path / "out.bmp", metadata=metadata) is None
    assert_no_metadata(tmp_path / "out.bmp", (16, 24))


def exif_with_thumbnail(thumbnail: bytes) -> bytes:
    """A little-endian EXIF block written by hand (Pillow writes no second directory): IFD0 with
    Make and Orientation 6, then IFD1 pointing at a JPEG thumbnail, as cameras write it."""
    make = MAKE.encode() + b"\x00"
    ifd_size = 2 + 2 * 12 + 4
    make_at = 8 + ifd_size
    ifd1_at = make_at + len(make)
    thumbnail_at = ifd1_at + ifd_size
    ifd0 = (
        struct.pack("<H", 2)
        + struct.pack("<HHII", 0x010F, 2, len(make), make_at)
        + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0)
    )
    ifd1 = (
        struct.pack("<H", 2)
        + struct.pack("<HHII", 0x0201, 4, 1, thumbnail_at)
        + struct.pack("<HHII", 0x0202, 4, 1, len(thumbnail))
    )
    tiff = (
        b"II*\x00"
        + struct.pack("<I", 8)
        + ifd0
        + struct.pack("<I", ifd1_at)
        + make
        + ifd1
        + struct.pack("<I", 0)
        + thumbnail
    )
    return b"Exif\x00\x00" + tiff


def test_the_exif_thumbnail_of_the_unstylized_photo_is_dropped(tmp_path):
    thumbnail = tmp_path / "thumb.jpg"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(thumbnail, comment=b"the original's thumbnail")
    thumbnail_bytes = thumbnail.read_bytes()
    source = tmp_path / "camera.jpg"
    photo(48, 32, 3).save(source, exif=exif_with_thumbnail(thumbnail_bytes))
    with Image.open(source) as image:  # the thumbnail is really there
        assert image.getexif().get_ifd(ExifTags.IFD.IFD1)[ExifTags.Base.JpegIFByteCount] == len(thumbnail_bytes)
        assert image.getexif()[ExifTags.Base.Orientation] == 6

    tensor, metadata = load_photo(source, 24)
    assert save_image(tensor, tmp_path / "out.jpg", metadata=metadata) is None
    with Image.open(tmp_path / "out.jpg") as image:
        assert image.size == (16, 24)
        exif = image.getexif()
        assert exif[ExifTags.Base.Make] == MAKE and exif[ExifTags.Base.Orientation] == 1
        assert not exif.get_ifd(ExifTags.IFD.IFD1)
    assert b"the original's thumbnail" not in (tmp_path / "out.jpg").read_bytes()


def test_a_profile_that_is_not_rgb_is_not_given_to_the_rgb_output(tmp_path):
    grey = ICC[:16] + b"GRAY" + ICC[20:]  # the colour space field of the header
    source = tmp_path / "grey.jpg"
    Image.new("L", (32, 32), 128).save(source, icc_profile=grey)
    tensor, metadata = load_photo(source)
    assert metadata == Metadata()
    assert save_image(tensor, tmp_path / "out.jpg", metadata=metadata) is None
    assert_no_metadata(tmp_path / "out.jpg", (32, 32))


def test_a_corrupt_exif_block_is_left_out_and_said(tmp_path):
    source = tmp_path / "broken.jpg"
    photo(48, 32, 4).save(source, exif=BROKEN_EXIF, icc_profile=ICC)
    tensor, metadata = load_photo(source)
    assert tensor.shape[-2:] == (32, 48)
    assert metadata.exif is None and metadata.icc_profile == ICC and "EXIF is corrupt" in metadata.problem
    note = save_image(tensor, tmp_path / "out.jpg", metadata=metadata)
    assert note == metadata.problem
    with Image.open(tmp_path / "out.jpg") as image:
        assert not image.getexif() and image.info["icc_profile"] == ICC


def test_a_truncated_image_still_fails_whatever_its_metadata(tmp_path):
    whole = camera_jpeg(tmp_path / "whole.jpg", seed=5).read_bytes()
    (tmp_path / "half.jpg").write_bytes(whole[: len(whole) * 3 // 4])
    with pytest.raises(InputError, match="truncated"):
        load_photo(tmp_path / "half.jpg")


def test_exif_too_long_for_a_jpeg_is_left_out_but_the_image_and_profile_are_written(tmp_path):
    exif = camera_exif(orientation=1)
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = b"x" * 70000  # a PNG holds it, a JPEG marker not
    source = tmp_path / "long.png"
    photo(48, 32, 6).save(source, exif=exif.tobytes(), icc_profile=ICC)
    tensor, metadata = load_photo(source)
    note = save_image(tensor, tmp_path / "out.jpg", metadata=metadata)
    assert note is not None and note.startswith("its EXIF could not be written (ValueError: EXIF data is too long)")
    with Image.open(tmp_path / "out.jpg") as image:
        assert image.size == (48, 32) and not image.getexif() and image.info["icc_profile"] == ICC
    assert save_image(tensor, tmp_path / "out.png", metadata=metadata) is None
    assert_camera_metadata(tmp_path / "out.png", (48, 32))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries left


def test_a_real_write_error_is_not_taken_for_a_metadata_problem(tmp_path, monkeypatch):
    tensor, metadata = load_photo(camera_jpeg(tmp_path / "camera.jpg"))
    tries = []

    def full_disk(self, fp, format=None, **options):
        tries.append(sorted(options))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(WriteError, match="no space left"):
        save_image(tensor, tmp_path / "out.jpg", metadata=metadata)
    assert tries == [["exif", "icc_profile", "quality"]]  # not tried again without the metadata
    assert sorted(p.name for p in tmp_path.iterdir()) == ["camera.jpg"]


# --- the commands --------------------------------------------------------------------------------


def test_archive_outputs_keep_the_photos_metadata(tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    (source / "trip").mkdir(parents=True)
    camera_jpeg(source / "trip" / "camera.jpg")
    photo(48, 32, 7).save(source / "plain.png")  # no metadata at all
    photo(48, 32, 8).save(source / "broken.jpg", exif=BROKEN_EXIF)
    assert stylize(source, "-s", STYLE, "-o", out, "--size", 32, "--iterations", 2, "-q") == 0

    records = archive.read_records(out)
    assert {rel: r["status"] for rel, r in records.items()} == {
        "trip/camera.jpg": "done",
        "plain.png": "done",
        "broken.jpg": "done",
    }
    assert_camera_metadata(out / "trip" / "camera.jpg", (21, 32))
    assert_no_metadata(out / "plain.png", (32, 21))
    assert_no_metadata(out / "broken.jpg", (32, 21))
    assert "metadata" not in records["trip/camera.jpg"] and "metadata" not in records["plain.png"]
    assert "EXIF is corrupt" in records["broken.jpg"]["metadata"]
    assert "broken.jpg: its EXIF is corrupt" in (out / ".stylize" / "log.txt").read_text()

    # Another output format: the same metadata.
    assert (
        stylize(source, "-s", STYLE, "-o", tmp_path / "webp", "--size", 32, "--iterations", 2, "--format", "webp", "-q")
        == 0
    )
    assert_camera_metadata(tmp_path / "webp" / "trip" / "camera.webp", (21, 32))


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_image_command_output_keeps_the_photos_metadata(tmp_path, suffix):
    out = tmp_path / f"out{suffix}"
    result = invoke(["image", camera_jpeg(tmp_path / "camera.jpg"), "-s", STYLE, "-o", out, "--sheet", *FAST])
    assert_ok(result)
    assert "warning" not in result.output
    assert_camera_metadata(out, (21, 32))
    assert_no_metadata(tmp_path / "out-sheet.png", Image.open(tmp_path / "out-sheet.png").size)  # not a photo


def test_image_command_without_metadata_or_with_a_corrupt_exif(tmp_path):
    photo(48, 32, 9).save(tmp_path / "plain.png")
    result = invoke(["image", tmp_path / "plain.png", "-s", STYLE, "-o", tmp_path / "plain-out.jpg", *FAST])
    assert_ok(result)
    assert "warning" not in result.output
    assert_no_metadata(tmp_path / "plain-out.jpg", (32, 21))

    photo(48, 32, 10).save(tmp_path / "broken.jpg", exif=BROKEN_EXIF)
    result = invoke(["image", tmp_path / "broken.jpg", "-s", STYLE, "-o", tmp_path / "broken-out.jpg", *FAST])
    assert_ok(result)
    assert f"warning: {tmp_path / 'broken.jpg'}: its EXIF is corrupt" in result.stderr
    assert_no_metadata(tmp_path / "broken-out.jpg", (32, 21))


def test_a_tensor_saved_without_metadata_is_as_before(tmp_path):
    assert save_image(torch.rand(1, 3, 16, 16), tmp_path / "plain.jpg") is None
    assert_no_metadata(tmp_path / "plain.jpg", (16, 16))
