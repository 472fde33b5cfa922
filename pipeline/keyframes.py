"""Detect on every k-th sampled frame, carry the faces to the frames between along their tracks.

MTCNN is most of a video's time; faces move little between neighbouring sampled frames. A track seen on
both keyframes around a frame gets its box and landmarks interpolated there; a track seen on only one of
them is carried to the frames nearer to that keyframe (it appeared or left somewhere in between). Tracks are
linked by the sampled frames' own numbers, so ``track_max_gap`` means what it does with every frame detected.
"""

from __future__ import annotations

import numpy as np

from pipeline.tracking import link_tracks

Faces = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (k, 4), probs (k,), landmarks (k, 5, 2)


def keyframe_indices(count: int, every: int) -> np.ndarray:
    """Every ``every``-th of ``count`` frames, and the last one, so every frame lies between two keyframes."""
    keys = np.arange(0, count, every)
    return keys if keys[-1] == count - 1 else np.append(keys, count - 1)


def first_seen_order(tracks: np.ndarray) -> np.ndarray:
    """Track ids renumbered 0, 1, … by first appearance (what ``link_tracks`` gives)."""
    _, first, inverse = np.unique(tracks, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse].reshape(-1)


def _tracks_at(keys: np.ndarray, detected: list[Faces], min_iou: float, max_gap: int) -> tuple[np.ndarray, list[int]]:
    """Track ids of the faces detected on the sampled frames ``keys`` (linked by IoU, ``max_gap`` counted in
    sampled frames as with every frame detected), and each detected frame's count.

    The frames between two neighbouring detected ones were not looked at, not found empty: a stretch longer
    than ``max_gap`` + 1 counts as ``max_gap`` + 1, so its ends can still link (``detect_every`` above
    ``track_max_gap`` + 1); bisected gaps are shorter, so there the count is the real one."""
    counts = [len(b) for b, _, _ in detected]
    steps = np.minimum(np.diff(np.asarray(keys, np.int64)), max_gap + 1)
    at = np.concatenate([[0], np.cumsum(steps)]).astype(np.int64)[:len(counts)]
    boxes = np.concatenate([b.reshape(-1, 4) for b, _, _ in detected]) if detected else np.zeros((0, 4), np.float32)
    return link_tracks(np.repeat(at, counts), boxes, min_iou, max_gap), counts


def disputed_midpoints(keys: np.ndarray, detected: list[Faces], min_iou: float, max_gap: int) -> np.ndarray:
    """The middle frame of each gap between two neighbouring detected frames that do not see the same set of
    tracks: a face came or left, or moved too far to link (a zoom, a fast pan). Carrying would guess there.
    Detecting the middle and asking again halves the gap each round, so where a face comes or goes is found
    in log2(k) detections rather than k - 1, and the frames between two that agree are carried."""
    tracks, counts = _tracks_at(keys, detected, min_iou, max_gap)
    sets = [frozenset(t.tolist()) for t in np.split(tracks, np.cumsum(counts)[:-1])] if counts else []
    mids = [(keys[o] + keys[o + 1]) // 2 for o in range(len(keys) - 1)
            if keys[o + 1] - keys[o] > 1 and sets[o] != sets[o + 1]]
    return np.array(mids, np.int64)


def carry_faces(keys: np.ndarray, detected: list[Faces], count: int, min_iou: float,
                max_gap: int) -> tuple[list[Faces], list[np.ndarray]]:
    """Faces of all ``count`` frames from those ``detected`` on ``keys``, and each face's track id."""
    tracks, _ = _tracks_at(keys, detected, min_iou, max_gap)
    at: list[dict[int, tuple]] = []  # per keyframe: track → (box, prob, landmarks)
    offset = 0
    for boxes, probs, landmarks in detected:
        at.append({int(tracks[offset + i]): (boxes[i], probs[i], landmarks[i]) for i in range(len(boxes))})
        offset += len(boxes)
    per_frame: list[Faces] = []
    tracks_of: list[np.ndarray] = []
    for frame in range(count):
        o = int(np.searchsorted(keys, frame, side="right")) - 1
        if keys[o] == frame:
            faces = at[o]
        else:
            w = (frame - keys[o]) / (keys[o + 1] - keys[o])
            before, after = at[o], at[o + 1]
            faces = {}
            for t in sorted(set(before) | set(after)):
                if t in before and t in after:
                    (b0, p0, l0), (b1, p1, l1) = before[t], after[t]
                    faces[t] = ((1 - w) * b0 + w * b1, min(p0, p1), (1 - w) * l0 + w * l1)
                elif t in before and w <= 0.5:
                    faces[t] = before[t]
                elif t in after and w > 0.5:
                    faces[t] = after[t]
        ids = list(faces)
        per_frame.append((np.array([faces[t][0] for t in ids], np.float32).reshape(-1, 4),
                          np.array([faces[t][1] for t in ids], np.float32),
                          np.array([faces[t][2] for t in ids], np.float32).reshape(-1, 5, 2)))
        tracks_of.append(np.array(ids, np.int64))
    return per_frame, tracks_of
