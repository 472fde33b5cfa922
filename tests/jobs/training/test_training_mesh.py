"""MediaPipe's face mesh and the outline masks it gives self-blends (jobs/training/mesh.py)."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.training.sbi import face_mask


def _mesh_points(crop, box):
    from jobs.training.mesh import FaceMesh

    points, score = FaceMesh()(crop, box)
    eyes = np.stack([(points[33] + points[133]) / 2, (points[362] + points[263]) / 2])  # corners of each eye
    return points, score, eyes, points[[61, 291]]  # mouth corners


def test_face_mesh_lands_on_the_astronaut_where_mtcnn_does(astronaut_face):
    """The shipped network and our ROI/normalisation: its eyes and mouth corners are MTCNN's, within a tenth of the
    face; with a box a third too big and off-centre (as on UTKFace's full-bleed chips), two passes still get there."""
    from jobs.training.mesh import OUTLINE, outlines

    crop, box, landmarks = astronaut_face
    width = box[2] - box[0]
    points, score, eyes, mouth = _mesh_points(crop, box)
    assert points.shape == (468, 2) and score > 0.9
    assert np.linalg.norm(np.sort(eyes, 0) - np.sort(landmarks[:2], 0), axis=1).max() < 0.1 * width
    assert np.linalg.norm(np.sort(mouth, 0) - np.sort(landmarks[3:], 0), axis=1).max() < 0.1 * width
    good = outlines([crop], [box])[0]
    wrong = box + np.array([-0.3, -0.35, 0.1, 0.15]) * width
    off = outlines([crop], [wrong])[0]
    assert good.shape == (len(OUTLINE), 2)
    assert np.abs(off - good).max() < 0.06 * width  # one pass alone: 0.12
    x1, y1, x2, y2 = box
    assert x1 - 0.3 * width < good[:, 0].min() and good[:, 0].max() < x2 + 0.3 * width  # the oval hugs MTCNN's box


def test_outline_mask_follows_the_face_oval_with_or_without_the_forehead(astronaut_face):
    import cv2

    from jobs.training.mesh import OVAL, outlines

    crop, box, landmarks = astronaut_face
    outline = outlines([crop], [box])[0]
    oval = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillPoly(oval, [np.round(outline[:len(OVAL)]).astype(np.int32)], 1)
    forehead = tuple(np.round(outline[0]).astype(int) + [0, 4])  # just inside the oval's top
    tops = []
    for seed in range(20):
        mask = face_mask(crop.shape[:2], box, landmarks, np.random.default_rng(seed), outline)
        assert mask.max() == pytest.approx(1.0)
        assert (mask > 0.5)[oval == 1].mean() > 0.4                  # covers much of the face
        grown = cv2.dilate(oval, np.ones((25, 25), np.uint8))
        assert mask[grown == 1].sum() / mask.sum() > 0.97              # and hardly anything off it
        tops.append(mask[forehead[1], forehead[0]])
    assert min(tops) < 0.2 and max(tops) > 0.5                       # brows-to-jaw masks and whole-oval ones
    assert not np.array_equal(face_mask(crop.shape[:2], box, landmarks, np.random.default_rng(0), outline),
                              face_mask(crop.shape[:2], box, landmarks, np.random.default_rng(0)))
