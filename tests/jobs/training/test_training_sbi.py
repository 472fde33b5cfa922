"""Self-blended pseudo-fakes (jobs/training/sbi.py) on the bundled astronaut's face."""

from __future__ import annotations

import numpy as np

from jobs.training.sbi import face_mask, part_mask, self_blend


def test_self_blend_mask_lies_on_the_face(astronaut_face):
    crop, box, landmarks = astronaut_face
    x1, y1, x2, y2 = box
    for seed in range(20):
        mask = face_mask(crop.shape[:2], box, landmarks, np.random.default_rng(seed))
        ys, xs = np.nonzero(mask > 0.5)
        assert len(xs) > 0.15 * (x2 - x1) * (y2 - y1)             # covers a good part of the face
        cx, cy = np.average(np.indices(mask.shape)[::-1].reshape(2, -1), axis=1, weights=mask.reshape(-1))
        assert x1 < cx < x2 and y1 < cy < y2                        # centred on the face
        w, h = x2 - x1, y2 - y1
        inside = mask[int(max(0, y1 - 0.2 * h)):int(y2 + 0.2 * h), int(max(0, x1 - 0.2 * w)):int(x2 + 0.2 * w)].sum()
        assert inside / mask.sum() > 0.95                           # and hardly anything off it


def test_self_blend_changes_only_the_masked_face(astronaut_face):
    crop, box, landmarks = astronaut_face
    fake, mask = self_blend(crop, box, landmarks, np.random.default_rng(5))
    diff = np.abs(fake.astype(int) - crop.astype(int)).sum(-1)
    assert diff[mask > 0.05].mean() > 2                              # the face changed
    assert diff[mask == 0].max() <= 1                                # outside the mask: the real pixels
    again, _ = self_blend(crop, box, landmarks, np.random.default_rng(5))
    assert np.array_equal(fake, again)                               # seeded: reproducible


def test_part_mask_covers_the_mouth_or_the_eyes_not_the_face(astronaut_face):
    crop, box, landmarks = astronaut_face
    points = np.asarray(landmarks).reshape(5, 2)
    eye_y, nose_y, mouth_y = points[:2, 1].mean(), points[2, 1], points[3:, 1].mean()
    x1, y1, x2, y2 = box
    parts, part_sums, whole_sums = set(), [], []
    for seed in range(30):
        part = part_mask(crop.shape[:2], box, landmarks, np.random.default_rng(seed))
        part_sums.append(part.sum())
        whole_sums.append(face_mask(crop.shape[:2], box, landmarks, np.random.default_rng(seed)).sum())
        assert 0 < part.sum() < 0.65 * (x2 - x1) * (y2 - y1)          # never the whole face box
        cy = np.average(np.indices(part.shape)[0].reshape(-1), weights=part.reshape(-1))
        parts.add("mouth" if cy > nose_y else "eyes")
        assert (cy > (nose_y + mouth_y) / 2) or abs(cy - eye_y) < (nose_y - eye_y)  # on the mouth or on the eyes
    assert parts == {"mouth", "eyes"}                                 # both parts drawn
    assert np.mean(part_sums) < 0.5 * np.mean(whole_sums)             # a part is a fraction of a face mask


def test_local_self_blend_leaves_the_rest_of_the_face_real(astronaut_face):
    crop, box, landmarks = astronaut_face
    for seed in range(6):
        fake, mask = self_blend(crop, box, landmarks, np.random.default_rng(seed), part=True)
        diff = np.abs(fake.astype(int) - crop.astype(int)).sum(-1)
        assert diff[mask == 0].max() <= 1                             # outside the part: the real pixels
        assert (mask == 0).mean() > 0.8                               # and that is most of the crop
