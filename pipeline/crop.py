"""Face crops: box + margin → aspect-kept resize → zero-pad to a square. Shared by inference and training."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.card import ModelSpec

# when neither the settings nor a checkpoint say: the model card's own defaults, so the two cannot drift
DEFAULT_MARGIN = ModelSpec.model_fields["crop_margin"].default
DEFAULT_CROP_SIZE = ModelSpec.model_fields["input_size"].default


@dataclass(frozen=True)
class CropTransform:
    """Maps original-frame coordinates into crop coordinates: ``crop_xy = (xy - origin) * scale + pad``."""

    origin: tuple[float, float]
    scale: float
    pad: tuple[int, int]

    def apply(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, np.float32)
        return (points - np.array(self.origin, np.float32)) * self.scale + np.array(self.pad, np.float32)


def crop_transform(frame_shape: tuple[int, ...], box: np.ndarray, size: int, margin: float) -> tuple[tuple[int, int, int, int], CropTransform]:
    """Where the crop of ``box`` lies in the frame (left, top, right, bottom) and how it maps into the crop.

    The box grows by ``margin`` of its width/height on every side (clipped to the frame); the region keeps
    its aspect ratio: its long side becomes ``size`` and the short side is zero-padded symmetrically.
    """
    height, width = frame_shape[:2]
    x1, y1, x2, y2 = [float(v) for v in box]
    pad_x, pad_y = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = int(max(0, np.floor(x1 - pad_x))), int(max(0, np.floor(y1 - pad_y)))
    right, bottom = int(min(width, np.ceil(x2 + pad_x))), int(min(height, np.ceil(y2 + pad_y)))
    if right - left < 2 or bottom - top < 2:
        raise ValueError(f"box {box} lies outside the {width}x{height} frame")
    scale = size / max(bottom - top, right - left)
    new_w = max(1, min(size, round((right - left) * scale)))
    new_h = max(1, min(size, round((bottom - top) * scale)))
    transform = CropTransform((left, top), scale, ((size - new_w) // 2, (size - new_h) // 2))
    return (left, top, right, bottom), transform


def crop_face(frame: np.ndarray, box: np.ndarray, size: int, margin: float) -> tuple[np.ndarray, CropTransform]:
    """The ``size``×``size`` uint8 crop of ``box`` (see ``crop_transform``), faces never stretched."""
    (left, top, right, bottom), transform = crop_transform(frame.shape, box, size, margin)
    region = frame[top:bottom, left:right]
    new_w = max(1, min(size, round(region.shape[1] * transform.scale)))
    new_h = max(1, min(size, round(region.shape[0] * transform.scale)))
    interpolation = cv2.INTER_AREA if transform.scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(region, (new_w, new_h), interpolation=interpolation)
    out = np.zeros((size, size, 3), np.uint8)
    off_x, off_y = transform.pad
    out[off_y:off_y + new_h, off_x:off_x + new_w] = resized
    return out, transform
