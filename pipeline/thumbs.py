"""Face thumbnails: a small JPEG of a face crop, stored in the optional ``faces.thumb_jpeg`` column.

Small on purpose: a thumbnail is evidence for a person looking at a verdict, not model input, and the
faces table must stay cheap to scan. Bounded in pixels (long side) and in bytes (quality steps down).
"""

from __future__ import annotations

import base64
import io

import numpy as np

from pipeline.errors import DeepfakeStreamError

THUMB_COLUMN = "thumb_jpeg"
MAX_PX = 64          # long side; a 224-px crop shrinks 3.5x, still enough to recognise a face
QUALITY = 75
MAX_BYTES = 8192     # hard cap per thumbnail; a 64-px face JPEG is usually 1.5-3 KB


class ThumbnailError(DeepfakeStreamError, ValueError):
    """The crop cannot become a thumbnail (wrong shape or dtype, or too big even at the lowest quality)."""

    code = "thumbnail_invalid"


def _as_rgb_uint8(crop: np.ndarray) -> np.ndarray:
    crop = np.asarray(crop)
    if crop.ndim == 2:
        crop = np.repeat(crop[..., None], 3, axis=2)
    if crop.ndim != 3 or crop.shape[2] not in (3, 4) or min(crop.shape[:2]) < 1:
        raise ThumbnailError(f"a face crop is HxWx3 (RGB); got shape {crop.shape}")
    crop = crop[..., :3]
    if crop.dtype != np.uint8:
        if not np.issubdtype(crop.dtype, np.floating):
            raise ThumbnailError(f"a face crop is uint8 or float in [0, 1]; got {crop.dtype}")
        crop = (np.clip(np.nan_to_num(crop), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(crop)


def face_thumbnail(crop: np.ndarray, max_px: int = MAX_PX, quality: int = QUALITY, max_bytes: int = MAX_BYTES) -> bytes:
    """JPEG bytes of ``crop`` (HxWx3 RGB, uint8 or float in [0, 1]), long side at most ``max_px``.

    Never upscales. If the JPEG is over ``max_bytes`` the quality steps down (to 20); past that it fails.
    """
    from PIL import Image

    if max_px < 8 or not 1 <= quality <= 95:
        raise ThumbnailError(f"max_px must be >= 8 and quality 1..95 (got {max_px}, {quality})")
    image = Image.fromarray(_as_rgb_uint8(crop), "RGB")
    image.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)  # keeps the aspect, never upscales
    for q in range(quality, 19, -10):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=q, optimize=True)
        if buffer.tell() <= max_bytes:
            return buffer.getvalue()
    raise ThumbnailError(f"a {image.size[0]}x{image.size[1]} thumbnail is over {max_bytes} bytes even at quality 20")


def data_uri(jpeg: bytes) -> str:
    """An ``<img src>`` that needs no network."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def top_face_thumbnails(crops: np.ndarray, scores: np.ndarray, k: int = 3, max_px: int = MAX_PX,
                        quality: int = QUALITY) -> list[bytes | None]:
    """One object's ``thumb_jpeg`` column: thumbnails of its ``k`` highest-scoring faces, None for the rest.

    ``crops`` (N x H x W x 3) and ``scores`` (N) are the object's faces in ``faces``-table order. The
    top-scoring faces are the ones that made a FAKE verdict, so they are the evidence worth keeping.
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(crops) != len(scores):
        raise ThumbnailError(f"{len(crops)} crops but {len(scores)} scores")
    keep = set(np.argsort(-np.nan_to_num(scores, nan=-1.0), kind="stable")[:max(k, 0)].tolist())
    return [face_thumbnail(crops[i], max_px, quality) if i in keep else None for i in range(len(scores))]
