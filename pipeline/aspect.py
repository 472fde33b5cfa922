"""Anamorphic video: pixels stored wider or narrower than tall, stretched square as a player shows them.

DVD and broadcast SD store 720x576 for 4:3 or 16:9 alike and say which by the sample aspect ratio (64:45 for
widescreen PAL: every pixel 1.42x as wide as tall); some cameras and phone apps do the same. Scored as stored,
a face is squeezed or stretched by that much, a shape the detector never saw (and MTCNN may not find). Both
decoders leave the pixels as stored (decord does turn frames for display), so both pass them through here.
"""

from __future__ import annotations

import io
from fractions import Fraction

import cv2
import numpy as np

from pipeline.config import DecodeConfig
from pipeline.probe import check_pixels, main_video_stream


def sample_aspect(stream) -> Fraction:
    """The stream's pixel shape, as FFmpeg's player guesses it: the container's if it says one, else the codec's.
    Read from a container opened normally: the header-only probe (skip_frame) misses a ratio that only the
    stream's SPS carries (Matroska, MPEG-TS)."""
    for sar in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if sar and sar > 0:
            return Fraction(sar)
    return Fraction(1)


def stored_shape(data: bytes) -> tuple[Fraction, bool]:
    """(pixel aspect ratio, whether the display matrix turns the picture a quarter turn), for decoders that
    report neither (decord). The turn is read off the first frame (PyAV has no stream-level getter) and only
    for anamorphic video, where it decides which axis to stretch."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = main_video_stream(container)
        sar = sample_aspect(stream)
        if sar == 1:
            return sar, False
        for frame in container.decode(stream):
            return sar, round((frame.rotation or 0) / 90) % 2 == 1
    return sar, False


def square_pixels(frames: np.ndarray, sar: Fraction, config: DecodeConfig, turned: bool = False) -> np.ndarray:
    """Frames (N, H, W, 3) with square pixels: the stored width scaled by ``sar`` (the height, when the frames
    were already turned a quarter turn for display). The size is checked against the pixel limit first."""
    if sar == 1 or len(frames) == 0:
        return frames
    height, width = frames.shape[1:3]
    if turned:
        size = (width, max(1, round(height * sar)))
        growing = size[1] > height
    else:
        size = (max(1, round(width * sar)), height)
        growing = size[0] > width
    if size == (width, height):
        return frames
    check_pixels(*size, config)  # a bogus ratio (64:1 on a small frame) is refused, not allocated
    interpolation = cv2.INTER_CUBIC if growing else cv2.INTER_AREA
    return np.stack([cv2.resize(f, size, interpolation=interpolation) for f in frames])
