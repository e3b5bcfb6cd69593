"""--passes N (issue 17, item 4): Ruder, Dosovitskiy and Brox's multi-pass algorithm (passes.py).

The blend and the two-neighbour temporal terms on synthetic frames; a tiny job of 3 passes (the
tiny VGG of helpers.py); exact resume after a kill inside passes 2 and 3; bad values refused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import build_tiny_vgg, decoded_frames, make_clip, make_job, tree_state
from pipeline.atomic import EXIT_STATUS, RENAME_COUNT_ENV
from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.flow import FramePair
from pipeline.flowstage import pair_name
from pipeline.images import save_image
from pipeline.passes import BLEND, Passes, blend, neighbours, pass_order
from pipeline.shots import Shot
from pipeline.temporal import FlowWarmStart, StartPlan
from pipeline.video import run_video
from pipeline.video_defaults import MAX_PASSES
from pipeline.workdir import FrameStore, Holding, Kept, check_disk_space

TESTS = Path(__file__).resolve().parent
H, W = 16, 20
RUN_TIMEOUT = 300  # seconds for one run of the tiny job, on a loaded 2-core machine


def test_blend_and_both_neighbours_temporal_terms(tmp_path):
    """Frame 2 of 3 in pass 3 (forward): it starts from (1 - delta c1) x2 + delta c1 W(x1), and its
    temporal loss is c1 (x - W(x1))^2 + c2 (x - W(x3))^2 over the values, times the weight."""
    # The order and the neighbours of each pass: pass 2 goes backward, pass 3 forward.
    shot = Shot(1, 3)
    assert list(pass_order(shot, 2)) == [3, 2, 1] and list(pass_order(shot, 3)) == [1, 2, 3]
    assert neighbours(shot, 2, 3) == (1, 3) and neighbours(shot, 2, 2) == (3, 1)
    assert neighbours(shot, 1, 3) == (None, 2) and neighbours(shot, 3, 2) == (None, 2)
    store = FrameStore(tmp_path)
    store.styled_dir.mkdir(parents=True)
    store.flow_dir.mkdir()
    levels = {1: 0.0, 2: 0.4, 3: 1.0}  # flat frames: a zero flow carries each onto frame 2 unchanged
    for index, level in levels.items():
        save_image(torch.full((1, 3, H, W), level), store.styled(index))
    rng = np.random.default_rng(0)
    c1, c2 = (rng.random((H, W)).astype(np.float32) for _ in range(2))
    zero = np.zeros((H, W, 2), np.float32)
    FramePair(zero, c1, 0.0).save(store.flow_dir / pair_name(1, 2))
    FramePair(zero, c2, 0.0).save(store.flow_dir / pair_name(3, 2))
    weight = 2.0
    starter = FlowWarmStart(StartPlan(iterations_first=3, iterations=2, temporal_weight=weight, passes=3))
    context = SimpleNamespace(
        store=store, job=SimpleNamespace(passes=3), starter=starter, hashes={"stylize": "h"}, picture=None
    )
    start = Passes(SimpleNamespace(c=context, shot=shot)).start(2, 3)

    x = [torch.full((1, 3, H, W), round(level * 255) / 255) for level in levels.values()]  # as saved, 8 bits
    m1, m2 = (torch.from_numpy(c)[None, None] for c in (c1, c2))
    expected = (1 - BLEND * m1) * x[1] + BLEND * m1 * x[0]
    assert torch.allclose(start.init, expected, atol=1e-6)
    assert torch.allclose(blend(x[1], x[0], m1), expected)
    assert start.source == "pass3" and start.iterations == 2
    image = torch.rand(1, 3, H, W)
    by_hand = ((m1 * (image - x[0]) ** 2 + m2 * (image - x[2]) ** 2) * 255**2).mean()
    assert float(start.extra_losses["temporal"](image)) == pytest.approx(weight * float(by_hand), rel=1e-4)
    # A shot's end frame has one neighbour: frame 3 of pass 2 (backward) starts from itself, held to frame 2.
    c3 = rng.random((H, W)).astype(np.float32)
    FramePair(zero, c3, 0.0).save(store.flow_dir / pair_name(2, 3))
    end = Passes(SimpleNamespace(c=context, shot=Shot(2, 3))).start(3, 2)
    assert torch.allclose(end.init, x[2], atol=1e-6)
    by_hand = (torch.from_numpy(c3)[None, None] * (image - x[1]) ** 2 * 255**2).mean()
    assert float(end.extra_losses["temporal"](image)) == pytest.approx(weight * float(by_hand), rel=1e-4)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("passes-clip") / "clip.mp4", frames=5)


def frame_stats(work: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((work / "styled").glob("[0-9]*.json"))]


def test_three_passes_run_and_change_the_frames(clip, tmp_path):
    vgg = build_tiny_vgg()
    outputs = {}
    for passes in (1, 3):
        job = make_job(clip, tmp_path / f"p{passes}", flow="dis", flow_workers=1, passes=passes)
        result = run_video(job, vgg=vgg)
        assert result.frames == 5
        outputs[passes] = decoded_frames(job.output)
    stats = frame_stats(tmp_path / "p3" / "out.mp4.work")
    assert [s["pass"] for s in stats] == [3] * 5 and all(s["final"] for s in stats)
    assert all(len(s["pass_iterations"]) == 3 and s["iterations"] == sum(s["pass_iterations"]) for s in stats)
    assert all("pass" not in s for s in frame_stats(tmp_path / "p1" / "out.mp4.work"))  # --passes 1: as before
    plan = {"iterations_first": 3, "iterations": 2}  # and the stylize stage's hash of --passes 1 is unchanged
    assert "passes" not in FlowWarmStart(StartPlan(**plan)).settings()
    assert FlowWarmStart(StartPlan(**plan, passes=3)).settings()["passes"] == 3
    assert len(outputs[3]) == len(outputs[1]) == 5 * 32 * 20 * 3  # 48x32 scaled to 32 px wide, 5 frames
    assert outputs[3] != outputs[1]
    log = (tmp_path / "p3" / "out.mp4.work" / "job.log").read_text()
    assert "pass 2 of 3" in log and "pass 3 of 3" in log
    assert not list((tmp_path / "p3" / "out.mp4.work").rglob("*.pass*.png"))


# The job in a process of its own (the commit-point hook exits it), with the tiny VGG.
SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from helpers import build_tiny_vgg, make_job
from pipeline.video import run_video
job = make_job(Path(sys.argv[2]), Path(sys.argv[3]), flow="dis", flow_workers=1, passes=3)
run_video(job, vgg=build_tiny_vgg())
"""


def run_job(clip: Path, out_dir: Path, env: dict) -> subprocess.CompletedProcess:
    env = os.environ | env
    command = [sys.executable, "-c", SCRIPT, str(TESTS), str(clip), str(out_dir)]
    return subprocess.run(
        command, cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_killed_inside_later_passes_resumes_to_the_same_frames(clip, tmp_path):
    log = tmp_path / "renames.txt"
    reference = run_job(clip, tmp_path / "ref", {RENAME_COUNT_ENV: str(log)})
    assert reference.returncode == 0, reference.stderr
    renames = [line.split(" ", 1) for line in log.read_text().splitlines()]

    def after(name: str, nth: int = 1) -> int:
        return [int(n) for n, path in renames if path.endswith(f"styled/{name}")][nth - 1]

    stops = {
        "pass 2 image of frame 3 placed, not committed": after("000003.pass2.png"),
        "pass 2 of frame 3 committed, its image not renamed": after("000003.pass2.png") + 1,
        "pass 3 of frame 2 renamed, its flicker record not final": after("000002.pass3.png") + 2,
    }
    assert renames[stops["pass 2 of frame 3 committed, its image not renamed"] - 1][1].endswith("styled/000003.json")
    ref_work = tmp_path / "ref" / "out.mp4.work"
    same = ("frame", "pass", "pass_iterations", "loss", "flicker", "final")
    expected = [{k: s.get(k) for k in same} for s in frame_stats(ref_work)]
    for what, stop in stops.items():
        out = tmp_path / f"stop{stop}"
        stopped = run_job(clip, out, {"PIPELINE_EXIT_AFTER_RENAMES": str(stop)})
        assert stopped.returncode == EXIT_STATUS, f"{what}: {stopped.stderr}"
        resumed = run_job(clip, out, {})
        assert resumed.returncode == 0, f"{what}: {resumed.stderr}"
        assert decoded_frames(out / "out.mp4") == decoded_frames(tmp_path / "ref" / "out.mp4"), what
        assert [{k: s.get(k) for k in same} for s in frame_stats(out / "out.mp4.work")] == expected, what
        # The first pass was not done again: five first-pass frames in the log of both runs together.
        assert (out / "out.mp4.work" / "job.log").read_text().count(" start=") == 5, what
        assert not list(out.rglob("*.pass*.png")), what


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--passes", "0"], ["--passes 0", f"between 1 and {MAX_PASSES}"]),
        (["--passes", str(MAX_PASSES + 1)], [f"--passes {MAX_PASSES + 1}"]),
        (["--passes", "2", "--flow", "none"], ["--passes", "--flow dis"]),
    ],
)
def test_bad_passes_refused_with_one_line(clip, tmp_path, capsys, extra, words):
    before = tree_state(tmp_path)
    style = TESTS.parent / "samples" / "ihc.png"
    code = main(["video", str(clip), "-s", str(style), "-o", str(tmp_path / "out.mp4"), *extra])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert all(word in lines[0] for word in words), lines[0]
    assert tree_state(tmp_path) == before


def test_the_disk_check_counts_the_whole_shot_that_passes_hold(tmp_path, monkeypatch):
    """With --passes a shot's frames and both pairs stay until its last pass: a disk that holds
    the streaming window but not a shot of frames is refused before anything starts."""
    store = FrameStore(tmp_path / "work")
    store.work_dir.mkdir()
    kept = Kept(decoded=False, flow=False, stylized=False)
    units = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}

    def needed(estimate: str) -> float:
        number, unit = re.search(r"about ([0-9.]+) (\w+) needed", estimate).groups()
        return float(number) * units[unit]

    streaming = check_disk_space(store, kept, 300, (320, 180))
    whole = check_disk_space(store, kept, 300, (320, 180), Holding(held=300))
    assert "held for --passes" not in streaming and "300 frames of a shot held for --passes" in whole
    assert needed(whole) > needed(streaming) + 300 * 320 * 180 * 3  # at least the stylized frames
    between = int((needed(whole) + needed(streaming)) / 2)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(between, 0, between))
    check_disk_space(store, kept, 300, (320, 180))
    with pytest.raises(InputError, match="not enough disk space for 300 frames"):
        check_disk_space(store, kept, 300, (320, 180), Holding(held=300))
