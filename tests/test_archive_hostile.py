"""Hostile photo trees and output trees: nothing lost, nothing overwritten, nothing hangs.

Inputs whose output names collide, files of the user's already in the output tree, symbolic
links in the output tree that lead elsewhere, FIFOs and devices where images belong (in the tree
and as the style image of every command), a 700-byte JPEG whose header claims 19000x19000, a
kill right after an output is placed, and Dask refusals. Real VGG-19 at 32 px and one or two
iterations: the point is the bookkeeping around the method.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import archive, backends, tree
from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.images import load_photo, open_photo, plan_decode

ROOT = Path(__file__).resolve().parents[1]
STYLE = ROOT / "samples" / "ihc.png"
FAST = ["--size", "32", "--iterations", "1", "--devices", "cpu", "-q"]


def photo(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((4, 4, 3)) * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)


def stylize(source: Path, out: Path, *args) -> int:
    return main(["images", str(source), "-s", str(STYLE), "-o", str(out), *FAST, *map(str, args)])


def cli(*args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The CLI as a process; a run that hangs fails the test (with what it printed) instead of the suite."""
    command = [sys.executable, "-m", "pipeline.cli", *map(str, args)]
    try:
        return subprocess.run(
            command,
            env=os.environ | (env or {}),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,  # the tests check the status, with stderr in the message
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{args[0]} hung for {timeout} s; its stderr:\n{exc.stderr}")


def outputs(out: Path) -> dict[str, bytes]:
    """The output tree's files (not the job's own state), by relative path."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in out.rglob("*")
        if p.is_file() and ".stylize" not in p.parts
    }


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files(folder: Path) -> dict[str, str]:
    """Every file's content hash and every link's target under folder: 'nothing there changed'."""
    state = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        state[rel] = f"-> {os.readlink(path)}" if path.is_symlink() else (sha(path) if path.is_file() else "dir")
    return state


# --- 1. output names: decided once for the tree, distinct, stable ---------------------------------


def test_colliding_output_names_get_distinct_names_that_do_not_change(tmp_path, capsys):
    source, out = tmp_path / "in", tmp_path / "out"
    (source / "x.png").mkdir(parents=True)
    photo(40, 30, 1).save(source / "a.png")
    photo(40, 30, 2).save(source / "a.gif")  # GIF cannot be written: its output is a PNG
    photo(40, 30, 3).save(source / "a.gif.png")
    photo(40, 30, 4).save(source / "B.png")
    photo(40, 30, 5).save(source / "b.PNG")  # one name with B.png on a disk that ignores case
    photo(40, 30, 6).save(source / "x.gif")  # x.png is an output folder
    photo(40, 30, 7).save(source / "x.png" / "y.png")
    assert stylize(source, out) == 0, capsys.readouterr().err

    records = archive.read_records(out)
    names = {rel: r["output"] for rel, r in records.items()}
    assert all(r["status"] == "done" for r in records.values()) and len(records) == 7
    assert len({name.casefold() for name in names.values()}) == 7  # distinct, whatever the disk
    assert names["a.png"] == "a.png" and names["a.gif.png"] == "a.gif.png" and names["x.png/y.png"] == "x.png/y.png"
    assert names["a.gif"] == f"a.gif~{hashlib.sha256(b'a.gif').hexdigest()[:8]}.png"  # a.gif.png is another file's
    assert names["x.gif"] == "x.gif.png"
    assert {names["B.png"], names["b.PNG"]} == {
        "B.png~" + hashlib.sha256(b"B.png").hexdigest()[:8] + ".png",
        "b.PNG~" + hashlib.sha256(b"b.PNG").hexdigest()[:8] + ".PNG",
    }
    written = outputs(out)
    assert set(written) == set(names.values()) and len(set(written.values())) == 7  # seven results, none lost

    # The names depend on the set of paths only: any listing order, any run.
    rels = sorted(names)
    for seed in range(5):
        random.Random(seed).shuffle(rels)
        assert tree.output_names(rels, None) == names
    assert stylize(source, out) == 0
    assert outputs(out) == written and {rel: r["output"] for rel, r in archive.read_records(out).items()} == names


def test_an_input_with_no_name_left_is_refused_and_recorded(tmp_path, capsys):
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    taken = f"a.gif~{hashlib.sha256(b'a.gif').hexdigest()[:8]}.png"  # every name a.gif could have, taken
    for seed, rel in enumerate(["a.png", "a.gif", "a.gif.png", taken]):
        photo(40, 30, seed).save(source / rel)
    assert tree.output_names(["a.png", "a.gif", "a.gif.png", taken], None)["a.gif"] is None
    assert stylize(source, out) == 1
    err = capsys.readouterr().err
    assert "1 of 4 images failed" in err, err
    record = archive.read_records(out)["a.gif"]
    assert record["status"] == "failed" and "no output name" in record["error"] and "a.gif" in record["error"]
    assert len(outputs(out)) == 3


# --- 2. the user's files in the output tree ------------------------------------------------------


def test_a_photo_too_thin_at_this_size_is_recorded_with_the_size_that_fits_and_the_others_finish(tmp_path, capsys):
    """A panorama that --size would make under 16 px high (VGG-19's least) fails alone, before any
    batch, with the --size that fits; the next run with that size does it."""
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    photo(40, 30, 1).save(source / "a.png")
    photo(300, 12, 2).save(source / "panorama.png")  # 32x1 at --size 32
    assert stylize(source, out) == 1
    err = capsys.readouterr().err
    assert "1 of 2 images failed" in err, err
    records = archive.read_records(out)
    assert records["a.png"]["status"] == "done"
    assert records["panorama.png"]["status"] == "failed", records["panorama.png"]
    assert "under the 16 px a side" in records["panorama.png"]["error"]
    assert "use --size 400 or more" in records["panorama.png"]["error"]
    assert main(["images", str(source), "-s", str(STYLE), "-o", str(tmp_path / "wide"), *FAST, "--size", "400"]) == 0
    assert Image.open(tmp_path / "wide" / "panorama.png").size == (400, 16)


def test_a_file_the_job_did_not_write_is_never_replaced_without_overwrite(tmp_path, capsys):
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    out.mkdir()
    photo(40, 30, 1).save(source / "a.png")
    photo(40, 30, 2).save(source / "b.png")
    photo(40, 30, 9).save(out / "a.png")  # the user's own picture, under the name a.png's output wants
    mine = (out / "a.png").read_bytes()

    for _ in range(2):  # refused, and again: the next run looks again (no --retry-failed needed)
        assert stylize(source, out) == 1
        err = capsys.readouterr().err
        assert "1 of 2 images failed" in err, err
        record = archive.read_records(out)["a.png"]
        assert (
            record["status"] == "failed" and str(out / "a.png") in record["error"] and "--overwrite" in record["error"]
        )
        assert (out / "a.png").read_bytes() == mine
    assert archive.read_records(out)["b.png"]["status"] == "done"

    assert stylize(source, out, "--overwrite") == 0, capsys.readouterr().err
    record = archive.read_records(out)["a.png"]
    assert (
        record["status"] == "done" and record["output_sha256"] == sha(out / "a.png") != hashlib.sha256(mine).hexdigest()
    )

    # The job's own outputs are replaced when the settings change, without --overwrite ...
    before = outputs(out)
    assert stylize(source, out, "--iterations", 2) == 0, capsys.readouterr().err
    after = outputs(out)
    assert after["a.png"] != before["a.png"] and after["b.png"] != before["b.png"]
    # ... but not one the user has since edited: it is no longer the file the job wrote.
    photo(40, 30, 8).save(out / "b.png")
    edited = (out / "b.png").read_bytes()
    assert stylize(source, out, "--iterations", 3) == 1
    assert (out / "b.png").read_bytes() == edited and "--overwrite" in archive.read_records(out)["b.png"]["error"]
    capsys.readouterr()


def test_a_kill_right_after_an_output_is_placed_is_finished_by_the_same_command(tmp_path):
    """The ledger records each output's fingerprint before its rename: after a hard exit right
    after the rename (before the image's record), the same command, without --overwrite,
    records it as done without stylizing it again, and the result is the uninterrupted one."""
    source = tmp_path / "in"
    source.mkdir()
    photo(40, 30, 1).save(source / "a.png")
    photo(30, 40, 2).save(source / "b.jpg")
    command = [
        "images",
        source,
        "-s",
        STYLE,
        "-o",
        None,
        "--size",
        32,
        "--iterations",
        2,
        "--seed",
        3,
        "--devices",
        "cpu",
        "-q",
    ]

    def run(out: Path, **env) -> subprocess.CompletedProcess:
        return cli(
            *[out if a is None else a for a in command], env={"PIPELINE_COUNT_RENAMES": str(out) + ".renames", **env}
        )

    reference = tmp_path / "reference"
    assert (done := run(reference)).returncode == 0, done.stderr
    assert sorted(outputs(reference)) == ["a.png", "b.jpg"]
    # Stopped at a file, not at a count: the two images are two batches on two threads, placed in
    # either order (the count of the reference's renames is not the killed run's).
    for name in sorted(outputs(reference)):
        out = tmp_path / f"killed after placing {name}"
        killed = run(out, PIPELINE_EXIT_AFTER_RENAME_TO=str(out / name))
        assert killed.returncode == 99, killed.stderr
        # The image is there; its record is not.
        assert name in outputs(out) and archive.read_records(out).get(name, {}).get("status") != "done"
        resumed = run(out)
        assert resumed.returncode == 0, resumed.stderr
        assert outputs(out) == outputs(reference)
        destinations = [
            path for _, path in (line.split(" ", 1) for line in Path(str(out) + ".renames").read_text().splitlines())
        ]
        assert sorted(d for d in destinations if ".stylize" not in Path(d).parts) == sorted(
            str(out / placed) for placed in outputs(out)
        )
        records = archive.read_records(out)
        assert all(
            r["status"] == "done" and r["attempts"] == 1 and r["output_sha256"] == sha(out / r["output"])
            for r in records.values()
        )
        log = (out / ".stylize" / "log.txt").read_text()
        assert all(log.count(f" INFO done {rel} -> ") == 1 for rel in records), log


# --- 3. never outside the output tree ---------------------------------------------------------------


def test_outputs_are_never_written_through_links_out_of_the_tree(tmp_path, capsys):
    source, out, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    (source / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    out.mkdir()
    photo(40, 30, 1).save(source / "sub" / "b.png")
    photo(40, 30, 2).save(source / "c.png")
    photo(40, 30, 3).save(source / "d.png")
    photo(40, 30, 4).save(elsewhere / "keep.png")
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)  # a folder of the tree that leads out
    (out / "c.png").symlink_to(elsewhere / "keep.png")  # a file of the tree that leads out
    untouched = files(elsewhere)

    for extra in ([], ["--overwrite"]):
        assert stylize(source, out, *extra) == 1
        records = archive.read_records(out)
        assert "symbolic link" in records["sub/b.png"]["error"] and str(out / "sub") in records["sub/b.png"]["error"]
        assert records["d.png"]["status"] == "done"
        assert files(elsewhere) == untouched
    # Without --overwrite the link in the way was left; with it, the link (not its target) was replaced.
    assert records["c.png"]["status"] == "done" and not (out / "c.png").is_symlink()
    assert (out / "sub").is_symlink()
    capsys.readouterr()

    for name in ("../x.png", "/tmp/x.png", "a/../../x.png", "a//b.png", "./a.png"):
        with pytest.raises(InputError, match="leave the output directory"):
            tree.output_target(out, name, create=True)

    # The job's own folder as a link: refused before anything is written through it.
    other, records_elsewhere = tmp_path / "other-out", tmp_path / "records-elsewhere"
    other.mkdir()
    records_elsewhere.mkdir()
    (other / ".stylize").symlink_to(records_elsewhere, target_is_directory=True)
    assert stylize(source, other) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "symbolic link" in err[0] and ".stylize" in err[0], err
    assert list(records_elsewhere.iterdir()) == [] and [p.name for p in other.iterdir()] == [".stylize"]


# --- 4. FIFOs, devices, and 5. header bombs ------------------------------------------------------


def jpeg_header_bomb(path: Path, width: int = 19000, height: int = 19000) -> None:
    """A real 64x64 JPEG whose frame header (SOF0) is patched to claim width x height."""
    photo(64, 64, 5).save(path, quality=50)
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    path.write_bytes(bytes(data))


def png_header(path: Path, width: int, height: int) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


def test_fifos_devices_and_header_bombs_in_a_tree_are_refused_without_hanging(tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    photo(40, 30, 1).save(source / "a.png")
    os.mkfifo(source / "pipe.png")
    (source / "zero.jpg").symlink_to("/dev/zero")
    jpeg_header_bomb(source / "bomb.jpg")
    png_header(source / "huge.png", 15000, 15000)  # no reduced decode for PNG: over the budget
    assert (source / "bomb.jpg").stat().st_size < 1500

    run = cli("images", source, "-s", STYLE, "-o", out, *FAST)
    assert run.returncode == 1, run.stderr
    assert "3 of 5 images failed" in run.stderr, run.stderr
    records = archive.read_records(out)
    # The bomb's data ends early: libjpeg fills the rest with grey, at 1/8 scale, and it is done.
    assert records["a.png"]["status"] == "done" and records["bomb.jpg"]["status"] == "done"
    assert Image.open(out / "bomb.jpg").size == (32, 32)
    expected = {
        "pipe.png": "is a named pipe (FIFO)",
        "zero.jpg": "is a character device",
        "huge.png": "too large to decode",
    }
    for rel, words in expected.items():
        assert (
            records[rel]["status"] == "failed"
            and words in records[rel]["error"]
            and str(source / rel) in records[rel]["error"]
        ), records[rel]
    assert (
        records["pipe.png"]["sha256"] is None and records["zero.jpg"]["sha256"] is None
    )  # never read, not even hashed


def test_a_fifo_as_the_style_image_is_refused_by_every_command(tmp_path):
    import ffmpeg

    from pipeline.decode import ffmpeg_binary

    (tmp_path / "photos").mkdir()
    photo(40, 30, 1).save(tmp_path / "photos" / "a.png")
    photo(40, 30, 1).save(tmp_path / "content.png")
    clip = tmp_path / "clip.mp4"
    ffmpeg.input("testsrc2=size=48x32:rate=25", f="lavfi").output(
        str(clip), vcodec="libx264", pix_fmt="yuv420p", **{"frames:v": 2}
    ).global_args("-nostdin").run(cmd=ffmpeg_binary(), quiet=True)
    fifo = tmp_path / "style.png"
    os.mkfifo(fifo)
    fast = ["--size", "32", "--iterations", "1", "-q"]
    commands = [
        ["image", tmp_path / "content.png", "-s", fifo, "-o", tmp_path / "out.png", *fast, "--device", "cpu"],
        ["images", tmp_path / "photos", "-s", fifo, "-o", tmp_path / "styled", *fast, "--devices", "cpu"],
        ["video", clip, "-s", fifo, "-o", tmp_path / "out.mp4", *fast, "--device", "cpu"],
    ]
    for command in commands:
        before = files(tmp_path)
        run = cli(*command, timeout=120)
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(lines) == 1, run.stderr
        assert str(fifo) in lines[0] and "named pipe (FIFO)" in lines[0], run.stderr
        assert files(tmp_path) == before, command[0]


BOUNDED_MEMORY = """
import json, resource, sys
from PIL import Image
from pipeline import tree
from pipeline.errors import InputError
from pipeline.images import load_photo, plan_decode

# Address space: what this process has now, plus 768 MiB. Decoding 19000x19000 at full size
# needs 1.4 GB (Pillow keeps 4 bytes per RGB pixel) and must fail under it.
size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (size + (768 << 20), resource.RLIM_INFINITY))
result = {}
try:
    Image.new("RGB", (19000, 19000))
    result["full_size"] = "allocated"
except MemoryError:
    result["full_size"] = "MemoryError"
path = sys.argv[1]
with Image.open(path) as image:
    plan_decode(path, image, 32)
    result["decoded_size"] = list(image.size)
result["probe"] = list(tree.probe(__import__("pathlib").Path(path), 32))
for long_side in (32, None):
    try:
        result[str(long_side)] = list(load_photo(path, long_side)[0].shape)
    except InputError as exc:
        result[str(long_side)] = str(exc)
print(json.dumps(result))
"""


def test_a_jpeg_header_bomb_is_decoded_at_a_reduced_size_in_bounded_memory(tmp_path):
    """A 700-byte JPEG that claims 19000x19000: decoded at 1/8 scale (libjpeg's DCT scaling,
    Image.draft), under an address-space limit that a full-size decode cannot fit in; without a
    size to reduce to, refused before decoding."""
    bomb = tmp_path / "bomb.jpg"
    jpeg_header_bomb(bomb)
    run = subprocess.run(
        [sys.executable, "-c", BOUNDED_MEMORY, str(bomb)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["full_size"] == "MemoryError", "the limit would not catch a full-size decode"
    assert result["decoded_size"] == [2375, 2375]  # 19000 / 8
    assert result["probe"] == [[32, 32], None]
    assert result["32"] == [1, 3, 32, 32]  # its data ends early: libjpeg fills in grey
    assert "too large to decode" in result["None"]  # nothing to reduce to: refused before decoding


def test_a_large_jpeg_is_decoded_reduced_to_the_shape_the_header_promised(tmp_path):
    """The reduced decode rounds sides up; the output still has the shape computed from the
    header (tree.output_shape, which the archive batches by), EXIF rotation included, and looks
    like the full decode."""
    path = tmp_path / "big.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    photo(1203, 805, 3).save(path, quality=95, exif=exif)
    with Image.open(path) as image:
        plan_decode(path, image, 64)
        assert image.size == (151, 101)  # 1/8 scale, still at least twice the 64x43 asked for
    reduced, _ = open_photo(path, long_side=64)
    assert tree.output_shape(path, 64) == (64, 43) and reduced.size == (43, 64)
    assert tuple(load_photo(path, 64)[0].shape[-2:]) == (64, 43)
    full = open_photo(path, with_metadata=False)[0].resize(reduced.size, Image.LANCZOS)
    assert np.abs(np.asarray(full, dtype=np.int16) - np.asarray(reduced, dtype=np.int16)).mean() < 2


# --- 6. Dask refusals ------------------------------------------------------------------------------


def test_refused_dask_jobs_leave_the_file_system_as_they_found_it(tmp_path, monkeypatch, capsys):
    pytest.importorskip("distributed")
    monkeypatch.setattr(backends, "CONNECT_TIMEOUT", 2)
    source = tmp_path / "in"
    source.mkdir()
    photo(40, 30, 1).save(source / "a.png")
    (tmp_path / "existing").mkdir()
    for out in (tmp_path / "new", tmp_path / "existing"):
        for extra in ([], ["--scheduler", "tcp://127.0.0.1:1"]):
            before = files(tmp_path)
            code = main(["images", str(source), "-s", str(STYLE), "-o", str(out), "--backend", "dask", *extra, "-q"])
            err = capsys.readouterr().err
            assert code == 2 and "Dask scheduler" in err, err
            assert files(tmp_path) == before, extra
    assert not (tmp_path / "new").exists()


def test_status_and_resume_after_hostile_runs_keep_working(tmp_path, capsys):
    """The ledger lives in the job's folder and is not taken for an image of the tree."""
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    photo(40, 30, 1).save(source / "a.png")
    assert stylize(source, out) == 0
    assert [p.name for p in (out / ".stylize" / tree.LEDGER_DIR).iterdir()] == [
        tree.ledger_path(out / ".stylize", "a.png").name
    ]
    ledger = tree.read_ledger(out / ".stylize", "a.png")
    assert ledger["sha256"] == [sha(out / "a.png")] and ledger["record"]["source"] == "a.png"
    assert main(["status", str(out)]) == 0
    assert "images: 1 in the tree; 1 done, 0 failed, 0 to do" in capsys.readouterr().out
