"""Cross-identity blends: the donor aligned by its landmarks, its padding never pasted (jobs/training/xblend.py)."""

from __future__ import annotations

import numpy as np

from jobs.training.xblend import cross_blend, normalised, pick_donor


def _shifted(image, landmarks, dx, dy):
    import cv2
    moved = cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), image.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
    return moved, landmarks + np.float32([dx, dy])


def test_cross_blend_aligns_the_donor_by_its_landmarks(astronaut_face):
    crop, box, landmarks = astronaut_face
    donor, donor_landmarks = _shifted(crop, landmarks, 17, -11)           # the same face elsewhere in its crop
    aligned, mask = cross_blend(crop, box, landmarks, donor, donor_landmarks, np.random.default_rng(3))
    misaligned, _ = cross_blend(crop, box, landmarks, donor, landmarks, np.random.default_rng(3))
    inside = mask > 0.5
    err = lambda x: np.abs(x.astype(int) - crop.astype(int)).sum(-1)[inside].mean()  # noqa: E731
    assert err(aligned) < 0.3 * err(misaligned)                        # warped back onto the face it covers
    assert np.abs(aligned.astype(int) - crop.astype(int)).sum(-1)[mask == 0].max() <= 1  # outside: the real pixels
    again, _ = cross_blend(crop, box, landmarks, donor, donor_landmarks, np.random.default_rng(3))
    assert np.array_equal(aligned, again)                              # seeded


def test_cross_blend_never_pastes_a_donor_s_zero_padding(astronaut_face):
    crop, box, landmarks = astronaut_face
    donor = crop.copy()
    donor[:, : crop.shape[1] // 2] = 0                                 # a face cut off by its frame edge
    for seed in range(5):
        fake, mask = cross_blend(crop, box, landmarks, donor, landmarks, np.random.default_rng(seed))
        left = np.zeros(mask.shape, bool)
        left[:, : crop.shape[1] // 2 - 8] = True
        assert mask[left].max() < 0.05
        assert np.abs(fake.astype(int) - crop.astype(int)).sum(-1)[left].max() <= 15


def test_pick_donor_takes_the_closest_allowed_pose():
    base = np.float32([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]])
    poses = normalised(np.stack([base, base * 2 + 5, base + [[0, 0], [0, 0], [25, 0], [0, 0], [0, 0]], base[::-1]]))
    assert np.allclose(poses[0], poses[1])                              # scale and shift do not count
    allowed = np.array([False, True, True, True])
    assert all(pick_donor(poses[0], poses, allowed, np.random.default_rng(s)) == 1 for s in range(5))
    assert pick_donor(poses[0], poses, np.array([False, False, True, True]), np.random.default_rng(0)) == 2
    assert pick_donor(poses[0], poses, np.zeros(4, bool), np.random.default_rng(0)) is None
