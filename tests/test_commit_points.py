"""A kill at every commit point: the video and archive jobs hard-exit right after their N-th atomic
rename (pipeline.atomic: every file reaches its final name through one counted rename), for every
N an uninterrupted run reaches (sampled evenly above SAMPLE, always with the last ten; of a video
job split into segments, every N of its later segment; the report pages' renames are skipped, as
the pages are rebuilt from the records), and the same command is
run again. It must exit as the uninterrupted run did, with byte-identical results,
nothing temporary left, and nothing finished made twice: the only file a resumed run may place
again is the one the stopped run placed last, before any record said it was finished.

DESIGN.md's rule for exact resume is stated in exactly these terms: "before a file is placed under
a final name, the records already say whose it will be, so a kill between any two instructions
leaves a state the same command finishes from".

The runs are forked from one driver process (tests/commit_driver.py), which imports torch once:
a tiny job costs less than the interpreter's start. Real VGG-19 weights at 32 px, 2-3 iterations.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import decoded_frames, make_clip
from pipeline.atomic import EXIT_STATUS, is_temporary

ROOT = Path(__file__).resolve().parents[1]
STYLE = ROOT / "samples" / "ihc.png"
SAMPLE = 60  # stop points before sampling sets in
RUN_TIMEOUT = 120  # seconds for one run of a tiny job, on a loaded 2-core machine
COMMON = ["--size", "32", "--iterations", "2", "--seed", "3", "-q"]


def run_driver(tmp_path: Path, argv: list[str], stops: dict | None = None) -> dict:
    """`stops`: which renames to stop after (commit_driver.py's sample or window); every one by default."""
    cases = tmp_path / "cases"
    cases.mkdir()
    spec = {"argv": argv, "cases": str(cases), "parallel": 2, "timeout": RUN_TIMEOUT} | (stops or {"sample": SAMPLE})
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    driver = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "commit_driver.py"), str(tmp_path / "spec.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert driver.returncode == 0, driver.stderr
    return json.loads((cases / "summary.json").read_text())


def check_stopped_and_resumed(case: dict, reference_status: int, products: callable) -> None:
    """Exit statuses, and that nothing finished was placed twice."""
    assert "error" not in case, case.get("error")
    stopped, resumed = case["stopped"], case["resumed"]
    assert stopped["status"] == EXIT_STATUS, (
        f"stop at rename {case['stop_at']}: exit {stopped['status']}\n{stopped['output']}"
    )
    assert len(stopped["renamed"]) == case["stop_at"], stopped["renamed"]
    assert resumed["status"] == reference_status and "Traceback" not in resumed["output"], (
        f"after a stop right after rename {case['stop_at']} ({stopped['renamed'][-1]}): "
        f"exit {resumed['status']}, expected {reference_status}\n{resumed['output']}"
    )
    made = Counter(path for path in stopped["renamed"] + resumed["renamed"] if products(path))
    last = stopped["renamed"][-1]
    twice = {path: n for path, n in made.items() if n > (2 if path == last else 1)}
    assert not twice, f"stopped right after rename {case['stop_at']} ({last}); placed more than once: {twice}"


def temporaries(folder: Path) -> list[str]:
    """Names a finished job must not leave: atomic writes' temporaries, stale and staging folders."""
    return sorted(
        str(path.relative_to(folder)) for path in folder.rglob(".*")
        if path.name not in (".lock", ".stylize") and (is_temporary(path.name) or path.is_dir())
    )  # fmt: skip


# --- the video job -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """4 frames of 48x32 with sound."""
    return make_clip(tmp_path_factory.mktemp("commit-clip") / "clip.mp4", frames=4, audio="aac")


def frame_files(work: Path) -> dict[str, bytes]:
    return {str(p.relative_to(work)): p.read_bytes() for p in sorted(work.glob("styled/[0-9]*.png"))}


# Segments: a long shot split in two that share a frame (3), cross-faded (seams.py): the later
# one's version, the seam's chunk and what it uses up are commit points too. Stopped after every
# rename of the later segment, from its shot record's first write to its last; before it the first
# segment's renames are those of a plain shot, and after it the job's end is the plain variant's
# (every rename of both runs would double the suite's time).
SEGMENT_WINDOW = {"window": [r"/shots/000003\.json$", r"/shots/000003\.json$"]}
VARIANTS = {"plain": ([], None), "segments": (["--max-shot-frames", "3", "--segment-overlap", "1"], SEGMENT_WINDOW)}


@pytest.mark.parametrize("variant", VARIANTS)
def test_video_job_stopped_after_every_rename_resumes_to_the_same_result(clip, tmp_path, variant):
    extra, stops = VARIANTS[variant]
    argv = [
        "video",
        str(clip),
        "-s",
        str(STYLE),
        "-o",
        "{case}/out.mp4",
        "--iterations-first",
        "3",
        "--device",
        "cpu",
        "--flow-workers",
        "1",
        *COMMON,
        *extra,
    ]
    summary = run_driver(tmp_path, argv, stops)
    reference = summary["reference"]
    assert reference["reference"]["status"] == 0, reference["reference"]["output"]
    ref_dir = Path(reference["case"])
    ref_frames, ref_styled = decoded_frames(ref_dir / "out.mp4"), frame_files(ref_dir / "out.mp4.work")
    if variant == "plain":
        assert len(summary["cases"]) == len(summary["job_renames"]) <= SAMPLE  # every rename but the report's
    else:
        assert "seam: frames 3-3 cross-faded" in (ref_dir / "out.mp4.work" / "job.log").read_text()
        stopped_after = {case["stopped"]["renamed"][-1].split(".work/")[-1] for case in summary["cases"]}
        later_segment = {
            "shots/000003.json",
            "seams/000003.png",
            "seams/000003.json",
            "chunks/000003.mp4",
            "chunks/000004.mp4",
        }
        assert later_segment <= stopped_after, sorted(stopped_after)

    def products(path: str) -> bool:  # what a job makes; job.json is rewritten by design
        return path.endswith(("out.mp4", ".png", ".npz", "/frames")) or any(
            f"/{folder}/" in path for folder in ("styled", "chunks", "seams")
        )

    for case in summary["cases"]:
        check_stopped_and_resumed(case, 0, products)
        folder = Path(case["case"])
        where = f"stopped right after rename {case['stop_at']} ({case['stopped']['renamed'][-1]})"
        assert decoded_frames(folder / "out.mp4") == ref_frames, where
        assert frame_files(folder / "out.mp4.work") == ref_styled, where
        assert temporaries(folder) == [], where


# --- the photo archive job ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Three photos of one shape (one batch), one in a subfolder, and a truncated file."""
    root = tmp_path_factory.mktemp("commit-photos") / "in"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.jpg", "sub/c.png"):
        small = Image.fromarray((rng.random((4, 4, 3)) * 255).astype(np.uint8))
        small.resize((48, 32), Image.BICUBIC).save(root / name)
    data = (root / "a.png").read_bytes()
    (root / "sub" / "broken.png").write_bytes(data[: len(data) // 2])
    return root


def output_files(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".stylize" not in p.parts
    }


def test_archive_job_stopped_after_every_rename_resumes_to_the_same_result(photos, tmp_path):
    argv = ["images", str(photos), "-s", str(STYLE), "-o", "{case}/out", "--devices", "cpu", *COMMON]
    summary = run_driver(tmp_path, argv)
    reference = summary["reference"]
    assert reference["reference"]["status"] == 1, reference["reference"]["output"]  # the truncated file
    ref_out = Path(reference["case"]) / "out"
    expected = output_files(ref_out)
    assert len(expected) == 3
    records = {
        r["source"]: r["status"]
        for r in map(json.loads, (p.read_text() for p in (ref_out / ".stylize" / "records").glob("*.json")))
    }

    def products(path: str) -> bool:  # the stylized images; records and archive.json are rewritten by design
        return "/.stylize/" not in path

    for case in summary["cases"]:
        check_stopped_and_resumed(case, 1, products)
        out = Path(case["case"]) / "out"
        where = f"stopped right after rename {case['stop_at']} ({case['stopped']['renamed'][-1]})"
        assert output_files(out) == expected, where
        got = {
            r["source"]: r["status"]
            for r in map(json.loads, (p.read_text() for p in (out / ".stylize" / "records").glob("[0-9a-f]*.json")))
        }
        assert got == records, where
        assert temporaries(out) == [], where
