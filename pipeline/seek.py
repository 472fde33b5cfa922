"""Where the PyAV decoder jumps instead of decoding on: 32 frames of an hour-long clip sit a few hundred frames
apart, and decoding every reference frame between them is most of the work; and how many frames a plan goes
through (the decode budget, pipeline/work.py). Pure planning, no decoding."""

from __future__ import annotations

from bisect import bisect_left, bisect_right

# Frames a jump must skip to be worth it: decoding on through a short stretch (its non-reference frames are
# skipped anyway) is cheaper than a seek, which flushes the decoder and re-reads from the container's index.
MIN_SKIP = 48


def seek_plan(targets: list[int], pts: list[int], keyframes: list[int], min_skip: int = MIN_SKIP) -> list[int | None]:
    """For each target presentation time (ascending): the keyframe to seek to before decoding it, or None to
    decode on from the previous one. A jump lands on the last keyframe at or before the target, so every frame
    kept is decoded from a keyframe at or before it, as straight-through decoding would (frames shown after a
    keyframe never reference the group before it, even in open GOPs)."""
    plan: list[int | None] = []
    previous = None
    for target in targets:
        at = bisect_right(keyframes, target) - 1
        keyframe = keyframes[at] if at >= 0 else None
        jump = None
        if previous is not None and keyframe is not None and keyframe > previous:
            skipped = bisect_left(pts, keyframe) - bisect_right(pts, previous)  # frames shown in between
            jump = keyframe if skipped >= min_skip else None
        plan.append(jump)
        previous = target
    return plan


def frames_decoded(targets: list[int], pts: list[int], plan: list[int | None]) -> int:
    """Frames the decoder goes through to reach ``targets`` by ``plan``: from the stream's first frame, or from
    each jump's keyframe, on to each target. Unreferenced frames that are skipped count too: the most it may decode."""
    decoded, position = 0, 0  # position: the first frame (in ``pts``) not yet gone through
    for target, jump in zip(targets, plan):
        if jump is not None:
            position = bisect_left(pts, jump)
        end = bisect_right(pts, target)
        decoded += max(end - position, 0)
        position = max(position, end)
    return decoded
