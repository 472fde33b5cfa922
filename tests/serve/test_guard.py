"""The server's media limits (serve/guard.py): ``decode.*`` tightened by ``serve.*``, a phone photo over the
pixel limit scaled down as in ``score`` and ``scan``, not refused with 413."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pipeline.config import load_settings
from pipeline.decode import decode_bytes
from pipeline.errors import MediaTooLargeError
from serve.guard import server_decode_config


def _jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_a_photo_over_the_servers_pixel_limit_is_scaled_down_not_refused():
    """4032 x 3024 (a 12 MP phone photo) was 413 over serve.max_pixels (3840 x 2160)."""
    config = server_decode_config(load_settings())
    assert config.max_pixels == 3840 * 2160
    media = decode_bytes(_jpeg(4032, 3024), config)
    assert (media.width, media.height) == (4032, 3024)
    height, width = media.frames.shape[1:3]
    assert width * height <= config.max_pixels and abs(width / height - 4 / 3) < 0.01


def test_a_still_past_sixteen_times_the_servers_limit_is_still_refused():
    config = server_decode_config(load_settings(**{"serve.max_pixels": 100_000}))
    decode_bytes(_jpeg(1600, 1000), config)  # 16 times over: scaled down
    with pytest.raises(MediaTooLargeError, match="1601x1000 is over the 1600000-pixel limit for photos"):
        decode_bytes(_jpeg(1601, 1000), config)
