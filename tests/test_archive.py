"""`stylize images`: directory trees with bad files, resume, --retry-failed, Dask, batching.

Real VGG-19 at 32-48 px and a few iterations: the point is the bookkeeping around the method.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import heavy_modules_loaded, photo
from helpers import stylize_images as stylize
from pipeline import archive, tree
from pipeline.atomic import is_temporary
from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
STYLE = ROOT / "samples" / "ihc.png"
WEIRD = 'my "best"; photo – Zürich ü.png'  # spaces, quotes, a semicolon, non-ASCII letters
NON_UTF8 = os.fsdecode(b"caf\xe9 latin-1.png")  # a name that is not UTF-8, as old archives have


def bomb_png(path: Path, width: int = 30000, height: int = 30000) -> None:
    """A PNG header that claims a huge image: what a decompression bomb looks like to a reader."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    first_row = zlib.compress(b"\0" * (1 + 3 * width))  # 2.7 GB of pixels would follow
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", first_row) + chunk(b"IEND", b""))


def make_tree(root: Path) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """A small archive: good images (relative path -> output (width, height) at --size 48) and
    bad ones (relative path -> a word its failure reason must contain), plus things to skip."""
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / ".thumbnails").mkdir()
    photo(48, 32, 1).save(root / "top.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed portrait
    photo(48, 32, 2).save(root / "nested" / "photo.jpg", exif=exif)
    photo(40, 40, 3).save(root / "nested" / "deeper" / "pic.webp")
    photo(96, 64, 4).save(root / "nested" / "deeper" / "scan.tif")
    photo(48, 32, 5).save(root / "nested" / WEIRD)
    photo(32, 48, 6).save(root / NON_UTF8)
    good = {"top.png": (48, 32), "nested/photo.jpg": (32, 48), "nested/deeper/pic.webp": (48, 48),
            "nested/deeper/scan.tif": (48, 32), f"nested/{WEIRD}": (48, 32), NON_UTF8: (32, 48)}  # fmt: skip

    photo(64, 48, 7).save(root / "whole.jpg")
    data = (root / "whole.jpg").read_bytes()
    (root / "whole.jpg").unlink()
    (root / "nested" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "nested" / "text.jpg").write_text("this is not a photo\n")
    photo(1, 1, 8).save(root / "tiny.png")
    bomb_png(root / "nested" / "deeper" / "bomb.png")
    (root / 'bad\nname; "x".jpg').write_text("neither is this")
    (root / os.fsdecode(b"bad \xff.jpg")).write_text("nor this")
    bad = {"nested/truncated.jpg": "truncated", "nested/text.jpg": "not an image", "tiny.png": "too small",
           "nested/deeper/bomb.png": "too large", 'bad\nname; "x".jpg': "not an image",
           os.fsdecode(b"bad \xff.jpg"): "not an image"}  # fmt: skip
    if os.geteuid() == 0:
        # Root reads a file whatever its mode, so the unreadable file here is a link to nowhere
        # (a photo on an unmounted share); test_permission_denied covers the mode as non-root.
        (root / "nested" / "gone.jpg").symlink_to(root / "unmounted" / "gone.jpg")
        bad["nested/gone.jpg"] = "broken symbolic link"
    else:
        photo(48, 32, 9).save(root / "nested" / "locked.jpg")
        (root / "nested" / "locked.jpg").chmod(0)
        bad["nested/locked.jpg"] = "permission denied"

    (root / "notes.txt").write_text("not an image extension: never looked at")
    photo(48, 32, 10).save(root / ".hidden.png")
    photo(48, 32, 11).save(root / ".thumbnails" / "thumb.png")
    (root / "nested" / "loop").symlink_to("..", target_is_directory=True)  # a symlink loop
    return good, bad


def snapshot(folder: Path) -> dict[str, int]:
    """mtime_ns of the outputs and records under folder (not the run's own files), by relative path."""
    files = (p for p in folder.rglob("*") if p.is_file() and (p.parent.name == "records" or ".stylize" not in p.parts))
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in files}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_tree_with_bad_files(tmp_path, capsys):
    source = tmp_path / "in"
    good, bad = make_tree(source)
    out = tmp_path / "out"  # (an output inside the input tree is refused: test_bad_inputs.py)
    assert stylize(source, "-s", STYLE, "-o", out, "--size", 48, "--iterations", 2) == 1

    records = archive.read_records(out)
    assert set(records) == set(good) | set(bad)  # hidden, .txt, loop duplicates and output skipped
    for rel, (width, height) in good.items():
        assert records[rel]["status"] == "done", records[rel]["error"]
        assert records[rel]["losses"]["style"] > 0
        with Image.open(out / records[rel]["output"]) as image:
            assert image.size == (width, height), rel
    assert Image.open(out / "nested/deeper/scan.tif").format == "TIFF"
    assert Image.open(out / "nested/deeper/pic.webp").format == "WEBP"
    for rel, reason in bad.items():
        record = records[rel]
        assert record["status"] == "failed" and record["output"] is None
        assert reason in record["error"] and "\n" not in record["error"], record["error"]
    assert not list(out.rglob(".hidden*")) and not (out / ".thumbnails").exists()

    err = capsys.readouterr().err
    assert f"error: {len(bad)} of {len(good) + len(bad)} images failed" in err
    assert "tiny.png" in err and "too small" in err  # the summary table lists the failures
    log = (out / ".stylize" / "log.txt").read_text(encoding="utf-8")
    assert log.count(" INFO failed ") == len(bad) and log.count(" INFO done ") == len(good)

    assert main(["status", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"images: {len(good) + len(bad)} in the tree; {len(good)} done, {len(bad)} failed, 0 to do" in lines
    assert lines[1].startswith("state: finished") and sum(line.startswith("failed: ") for line in lines) == len(bad)
    loaded, shown = heavy_modules_loaded("status", str(out))  # records only: no torch to wait for
    assert shown.splitlines() == lines and loaded == [], loaded


def test_resume_after_kill(tmp_path):
    """SIGKILL mid-run (no cleanup at all), then the same command: finished images are not redone."""
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    for i in range(6):
        photo(48, 32, 20 + i).save(source / f"{i}.png")
    args = ["images", source, "-s", STYLE, "-o", out, "--size", 48, "--iterations", 40, "-q"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    stderr = tmp_path / "stderr.txt"  # a file, not a pipe: nobody reads it while the run goes on
    with open(stderr, "wb") as err:
        command = [sys.executable, "-m", "pipeline.cli", *map(str, args)]
        process = subprocess.Popen(command, env=env, cwd=ROOT, stderr=err)
    deadline = time.monotonic() + 120
    while not any(r["status"] == "done" for r in archive.read_records(out).values()):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            err = stderr.read_text(errors="replace")
            pytest.fail(f"the run ended or stalled before finishing an image; its stderr:\n{err}")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = archive.read_records(out)
    assert 1 <= len(before) < 6, "the run finished before it was killed: make the images slower"
    finished = snapshot(out)

    assert main([str(a) for a in args]) == 0
    after = archive.read_records(out)
    assert all(r["status"] == "done" and r["attempts"] == 1 for r in after.values()) and len(after) == 6
    now = snapshot(out)
    assert {path: now[path] for path in finished if path in now} == {
        p: t for p, t in finished.items() if not is_temporary(Path(p).name)
    }
    assert not [p for p in now if is_temporary(Path(p).name)]  # the killed run's temporaries are gone
    assert json.loads((out / ".stylize" / "archive.json").read_text())["state"] == "finished"


def test_ctrl_c_stops_batches_in_flight(tmp_path):
    """Ctrl-C reaches the parent while another batch is already on the device: that batch stops
    (no record appears after the interrupt), the state says interrupted, a rerun finishes."""
    from pipeline.stylize import StyleSettings

    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    for i in range(4):
        photo(32, 24, 70 + i).save(source / f"{i}.png")
    settings = StyleSettings(size=32, iterations=30)

    def interrupt(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        archive.run_archive(source, out, [STYLE], settings, on_record=interrupt)
    time.sleep(1.5)  # without cancellation the batch in flight would write its record by now
    assert len(archive.read_records(out)) == 1
    assert json.loads((out / ".stylize" / "archive.json").read_text())["state"] == "interrupted"
    assert archive.status_lines(out)[1].startswith("state: interrupted")
    finished = snapshot(out)

    summary = archive.run_archive(source, out, [STYLE], settings)
    assert (summary.plan.done_before, summary.done, summary.failed) == (1, 3, [])
    assert all(snapshot(out)[path] == mtime for path, mtime in finished.items())


def test_retry_failed_and_changed_inputs(tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    photo(32, 24, 30).save(source / "a.png")
    photo(32, 24, 31).save(source / "b.png")
    (source / "c.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    fast = ["-s", STYLE, "-o", out, "--size", 32, "--iterations", 2, "-q"]
    record = lambda rel: archive.read_records(out)[rel]  # noqa: E731

    assert stylize(source, *fast) == 1
    assert record("c.jpg")["status"] == "failed" and record("c.jpg")["attempts"] == 1
    first = snapshot(out)

    assert stylize(source, *fast) == 1  # nothing is redone, failures included
    assert snapshot(out) == first

    assert stylize(source, *fast, "--retry-failed") == 1  # only the failure is tried again
    assert record("c.jpg")["attempts"] == 2
    changed = {p for p, t in snapshot(out).items() if first.get(p) != t}
    assert changed == {str(archive.record_path(out, "c.jpg").relative_to(out))}

    photo(32, 24, 32).save(source / "c.jpg")  # fixed: a changed source is retried without asking
    assert stylize(source, *fast) == 0
    assert record("c.jpg")["status"] == "done"

    before = snapshot(out)
    os.utime(source / "a.png", ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same content
    assert stylize(source, *fast) == 0
    assert before["a.png"] == snapshot(out)["a.png"]  # not redone

    old_hash = record("a.png")["settings_hash"]
    assert stylize(source, *fast[:-3], "--iterations", 3, "--format", "webp", "-q") == 0  # new settings: all redone
    records = archive.read_records(out)
    assert {r["output"] for r in records.values()} == {"a.webp", "b.webp", "c.webp"}
    assert {r["settings_hash"] for r in records.values()} != {old_hash} and len(
        {r["settings_hash"] for r in records.values()}
    ) == 1
    assert all(Image.open(out / f"{name}.webp").format == "WEBP" for name in "abc")


def test_dask_backend_matches_local(tmp_path):
    distributed = pytest.importorskip("distributed")
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    photo(32, 24, 40).save(source / "a.png")
    photo(32, 24, 41).save(source / "sub" / "b.jpg")
    photo(24, 32, 42).save(source / "sub" / "c.png")
    (source / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    fast = ["-s", STYLE, "--size", 32, "--iterations", 3, "-q"]

    assert stylize(source, "-o", tmp_path / "local", *fast) == 1
    # Worker processes, as on a real cluster: the job and batches really travel pickled.
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", env={"OMP_NUM_THREADS": "1"}
    )
    with cluster:
        assert (
            stylize(
                source, "-o", tmp_path / "dask", *fast, "--backend", "dask", "--scheduler", cluster.scheduler_address
            )
            == 1
        )

    local, dask = archive.read_records(tmp_path / "local"), archive.read_records(tmp_path / "dask")
    assert {r: v["status"] for r, v in local.items()} == {r: v["status"] for r, v in dask.items()}
    assert sum(v["status"] == "done" for v in dask.values()) == 3
    for rel, record in local.items():
        if record["status"] == "done":
            difference = np.abs(pixels(tmp_path / "local" / rel) - pixels(tmp_path / "dask" / rel)).max()
            assert difference <= 1, rel


def test_batched_images_do_not_depend_on_batchmates(tmp_path):
    """Three images of one shape, in batches of 2 (+1) and one by one, with L-BFGS."""
    source = tmp_path / "in"
    source.mkdir()
    for i in range(3):
        photo(32, 24, 50 + i).save(source / f"{i}.png")
    fast = ["-s", STYLE, "--size", 32, "--iterations", 5, "-q"]
    assert stylize(source, "-o", tmp_path / "batched", "--batch-size", 2, *fast) == 0
    assert stylize(source, "-o", tmp_path / "alone", "--batch-size", 1, *fast) == 0

    batched, alone = archive.read_records(tmp_path / "batched"), archive.read_records(tmp_path / "alone")
    assert sorted(r["batch_size"] for r in batched.values()) == [1, 2, 2]
    for rel in batched:
        assert np.abs(pixels(tmp_path / "batched" / rel) - pixels(tmp_path / "alone" / rel)).max() <= 1, rel
        assert batched[rel]["losses"]["loss"] == pytest.approx(alone[rel]["losses"]["loss"], rel=1e-3)


def test_permission_denied(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root, which reads files whatever their mode (the tree test uses a broken link instead)")
    source = tmp_path / "in"
    source.mkdir()
    photo(32, 24, 60).save(source / "locked.png")
    (source / "locked.png").chmod(0)
    assert stylize(source, "-s", STYLE, "-o", tmp_path / "out", "--size", 32, "--iterations", 1, "-q") == 1
    assert "permission denied" in archive.read_records(tmp_path / "out")["locked.png"]["error"]


def test_walk_names_and_options(tmp_path):
    source = tmp_path / "in"
    (source / "raw" / "x").mkdir(parents=True)
    for rel in ("a.jpg", "a.png", "B.JPG", "raw/x/c.png", "raw/d.gif", ".e.png"):
        photo(16, 16, 0).save(source / rel)
    (source / "raw" / "x" / "up").symlink_to("../..", target_is_directory=True)

    rels, unlisted = tree.walk(source, tmp_path / "out")
    assert rels == ["B.JPG", "a.jpg", "a.png", "raw/d.gif", "raw/x/c.png"] and unlisted == []
    assert tree.walk(source, source / "raw")[0] == ["B.JPG", "a.jpg", "a.png"]  # the output tree is skipped
    assert tree.walk(source, tmp_path, include=["*.jpg"])[0] == ["B.JPG", "a.jpg"]
    assert tree.walk(source, tmp_path, exclude=["raw/*"])[0] == ["B.JPG", "a.jpg", "a.png"]

    assert tree.output_names(rels, None) == {
        "B.JPG": "B.JPG",
        "a.jpg": "a.jpg",
        "a.png": "a.png",
        "raw/d.gif": "raw/d.png",
        "raw/x/c.png": "raw/x/c.png",
    }
    names = tree.output_names(rels, "png")
    assert names["a.png"] == "a.png" and names["a.jpg"] == "a.jpg.png" and names["B.JPG"] == "B.png"
    assert len(set(names.values())) == len(names)

    items = [archive.Item(f"{i}.jpg", f"{i}.jpg", 1, 1) for i in range(7)]
    shapes = {item: (24, 32) if i < 5 else (32, 24) for i, item in enumerate(items)}
    sizes = lambda batches: [(b.shape, len(b.items)) for b in batches]  # noqa: E731
    assert sizes(archive.make_batches(shapes, lambda shape: 4)) == [((24, 32), 4), ((24, 32), 1), ((32, 24), 2)]
    assert sizes(archive.make_batches(shapes, lambda shape: 4, workers=2)) == [
        ((24, 32), 3),
        ((24, 32), 2),
        ((32, 24), 1),
        ((32, 24), 1),
    ]
    assert archive.auto_batch_size((384, 512), None) == 1  # CPU
    assert archive.auto_batch_size((384, 512), 80 << 30) > archive.auto_batch_size((384, 512), 8 << 30) >= 1
    assert archive.parse_devices("cpu") == ("cpu",)
    for argv in (["--batch-size", "many"], ["-o", source], ["--format", "gif"], ["--devices", "cpu,cpu"]):
        options = ["-o", tmp_path / "out", *argv] if argv[0] != "-o" else argv
        assert stylize(source, "-s", STYLE, *options, "-q") == 2, argv

    from pipeline.manifest import WorkDirLock

    archive.state_dir(tmp_path / "out").mkdir(parents=True)
    with WorkDirLock(archive.state_dir(tmp_path / "out")):  # another run holds the output directory
        assert stylize(source, "-s", STYLE, "-o", tmp_path / "out", "-q") == 2
        assert archive.running_pid(tmp_path / "out") == str(os.getpid())
    assert not list((tmp_path / "out").rglob("*.jpg"))


def test_automatic_batch_size_comes_from_the_lbfgs_history_and_the_vgg_activations(monkeypatch):
    """The per-pixel estimate is counted from what the optimizer and the network hold, so that a
    change to either (here: the L-BFGS history length) changes the batch size with it."""
    from pipeline import archive_plan, lbfgs

    per_pixel = archive_plan.bytes_per_pixel()
    # Each pair of the history is two 3-channel fp32 buffers of the image's size (s and y).
    pair = 2 * 3 * 4 * archive_plan.HEADROOM
    monkeypatch.setattr(lbfgs, "HISTORY_SIZE", lbfgs.HISTORY_SIZE + 80)  # torch's default of 100
    assert archive_plan.bytes_per_pixel() == pytest.approx(per_pixel + 80 * pair)
    free = int(80e9)  # an 80 GB GPU
    with_100_pairs = archive_plan.auto_batch_size((512, 512), free)
    monkeypatch.undo()
    assert archive_plan.auto_batch_size((512, 512), free) > with_100_pairs
    # VGG-19 to relu5_1 holds more than to relu4_1, and most of it at full resolution (conv1).
    assert archive_plan.vgg_bytes_per_pixel("relu4_1") < archive_plan.vgg_bytes_per_pixel() < 2 * 3 * 64 * 4 * 4
    # A batch takes the memory it is given: twice the free memory (less the reserve), twice the batch.
    reserve = archive_plan.RESERVED_BYTES
    one = archive_plan.auto_batch_size((512, 512), reserve + int(512 * 512 * per_pixel * 5.5))
    two = archive_plan.auto_batch_size((512, 512), reserve + int(512 * 512 * per_pixel * 11))
    assert (one, two) == (5, 11)


def test_archive_hashes_keep_their_values_so_existing_output_directories_resume(tmp_path):
    """The settings hash in every record and the file hashes must not change with the code that
    computes them: a different value would redo every image of an archive already done."""
    import hashlib

    from pipeline import archive_records, hashing
    from pipeline.stylize import StyleSettings

    values = {"settings": "abc", "styles": ["x"], "format": None, "quality": 95}
    assert hashing.settings_hash(values) == "f961bfd65ca9c232"
    settings = StyleSettings(size=48)
    # StyleSettings.hash is hashing.settings_hash of its fields: the value it always had.
    assert settings.hash() == hashlib.sha256(json.dumps(settings.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
    old_values = {"settings": settings.hash(), "styles": ["0" * 64], "format": "png", "quality": 90}
    expected = hashlib.sha256(json.dumps(old_values, sort_keys=True).encode()).hexdigest()[:16]
    assert archive_records.job_hash(settings, ["0" * 64], "png", 90) == expected

    small, large = tmp_path / "small.bin", tmp_path / "large.bin"
    small.write_bytes(b"photo")
    large.write_bytes(os.urandom(3 << 20))
    for path in (small, large):
        assert hashing.file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert hashing.file_fingerprint(small) == f"5:{hashlib.sha256(b'photo').hexdigest()[:16]}"
    data = large.read_bytes()
    ends = hashlib.sha256(data[: 1 << 20] + data[-(1 << 20) :]).hexdigest()[:16]  # the first and last MiB
    assert hashing.file_fingerprint(large) == f"{3 << 20}:{ends}"
    os.mkfifo(tmp_path / "fifo")
    assert hashing.file_sha256(tmp_path / "fifo") is None  # never read: it would block
    (tmp_path / "link").symlink_to(small)
    assert hashing.file_sha256(tmp_path / "link", follow_links=False) is None


def test_an_archive_begun_before_the_range_term_keeps_its_finished_images(tmp_path, capsys):
    """Issue 17 turned the range term on (--range-weight 3e9) and weighed down the style layers with
    fewer positions than channels (--full-layer-weights off). An archive begun by a release before
    them (neither among its recorded settings), run again with the options left unset, goes on
    with the values it began with: its finished images stay finished, the new ones are styled
    alike, and it says so. Any other change restyles them all under the defaults now."""
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    photo(32, 24, 30).save(source / "a.png")
    photo(32, 24, 31).save(source / "b.png")
    fast = ["-s", STYLE, "-o", out, "--size", 32, "--iterations", 2]
    assert stylize(source, *fast, "--range-weight", 0, "--full-layer-weights", "-q") == 0
    info_file = out / ".stylize" / "archive.json"
    info = json.loads(info_file.read_text())
    del info["settings"]["range_weight"], info["settings"]["full_layer_weights"]  # as the releases before wrote it
    info_file.write_text(json.dumps(info))
    began = {r["settings_hash"] for r in archive.read_records(out).values()}
    assert began == {info["settings_hash"]}
    finished = snapshot(out)
    photo(32, 24, 32).save(source / "c.png")  # added since

    capsys.readouterr()
    assert stylize(source, *fast) == 0
    err = capsys.readouterr().err
    began_with = "--full-layer-weights, --range-weight 0 (the defaults now: off, 3e+09;"
    assert f"resuming with the settings the archive began with, {began_with}" in err, err
    assert "3 images: 2 done before; 1 to do" in err, err
    now = snapshot(out)
    assert {path: now[path] for path in finished} == finished  # neither image nor record touched
    assert {r["settings_hash"] for r in archive.read_records(out).values()} == began
    assert json.loads(info_file.read_text())["settings"]["range_weight"] == 0
    assert json.loads(info_file.read_text())["settings"]["full_layer_weights"] is True
    assert "resuming with the settings the archive began with" in (out / ".stylize" / "log.txt").read_text()

    # Another setting changed as well: every image again, with the range term of the defaults now.
    assert stylize(source, *fast[:-1], 3, "-q") == 0
    records = archive.read_records(out).values()
    assert len(records) == 3 and not {r["settings_hash"] for r in records} & began
    assert json.loads(info_file.read_text())["settings"]["range_weight"] == 3e9
    assert json.loads(info_file.read_text())["settings"]["full_layer_weights"] is False
