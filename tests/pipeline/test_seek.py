"""Seek planning for the PyAV decoder: when to jump to a keyframe instead of decoding on."""

from __future__ import annotations

from pipeline.seek import frames_decoded, seek_plan

PTS = list(range(0, 1000))  # one frame per tick, shown in order
KEYFRAMES = list(range(0, 1000, 100))


def test_jumps_land_on_the_last_keyframe_at_or_before_each_target():
    plan = seek_plan([0, 250, 260, 730], PTS, KEYFRAMES, min_skip=10)
    # 0: the start; 250: keyframe 200 lies past 0 with 199 frames between; 260: same group as 250, decode on;
    # 730: keyframe 700, 439 frames after 260
    assert plan == [None, 200, None, 700]


def test_no_jump_that_saves_less_than_the_minimum():
    assert seek_plan([0, 95, 105], PTS, KEYFRAMES, min_skip=10) == [None, None, None]  # 100 is 4 frames past 95
    assert seek_plan([0, 250], PTS, KEYFRAMES, min_skip=200) == [None, None]  # 199 skipped < 200
    assert seek_plan([0, 250], PTS, KEYFRAMES, min_skip=199) == [None, 200]


def test_without_keyframes_or_before_the_first_it_never_jumps():
    assert seek_plan([0, 500, 900], PTS, [], min_skip=1) == [None, None, None]
    assert seek_plan([5, 50], PTS, [100], min_skip=1) == [None, None]


def test_frames_decoded_counts_from_each_jump_or_on_from_the_last_target():
    targets = [0, 250, 260, 730]
    assert frames_decoded(targets, PTS, [None] * 4) == 731  # straight through, up to the last target
    # 0 alone; 200..250 (51); on to 260 (10); 700..730 (31)
    assert frames_decoded(targets, PTS, seek_plan(targets, PTS, KEYFRAMES, min_skip=10)) == 1 + 51 + 10 + 31
    assert frames_decoded([5], PTS, [None]) == 6 and frames_decoded([], PTS, []) == 0
