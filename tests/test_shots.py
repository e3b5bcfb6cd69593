"""The shot plan: where a video is cut into independently stylized ranges, and the segments of a
long shot with their cross-fade."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipeline.cuts import Scan
from pipeline.settings import StyleSettings
from pipeline.shotplan import ShotPlan
from pipeline.shots import Shot, at_frames, longest_first, owners, plan_shots, runs_text
from pipeline.videojob import VideoJob


def test_shots_start_at_frame_one_and_at_each_cut():
    assert plan_shots([5, 9], 12) == [Shot(1, 4), Shot(5, 8), Shot(9, 12)]
    assert plan_shots([], 3) == [Shot(1, 3)]
    # A cut on frame 1 or past the end is no new shot; repeated cuts count once.
    assert plan_shots([1, 13, 9, 9], 12) == [Shot(1, 8), Shot(9, 12)]
    assert plan_shots([2, 3], 3) == [Shot(1, 1), Shot(2, 2), Shot(3, 3)]


def test_every_frame_belongs_to_exactly_one_shot_without_segments():
    shots = plan_shots([4, 7, 30], 40)
    by_frame = owners(shots)
    assert sorted(by_frame) == list(range(1, 41))
    assert all(len(owned) == 1 for owned in by_frame.values())


@pytest.mark.parametrize(
    "frames, max_frames, overlap", [(100, 30, 12), (31, 30, 12), (61, 30, 0), (25, 10, 5), (9, 2, 1)]
)
def test_a_long_shot_is_split_into_overlapping_segments_that_cover_it(frames, max_frames, overlap):
    segments = plan_shots([], frames, max_frames=max_frames, overlap=overlap)
    assert segments[0].first == 1 and segments[-1].last == frames
    assert all(s.frames <= max_frames for s in segments)
    assert segments[0].overlap == 0
    for before, after in zip(segments, segments[1:]):
        assert after.first == before.last - overlap + 1 and after.overlap == overlap == before.tail
        assert before.own_last == after.first - 1
        assert after.frames > overlap  # a segment is more than its overlap
    by_frame = owners(segments)
    assert sorted(by_frame) == list(range(1, frames + 1))
    assert max(len(owned) for owned in by_frame.values()) == (2 if overlap and len(segments) > 1 else 1)


def test_segments_stay_inside_their_shot():
    segments = plan_shots([20], 50, max_frames=10, overlap=3)
    assert all(s.last < 20 or s.first >= 20 for s in segments)
    assert [s for s in segments if s.first == 20] == [Shot(20, 29, tail=3)]  # the cut starts afresh: no overlap
    assert [s.tail for s in segments if s.last in (19, 50)] == [0, 0]  # nothing after a shot's last segment


def test_the_cross_fade_weights_sum_to_one_over_the_overlap():
    before, after = plan_shots([], 40, max_frames=20, overlap=4)[:2]
    overlap = range(after.first, before.last + 1)
    assert len(overlap) == 4
    weights = [after.fade_weight(i) for i in overlap]
    assert weights == pytest.approx([0.2, 0.4, 0.6, 0.8])  # rising, never 0 or 1 inside
    assert all(before.fade_weight(i) == 1.0 for i in overlap)  # the earlier segment's own overlap is 0
    assert after.fade_weight(before.last + 1) == 1.0


def test_frames_in_a_row_read_as_a_run():
    assert runs_text([160, 79, 158, 159]) == ["79", "158-160"] and runs_text([]) == []
    assert at_frames(runs_text([5, 6, 7]), "fast move", "fast moves") == "fast move at frames 5-7"


def test_events_at_frames_read_in_the_singular_for_one_frame():
    assert at_frames([31], "scene cut", "scene cuts") == "scene cut at frame 31"
    assert at_frames([31, 90], "scene cut", "scene cuts") == "scene cuts at frames 31, 90"
    assert at_frames(["5-6"], "flash", "flashes") == "flash at frames 5-6"  # one flash, two frames
    assert at_frames(["5", "9-10"], "flash", "flashes") == "flashes at frames 5, 9-10"


def test_longest_shots_are_handed_out_first():
    shots = plan_shots([3, 10, 12], 20)
    assert [s.frames for s in longest_first(shots)] == [9, 7, 2, 2]
    assert [s.first for s in longest_first(shots)][2:] == [1, 10]  # ties in frame order


def test_an_overlap_over_half_a_segment_is_refused():
    with pytest.raises(ValueError, match="overlap 6 must be"):
        plan_shots([], 50, max_frames=10, overlap=6)


def test_a_pair_over_the_threshold_by_its_flow_alone_is_a_cut_only_where_the_flow_fails_suddenly():
    """Scan.sudden, from a scan's records alone: a cut between alike colours at 5 (the flow fails
    on 70% of the pixels, 10% beside it), a fast move over 9-11 (60-80% each, the colours alike)
    and a cut out of it at 12 (95%: more than FLOW_FAILS, beside a pair at 10%), a cut by its
    colours at 15 amid a shaken camera (its neighbours 60% unreliable too) and a lone pair at 18
    failing 90% beside one at 55%: by its spike of 0.35, under CUT_SPIKE, a move."""
    unreliable = {i: 0.1 for i in range(2, 21)} | {5: 0.7, 9: 0.6, 10: 0.8, 11: 0.65, 14: 0.6, 15: 1.0, 16: 0.6}
    unreliable |= {12: 0.95, 17: 0.55, 18: 0.9}
    colours = {i: 0.1 for i in range(2, 21)} | {15: 0.8}
    scores = {i: max(colours[i], unreliable[i]) for i in range(2, 21)}
    scan = Scan(20, scores, colours=colours, unreliable=unreliable)
    assert scan.cuts(0.5) == [5, 9, 10, 11, 12, 14, 15, 16, 17, 18]  # the releases before: every pair over it
    assert scan.cuts(0.5, sudden=True) == [5, 12, 15] and scan.moves(0.5) == [9, 10, 11, 14, 16, 17, 18]
    job = VideoJob(
        input=Path("in.mp4"), styles=(Path("style.png"),), output=Path("out.mp4"), settings=StyleSettings(),
        scene_threshold=0.5,
    )  # fmt: skip
    plan = ShotPlan.of(scan, job)
    assert plan.cuts == (5, 12, 15) and plan.moves == (9, 10, 11, 14, 16, 17, 18) and set(plan.moves) <= plan.goes_on
    assert plan.record()["moves"] == list(plan.moves)
    assert "fast moves at frames 9-11, 14, 16-18 (no cuts)" in plan.text()  # runs of consecutive frames
    before = ShotPlan.of(scan, dataclasses.replace(job, motion_cuts=True))
    assert before.cuts == (5, 9, 10, 11, 12, 14, 15, 16, 17, 18) and not before.moves and "moves" not in before.record()
    # The first pair of a range has one neighbour; a scan of the releases before records no parts.
    first = Scan(3, {2: 0.9, 3: 0.1}, colours={2: 0.1, 3: 0.1}, unreliable={2: 0.9, 3: 0.1})
    assert first.cuts(0.5, sudden=True) == [2]
    assert Scan(20, scores).cuts(0.5, sudden=True) == scan.cuts(0.5)


def test_the_shot_plan_of_a_scan_cuts_at_scene_cuts_but_a_flash_a_fade_and_black_frames():
    """ShotPlan.of, from a scan's records alone: frames 1-2 black (their pair scores as a cut), a
    fade in over 3-5 whose pairs score as cuts as they are (and as a flash), a flash at 12, a scene
    cut at 16, and a run of 20 frames split into segments of 10 with --max-shot-frames."""
    black, picture = [0.0, 0.0], [110.0, 50.0]
    light = {1: black, 2: black, 3: [11.0, 5.0], 4: [33.0, 15.0], 5: [66.0, 30.0]}
    light |= {i: picture for i in range(6, 21)}
    scores = {i: 0.1 for i in range(2, 21)} | {2: 0.9, 3: 0.9, 4: 0.8, 5: 0.7, 12: 0.9, 13: 0.9, 16: 0.95}
    # Frame 13 in frame 11's colours: 12 is a flash; so would 4 be, inside the fade (its noise, lifted).
    spans = {13: [0.1], 5: [0.1]}
    scan = Scan(20, scores, spans, light, lit={4: 0.1, 5: 0.1, 16: 0.95})
    job = VideoJob(input=Path("in.mp4"), styles=(Path("style.png"),), output=Path("out.mp4"), settings=StyleSettings())
    plan = ShotPlan.of(scan, job)
    assert plan.cuts == (16,) and [(f.first, f.last) for f in plan.flashes] == [(12, 12)]
    assert plan.fades.texts() == ["fade 3-5 (from black)", "blank 1-2"]
    assert [(s.first, s.last) for s in plan.shots] == [(1, 2), (3, 15), (16, 20)] and plan.runs == plan.shots
    assert plan.text() == "20 frames, scene cut at frame 16, flash at frame 12, fade 3-5 (from black), blank 1-2"
    assert plan.record()["shots"] == [[1, 2], [3, 15], [16, 20]] and "segments" not in plan.record()
    # The release before's plan: the black frames' pair a cut of its own.
    across = ShotPlan.of(scan, dataclasses.replace(job, light_cuts=True))
    assert across.cuts == (2, 16) and [(f.first, f.last) for f in across.flashes] == [(4, 4), (12, 12)]
    # A pair that scores as a cut, the same picture in another light by its lit score: no cut, the
    # frame goes on (but not between frames near black, whose lit scores are noise).
    relit = dataclasses.replace(scan, scores=scan.scores | {18: 0.7}, lit=scan.lit | {18: 0.05, 3: 0.05})
    lit_plan = ShotPlan.of(relit, job)
    assert lit_plan.cuts == (16,) and {18, 3} <= lit_plan.goes_on
    assert lit_plan.record()["relit"] == [18] and "change of light at frame 18 (no cuts)" in lit_plan.text()
    assert ShotPlan.of(relit, dataclasses.replace(job, light_cuts=True)).cuts == (2, 16, 18)
    assert 18 not in ShotPlan.of(relit, dataclasses.replace(job, light_cuts=True)).goes_on
    assert 3 not in dataclasses.replace(relit, lit={3: 0.05}).relit()  # frame 2 is black
    # Without the flow's frame-to-frame starts, one shot: no cuts, no flashes, the same fades.
    none = ShotPlan.of(scan, dataclasses.replace(job, flow="none"))
    assert (none.cuts, none.flashes, none.shots) == ((), (), (Shot(1, 20),)) and none.fades == plan.fades
    assert "shots" not in none.record()
    # Segments of a long shot: what is stylized, recorded beside the shots.
    split = ShotPlan.of(scan, dataclasses.replace(job, max_shot_frames=10, segment_overlap=2))
    segments = [[1, 2], [3, 12], [11, 15], [16, 20]]
    assert split.shots == plan.shots and [[s.first, s.last] for s in split.runs] == segments
    assert split.record()["segments"] == segments
