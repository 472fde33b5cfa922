"""The sampled frames of one object, written into one (N, H, W, 3) uint8 array as they decode: memory holds the
answer once, never a list of frames and then their stack (two copies: 1.6 GB for 32 frames of 4K)."""

from __future__ import annotations

import cv2
import numpy as np


def fit(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """``frame`` at ``height`` x ``width``. A stream may change resolution mid-way (a broadcast's ad break, an
    adaptive stream switching variants): later frames are resized to the first, without keeping their aspect, so
    face boxes and ``width``/``height`` stay in the first frame's coordinates."""
    if frame.shape[:2] == (height, width):
        return frame
    shrinking = frame.shape[0] > height
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


class SampledFrames:
    """``count`` slots, one per sampled frame in order; the array is allocated at the first frame put, at its size."""

    def __init__(self, count: int):
        self.array: np.ndarray | None = None
        self.times = np.zeros(count, np.float32)  # seconds from the stream's start
        self.filled = np.zeros(count, bool)

    def put(self, slot: int, rgb: np.ndarray, seconds: float = 0.0) -> None:
        if self.array is None:
            self.array = np.empty((len(self.filled), *rgb.shape[:2], 3), np.uint8)
        self.array[slot] = fit(rgb, *self.array.shape[1:3])
        self.times[slot] = seconds
        self.filled[slot] = True

    def __len__(self) -> int:
        return int(self.filled.sum())

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(the frames, the slots they fill). Fewer than asked (a stream that ended early) costs a copy of those."""
        slots = np.flatnonzero(self.filled)
        if self.array is None:
            return np.zeros((0, 1, 1, 3), np.uint8), slots
        return (self.array if len(slots) == len(self.filled) else self.array[slots]), slots
