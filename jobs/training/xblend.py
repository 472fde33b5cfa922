"""Cross-identity blends (after Face X-ray, Li et al., CVPR 2020): another real person's face, aligned by
its five landmarks and colour-matched, blended into a real face through SBI's soft masks.

Self-blends (``sbi.py``) never change who is in the picture. Landmark face swaps (FaceSwap; the demo's
``*_swap`` clip) do: the inner face's shape and texture come from someone else, joined by a
colour-corrected seam. This makes that kind of pseudo-fake from real faces alone, with no generator's
fingerprint. All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import cv2
import numpy as np

from jobs.training.sbi import BLEND_RATIOS, face_mask


def normalised(landmarks: np.ndarray) -> np.ndarray:
    """(N, 5, 2) landmarks → centred and scaled by the eye distance, so faces of any size compare by pose."""
    points = np.asarray(landmarks, np.float32).reshape(-1, 5, 2)
    centred = points - points.mean(1, keepdims=True)
    eyes = np.linalg.norm(points[:, 1] - points[:, 0], axis=1).clip(1e-3)
    return centred / eyes[:, None, None]


def pick_donor(target: np.ndarray, pool: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, k: int = 8) -> int | None:
    """Index into ``pool`` (normalised landmarks) of the closest pose among ``k`` random ``allowed`` donors;
    like Face X-ray's nearest-landmark search, so the swapped face fits and the seam is the only tell."""
    choices = np.flatnonzero(allowed)
    if len(choices) == 0:
        return None
    sample = rng.choice(choices, size=min(k, len(choices)), replace=False)
    distance = np.abs(pool[sample] - target[None]).sum((1, 2))
    return int(sample[int(np.argmin(distance))])


def match_colour(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``source`` with each channel's mean and spread inside ``mask`` moved to ``target``'s (FaceSwap's
    colour correction, per channel in RGB)."""
    weight = mask[..., None].astype(np.float32)
    total = max(float(weight.sum()), 1.0)
    out = source.astype(np.float32)
    ref = target.astype(np.float32)
    mean_s, mean_t = (out * weight).sum((0, 1)) / total, (ref * weight).sum((0, 1)) / total
    std_s = np.sqrt((((out - mean_s) ** 2) * weight).sum((0, 1)) / total).clip(1.0)
    std_t = np.sqrt((((ref - mean_t) ** 2) * weight).sum((0, 1)) / total).clip(1.0)
    return np.clip((out - mean_s) * (std_t / std_s) + mean_t, 0, 255).astype(np.uint8)


def cross_blend(face: np.ndarray, box: np.ndarray, landmarks: np.ndarray, donor: np.ndarray,
                donor_landmarks: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return (pseudo-fake uint8 image, blend mask (H, W) in [0, 1]): ``donor``'s face on ``face``."""
    height, width = face.shape[:2]
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(donor_landmarks, np.float32).reshape(5, 2),
                                            np.asarray(landmarks, np.float32).reshape(5, 2))
    if matrix is None:  # degenerate landmarks: fall back to the donor as it is
        matrix = np.eye(2, 3, dtype=np.float32)
    source = cv2.warpAffine(donor, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    # a donor face cut off by its frame edge is zero-padded in its crop: never blend that padding in
    valid = cv2.warpAffine((donor.max(-1) > 0).astype(np.float32), matrix, (width, height), flags=cv2.INTER_NEAREST)
    valid = cv2.GaussianBlur(cv2.erode(valid, np.ones((7, 7), np.uint8)), (15, 15), 0)
    mask = face_mask((height, width), box, landmarks, rng) * valid
    if rng.random() < 0.8:
        source = match_colour(source, face, mask)
    mask = mask * rng.choice(BLEND_RATIOS[2:])  # a swap replaces the face: mostly opaque
    blended = mask[..., None] * source.astype(np.float32) + (1 - mask[..., None]) * face.astype(np.float32)
    return np.clip(blended, 0, 255).astype(np.uint8), mask
