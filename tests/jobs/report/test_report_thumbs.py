"""Face thumbnails: bounded pixels and bytes, aspect kept, never upscaled, bad crops refused with a code."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.thumbs import MAX_BYTES, ThumbnailError, data_uri, face_thumbnail


def _open(jpeg: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG"
    return image


def test_a_face_crop_becomes_a_small_jpeg_that_looks_like_it(samples_dir):
    photo = np.asarray(Image.open(samples_dir / "astronaut.jpg").convert("RGB"))
    crop = photo[:160, 150:310]  # her face, about 160 px like the detector's crops
    jpeg = face_thumbnail(crop)
    image = _open(jpeg)
    assert image.size == (64, 64) and len(jpeg) <= MAX_BYTES
    small = np.asarray(Image.fromarray(crop).resize((64, 64), Image.Resampling.LANCZOS), np.float32)
    assert np.abs(np.asarray(image, np.float32) - small).mean() < 8  # the same picture, JPEG noise aside


def test_aspect_is_kept_and_small_crops_are_not_upscaled():
    assert _open(face_thumbnail(np.zeros((200, 100, 3), np.uint8), max_px=50)).size == (25, 50)
    assert _open(face_thumbnail(np.zeros((20, 30, 3), np.uint8))).size == (30, 20)


def test_float_and_grey_crops_are_accepted():
    grey = _open(face_thumbnail(np.full((40, 40), 200, np.uint8)))
    assert grey.mode == "RGB" and abs(np.asarray(grey).mean() - 200) < 3
    white = _open(face_thumbnail(np.ones((40, 40, 3), np.float32)))
    assert np.asarray(white).min() > 250


def test_noise_is_held_under_the_byte_cap_by_lowering_quality():
    noise = np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    assert len(face_thumbnail(noise, max_px=128, quality=95)) > 4000  # noisy at high quality...
    capped = face_thumbnail(noise, max_px=128, quality=95, max_bytes=4000)
    assert len(capped) <= 4000  # ...is squeezed under the cap
    with pytest.raises(ThumbnailError) as info:
        face_thumbnail(noise, max_px=128, max_bytes=200)
    assert info.value.code == "thumbnail_invalid"


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 5), np.uint8), np.zeros((0, 4, 3), np.uint8),
                                 np.zeros((4, 4, 3), np.int64)])
def test_bad_crops_are_refused(bad):
    with pytest.raises(ThumbnailError):
        face_thumbnail(bad)


def test_data_uri_round_trips():
    jpeg = face_thumbnail(np.zeros((8, 8, 3), np.uint8))
    import base64

    uri = data_uri(jpeg)
    assert uri.startswith("data:image/jpeg;base64,") and base64.b64decode(uri.split(",", 1)[1]) == jpeg
