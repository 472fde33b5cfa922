"""The bundled sample media, and the face swap the project makes itself."""

from __future__ import annotations

import numpy as np

from pipeline.samples import _photos, sample_media, swapped_astronaut


def test_every_sample_is_bundled(samples_dir):
    names = {p.name for p in sample_media()}
    assert {"astronaut.jpg", "astronauts_pair.jpg", "coffee.jpg", "astronaut_zoom.mp4", "pair_pan.mp4",
            "astronaut_swap.mp4"} <= names
    assert all(p.stat().st_size < 400_000 for p in sample_media())  # small enough to ship


def test_swap_changes_the_face_and_nothing_else():
    original = _photos()["astronaut"]
    swapped = swapped_astronaut()
    diff = np.abs(swapped.astype(int) - original.astype(int)).sum(-1)
    changed = np.argwhere(diff > 12)
    (y0, x0), (y1, x1) = changed.min(0), changed.max(0)
    # the changed region is the face (about 100x130 px around (x 190, y 110) in this 512x512 photo) ...
    assert 60 < x1 - x0 < 200 and 80 < y1 - y0 < 220 and 120 < (x0 + x1) / 2 < 260 and 40 < (y0 + y1) / 2 < 200
    assert diff[changed[:, 0], changed[:, 1]].mean() > 25       # ... and it changed visibly
    # everything outside the face is untouched
    outside = np.ones_like(diff, bool)
    outside[max(0, y0 - 5):y1 + 6, max(0, x0 - 5):x1 + 6] = False
    assert diff[outside].max() == 0


def test_swap_landmarks_none_without_a_face():
    """scripts/swap_set.py leaves out photos where MTCNN finds no face; the helper says so instead of raising."""
    from pipeline.config import DetectConfig
    from pipeline.detect import FaceDetector
    from pipeline.samples import swap_landmarks

    detector = FaceDetector(DetectConfig(), "cpu")
    photos = _photos()
    assert swap_landmarks(photos["coffee"], detector) is None
    points = swap_landmarks(photos["astronaut"], detector)
    assert points.shape == (13, 2)
    eye_l, eye_r, nose, mouth_l, mouth_r, forehead, chin = points[:7]
    assert forehead[1] < eye_l[1] < nose[1] < mouth_l[1] < chin[1]  # derived points in the face's order, top to bottom
