"""Link per-frame face boxes into tracks (one per person) by greedy IoU matching over time."""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a (N, 4) and b (M, 4) in (x1, y1, x2, y2)."""
    a, b = np.asarray(a, np.float32).reshape(-1, 4), np.asarray(b, np.float32).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def link_affinity(a: np.ndarray, b: np.ndarray, min_iou: float, max_shift: float = 0.75) -> np.ndarray:
    """How well faces ``a`` continue tracks ending in ``b``: IoU where it reaches ``min_iou``; otherwise a
    smaller score (< ``min_iou``) for a similar-sized box whose centre moved under ``max_shift`` face sizes
    (sparse sampling of moving people leaves no overlap); 0 where neither holds."""
    iou = box_iou(a, b)
    size_a = np.sqrt((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))
    size_b = np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    centre_a = (a[:, :2] + a[:, 2:]) / 2
    centre_b = (b[:, :2] + b[:, 2:]) / 2
    shift = np.linalg.norm(centre_a[:, None] - centre_b[None], axis=-1) / np.maximum((size_a[:, None] + size_b[None]) / 2, 1e-6)
    ratio = np.minimum(size_a[:, None], size_b[None]) / np.maximum(np.maximum(size_a[:, None], size_b[None]), 1e-6)
    near = np.where((shift < max_shift) & (ratio > 0.6), min_iou * 0.99 * (1 - shift / max_shift), 0.0)
    return np.where(iou >= min_iou, iou, near)


def link_tracks(frame_ids: np.ndarray, boxes: np.ndarray, min_iou: float = 0.3, max_gap: int = 4) -> np.ndarray:
    """Track id for each face (faces given in any order with their sampled-frame index).

    Each frame's faces are matched, strongest affinity first (``link_affinity``), to the last box of
    tracks seen within ``max_gap`` frames; an unmatched face starts a new track. Track ids are numbered
    by first appearance.
    """
    frame_ids = np.asarray(frame_ids, np.int64)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    track_of = np.full(len(frame_ids), -1, np.int64)
    last_box: list[np.ndarray] = []
    last_frame: list[int] = []
    for frame in np.unique(frame_ids):
        faces = np.flatnonzero(frame_ids == frame)
        alive = [t for t in range(len(last_box)) if frame - last_frame[t] <= max_gap + 1]
        if alive:
            ious = link_affinity(boxes[faces], np.stack([last_box[t] for t in alive]), min_iou)
            order = np.dstack(np.unravel_index(np.argsort(-ious, axis=None), ious.shape))[0]
            used_faces, used_tracks = set(), set()
            for fi, ti in order:
                if ious[fi, ti] <= 0:
                    break
                if fi in used_faces or ti in used_tracks:
                    continue
                used_faces.add(fi)
                used_tracks.add(ti)
                track_of[faces[fi]] = alive[ti]
        for fi, face in enumerate(faces):
            if track_of[face] < 0:
                last_box.append(boxes[face])
                last_frame.append(int(frame))
                track_of[face] = len(last_box) - 1
            else:
                last_box[track_of[face]] = boxes[face]
                last_frame[track_of[face]] = int(frame)
    return track_of
