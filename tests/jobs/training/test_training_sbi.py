"""Self-blended pseudo-fakes (jobs/training/sbi.py) on the bundled astronaut's face."""

from __future__ import annotations

import numpy as np

from jobs.training.sbi import face_mask, self_blend


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
