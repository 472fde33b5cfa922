"""The detector's working size: where frames are shrunk before MTCNN, in one place.

The detector resizes to it; the split scan plan's decode actors shrink to it already (so only the pixels
the detector uses travel), with the same arithmetic and interpolation, so MTCNN sees the same image either way.
"""

from __future__ import annotations

import cv2
import numpy as np


def working_size(width: int, height: int, max_side: int) -> tuple[float, tuple[int, int]]:
    """(scale ≤ 1, (width, height)) that fits a ``width`` × ``height`` source into ``max_side``."""
    scale = min(1.0, max_side / max(height, width))
    return scale, (max(1, round(width * scale)), max(1, round(height * scale)))


def shrink(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Frames (N, H, W, 3 uint8) resized to ``size`` (width, height); returned as they are when already there."""
    if frames.shape[2] == size[0] and frames.shape[1] == size[1]:
        return frames
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
